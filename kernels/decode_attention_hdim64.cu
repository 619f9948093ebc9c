// Split-KV decode attention, head_dim 64 (one instantiation file per head_dim).
#include "decode_attention_kernel.cuh"

namespace ringinfer::cuda {

void decode_split_hdim64(const DecodeArgs& a, int n_kv_heads, int variant, const DecodeSeqs* seqs,
                         cudaStream_t stream) {
  if (a.k8)  // fp8 cache: `variant` is an fp8 variant (visit_decode_fp8_variant)
    launch_decode_split_fp8<64>(a, n_kv_heads, variant, seqs, stream);
  else if (variant == 0)
    launch_decode_split<64, 4, 32, 2>(a, n_kv_heads, seqs, stream);
  else
    launch_decode_split<64, 4, 16, 3>(a, n_kv_heads, seqs, stream);
}

}  // namespace ringinfer::cuda

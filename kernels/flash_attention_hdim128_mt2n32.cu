// Flash attention forward, head_dim 128, 4 warps x 32 query rows, 32-key tiles: the
// two-m-tile variant with half the S registers (no spills), 64 KB of shared memory.
#include "flash_attention_kernel.cuh"

namespace ringinfer::cuda {

void flash_fwd_hdim128_mt2n32(const FlashFwdArgs& a, cudaStream_t stream) {
  launch_flash_fwd<128, 4, 32, 2, 2>(a, stream);
}

}  // namespace ringinfer::cuda

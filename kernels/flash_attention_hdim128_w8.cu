// Flash attention forward, head_dim 128, 8 warps: 128 query rows x 64 keys per tile,
// 96 KB of shared memory, one block per multiprocessor (K/V tiles shared by 8 warps).
#include "flash_attention_kernel.cuh"

namespace ringinfer::cuda {

void flash_fwd_hdim128_w8(const FlashFwdArgs& a, cudaStream_t stream) { launch_flash_fwd<128, 8, 64, 1>(a, stream); }

}  // namespace ringinfer::cuda

// Flash attention forward, head_dim 128, 4 warps: 64 query rows x 64 keys per tile,
// 80 KB of shared memory, two blocks per multiprocessor.
#include "flash_attention_kernel.cuh"

namespace ringinfer::cuda {

void flash_fwd_hdim128_w4(const FlashFwdArgs& a, cudaStream_t stream) { launch_flash_fwd<128, 4, 64, 2>(a, stream); }

}  // namespace ringinfer::cuda

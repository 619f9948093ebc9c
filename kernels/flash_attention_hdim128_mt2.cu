// Flash attention forward, head_dim 128, 4 warps x 32 query rows (two 16-row MMA tiles per
// warp, FA2's register blocking): 128 query rows x 64 keys per tile, 96 KB of shared
// memory, two blocks per multiprocessor.
#include "flash_attention_kernel.cuh"

namespace ringinfer::cuda {

void flash_fwd_hdim128_mt2(const FlashFwdArgs& a, cudaStream_t stream) {
  launch_flash_fwd<128, 4, 64, 2, 2>(a, stream);
}

}  // namespace ringinfer::cuda

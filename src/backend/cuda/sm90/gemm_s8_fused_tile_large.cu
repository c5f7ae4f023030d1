// The fused W8A8 GEMM's kLarge configuration (128 x 128 tiles, two consumer warp groups cooperating
// on each): its kernels, compiled here alone (gemm_s8_fused_kernel.cuh: TileConfig).
#include "backend/cuda/sm90/gemm_s8_fused_kernel.cuh"

namespace hyrt::backend::cuda::sm90 {
template cudaError_t run_fused_s8_tile<FusedS8Tile::kLarge>(const FusedS8Args&);
template cudaError_t prime_fused_s8_tile<FusedS8Tile::kLarge>();
}  // namespace hyrt::backend::cuda::sm90

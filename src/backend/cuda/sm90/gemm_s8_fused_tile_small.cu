// The fused W8A8 GEMM's kSmall configuration (64 x 128 tiles, the two consumer warp groups on
// alternate tiles (ping-pong)): its kernels, compiled here alone (gemm_s8_fused_kernel.cuh:
// TileConfig).
#include "backend/cuda/sm90/gemm_s8_fused_kernel.cuh"

namespace hyrt::backend::cuda::sm90 {
template cudaError_t run_fused_s8_tile<FusedS8Tile::kSmall>(const FusedS8Args&);
template cudaError_t prime_fused_s8_tile<FusedS8Tile::kSmall>();
}  // namespace hyrt::backend::cuda::sm90

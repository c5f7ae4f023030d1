// The fused W8A8 GEMM's kPingpong configuration (128 x 128 ping-pong tiles in clusters of two along
// M): its kernels, compiled here alone (gemm_s8_fused_kernel.cuh: TileConfig).
#include "backend/cuda/sm90/gemm_s8_fused_kernel.cuh"

namespace hyrt::backend::cuda::sm90 {
template cudaError_t run_fused_s8_tile<FusedS8Tile::kPingpong>(const FusedS8Args&);
template cudaError_t prime_fused_s8_tile<FusedS8Tile::kPingpong>();
}  // namespace hyrt::backend::cuda::sm90

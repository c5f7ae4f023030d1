// The fused W8A8 GEMM's kSmall configuration (gemm_s8_fused.h): 64 x 128 tiles, the two consumer
// warp groups on alternate tiles (ping-pong).
#include "backend/cuda/sm90/gemm_s8_fused_kernel.cuh"

namespace hyrt::backend::cuda::sm90 {
namespace {
using cute::_1;
using cute::_128;
using cute::_64;
using Config = detail::FusedS8TileConfig<cute::Shape<_64, _128, _128>, cute::Shape<_1, _1, _1>,
                                         cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                         cutlass::epilogue::TmaWarpSpecialized>;
}  // namespace

template <>
cudaError_t run_fused_s8_tile<FusedS8Tile::kSmall>(const FusedS8Args& args) {
  return Config::run(args);
}

template <>
cudaError_t prime_fused_s8_tile<FusedS8Tile::kSmall>() {
  return Config::prime();
}

}  // namespace hyrt::backend::cuda::sm90

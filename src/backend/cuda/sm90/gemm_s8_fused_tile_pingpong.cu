// The fused W8A8 GEMM's kPingpong configuration (gemm_s8_fused.h): 128 x 128 ping-pong tiles (one
// warp group's epilogue under the other's mainloop) in clusters of two along M.
#include "backend/cuda/sm90/gemm_s8_fused_kernel.cuh"

namespace hyrt::backend::cuda::sm90 {
namespace {
using cute::_1;
using cute::_128;
using cute::_2;
using Config = detail::FusedS8TileConfig<cute::Shape<_128, _128, _128>, cute::Shape<_2, _1, _1>,
                                         cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                                         cutlass::epilogue::TmaWarpSpecialized>;
}  // namespace

template <>
cudaError_t run_fused_s8_tile<FusedS8Tile::kPingpong>(const FusedS8Args& args) {
  return Config::run(args);
}

template <>
cudaError_t prime_fused_s8_tile<FusedS8Tile::kPingpong>() {
  return Config::prime();
}

}  // namespace hyrt::backend::cuda::sm90

// The fused W8A8 GEMM's kLarge configuration (gemm_s8_fused.h): 128 x 128 tiles, two consumer warp
// groups cooperating on each.
#include "backend/cuda/sm90/gemm_s8_fused_kernel.cuh"

namespace hyrt::backend::cuda::sm90 {
namespace {
using cute::_1;
using cute::_128;
using Config = detail::FusedS8TileConfig<cute::Shape<_128, _128, _128>, cute::Shape<_1, _1, _1>,
                                         cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                                         cutlass::epilogue::TmaWarpSpecializedCooperative>;
}  // namespace

template <>
cudaError_t run_fused_s8_tile<FusedS8Tile::kLarge>(const FusedS8Args& args) {
  return Config::run(args);
}

template <>
cudaError_t prime_fused_s8_tile<FusedS8Tile::kLarge>() {
  return Config::prime();
}

}  // namespace hyrt::backend::cuda::sm90

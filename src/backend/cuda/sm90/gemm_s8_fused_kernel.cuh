// Internal to sm90/: the fused W8A8 GEMM's kernel template (gemm_s8_fused.h), from CUTLASS 3's
// sm90 collectives: the mainloop is CUTLASS's TMA + wgmma pipeline for s8 x s8 -> s32; the
// epilogue is an epilogue visitor tree (EVT) that computes hyrt's rescale per fragment before
// the f16 store. The tile configurations are listed here (TileConfig); each is instantiated in
// a file of its own (gemm_s8_fused_tile_*.cu) so that a parallel build compiles them side by
// side; compiled for sm_90a only (CMakeLists.txt).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "backend/cuda/gemm_s8_fused.h"
#include "backend/cuda/sm90/fused_s8_epilogue.cuh"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace hyrt::backend::cuda::sm90 {

// One launch's operands, as launch_fused_s8_gemm documents them (m, n, k checked below 2^31).
struct FusedS8Args {
  const int8_t* a;
  int64_t lda;
  const int8_t* w;
  int64_t ldw;
  const float* a_scale;
  const float* w_scale;
  const float* bias;
  const __half* residual;
  __half* y;
  int m, n, k;
  cudaStream_t stream;
};

namespace detail {

// One tile configuration of the fused GEMM: D[M, N] = epilogue(A[M, K] · B[K, N]) with A the
// activations (row-major, K contiguous) and B the weights as stored [N, K] (column-major B);
// with kResidual the epilogue also adds C [M, N] (f16, row-major, ld N: the residual stream),
// read by the epilogue's own TMA loads, before the one rounding to f16.
template <class TileShape, class ClusterShape, class MainSchedule, class EpiSchedule,
          bool kResidual>
struct FusedS8Gemm {
  using Epi = FusedS8Epilogue<TileShape, ClusterShape, EpiSchedule, kResidual>;
  using Epilogue = typename Epi::Collective;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16,
      int8_t, cutlass::layout::ColumnMajor, 16, int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      MainSchedule>::CollectiveOp;
  using Kernel =
      cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t prime() { return prime_kernel_smem<Kernel>(); }

  static cudaError_t run(const FusedS8Args& g) {
    if (const cudaError_t s = prime(); s != cudaSuccess) return s;
    typename Kernel::StrideA stride_a{};
    cute::get<0>(stride_a) = g.lda;
    typename Kernel::StrideB stride_b{};
    cute::get<0>(stride_b) = g.ldw;
    typename Kernel::StrideD stride_d{};
    cute::get<0>(stride_d) = g.n;
    typename Kernel::StrideC stride_c{};
    cute::get<0>(stride_c) = g.n;
    const auto* c = kResidual ? reinterpret_cast<const cutlass::half_t*>(g.residual) : nullptr;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {g.m, g.n, g.k, 1},
        {g.a, stride_a, g.w, stride_b},
        {{}, c, stride_c, reinterpret_cast<cutlass::half_t*>(g.y), stride_d}};
    Epi::set(args.epilogue.thread, g.a_scale, g.w_scale, g.bias);
    if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
    if (Gemm::get_workspace_size(args) != 0) return cudaErrorInvalidValue;  // none expected
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
    if (Gemm::run(params, g.stream) != cutlass::Status::kSuccess) {
      const cudaError_t e = cudaGetLastError();
      return e != cudaSuccess ? e : cudaErrorLaunchFailure;
    }
    return cudaGetLastError();
  }
};

// The two epilogues of one tile configuration.
template <class TileShape, class ClusterShape, class MainSchedule, class EpiSchedule>
struct FusedS8TileConfig {
  using Plain = FusedS8Gemm<TileShape, ClusterShape, MainSchedule, EpiSchedule, false>;
  using WithResidual = FusedS8Gemm<TileShape, ClusterShape, MainSchedule, EpiSchedule, true>;
  static cudaError_t run(const FusedS8Args& args) {
    return args.residual ? WithResidual::run(args) : Plain::run(args);
  }
  static cudaError_t prime() {
    const cudaError_t s = Plain::prime();
    return s != cudaSuccess ? s : WithResidual::prime();
  }
};

using cute::_128;
using cute::_2;
using cute::_64;
using cutlass::epilogue::TmaWarpSpecialized;
using cutlass::epilogue::TmaWarpSpecializedCooperative;
using cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using cutlass::gemm::KernelTmaWarpSpecializedPingpong;

// Each FusedS8Tile's configuration (gemm_s8_fused.h says what they are).
template <FusedS8Tile kTile>
struct TileConfig;
template <>
struct TileConfig<FusedS8Tile::kLarge> {
  using type =
      FusedS8TileConfig<Shape<_128, _128, _128>, Shape<_1, _1, _1>,
                        KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative>;
};
template <>
struct TileConfig<FusedS8Tile::kSmall> {
  using type = FusedS8TileConfig<Shape<_64, _128, _128>, Shape<_1, _1, _1>,
                                 KernelTmaWarpSpecializedPingpong, TmaWarpSpecialized>;
};
template <>
struct TileConfig<FusedS8Tile::kPingpong> {
  using type = FusedS8TileConfig<Shape<_128, _128, _128>, Shape<_2, _1, _1>,
                                 KernelTmaWarpSpecializedPingpong, TmaWarpSpecialized>;
};

}  // namespace detail

// Runs one tile configuration (either epilogue: residual or not), and sets its kernels'
// shared-memory attributes. Instantiated once each, in the tile's own file
// (gemm_s8_fused_tile_*.cu); everywhere else only declared (the extern templates below).
template <FusedS8Tile kTile>
cudaError_t run_fused_s8_tile(const FusedS8Args& args) {
  return detail::TileConfig<kTile>::type::run(args);
}
template <FusedS8Tile kTile>
cudaError_t prime_fused_s8_tile() {
  return detail::TileConfig<kTile>::type::prime();
}

#define HYRT_FUSED_S8_TILE_EXTERN(tile)                                                 \
  extern template cudaError_t run_fused_s8_tile<FusedS8Tile::tile>(const FusedS8Args&); \
  extern template cudaError_t prime_fused_s8_tile<FusedS8Tile::tile>();
HYRT_FUSED_S8_TILE_EXTERN(kLarge)
HYRT_FUSED_S8_TILE_EXTERN(kSmall)
HYRT_FUSED_S8_TILE_EXTERN(kPingpong)
#undef HYRT_FUSED_S8_TILE_EXTERN

}  // namespace hyrt::backend::cuda::sm90

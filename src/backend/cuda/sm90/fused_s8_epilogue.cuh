// Internal to sm90/: the fused W8A8 epilogue (gemm_s8_fused.h's arithmetic) as a CUTLASS 3
// epilogue visitor tree, and the kernels' shared-memory priming, shared by the fused GEMM
// (gemm_s8_fused_kernel.cuh) and the implicit-GEMM convolution (conv_s8_implicit.cu). Kept apart
// from the GEMM's kernel header because that one pulls in CUTLASS's device-level GEMM adapter,
// whose CUTLASS 2 kernel templates make the conv kernel's GemmUniversal specialization ambiguous.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/device_kernel.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"

namespace hyrt::backend::cuda::sm90::detail {

using cute::_0;
using cute::_1;
using cute::Shape;
using cute::Stride;
namespace fusion = cutlass::epilogue::fusion;

constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// Lets CUTLASS kernel `Kernel` use the dynamic shared memory it needs beyond the default 48 KiB,
// once per process (a function-local static is initialized exactly once, thread-safely); a
// host-side attribute, not a stream operation, so it runs before any graph capture.
template <class Kernel>
cudaError_t prime_kernel_smem() {
  static const cudaError_t status = [] {
    const int smem = Kernel::SharedStorageSize;
    if (smem < (48 << 10)) return cudaSuccess;
    return cudaFuncSetAttribute(cutlass::device_kernel<Kernel>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  }();
  return status;
}

// The fused GEMM's epilogue for one tile shape: D = f16(acc · (a_scale[m] · w_scale[n]) + bias[n]
// [+ C]) (gemm_s8_fused.h), an epilogue visitor tree over CUTLASS's sm90 TMA epilogue. `Layout`
// is C's and D's layout tag: RowMajor for the GEMM (D [M, N], ld N), TensorNHWC for the implicit
// convolution (M = the output pixels, N = the output channels); the per-row scale is read at
// the row's linear index either way (Sm90ColBroadcast lays a hierarchical M out compactly).
template <class TileShape, class ClusterShape, class EpiSchedule, bool kResidual,
          class Layout = cutlass::layout::RowMajor>
struct FusedS8Epilogue {
  // Per-row (M) activation scale, per-column (N) weight scale and bias, read as f32 vectors.
  using ActScale = fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>>;
  using WeightScale = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>;
  using Bias = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>;
  using Mul = fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>;
  // acc · (a_scale · w_scale): the scales' product first, as launch_rescale_s32 computes it.
  using Scaled =
      fusion::Sm90EVT<Mul, fusion::Sm90AccFetch, fusion::Sm90EVT<Mul, ActScale, WeightScale>>;
  // + bias, rounded to f16 (a null bias reads as zeros: the broadcasts' null default); with a
  // residual, + bias in f32 and + C, then rounded: launch_rescale_s32's arithmetic.
  using ToHalf = fusion::Sm90Compute<cutlass::plus, cutlass::half_t, float, kRound>;
  using Biased =
      fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, float, float, kRound>, Scaled, Bias>;
  using Out =
      std::conditional_t<kResidual,
                         fusion::Sm90EVT<ToHalf, Biased, fusion::Sm90SrcFetch<cutlass::half_t>>,
                         fusion::Sm90EVT<ToHalf, Scaled, Bias>>;
  using ElementC = std::conditional_t<kResidual, cutlass::half_t, void>;

  using Collective = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float, ElementC, Layout, 8,
      cutlass::half_t, Layout, 8, EpiSchedule, Out>::CollectiveOp;

  // The tree's arguments for one launch (they mirror its shape: {children..., op}).
  template <class ThreadArgs>
  static void set(ThreadArgs& thread, const float* a_scale, const float* w_scale,
                  const float* bias) {
    const typename Scaled::Arguments scaled{{}, {{a_scale, 0.f, {}}, {w_scale, 0.f, {}}, {}}, {}};
    if constexpr (kResidual)
      thread = {{scaled, {bias, 0.f, {}}, {}}, {}, {}};  // (Scaled + Bias) + C
    else
      thread = {scaled, {bias, 0.f, {}}, {}};
  }
};

}  // namespace hyrt::backend::cuda::sm90::detail

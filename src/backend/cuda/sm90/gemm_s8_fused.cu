// The fused W8A8 GEMM for Hopper (gemm_s8_fused.h), from CUTLASS 3's sm90 collectives: the
// mainloop is CUTLASS's TMA + wgmma pipeline for s8 x s8 -> s32; the epilogue is an epilogue
// visitor tree (EVT) that computes hyrt's rescale per fragment before the f16 store.
// Compiled for sm_90a only (CMakeLists.txt); fused_s8_gemm_available gates the launches.
#include "backend/cuda/gemm_s8_fused.h"

#include <algorithm>
#include <cstdlib>
#include <string_view>
#include <type_traits>

#include "core/env.h"
#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"

namespace hyrt::backend::cuda {
namespace {

using cute::_0;
using cute::_1;
using cute::_128;
using cute::_64;
using cute::Shape;
using cute::Stride;
namespace fusion = cutlass::epilogue::fusion;

constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

// One tile configuration of the fused GEMM: D[M, N] = epilogue(A[M, K] · B[K, N]) with A the
// activations (row-major, K contiguous) and B the weights as stored [N, K] (column-major B);
// with kResidual the epilogue also adds C [M, N] (f16, row-major, ld N: the residual stream),
// read by the epilogue's own TMA loads, before the one rounding to f16.
template <class TileShape, class MainSchedule, class EpiSchedule, bool kResidual>
struct FusedS8Gemm {
  using ClusterShape = Shape<_1, _1, _1>;
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

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float, ElementC,
      cutlass::layout::RowMajor, 8, cutlass::half_t, cutlass::layout::RowMajor, 8, EpiSchedule,
      Out>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, cutlass::layout::RowMajor, 16,
      int8_t, cutlass::layout::ColumnMajor, 16, int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      MainSchedule>::CollectiveOp;
  using Kernel =
      cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static cudaError_t prime() {
    // Once per process (a function-local static is initialized exactly once, thread-safely).
    static const cudaError_t status = [] {
      const int smem = Kernel::SharedStorageSize;
      if (smem < (48 << 10)) return cudaSuccess;
      return cudaFuncSetAttribute(cutlass::device_kernel<Kernel>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    }();
    return status;
  }

  static cudaError_t run(const int8_t* a, int64_t lda, const int8_t* w, int64_t ldw,
                         const float* a_scale, const float* w_scale, const float* bias,
                         const __half* residual, __half* y, int m, int n, int k,
                         cudaStream_t stream) {
    if (const cudaError_t s = prime(); s != cudaSuccess) return s;
    typename Kernel::StrideA stride_a{};
    cute::get<0>(stride_a) = lda;
    typename Kernel::StrideB stride_b{};
    cute::get<0>(stride_b) = ldw;
    typename Kernel::StrideD stride_d{};
    cute::get<0>(stride_d) = n;
    typename Kernel::StrideC stride_c{};
    cute::get<0>(stride_c) = n;
    const auto* c = kResidual ? reinterpret_cast<const cutlass::half_t*>(residual) : nullptr;
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {m, n, k, 1},
        {a, stride_a, w, stride_b},
        {{}, c, stride_c, reinterpret_cast<cutlass::half_t*>(y), stride_d}};
    // The tree's arguments mirror its shape: {children..., op}.
    const typename Scaled::Arguments scaled{{}, {{a_scale, 0.f, {}}, {w_scale, 0.f, {}}, {}}, {}};
    if constexpr (kResidual)
      args.epilogue.thread = {{scaled, {bias, 0.f, {}}, {}}, {}, {}};  // (Scaled + Bias) + C
    else
      args.epilogue.thread = {scaled, {bias, 0.f, {}}, {}};
    if (Gemm::can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
    if (Gemm::get_workspace_size(args) != 0) return cudaErrorInvalidValue;  // none expected
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
    if (Gemm::run(params, stream) != cutlass::Status::kSuccess) {
      const cudaError_t e = cudaGetLastError();
      return e != cudaSuccess ? e : cudaErrorLaunchFailure;
    }
    return cudaGetLastError();
  }
};

template <bool kResidual>
using LargeTile =
    FusedS8Gemm<Shape<_128, _128, _128>, cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                cutlass::epilogue::TmaWarpSpecializedCooperative, kResidual>;
template <bool kResidual>
using SmallTile =
    FusedS8Gemm<Shape<_64, _128, _128>, cutlass::gemm::KernelTmaWarpSpecializedPingpong,
                cutlass::epilogue::TmaWarpSpecialized, kResidual>;

}  // namespace

bool fused_s8_gemm_available(int cc_major, int cc_minor) {
  return cc_major == 9 && cc_minor == 0;
}

bool fused_s8_gemm_shape_ok(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldw) {
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  return m > 0 && n > 0 && k > 0 && m <= kMax && n <= kMax && k <= kMax && k % 16 == 0 &&
         lda % 16 == 0 && ldw % 16 == 0 && lda >= k && ldw >= k && n % 8 == 0;
}

namespace {
// $HYRT_CUDA_FUSED_S8_TILE=large|small forces kAuto's tile (a knob for measuring the rule).
FusedS8Tile forced_tile() {
  static const FusedS8Tile forced = [] {
    const char* v = std::getenv("HYRT_CUDA_FUSED_S8_TILE");
    if (v && std::string_view(v) == "large") return FusedS8Tile::kLarge;
    if (v && std::string_view(v) == "small") return FusedS8Tile::kSmall;
    return FusedS8Tile::kAuto;
  }();
  return forced;
}

// Tiles per SM from which kAuto takes the 128 x 128 tile whatever K: 4, or
// $HYRT_CUDA_FUSED_S8_FILL (a whole number 1..64).
int64_t fill_tiles_per_sm() {
  static const int64_t fill = env_int("HYRT_CUDA_FUSED_S8_FILL", 1, 64).value_or(4);
  return fill;
}
}  // namespace

FusedS8Tile fused_s8_auto_tile(int64_t m, int64_t n, int64_t k, int multiprocessors) {
  // Measured on an H200 at the SDXL UNet's GEMMs (bench/results/README.md, fused W8A8): the
  // 128 x 128 tile won wherever K >= 2880 (3x3 convolutions: 2048·1280·17280 took 143 µs
  // against 171) and where its tiles fill the device many times over (8192·5120·640: 84 against
  // 97 µs); the 64 x 128 tile elsewhere (2048·1280·1280: 18.0 against 19.6 µs; few rows). A deep
  // K with fewer 128 x 128 tiles than SMs (SD 1.5's 512·1280·11520: 40 tiles on 132 SMs) keeps
  // the small tile, which at least doubles the SMs at work: with the K rule alone SD 1.5's 512²
  // step took 8.31 ms (7.94 unfused, and 7.94 fused under an earlier rule that kept such shapes
  // on the small tile) — the likely cause, not yet measured apart.
  // The fill threshold was 8 tiles per SM until SD 1.5's 1024² shapes were measured alone on an
  // H100 (bench_cuda_gemm --breakdown, bench/results/gemm_breakdown_h100.json): with 768 tiles
  // (5.8 per SM) 32768·320·320 took 24.4 µs on 128 x 128 against 31.4, and 32768·320·1280 38.7
  // against 54.7; at 320 tiles (2.4 per SM) the two were within 6 % either way (8192·640·2560:
  // 30.0 against 31.9 here, 56.8 against 52.1 on the H200). Now 4 per SM
  // ($HYRT_CUDA_FUSED_S8_FILL=N sets another, for measuring).
  const int64_t large_tiles = ((m + 127) / 128) * ((n + 127) / 128);
  const int64_t sms = std::max(multiprocessors, 1);
  const bool deep_k_fills_device = k >= 2880 && large_tiles >= sms;
  return deep_k_fills_device || large_tiles >= fill_tiles_per_sm() * sms ? FusedS8Tile::kLarge
                                                                         : FusedS8Tile::kSmall;
}

cudaError_t launch_fused_s8_gemm(const int8_t* a, int64_t lda, const int8_t* w, int64_t ldw,
                                 const float* a_scale, const float* w_scale, const float* bias,
                                 const __half* residual, __half* y, int64_t m, int64_t n, int64_t k,
                                 FusedS8Tile tile, int multiprocessors, cudaStream_t stream) {
  if (!fused_s8_gemm_shape_ok(m, n, k, lda, ldw)) return cudaErrorInvalidValue;
  if (tile == FusedS8Tile::kAuto) tile = forced_tile();
  if (tile == FusedS8Tile::kAuto) tile = fused_s8_auto_tile(m, n, k, multiprocessors);
  const auto mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const bool large = tile == FusedS8Tile::kLarge;
  if (residual)
    return large ? LargeTile<true>::run(a, lda, w, ldw, a_scale, w_scale, bias, residual, y, mi, ni,
                                        ki, stream)
                 : SmallTile<true>::run(a, lda, w, ldw, a_scale, w_scale, bias, residual, y, mi, ni,
                                        ki, stream);
  return large ? LargeTile<false>::run(a, lda, w, ldw, a_scale, w_scale, bias, nullptr, y, mi, ni,
                                       ki, stream)
               : SmallTile<false>::run(a, lda, w, ldw, a_scale, w_scale, bias, nullptr, y, mi, ni,
                                       ki, stream);
}

cudaError_t fused_s8_gemm_prime() {
  for (cudaError_t s : {LargeTile<false>::prime(), SmallTile<false>::prime(),
                        LargeTile<true>::prime(), SmallTile<true>::prime()})
    if (s != cudaSuccess) return s;
  return cudaSuccess;
}

}  // namespace hyrt::backend::cuda

// The W8A8 convolution as an implicit GEMM on Hopper (gemm_s8_fused.h): CUTLASS 3's sm90
// implicit-GEMM mainloop — the activation tiles loaded by TMA in im2col mode straight from the
// s8 NHWC input, the filter tiles by ordinary TMA, wgmma s8 x s8 -> s32 — with the fused W8A8
// GEMM's epilogue (fused_s8_epilogue.cuh) over NHWC output.
//
// Why not the im2col path: at SD 1.5's 1024² shapes the im2col quantizer that gathers each
// output pixel's 3x3xC patch wrote 94 MB for a 320-channel conv and took longer than the GEMM
// that read it back (bench/results/README.md, gemm_breakdown_h100).
//
// The tiles: 128 output pixels x 128 or 160 output channels (implicit_s8_conv_auto_tile says
// which), K steps of 64 channels (one tap at a time: C is a multiple of 64), one consumer warp
// group — CUTLASS's conv mainloop has no persistent (cooperative or
// ping-pong) schedule, so a tile's epilogue does not overlap the next tile's loads (one thread
// block an SM: its ~170-200 registers a thread leave no room for a second). As many pipeline
// stages as shared memory holds beside the epilogue's: a 64-channel step is ~0.15 µs of wgmma,
// well under a TMA load's latency.
// Compiled for sm_90a only (CMakeLists.txt); fused_s8_gemm_available gates the launches.
#include <algorithm>

#include "backend/cuda/gemm_s8_fused.h"
#include "backend/cuda/sm90/fused_s8_epilogue.cuh"
#include "cutlass/conv/collective/collective_builder.hpp"
#include "cutlass/conv/convnd_problem_shape.hpp"
#include "cutlass/conv/device/conv_universal_adapter.hpp"
#include "cutlass/conv/kernel/conv_universal.hpp"

namespace hyrt::backend::cuda {
namespace sm90::detail {
namespace {

using cute::_128;
using cute::_64;
using ClusterShape = Shape<_1, _1, _1>;

template <int kTileN, bool kResidual>
struct ImplicitConvS8 {
  using TileShape = Shape<_128, cute::Int<kTileN>, Shape<_64>>;
  using Epi = FusedS8Epilogue<TileShape, ClusterShape, cutlass::epilogue::TmaWarpSpecialized,
                              kResidual, cutlass::layout::TensorNHWC>;
  using Mainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::conv::Operator::kFprop, int8_t,
      cutlass::layout::TensorNHWC, 16, int8_t, cutlass::layout::TensorNHWC, 16, int32_t, TileShape,
      ClusterShape,
      cutlass::conv::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epi::Collective::SharedStorage))>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
  using Problem = cutlass::conv::ConvProblemShape<cutlass::conv::Operator::kFprop, 2>;
  using Kernel = cutlass::conv::kernel::ConvUniversal<Problem, Mainloop, typename Epi::Collective>;
  using Conv = cutlass::conv::device::ConvUniversalAdapter<Kernel>;

  static cudaError_t prime() { return prime_kernel_smem<Kernel>(); }

  // The launch's arguments (pointers may be null where only can_implement looks at them).
  static typename Conv::Arguments arguments(const int8_t* x, const int8_t* w, int64_t ldw,
                                            const float* row_scale, const float* w_scale,
                                            const float* bias, const __half* residual, __half* y,
                                            const ImplicitConvS8Shape& s) {
    const int b = static_cast<int>(s.batch), h = static_cast<int>(s.height),
              wd = static_cast<int>(s.width), c = static_cast<int>(s.channels),
              n = static_cast<int>(s.out_channels);
    const int p = s.padding, st = s.stride;
    // Activations [b, h, w, c] and filter [n, kh, kw, c] (rows ldw apart), channels innermost.
    const Problem problem(
        cutlass::conv::Mode::kCrossCorrelation, {b, h, wd, c},
        {int64_t{h} * wd * c, int64_t{wd} * c, int64_t{c}, 1}, {n, s.kernel_h, s.kernel_w, c},
        {ldw, int64_t{s.kernel_w} * c, int64_t{c}, 1}, {p, p}, {p, p}, {st, st}, {1, 1}, 1);
    // C and D: NHWC [b, oh, ow, n] — M = (ow, oh, b) with strides (n, ow·n, oh·ow·n).
    typename Kernel::StrideD stride_d{};
    const int64_t on = n, ow = s.out_w, oh = s.out_h;
    cute::get<0, 0>(stride_d) = on;
    cute::get<0, 1>(stride_d) = ow * on;
    cute::get<0, 2>(stride_d) = oh * ow * on;
    typename Kernel::StrideC stride_c{};
    cute::get<0, 0>(stride_c) = on;
    cute::get<0, 1>(stride_c) = ow * on;
    cute::get<0, 2>(stride_c) = oh * ow * on;
    const auto* cptr = kResidual ? reinterpret_cast<const cutlass::half_t*>(residual) : nullptr;
    typename Conv::Arguments args{
        problem, {x, w}, {{}, cptr, stride_c, reinterpret_cast<cutlass::half_t*>(y), stride_d}};
    Epi::set(args.epilogue.thread, row_scale, w_scale, bias);
    return args;
  }

  // CUTLASS's own checks of the shape (TMA's im2col limits, alignment), on the host.
  static bool implementable(const ImplicitConvS8Shape& s, int64_t ldw) {
    return Conv::can_implement(arguments(nullptr, nullptr, ldw, nullptr, nullptr, nullptr, nullptr,
                                         nullptr, s)) == cutlass::Status::kSuccess;
  }

  static cudaError_t run(const int8_t* x, const int8_t* w, int64_t ldw, const float* row_scale,
                         const float* w_scale, const float* bias, const __half* residual, __half* y,
                         const ImplicitConvS8Shape& s, cudaStream_t stream) {
    if (const cudaError_t e = prime(); e != cudaSuccess) return e;
    const typename Conv::Arguments args =
        arguments(x, w, ldw, row_scale, w_scale, bias, residual, y, s);
    if (Conv::can_implement(args) != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
    if (Conv::get_workspace_size(args) != 0) return cudaErrorInvalidValue;  // none expected
    typename Kernel::Params params = Kernel::to_underlying_arguments(args, nullptr);
    if (Conv::run(params, stream) != cutlass::Status::kSuccess) {
      const cudaError_t e = cudaGetLastError();
      return e != cudaSuccess ? e : cudaErrorLaunchFailure;
    }
    return cudaGetLastError();
  }
};

}  // namespace
}  // namespace sm90::detail

bool implicit_s8_conv_shape_ok(const ImplicitConvS8Shape& s, int64_t ldw) {
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  // At most 65535 images: launch_quantize_images_s8's limit (its operand's quantizer).
  if (s.batch <= 0 || s.batch > 65535 || s.height <= 0 || s.width <= 0 || s.channels <= 0 ||
      s.out_channels <= 0 || s.kernel_h <= 0 || s.kernel_w <= 0 || s.kernel_h > 16 ||
      s.kernel_w > 16)
    return false;
  if (s.channels % 64 != 0 || s.out_channels % 8 != 0 || ldw % 16 != 0 ||
      ldw < int64_t{s.kernel_h} * s.kernel_w * s.channels)
    return false;
  if ((s.stride != 1 && s.stride != 2) || s.padding < 0 || s.padding >= s.kernel_h ||
      s.padding >= s.kernel_w)
    return false;
  if (s.out_h != (s.height + 2 * s.padding - s.kernel_h) / s.stride + 1 ||
      s.out_w != (s.width + 2 * s.padding - s.kernel_w) / s.stride + 1 || s.out_h <= 0 ||
      s.out_w <= 0)
    return false;
  const int64_t in = s.batch * s.height * s.width * s.channels;
  const int64_t out = s.batch * s.out_h * s.out_w * s.out_channels;
  if (in > kMax || out > kMax || s.out_channels * ldw > kMax) return false;
  // And what CUTLASS checks itself (the same for both epilogues and tile widths but for the
  // tile, so both tiles are asked): a shape taken here never fails at launch.
  using sm90::detail::ImplicitConvS8;
  return ImplicitConvS8<128, false>::implementable(s, ldw) &&
         ImplicitConvS8<160, false>::implementable(s, ldw) &&
         ImplicitConvS8<128, true>::implementable(s, ldw) &&
         ImplicitConvS8<160, true>::implementable(s, ldw);
}

int implicit_s8_conv_auto_tile(const ImplicitConvS8Shape& s, int multiprocessors) {
  // Measured on an H100 (132 SMs) at SDXL's 1024² and SD 1.5's 512² convolutions, b2, by CUDA
  // events in the UNet step (bench/results/README.md, implicit_conv_h100): the 128 x 160 tile
  // beat the im2col path from 128 tiles up — 2048·1280 outputs (K 11520) 71.8 µs against 98.5,
  // 8192·320 33.9 against 61.6, 8192·640 87.2 against 114.9, 32768·320 109.0 against 206.4 —
  // and lost below: 2048·640 (64 tiles) 43.2 against 39.3, 512·1280 (32) 68.2 against 33.9,
  // 128·1280 (8) 66.1 against 28.6; the 128 x 128 tile was behind the 160 one wherever N was a
  // multiple of 160 (320 computes 384 on it) and also lost below a wave (2048·640: 35.2 / 39.3).
  // So: a tile where the tiles make about a wave (7/8 of the SMs), 160 wide where it divides N.
  const int64_t m = s.batch * s.out_h * s.out_w, n = s.out_channels;
  const int tile = n % 160 == 0 ? 160 : 128;
  const int64_t tiles = ((m + 127) / 128) * ((n + tile - 1) / tile);
  return 8 * tiles >= 7 * int64_t{std::max(multiprocessors, 1)} ? tile : 0;
}

cudaError_t launch_implicit_s8_conv(const int8_t* x, const int8_t* w, int64_t ldw,
                                    const float* row_scale, const float* w_scale, const float* bias,
                                    const __half* residual, __half* y, const ImplicitConvS8Shape& s,
                                    int tile_n, cudaStream_t stream) {
  if (!implicit_s8_conv_shape_ok(s, ldw)) return cudaErrorInvalidValue;
  using sm90::detail::ImplicitConvS8;
  if (tile_n == 160) {
    if (residual)
      return ImplicitConvS8<160, true>::run(x, w, ldw, row_scale, w_scale, bias, residual, y, s,
                                            stream);
    return ImplicitConvS8<160, false>::run(x, w, ldw, row_scale, w_scale, bias, nullptr, y, s,
                                           stream);
  }
  if (tile_n != 128) return cudaErrorInvalidValue;
  if (residual)
    return ImplicitConvS8<128, true>::run(x, w, ldw, row_scale, w_scale, bias, residual, y, s,
                                          stream);
  return ImplicitConvS8<128, false>::run(x, w, ldw, row_scale, w_scale, bias, nullptr, y, s,
                                         stream);
}

cudaError_t implicit_s8_conv_prime() {
  using sm90::detail::ImplicitConvS8;
  for (cudaError_t s : {ImplicitConvS8<128, false>::prime(), ImplicitConvS8<128, true>::prime(),
                        ImplicitConvS8<160, false>::prime(), ImplicitConvS8<160, true>::prime()})
    if (s != cudaSuccess) return s;
  return cudaSuccess;
}

}  // namespace hyrt::backend::cuda

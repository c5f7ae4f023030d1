// A convolution with few output channels computed directly (cuda_kernels.h, launch_conv_narrow).
//
// Why: the UNet's conv_out (320 -> 4 channels, 3x3, f16 weights) ran as im2col + GEMM, and at
// 1024² the im2col matrix is 32768 x 2880 f16 — 189 MB written and read back for 4 outputs a
// pixel: 226 µs a step on an H100 (bench/results/implicit_conv_h100.json), a GEMM with N = 4 that
// no tensor-core tile suits. Read directly, the input is 21 MB (its nine re-reads per pixel come
// from L1/L2) and the arithmetic 0.75 GFLOP.
//
// One warp per output pixel: its lanes stride over the pixel's K = kh·kw·C inputs in groups of V
// channels (16 bytes where C allows), each multiplying its group by every output channel's
// weights (all N rows staged in shared memory once per block), f32 sums reduced across the warp;
// lane n writes output channel n. Blocks stride over the pixels, so the weights are staged once
// per block rather than per pixel.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/op_device.cuh"

namespace hyrt::backend::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;

struct NarrowGeometry {
  int height, width, channels, kernel_w, stride, padding, out_h, out_w;
  int64_t k;  // kh·kw·C
};

template <class T, int V, int N>
__global__ void __launch_bounds__(kThreads)
    conv_narrow_kernel(const T* __restrict__ x, NarrowGeometry g, const T* __restrict__ w,
                       const float* __restrict__ bias, const T* __restrict__ residual,
                       T* __restrict__ y, int64_t pixels) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sw = reinterpret_cast<T*>(smem_raw);
  for (int64_t i = threadIdx.x; i < N * g.k; i += blockDim.x)
    sw[i] = w[i];
  __syncthreads();
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = blockDim.x / kWarp;
  const int64_t groups = g.k / V;
  for (int64_t p = blockIdx.x * warps + threadIdx.x / kWarp; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * warps) {
    const int ow = static_cast<int>(p % g.out_w);
    const int64_t t = p / g.out_w;
    const int oh = static_cast<int>(t % g.out_h);
    const int64_t b = t / g.out_h;
    float acc[N] = {};
    for (int64_t v = lane; v < groups; v += kWarp) {
      const int64_t kk = v * V;
      const int tap = static_cast<int>(kk / g.channels);
      const int c = static_cast<int>(kk - static_cast<int64_t>(tap) * g.channels);
      const int i = tap / g.kernel_w;
      const int ih = oh * g.stride - g.padding + i;
      const int iw = ow * g.stride - g.padding + (tap - i * g.kernel_w);
      if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;  // padding: zeros
      float xv[V];
      device::load_vec<T, V>(x + ((b * g.height + ih) * g.width + iw) * g.channels + c, xv);
#pragma unroll
      for (int n = 0; n < N; ++n) {
        float wv[V];
        device::load_vec<T, V>(sw + n * g.k + kk, wv);
#pragma unroll
        for (int e = 0; e < V; ++e)
          acc[n] = fmaf(xv[e], wv[e], acc[n]);
      }
    }
    float mine = 0.0f;
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const float s = device::warp_sum(acc[n]);
      if (lane == n) mine = s;
    }
    if (lane < N) {
      if (bias) mine += bias[lane];
      if (residual) mine += device::to_float(residual[p * N + lane]);
      y[p * N + lane] = device::from_float<T>(mine);
    }
  }
}

template <class T, int V, int N>
cudaError_t launch_typed(const T* x, const NarrowGeometry& g, const T* w, const float* bias,
                         const T* residual, T* y, int64_t pixels, int multiprocessors,
                         cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(N * g.k) * sizeof(T);
  const int64_t warps = kThreads / kWarp;
  const auto blocks = static_cast<unsigned>(
      std::min<int64_t>((pixels + warps - 1) / warps, int64_t{8} * std::max(multiprocessors, 1)));
  conv_narrow_kernel<T, V, N>
      <<<blocks, kThreads, smem, stream>>>(x, g, w, bias, residual, y, pixels);
  return cudaGetLastError();
}

template <class T, int V>
cudaError_t dispatch_n(const T* x, const NarrowGeometry& g, const T* w, int64_t n,
                       const float* bias, const T* residual, T* y, int64_t pixels, int sms,
                       cudaStream_t stream) {
  switch (n) {
    case 1:
      return launch_typed<T, V, 1>(x, g, w, bias, residual, y, pixels, sms, stream);
    case 2:
      return launch_typed<T, V, 2>(x, g, w, bias, residual, y, pixels, sms, stream);
    case 3:
      return launch_typed<T, V, 3>(x, g, w, bias, residual, y, pixels, sms, stream);
    case 4:
      return launch_typed<T, V, 4>(x, g, w, bias, residual, y, pixels, sms, stream);
    case 8:
      return launch_typed<T, V, 8>(x, g, w, bias, residual, y, pixels, sms, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

template <class T>
cudaError_t dispatch_v(const void* x, const NarrowGeometry& g, const void* w, int64_t n,
                       const float* bias, const void* residual, void* y, int64_t pixels, int sms,
                       cudaStream_t stream) {
  const auto* xt = static_cast<const T*>(x);
  const auto* wt = static_cast<const T*>(w);
  const auto* rt = static_cast<const T*>(residual);
  auto* yt = static_cast<T*>(y);
  constexpr int kVec = 16 / sizeof(T);  // 8 f16 or 4 f32: one 16-byte access
  const bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(w) % 16 == 0 && g.channels % kVec == 0 &&
                       g.k % kVec == 0;
  if (aligned) return dispatch_n<T, kVec>(xt, g, wt, n, bias, rt, yt, pixels, sms, stream);
  return dispatch_n<T, 1>(xt, g, wt, n, bias, rt, yt, pixels, sms, stream);
}

}  // namespace

bool conv_narrow_applies(int64_t out_channels, int64_t k, FloatType type) {
  const int64_t elem = type == FloatType::kF16 ? 2 : 4;
  return (out_channels >= 1 && out_channels <= 4) || out_channels == 8
             ? out_channels * k * elem <= kConvNarrowMaxWeightBytes && k > 0
             : false;
}

cudaError_t launch_conv_narrow(const void* x, FloatType type, int64_t batch, int64_t height,
                               int64_t width, int64_t channels, int kernel_h, int kernel_w,
                               int stride, int padding, int64_t out_h, int64_t out_w, const void* w,
                               int64_t out_channels, const float* bias, const void* residual,
                               void* y, int multiprocessors, cudaStream_t stream) {
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  const int64_t k = int64_t{kernel_h} * kernel_w * channels;
  if (batch < 0 || height <= 0 || width <= 0 || channels <= 0 || kernel_h <= 0 || kernel_w <= 0 ||
      stride <= 0 || padding < 0 || out_h <= 0 || out_w <= 0 || height > kMax || width > kMax ||
      channels > kMax || out_h > kMax || out_w > kMax ||
      !conv_narrow_applies(out_channels, k, type))
    return cudaErrorInvalidValue;
  const int64_t pixels = batch * out_h * out_w;
  if (pixels == 0) return cudaSuccess;
  const NarrowGeometry g{static_cast<int>(height),
                         static_cast<int>(width),
                         static_cast<int>(channels),
                         kernel_w,
                         stride,
                         padding,
                         static_cast<int>(out_h),
                         static_cast<int>(out_w),
                         k};
  if (type == FloatType::kF16)
    return dispatch_v<__half>(x, g, w, out_channels, bias, residual, y, pixels, multiprocessors,
                              stream);
  return dispatch_v<float>(x, g, w, out_channels, bias, residual, y, pixels, multiprocessors,
                           stream);
}

}  // namespace hyrt::backend::cuda

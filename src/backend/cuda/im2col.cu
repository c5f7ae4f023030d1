// im2col for convolutions run as GEMMs, and the narrow conv that skips it; contracts in
// cuda_kernels.h (launch_im2col, launch_im2col_quantize_s8, launch_conv_narrow). Every kernel is
// templated on the element type T, __half or float (the f32 activations of wide-range values): a
// 16-byte group is 8 halves or 4 floats.
//
// im2col: one thread per 16 bytes (8 f16 or 4 f32 channels) of the output matrix, or per
// element where Cin is not a multiple of that, over the whole [M, K] matrix: consecutive threads
// write consecutive columns of a row, and each tap's read is Cin contiguous channels of one input
// pixel. A flat mapping (rather than a warp per row) keeps the GPU busy when M is small and K large
// (the 8x8 and 16x16 UNet levels: M = 128 or 512 rows of 11520). Index math is 32-bit where the
// matrix allows.
//
// Row ranges: both kernels can produce rows [row_begin, row_begin + rows) of the matrix (a GEMM
// run in row chunks, cuda_gemm.cpp). A thread's local row r (counted from the range's start,
// and from the output's first row) reads as matrix row row_begin + r: only the source index
// moves, the output is dense from its start.
//
// im2col + quantize (the W8A8 candidate's prologue), never writing the f16 matrix: rows whose
// 16-byte groups a group of up to 256 threads holds in registers (K up to 16384 f16 channels
// x taps) are gathered once (im2col_quantize_resident_kernel); wider or unaligned rows take one
// block per row that gathers the row twice — absmax, then quantize — the second gather hitting L2.
// Same rule as launch_quantize_rows_s8, the same bits either way.
//
// Narrow convolutions (launch_conv_narrow): a conv to a few output channels — the UNet's
// conv_out, 320 -> 4, 3x3, f16 weights — gathers each output pixel's patch as im2col would but
// multiplies it at once by every output channel's weights, never writing the matrix: through
// im2col + GEMM, at 1024² that matrix is 32768 x 2880 f16, 189 MB written and read back for 4
// outputs a pixel (226 µs a step on an H100, bench/results/implicit_conv_h100.json), a GEMM with
// N = 4 that no tensor-core tile suits. Read directly, the input is 21 MB (its nine re-reads per
// pixel from L1/L2) and the arithmetic 0.75 GFLOP.
//
// The weight reorder to the im2col column order (launch_reorder_weight_rows) runs here too, on
// weights uploaded as stored: once per weight at prepare, a permutation the host would spend
// a nanosecond per element on (a transpose of [Cin, kh·kw] per output channel, no contiguous
// runs to copy).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/op_device.cuh"
#include "core/env.h"

namespace hyrt::backend::cuda {
namespace {

constexpr int kWarp = 32;

struct Geometry {
  int height, width, channels, kernel_w, stride, padding, out_h, out_w;
  int vecs_per_tap, row_vecs;  // V-element groups per tap and per row
};

// The input element offset of group v (V channels) of im2col row `row`, or -1 where the tap
// falls in the padding.
template <int V, class Index>
__device__ __forceinline__ int64_t source_offset(const Geometry& g, Index row, int v) {
  const int ow = static_cast<int>(row % static_cast<Index>(g.out_w));
  const Index t = row / static_cast<Index>(g.out_w);
  const int oh = static_cast<int>(t % static_cast<Index>(g.out_h));
  const int64_t b = static_cast<int64_t>(t / static_cast<Index>(g.out_h));
  const int tap = v / g.vecs_per_tap;
  const int c = (v - tap * g.vecs_per_tap) * V;
  const int i = tap / g.kernel_w;
  const int ih = oh * g.stride - g.padding + i;
  const int iw = ow * g.stride - g.padding + (tap - i * g.kernel_w);
  if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) return -1;
  return ((b * g.height + ih) * g.width + iw) * g.channels + c;
}

// Where output pixel m's patch lies in the input: its image's first element and the first
// tap's row and column (negative in the padding). Decoded once per pixel by the kernels that
// walk a whole patch (the resident quantizer, the narrow conv).
struct PatchOrigin {
  int64_t image = 0;
  int ih0 = 0, iw0 = 0;
};

__device__ __forceinline__ PatchOrigin patch_origin(const Geometry& g, int64_t m) {
  const int64_t t = m / g.out_w;
  const int64_t b = t / g.out_h;
  return {b * g.height * g.width * g.channels,
          static_cast<int>(t - b * g.out_h) * g.stride - g.padding,
          static_cast<int>(m - t * g.out_w) * g.stride - g.padding};
}

// The input element offset of group v (V channels) of the patch at `o`, or -1 in the padding.
template <int V>
__device__ __forceinline__ int64_t patch_offset(const Geometry& g, const PatchOrigin& o, int v) {
  const int tap = v / g.vecs_per_tap;
  const int c = (v - tap * g.vecs_per_tap) * V;
  const int i = tap / g.kernel_w;
  const int ih = o.ih0 + i, iw = o.iw0 + (tap - i * g.kernel_w);
  if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) return -1;
  return o.image + (static_cast<int64_t>(ih) * g.width + iw) * g.channels + c;
}

// V elements of T: one 16-byte word, or a single element (V == 1).
template <class T, int V>
using Vec = std::conditional_t<V == 1, T, uint4>;

// The widest group of T: 16 bytes.
template <class T>
constexpr int kWide = static_cast<int>(16 / sizeof(T));

template <class T, int V>
__device__ __forceinline__ Vec<T, V> zero_vec() {
  if constexpr (V != 1)
    return make_uint4(0, 0, 0, 0);
  else if constexpr (sizeof(T) == 2)
    return __ushort_as_half(0);
  else
    return 0.0f;
}

// total = rows · row_vecs groups of the output; Index holds row_begin + rows too.
template <class T, int V, class Index>
__global__ void im2col_kernel(const T* __restrict__ x, Index row_begin, Index total, Geometry g,
                              T* __restrict__ col) {
  Vec<T, V>* out = reinterpret_cast<Vec<T, V>*>(col);
  for (Index idx = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<Index>(gridDim.x) * blockDim.x) {
    const Index local_row = idx / static_cast<Index>(g.row_vecs);
    const int v = static_cast<int>(idx - local_row * static_cast<Index>(g.row_vecs));
    const int64_t src = source_offset<V>(g, row_begin + local_row, v);
    out[idx] = src >= 0 ? *reinterpret_cast<const Vec<T, V>*>(x + src) : zero_vec<T, V>();
  }
}

template <class T, int V>
__device__ __forceinline__ void to_floats(const Vec<T, V>& in, float (&out)[V]) {
  if constexpr (V == 1) {
    if constexpr (sizeof(T) == 2)
      out[0] = __half2float(in);
    else
      out[0] = in;
  } else if constexpr (sizeof(T) == 4) {
    const float* f = reinterpret_cast<const float*>(&in);
#pragma unroll
    for (int i = 0; i < V; ++i)
      out[i] = f[i];
  } else {
    const __half2* h = reinterpret_cast<const __half2*>(&in);
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
      const float2 f = __half22float2(h[i]);
      out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
  }
}

// The row quantizer's two steps on V elements of T (op_device.cuh's W8A8 rule):
// |v| folded into the running absmax m, and v quantized by inv = 127 / absmax into dst.
template <class T, int V>
__device__ __forceinline__ float fold_absmax(float m, const Vec<T, V>& v) {
  float f[V];
  to_floats<T, V>(v, f);
#pragma unroll
  for (int i = 0; i < V; ++i)
    m = fmaxf(m, fabsf(f[i]));
  return m;
}

template <class T, int V>
__device__ __forceinline__ void quantize_store(const Vec<T, V>& v, float inv, int8_t* dst) {
  float f[V];
  to_floats<T, V>(v, f);
  device::store_s8<V>(f, inv, dst);
}

constexpr int kQuantThreads = 256;

// Local row `row` of q and scales is matrix row row_begin + row.
template <class T, int V>
__global__ void im2col_quantize_kernel(const T* __restrict__ x, int64_t row_begin, int64_t rows,
                                       Geometry g, int64_t ld_q, int8_t* __restrict__ q,
                                       float* __restrict__ scales) {
  __shared__ float warp_max[kQuantThreads / kWarp];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t matrix_row = row_begin + row;
    float m = 0.0f;
    for (int v = threadIdx.x; v < g.row_vecs; v += blockDim.x) {
      const int64_t src = source_offset<V>(g, matrix_row, v);
      if (src >= 0) m = fold_absmax<T, V>(m, *reinterpret_cast<const Vec<T, V>*>(x + src));
    }
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    if (threadIdx.x % kWarp == 0) warp_max[threadIdx.x / kWarp] = m;
    __syncthreads();
    m = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x / kWarp); ++w)
      m = fmaxf(m, warp_max[w]);
    __syncthreads();  // warp_max is rewritten for the next row
    const float inv = device::s8_row_inv(m);
    if (threadIdx.x == 0) scales[row] = device::s8_row_scale(m);

    int8_t* qr = q + row * ld_q;
    for (int v = threadIdx.x; v < g.row_vecs; v += blockDim.x) {
      const int64_t src = source_offset<V>(g, matrix_row, v);
      quantize_store<T, V>(
          src >= 0 ? *reinterpret_cast<const Vec<T, V>*>(x + src) : zero_vec<T, V>(), inv,
          qr + static_cast<int64_t>(v) * V);
    }
    for (int64_t k = static_cast<int64_t>(g.row_vecs) * V + threadIdx.x; k < ld_q; k += blockDim.x)
      qr[k] = 0;
  }
}

// im2col + quantize with each row gathered once: a group of `group` threads (32..256, a power
// of two) owns a row and holds its 16-byte groups in registers, up to kResidentGroups a thread;
// the group reduces |x| to the row's absmax (warp shuffles, then shared memory across its
// warps) and each thread quantizes what it holds. The row's output pixel is decoded once per
// thread (64-bit division), each group's tap with 32-bit arithmetic. The same bits as
// im2col_quantize_kernel.
constexpr int kResidentThreads = 256;
constexpr int kResidentGroups = 8;

// Threads per row for rows of row_vecs groups, or 0 when 256 threads cannot hold one.
int resident_group(int64_t row_vecs) {
  for (int g = kWarp; g <= kResidentThreads; g *= 2)
    if (row_vecs <= static_cast<int64_t>(g) * kResidentGroups) return g;
  return 0;
}

template <class T>
__global__ void __launch_bounds__(kResidentThreads)
    im2col_quantize_resident_kernel(const T* __restrict__ x, int64_t row_begin, int64_t rows,
                                    Geometry g, int group, int64_t ld_q, int8_t* __restrict__ q,
                                    float* __restrict__ scales) {
  constexpr int V = kWide<T>;
  __shared__ float warp_max[kResidentThreads / kWarp];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & (group - 1);  // the thread's place in its row's group
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kResidentThreads / group) + tid / group;
  const bool active = row < rows;
  const PatchOrigin origin = active ? patch_origin(g, row_begin + row) : PatchOrigin{};

  uint4 held[kResidentGroups];
  float m = 0.0f;
#pragma unroll
  for (int r = 0; r < kResidentGroups; ++r) {
    const int v = lane + r * group;
    if (active && v < g.row_vecs) {
      const int64_t src = patch_offset<V>(g, origin, v);
      held[r] = src >= 0 ? *reinterpret_cast<const uint4*>(x + src) : make_uint4(0, 0, 0, 0);
      m = fold_absmax<T, V>(m, held[r]);
    }
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (group > kWarp) {  // the same for the whole block: every thread reaches the barrier
    if (tid % kWarp == 0) warp_max[tid / kWarp] = m;
    __syncthreads();
    const int first = (tid / group) * (group / kWarp);
    m = 0.0f;
    for (int w = 0; w < group / kWarp; ++w)
      m = fmaxf(m, warp_max[first + w]);
  }
  if (!active) return;
  const float inv = device::s8_row_inv(m);
  if (lane == 0) scales[row] = device::s8_row_scale(m);

  int8_t* qr = q + row * ld_q;
#pragma unroll
  for (int r = 0; r < kResidentGroups; ++r) {
    const int v = lane + r * group;
    if (v < g.row_vecs) quantize_store<T, V>(held[r], inv, qr + static_cast<int64_t>(v) * V);
  }
  for (int64_t k = static_cast<int64_t>(g.row_vecs) * V + lane; k < ld_q; k += group)
    qr[k] = 0;
}

// Whether the two-pass kernel was asked for everywhere ($HYRT_CUDA_QUANTIZE=twopass: a knob
// for measuring the resident kernel against it in one build).
bool two_pass_forced() {
  static const bool forced = env_is("HYRT_CUDA_QUANTIZE", "twopass");
  return forced;
}

Geometry make_geometry(int64_t height, int64_t width, int64_t channels, int kernel_h, int kernel_w,
                       int stride, int padding, int64_t out_h, int64_t out_w, int vec) {
  Geometry g;
  g.height = static_cast<int>(height), g.width = static_cast<int>(width);
  g.channels = static_cast<int>(channels), g.kernel_w = kernel_w;
  g.stride = stride, g.padding = padding;
  g.out_h = static_cast<int>(out_h), g.out_w = static_cast<int>(out_w);
  g.vecs_per_tap = static_cast<int>(channels / vec);
  g.row_vecs = kernel_h * kernel_w * g.vecs_per_tap;
  return g;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <class T, int V>
void im2col(const T* x, int64_t row_begin, int64_t rows, const Geometry& g, T* col,
            cudaStream_t stream) {
  constexpr int kThreads = 256;
  const int64_t total = rows * g.row_vecs;
  const auto blocks =
      static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 30));
  // 32-bit indices when both the output's groups and the matrix rows fit.
  if (total <= INT32_MAX && row_begin + rows <= INT32_MAX)
    im2col_kernel<T, V, uint32_t><<<blocks, kThreads, 0, stream>>>(
        x, static_cast<uint32_t>(row_begin), static_cast<uint32_t>(total), g, col);
  else
    im2col_kernel<T, V, int64_t><<<blocks, kThreads, 0, stream>>>(x, row_begin, total, g, col);
}

template <class T>
void im2col_typed(const void* x, int64_t height, int64_t width, int64_t channels, int kernel_h,
                  int kernel_w, int stride, int padding, int64_t out_h, int64_t out_w,
                  int64_t row_begin, int64_t rows, void* col, cudaStream_t stream) {
  constexpr int kV = kWide<T>;
  const auto* xt = static_cast<const T*>(x);
  auto* ct = static_cast<T*>(col);
  if (channels % kV == 0 && aligned16(x) && aligned16(col))
    im2col<T, kV>(xt, row_begin, rows,
                  make_geometry(height, width, channels, kernel_h, kernel_w, stride, padding, out_h,
                                out_w, kV),
                  ct, stream);
  else
    im2col<T, 1>(xt, row_begin, rows,
                 make_geometry(height, width, channels, kernel_h, kernel_w, stride, padding, out_h,
                               out_w, 1),
                 ct, stream);
}

template <class T>
cudaError_t im2col_quantize_typed(const void* x, int64_t height, int64_t width, int64_t channels,
                                  int kernel_h, int kernel_w, int stride, int padding,
                                  int64_t out_h, int64_t out_w, int64_t row_begin, int64_t rows,
                                  int64_t ld_q, int8_t* q, float* scales, cudaStream_t stream) {
  constexpr int kV = kWide<T>;
  const auto* xt = static_cast<const T*>(x);
  const auto blocks = static_cast<unsigned>(std::min<int64_t>(rows, 1 << 30));
  const bool wide = channels % kV == 0 && aligned16(x) &&
                    reinterpret_cast<uintptr_t>(q) % kV == 0 && ld_q % kV == 0;
  if (wide && !two_pass_forced()) {
    const Geometry g = make_geometry(height, width, channels, kernel_h, kernel_w, stride, padding,
                                     out_h, out_w, kV);
    if (const int group = resident_group(g.row_vecs)) {
      const int64_t per_block = kResidentThreads / group;
      const int64_t resident_blocks = (rows + per_block - 1) / per_block;
      if (resident_blocks <= 0x7fffffff) {
        im2col_quantize_resident_kernel<T>
            <<<static_cast<unsigned>(resident_blocks), kResidentThreads, 0, stream>>>(
                xt, row_begin, rows, g, group, ld_q, q, scales);
        return cudaGetLastError();
      }
    }
  }
  if (wide)
    im2col_quantize_kernel<T, kV><<<blocks, kQuantThreads, 0, stream>>>(
        xt, row_begin, rows,
        make_geometry(height, width, channels, kernel_h, kernel_w, stride, padding, out_h, out_w,
                      kV),
        ld_q, q, scales);
  else
    im2col_quantize_kernel<T, 1><<<blocks, kQuantThreads, 0, stream>>>(
        xt, row_begin, rows,
        make_geometry(height, width, channels, kernel_h, kernel_w, stride, padding, out_h, out_w,
                      1),
        ld_q, q, scales);
  return cudaGetLastError();
}

// One thread per element of dst (launch_reorder_weight_rows); T holds the element's bits.
template <class T>
__global__ void reorder_weight_rows_kernel(const T* __restrict__ src, int64_t rows, int64_t groups,
                                           int64_t taps, int64_t dst_rows, int64_t ld_dst,
                                           T* __restrict__ dst) {
  const int64_t cols = groups * taps, total = dst_rows * ld_dst;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / ld_dst, j = idx - r * ld_dst;  // dst[r, j], j = t·groups + c
    T v = 0;
    if (r < rows && j < cols) {
      const int64_t t = j / groups, c = j - t * groups;
      v = src[r * cols + c * taps + t];
    }
    dst[idx] = v;
  }
}

// --- narrow convolutions (launch_conv_narrow) ---------------------------------------------------

constexpr int kNarrowThreads = 256;

// One warp per output pixel: its lanes stride over the pixel's patch in groups of V channels,
// each multiplying its group by every output channel's weights (all N rows staged in shared
// memory once per block; blocks stride over the pixels), f32 sums reduced across the warp; lane
// n writes output channel n.
template <class T, int V, int N>
__global__ void __launch_bounds__(kNarrowThreads)
    conv_narrow_kernel(const T* __restrict__ x, Geometry g, const T* __restrict__ w,
                       const float* __restrict__ bias, const T* __restrict__ residual,
                       T* __restrict__ y, int64_t pixels) {
  extern __shared__ __align__(16) unsigned char narrow_smem[];
  T* sw = reinterpret_cast<T*>(narrow_smem);
  const int64_t k = static_cast<int64_t>(g.row_vecs) * V;
  for (int64_t i = threadIdx.x; i < N * k; i += blockDim.x)
    sw[i] = w[i];
  __syncthreads();
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = blockDim.x / kWarp;
  for (int64_t p = blockIdx.x * warps + threadIdx.x / kWarp; p < pixels;
       p += static_cast<int64_t>(gridDim.x) * warps) {
    const PatchOrigin origin = patch_origin(g, p);
    float acc[N] = {};
    for (int v = lane; v < g.row_vecs; v += kWarp) {
      const int64_t src = patch_offset<V>(g, origin, v);
      if (src < 0) continue;  // padding: zeros
      float xv[V];
      to_floats<T, V>(*reinterpret_cast<const Vec<T, V>*>(x + src), xv);
#pragma unroll
      for (int n = 0; n < N; ++n) {
        float wv[V];
        to_floats<T, V>(*reinterpret_cast<const Vec<T, V>*>(sw + n * k + int64_t{v} * V), wv);
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

template <class T, int V>
cudaError_t conv_narrow_n(const T* x, const Geometry& g, const T* w, int64_t n, const float* bias,
                          const T* residual, T* y, int64_t pixels, int multiprocessors,
                          cudaStream_t stream) {
  const size_t smem = static_cast<size_t>(n * g.row_vecs * V) * sizeof(T);
  const int64_t warps = kNarrowThreads / kWarp;
  const auto blocks = static_cast<unsigned>(
      std::min<int64_t>((pixels + warps - 1) / warps, int64_t{8} * std::max(multiprocessors, 1)));
  const auto go = [&](auto kernel) {
    kernel<<<blocks, kNarrowThreads, smem, stream>>>(x, g, w, bias, residual, y, pixels);
    return cudaGetLastError();
  };
  switch (n) {
    case 1:
      return go(conv_narrow_kernel<T, V, 1>);
    case 2:
      return go(conv_narrow_kernel<T, V, 2>);
    case 3:
      return go(conv_narrow_kernel<T, V, 3>);
    case 4:
      return go(conv_narrow_kernel<T, V, 4>);
    case 8:
      return go(conv_narrow_kernel<T, V, 8>);
    default:
      return cudaErrorInvalidValue;
  }
}

// 16-byte groups where the channels and pointers allow, else one element.
template <class T>
cudaError_t conv_narrow_typed(const void* x, int64_t height, int64_t width, int64_t channels,
                              int kernel_h, int kernel_w, int stride, int padding, int64_t out_h,
                              int64_t out_w, const void* w, int64_t n, const float* bias,
                              const void* residual, void* y, int64_t pixels, int multiprocessors,
                              cudaStream_t stream) {
  constexpr int kV = kWide<T>;
  const auto* xt = static_cast<const T*>(x);
  const auto* wt = static_cast<const T*>(w);
  const auto* rt = static_cast<const T*>(residual);
  auto* yt = static_cast<T*>(y);
  if (channels % kV == 0 && aligned16(x) && aligned16(w))
    return conv_narrow_n<T, kV>(xt,
                                make_geometry(height, width, channels, kernel_h, kernel_w, stride,
                                              padding, out_h, out_w, kV),
                                wt, n, bias, rt, yt, pixels, multiprocessors, stream);
  return conv_narrow_n<T, 1>(
      xt,
      make_geometry(height, width, channels, kernel_h, kernel_w, stride, padding, out_h, out_w, 1),
      wt, n, bias, rt, yt, pixels, multiprocessors, stream);
}

bool valid_rows(int64_t batch, int64_t out_h, int64_t out_w, int64_t row_begin, int64_t rows) {
  return row_begin >= 0 && rows >= 0 && row_begin + rows <= batch * out_h * out_w;
}

}  // namespace

cudaError_t launch_im2col(const void* x, FloatType type, int64_t batch, int64_t height,
                          int64_t width, int64_t channels, int kernel_h, int kernel_w, int stride,
                          int padding, int64_t out_h, int64_t out_w, int64_t row_begin,
                          int64_t rows, void* col, cudaStream_t stream) {
  if (!valid_rows(batch, out_h, out_w, row_begin, rows)) return cudaErrorInvalidValue;
  if (rows <= 0 || channels <= 0 || kernel_h <= 0 || kernel_w <= 0) return cudaSuccess;
  if (type == FloatType::kF16)
    im2col_typed<__half>(x, height, width, channels, kernel_h, kernel_w, stride, padding, out_h,
                         out_w, row_begin, rows, col, stream);
  else
    im2col_typed<float>(x, height, width, channels, kernel_h, kernel_w, stride, padding, out_h,
                        out_w, row_begin, rows, col, stream);
  return cudaGetLastError();
}

cudaError_t launch_im2col_quantize_s8(const void* x, FloatType type, int64_t batch, int64_t height,
                                      int64_t width, int64_t channels, int kernel_h, int kernel_w,
                                      int stride, int padding, int64_t out_h, int64_t out_w,
                                      int64_t row_begin, int64_t rows, int64_t ld_q, int8_t* q,
                                      float* scales, cudaStream_t stream) {
  if (!valid_rows(batch, out_h, out_w, row_begin, rows)) return cudaErrorInvalidValue;
  if (rows <= 0 || channels <= 0 || kernel_h <= 0 || kernel_w <= 0) return cudaSuccess;
  if (type == FloatType::kF16)
    return im2col_quantize_typed<__half>(x, height, width, channels, kernel_h, kernel_w, stride,
                                         padding, out_h, out_w, row_begin, rows, ld_q, q, scales,
                                         stream);
  return im2col_quantize_typed<float>(x, height, width, channels, kernel_h, kernel_w, stride,
                                      padding, out_h, out_w, row_begin, rows, ld_q, q, scales,
                                      stream);
}

cudaError_t launch_reorder_weight_rows(const void* src, int elem_bytes, int64_t rows,
                                       int64_t groups, int64_t taps, int64_t dst_rows,
                                       int64_t ld_dst, void* dst, cudaStream_t stream) {
  if ((elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4) || rows < 0 || groups < 0 ||
      taps < 1 || dst_rows < rows || ld_dst < groups * taps)
    return cudaErrorInvalidValue;
  const int64_t total = dst_rows * ld_dst;
  if (total <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const auto blocks =
      static_cast<unsigned>(std::min<int64_t>((total + kThreads - 1) / kThreads, 1 << 20));
  if (elem_bytes == 1)
    reorder_weight_rows_kernel<uint8_t>
        <<<blocks, kThreads, 0, stream>>>(static_cast<const uint8_t*>(src), rows, groups, taps,
                                          dst_rows, ld_dst, static_cast<uint8_t*>(dst));
  else if (elem_bytes == 2)
    reorder_weight_rows_kernel<uint16_t>
        <<<blocks, kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), rows, groups, taps,
                                          dst_rows, ld_dst, static_cast<uint16_t*>(dst));
  else
    reorder_weight_rows_kernel<uint32_t>
        <<<blocks, kThreads, 0, stream>>>(static_cast<const uint32_t*>(src), rows, groups, taps,
                                          dst_rows, ld_dst, static_cast<uint32_t*>(dst));
  return cudaGetLastError();
}

bool conv_narrow_applies(int64_t out_channels, int64_t k, FloatType type) {
  const int64_t elem = type == FloatType::kF16 ? 2 : 4;
  const bool n_ok = (out_channels >= 1 && out_channels <= 4) || out_channels == 8;
  return n_ok && k > 0 && out_channels * k * elem <= kConvNarrowMaxWeightBytes;
}

cudaError_t launch_conv_narrow(const void* x, FloatType type, int64_t batch, int64_t height,
                               int64_t width, int64_t channels, int kernel_h, int kernel_w,
                               int stride, int padding, int64_t out_h, int64_t out_w, const void* w,
                               int64_t out_channels, const float* bias, const void* residual,
                               void* y, int multiprocessors, cudaStream_t stream) {
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  if (batch < 0 || height <= 0 || width <= 0 || channels <= 0 || kernel_h <= 0 || kernel_w <= 0 ||
      stride <= 0 || padding < 0 || out_h <= 0 || out_w <= 0 || height > kMax || width > kMax ||
      channels > kMax || out_h > kMax || out_w > kMax ||
      !conv_narrow_applies(out_channels, int64_t{kernel_h} * kernel_w * channels, type))
    return cudaErrorInvalidValue;
  const int64_t pixels = batch * out_h * out_w;
  if (pixels == 0) return cudaSuccess;
  if (type == FloatType::kF16)
    return conv_narrow_typed<__half>(x, height, width, channels, kernel_h, kernel_w, stride,
                                     padding, out_h, out_w, w, out_channels, bias, residual, y,
                                     pixels, multiprocessors, stream);
  return conv_narrow_typed<float>(x, height, width, channels, kernel_h, kernel_w, stride, padding,
                                  out_h, out_w, w, out_channels, bias, residual, y, pixels,
                                  multiprocessors, stream);
}

}  // namespace hyrt::backend::cuda

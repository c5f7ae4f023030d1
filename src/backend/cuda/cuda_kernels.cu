// hyrt's CUDA kernels for the GEMM programs; contracts in cuda_kernels.h.
//
// All of them are memory-bound passes over a matrix. Where a row's length and the pointers
// allow, each thread moves 16 bytes (or 8, for the narrow side of a widening/narrowing pass)
// per access and a warp covers consecutive columns of one row, so accesses coalesce; a
// scalar variant of the same kernel handles odd sizes. Math is f32.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/op_device.cuh"

namespace hyrt::backend::cuda {
namespace {

constexpr int kWarp = 32;

bool aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// --- element access ------------------------------------------------------------------------

// Loads V consecutive elements of p as floats: one 16-byte access for (f32, 4) and (f16, 8).
template <class T, int V>
__device__ __forceinline__ void load_f32(const T* p, float (&out)[V]) {
  if constexpr (V == 1) {
    if constexpr (sizeof(T) == 2)
      out[0] = __half2float(p[0]);
    else
      out[0] = p[0];
  } else if constexpr (sizeof(T) == 4) {
    static_assert(V == 4);
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  } else {
    static_assert(V == 4 || V == 8);
    using Packed = std::conditional_t<V == 4, uint2, uint4>;
    const Packed u = *reinterpret_cast<const Packed*>(p);
    const __half2* h = reinterpret_cast<const __half2*>(&u);
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
      const float2 f = __half22float2(h[i]);
      out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
  }
}

__device__ __forceinline__ float activate(float x, EpilogueActivation act) {
  switch (act) {
    case EpilogueActivation::kSilu:
      return device::sigmoid_gate(x, 1.0f);
    case EpilogueActivation::kGelu:
      return device::gelu(x);
    case EpilogueActivation::kQuickGelu:
      return device::sigmoid_gate(x, 1.702f);
    case EpilogueActivation::kRelu:
      return fmaxf(x, 0.0f);
    default:
      return x;
  }
}

// Stores V floats at p as T (f16: round to nearest even): one access of V·sizeof(T) bytes.
template <class T, int V>
__device__ __forceinline__ void store_from_f32(T* p, const float (&in)[V]) {
  if constexpr (V == 1) {
    if constexpr (sizeof(T) == 2)
      p[0] = __float2half_rn(in[0]);
    else
      p[0] = in[0];
  } else if constexpr (sizeof(T) == 4) {
    static_assert(V == 4);
    *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
  } else {
    static_assert(V == 4 || V == 8);
    // Packed in a vector-typed register so that the store is one aligned access.
    using Packed = std::conditional_t<V == 4, uint2, uint4>;
    Packed packed;
    __half2* h = reinterpret_cast<__half2*>(&packed);
#pragma unroll
    for (int i = 0; i < V / 2; ++i)
      h[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
    *reinterpret_cast<Packed*>(p) = packed;
  }
}

// --- activation quantizer: one warp per row -----------------------------------------------------

// max |x| over groups [first, end) of V elements of p, stepping by `step` groups: a thread's
// share of a quantizer's absmax pass.
template <class T, int V>
__device__ __forceinline__ float strided_absmax(const T* p, int64_t first, int64_t end,
                                                int64_t step) {
  float m = 0.0f;
  for (int64_t g = first; g < end; g += step) {
    float v[V];
    load_f32<T, V>(p + g * V, v);
#pragma unroll
    for (int i = 0; i < V; ++i)
      m = fmaxf(m, fabsf(v[i]));
  }
  return m;
}

template <class T, int V>
__global__ void quantize_rows_kernel(const T* __restrict__ x, int64_t rows, int64_t cols,
                                     int64_t ld_q, int8_t* __restrict__ q,
                                     float* __restrict__ scales) {
  const int lane = threadIdx.x % kWarp;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= rows) return;  // the whole warp leaves together
  const T* xr = x + row * cols;

  // Groups of V from the lane's; cols is a multiple of V (the launch picks V so).
  const float m = device::warp_max(strided_absmax<T, V>(xr, lane, cols / V, kWarp));
  const float inv = device::s8_row_inv(m);
  if (lane == 0) scales[row] = device::s8_row_scale(m);

  // Second pass over the row: it is at most a few tens of KB, still in L1/L2.
  int8_t* qr = q + row * ld_q;
  for (int64_t k = static_cast<int64_t>(lane) * V; k < cols; k += kWarp * V) {
    float v[V];
    load_f32<T, V>(xr + k, v);
    device::store_s8<V>(v, inv, qr + k);
  }
  for (int64_t k = cols + lane; k < ld_q; k += kWarp)
    qr[k] = 0;
}

// --- 2-D passes: a warp covers 32·V consecutive columns of a row; blocks of 32 x 8 threads
// keep per-column operands (scales, bias) in registers while striding over rows. -------------

constexpr int kRowsPerBlock = 8;

dim3 grid_2d(int64_t rows, int64_t cols, int vec) {
  const int64_t col_groups = (cols + vec - 1) / vec;
  const int64_t gx = (col_groups + kWarp - 1) / kWarp;
  const int64_t gy = std::min<int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 4096);
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

template <class T, int V>
__global__ void rescale_kernel(const int32_t* __restrict__ acc, int64_t rows, int64_t cols,
                               int64_t ld_acc, const float* __restrict__ row_scale,
                               const float* __restrict__ col_scale, const float* __restrict__ bias,
                               EpilogueActivation act, const T* residual, T* y) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= cols) return;
  float cs[V], b[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    cs[i] = col_scale[c + i];
    b[i] = bias ? bias[c + i] : 0.0f;
  }
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const float rs = row_scale[r];
    int32_t a[V];
    if constexpr (V == 4) {
      const int4 v = *reinterpret_cast<const int4*>(acc + r * ld_acc + c);
      a[0] = v.x, a[1] = v.y, a[2] = v.z, a[3] = v.w;
    } else {
      a[0] = acc[r * ld_acc + c];
    }
    float out[V];
#pragma unroll
    for (int i = 0; i < V; ++i)
      out[i] = activate(static_cast<float>(a[i]) * (rs * cs[i]) + b[i], act);
    if (residual) {
      float res[V];
      load_f32<T, V>(residual + r * cols + c, res);
#pragma unroll
      for (int i = 0; i < V; ++i)
        out[i] += res[i];
    }
    store_from_f32<T, V>(y + r * cols + c, out);
  }
}

// T: the widened type, __half or float. V == 8 for f16 (one 16-byte store), V == 4 for f32.
template <class T, int V>
__global__ void dequantize_rows_kernel(const int8_t* __restrict__ q, int64_t rows, int64_t cols,
                                       int64_t ld_q, const float* __restrict__ scale,
                                       T* __restrict__ w) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (c >= cols) return;
  for (int64_t r = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.y) * blockDim.y) {
    const float s = scale[r];
    uint2 packed;  // V == 8: one 8-byte load; V == 4: one 4-byte load
    const int8_t* b = reinterpret_cast<const int8_t*>(&packed);
    if constexpr (V == 8)
      packed = *reinterpret_cast<const uint2*>(q + r * ld_q + c);
    else if constexpr (V == 4)
      packed.x = *reinterpret_cast<const uint32_t*>(q + r * ld_q + c);
    else
      b = q + r * ld_q + c;
    float out[V];
#pragma unroll
    for (int i = 0; i < V; ++i)
      out[i] = static_cast<float>(b[i]) * s;
    store_from_f32<T, V>(w + r * cols + c, out);
  }
}

// --- 1-D passes --------------------------------------------------------------------------------

unsigned grid_1d(int64_t groups, int threads) {
  return static_cast<unsigned>(std::min<int64_t>((groups + threads - 1) / threads, 1 << 16));
}

template <int V>
__global__ void f32_to_f16_kernel(const float* __restrict__ x, int64_t n, __half* __restrict__ y) {
  for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x * V) {
    float v[V];
    load_f32<float, V>(x + i, v);
    store_from_f32<__half, V>(y + i, v);
  }
}

__device__ __forceinline__ uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

template <class T>
__global__ void fill_random_kernel(T* __restrict__ data, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t h = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(i)));
    const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    const float v[1] = {(2.0f * u - 1.0f) * scale};
    store_from_f32<T, 1>(data + i, v);
  }
}

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void spin_kernel(uint64_t ns) {
  const uint64_t start = global_timer_ns();
  while (global_timer_ns() - start < ns)
    __nanosleep(1000);
}

// Item i < n / V: elements [i·V, i·V + V) in one 16-byte access each way; item n / V: the tail.
template <class T, int V>
__global__ void activation_epilogue_kernel(T* y, const T* residual, int64_t n,
                                           EpilogueActivation act) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t nvec = n / V;
  if (i < nvec) {
    float v[V], r[V];
    load_f32<T, V>(y + i * V, v);
    if (residual) load_f32<T, V>(residual + i * V, r);
#pragma unroll
    for (int k = 0; k < V; ++k)
      v[k] = activate(v[k], act) + (residual ? r[k] : 0.0f);
    store_from_f32<T, V>(y + i * V, v);
  } else if (i == nvec) {
    for (int64_t k = nvec * V; k < n; ++k) {
      float v[1], r[1] = {0.0f};
      load_f32<T, 1>(y + k, v);
      if (residual) load_f32<T, 1>(residual + k, r);
      v[0] = activate(v[0], act) + r[0];
      store_from_f32<T, 1>(y + k, v);
    }
  }
}

}  // namespace

cudaError_t launch_quantize_rows_s8(const void* x, FloatType x_type, int64_t rows, int64_t cols,
                                    int64_t ld_q, int8_t* q, float* scales, cudaStream_t stream) {
  if (rows <= 0 || ld_q <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  const auto blocks = static_cast<unsigned>((rows + kThreads / kWarp - 1) / (kThreads / kWarp));
  if (x_type == FloatType::kF16) {
    const auto* xh = static_cast<const __half*>(x);
    if (cols % 8 == 0 && ld_q == cols && aligned(x, 16) && aligned(q, 8))
      quantize_rows_kernel<__half, 8>
          <<<blocks, kThreads, 0, stream>>>(xh, rows, cols, ld_q, q, scales);
    else
      quantize_rows_kernel<__half, 1>
          <<<blocks, kThreads, 0, stream>>>(xh, rows, cols, ld_q, q, scales);
  } else {
    const auto* xf = static_cast<const float*>(x);
    if (cols % 4 == 0 && ld_q == cols && aligned(x, 16) && aligned(q, 4))
      quantize_rows_kernel<float, 4>
          <<<blocks, kThreads, 0, stream>>>(xf, rows, cols, ld_q, q, scales);
    else
      quantize_rows_kernel<float, 1>
          <<<blocks, kThreads, 0, stream>>>(xf, rows, cols, ld_q, q, scales);
  }
  return cudaGetLastError();
}

namespace {

// --- per-image quantizer (launch_quantize_images_s8) ---------------------------------------
// Pass 1: each block reduces a stretch of one image to its max |x| and folds it into
// image_absmax[image] by an integer atomicMax on the float's bits (non-negative floats order as
// their bits do). Pass 2: every element quantized by its image's absmax; the first threads also
// write the per-row scales.

constexpr int kImageThreads = 256;

template <class T, int V>
__global__ void image_absmax_kernel(const T* __restrict__ x, int64_t groups_per_image,
                                    unsigned* __restrict__ image_absmax) {
  const int64_t image = blockIdx.y;
  const T* xi = x + image * groups_per_image * V;
  float m = device::warp_max(
      strided_absmax<T, V>(xi, static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x,
                           groups_per_image, static_cast<int64_t>(gridDim.x) * blockDim.x));
  __shared__ float warp_max[kImageThreads / kWarp];
  if (threadIdx.x % kWarp == 0) warp_max[threadIdx.x / kWarp] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x) / kWarp; ++w)
      m = fmaxf(m, warp_max[w]);
    atomicMax(image_absmax + image, __float_as_uint(m));
  }
}

template <class T, int V>
__global__ void quantize_images_kernel(const T* __restrict__ x, int64_t groups_per_image,
                                       int64_t images, const float* __restrict__ image_absmax,
                                       int8_t* __restrict__ q, int64_t rows_per_image,
                                       float* __restrict__ row_scales) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t g = first; g < groups_per_image * images; g += stride) {
    float v[V];
    load_f32<T, V>(x + g * V, v);
    device::store_s8<V>(v, device::s8_row_inv(image_absmax[g / groups_per_image]), q + g * V);
  }
  for (int64_t r = first; r < rows_per_image * images; r += stride)
    row_scales[r] = device::s8_row_scale(image_absmax[r / rows_per_image]);
}

template <class T, int V>
void quantize_images_launch(const T* x, int64_t images, int64_t elems, int8_t* q,
                            float* image_absmax, int64_t rows_per_image, float* row_scales,
                            int multiprocessors, cudaStream_t stream) {
  const int64_t groups = elems / V;
  // Pass 1 in about two waves of blocks over all images together.
  const int64_t want = std::max<int64_t>(1, 2 * multiprocessors / std::max<int64_t>(images, 1));
  const auto per_image =
      static_cast<unsigned>(std::min<int64_t>(want, device::ceil_div(groups, kImageThreads)));
  image_absmax_kernel<T, V>
      <<<dim3(per_image, static_cast<unsigned>(images)), kImageThreads, 0, stream>>>(
          x, groups, reinterpret_cast<unsigned*>(image_absmax));
  const int64_t items = std::max(groups * images, rows_per_image * images);
  const auto blocks = static_cast<unsigned>(
      std::min<int64_t>(device::ceil_div(items, kImageThreads), int64_t{16} * multiprocessors));
  quantize_images_kernel<T, V><<<blocks, kImageThreads, 0, stream>>>(
      x, groups, images, image_absmax, q, rows_per_image, row_scales);
}

// One 16-byte access a thread (8 f16 or 4 f32) where the sizes and pointers allow, else one
// element.
template <class T>
void quantize_images_typed(const void* x, int64_t images, int64_t elems, int8_t* q,
                           float* image_absmax, int64_t rows_per_image, float* row_scales,
                           int multiprocessors, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const T* xt = static_cast<const T*>(x);
  if (elems % kVec == 0 && aligned(x, 16) && aligned(q, kVec))
    quantize_images_launch<T, kVec>(xt, images, elems, q, image_absmax, rows_per_image, row_scales,
                                    multiprocessors, stream);
  else
    quantize_images_launch<T, 1>(xt, images, elems, q, image_absmax, rows_per_image, row_scales,
                                 multiprocessors, stream);
}

}  // namespace

cudaError_t launch_quantize_images_s8(const void* x, FloatType x_type, int64_t images,
                                      int64_t elems, int8_t* q, float* image_absmax,
                                      int64_t rows_per_image, float* row_scales,
                                      int multiprocessors, cudaStream_t stream) {
  if (images <= 0 || elems <= 0) return cudaSuccess;
  if (images > 65535) return cudaErrorInvalidValue;  // one grid row per image in pass 1
  if (const cudaError_t e =
          cudaMemsetAsync(image_absmax, 0, static_cast<size_t>(images) * 4, stream);
      e != cudaSuccess)
    return e;
  const int sms = std::max(multiprocessors, 1);
  if (x_type == FloatType::kF16)
    quantize_images_typed<__half>(x, images, elems, q, image_absmax, rows_per_image, row_scales,
                                  sms, stream);
  else
    quantize_images_typed<float>(x, images, elems, q, image_absmax, rows_per_image, row_scales, sms,
                                 stream);
  return cudaGetLastError();
}

namespace {

template <class T>
void rescale_launch(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc,
                    const float* row_scale, const float* col_scale, const float* bias,
                    EpilogueActivation act, const void* residual, void* y, cudaStream_t stream) {
  const dim3 block(kWarp, kRowsPerBlock);
  const bool vec = cols % 4 == 0 && ld_acc % 4 == 0 && aligned(acc, 16) && aligned(y, 16) &&
                   (!residual || aligned(residual, 16));
  const dim3 grid = grid_2d(rows, cols, vec ? 4 : 1);
  auto* yt = static_cast<T*>(y);
  const auto* rt = static_cast<const T*>(residual);
  if (vec)
    rescale_kernel<T, 4><<<grid, block, 0, stream>>>(acc, rows, cols, ld_acc, row_scale, col_scale,
                                                     bias, act, rt, yt);
  else
    rescale_kernel<T, 1><<<grid, block, 0, stream>>>(acc, rows, cols, ld_acc, row_scale, col_scale,
                                                     bias, act, rt, yt);
}

}  // namespace

cudaError_t launch_rescale_s32(const int32_t* acc, int64_t rows, int64_t cols, int64_t ld_acc,
                               const float* row_scale, const float* col_scale, const float* bias,
                               EpilogueActivation act, const void* residual, void* y,
                               FloatType y_type, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (y_type == FloatType::kF16)
    rescale_launch<__half>(acc, rows, cols, ld_acc, row_scale, col_scale, bias, act, residual, y,
                           stream);
  else
    rescale_launch<float>(acc, rows, cols, ld_acc, row_scale, col_scale, bias, act, residual, y,
                          stream);
  return cudaGetLastError();
}

namespace {

template <class T>
void activation_epilogue_launch(void* y, const void* residual, int64_t n, EpilogueActivation act,
                                cudaStream_t stream) {
  constexpr int kThreads = 256;
  constexpr int V = 16 / sizeof(T);
  auto* yt = static_cast<T*>(y);
  const auto* rt = static_cast<const T*>(residual);
  if (aligned(y, 16) && (!residual || aligned(residual, 16))) {
    const auto blocks = static_cast<unsigned>((n / V + 1 + kThreads - 1) / kThreads);
    activation_epilogue_kernel<T, V><<<blocks, kThreads, 0, stream>>>(yt, rt, n, act);
  } else {
    const auto blocks = static_cast<unsigned>((n + 1 + kThreads - 1) / kThreads);
    activation_epilogue_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(yt, rt, n, act);
  }
}

}  // namespace

cudaError_t launch_activation_epilogue(void* y, const void* residual, int64_t n,
                                       EpilogueActivation act, FloatType type,
                                       cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (type == FloatType::kF16)
    activation_epilogue_launch<__half>(y, residual, n, act, stream);
  else
    activation_epilogue_launch<float>(y, residual, n, act, stream);
  return cudaGetLastError();
}

namespace {

template <class T>
void dequantize_rows_typed(const int8_t* q, int64_t rows, int64_t cols, int64_t ld_q,
                           const float* scale, void* w, cudaStream_t stream) {
  constexpr int kV = static_cast<int>(16 / sizeof(T));  // one 16-byte store of T
  const dim3 block(kWarp, kRowsPerBlock);
  auto* wt = static_cast<T*>(w);
  if (cols % kV == 0 && ld_q % kV == 0 && aligned(q, kV) && aligned(w, 16))
    dequantize_rows_kernel<T, kV>
        <<<grid_2d(rows, cols, kV), block, 0, stream>>>(q, rows, cols, ld_q, scale, wt);
  else
    dequantize_rows_kernel<T, 1>
        <<<grid_2d(rows, cols, 1), block, 0, stream>>>(q, rows, cols, ld_q, scale, wt);
}

}  // namespace

cudaError_t launch_dequantize_rows(const int8_t* q, int64_t rows, int64_t cols, int64_t ld_q,
                                   const float* scale, void* w, FloatType w_type,
                                   cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (w_type == FloatType::kF16)
    dequantize_rows_typed<__half>(q, rows, cols, ld_q, scale, w, stream);
  else
    dequantize_rows_typed<float>(q, rows, cols, ld_q, scale, w, stream);
  return cudaGetLastError();
}

cudaError_t launch_f32_to_f16(const float* x, int64_t n, uint16_t* y, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  auto* yh = reinterpret_cast<__half*>(y);
  if (n % 4 == 0 && aligned(x, 16) && aligned(y, 8))
    f32_to_f16_kernel<4><<<grid_1d(n / 4, kThreads), kThreads, 0, stream>>>(x, n, yh);
  else
    f32_to_f16_kernel<1><<<grid_1d(n, kThreads), kThreads, 0, stream>>>(x, n, yh);
  return cudaGetLastError();
}

cudaError_t launch_fill_random(void* data, FloatType type, int64_t n, uint64_t seed, float scale,
                               cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  constexpr int kThreads = 256;
  if (type == FloatType::kF16)
    fill_random_kernel<__half>
        <<<grid_1d(n, kThreads), kThreads, 0, stream>>>(static_cast<__half*>(data), n, seed, scale);
  else
    fill_random_kernel<float>
        <<<grid_1d(n, kThreads), kThreads, 0, stream>>>(static_cast<float*>(data), n, seed, scale);
  return cudaGetLastError();
}

cudaError_t launch_spin(double microseconds, cudaStream_t stream) {
  if (microseconds <= 0) return cudaSuccess;
  spin_kernel<<<1, 1, 0, stream>>>(static_cast<uint64_t>(microseconds * 1000.0));
  return cudaGetLastError();
}

}  // namespace hyrt::backend::cuda

// Activations, GEGLU, add/mul with broadcasting, scale and dtype conversion on the GPU;
// contracts in op_kernels.h.
//
// One thread per 16-byte vector (8 f16 or 4 f32 values), one launch per op: these passes are
// memory-bound and an H100 keeps enough bytes in flight with 2048 threads per SM doing one
// 16-byte access each. Index arithmetic is 32-bit whenever the element count allows (64-bit
// division is ~4x dearer; the broadcast index math is unsigned), templated on the index type.
// Math is f32: GELU with the full-precision erff as the CPU backend computes it, the sigmoid
// gates (SiLU, QuickGELU) with the hardware exponential (op_device.cuh says why).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backend/cuda/op_device.cuh"
#include "backend/cuda/op_kernels.h"

namespace hyrt::backend::cuda {
namespace {

using namespace device;

constexpr int kThreads = 256;

// --- unary ---------------------------------------------------------------------------------------

template <UnaryOp kOp>
__device__ __forceinline__ float unary(float x, float alpha, float beta) {
  if constexpr (kOp == UnaryOp::kGelu) return gelu(x);
  if constexpr (kOp == UnaryOp::kQuickGelu) return sigmoid_gate(x, 1.702f);
  if constexpr (kOp == UnaryOp::kSilu) return sigmoid_gate(x, 1.0f);
  if constexpr (kOp == UnaryOp::kScale) return x * alpha + beta;
  if constexpr (kOp == UnaryOp::kRelu) return fmaxf(x, 0.0f);
  if constexpr (kOp == UnaryOp::kTanh) return tanhf(x);
  return x;
}

// Item i < nvec: elements [i·V, i·V + V); item nvec: the n mod V tail, one by one.
template <UnaryOp kOp, class T, int V, class I>
__global__ void unary_kernel(const T* x, T* y, I n, float alpha, float beta) {
  const I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  const I nvec = n / V;
  if (i < nvec) {
    float v[V];
    load_vec<T, V>(x + i * V, v);
#pragma unroll
    for (int k = 0; k < V; ++k)
      v[k] = unary<kOp>(v[k], alpha, beta);
    store_vec<T, V>(y + i * V, v);
  } else if (i == nvec) {
    for (I k = nvec * V; k < n; ++k)
      y[k] = from_float<T>(unary<kOp>(to_float(x[k]), alpha, beta));
  }
}

template <UnaryOp kOp, class T>
void unary_launch(const void* x, void* y, int64_t n, float alpha, float beta, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  const unsigned blocks = blocks_for(n / V + 1, kThreads);
  if (fits_32bit(n))
    unary_kernel<kOp, T, V, int32_t>
        <<<blocks, kThreads, 0, stream>>>(xt, yt, static_cast<int32_t>(n), alpha, beta);
  else
    unary_kernel<kOp, T, V, int64_t><<<blocks, kThreads, 0, stream>>>(xt, yt, n, alpha, beta);
}

template <UnaryOp kOp>
void unary_typed(const void* x, void* y, FloatType type, int64_t n, float alpha, float beta,
                 cudaStream_t stream) {
  if (type == FloatType::kF16)
    unary_launch<kOp, __half>(x, y, n, alpha, beta, stream);
  else
    unary_launch<kOp, float>(x, y, n, alpha, beta, stream);
}

// --- GEGLU -------------------------------------------------------------------------------------

// x [rows, 2n] -> y [rows, n]; item i covers V outputs of row i / (n / V).
template <class T, int V, class I>
__global__ void geglu_kernel(const T* __restrict__ x, T* __restrict__ y, I items, I n) {
  const I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= items) return;
  const I per_row = n / V;
  const I r = i / per_row;
  const I j = (i - r * per_row) * V;
  float h[V], g[V];
  load_vec<T, V>(x + r * 2 * n + j, h);
  load_vec<T, V>(x + r * 2 * n + n + j, g);
#pragma unroll
  for (int k = 0; k < V; ++k)
    h[k] *= gelu(g[k]);
  store_vec<T, V>(y + r * n + j, h);
}

template <class T, int V>
void geglu_launch(const void* x, void* y, int64_t rows, int64_t n, cudaStream_t stream) {
  const int64_t items = rows * (n / V);
  const auto* xt = static_cast<const T*>(x);
  auto* yt = static_cast<T*>(y);
  const unsigned blocks = blocks_for(items, kThreads);
  if (fits_32bit(rows * 2 * n))
    geglu_kernel<T, V, int32_t><<<blocks, kThreads, 0, stream>>>(
        xt, yt, static_cast<int32_t>(items), static_cast<int32_t>(n));
  else
    geglu_kernel<T, V, int64_t><<<blocks, kThreads, 0, stream>>>(xt, yt, items, n);
}

template <class T>
void geglu_typed(const void* x, void* y, int64_t rows, int64_t n, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  if (n % kVec == 0)
    geglu_launch<T, kVec>(x, y, rows, n, stream);
  else
    geglu_launch<T, 1>(x, y, rows, n, stream);
}

// GEGLU with its output quantized: one block per row, NV vectors of 8 gated values a thread
// (NV = 1 up to 1024 vectors a row, then 2, 4) and just enough warps for the row — so that a
// thread holds few registers and an SM many rows' loads at once (a fixed 128 threads holding
// up to 8 vectors each ran SDXL's 5120-wide rows at 29 us against the plain GEGLU's 24) — the
// values rounded to f16 as geglu_kernel stores them, then quantized by the W8A8 rule
// (op_device.cuh, store_s8).
constexpr int kGegluQuantMaxThreads = 1024;
constexpr int kGegluQuantMaxVectors = 4;  // per thread: rows up to 1024 · 4 · 8 = 32768 wide

template <int NV>
__global__ void geglu_quantize_kernel(const __half* __restrict__ x, int n, int8_t* __restrict__ q,
                                      float* __restrict__ scales) {
  const int64_t row = blockIdx.x;
  const __half* xr = x + row * 2 * n;
  const int nv = n / 8;
  float v[NV][8];
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int k = threadIdx.x + j * blockDim.x;
    if (k < nv) {
      float g[8];
      load_vec<__half, 8>(xr + k * 8, v[j]);
      load_vec<__half, 8>(xr + n + k * 8, g);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        v[j][i] = __half2float(__float2half_rn(v[j][i] * gelu(g[i])));  // as y would hold it
        m = fmaxf(m, fabsf(v[j][i]));
      }
    }
  }
  __shared__ float warp_max[kGegluQuantMaxThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o /= 2)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w)
    m = fmaxf(m, warp_max[w]);
  const float inv = s8_row_inv(m);
  if (threadIdx.x == 0) scales[row] = s8_row_scale(m);
  int8_t* qr = q + row * n;
#pragma unroll
  for (int j = 0; j < NV; ++j) {
    const int k = threadIdx.x + j * blockDim.x;
    if (k < nv) store_s8<8>(v[j], inv, qr + k * 8);
  }
}

// --- add / mul with broadcasting -----------------------------------------------------------------

template <class I>
struct BDims {
  int rank;
  I extent[kMaxOpDims];
  I b_stride[kMaxOpDims];
};

// y = a ∘ b. kFlat: b has a's shape (b index = a index). Otherwise item i covers V elements of
// the innermost dim (V divides it), whose b elements are contiguous (b_stride 1) or one
// broadcast value (b_stride 0).
template <class T, class U, int V, class I, bool kFlat>
__global__ void binary_kernel(const T* a, const U* __restrict__ b, T* y, I items, BDims<I> d,
                              bool mul) {
  const I item = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (item >= items) return;
  const I i = item * V;
  float av[V], bv[V];
  load_vec<T, V>(a + i, av);
  if constexpr (kFlat) {
    load_vec<U, V>(b + i, bv);
  } else {
    const int last = d.rank - 1;
    const I inner = d.extent[last];
    I rest = i / inner;
    const I pos = i - rest * inner;
    I off = 0;
#pragma unroll
    for (int k = kMaxOpDims - 2; k >= 1; --k) {
      if (k < last) {
        const I e = d.extent[k];
        const I q = rest / e;
        off += (rest - q * e) * d.b_stride[k];
        rest = q;
      }
    }
    if (last > 0) off += rest * d.b_stride[0];  // the outermost index needs no division
    if (d.b_stride[last] != 0) {
      load_vec<U, V>(b + off + pos, bv);
    } else {
      const float s = to_float(b[off]);
#pragma unroll
      for (int k = 0; k < V; ++k)
        bv[k] = s;
    }
  }
#pragma unroll
  for (int k = 0; k < V; ++k)
    av[k] = mul ? av[k] * bv[k] : av[k] + bv[k];
  store_vec<T, V>(y + i, av);
}

template <class T, class U, int V, class I>
void binary_launch_dims(const T* a, const U* b, T* y, const BroadcastDims& dims, bool mul,
                        cudaStream_t stream) {
  BDims<I> d{};
  d.rank = dims.rank;
  int64_t n = 1;
  for (int k = 0; k < dims.rank; ++k) {
    d.extent[k] = static_cast<I>(dims.extent[k]);
    d.b_stride[k] = static_cast<I>(dims.b_stride[k]);
    n *= dims.extent[k];
  }
  const I items = static_cast<I>(n / V);
  const unsigned blocks = blocks_for(n / V, kThreads);
  const bool flat = dims.rank == 1 && dims.b_stride[0] == 1;
  if (flat)
    binary_kernel<T, U, V, I, true><<<blocks, kThreads, 0, stream>>>(a, b, y, items, d, mul);
  else
    binary_kernel<T, U, V, I, false><<<blocks, kThreads, 0, stream>>>(a, b, y, items, d, mul);
}

template <class T, class U>
void binary_typed(const void* a, const void* b, void* y, const BroadcastDims& dims, bool mul,
                  cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const auto* at = static_cast<const T*>(a);
  const auto* bt = static_cast<const U*>(b);
  auto* yt = static_cast<T*>(y);
  int64_t n = 1;
  for (int k = 0; k < dims.rank; ++k)
    n *= dims.extent[k];
  const bool vec = dims.extent[dims.rank - 1] % kVec == 0;
  if (fits_32bit(n)) {
    if (vec)
      binary_launch_dims<T, U, kVec, uint32_t>(at, bt, yt, dims, mul, stream);
    else
      binary_launch_dims<T, U, 1, uint32_t>(at, bt, yt, dims, mul, stream);
  } else {
    if (vec)
      binary_launch_dims<T, U, kVec, int64_t>(at, bt, yt, dims, mul, stream);
    else
      binary_launch_dims<T, U, 1, int64_t>(at, bt, yt, dims, mul, stream);
  }
}

// --- conversion ----------------------------------------------------------------------------------

template <class TI, class TO, int V>
__global__ void convert_kernel(const TI* __restrict__ x, TO* __restrict__ y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t nvec = n / V;
  if (i < nvec) {
    float v[V];
    load_vec<TI, V>(x + i * V, v);
    store_vec<TO, V>(y + i * V, v);
  } else if (i == nvec) {
    for (int64_t k = nvec * V; k < n; ++k)
      y[k] = from_float<TO>(to_float(x[k]));
  }
}

template <class TI, class TO>
void convert_launch(const void* x, void* y, int64_t n, cudaStream_t stream) {
  constexpr int V = 8;
  convert_kernel<TI, TO, V><<<blocks_for(n / V + 1, kThreads), kThreads, 0, stream>>>(
      static_cast<const TI*>(x), static_cast<TO*>(y), n);
}

}  // namespace

cudaError_t launch_unary(UnaryOp op, const void* x, void* y, FloatType type, int64_t n, float alpha,
                         float beta, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  switch (op) {
    case UnaryOp::kGelu:
      unary_typed<UnaryOp::kGelu>(x, y, type, n, alpha, beta, stream);
      break;
    case UnaryOp::kQuickGelu:
      unary_typed<UnaryOp::kQuickGelu>(x, y, type, n, alpha, beta, stream);
      break;
    case UnaryOp::kSilu:
      unary_typed<UnaryOp::kSilu>(x, y, type, n, alpha, beta, stream);
      break;
    case UnaryOp::kScale:
      unary_typed<UnaryOp::kScale>(x, y, type, n, alpha, beta, stream);
      break;
    case UnaryOp::kRelu:
      unary_typed<UnaryOp::kRelu>(x, y, type, n, alpha, beta, stream);
      break;
    case UnaryOp::kTanh:
      unary_typed<UnaryOp::kTanh>(x, y, type, n, alpha, beta, stream);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_geglu(const void* x, void* y, FloatType type, int64_t rows, int64_t n,
                         cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return cudaSuccess;
  if (type == FloatType::kF16)
    geglu_typed<__half>(x, y, rows, n, stream);
  else
    geglu_typed<float>(x, y, rows, n, stream);
  return cudaGetLastError();
}

bool geglu_quantize_supported(int64_t n) {
  return n > 0 && n % 8 == 0 && n / 8 <= int64_t{kGegluQuantMaxThreads} * kGegluQuantMaxVectors;
}

cudaError_t launch_geglu_quantize(const void* x, FloatType type, int64_t rows, int64_t n, int8_t* q,
                                  float* scales, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (type != FloatType::kF16 || !geglu_quantize_supported(n) || rows > (int64_t{1} << 31) - 1 ||
      !aligned(x, 16))
    return cudaErrorInvalidValue;
  const auto* xh = static_cast<const __half*>(x);
  const int64_t nv = n / 8;
  const int per_thread = nv <= kGegluQuantMaxThreads ? 1 : nv <= 2 * kGegluQuantMaxThreads ? 2 : 4;
  const int64_t warps = (nv + int64_t{32} * per_thread - 1) / (int64_t{32} * per_thread);
  const auto threads = static_cast<unsigned>(warps * 32);
  const auto blocks = static_cast<unsigned>(rows);
  const int ni = static_cast<int>(n);
  if (per_thread == 1)
    geglu_quantize_kernel<1><<<blocks, threads, 0, stream>>>(xh, ni, q, scales);
  else if (per_thread == 2)
    geglu_quantize_kernel<2><<<blocks, threads, 0, stream>>>(xh, ni, q, scales);
  else
    geglu_quantize_kernel<4><<<blocks, threads, 0, stream>>>(xh, ni, q, scales);
  return cudaGetLastError();
}

cudaError_t launch_binary(BinaryOp op, const void* a, const void* b, FloatType b_type, void* y,
                          FloatType type, const BroadcastDims& dims, cudaStream_t stream) {
  if (dims.rank < 1 || dims.rank > kMaxOpDims) return cudaErrorInvalidValue;
  int64_t n = 1;
  for (int k = 0; k < dims.rank; ++k) {
    if (dims.extent[k] < 0) return cudaErrorInvalidValue;
    n *= dims.extent[k];
  }
  if (n == 0) return cudaSuccess;
  const int64_t inner_stride = dims.b_stride[dims.rank - 1];
  if (inner_stride != 0 && inner_stride != 1) return cudaErrorInvalidValue;
  const bool mul = op == BinaryOp::kMul;
  if (type == FloatType::kF16) {
    if (b_type == FloatType::kF16)
      binary_typed<__half, __half>(a, b, y, dims, mul, stream);
    else
      binary_typed<__half, float>(a, b, y, dims, mul, stream);
  } else {
    if (b_type == FloatType::kF16)
      binary_typed<float, __half>(a, b, y, dims, mul, stream);
    else
      binary_typed<float, float>(a, b, y, dims, mul, stream);
  }
  return cudaGetLastError();
}

cudaError_t launch_convert(const void* x, FloatType x_type, void* y, FloatType y_type, int64_t n,
                           cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  if (x_type == y_type) {
    const size_t bytes = static_cast<size_t>(n) * (x_type == FloatType::kF16 ? 2 : 4);
    if (x != y) return cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice, stream);
    return cudaSuccess;
  }
  if (x_type == FloatType::kF16)
    convert_launch<__half, float>(x, y, n, stream);
  else
    convert_launch<float, __half>(x, y, n, stream);
  return cudaGetLastError();
}

}  // namespace hyrt::backend::cuda

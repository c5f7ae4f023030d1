// Device-side helpers shared by the op kernels (norm.cu, elementwise.cu, data_movement.cu) and
// the GEMM programs' passes (cuda_kernels.cu, im2col.cu): vector loads and stores that widen to
// f32, warp reductions, launch arithmetic, the W8A8 activation quantizer's rule. Included by
// .cu files only.
#pragma once

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace hyrt::backend::cuda::device {

constexpr int kWarp = 32;

inline bool aligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Index arithmetic in 32 bits when every index (plus a little slack) fits: faster kernels.
inline bool fits_32bit(int64_t n) {
  return n < (int64_t{1} << 31) - 64;
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// The widest vector of V elements (V = 8, 4, 2, 1) that divides n and spans at most 16 bytes
// of elements `elem_bytes` wide.
inline int vector_width(int64_t n, int elem_bytes) {
  for (int v = 16 / elem_bytes; v > 1; v /= 2)
    if (n % v == 0) return v;
  return 1;
}

// --- element access: V consecutive elements as floats, one access where V·sizeof(T) ≤ 16 ------

template <class T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (sizeof(T) == 2)
    return __half2float(v);
  else
    return v;
}

template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (sizeof(T) == 2)
    return __float2half_rn(v);
  else
    return v;
}

template <class T, int V>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[V]) {
  if constexpr (sizeof(T) == 2 && V >= 2) {
    // f16: V/2 half2 pairs, loaded as one word of V·2 bytes.
    using Word = std::conditional_t<V == 8, uint4, std::conditional_t<V == 4, uint2, uint32_t>>;
    const Word w = *reinterpret_cast<const Word*>(p);
    const __half2* h = reinterpret_cast<const __half2*>(&w);
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
      const float2 f = __half22float2(h[i]);
      out[2 * i] = f.x, out[2 * i + 1] = f.y;
    }
  } else if constexpr (sizeof(T) == 4 && V >= 4) {
#pragma unroll
    for (int i = 0; i < V; i += 4) {
      const float4 f = *reinterpret_cast<const float4*>(p + i);
      out[i] = f.x, out[i + 1] = f.y, out[i + 2] = f.z, out[i + 3] = f.w;
    }
  } else if constexpr (sizeof(T) == 4 && V == 2) {
    const float2 f = *reinterpret_cast<const float2*>(p);
    out[0] = f.x, out[1] = f.y;
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i)
      out[i] = to_float(p[i]);
  }
}

template <class T, int V>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[V]) {
  if constexpr (sizeof(T) == 2 && V >= 2) {
    using Word = std::conditional_t<V == 8, uint4, std::conditional_t<V == 4, uint2, uint32_t>>;
    Word w;
    __half2* h = reinterpret_cast<__half2*>(&w);
#pragma unroll
    for (int i = 0; i < V / 2; ++i)
      h[i] = __floats2half2_rn(in[2 * i], in[2 * i + 1]);
    *reinterpret_cast<Word*>(p) = w;
  } else if constexpr (sizeof(T) == 4 && V >= 4) {
#pragma unroll
    for (int i = 0; i < V; i += 4)
      *reinterpret_cast<float4*>(p + i) = make_float4(in[i], in[i + 1], in[i + 2], in[i + 3]);
  } else if constexpr (sizeof(T) == 4 && V == 2) {
    *reinterpret_cast<float2*>(p) = make_float2(in[0], in[1]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i)
      p[i] = from_float<T>(in[i]);
  }
}

// V elements of T as loaded, not yet widened: a row of them costs V·sizeof(T) / 4 registers
// (4 for 8 f16 values) instead of V, so more rows fit in flight.
template <int kBytes>
struct RawBytes {
  using type = std::conditional_t<
      kBytes == 16, uint4,
      std::conditional_t<kBytes == 8, uint2, std::conditional_t<kBytes == 4, uint32_t, uint16_t>>>;
};
template <>
struct RawBytes<32> {
  struct alignas(16) type {
    uint4 lo, hi;
  };
};

template <class T, int V>
using Raw = typename RawBytes<static_cast<int>(V * sizeof(T))>::type;

template <class T, int V>
__device__ __forceinline__ Raw<T, V> load_raw(const T* p) {
  return *reinterpret_cast<const Raw<T, V>*>(p);
}

template <class T, int V>
__device__ __forceinline__ void unpack(const Raw<T, V>& r, float (&out)[V]) {
  load_vec<T, V>(reinterpret_cast<const T*>(&r), out);
}

// --- reductions -------------------------------------------------------------------------------

template <class F>
__device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// --- math in f32 -------------------------------------------------------------------------------

// x · Φ(x) with the full-precision erff, as the CPU backend computes it.
__device__ __forceinline__ float gelu(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

// x · sigmoid(k·x). The exponential is the hardware one (__expf: ~2 ulp plus 2 ulp per unit of
// |k·x|, far below an f16 output's rounding) and the reciprocal IEEE-rounded: expf and a
// division cost ~50 instructions an element, which made SiLU over a 512² VAE activation
// compute-bound. Saturates cleanly: 1 + e^(−kx) = inf gives x · 0.
__device__ __forceinline__ float sigmoid_gate(float x, float k) {
  return x * __frcp_rn(1.0f + __expf(-k * x));
}

// Blocks for a 1-D pass of `items` items, `threads` per block (each thread one item).
inline unsigned blocks_for(int64_t items, int threads) {
  return static_cast<unsigned>(ceil_div(items, threads));
}

// --- the W8A8 activation quantizer's rule (cuda_kernels.h, launch_quantize_rows_s8) -----------
// Every kernel that quantizes a row (the row quantizer, im2col's, the quantizing layer norm and
// GEGLU) takes it from here, so that they give the same bits: with absmax the row's max |x|,
// q = clamp(round_half_even(x · inv), −127, 127), inv = 127 / absmax, scale = absmax / 127
// (both 0 for an all-zero row).

__device__ __forceinline__ float s8_row_inv(float absmax) {
  return absmax > 0.0f ? 127.0f / absmax : 0.0f;
}

__device__ __forceinline__ float s8_row_scale(float absmax) {
  return absmax > 0.0f ? absmax / 127.0f : 0.0f;
}

// V = 1, 4 or 8 values quantized by `inv` into dst, one store of V bytes (dst aligned to V).
template <int V>
__device__ __forceinline__ void store_s8(const float (&v)[V], float inv, int8_t* dst) {
  static_assert(V == 1 || V == 4 || V == 8, "1, 4 or 8 values a store");
  uint32_t word[(V + 3) / 4] = {};
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int b = __float2int_rn(fminf(fmaxf(v[i] * inv, -127.0f), 127.0f));
    word[i / 4] |= static_cast<uint32_t>(b & 0xff) << (8 * (i % 4));
  }
  if constexpr (V == 8)
    *reinterpret_cast<uint2*>(dst) = make_uint2(word[0], word[1]);
  else if constexpr (V == 4)
    *reinterpret_cast<uint32_t*>(dst) = word[0];
  else
    *dst = static_cast<int8_t>(word[0]);
}

}  // namespace hyrt::backend::cuda::device

#include "core/half.h"

#include <cpuid.h>
#include <immintrin.h>

#include "core/error.h"

namespace hyrt {

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // overflow (incl. rounding up) -> inf
  if (abs < 0x38800000u) {                        // f16 subnormal or zero
    if (abs < 0x33000000u) return sign;           // below half the smallest subnormal
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    // Compute value = mant * 2^(exp-150); f16 subnormal unit = 2^-24 -> units = mant >> (126-exp)
    const uint32_t s = 126 - exp;  // in [14, 24]
    uint32_t units = mant >> s;
    const uint32_t rem = mant & ((1u << s) - 1);
    const uint32_t half = 1u << (s - 1);
    if (rem > half || (rem == half && (units & 1u))) ++units;
    return sign | static_cast<uint16_t>(units);
  }
  uint32_t r = abs + 0x0fffu + ((abs >> 13) & 1u);  // round to nearest even
  return sign | static_cast<uint16_t>(((r >> 13) - ((127 - 15) << 10)) & 0xffffu);
}

__attribute__((target("avx2,f16c"))) static void f16_to_f32_avx(const uint16_t* s, float* d,
                                                                size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
  }
  for (; i < n; ++i)
    d[i] = f16_to_f32(s[i]);
}

__attribute__((target("avx2,f16c"))) static void f32_to_f16_avx(const float* s, uint16_t* d,
                                                                size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), h);
  }
  for (; i < n; ++i)
    d[i] = f32_to_f16(s[i]);
}

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and, once inlined, warn that it is
// uninitialised (GCC bug 105593): silenced for this function only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// f32_to_bf16 sixteen at a time, bit for bit (round to nearest even on the integer bits, NaNs
// kept quiet NaNs): vcvtneps2bf16 would be one instruction but flushes subnormals to zero.
__attribute__((target("avx512f"))) static void f32_to_bf16_avx512(const float* s, uint16_t* d,
                                                                  size_t n) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
  const __m512i round = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
  const __m512i quiet = _mm512_set1_epi32(0x400000);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512i u = _mm512_loadu_si512(s + i);
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, abs_mask), inf);
    __m512i r = _mm512_add_epi32(
        u, _mm512_add_epi32(round, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, quiet));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                        _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
  }
  for (; i < n; ++i)
    d[i] = f32_to_bf16(s[i]);
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// CPUID leaf 1, ECX bit 29 (F16C) and bit 28 (AVX) — asked directly because clang's
// __builtin_cpu_supports does not know "f16c".
static bool have_f16c() {
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    return (c & (1u << 29)) != 0 && (c & (1u << 28)) != 0 && __builtin_cpu_supports("avx2");
  }();
  return ok;
}

void convert_to_f32(DType src_type, const void* src, float* dst, size_t n) {
  switch (src_type) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      if (have_f16c()) return f16_to_f32_avx(s, dst, n);
      for (size_t i = 0; i < n; ++i)
        dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i)
        dst[i] = bf16_to_f32(s[i]);
      return;
    }
    default:
      fail(ErrorCode::kUnsupported, "convert_to_f32: ", dtype_name(src_type),
           " is not a float type");
  }
}

void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n) {
  switch (dst_type) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      if (have_f16c()) return f32_to_f16_avx(src, d, n);
      for (size_t i = 0; i < n; ++i)
        d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      static const bool avx512 = __builtin_cpu_supports("avx512f");
      if (avx512) return f32_to_bf16_avx512(src, d, n);
      for (size_t i = 0; i < n; ++i)
        d[i] = f32_to_bf16(src[i]);
      return;
    }
    default:
      fail(ErrorCode::kUnsupported, "convert_from_f32: ", dtype_name(dst_type),
           " is not a float type");
  }
}

}  // namespace hyrt

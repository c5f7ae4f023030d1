// AVX2/FMA transcendental functions for the CPU kernels (x86-64-v3), 8 floats at a time.
//
// exp: Cody–Waite range reduction x = n·ln2 + r, |r| <= ln2/2, then a degree-6
// polynomial for e^r and a 2^n scale built in the exponent bits; relative error about
// 2e-7 on [-87, 88]. Inputs below -87.3 return 0 (not a denormal), above 88.7 return +inf,
// so max-subtracted softmax terms underflow cleanly to 0.
//
// erf: Abramowitz & Stegun 7.1.26 (absolute error <= 1.5e-7), which is what gelu needs
// for a 1e-5 relative error budget. Scalar twins (same formulas) finish the tails.
#pragma once

#include <immintrin.h>

#include <cmath>

#include "ir/op.h"

namespace hyrt::backend::cpu {

// The exp algorithm's constants, shared by its AVX2 and AVX-512 forms: the input clamp, the
// Cody–Waite split of ln 2, and p's coefficients (Cephes expf minimax fit), highest first.
inline constexpr float kExpLo = -87.3f, kExpHi = 88.7f;
inline constexpr float kExpLog2e = 1.44269504088896341f;
inline constexpr float kExpLn2Hi = 0.693359375f, kExpLn2Lo = -2.12194440e-4f;
inline constexpr float kExpPoly[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                     4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline __m256 exp_avx2(__m256 x) {
  const __m256 kLog2e = _mm256_set1_ps(kExpLog2e);
  const __m256 kLn2Hi = _mm256_set1_ps(kExpLn2Hi);
  const __m256 kLn2Lo = _mm256_set1_ps(kExpLn2Lo);
  const __m256 lo = _mm256_set1_ps(kExpLo);
  const __m256 hi = _mm256_set1_ps(kExpHi);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  const __m256 overflow = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n =
      _mm256_round_ps(_mm256_mul_ps(x, kLog2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, kLn2Hi, x);
  r = _mm256_fnmadd_ps(n, kLn2Lo, r);
  // e^r ≈ 1 + r + r²·p(r), p by Horner.
  __m256 p = _mm256_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i)
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpPoly[i]));
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 y = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n: n is in [-126, 128]; split into two factors so n = 128 does not overflow the
  // exponent field before the multiply.
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half_n = _mm256_srai_epi32(ni, 1);
  const __m256i rest = _mm256_sub_epi32(ni, half_n);
  const __m256 s1 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half_n, _mm256_set1_epi32(127)), 23));
  const __m256 s2 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, _mm256_set1_epi32(127)), 23));
  y = _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
  y = _mm256_andnot_ps(underflow, y);
  return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), overflow);
}

// exp_avx2's algorithm 16 floats at a time, for functions built for AVX-512 (callers carry
// the target attribute and check the CPU at run time). 2^n by vscalefps, which needs no split.
__attribute__((target("avx512f"))) inline __m512 exp_avx512(__m512 x) {
  const __m512 lo = _mm512_set1_ps(kExpLo);
  const __m512 hi = _mm512_set1_ps(kExpHi);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  const __mmask16 overflow = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kExpLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kExpLn2Lo), r);
  __m512 p = _mm512_set1_ps(kExpPoly[0]);
  for (int i = 1; i < 6; ++i)
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpPoly[i]));
  const __m512 r2 = _mm512_mul_ps(r, r);
  __m512 y = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  y = _mm512_scalef_ps(y, n);
  y = _mm512_maskz_mov_ps(static_cast<__mmask16>(~underflow), y);
  return _mm512_mask_mov_ps(y, overflow, _mm512_set1_ps(INFINITY));
}

// e^x for x <= 0 whose results are rounded to bf16 next (the bf16 attention's probabilities):
// the same reduction with one ln 2 constant and a degree-3 minimax polynomial, relative error
// about 1e-4 (bf16's half ulp is 2e-3), 8 vector operations where exp_avx512 takes 17. Inputs
// below kExpLo give e^kExpLo (~1e-38), not 0; x > 0 is not handled.
inline constexpr float kExpBf16Poly[] = {0.16517895460128784f, 0.5041295886039734f,
                                         1.000195860862732f};
__attribute__((target("avx512f"))) inline __m512 exp_nonpositive_for_bf16_avx512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(kExpLo));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kExpLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147180559945f), x);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kExpBf16Poly[0]), r, _mm512_set1_ps(kExpBf16Poly[1]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpBf16Poly[2]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline float exp_scalar(float x) {
  return std::exp(x);
}

inline __m256 erf_avx2(__m256 x) {
  const __m256 sign_mask = _mm256_set1_ps(-0.0f);
  const __m256 sign = _mm256_and_ps(x, sign_mask);
  const __m256 ax = _mm256_andnot_ps(sign_mask, x);
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), ax, one));
  __m256 poly = _mm256_set1_ps(1.061405429f);
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
  poly = _mm256_mul_ps(poly, t);
  const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(ax, ax)));
  const __m256 y = _mm256_fnmadd_ps(poly, e, one);
  return _mm256_or_ps(y, sign);
}

inline float erf_scalar(float x) {
  return std::erf(x);
}

// --- Activations: vec() 8 lanes, one() the scalar twin ---------------------------------

struct Gelu {  // x · Φ(x) = x · ½ (1 + erf(x / √2))
  static __m256 vec(__m256 x) {
    const __m256 half = _mm256_set1_ps(0.5f);
    const __m256 e = erf_avx2(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
    return _mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  }
  static float one(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }
};

template <int kNumerator, int kDenominator>  // x · sigmoid(k·x), k = kNumerator/kDenominator
struct SigmoidGate {
  static __m256 vec(__m256 x) {
    const __m256 k = _mm256_set1_ps(static_cast<float>(kNumerator) / kDenominator);
    const __m256 e = exp_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), k), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
  }
  static float one(float x) {
    return x / (1.0f + std::exp(-static_cast<float>(kNumerator) / kDenominator * x));
  }
};
using Silu = SigmoidGate<1, 1>;
using QuickGelu = SigmoidGate<1702, 1000>;  // CLIP: x · sigmoid(1.702 x)

struct Relu {
  static __m256 vec(__m256 x) { return _mm256_max_ps(x, _mm256_setzero_ps()); }
  static float one(float x) { return x > 0.0f ? x : 0.0f; }
};

// tanh(x) = 1 − 2 / (exp(2x) + 1), odd-symmetric: computed on −|x| (exp never overflows) and
// the sign restored; relative error ~1e-7 away from 0. Near 0 (|x| < 0.3) the difference form
// loses relative precision, so a Taylor polynomial takes over there.
struct Tanh {
  static __m256 vec(__m256 x) {
    const __m256 sign = _mm256_and_ps(x, _mm256_set1_ps(-0.0f));
    const __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    const __m256 e = exp_avx2(_mm256_mul_ps(_mm256_set1_ps(-2.0f), ax));  // in (0, 1]
    const __m256 far = _mm256_div_ps(_mm256_sub_ps(_mm256_set1_ps(1.0f), e),
                                     _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    // x − x³/3 + 2x⁵/15 − 17x⁷/315 + 62x⁹/2835 (error < 2e-8 relative for |x| < 0.3)
    const __m256 x2 = _mm256_mul_ps(ax, ax);
    __m256 p = _mm256_set1_ps(62.0f / 2835.0f);
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-17.0f / 315.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(2.0f / 15.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(-1.0f / 3.0f));
    p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(1.0f));
    const __m256 near = _mm256_mul_ps(p, ax);
    const __m256 small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.3f), _CMP_LT_OQ);
    return _mm256_or_ps(_mm256_blendv_ps(far, near, small), sign);
  }
  static float one(float x) { return std::tanh(x); }
};

struct Identity {
  static __m256 vec(__m256 x) { return x; }
  static float one(float x) { return x; }
};

// Calls f(F{}) with the functor of `a` (a fused GEMM epilogue's activation), so a loop
// templated on F is compiled once per activation and the choice is made outside it.
template <class Fn>
decltype(auto) with_activation(ir::Activation a, Fn&& f) {
  switch (a) {
    case ir::Activation::kSilu:
      return f(Silu{});
    case ir::Activation::kGelu:
      return f(Gelu{});
    case ir::Activation::kQuickGelu:
      return f(QuickGelu{});
    case ir::Activation::kRelu:
      return f(Relu{});
    case ir::Activation::kNone:
      break;
  }
  return f(Identity{});
}

// Horizontal reductions of one register.
inline float hsum_avx2(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float hmax_avx2(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

}  // namespace hyrt::backend::cpu

// Fused int8 attention on AVX-512 VNNI; contract and numerics in attention_int8.h, the schedule
// as attention_bf16.cpp's.
//
// vpdpbusd acc, a, b: acc[i] += Σₜ a[4i+t]·b[4i+t] (16 int32 lanes; a u8, b s8, four products
// per lane). As in the bf16 kernel both products put 16 output columns in the lanes and a group
// of the reduction in each lane, now groups of four:
//   S [rows, keys]: lanes = 16 keys; quads over the head dim. K packed as 32-bit words of four
//     s8, kp[j / 16][w][j % 16] = k[j][4w .. 4w+3]; a query row's quad w (u8) is one broadcast.
//   O [rows, Dv]:   lanes = 16 output columns; quads over keys. V packed as
//     vp[w][c] = v[4w .. 4w+3][c]; P is stored row-major in u8, so a row's keys 4w .. 4w+3 are
//     one broadcast word.
// Register blocks as the bf16 kernel's: S 4 rows x 64 keys, O up to 24 int32 accumulators per
// tile (SD 1.5's Dv = 40: 8 rows x 2.5 vectors, the half one a 256-bit product), added into the
// f32 O with the per-channel scale at the tile's end.
#include "backend/cpu/attention_int8.h"

#include "backend/cpu/amx_tiles.h"
#include "backend/cpu/attention_fused.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kernels.h"

namespace hyrt::backend::cpu {
namespace {

using fused_attention::first_lanes;

// GCC 12's AVX-512 intrinsics warn about _mm512_undefined_*() once inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define HYRT_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))

// acc + Σ a(u8)·b(s8) in four-byte groups: _mm512_dpbusd_epi32 / _mm256_dpbusd_epi32, written as
// asm because GCC 12 does not keep the accumulator in its register across loop iterations for
// the intrinsics (a register copy before and after every vpdpbusd: the P·V product ran at ~60 %
// of the instruction's rate). The EVEX form either way (gas picks VEX only when asked).
HYRT_VNNI_TARGET inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
HYRT_VNNI_TARGET inline __m256i dpbusd(__m256i acc, __m256i a, __m256i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// A query row q [d] times `scale`, rounded to s8 with one scale per row (returned: absmax / 127)
// and stored as u8 = s8 + 128 in dst [d_pad] (the padding 128, i.e. zero).
HYRT_VNNI_TARGET float quantize_query_row(const float* q, int64_t d, float scale, uint8_t* dst,
                                          int64_t d_pad) {
  const __m512 vs = _mm512_set1_ps(scale);
  __m512 amax = _mm512_setzero_ps();
  for (int64_t i = 0; i < d; i += 16)
    amax = _mm512_max_ps(
        amax, _mm512_abs_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(first_lanes(d - i), q + i), vs)));
  const float a = _mm512_reduce_max_ps(amax);
  const __m512 to_s8 = _mm512_set1_ps(a > 0.0f ? scale * (127.0f / a) : 0.0f);
  const __m512i bias = _mm512_set1_epi32(128);
  for (int64_t i = 0; i < d; i += 16) {
    const __mmask16 m = first_lanes(d - i);
    const __m512i x = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, q + i), to_s8));
    _mm_mask_storeu_epi8(dst + i, m, _mm512_cvtusepi32_epi8(_mm512_add_epi32(x, bias)));
  }
  std::fill(dst + d, dst + d_pad, uint8_t{128});
  return a / 127.0f;
}

// s[r][16n + i] = kscale[j] · Σ_w q[r][w] · key j's quad w − kcomp[j], j = 16n + i: RS query
// rows (u8 quad words q_stride apart) against NK vectors of 16 keys (each [quads][16] words,
// vec_stride apart), written to s (rows s_stride apart). The scores still lack their row's
// scale, which the softmax applies (softmax_tile_row).
template <int RS, int NK>
HYRT_VNNI_TARGET void scores_block(const uint32_t* q, int64_t q_stride, const uint32_t* kp,
                                   int64_t vec_stride, int64_t quads, const float* kscale,
                                   const float* kcomp, float* s, int64_t s_stride) {
  __m512i acc[RS][NK];
#pragma GCC unroll 8
  for (int r = 0; r < RS; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NK; ++n)
      acc[r][n] = _mm512_setzero_si512();
  for (int64_t w = 0; w < quads; ++w) {
    __m512i kv[NK];
#pragma GCC unroll 4
    for (int n = 0; n < NK; ++n)
      kv[n] = _mm512_loadu_si512(kp + n * vec_stride + 16 * w);
#pragma GCC unroll 8
    for (int r = 0; r < RS; ++r) {
      const __m512i qb = _mm512_set1_epi32(static_cast<int>(q[r * q_stride + w]));
#pragma GCC unroll 4
      for (int n = 0; n < NK; ++n)
        acc[r][n] = dpbusd(acc[r][n], qb, kv[n]);
    }
  }
#pragma GCC unroll 4
  for (int n = 0; n < NK; ++n) {
    const __m512 ks = _mm512_loadu_ps(kscale + 16 * n);
    const __m512 kc = _mm512_loadu_ps(kcomp + 16 * n);
#pragma GCC unroll 8
    for (int r = 0; r < RS; ++r)  // the int32 sums are exact in f32 (attention_int8.h, kMaxD)
      _mm512_storeu_ps(s + r * s_stride + 16 * n,
                       _mm512_fmsub_ps(_mm512_cvtepi32_ps(acc[r][n]), ks, kc));
  }
}

// o[r][16n + i] += vscale[16n + i] · Σ_w p[r][w] · vp[w][16n + i], r < RB, n < NV: RB rows of
// u8 probabilities (quad words p_stride apart) times `quads` key quads of V (rows vp_stride
// words apart), summed exactly in int32 over the tile. HALF: the last vector's upper 8 columns
// are padding and it runs 256 bits wide (attention_bf16.cpp's output_block says why).
template <int NV, int RB, bool HALF>
HYRT_VNNI_TARGET void output_block(const uint32_t* p, int64_t p_stride, const uint32_t* vp,
                                   int64_t vp_stride, int64_t quads, const float* vscale, float* o,
                                   int64_t o_stride) {
  constexpr int NF = HALF ? NV - 1 : NV;  // full 512-bit vectors
  __m512i acc[RB][NF > 0 ? NF : 1];
  __m256i acc_half[RB];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NF; ++n)
      acc[r][n] = _mm512_setzero_si512();
    if constexpr (HALF) acc_half[r] = _mm256_setzero_si256();
  }
  for (int64_t w = 0; w < quads; ++w) {
    __m512i vv[NF > 0 ? NF : 1];
#pragma GCC unroll 16
    for (int n = 0; n < NF; ++n)
      vv[n] = _mm512_loadu_si512(vp + w * vp_stride + 16 * n);
    __m256i vh;
    if constexpr (HALF)
      vh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(vp + w * vp_stride + 16 * NF));
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const __m512i pb = _mm512_set1_epi32(static_cast<int>(p[r * p_stride + w]));
#pragma GCC unroll 16
      for (int n = 0; n < NF; ++n)
        acc[r][n] = dpbusd(acc[r][n], pb, vv[n]);
      if constexpr (HALF) acc_half[r] = dpbusd(acc_half[r], _mm512_castsi512_si256(pb), vh);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
    float* orow = o + r * o_stride;
#pragma GCC unroll 16
    for (int n = 0; n < NF; ++n)
      _mm512_storeu_ps(orow + 16 * n, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r][n]),
                                                      _mm512_loadu_ps(vscale + 16 * n),
                                                      _mm512_loadu_ps(orow + 16 * n)));
    if constexpr (HALF)
      _mm256_storeu_ps(orow + 16 * NF, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc_half[r]),
                                                       _mm256_loadu_ps(vscale + 16 * NF),
                                                       _mm256_loadu_ps(orow + 16 * NF)));
  }
}

// kRows rows of O += P·V over `quads` key quads for NV 16-column vectors (HALF: the last one 8
// columns): row blocks of at most 24 accumulators.
template <int NV, bool HALF>
HYRT_VNNI_TARGET void output_rows(const uint32_t* p, int64_t p_stride, const uint32_t* vp,
                                  int64_t quads, const float* vscale, float* o, int64_t o_stride) {
  constexpr int RB = NV <= 3 ? 8 : NV <= 6 ? 4 : NV <= 12 ? 2 : 1;
  static_assert(FlashAttentionInt8::kRows % RB == 0);
  for (int64_t r = 0; r < FlashAttentionInt8::kRows; r += RB)
    output_block<NV, RB, HALF>(p + r * p_stride, p_stride, vp, 16 * NV, quads, vscale,
                               o + r * o_stride, o_stride);
}

using OutputRowsFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, const float*,
                              float*, int64_t);

template <int... NV>
OutputRowsFn output_rows_for(int nv, bool half, std::integer_sequence<int, NV...>) {
  static constexpr OutputRowsFn full[] = {nullptr, &output_rows<NV + 1, false>...};
  static constexpr OutputRowsFn halves[] = {nullptr, &output_rows<NV + 1, true>...};
  return half ? halves[nv] : full[nv];
}

constexpr int kScoreRows = 4, kScoreVectors = 4;
static_assert(FlashAttentionInt8::kRows % kScoreRows == 0);

// One query block's scores against keys [n0, n0 + keys) (a multiple of 16): 4 rows at a time,
// 64 keys at a time, then the 16-key tail.
HYRT_VNNI_TARGET void scores_tile(const uint32_t* q, int64_t quads, const uint32_t* kp,
                                  const float* kscale, const float* kcomp, int64_t n0, int64_t keys,
                                  float* s) {
  constexpr int64_t kS = FlashAttentionInt8::kKeys;
  const int64_t vec = 16 * quads;  // words per 16-key vector
  const uint32_t* k0 = kp + n0 / 16 * vec;
  for (int64_t r = 0; r < FlashAttentionInt8::kRows; r += kScoreRows) {
    const uint32_t* qr = q + r * quads;
    float* sr = s + r * kS;
    int64_t j = 0;
    for (; j + 16 * kScoreVectors <= keys; j += 16 * kScoreVectors)
      scores_block<kScoreRows, kScoreVectors>(qr, quads, k0 + j / 16 * vec, vec, quads,
                                              kscale + n0 + j, kcomp + n0 + j, sr + j, kS);
    for (; j + 16 <= keys; j += 16)
      scores_block<kScoreRows, 1>(qr, quads, k0 + j / 16 * vec, vec, quads, kscale + n0 + j,
                                  kcomp + n0 + j, sr + j, kS);
  }
}

// 255 · 2^t for t <= 0 in 6 vector operations with the caller's FMA: f = t − ⌊t⌋ by vreduceps,
// 255 · 2^f by a degree-3 polynomial on [0, 1) (relative error 7.5e-5 against u8's 2e-3), then
// vscalefps multiplies by 2^⌊t⌋ itself. No clamp: a very negative t gives f = 0 and 2^⌊t⌋ = 0.
inline constexpr float kExp2U8Poly[] = {19.896128f, 57.647102f, 177.43767f, 254.98091f};
HYRT_VNNI_TARGET inline __m512 exp2_times_255(__m512 t) {
  const __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kExp2U8Poly[0]), f, _mm512_set1_ps(kExp2U8Poly[1]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2U8Poly[2]));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2U8Poly[3]));
  return _mm512_scalef_ps(p, t);
}

// 16 keys' round(255 · 2^(s · vq + vneg)) as u8 at p (lanes outside `mk` 0); returns sum + them.
HYRT_VNNI_TARGET inline __m512i probabilities_u8(const float* s, __m512 vq, __m512 vneg,
                                                 __mmask16 mk, uint8_t* p, __m512i sum) {
  const __m512 e = exp2_times_255(_mm512_fmadd_ps(_mm512_loadu_ps(s), vq, vneg));
  const __m512i q = _mm512_maskz_cvtps_epi32(mk, e);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtusepi32_epi8(q));
  return _mm512_add_epi32(sum, q);
}

// The online softmax of one row's tile (as attention_bf16.cpp's softmax_tile_row): scores
// qscale · s[j], j < keys, of which the first `valid` count (qscale >= 0, the row's scale: the
// scores_block comment); m, l the row's running max and sum, o its output (dv_pad floats)
// rescaled when the max grows; writes round(255 · exp(qscale · s − m)) as u8 to p (masked keys
// 0) and adds those same integers to l.
// With kscale and kcomp (the row's keys' scale and correction: the AMX form) s holds the row's
// int32 sums, converted here in place to scores (kscale · sum − kcomp, as scores_block does) in
// the pass that finds their maximum.
HYRT_VNNI_TARGET void softmax_tile_row(float* s, float qscale, int64_t keys, int64_t valid,
                                       float& m, float& l, float* o, int64_t dv_pad, uint8_t* p,
                                       const float* kscale = nullptr,
                                       const float* kcomp = nullptr) {
  valid = std::min(valid, keys);
  if (valid <= 0) {
    std::memset(p, 0, static_cast<size_t>(keys));
    return;
  }
  if (kscale) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < keys; j += 16) {
      // the int32 sums are exact in f32 (attention_int8.h, kMaxD)
      const __m512 x = _mm512_fmsub_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(s + j)),
                                       _mm512_loadu_ps(kscale + j), _mm512_loadu_ps(kcomp + j));
      _mm512_storeu_ps(s + j, x);
      vmax = _mm512_mask_max_ps(vmax, j < valid ? first_lanes(valid - j) : __mmask16{0}, vmax, x);
    }
    fused_attention::raise_running_max_to(qscale * _mm512_reduce_max_ps(vmax), m, l, o, dv_pad);
  } else {
    fused_attention::raise_running_max(s, valid, qscale, m, l, o, dv_pad);
  }
  // e^(qscale·s − m) as 2^(qscale·log2e·s − m·log2e): one FMA.
  constexpr float kLog2e = 1.4426950408889634f;
  const __m512 vneg = _mm512_set1_ps(-m * kLog2e), vq = _mm512_set1_ps(qscale * kLog2e);
  __m512i vsum = _mm512_setzero_si512();
  int64_t j = 0;
  for (; j + 16 <= valid; j += 16)
    vsum = probabilities_u8(s + j, vq, vneg, static_cast<__mmask16>(0xFFFF), p + j, vsum);
  for (; j < keys; j += 16)
    vsum = probabilities_u8(s + j, vq, vneg, j >= valid ? __mmask16{0} : first_lanes(valid - j),
                            p + j, vsum);
  l += static_cast<float>(_mm512_reduce_add_epi32(vsum));
}

// AMX forms of the two products, on amx_tiles.h's product tiles (amx::configure_products with
// the score product's depth in quads): tdpbusd, u8 A · s8 B -> int32.
HYRT_AMX_ACCUMULATE_FN(accumulate_full, DPBUSD, 4, 5)
HYRT_AMX_ACCUMULATE_FN(accumulate_rem, DPBUSD, 6, 7)

// scores_tile on tiles, but s [kRows][kKeys] gets the int32 sums (softmax_tile_row converts
// them): kRows rows against keys [n0, n0 + keys) (a multiple of 64), 64 keys (four
// accumulators) at a time.
HYRT_VNNI_TARGET void scores_tile_amx(const uint32_t* q, int64_t quads, const uint32_t* kp,
                                      int64_t n0, int64_t keys, float* s) {
  amx::score_tiles<accumulate_full, accumulate_rem>(
      q, quads, kp, n0, keys, reinterpret_cast<int32_t*>(s), 4 * FlashAttentionInt8::kKeys);
}

// O += vscale · (P · V) on tiles for keys [n0, n0 + keys) (a multiple of 64): P u8 [kRows][kKeys]
// as A tiles of 64 keys, V's quad rows as B tiles of 16 channels, four channel vectors at a time;
// the int32 sums go through `sums` [kRows][dv_pad] before they are scaled into o.
HYRT_VNNI_TARGET void output_tile_amx(const uint8_t* p, const uint32_t* vp, int64_t dv_pad,
                                      int64_t n0, int64_t keys, const float* vscale, int32_t* sums,
                                      float* o) {
  constexpr int64_t kS = FlashAttentionInt8::kKeys;
  const int64_t nv = dv_pad / 16;
  for (int64_t g = 0; g < nv; g += 4) {
    const int ng = static_cast<int>(std::min<int64_t>(4, nv - g));
    amx::zero_accumulators(ng);
    for (int64_t kc = 0; kc < keys; kc += 64) {
      HYRT_AMX_LOAD(4, p + kc, kS);
      const uint32_t* vb = vp + (n0 + kc) / 4 * dv_pad + 16 * g;
      for (int n = 0; n < ng; ++n)
        accumulate_full(n, vb + 16 * n, 4 * dv_pad);
    }
    amx::store_accumulators(ng, sums + 16 * g, 4 * dv_pad);
  }
  for (int64_t r = 0; r < FlashAttentionInt8::kRows; ++r)
    for (int64_t c = 0; c < dv_pad; c += 16) {
      float* orow = o + r * dv_pad + c;
      _mm512_storeu_ps(
          orow, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(sums + r * dv_pad + c)),
                                _mm512_loadu_ps(vscale + c), _mm512_loadu_ps(orow)));
    }
}

}  // namespace

bool FlashAttentionInt8::supports(int64_t d, int64_t dv) {
  static const bool isa =
      __builtin_cpu_supports("avx512vnni") != 0 && cpu_has_avx512() && cpu_has_int8_dot_product();
  return isa && d >= 1 && d <= kMaxD && dv >= 1 && dv <= kMaxDv;
}

FlashAttentionInt8::FlashAttentionInt8(int64_t tk, int64_t d, int64_t dv, float scale, bool causal,
                                       Products products)
    : tk_(tk), d_(d), dv_(dv), scale_(scale), causal_(causal) {
  // 2-core Xeon (bench_cpu_gemm, 8 heads): 4096 keys of 40 37.1 -> 28.6 ms on tiles, 1024 of 80
  // 3.86 -> 2.63 ms, 256 of 160 0.65 -> 0.47 ms, but 77 keys of 40 1.54 -> 1.87 ms.
  amx_ = amx::tiles_chosen(products, tk);
  quads_d_ = (d + 3) / 4;
  keys_pad_ = amx::padded_keys(tk, amx_);
  dv_pad_ = (dv + 15) / 16 * 16;
  const auto d16 = static_cast<size_t>((d + 15) / 16 * 16);
  k_bytes_ = align_up(static_cast<size_t>(quads_d_ * keys_pad_) * 4);
  key_bytes_ = 2 * align_up(static_cast<size_t>(keys_pad_) * 4);  // kscale, kcomp (f32)
  v_bytes_ = align_up(static_cast<size_t>(keys_pad_ * dv_pad_));  // keys_pad / 4 rows of words
  vs_bytes_ = align_up(static_cast<size_t>(dv_pad_) * 4);
  // pack_head's K channel means, one key row in s8, and V's per-channel 127 / absmax.
  pack_bytes_ = align_up(d16 * 4) + align_up(static_cast<size_t>(4 * quads_d_)) +
                align_up(static_cast<size_t>(dv_pad_) * 4);
  q_bytes_ = align_up(static_cast<size_t>(kRows * quads_d_) * 4) + align_up(kRows * 4);
  s_bytes_ = align_up(static_cast<size_t>(kRows * kKeys) * 4);
  p_bytes_ = align_up(static_cast<size_t>(kRows * kKeys));
  o_bytes_ = align_up(static_cast<size_t>(kRows * dv_pad_) * 4);
  scratch_bytes_ = k_bytes_ + key_bytes_ + v_bytes_ + vs_bytes_ + pack_bytes_ + q_bytes_ +
                   s_bytes_ + p_bytes_ + o_bytes_;
}

HYRT_VNNI_TARGET void FlashAttentionInt8::pack_head(const float* k_h, int64_t ld_k,
                                                    const float* v_h, int64_t ld_v,
                                                    void* scratch) const {
  char* base = static_cast<char*>(scratch);
  auto* kp = reinterpret_cast<uint32_t*>(base);  // [keys_pad / 16][quads_d][16]
  auto* kscale = reinterpret_cast<float*>(base + k_bytes_);
  auto* kcomp = reinterpret_cast<float*>(base + k_bytes_ + key_bytes_ / 2);
  auto* vp = reinterpret_cast<uint32_t*>(base + k_bytes_ + key_bytes_);  // [keys_pad/4][dv_pad]
  auto* vscale = reinterpret_cast<float*>(base + k_bytes_ + key_bytes_ + v_bytes_);
  char* pack = base + k_bytes_ + key_bytes_ + v_bytes_ + vs_bytes_;
  const int64_t d16 = (d_ + 15) / 16 * 16;
  auto* mean = reinterpret_cast<float*>(pack);  // [d16], zero past D
  auto* row = reinterpret_cast<int8_t*>(pack + align_up(static_cast<size_t>(d16) * 4));
  auto* v_inv = reinterpret_cast<float*>(pack + align_up(static_cast<size_t>(d16) * 4) +
                                         align_up(static_cast<size_t>(4 * quads_d_)));

  // K's channel means over the head's keys (the smoothing; any constant vector would keep the
  // softmax, the mean keeps the rounded keys small).
  std::fill(mean, mean + d16, 0.0f);
  for (int64_t j = 0; j < tk_; ++j)
    for (int64_t i = 0; i < d_; i += 16) {
      const __mmask16 m = first_lanes(d_ - i);
      _mm512_storeu_ps(mean + i, _mm512_add_ps(_mm512_loadu_ps(mean + i),
                                               _mm512_maskz_loadu_ps(m, k_h + j * ld_k + i)));
    }
  const __m512 inv_tk = _mm512_set1_ps(tk_ > 0 ? 1.0f / static_cast<float>(tk_) : 0.0f);
  for (int64_t i = 0; i < d16; i += 16)
    _mm512_storeu_ps(mean + i, _mm512_mul_ps(_mm512_loadu_ps(mean + i), inv_tk));

  // Each key: smoothed, absmax, s8 row, its quad words scattered into its vector's columns.
  const auto* words = reinterpret_cast<const uint32_t*>(row);
  for (int64_t j = 0; j < keys_pad_; ++j) {
    std::fill(row, row + 4 * quads_d_, int8_t{0});
    float ks = 0.0f;
    int32_t sum = 0;
    if (j < tk_) {
      __m512 x[kMaxD / 16];
      __m512 amax = _mm512_setzero_ps();
      for (int64_t i = 0; i < d_; i += 16) {
        const __mmask16 m = first_lanes(d_ - i);
        x[i / 16] = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, k_h + j * ld_k + i),
                                        _mm512_loadu_ps(mean + i));
        amax = _mm512_max_ps(amax, _mm512_abs_ps(x[i / 16]));
      }
      const float a = _mm512_reduce_max_ps(amax);
      const __m512 to_s8 = _mm512_set1_ps(a > 0.0f ? 127.0f / a : 0.0f);
      __m512i vsum = _mm512_setzero_si512();
      for (int64_t i = 0; i < d_; i += 16) {
        const __m512i qi = _mm512_cvtps_epi32(_mm512_mul_ps(x[i / 16], to_s8));
        _mm_mask_storeu_epi8(row + i, first_lanes(d_ - i), _mm512_cvtsepi32_epi8(qi));
        vsum = _mm512_add_epi32(vsum, qi);
      }
      ks = a / 127.0f;
      sum = _mm512_reduce_add_epi32(vsum);
    }
    kscale[j] = ks;
    kcomp[j] = static_cast<float>(128 * sum) * ks;  // Q's +128 times Σ k₈, in score units
    for (int64_t w = 0; w < quads_d_; ++w)
      kp[(j / 16 * quads_d_ + w) * 16 + j % 16] = words[w];
  }

  // V: per-channel absmax over the keys, then four keys at a time into quad words.
  const int64_t nv = dv_pad_ / 16;
  for (int64_t n = 0; n < nv; ++n) {
    const __mmask16 m = first_lanes(dv_ - 16 * n);
    __m512 amax = _mm512_setzero_ps();
    for (int64_t j = 0; j < tk_; ++j)
      amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, v_h + j * ld_v + 16 * n)));
    _mm512_storeu_ps(vscale + 16 * n, _mm512_mul_ps(amax, _mm512_set1_ps(1.0f / 127.0f)));
    const __mmask16 nonzero = _mm512_cmp_ps_mask(amax, _mm512_setzero_ps(), _CMP_GT_OQ);
    _mm512_storeu_ps(v_inv + 16 * n, _mm512_maskz_div_ps(nonzero, _mm512_set1_ps(127.0f), amax));
  }
  const __m512i low_byte = _mm512_set1_epi32(0xFF);
  for (int64_t w = 0; w < keys_pad_ / 4; ++w)
    for (int64_t n = 0; n < nv; ++n) {
      const __mmask16 m = first_lanes(dv_ - 16 * n);
      const __m512 inv = _mm512_loadu_ps(v_inv + 16 * n);
      __m512i word = _mm512_setzero_si512();
      for (int t = 0; t < 4; ++t) {
        const int64_t j = 4 * w + t;
        if (j >= tk_) break;
        const __m512i qi = _mm512_cvtps_epi32(
            _mm512_mul_ps(_mm512_maskz_loadu_ps(m, v_h + j * ld_v + 16 * n), inv));
        word = _mm512_or_si512(word, _mm512_slli_epi32(_mm512_and_si512(qi, low_byte), 8 * t));
      }
      _mm512_storeu_si512(vp + w * dv_pad_ + 16 * n, word);
    }
}

HYRT_VNNI_TARGET void FlashAttentionInt8::run_rows(const float* q_h, int64_t ld_q, int64_t q0,
                                                   int64_t rows, float* out_h, int64_t ld_out,
                                                   void* scratch) const {
  char* base = static_cast<char*>(scratch);
  const auto* kp = reinterpret_cast<const uint32_t*>(base);
  const auto* kscale = reinterpret_cast<const float*>(base + k_bytes_);
  const auto* kcomp = reinterpret_cast<const float*>(base + k_bytes_ + key_bytes_ / 2);
  const auto* vp = reinterpret_cast<const uint32_t*>(base + k_bytes_ + key_bytes_);
  const auto* vscale = reinterpret_cast<const float*>(base + k_bytes_ + key_bytes_ + v_bytes_);
  char* block = base + k_bytes_ + key_bytes_ + v_bytes_ + vs_bytes_ + pack_bytes_;
  auto* qb = reinterpret_cast<uint32_t*>(block);  // [kRows][quads_d], u8 quads
  auto* qscale = reinterpret_cast<float*>(block + align_up(kRows * quads_d_ * 4));  // [kRows]
  auto* s = reinterpret_cast<float*>(block + q_bytes_);                        // [kRows][kKeys]
  auto* p = reinterpret_cast<uint8_t*>(block + q_bytes_ + s_bytes_);           // [kRows][kKeys]
  auto* o = reinterpret_cast<float*>(block + q_bytes_ + s_bytes_ + p_bytes_);  // [kRows][dv_pad]
  const OutputRowsFn output = output_rows_for(static_cast<int>(dv_pad_ / 16), dv_pad_ - dv_ >= 8,
                                              std::make_integer_sequence<int, 16>());
  float m[kRows], l[kRows];
  if (amx_) amx::configure_products(quads_d_);

  fused_attention::walk(
      q0, rows, kRows, kKeys, tk_, keys_pad_, causal_,
      [&](int64_t r0, int64_t n_rows) {
        // Rows past the block's end are zero (scale 0; their output is not stored).
        for (int64_t r = 0; r < kRows; ++r) {
          auto* dst = reinterpret_cast<uint8_t*>(qb + r * quads_d_);
          if (r < n_rows) {
            qscale[r] = quantize_query_row(q_h + (r0 + r) * ld_q, d_, scale_, dst, 4 * quads_d_);
          } else {
            std::fill(dst, dst + 4 * quads_d_, uint8_t{128});
            qscale[r] = 0.0f;
          }
          m[r] = -INFINITY;
          l[r] = 0.0f;
        }
        std::fill(o, o + kRows * dv_pad_, 0.0f);
      },
      [&](int64_t n0, int64_t keys, const auto& valid) {
        if (amx_)
          scores_tile_amx(qb, quads_d_, kp, n0, keys, s);
        else
          scores_tile(qb, quads_d_, kp, kscale, kcomp, n0, keys, s);
        for (int64_t r = 0; r < kRows; ++r)
          softmax_tile_row(s + r * kKeys, qscale[r], keys, valid(r), m[r], l[r], o + r * dv_pad_,
                           dv_pad_, p + r * kKeys, amx_ ? kscale + n0 : nullptr,
                           amx_ ? kcomp + n0 : nullptr);
        // A tile's keys are a multiple of 16 (64 with AMX), so whole quads; padding keys have
        // P = 0, V = 0. The scores are spent: with AMX their buffer holds P·V's int32 sums.
        if (amx_)
          output_tile_amx(p, vp, dv_pad_, n0, keys, vscale, reinterpret_cast<int32_t*>(s), o);
        else
          output(reinterpret_cast<const uint32_t*>(p), kKeys / 4, vp + n0 / 4 * dv_pad_, keys / 4,
                 vscale, o, dv_pad_);
      },
      [&](int64_t r0, int64_t n_rows) {
        fused_attention::store_normalized(o, dv_pad_, l, n_rows, dv_, out_h + r0 * ld_out, ld_out);
      });
  if (amx_) amx::release();
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace hyrt::backend::cpu

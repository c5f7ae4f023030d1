// Fused bf16 attention on AVX-512 BF16; contract and schedule in attention_bf16.h.
//
// vdpbf16ps acc, a, b: acc[i] += a[2i]·b[2i] + a[2i+1]·b[2i+1] (16 f32 lanes, bf16 pairs).
// Both products put 16 output columns in the lanes and a pair of the reduction in each lane:
//   S [rows, keys]: lanes = 16 keys; pairs over the head dim. K packed as 32-bit words, each
//     16-key vector's pairs together: kp[j / 16][p][j % 16] = (k[j][2p], k[j][2p+1]) (a score
//     block then reads a few contiguous runs); a query row's pair p is one broadcast word.
//   O [rows, Dv]:   lanes = 16 output columns; pairs over keys. V packed as
//     vp[pp][c] = (v[2pp][c], v[2pp+1][c]); P is stored row-major in bf16, so a row's keys
//     2pp, 2pp+1 are one broadcast word.
// Register blocks: S 4 rows x 64 keys (16 accumulators, 8 loads per 16 products); O up to 24
// accumulators (SD 1.5's Dv = 40 -> 48: 8 rows x 3 vectors).
#include "backend/cpu/attention_bf16.h"

#include "backend/cpu/amx_tiles.h"
#include "backend/cpu/attention_fused.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"
#include "core/half.h"

namespace hyrt::backend::cpu {
namespace {

// GCC 12's AVX-512 intrinsics warn about _mm512_undefined_*() once inlined (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#define HYRT_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

HYRT_BF16_TARGET inline __m512bh broadcast_pair(const uint32_t* word) {
  return (__m512bh)_mm512_set1_epi32(static_cast<int>(*word));
}

HYRT_BF16_TARGET inline __m512bh load_pairs(const uint32_t* words) {
  return (__m512bh)_mm512_loadu_si512(words);
}

// n floats times `scale` -> bf16 (RNE) at dst, then zeros up to n_pad: a query row with the
// softmax's scale folded in (unscaled rows go through core/half.h's convert_from_f32).
HYRT_BF16_TARGET void scaled_row_to_bf16(const float* src, int64_t n, float scale, uint16_t* dst,
                                         int64_t n_pad) {
  const __m512 vs = _mm512_set1_ps(scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_loadu_ps(src + i), vs)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(
        dst + i, m,
        (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, src + i), vs)));
  }
  for (i = n; i < n_pad; ++i)
    dst[i] = 0;
}

// s[r][16n + i] = Σ_p q[r][p] · key (16n + i)'s pair p, r < RS, n < NK: RS query rows (pair words
// q_stride apart) against NK vectors of 16 keys (each [pairs][16] words, vec_stride apart),
// written to s (rows s_stride apart).
template <int RS, int NK>
HYRT_BF16_TARGET void scores_block(const uint32_t* q, int64_t q_stride, const uint32_t* kp,
                                   int64_t vec_stride, int64_t pairs, float* s, int64_t s_stride) {
  __m512 acc[RS][NK];
#pragma GCC unroll 8
  for (int r = 0; r < RS; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NK; ++n)
      acc[r][n] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh kv[NK];
#pragma GCC unroll 4
    for (int n = 0; n < NK; ++n)
      kv[n] = load_pairs(kp + n * vec_stride + 16 * p);
#pragma GCC unroll 8
    for (int r = 0; r < RS; ++r) {
      const __m512bh qb = broadcast_pair(q + r * q_stride + p);
#pragma GCC unroll 4
      for (int n = 0; n < NK; ++n)
        acc[r][n] = _mm512_dpbf16_ps(acc[r][n], qb, kv[n]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RS; ++r)
#pragma GCC unroll 4
    for (int n = 0; n < NK; ++n)
      _mm512_storeu_ps(s + r * s_stride + 16 * n, acc[r][n]);
}

// o[r][16n + i] += Σ_pp p[r][pp] · vp[pp][16n + i], r < RB, n < NV: RB rows of probabilities
// (pair words p_stride apart) times `pairs` key pairs of V (rows vp_stride words apart). HALF:
// the last vector's upper 8 columns are padding, and it runs as a 256-bit product (two of them
// issue per clock on Zen 4, against one 512-bit: SD 1.5's Dv = 40 costs 2.5 vectors, not 3).
template <int NV, int RB, bool HALF>
HYRT_BF16_TARGET void output_block(const uint32_t* p, int64_t p_stride, const uint32_t* vp,
                                   int64_t vp_stride, int64_t pairs, float* o, int64_t o_stride) {
  constexpr int NF = HALF ? NV - 1 : NV;  // full 512-bit vectors
  __m512 acc[RB][NF > 0 ? NF : 1];
  __m256 acc_half[RB];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NF; ++n)
      acc[r][n] = _mm512_loadu_ps(o + r * o_stride + 16 * n);
    if constexpr (HALF) acc_half[r] = _mm256_loadu_ps(o + r * o_stride + 16 * NF);
  }
  for (int64_t pp = 0; pp < pairs; ++pp) {
    __m512bh vv[NF > 0 ? NF : 1];
#pragma GCC unroll 16
    for (int n = 0; n < NF; ++n)
      vv[n] = load_pairs(vp + pp * vp_stride + 16 * n);
    __m256bh vh;
    if constexpr (HALF)
      vh = (__m256bh)_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(vp + pp * vp_stride + 16 * NF));
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const __m512bh pb = broadcast_pair(p + r * p_stride + pp);
#pragma GCC unroll 16
      for (int n = 0; n < NF; ++n)
        acc[r][n] = _mm512_dpbf16_ps(acc[r][n], pb, vv[n]);
      if constexpr (HALF)
        acc_half[r] =
            _mm256_dpbf16_ps(acc_half[r], (__m256bh)_mm512_castsi512_si256((__m512i)pb), vh);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r) {
#pragma GCC unroll 16
    for (int n = 0; n < NF; ++n)
      _mm512_storeu_ps(o + r * o_stride + 16 * n, acc[r][n]);
    if constexpr (HALF) _mm256_storeu_ps(o + r * o_stride + 16 * NF, acc_half[r]);
  }
}

// kRows rows of O += P·V over `pairs` key pairs, for NV 16-column vectors (HALF: the last one
// 8 columns): row blocks that keep at most 24 accumulators (kRows is a multiple of each RB).
template <int NV, bool HALF>
HYRT_BF16_TARGET void output_rows(const uint32_t* p, int64_t p_stride, const uint32_t* vp,
                                  int64_t pairs, float* o, int64_t o_stride) {
  constexpr int RB = NV <= 3 ? 8 : NV <= 6 ? 4 : NV <= 12 ? 2 : 1;
  static_assert(FlashAttentionBf16::kRows % RB == 0);
  for (int64_t r = 0; r < FlashAttentionBf16::kRows; r += RB)
    output_block<NV, RB, HALF>(p + r * p_stride, p_stride, vp, 16 * NV, pairs, o + r * o_stride,
                               o_stride);
}

using OutputRowsFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t);

// output_rows for nv vectors (1..16), the last one half where `half`.
template <int... NV>
OutputRowsFn output_rows_for(int nv, bool half, std::integer_sequence<int, NV...>) {
  static constexpr OutputRowsFn full[] = {nullptr, &output_rows<NV + 1, false>...};
  static constexpr OutputRowsFn halves[] = {nullptr, &output_rows<NV + 1, true>...};
  return half ? halves[nv] : full[nv];
}

constexpr int kScoreRows = 4, kScoreVectors = 4;
static_assert(FlashAttentionBf16::kRows % kScoreRows == 0);

// One query block: scores of kRows rows against keys [n0, n0 + keys) (keys a multiple of 16),
// 4 rows at a time, 64 keys at a time, then the 16-key tail.
HYRT_BF16_TARGET void scores_tile(const uint32_t* q, int64_t pairs_d, const uint32_t* kp,
                                  int64_t n0, int64_t keys, float* s) {
  constexpr int64_t kS = FlashAttentionBf16::kKeys;
  for (int64_t r = 0; r < FlashAttentionBf16::kRows; r += kScoreRows) {
    const uint32_t* qr = q + r * pairs_d;
    float* sr = s + r * kS;
    const int64_t vec = 16 * pairs_d;  // words per 16-key vector
    const uint32_t* k0 = kp + n0 / 16 * vec;
    int64_t j = 0;
    for (; j + 16 * kScoreVectors <= keys; j += 16 * kScoreVectors)
      scores_block<kScoreRows, kScoreVectors>(qr, pairs_d, k0 + j / 16 * vec, vec, pairs_d, sr + j,
                                              kS);
    for (; j + 16 <= keys; j += 16)
      scores_block<kScoreRows, 1>(qr, pairs_d, k0 + j / 16 * vec, vec, pairs_d, sr + j, kS);
  }
}

// The online softmax of one row's tile: scores s[0, keys) of which the first `valid` count
// (valid <= 0: none); m, l: the row's running max and sum, o its output (dv_pad floats), rescaled
// when the max grows (fused_attention::raise_running_max); writes the tile's probabilities as
// bf16 to p (keys entries; masked ones 0).
HYRT_BF16_TARGET void softmax_tile_row(const float* s, int64_t keys, int64_t valid, float& m,
                                       float& l, float* o, int64_t dv_pad, uint16_t* p) {
  valid = std::min(valid, keys);
  if (valid <= 0) {
    std::memset(p, 0, static_cast<size_t>(keys) * sizeof(uint16_t));
    return;
  }
  fused_attention::raise_running_max(s, valid, 1.0f, m, l, o, dv_pad);
  const __m512 vneg = _mm512_set1_ps(-m);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j + 16 <= keys; j += 16) {
    __m512 e = exp_nonpositive_for_bf16_avx512(_mm512_add_ps(_mm512_loadu_ps(s + j), vneg));
    if (j + 16 > valid)
      e = _mm512_maskz_mov_ps(static_cast<__mmask16>(j >= valid ? 0u : (1u << (valid - j)) - 1u),
                              e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j), (__m256i)_mm512_cvtneps_pbh(e));
    vsum = _mm512_add_ps(vsum, e);
  }
  l += _mm512_reduce_add_ps(vsum);
}

// AMX forms of the two products, on amx_tiles.h's product tiles (amx::configure_products with
// the score product's depth in pairs): tdpbf16ps, bf16 pairs -> f32.
HYRT_AMX_ACCUMULATE_FN(accumulate_full, DPBF16PS, 4, 5)
HYRT_AMX_ACCUMULATE_FN(accumulate_rem, DPBF16PS, 6, 7)

// scores_tile on tiles: kRows rows against keys [n0, n0 + keys) (a multiple of 64), 64 keys
// (four accumulators) at a time, into s [kRows][kKeys].
void scores_tile_amx(const uint32_t* q, int64_t pairs, const uint32_t* kp, int64_t n0, int64_t keys,
                     float* s) {
  amx::score_tiles<accumulate_full, accumulate_rem>(q, pairs, kp, n0, keys, s,
                                                    4 * FlashAttentionBf16::kKeys);
}

// O [kRows][dv_pad] += P · V on tiles for keys [n0, n0 + keys) (a multiple of 32): P bf16
// [kRows][kKeys] as A tiles of 32 keys, V's pair rows as B tiles of 16 channels, four channel
// vectors of O at a time held in the accumulators.
void output_tile_amx(const uint16_t* p, const uint32_t* vp, int64_t dv_pad, int64_t n0,
                     int64_t keys, float* o) {
  constexpr int64_t kS = FlashAttentionBf16::kKeys;
  const int64_t nv = dv_pad / 16;
  for (int64_t g = 0; g < nv; g += 4) {
    const int ng = static_cast<int>(std::min<int64_t>(4, nv - g));
    amx::load_accumulators(ng, o + 16 * g, 4 * dv_pad);
    for (int64_t kc = 0; kc < keys; kc += 32) {
      HYRT_AMX_LOAD(4, p + kc, 2 * kS);
      const uint32_t* vb = vp + (n0 + kc) / 2 * dv_pad + 16 * g;
      for (int n = 0; n < ng; ++n)
        accumulate_full(n, vb + 16 * n, 4 * dv_pad);
    }
    amx::store_accumulators(ng, o + 16 * g, 4 * dv_pad);
  }
}

}  // namespace

bool FlashAttentionBf16::supports(int64_t d, int64_t dv) {
  static const bool isa =
      __builtin_cpu_supports("avx512bf16") != 0 && cpu_has_avx512() && cpu_has_bf16_dot_product();
  return isa && d >= 1 && dv >= 1 && dv <= kMaxDv;
}

FlashAttentionBf16::FlashAttentionBf16(int64_t tk, int64_t d, int64_t dv, float scale, bool causal,
                                       Products products)
    : tk_(tk), d_(d), dv_(dv), scale_(scale), causal_(causal) {
  amx_ = amx::tiles_chosen(products, tk);
  pairs_d_ = (d + 1) / 2;
  keys_pad_ = amx::padded_keys(tk, amx_);
  dv_pad_ = (dv + 15) / 16 * 16;
  k_bytes_ = align_up(static_cast<size_t>(pairs_d_ * keys_pad_) * 4);
  v_bytes_ = align_up(static_cast<size_t>(keys_pad_ / 2 * dv_pad_) * 4);
  // pack_head's bf16 rows: one key row in pairs, or two value rows.
  row_bytes_ = align_up(static_cast<size_t>(std::max(2 * pairs_d_, 2 * dv_pad_)) * 2);
  q_bytes_ = align_up(static_cast<size_t>(kRows * pairs_d_) * 4);
  s_bytes_ = align_up(static_cast<size_t>(kRows * kKeys) * 4);
  p_bytes_ = align_up(static_cast<size_t>(kRows * kKeys) * 2);
  o_bytes_ = align_up(static_cast<size_t>(kRows * dv_pad_) * 4);
  scratch_bytes_ = k_bytes_ + v_bytes_ + row_bytes_ + q_bytes_ + s_bytes_ + p_bytes_ + o_bytes_;
}

HYRT_BF16_TARGET void FlashAttentionBf16::pack_head(const float* k_h, int64_t ld_k,
                                                    const float* v_h, int64_t ld_v,
                                                    void* scratch) const {
  char* base = static_cast<char*>(scratch);
  auto* kp = reinterpret_cast<uint32_t*>(base);             // [keys_pad / 16][pairs_d][16]
  auto* vp = reinterpret_cast<uint32_t*>(base + k_bytes_);  // [keys_pad / 2][dv_pad]
  auto* row = reinterpret_cast<uint16_t*>(base + k_bytes_ + v_bytes_);  // row_bytes_
  // Row j of `src` (n of them, `ld` apart) in bf16 at dst, zeros up to n_pad; past the tk rows
  // all zeros (padding keys).
  const auto bf16_row = [&](const float* src, int64_t ld, int64_t j, int64_t n, int64_t n_pad,
                            uint16_t* dst) {
    const int64_t valid = j < tk_ ? n : 0;
    if (valid > 0) convert_from_f32(src + j * ld, DType::kBF16, dst, static_cast<size_t>(n));
    std::fill(dst + valid, dst + n_pad, uint16_t{0});
  };
  // A key row in bf16 pairs, then its words scattered into its vector's columns.
  const auto* words = reinterpret_cast<const uint32_t*>(row);
  for (int64_t j = 0; j < keys_pad_; ++j) {
    bf16_row(k_h, ld_k, j, d_, 2 * pairs_d_, row);
    for (int64_t p = 0; p < pairs_d_; ++p)
      kp[(j / 16 * pairs_d_ + p) * 16 + j % 16] = words[p];
  }
  // Two value rows at a time, interleaved column by column.
  uint16_t *a = row, *b = row + dv_pad_;
  for (int64_t pp = 0; pp < keys_pad_ / 2; ++pp) {
    bf16_row(v_h, ld_v, 2 * pp, dv_, dv_pad_, a);
    bf16_row(v_h, ld_v, 2 * pp + 1, dv_, dv_pad_, b);
    uint32_t* dst = vp + pp * dv_pad_;
    for (int64_t c = 0; c < dv_pad_; ++c)
      dst[c] = static_cast<uint32_t>(a[c]) | static_cast<uint32_t>(b[c]) << 16;
  }
}

HYRT_BF16_TARGET void FlashAttentionBf16::run_rows(const float* q_h, int64_t ld_q, int64_t q0,
                                                   int64_t rows, float* out_h, int64_t ld_out,
                                                   void* scratch) const {
  char* base = static_cast<char*>(scratch);
  const auto* kp = reinterpret_cast<const uint32_t*>(base);
  const auto* vp = reinterpret_cast<const uint32_t*>(base + k_bytes_);
  char* block = base + k_bytes_ + v_bytes_ + row_bytes_;
  auto* qb = reinterpret_cast<uint32_t*>(block);                               // [kRows][pairs_d]
  auto* s = reinterpret_cast<float*>(block + q_bytes_);                        // [kRows][kKeys]
  auto* p = reinterpret_cast<uint16_t*>(block + q_bytes_ + s_bytes_);          // [kRows][kKeys]
  auto* o = reinterpret_cast<float*>(block + q_bytes_ + s_bytes_ + p_bytes_);  // [kRows][dv_pad]
  const OutputRowsFn output = output_rows_for(static_cast<int>(dv_pad_ / 16), dv_pad_ - dv_ >= 8,
                                              std::make_integer_sequence<int, 16>());
  float m[kRows], l[kRows];
  if (amx_) amx::configure_products(pairs_d_);

  fused_attention::walk(
      q0, rows, kRows, kKeys, tk_, keys_pad_, causal_,
      [&](int64_t r0, int64_t n_rows) {
        // q·scale in bf16 pairs; rows past the block's end are zero (their output is not stored).
        for (int64_t r = 0; r < kRows; ++r) {
          auto* dst = reinterpret_cast<uint16_t*>(qb + r * pairs_d_);
          if (r < n_rows)
            scaled_row_to_bf16(q_h + (r0 + r) * ld_q, d_, scale_, dst, 2 * pairs_d_);
          else
            std::fill(dst, dst + 2 * pairs_d_, uint16_t{0});
          m[r] = -INFINITY;
          l[r] = 0.0f;
        }
        std::fill(o, o + kRows * dv_pad_, 0.0f);
      },
      [&](int64_t n0, int64_t keys, const auto& valid) {
        if (amx_)
          scores_tile_amx(qb, pairs_d_, kp, n0, keys, s);
        else
          scores_tile(qb, pairs_d_, kp, n0, keys, s);
        for (int64_t r = 0; r < kRows; ++r)
          softmax_tile_row(s + r * kKeys, keys, valid(r), m[r], l[r], o + r * dv_pad_, dv_pad_,
                           p + r * kKeys);
        if (amx_)
          output_tile_amx(p, vp, dv_pad_, n0, keys, o);
        else
          output(reinterpret_cast<const uint32_t*>(p), kKeys / 2, vp + n0 / 2 * dv_pad_, keys / 2,
                 o, dv_pad_);
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

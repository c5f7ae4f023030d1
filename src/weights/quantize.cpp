#include "weights/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HYRT_QUANTIZE_AVX2 1
#endif

#include "core/alloc.h"
#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"

namespace hyrt::weights {
namespace {

constexpr float kQMax = 127.0f;

// Sums of one rounding pass over a row at scale s, in double: the squared error decides
// whether a refit step is kept, and Σq² (up to 127² · K) must be exact to be comparable.
struct RowSums {
  double err = 0;  // Σ (w − s·q)²
  double wq = 0;   // Σ w·q
  double qq = 0;   // Σ q²
};

// Largest |w| and Σw² (in double); `*bad` = index of the first non-finite value, or -1.
float absmax_row(const float* w, int64_t n, double* norm, int64_t* bad) {
  *bad = -1;
  int64_t i = 0;
  float m = 0;
  double sq = 0;
#ifdef HYRT_QUANTIZE_AVX2
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256 vm = _mm256_setzero_ps();
  __m256d sq0 = _mm256_setzero_pd(), sq1 = sq0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(w + i));
    // NaN compares false, Inf is not < Inf: either leaves a zero bit in the mask (the
    // scalar loop below then finds which element).
    if (_mm256_movemask_ps(_mm256_cmp_ps(a, inf, _CMP_LT_OQ)) != 0xFF) break;
    vm = _mm256_max_ps(vm, a);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(a));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    sq0 = _mm256_fmadd_pd(lo, lo, sq0);
    sq1 = _mm256_fmadd_pd(hi, hi, sq1);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vm);
  for (float l : lanes)
    m = std::max(m, l);
  alignas(32) double dl[4];
  _mm256_store_pd(dl, _mm256_add_pd(sq0, sq1));
  sq = (dl[0] + dl[1]) + (dl[2] + dl[3]);
#endif
  for (; i < n; ++i) {
    const float a = std::fabs(w[i]);
    if (!(a < std::numeric_limits<float>::infinity())) {
      *bad = i;
      return 0;
    }
    m = std::max(m, a);
    sq += static_cast<double>(a) * a;
  }
  *norm = sq;
  return m;
}

// q = clamp(round_half_even(w / s), ±127) for one row, with the pass's sums. Division (not
// multiplication by 1/s) keeps w/s correctly rounded and copes with subnormal scales. The
// vector and scalar paths do the same float operations (e = fma(−s, q, w)), so a row's
// result does not depend on where the vector loop ends.
RowSums round_row(const float* w, int64_t n, float s, int8_t* q) {
  RowSums r;
  int64_t i = 0;
#ifdef HYRT_QUANTIZE_AVX2
  const __m256 vs = _mm256_set1_ps(s);
  const __m256 lo = _mm256_set1_ps(-kQMax), hi = _mm256_set1_ps(kQMax);
  __m256d err0 = _mm256_setzero_pd(), err1 = err0, wq0 = err0, wq1 = err0, qq0 = err0, qq1 = err0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(w + i);
    __m256 t = _mm256_round_ps(_mm256_div_ps(x, vs), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    t = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
    const __m256 e = _mm256_fnmadd_ps(vs, t, x);
    const __m256d e_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(e));
    const __m256d e_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1));
    const __m256d x_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    const __m256d x_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    const __m256d t_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(t));
    const __m256d t_hi = _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1));
    err0 = _mm256_fmadd_pd(e_lo, e_lo, err0);
    err1 = _mm256_fmadd_pd(e_hi, e_hi, err1);
    wq0 = _mm256_fmadd_pd(x_lo, t_lo, wq0);
    wq1 = _mm256_fmadd_pd(x_hi, t_hi, wq1);
    qq0 = _mm256_fmadd_pd(t_lo, t_lo, qq0);
    qq1 = _mm256_fmadd_pd(t_hi, t_hi, qq1);
    // 8 x int32 (exact: integral values in [-127, 127]) -> 8 x int8.
    const __m256i qi = _mm256_cvtps_epi32(t);
    const __m128i q16 =
        _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), _mm_packs_epi16(q16, q16));
  }
  alignas(32) double l[4];
  auto hsum = [&](__m256d a, __m256d b) {
    _mm256_store_pd(l, _mm256_add_pd(a, b));
    return (l[0] + l[1]) + (l[2] + l[3]);
  };
  r.err = hsum(err0, err1);
  r.wq = hsum(wq0, wq1);
  r.qq = hsum(qq0, qq1);
#endif
  for (; i < n; ++i) {
    const float x = w[i];
    const float t = std::clamp(std::nearbyint(x / s), -kQMax, kQMax);
    const float e = std::fma(-s, t, x);
    r.err += static_cast<double>(e) * e;
    r.wq += static_cast<double>(x) * t;
    r.qq += static_cast<double>(t) * t;
    q[i] = static_cast<int8_t>(t);
  }
  return r;
}

struct RowResult {
  float scale = 0;
  double err = 0;   // Σ (w − s·q)² of the kept fit
  double norm = 0;  // Σ w²
};

// Fits one row; writes the chosen q into `q_out` (`q_tmp`: scratch of the same length).
RowResult fit_row(const float* w, int64_t n, int refit_iterations, int8_t* q_out, int8_t* q_tmp,
                  int64_t* bad) {
  RowResult r;
  const float m = absmax_row(w, n, &r.norm, bad);
  if (*bad >= 0) return r;
  float s = m / kQMax;
  if (!(s > 0)) {
    // All zeros — or so small that max|w|/127 underflows: store s = 0, q = 0 (exact zeros
    // back; the lost energy is below float's subnormal range).
    std::memset(q_out, 0, static_cast<size_t>(n));
    r.err = r.norm;
    return r;
  }
  int8_t* best_q = q_out;
  int8_t* other = q_tmp;
  RowSums best = round_row(w, n, s, best_q);
  float best_s = s;
  for (int it = 0; it < refit_iterations && best.qq > 0; ++it) {
    const float ls = static_cast<float>(best.wq / best.qq);
    if (!(ls > 0) || !std::isfinite(ls) || ls == best_s) break;  // converged (or degenerate)
    const RowSums next = round_row(w, n, ls, other);
    if (!(next.err < best.err)) break;  // no strict improvement: keep what we have
    best = next;
    best_s = ls;
    std::swap(best_q, other);
  }
  if (best_q != q_out) std::memcpy(q_out, best_q, static_cast<size_t>(n));
  r.scale = best_s;
  r.err = best.err;
  return r;
}

}  // namespace

QuantizedTensor quantize_per_row(const TensorView& w, int refit_iterations) {
  HYRT_CHECK(w.dtype == DType::kF32 || w.dtype == DType::kF16 || w.dtype == DType::kBF16,
             kInvalidArgument, "quantize_per_row: weight of dtype ", dtype_name(w.dtype),
             " (expected f32, f16 or bf16)");
  HYRT_CHECK(w.shape.rank() >= 2, kInvalidArgument, "quantize_per_row: weight of shape ",
             w.shape.to_string(), " has no rows (rank < 2)");
  HYRT_CHECK(refit_iterations >= 0, kInvalidArgument,
             "quantize_per_row: refit_iterations must be >= 0, got ", refit_iterations);
  const int64_t rows = w.shape[0];
  const int64_t cols = w.shape.numel() / std::max<int64_t>(rows, 1);
  QuantizedTensor out;
  out.q = Tensor(DType::kS8, w.shape, "its int8 copy");
  out.scale = Tensor(DType::kF32, Shape{rows}, "its per-row scales");
  if (rows == 0 || cols == 0) {
    if (rows) std::memset(out.scale.data(), 0, out.scale.bytes());
    return out;
  }
  std::vector<RowResult> results =
      checked_vector<RowResult>(static_cast<size_t>(rows), "its per-row quantization errors");
  const size_t elem = dtype_size(w.dtype);
  const auto* src = static_cast<const uint8_t*>(w.data);
  auto* q = out.q.as<int8_t>();
  auto* scale = out.scale.as<float>();

  std::mutex bad_mu;
  int64_t bad_row = -1, bad_col = -1;
  // Rows are independent; a few KB of scratch per chunk. The grain keeps chunks at roughly
  // 64K elements so small tensors do not pay for a thread team.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / cols);
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> row_f32 = checked_vector<float>(static_cast<size_t>(cols), "a row in f32");
    std::vector<uint16_t> row_u16;
    std::vector<int8_t> q_tmp = checked_vector<int8_t>(static_cast<size_t>(cols), "a row in int8");
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* p = src + static_cast<size_t>(r * cols) * elem;
      const float* row = row_f32.data();
      if (w.dtype == DType::kF32) {
        // Used in place when aligned (the common case for hyrt-written files).
        if (reinterpret_cast<uintptr_t>(p) % alignof(float) == 0)
          row = reinterpret_cast<const float*>(p);
        else
          std::memcpy(row_f32.data(), p, static_cast<size_t>(cols) * 4);
      } else if (reinterpret_cast<uintptr_t>(p) % alignof(uint16_t) == 0) {
        convert_to_f32(w.dtype, p, row_f32.data(), static_cast<size_t>(cols));
      } else {
        checked_resize(row_u16, static_cast<size_t>(cols), "an aligned copy of a row");
        std::memcpy(row_u16.data(), p, static_cast<size_t>(cols) * 2);
        convert_to_f32(w.dtype, row_u16.data(), row_f32.data(), static_cast<size_t>(cols));
      }
      int64_t bad = -1;
      results[r] = fit_row(row, cols, refit_iterations, q + r * cols, q_tmp.data(), &bad);
      if (bad >= 0) {
        // No exceptions inside the OpenMP team: record the first bad row, throw after.
        std::lock_guard<std::mutex> lock(bad_mu);
        if (bad_row < 0 || r < bad_row) bad_row = r, bad_col = bad;
        return;
      }
      scale[r] = results[r].scale;
    }
  });
  if (bad_row >= 0) {
    float v;
    const uint8_t* p = src + static_cast<size_t>(bad_row * cols + bad_col) * elem;
    if (w.dtype == DType::kF32) {
      std::memcpy(&v, p, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, p, 2);
      v = w.dtype == DType::kF16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
    fail(ErrorCode::kInvalidArgument, "quantize_per_row: weight of shape ", w.shape.to_string(),
         " has a non-finite value (", v, ") in row ", bad_row, ", column ", bad_col);
  }
  // Summed in row order: the same result at any thread count.
  double err = 0, norm = 0;
  for (const RowResult& r : results) {
    err += r.err;
    norm += r.norm;
    if (r.norm > 0)
      out.worst_row_rel_error = std::max(out.worst_row_rel_error, std::sqrt(r.err / r.norm));
  }
  out.rel_error = norm > 0 ? std::sqrt(err / norm) : 0.0;
  return out;
}

Tensor dequantize_per_row(const TensorView& q, const TensorView& scale) {
  HYRT_CHECK(q.dtype == DType::kS8 && q.shape.rank() >= 2, kInvalidArgument,
             "dequantize_per_row: expected an s8 tensor of rank >= 2, got ", dtype_name(q.dtype),
             q.shape.to_string());
  const int64_t rows = q.shape[0];
  HYRT_CHECK(scale.dtype == DType::kF32 && scale.shape == Shape{rows}, kInvalidArgument,
             "dequantize_per_row: scale must be f32 [", rows, "], got ", dtype_name(scale.dtype),
             scale.shape.to_string());
  Tensor out(DType::kF32, q.shape, "a dequantized (f32) weight");
  const int64_t cols = rows ? q.shape.numel() / rows : 0;
  const auto* qs = static_cast<const int8_t*>(q.data);
  auto* o = out.as<float>();
  for (int64_t r = 0; r < rows; ++r) {
    float s;
    std::memcpy(&s, static_cast<const uint8_t*>(scale.data) + r * 4, 4);
    for (int64_t k = 0; k < cols; ++k)
      o[r * cols + k] = s * static_cast<float>(qs[r * cols + k]);
  }
  return out;
}

bool should_quantize(std::string_view name, const Shape& shape) {
  constexpr std::string_view kWeight = ".weight";
  if (shape.rank() < 2) return false;
  if (!name.ends_with(kWeight)) return false;
  if (name.find(".embeddings.") != std::string_view::npos) return false;
  // The module's own name (the segment before ".weight"): norm, norm1, layer_norm2,
  // group_norm, conv_norm_out, final_layer_norm, ...
  const std::string_view module = name.substr(0, name.size() - kWeight.size());
  const size_t dot = module.rfind('.');
  const std::string_view leaf = dot == std::string_view::npos ? module : module.substr(dot + 1);
  if (leaf.find("norm") != std::string_view::npos) return false;
  // Layers whose error does not average out (measured; see the header).
  if (leaf == "conv_shortcut" || leaf == "proj_in" || leaf == "proj_out" ||
      leaf == "time_emb_proj" || module.find("time_embedding.") != std::string_view::npos)
    return false;
  // Pixel/latent-space boundary layers (see the header).
  if (shape[0] <= 8 || shape[1] <= 8) return false;
  return true;
}

bool name_matches_pattern(std::string_view pattern, std::string_view name) {
  if (pattern.find_first_of("*?") == std::string_view::npos)
    return name.find(pattern) != std::string_view::npos;
  // Iterative glob match with one backtrack point (the last '*'): linear in practice.
  size_t p = 0, n = 0, star = std::string_view::npos, star_n = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p, ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_n = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++star_n;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*')
    ++p;
  return p == pattern.size();
}

bool QuantizePolicy::quantize(std::string_view name, const Shape& shape) const {
  if (!should_quantize(name, shape)) return false;
  for (const auto& k : keep)
    if (name_matches_pattern(k, name)) return false;
  return true;
}

}  // namespace hyrt::weights

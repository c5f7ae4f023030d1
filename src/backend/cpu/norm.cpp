// kGroupNorm and kLayerNorm over channels-last data.
//
// Group norm, x [B, P, C] (P = all positions between batch and channels), G groups of
// C/G channels: statistics over P · C/G values per (b, g). In NHWC a group is a short
// run of channels in every pixel, so instead of walking groups we stream pixels and keep
// per-channel sums (Σx, Σx²) — threads take disjoint pixel ranges and merge — and fold
// channels into groups at the end. The sums are of x − k_c, k_c the channel's value at the
// first pixel (a shift near the data, so the squares do not dwarf the variance), accumulated
// in f32 over runs of kStatsRun pixels (vectorised; ~4e-6 relative error per run) and added
// up in double, where E[x²] − E[x]² loses nothing that matters for activations (|mean| ≲
// 10³·std): the 1e-5 golden tolerance holds. (Per element in double it took twice as long:
// the VAE decoder's group norms were ~20 % of its time.) The second pass applies
// y = x·a_c + b_c with a_c = γ_c·rstd_g, b_c = β_c − mean_g·a_c (and SiLU when fused), 16 at a
// time where the CPU has AVX-512. Both passes read the whole input before any output is
// written for a batch, so running in place (out == x) is correct.
//
// Layer norm, x [R, C]: one row per task, mean then Σ(x − mean)² (f32 lanes summed in double,
// lane_sum), both over the row before writing it (in-place safe).
#include <algorithm>
#include <cmath>
#include <mutex>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/int8_common.h"
#include "backend/cpu/vec_math.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

constexpr int64_t kStatsRun = 64;

#if defined(__GNUC__) && !defined(__clang__)  // GCC bug 105593, as in attention.cpp
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// scale_shift_row's AVX-512 form: SiLU as t / (1 + e^-t) with exp_avx512 (inf for t < -88.7,
// so y = t / inf = -0 as the scalar form gives).
__attribute__((target("avx512f"))) void scale_shift_row_avx512(const float* x, const float* a,
                                                               const float* b, float* y, int64_t c,
                                                               bool silu) {
  const __m512 one = _mm512_set1_ps(1.0f);
  int64_t i = 0;
  for (; i < c; i += 16) {
    const __mmask16 m =
        c - i >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (c - i)) - 1u);
    const __m512 t =
        _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, a + i),
                        _mm512_maskz_loadu_ps(m, b + i));
    __m512 v = t;
    if (silu) {
      const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), t));
      v = _mm512_div_ps(t, _mm512_add_ps(one, e));
    }
    _mm512_mask_storeu_ps(y + i, m, v);
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// y = x·a + b for one row of C channels, optionally followed by SiLU.
void scale_shift_row(const float* x, const float* a, const float* b, float* y, int64_t c,
                     bool silu) {
  static const bool avx512 = cpu_has_avx512();
  if (avx512) return scale_shift_row_avx512(x, a, b, y, c, silu);
  int64_t i = 0;
  if (silu) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= c; i += 8) {
      const __m256 t =
          _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
      const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), t));
      _mm256_storeu_ps(y + i, _mm256_div_ps(t, _mm256_add_ps(one, e)));
    }
    for (; i < c; ++i) {
      const float t = x[i] * a[i] + b[i];
      y[i] = t / (1.0f + std::exp(-t));
    }
  } else {
    for (; i < c; ++i)
      y[i] = x[i] * a[i] + b[i];
  }
}

class GroupNormKernel final : public Kernel {
 public:
  explicit GroupNormKernel(const PrepareContext& ctx) : params_(ctx) {
    const Shape& x = ctx.input(0).shape;
    const auto& attrs = ctx.node.attr<ir::NormAttrs>();
    batch_ = x[0];
    channels_ = x.dim(-1);
    positions_ = x.numel() / (batch_ * channels_);
    groups_ = attrs.groups;
    eps_ = attrs.eps;
    silu_ = attrs.fuse_silu;
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<const float>();
    const float* gamma = params_.get(inputs, 1);
    const float* beta = params_.get(inputs, 2);
    float* y = output.as<float>();
    const int64_t c = channels_, per_group = channels_ / groups_;
    std::vector<float> a(c), b(c);
    std::vector<double> sum(c), sum_sq(c);
    std::mutex merge;
    for (int64_t n = 0; n < batch_; ++n) {
      const float* xb = x + n * positions_ * c;  // [P, C]
      float* yb = y + n * positions_ * c;
      std::fill(sum.begin(), sum.end(), 0.0);
      std::fill(sum_sq.begin(), sum_sq.end(), 0.0);
      const float* shift = xb;  // k_c: the first pixel
      parallel_for(positions_, kStatsRun, [&](int64_t p0, int64_t p1) {
        std::vector<double> s(c, 0.0), s2(c, 0.0);
        std::vector<float> r(c), r2(c);
        for (int64_t run = p0; run < p1; run += kStatsRun) {
          std::fill(r.begin(), r.end(), 0.0f);
          std::fill(r2.begin(), r2.end(), 0.0f);
          for (int64_t p = run; p < std::min(p1, run + kStatsRun); ++p) {
            const float* row = xb + p * c;
            for (int64_t i = 0; i < c; ++i) {
              const float v = row[i] - shift[i];
              r[i] += v;
              r2[i] += v * v;
            }
          }
          for (int64_t i = 0; i < c; ++i) {
            s[i] += r[i];
            s2[i] += r2[i];
          }
        }
        std::lock_guard<std::mutex> lock(merge);
        for (int64_t i = 0; i < c; ++i) {
          sum[i] += s[i];
          sum_sq[i] += s2[i];
        }
      });
      // Undo the shift per channel: Σx = S1 + P·k, Σx² = S2 + 2k·S1 + P·k².
      const double pixels = static_cast<double>(positions_);
      for (int64_t i = 0; i < c; ++i) {
        const double k = shift[i];
        sum_sq[i] += 2.0 * k * sum[i] + pixels * k * k;
        sum[i] += pixels * k;
      }
      const double count = static_cast<double>(positions_ * per_group);
      for (int64_t g = 0; g < groups_; ++g) {
        double gs = 0, gs2 = 0;
        for (int64_t i = g * per_group; i < (g + 1) * per_group; ++i) {
          gs += sum[i];
          gs2 += sum_sq[i];
        }
        const double mean = gs / count;
        const double var = std::max(0.0, gs2 / count - mean * mean);
        const double rstd = 1.0 / std::sqrt(var + eps_);
        for (int64_t i = g * per_group; i < (g + 1) * per_group; ++i) {
          a[i] = static_cast<float>(gamma[i] * rstd);
          b[i] = static_cast<float>(beta[i] - mean * gamma[i] * rstd);
        }
      }
      parallel_for(positions_, 64, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p)
          scale_shift_row(xb + p * c, a.data(), b.data(), yb + p * c, c, silu_);
      });
    }
  }

 private:
  F32Inputs params_;
  int64_t batch_, channels_, positions_, groups_;
  float eps_;
  bool silu_;
};

// Σ (v[i] − m) (square = false) or Σ (v[i] − m)² (square = true) over a row, in 16 f32 lanes —
// each lane a separate sum, so the compiler vectorises without reordering a single sum — added
// up in double. A lane sums C/16 terms (≤ 80 for SD's widths: ~5e-6 relative error), where a
// sum per element in double was one serial add chain: the layer norms were ~6 % of the host
// UNet step.
double lane_sum(const float* v, int64_t n, float m, bool square) {
  constexpr int kLanes = 16;
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float d = v[i + l] - m;
      acc[l] += square ? d * d : d;
    }
  double s = 0;
  for (float a : acc)
    s += a;
  for (; i < n; ++i) {
    const double d = static_cast<double>(v[i]) - m;
    s += square ? d * d : d;
  }
  return s;
}

class LayerNormKernel final : public Kernel {
 public:
  explicit LayerNormKernel(const PrepareContext& ctx) : params_(ctx) {
    const Shape& x = ctx.input(0).shape;
    channels_ = x.dim(-1);
    rows_ = x.numel() / channels_;
    eps_ = ctx.node.attr<ir::NormAttrs>().eps;
    quantize_ = ctx.node.attr<ir::NormAttrs>().quantize_output;
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<const float>();  // [R, C]
    const float* gamma = params_.get(inputs, 1);
    const float* beta = params_.get(inputs, 2);
    const int64_t c = channels_;
    // s8rows (core/dtype.h): the values [R, C], then R row scales.
    auto* q = output.as<int8_t>();
    float* scales = quantize_ ? s8rows_scales(output) : nullptr;
    parallel_for(rows_, 4, [&](int64_t r0, int64_t r1) {
      std::vector<float> a(c), b(c), normalised(quantize_ ? c : 0);
      for (int64_t r = r0; r < r1; ++r) {
        const float* row = x + r * c;
        // Shifted by the row's first value, so a large mean does not swamp the f32 lanes.
        const double mean = row[0] + lane_sum(row, c, row[0], false) / static_cast<double>(c);
        const double s2 = lane_sum(row, c, static_cast<float>(mean), true);
        const double rstd = 1.0 / std::sqrt(s2 / static_cast<double>(c) + eps_);
        for (int64_t i = 0; i < c; ++i) {
          a[i] = static_cast<float>(gamma[i] * rstd);
          b[i] = static_cast<float>(beta[i] - mean * gamma[i] * rstd);
        }
        if (!quantize_) {
          scale_shift_row(row, a.data(), b.data(), output.as<float>() + r * c, c, false);
          continue;
        }
        scale_shift_row(row, a.data(), b.data(), normalised.data(), c, false);
        quantize_rows_s8(normalised.data(), 1, c, q + r * c, scales + r);
      }
    });
  }

 private:
  F32Inputs params_;
  int64_t channels_, rows_;
  float eps_;
  bool quantize_ = false;  // the output is s8rows (ir::NormAttrs::quantize_output)
};

}  // namespace

std::unique_ptr<Kernel> make_norm_kernel(const PrepareContext& ctx) {
  if (ctx.node.op == ir::OpKind::kGroupNorm) return std::make_unique<GroupNormKernel>(ctx);
  return std::make_unique<LayerNormKernel>(ctx);
}

}  // namespace hyrt::backend::cpu

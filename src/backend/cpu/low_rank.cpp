// A linear's low-rank epilogue term (ir::GemmEpilogue::low_rank: a LoRA's side path folded
// into the layer it adapts): y [rows, cols] += h [rows, R] · up [cols, R]ᵀ with h = x · downᵀ
// (one oneDNN product into the workspace: f32, or s8 from the W8A8 kernel's quantized x),
// added to the layer's result while its rows are in cache, before the activation and the
// residual.
//
// Why by hand: as its own GEMM the side product costs little arithmetic (R = 8–128) but
// writes a whole [rows, cols] f32 tensor that the add then reads back with the layer's output
// and writes again — on 2 cores that memory traffic, not the products, was most of a rank-32
// LoRA's cost (notes in bench/results/README.md, issue 17). Inside the epilogue the term costs
// only its FMAs: 8 rows × 32 columns at a time, the accumulators in registers (AVX-512; 8 × 8
// with AVX2) — or, with bf16 products on a CPU with AMX, 16 rows at a time on tiles, y's rows
// the accumulators (add_term_amx).
#include <immintrin.h>

#include <algorithm>

#include "backend/cpu/amx_tiles.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/int8_common.h"
#include "backend/cpu/vec_math.h"
#include "core/env.h"
#include "core/half.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

// Rows the vector loops hold in registers at once (kLowRankRowGroup is two of these: the tiles'
// 16).
constexpr int kRows = 8;
static_assert(kLowRankRowGroup % kRows == 0 && kLowRankRowGroup == 16);

// y rows [r0, r0 + nr) (nr ≤ 8) += h · up_t, columns [0, cols): 32 columns at a time, so each
// broadcast of h serves two FMAs (8 rows × 2 vectors = 16 accumulators; per k, 2 + 8 loads for
// 16 FMAs, which keeps the FMA units rather than the loads the limit).
__mmask16 tail_mask(int64_t left) {
  return left >= 16 ? 0xffff : left <= 0 ? 0 : static_cast<__mmask16>((1u << left) - 1);
}

// y's rows [0, nr) (ld cols), 32 columns from y: += a0 (the first 16, mask m0), a1 (m1).
__attribute__((target("avx512f"))) inline void add_to_rows(float* y, int nr, int64_t cols,
                                                           __mmask16 m0, __mmask16 m1,
                                                           const __m512* a0, const __m512* a1) {
  for (int i = 0; i < nr; ++i) {
    float* yr = y + i * cols;
    _mm512_mask_storeu_ps(yr, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, yr), a0[i]));
    if (m1)
      _mm512_mask_storeu_ps(yr + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, yr + 16), a1[i]));
  }
}

__attribute__((target("avx512f"))) void add_term_avx512(float* y, int64_t r0, int nr, int64_t cols,
                                                        const LowRankTerm& t) {
  const float* h[kRows];
  for (int i = 0; i < kRows; ++i)  // rows past nr repeat the last one (computed, not stored)
    h[i] = t.h + (r0 + std::min(i, nr - 1)) * t.rank;
  for (int64_t c = 0; c < cols; c += 32) {
    const __mmask16 m0 = tail_mask(cols - c), m1 = tail_mask(cols - c - 16);
    __m512 a0[kRows], a1[kRows];
    for (int i = 0; i < kRows; ++i)
      a0[i] = a1[i] = _mm512_setzero_ps();
    const float* u = t.up_t + c;
    for (int64_t k = 0; k < t.rank; ++k, u += cols) {
      const __m512 u0 = _mm512_maskz_loadu_ps(m0, u);
      const __m512 u1 = _mm512_maskz_loadu_ps(m1, u + 16);
      for (int i = 0; i < kRows; ++i) {
        const __m512 hk = _mm512_set1_ps(h[i][k]);
        a0[i] = _mm512_fmadd_ps(hk, u0, a0[i]);
        a1[i] = _mm512_fmadd_ps(hk, u1, a1[i]);
      }
    }
    add_to_rows(y + r0 * cols + c, nr, cols, m0, m1, a0, a1);
  }
}

// As add_term_avx512 with bf16 pairs: each dot-product instruction does two ranks, so half the
// instructions; h's pairs for the 8 rows are rounded once per row group.
constexpr int64_t kMaxBf16Pairs = 128;  // ranks up to 256 (stacked LoRAs beyond: f32)

// One row of h as bf16 pairs (element 2p in the low half, 2p + 1 in the high; 0 past the rank).
void round_pairs(const float* h, int64_t rank, uint32_t* pairs_out) {
  for (int64_t p = 0; p < (rank + 1) / 2; ++p) {
    const uint32_t lo = f32_to_bf16(h[2 * p]);
    const uint32_t hi = 2 * p + 1 < rank ? f32_to_bf16(h[2 * p + 1]) : 0;
    pairs_out[p] = lo | hi << 16;
  }
}

__attribute__((target("avx512f,avx512bf16"))) void add_term_bf16(float* y, int64_t r0, int nr,
                                                                 int64_t cols,
                                                                 const LowRankTerm& t) {
  const int64_t pairs = (t.rank + 1) / 2;
  uint32_t hp[kRows][kMaxBf16Pairs];
  for (int i = 0; i < kRows; ++i)
    round_pairs(t.h + (r0 + std::min(i, nr - 1)) * t.rank, t.rank, hp[i]);
  for (int64_t c = 0; c < cols; c += 32) {
    const __mmask16 m0 = tail_mask(cols - c), m1 = tail_mask(cols - c - 16);
    __m512 a0[kRows], a1[kRows];
    for (int i = 0; i < kRows; ++i)
      a0[i] = a1[i] = _mm512_setzero_ps();
    const uint32_t* u = t.up_pairs + c;
    for (int64_t p = 0; p < pairs; ++p, u += cols) {
      const __m512bh u0 = (__m512bh)_mm512_maskz_loadu_epi32(m0, u);
      const __m512bh u1 = (__m512bh)_mm512_maskz_loadu_epi32(m1, u + 16);
      for (int i = 0; i < kRows; ++i) {
        const __m512bh hk = (__m512bh)_mm512_set1_epi32(static_cast<int>(hp[i][p]));
        a0[i] = _mm512_dpbf16_ps(a0[i], hk, u0);
        a1[i] = _mm512_dpbf16_ps(a1[i], hk, u1);
      }
    }
    add_to_rows(y + r0 * cols + c, nr, cols, m0, m1, a0, a1);
  }
}

// As add_term_bf16 on AMX tiles, 16 rows (all present) at a time: y's rows are the
// accumulators themselves (loaded, tdpbf16ps'd, stored back), the h pairs the A tiles, and the up
// pairs already the B tiles' layout ([pair][column] words, a row per pair). Tiles as
// amx::configure_products(pairs): 0..3 accumulate 64 columns, 4/5 a full group of 16 pairs, 6/7
// the last shorter one. cols a multiple of 16.
HYRT_AMX_ACCUMULATE_FN(accumulate_full_pairs, DPBF16PS, 4, 5)
HYRT_AMX_ACCUMULATE_FN(accumulate_last_pairs, DPBF16PS, 6, 7)

void add_term_amx(float* y, int64_t r0, int64_t cols, const LowRankTerm& t) {
  const int64_t pairs = (t.rank + 1) / 2, full = pairs / 16, rem = pairs % 16;
  alignas(64) uint32_t hp[kLowRankRowGroup][kMaxBf16Pairs];
  for (int64_t i = 0; i < kLowRankRowGroup; ++i)
    round_pairs(t.h + (r0 + i) * t.rank, t.rank, hp[i]);
  const int64_t y_stride = cols * 4, up_stride = cols * 4, hp_stride = kMaxBf16Pairs * 4;
  float* yr = y + r0 * cols;
  for (int64_t c = 0; c < cols; c += 64) {
    const int n = static_cast<int>(std::min<int64_t>(4, (cols - c) / 16));
    amx::load_accumulators(n, yr + c, y_stride);
    for (int64_t g = 0; g < full; ++g) {
      HYRT_AMX_LOAD(4, &hp[0][16 * g], hp_stride);
      const uint32_t* u = t.up_pairs + 16 * g * cols + c;
      for (int a = 0; a < n; ++a)
        accumulate_full_pairs(a, u + 16 * a, up_stride);
    }
    if (rem > 0) {
      HYRT_AMX_LOAD(6, &hp[0][16 * full], hp_stride);
      const uint32_t* u = t.up_pairs + 16 * full * cols + c;
      for (int a = 0; a < n; ++a)
        accumulate_last_pairs(a, u + 16 * a, up_stride);
    }
    amx::store_accumulators(n, yr + c, y_stride);
  }
}

void add_term_avx2(float* y, int64_t r0, int nr, int64_t cols, const LowRankTerm& t) {
  const float* h[kRows];
  for (int i = 0; i < kRows; ++i)
    h[i] = t.h + (r0 + std::min(i, nr - 1)) * t.rank;
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    __m256 acc[kRows];
    for (auto& a : acc)
      a = _mm256_setzero_ps();
    for (int64_t k = 0; k < t.rank; ++k) {
      const __m256 u = _mm256_loadu_ps(t.up_t + k * cols + c);
      for (int i = 0; i < kRows; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(h[i][k]), u, acc[i]);
    }
    for (int i = 0; i < nr; ++i) {
      float* yr = y + (r0 + i) * cols + c;
      _mm256_storeu_ps(yr, _mm256_add_ps(_mm256_loadu_ps(yr), acc[i]));
    }
  }
  for (; c < cols; ++c)
    for (int i = 0; i < nr; ++i) {
      float s = 0.0f;
      for (int64_t k = 0; k < t.rank; ++k)
        s += h[i][k] * t.up_t[k * cols + c];
      y[(r0 + i) * cols + c] += s;
    }
}

}  // namespace

LowRankRows::LowRankRows(const GemmEpilogueArgs& epilogue, int64_t cols)
    : epilogue_(epilogue), cols_(cols) {
  const LowRankTerm& t = epilogue.low_rank;
  // bf16 pairs on tiles where the CPU has them (HYRT_CPU_LOW_RANK=vector keeps the AVX-512
  // loops, for comparison) and whole 16-column tiles cover the columns.
  static const bool vector_only = env_is("HYRT_CPU_LOW_RANK", "vector");
  tiles_ = t.h && t.up_pairs && cols % 16 == 0 && !vector_only && amx::tiles_usable();
  if (tiles_) amx::configure_products((t.rank + 1) / 2);
}

LowRankRows::~LowRankRows() {
  if (tiles_) amx::release();
}

void LowRankRows::finish(float* y, int64_t r0, int64_t r1) {
  const GemmEpilogueArgs& epilogue = epilogue_;
  const int64_t cols = cols_;  // (short names for the loop below)
  const bool avx512 = cpu_has_avx512();
  for (int64_t r = r0; r < r1;) {
    // A whole tile group of rows on tiles; otherwise (and the last rows) 8 at a time.
    const bool on_tiles = tiles_ && r1 - r >= kLowRankRowGroup;
    const int nr = on_tiles ? static_cast<int>(kLowRankRowGroup)
                            : static_cast<int>(std::min<int64_t>(kRows, r1 - r));
    if (epilogue.low_rank.h) {
      if (on_tiles)
        add_term_amx(y, r, cols, epilogue.low_rank);
      else if (epilogue.low_rank.up_pairs)
        add_term_bf16(y, r, nr, cols, epilogue.low_rank);
      else if (avx512)
        add_term_avx512(y, r, nr, cols, epilogue.low_rank);
      else
        add_term_avx2(y, r, nr, cols, epilogue.low_rank);
    }
    if (epilogue.activation != ir::Activation::kNone || epilogue.residual)
      activate_and_add(y + r * cols, epilogue.residual ? epilogue.residual + r * cols : nullptr,
                       nr * cols, epilogue.activation);
    r += nr;
  }
}

void finish_low_rank_rows(float* y, int64_t r0, int64_t r1, int64_t cols,
                          const GemmEpilogueArgs& epilogue) {
  LowRankRows(epilogue, cols).finish(y, r0, r1);
}

void apply_gemm_epilogue_rows(float* y, int64_t rows, int64_t cols,
                              const GemmEpilogueArgs& epilogue) {
  if (!epilogue.low_rank.h) {
    apply_gemm_epilogue(y, rows * cols, epilogue);
    return;
  }
  const int64_t groups = (rows + kLowRankRowGroup - 1) / kLowRankRowGroup;
  parallel_for(groups, 1, [&](int64_t g0, int64_t g1) {
    finish_low_rank_rows(y, g0 * kLowRankRowGroup, std::min(rows, g1 * kLowRankRowGroup), cols,
                         epilogue);
  });
}

LowRankStage::LowRankStage(const PrepareContext& ctx, FloatPrecision precision, bool s8_down)
    : s8_down_(s8_down) {
  const ir::Node& node = ctx.node;
  if (!node.epilogue().low_rank) return;
  const auto index_of = [&](ir::ValueId v) {
    return static_cast<int>(std::find(node.inputs.begin(), node.inputs.end(), v) -
                            node.inputs.begin());
  };
  down_index_ = index_of(node.gemm_low_rank_down());
  up_index_ = index_of(node.gemm_low_rank_up());
  const Shape& up = ctx.input(static_cast<size_t>(up_index_)).shape;  // [cols, rank]
  cols_ = up[0];
  rank_ = up[1];
  k_ = ctx.input(static_cast<size_t>(down_index_)).shape[1];
  m_ = ctx.input(0).shape.numel() / k_;
  bf16_ = precision == FloatPrecision::kBF16 && (rank_ + 1) / 2 <= kMaxBf16Pairs;
  GemmKey key;
  key.m = m_;
  key.n = rank_;
  key.k = k_;
  key.a_type = key.w_type = s8_down_ ? DType::kS8 : DType::kF32;
  key.out_type = s8_down_ ? DType::kS32 : DType::kF32;
  key.w_transposed = true;
  // f32: the down read in its stored order; s8: packed at each run (oneDNN's s8 layouts carry
  // the compensation VNNI needs, which its reorder computes).
  down_ = chunked_matmul(ctx.cache, key, ir::GemmEpilogue{}, node.name + " low-rank down",
                         gemm_rows_per_sample(ctx.input(0).shape, k_), !s8_down_);
  // h, then up (f32: rank × cols floats; bf16: ceil(rank / 2) × cols pairs), then a 16-bit
  // down widened, then (s8) the quantized down, its scales and its packed form.
  up_at_ = align_up(static_cast<size_t>(m_ * rank_) * 4);
  const int64_t up_words = bf16_ ? (rank_ + 1) / 2 * cols_ : rank_ * cols_;
  down_at_ = up_at_ + align_up(static_cast<size_t>(up_words) * 4);
  const bool widen_down = ctx.input(static_cast<size_t>(down_index_)).dtype != DType::kF32;
  size_t end = down_at_ + (widen_down ? align_up(static_cast<size_t>(rank_ * k_) * 4) : 0);
  if (s8_down_) {
    const dnnl::memory::desc packed = down_.chunk->pd.weights_desc();
    const dnnl::memory::desc stored({k_, rank_}, dnnl::memory::data_type::s8,
                                    dnnl::memory::format_tag::ba);
    pack_down_ =
        dnnl::reorder(dnnl::reorder::primitive_desc(dnnl_engine(), stored, dnnl_engine(), packed));
    down_s8_at_ = end;
    down_scale_at_ = down_s8_at_ + align_up(static_cast<size_t>(rank_ * k_));
    down_packed_at_ = down_scale_at_ + align_up(static_cast<size_t>(rank_) * 4);
    end = down_packed_at_ + align_up(packed.get_size());
  }
  workspace_ = KernelWorkspace(end, "low-rank term");
}

void LowRankStage::prepare_run(std::span<const TensorView> inputs, GemmEpilogueArgs* epilogue,
                               const int8_t* xq, const float* x_row_scales) {
  if (!active()) return;
  const TensorView& down = inputs[static_cast<size_t>(down_index_)];
  const TensorView& up = inputs[static_cast<size_t>(up_index_)];
  const auto readable = [](const TensorView& v, int64_t n) {
    return v.numel() == n && v.data != nullptr &&
           (v.dtype == DType::kF32 || v.dtype == DType::kF16 || v.dtype == DType::kBF16);
  };
  HYRT_CHECK(
      readable(down, rank_ * k_) && readable(up, rank_ * cols_) && inputs[0].numel() == m_ * k_,
      kInvalidArgument, "linear: the low-rank term's down [", rank_, ", ", k_, "] and up [", cols_,
      ", ", rank_, "] are not bound as f32/f16/bf16");
  auto* base = static_cast<uint8_t*>(workspace_.get());
  auto* h = reinterpret_cast<float*>(base);
  // h = x · downᵀ, the down read in its stored [R, K] order (`ba`).
  const float* d = down.as<const float>();
  if (down.dtype != DType::kF32) {
    auto* wide = reinterpret_cast<float*>(base + down_at_);
    convert_to_f32(down.dtype, down.data, wide, static_cast<size_t>(rank_ * k_));
    d = wide;
  }
  if (s8_down_) {
    HYRT_CHECK(xq && x_row_scales, kInvalidArgument,
               "linear: the low-rank term's s8 down needs the quantized x");
    auto* dq = reinterpret_cast<int8_t*>(base + down_s8_at_);
    auto* d_scale = reinterpret_cast<float*>(base + down_scale_at_);
    void* packed = base + down_packed_at_;
    quantize_rows_s8(d, rank_, k_, dq, d_scale);
    const dnnl::memory::desc packed_desc = down_.chunk->pd.weights_desc();
    dnnl::memory stored_mem(
        dnnl::memory::desc({k_, rank_}, dnnl::memory::data_type::s8, dnnl::memory::format_tag::ba),
        dnnl_engine(), dq);
    dnnl::memory packed_mem(packed_desc, dnnl_engine(), packed);
    pack_down_.execute(dnnl_stream(), stored_mem, packed_mem);
    dnnl_stream().wait();
    // acc s32 [M, R] in h's bytes, rewritten there as f32: acc · (x scale · down scale).
    down_.for_each_chunk(m_, [&](int64_t r0, int64_t, const MatmulProgram& p) {
      execute_packed(p.pd, p.primitive, const_cast<int8_t*>(xq) + r0 * k_, h + r0 * rank_,
                     packed_desc, packed, nullptr);
    });
    dequant_epilogue<int32_t>(h, m_, rank_, x_row_scales, 0.0f, d_scale, nullptr);
  } else {
    const dnnl::memory::desc layout = down_.chunk->pd.weights_desc();
    down_.for_each_chunk(m_, [&](int64_t r0, int64_t, const MatmulProgram& p) {
      execute_packed(p.pd, p.primitive, static_cast<float*>(inputs[0].data) + r0 * k_,
                     h + r0 * rank_, layout, d, nullptr);
    });
  }
  // up [cols, rank] -> [rank, cols] (f32) or [rank / 2, cols] bf16 pairs; blocks of columns
  // per thread.
  void* laid = base + up_at_;
  parallel_for(cols_, 256, [&](int64_t c0, int64_t c1) {
    float row[2 * kMaxBf16Pairs + 1];
    for (int64_t c = c0; c < c1; ++c) {
      const size_t at = static_cast<size_t>(c * rank_);
      for (int64_t k0 = 0; k0 < rank_; k0 += 2 * kMaxBf16Pairs) {
        const int64_t nk = std::min<int64_t>(2 * kMaxBf16Pairs, rank_ - k0);
        if (up.dtype == DType::kF32)
          std::copy_n(up.as<const float>() + at + k0, nk, row);
        else
          convert_to_f32(up.dtype, static_cast<const uint16_t*>(up.data) + at + k0, row,
                         static_cast<size_t>(nk));
        if (bf16_) {       // one block: rank <= 2 · kMaxBf16Pairs
          row[nk] = 0.0f;  // an odd rank's missing partner
          for (int64_t p = 0; p < (nk + 1) / 2; ++p)
            static_cast<uint32_t*>(laid)[p * cols_ + c] =
                static_cast<uint32_t>(f32_to_bf16(row[2 * p])) |
                static_cast<uint32_t>(f32_to_bf16(row[2 * p + 1])) << 16;
        } else {
          for (int64_t k = 0; k < nk; ++k)
            static_cast<float*>(laid)[(k0 + k) * cols_ + c] = row[k];
        }
      }
    }
  });
  epilogue->low_rank = {h, bf16_ ? nullptr : static_cast<const float*>(laid),
                        bf16_ ? static_cast<const uint32_t*>(laid) : nullptr, rank_};
}

}  // namespace hyrt::backend::cpu

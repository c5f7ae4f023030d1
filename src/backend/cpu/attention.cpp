// kAttention: out = softmax(q kᵀ · scale [+ causal mask]) v, per batch and head.
//   q [B, Tq, H·D], k [B, Tk, H·D], v [B, Tk, H·Dv] -> out [B, Tq, H·Dv]
//
// Memory: SD 1.5 at 512² has Tq = Tk = 4096, so one head's full score matrix is 64 MiB
// and all heads' 512 MiB. We never build it: the work is split into tiles of (batch, head,
// block of `block_rows` queries); a thread computes one tile's scores against all keys
// into its own scratch S [block_rows, Tk], turns them into probabilities in place and
// multiplies by V straight into the output. Per-thread scratch is block_rows · Tk · 4
// bytes, block_rows chosen so that this stays near 2 MiB: Tk = 4096 -> 128 rows; Tk = 77
// -> 256 rows = 77 KiB. (Measured at 4096x4096x8x40 on 2 AVX-512 cores with 2 MiB L2:
// 0.5 MiB 145 ms, 1 MiB 143 ms, 2 MiB 126 ms, 4 MiB 130 ms — bigger blocks make the
// k = 40 score GEMMs more efficient until the scores fall out of cache.)
//
// A tile is (batch, head, a run of query blocks): its thread first copies the head's keys,
// transposed, into K_hᵀ [D, Tk] and its values into V_h [Tk, Dv] (dense, in its scratch),
// then for each query block runs two oneDNN matmuls on dense operands:
//   scores  S [m, Tk]  = Q_blk [m, D] (row stride H·D) × K_hᵀ [D, Tk]
//   output  O [m, Dv]  = P [m, Tk] × V_h [Tk, Dv], O row stride H·Dv
// (Reading K and V through strided views instead made oneDNN re-gather them for every
// query block: measured slower.) A head's blocks are split into several tiles only when
// there are too few heads to keep every thread busy. Tiles run in parallel on the OpenMP
// team, each matmul single-threaded inside its tile (the primitives are created with one
// OpenMP thread so they partition work for one).
//
// Softmax: the scale is applied while finding the row maximum, exp(s − max) is summed in
// f32 (terms are in (0, 1], so the sum of ≤ 64k terms keeps ~1e-7 relative accuracy), and
// the 1/sum normalisation is applied to the Dv-wide output row instead of the Tk-wide P.
// Where the CPU has AVX-512 (and scale > 0) a row takes two passes: the raw scores' maximum
// (read only), then exp(scale·s − scale·max) and its sum, 16 at a time (on the 2-core Xeon the
// softmax was most of the attention's time; the UNet step at 512² went 2.30 -> 1.99 s).
//
// bf16 operands (make_attention_kernel's `bf16`, where the CPU has bf16 dot products — AMX or
// AVX-512 BF16): the same tiles, but Q_blk, K_hᵀ and V_h are rounded to bf16 as they are
// copied (Q_blk into a dense [m, Dk] block of its own), the score product's depth padded with
// zeros to Dk = D rounded up to 32, K_hᵀ and V_h reordered once per head into oneDNN's packed
// layouts (the constructor says why); the scores are still f32 (bf16 × bf16 → f32
// accumulation), the softmax runs in f32 and writes P rounded to bf16 into a buffer of its own
// [m, Tk] for the P × V product (f32 result). Rounding the operands to bf16 (8 significant bits)
// costs ~3e-3 relative error (attention_test.cpp); the W8A8 UNet step at 512² on the 2-core
// Xeon went 1.99 -> 1.73 s.
//
// The bf16 tiles run hyrt's fused kernel instead (attention_bf16.h, flash_bf16_wanted below:
// AVX-512 BF16 without AMX, or AMX tiles where they pay): same tiles and threads, no oneDNN
// products.
// AttentionPrecision::kInt8 (W8A8) runs the fused int8 kernel (attention_int8.h,
// flash_int8_wanted) in the same tiles where the CPU has AVX-512 VNNI, else as kBF16.
#include <dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "backend/cpu/amx_tiles.h"
#include "backend/cpu/attention_bf16.h"
#include "backend/cpu/attention_int8.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/onednn_compat.h"
#include "backend/cpu/vec_math.h"
#include "core/half.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

using dnnl::memory;
using dt = memory::data_type;

// Scores scratch budget per thread (see the header comment). bf16 keeps half of it: beside the
// f32 scores its thread also holds P in bf16 and the packed K_hᵀ, V_h, which the 2 MiB L2 must
// hold too (8 heads x 40 at 4096² on 2 AMX cores: 0.5 MiB 51.1 ms, 0.75 MiB 50.2, 1 MiB 48.3,
// 2 MiB 52.8).
constexpr int64_t kScoreBytesPerThread = 2 << 20;
constexpr int64_t kScoreBytesPerThreadBf16 = 1 << 20;
constexpr int64_t kMinBlockRows = 16;
constexpr int64_t kMaxBlockRows = 256;

struct StridedMatmul {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};

// A single-threaded matmul C [m, n] = A [m, k] × B [k, n]: A a strided 2D view, B in layout
// `b` (strided, or oneDNN's packed layout: format `any`, or another program's weights_desc),
// named in the cache key by `b_note`; A and B of `operand` type (f32 or bf16), C f32, strided.
std::shared_ptr<StridedMatmul> strided_matmul(ProgramCache& cache, int64_t m, int64_t n, int64_t k,
                                              const memory::dims& a_strides, const memory::desc& b,
                                              const std::string& b_note,
                                              const memory::dims& c_strides, dt operand = dt::f32) {
  const std::string key = str_cat("matmul ", operand == dt::bf16 ? "bf16" : "f32", " 1thread m=", m,
                                  " n=", n, " k=", k, " sa=", a_strides[0], ",", a_strides[1],
                                  " b=", b_note, " sc=", c_strides[0], ",", c_strides[1]);
  return cache.get_or_create<StridedMatmul>(key, [&] {
    ScopedOmpThreads one_thread(1);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    auto program = std::make_shared<StridedMatmul>();
    program->pd = make_matmul_pd(dnnl_engine(), memory::desc({m, k}, operand, a_strides), b,
                                 memory::desc(), memory::desc({m, n}, dt::f32, c_strides), attr);
    refuse_reference_impl(program->pd.impl_info_str(), key);
    program->primitive = dnnl::matmul(program->pd);
    return program;
  });
}

// Runs one strided matmul with user scratchpad `scratch` (a, b of the program's operand type),
// on the calling thread alone, as the program was made: its scratchpad is sized for one thread,
// and a tile's numbers must not depend on whether it ran inside the tiles' parallel region or
// alone outside it (a lone call's single VAE tile against a batch's two: oneDNN's AVX2 GEMM
// splits K between threads, so its sums would differ in the last bits).
void run_matmul(const StridedMatmul& mm, dnnl::stream& stream, const void* a, const void* b,
                float* c, void* scratch) {
  ScopedOmpThreads one_thread(1);
  const dnnl::engine& eng = dnnl_engine();
  memory a_mem(mm.pd.src_desc(), eng, const_cast<void*>(a));
  memory b_mem(mm.pd.weights_desc(), eng, const_cast<void*>(b));
  memory c_mem(mm.pd.dst_desc(), eng, c);
  memory scratch_mem(mm.pd.scratchpad_desc(), eng, scratch);
  mm.primitive.execute(stream, {{DNNL_ARG_SRC, a_mem},
                                {DNNL_ARG_WEIGHTS, b_mem},
                                {DNNL_ARG_DST, c_mem},
                                {DNNL_ARG_SCRATCHPAD, scratch_mem}});
}

// scores [valid] -> exp(scale·s − max) in place, returns the sum. Entries past `valid`
// (causally masked keys) are set to 0 so the P × V product ignores them.
float softmax_numerators(float* scores, int64_t valid, int64_t total, float scale) {
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  const __m256 vscale = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= valid; j += 8) {
    const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(scores + j), vscale);
    _mm256_storeu_ps(scores + j, s);
    vmax = _mm256_max_ps(vmax, s);
  }
  float row_max = hmax_avx2(vmax);
  for (; j < valid; ++j) {
    scores[j] *= scale;
    row_max = std::max(row_max, scores[j]);
  }
  const __m256 vrow_max = _mm256_set1_ps(row_max);
  __m256 vsum = _mm256_setzero_ps();
  j = 0;
  for (; j + 8 <= valid; j += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vrow_max));
    _mm256_storeu_ps(scores + j, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float sum = hsum_avx2(vsum);
  for (; j < valid; ++j) {
    scores[j] = std::exp(scores[j] - row_max);
    sum += scores[j];
  }
  std::fill(scores + valid, scores + total, 0.0f);
  return sum;
}

// The AVX-512 softmax numerators of one row, in two passes instead of three: the row maximum
// of the raw scores (read only), then e = exp(scale·s − scale·max) written as f32 in place
// (softmax_numerators_avx512) or as bf16 into p16 (softmax_numerators_bf16: the scores
// untouched), with their sum; entries past `valid` are 0. For scale > 0 only (max of the raw
// scores is then the max of the scaled ones). On the 2-core Xeon the softmax was most of the
// attention's time.
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and, once inlined, warn that it is
// uninitialised (GCC bug 105593): silenced for these functions only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
__attribute__((target("avx512f"))) float max_avx512(const float* s, int64_t n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(s + j));
  float m = _mm512_reduce_max_ps(vmax);
  for (; j < n; ++j)
    m = std::max(m, s[j]);
  return m;
}

__attribute__((target("avx512f"))) float softmax_numerators_avx512(float* scores, int64_t valid,
                                                                   int64_t total, float scale) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const __m512 vneg_max = _mm512_set1_ps(-scale * max_avx512(scores, valid));
  __m512 vsum = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= valid; j += 16) {
    const __m512 e = exp_avx512(_mm512_fmadd_ps(_mm512_loadu_ps(scores + j), vscale, vneg_max));
    _mm512_storeu_ps(scores + j, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  if (j < valid) {
    const __mmask16 m = static_cast<__mmask16>((1u << (valid - j)) - 1u);
    const __m512 e =
        exp_avx512(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, scores + j), vscale, vneg_max));
    _mm512_mask_storeu_ps(scores + j, m, e);
    vsum = _mm512_add_ps(vsum, _mm512_maskz_mov_ps(m, e));
  }
  std::fill(scores + valid, scores + total, 0.0f);
  return _mm512_reduce_add_ps(vsum);
}

__attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16"))) float softmax_numerators_bf16(
    const float* scores, int64_t valid, int64_t total, float scale, uint16_t* p16) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const __m512 vneg_max = _mm512_set1_ps(-scale * max_avx512(scores, valid));
  __m512 vsum = _mm512_setzero_ps();
  int64_t j = 0;
  for (; j + 16 <= valid; j += 16) {
    const __m512 e = exp_nonpositive_for_bf16_avx512(
        _mm512_fmadd_ps(_mm512_loadu_ps(scores + j), vscale, vneg_max));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p16 + j), (__m256i)_mm512_cvtneps_pbh(e));
    vsum = _mm512_add_ps(vsum, e);
  }
  if (j < valid) {
    const __mmask16 m = static_cast<__mmask16>((1u << (valid - j)) - 1u);
    const __m512 e =
        _mm512_maskz_mov_ps(m, exp_nonpositive_for_bf16_avx512(_mm512_fmadd_ps(
                                   _mm512_maskz_loadu_ps(m, scores + j), vscale, vneg_max)));
    _mm256_mask_storeu_epi16(p16 + j, m, (__m256i)_mm512_cvtneps_pbh(e));
    vsum = _mm512_add_ps(vsum, e);
  }
  std::fill(p16 + valid, p16 + total, uint16_t{0});
  return _mm512_reduce_add_ps(vsum);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// bf16 attention through FlashAttentionBf16 (attention_bf16.h) where the CPU has AVX-512 BF16
// but no AMX: on a 2-core AMD EPYC (Zen 4; SD 1.5's 4096 tokens of 8 x 40, bench_cpu_gemm) it
// takes 64 ms against oneDNN's 103 ms. With AMX, where its products run on tiles
// (amx::pays_for_keys: not the text's 77 keys, where oneDNN's tile kernels stay): on the 2-core
// Xeon, against oneDNN's bf16 AMX matmuls, SD 1.5's 4096 of 8 x 40 65.8 -> 38.4 ms, 1024 of
// 8 x 80 5.69 -> 3.32 ms, SDXL's 4096 of 10 x 64 95.0 -> 55.7 ms (2026-12-06).
// attention_override() forces either for A/B runs.
bool flash_bf16_wanted(int64_t tk, int64_t d, int64_t dv) {
  const AttentionOverride forced = attention_override();
  if (forced == AttentionOverride::kOneDnn || !FlashAttentionBf16::supports(d, dv)) return false;
  return forced == AttentionOverride::kFused || !cpu_has_amx() ||
         amx::tiles_chosen(amx::ProductForm::kAuto, tk);
}

// int8 attention through FlashAttentionInt8 wherever the CPU has AVX-512 VNNI: on the 2-core
// Zen 4 (bench_cpu_gemm, batch 1) SD 1.5's 4096 tokens of 8 x 40 take 65.8 ms in the fused bf16
// kernel and 43.0 ms in this one, SDXL's 4096 of 10 x 64 125 -> 74 ms; on the 2-core Xeon with
// AMX, against oneDNN's bf16 tile kernels, 63.3 -> 35.4 ms, 90.3 -> 63.2 ms, SD 1.5's 1024 of
// 8 x 80 5.55 -> 4.00 ms and its cross attention (4096 x 77) 3.11 -> 1.56 ms, and the W8A8 UNet
// step at 512² 1.53-1.64 -> 1.22-1.27 s (2026-12-06). $HYRT_CPU_ATTENTION=onednn or fused keeps
// the bf16 paths for A/B runs.
bool flash_int8_wanted(int64_t d, int64_t dv) {
  if (!FlashAttentionInt8::supports(d, dv)) return false;
  const AttentionOverride forced = attention_override();
  return forced == AttentionOverride::kNone || forced == AttentionOverride::kInt8;
}

class AttentionKernel final : public Kernel {
 public:
  AttentionKernel(const PrepareContext& ctx, AttentionPrecision precision) {
    const auto& attrs = ctx.node.attr<ir::AttentionAttrs>();
    const Shape& q = ctx.input(0).shape;  // [B, Tq, H·D]
    const Shape& k = ctx.input(1).shape;  // [B, Tk, H·D]
    const Shape& v = ctx.input(2).shape;  // [B, Tk, H·Dv]
    batch_ = q[0];
    tq_ = q[1];
    tk_ = k[1];
    heads_ = attrs.heads;
    d_ = q[2] / heads_;
    dv_ = v[2] / heads_;
    causal_ = attrs.causal;
    scale_ = attrs.scale != 0.0f ? attrs.scale : 1.0f / std::sqrt(static_cast<float>(d_));
    const AttentionPrecision runs = attention_precision_run(precision, d_, dv_);
    const bool int8 = runs == AttentionPrecision::kInt8;
    bf16_ = runs == AttentionPrecision::kBF16;

    block_rows_ = (bf16_ ? kScoreBytesPerThreadBf16 : kScoreBytesPerThread) /
                  (tk_ * static_cast<int64_t>(sizeof(float)));
    block_rows_ = std::clamp<int64_t>(block_rows_ / kMinBlockRows * kMinBlockRows, kMinBlockRows,
                                      kMaxBlockRows);
    block_rows_ = std::min(block_rows_, tq_);
    scratch_per_thread_ = int8                                       ? prepare_fused(flash_int8_)
                          : bf16_ && flash_bf16_wanted(tk_, d_, dv_) ? prepare_fused(flash_)
                                                                     : prepare_products(ctx);
    planned_threads_ = std::max(1, num_threads());
    workspace_ = KernelWorkspace(scratch_per_thread_ * planned_threads_, "attention scratch");
  }

  size_t scratch_bytes_per_thread() const { return scratch_per_thread_; }

  // The tiles' scratch is planned into the arena with the other kernels' workspaces: kernels
  // never run at once, so a UNet's 32 attentions share those bytes instead of each keeping
  // ~2 MiB per thread of its own for the executable's life (61 MiB at 512² on 2 threads,
  // outside the arena and resident through the whole UNet loop).
  size_t workspace_bytes() const override { return workspace_.bytes(); }
  void bind_workspace(void* workspace) override { workspace_.bind(workspace); }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* q = inputs[0].as<const float>();
    const float* k = inputs[1].as<const float>();
    const float* v = inputs[2].as<const float>();
    float* out = output.as<float>();
    // The workspace has a slot per thread counted at prepare: no more threads than that.
    std::optional<ScopedOmpThreads> cap;
    if (num_threads() > planned_threads_) cap.emplace(planned_threads_);
    const int threads = std::max(1, num_threads());
    char* scratch = static_cast<char*>(workspace_.get());

    const int64_t blocks = (tq_ + block_rows_ - 1) / block_rows_;
    // Split a head's blocks into `groups` tiles only if the heads alone cannot feed ~2
    // tiles per thread; each tile repacks its head's K and V once.
    const int64_t heads_total = batch_ * heads_;
    const int64_t groups =
        std::clamp<int64_t>((2 * threads + heads_total - 1) / heads_total, 1, blocks);
    const int64_t blocks_per_group = (blocks + groups - 1) / groups;
    const int64_t tiles = heads_total * groups;
    const int64_t ld_qk = heads_ * d_, ld_v = heads_ * dv_;
    // The fused kernels (one of them, or neither): the same tiles, each head packed once.
    const auto run_fused = [&](const auto& flash) {
      parallel_for(tiles, 1, [&](int64_t begin, int64_t end) {
        void* mine = scratch + scratch_per_thread_ * omp_get_thread_num();
        for (int64_t tile = begin; tile < end; ++tile) {
          const int64_t bh = tile / groups, group = tile % groups;
          const int64_t b = bh / heads_, h = bh % heads_;
          flash.pack_head(k + b * tk_ * ld_qk + h * d_, ld_qk, v + b * tk_ * ld_v + h * dv_, ld_v,
                          mine);
          const int64_t row0 = std::min(tq_, group * blocks_per_group * block_rows_);
          const int64_t row_end = std::min(tq_, (group + 1) * blocks_per_group * block_rows_);
          if (row_end > row0)
            flash.run_rows(q + b * tq_ * ld_qk + h * d_, ld_qk, row0, row_end - row0,
                           out + b * tq_ * ld_v + h * dv_, ld_v, mine);
        }
      });
    };
    if (flash_int8_) return run_fused(*flash_int8_);
    if (flash_) return run_fused(*flash_);
    parallel_for(tiles, 1, [&](int64_t begin, int64_t end) {
      const int slot = omp_get_thread_num();
      dnnl::stream& stream = dnnl_stream(slot);
      char* mine = scratch + scratch_per_thread_ * slot;
      float* scores = reinterpret_cast<float*>(mine);  // [rows, Tk]
      // K_hᵀ [Dk, Tk] then V_h [Tk, Dv], f32 or bf16 (layout: the constructor).
      char* kv = mine + scores_bytes_;
      void* kt = kv;
      void* vc = kv + align64(static_cast<size_t>(tk_ * dk()) * (bf16_ ? 2 : 4));
      char* b16 = kv + kv_bytes_;
      uint16_t* p_bf16 = reinterpret_cast<uint16_t*>(b16);
      b16 += align64(static_cast<size_t>(block_rows_ * tk_) * 2);
      uint16_t* q_bf16 = reinterpret_cast<uint16_t*>(b16);
      b16 += align64(static_cast<size_t>(block_rows_ * dk_) * 2);
      void* kt_packed = b16;
      void* vc_packed = b16 + align64(k_packed_.get_size());
      void* onednn_scratch = mine + scores_bytes_ + kv_bytes_ + bf16_bytes_;
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t bh = tile / groups, group = tile % groups;
        const int64_t b = bh / heads_, h = bh % heads_;
        const float* k_h = k + b * tk_ * ld_qk + h * d_;  // [Tk, D], row stride H·D
        const float* v_h = v + b * tk_ * ld_v + h * dv_;  // [Tk, Dv], row stride H·Dv
        if (bf16_) {
          pack_kv(k_h, v_h, ld_qk, ld_v, static_cast<uint16_t*>(kt), static_cast<uint16_t*>(vc),
                  f32_to_bf16);
          // The zero rows that pad the depth to Dk, then both operands into oneDNN's layout.
          std::fill(static_cast<uint16_t*>(kt) + d_ * tk_, static_cast<uint16_t*>(kt) + dk_ * tk_,
                    uint16_t{0});
          const dnnl::engine& eng = dnnl_engine();
          memory k_from(k_plain_, eng, kt), k_to(k_packed_, eng, kt_packed);
          memory v_from(v_plain_, eng, vc), v_to(v_packed_, eng, vc_packed);
          k_reorder_.execute(stream, {{DNNL_ARG_FROM, k_from}, {DNNL_ARG_TO, k_to}});
          v_reorder_.execute(stream, {{DNNL_ARG_FROM, v_from}, {DNNL_ARG_TO, v_to}});
          stream.wait();
        } else
          pack_kv(k_h, v_h, ld_qk, ld_v, static_cast<float*>(kt), static_cast<float*>(vc),
                  [](float x) { return x; });
        const int64_t first = group * blocks_per_group;
        const int64_t last = std::min(blocks, first + blocks_per_group);
        for (int64_t blk = first; blk < last; ++blk) {
          const int64_t q0 = blk * block_rows_;
          const int64_t rows = std::min(block_rows_, tq_ - q0);
          const Products& p = rows == block_rows_ ? full_ : tail_;
          const float* q_blk = q + (b * tq_ + q0) * ld_qk + h * d_;  // [rows, D], stride H·D
          float* o_blk = out + (b * tq_ + q0) * ld_v + h * dv_;      // [rows, Dv], stride H·Dv

          if (bf16_)
            for (int64_t r = 0; r < rows; ++r) {
              convert_from_f32(q_blk + r * ld_qk, DType::kBF16, q_bf16 + r * dk_,
                               static_cast<size_t>(d_));
              std::fill(q_bf16 + r * dk_ + d_, q_bf16 + (r + 1) * dk_, uint16_t{0});
            }
          run_matmul(*p.scores, stream, bf16_ ? static_cast<const void*>(q_bf16) : q_blk,
                     bf16_ ? kt_packed : kt, scores, onednn_scratch);
          stream.wait();
          float inv_sum[kMaxBlockRows];
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t valid = causal_ ? q0 + r + 1 : tk_;
            float* s_row = scores + r * tk_;
            float sum;
            if (bf16_ && scale_ > 0) {  // bf16_ implies AVX-512 BF16 (cpu_has_bf16_dot_product)
              sum = softmax_numerators_bf16(s_row, valid, tk_, scale_, p_bf16 + r * tk_);
            } else if (cpu_has_avx512() && scale_ > 0) {
              sum = softmax_numerators_avx512(s_row, valid, tk_, scale_);
            } else {
              sum = softmax_numerators(s_row, valid, tk_, scale_);
            }
            if (bf16_ && !(scale_ > 0))
              convert_from_f32(s_row, DType::kBF16, p_bf16 + r * tk_, static_cast<size_t>(tk_));
            inv_sum[r] = 1.0f / sum;
          }
          run_matmul(*p.output, stream, bf16_ ? static_cast<const void*>(p_bf16) : scores,
                     bf16_ ? vc_packed : vc, o_blk, onednn_scratch);
          stream.wait();
          for (int64_t r = 0; r < rows; ++r) {
            float* o_row = o_blk + r * ld_v;
            for (int64_t c = 0; c < dv_; ++c)
              o_row[c] *= inv_sum[r];
          }
        }
      }
    });
  }

  size_t held_bytes() const override { return workspace_.own_bytes(); }

 private:
  struct Products {
    std::shared_ptr<StridedMatmul> scores, output;
  };

  // A fused kernel (attention_bf16.h, attention_int8.h) made into `flash`: block_rows_ now
  // only groups its rows into tiles. Returns the scratch bytes per thread.
  template <class Flash>
  size_t prepare_fused(std::optional<Flash>& flash) {
    flash.emplace(tk_, d_, dv_, scale_, causal_);
    block_rows_ = std::min<int64_t>(tq_, 4 * Flash::kRows);
    return align64(flash->scratch_bytes());
  }

  // oneDNN's two products per block of block_rows_ queries (the header comment), f32 or bf16.
  // Returns the scratch bytes per thread.
  size_t prepare_products(const PrepareContext& ctx) {
    const int64_t tail_rows = tq_ % block_rows_;

    const int64_t ld_qk = heads_ * d_, ld_v = heads_ * dv_;
    if (!bf16_) {
      // f32: Q_blk read in place (row stride H·D), K_hᵀ and V_h dense.
      auto make_pair = [&](int64_t rows, Products& p) {
        p.scores = strided_matmul(ctx.cache, rows, tk_, d_, {ld_qk, 1},
                                  memory::desc({d_, tk_}, dt::f32, memory::dims{tk_, 1}),
                                  str_cat(tk_, ",1"), {tk_, 1});
        p.output = strided_matmul(ctx.cache, rows, dv_, tk_, {tk_, 1},
                                  memory::desc({tk_, dv_}, dt::f32, memory::dims{dv_, 1}),
                                  str_cat(dv_, ",1"), {ld_v, 1});
      };
      make_pair(block_rows_, full_);
      if (tail_rows > 0) make_pair(tail_rows, tail_);
    } else {
      // bf16: the score product's depth padded to a multiple of 32 with zeros (oneDNN's AMX
      // kernels have no fast path for other depths: at Tk = 4096, 128 queries, D = 40 took
      // 192 µs, D = 64 88–120 µs, D = 80 45 µs and D = 96 18 µs on the 2-core Xeon), and the
      // B operands (K_hᵀ, V_h) in oneDNN's packed layout, packed once per head by a reorder
      // instead of by each query block's matmul (P × V at Tk = 4096: 53 → 30 µs).
      dk_ = (d_ + 31) / 32 * 32;
      const memory::desc any_k({dk_, tk_}, dt::bf16, memory::format_tag::any);
      const memory::desc any_v({tk_, dv_}, dt::bf16, memory::format_tag::any);
      full_.scores = strided_matmul(ctx.cache, block_rows_, tk_, dk_, {dk_, 1}, any_k, "any",
                                    {tk_, 1}, dt::bf16);
      full_.output = strided_matmul(ctx.cache, block_rows_, dv_, tk_, {tk_, 1}, any_v, "any",
                                    {ld_v, 1}, dt::bf16);
      k_packed_ = full_.scores->pd.weights_desc();
      v_packed_ = full_.output->pd.weights_desc();
      if (tail_rows > 0) {
        const std::string note = str_cat("as m=", block_rows_);
        tail_.scores = strided_matmul(ctx.cache, tail_rows, tk_, dk_, {dk_, 1}, k_packed_, note,
                                      {tk_, 1}, dt::bf16);
        tail_.output = strided_matmul(ctx.cache, tail_rows, dv_, tk_, {tk_, 1}, v_packed_, note,
                                      {ld_v, 1}, dt::bf16);
      }
      k_plain_ = memory::desc({dk_, tk_}, dt::bf16, memory::dims{tk_, 1});
      v_plain_ = memory::desc({tk_, dv_}, dt::bf16, memory::dims{dv_, 1});
      k_reorder_ = dnnl::reorder(
          dnnl::reorder::primitive_desc(dnnl_engine(), k_plain_, dnnl_engine(), k_packed_));
      v_reorder_ = dnnl::reorder(
          dnnl::reorder::primitive_desc(dnnl_engine(), v_plain_, dnnl_engine(), v_packed_));
    }

    size_t onednn_scratch = 0;
    for (const Products* p : {&full_, &tail_})
      if (p->scores)
        onednn_scratch = std::max({onednn_scratch, p->scores->pd.scratchpad_desc().get_size(),
                                   p->output->pd.scratchpad_desc().get_size()});
    scores_bytes_ = align64(static_cast<size_t>(block_rows_ * tk_) * sizeof(float));
    // K_hᵀ [Dk, Tk] and V_h [Tk, Dv] dense (f32, or bf16 with Dk = D rounded up to 32).
    const size_t operand_size = bf16_ ? 2 : 4;
    kv_bytes_ = align64(static_cast<size_t>(tk_ * dk()) * operand_size) +
                align64(static_cast<size_t>(tk_ * dv_) * operand_size);
    // bf16: P [rows, Tk] and Q_blk [rows, Dk], then the packed K_hᵀ and V_h.
    bf16_bytes_ = bf16_ ? align64(static_cast<size_t>(block_rows_ * tk_) * 2) +
                              align64(static_cast<size_t>(block_rows_ * dk_) * 2) +
                              align64(k_packed_.get_size()) + align64(v_packed_.get_size())
                        : 0;
    return scores_bytes_ + kv_bytes_ + bf16_bytes_ + align64(onednn_scratch);
  }

  static size_t align64(size_t n) { return (n + 63) / 64 * 64; }

  // The head's keys transposed, K_hᵀ [D, Tk], and values V_h [Tk, Dv], dense, each element
  // through `cvt` (to the operand type).
  template <class T, class Cvt>
  void pack_kv(const float* k_h, const float* v_h, int64_t ld_qk, int64_t ld_v, T* kt, T* vc,
               Cvt cvt) const {
    for (int64_t j = 0; j < tk_; ++j) {
      const float* krow = k_h + j * ld_qk;
      for (int64_t c = 0; c < d_; ++c)
        kt[c * tk_ + j] = cvt(krow[c]);
      const float* vrow = v_h + j * ld_v;
      for (int64_t c = 0; c < dv_; ++c)
        vc[j * dv_ + c] = cvt(vrow[c]);
    }
  }

  // The score product's depth: D, or with bf16 operands D rounded up to 32 (dk_).
  int64_t dk() const { return bf16_ ? dk_ : d_; }

  bool bf16_ = false;  // bf16 operands (header comment)
  // bf16 through the fused kernel (flash_bf16_wanted), or int8 through its own
  // (flash_int8_wanted); then none of the oneDNN state is made.
  std::optional<FlashAttentionBf16> flash_;
  std::optional<FlashAttentionInt8> flash_int8_;
  int64_t dk_ = 0;
  // bf16: K_hᵀ and V_h dense (plain) and in the products' packed layouts, and the reorders.
  memory::desc k_plain_, v_plain_, k_packed_, v_packed_;
  dnnl::reorder k_reorder_, v_reorder_;
  int64_t batch_, tq_, tk_, heads_, d_, dv_, block_rows_;
  bool causal_;
  float scale_;
  Products full_, tail_;
  size_t scores_bytes_ = 0, kv_bytes_ = 0, bf16_bytes_ = 0, scratch_per_thread_ = 0;
  int planned_threads_ = 1;           // threads the workspace has slots for (at prepare)
  KernelWorkspace workspace_{0, ""};  // planned_threads_ × scratch_per_thread_
};

}  // namespace

AttentionOverride attention_override() {
  static const AttentionOverride forced = [] {
    const char* v = std::getenv("HYRT_CPU_ATTENTION");
    const std::string_view name = v ? v : "";
    return name == "f32"      ? AttentionOverride::kF32
           : name == "onednn" ? AttentionOverride::kOneDnn
           : name == "fused"  ? AttentionOverride::kFused
           : name == "int8"   ? AttentionOverride::kInt8
                              : AttentionOverride::kNone;
  }();
  return forced;
}

AttentionPrecision attention_precision_run(AttentionPrecision requested, int64_t d, int64_t dv) {
  if (requested == AttentionPrecision::kInt8 && flash_int8_wanted(d, dv))
    return AttentionPrecision::kInt8;
  if (requested != AttentionPrecision::kF32 && cpu_has_bf16_dot_product())
    return AttentionPrecision::kBF16;
  return AttentionPrecision::kF32;
}

std::unique_ptr<Kernel> make_attention_kernel(const PrepareContext& ctx,
                                              AttentionPrecision precision) {
  return std::make_unique<AttentionKernel>(ctx, precision);
}

}  // namespace hyrt::backend::cpu

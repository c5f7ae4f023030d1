// kLinear with an "8-bit S" weight: y [M, N] = x [M, K] · (s[n] · q[n, k])ᵀ + bias [N],
// q s8 [N, K] as stored, s f32 [N]. Two modes (CpuBackendOptions::Int8Mode):
//
// W8A8: x is quantized per row (per token) at run time into s8 scratch [M, K] plus
//   scales a[M] (int8_common.h gives the exact rule); oneDNN runs an s8·s8 -> s32 matmul
//   whose int32 result is written straight into the f32 output buffer (same size), and our
//   epilogue rewrites it in place as y = acc · (a[m] · s[n]) + bias[n]. Per-row activation
//   scales cannot be oneDNN scales in 2.6 (notes/onednn-2.6.md), hence the own passes.
//   Weights are packed once at prepare for an s8 source (on VNNI the layout carries
//   oneDNN's s8·s8 compensation, computed by the reorder; AMX multiplies s8·s8 natively).
//   Source s8 rather than u8: symmetric rows map to s8 directly, while u8 would need
//   x + 128 and a −128·Σq correction per column in the epilogue — the compensation oneDNN
//   already does for us; the bare matmuls measured within 3 % of each other on AMX
//   (bench_cpu_int8's BM_RawInt8Matmul).
//   Scratch: M·K bytes + 4·M bytes, reused across nodes. (Tried: running 256-row blocks
//   end to end per thread with single-threaded matmuls, to keep each block's s8/s32 data
//   in cache between the three steps — 0–20 % slower on 2 AMX cores, so not kept.)
//
// W8: x stays f32. Prepare reorders q into an s8 buffer laid out exactly like the packed
//   f32 weights oneDNN wants (the same blocked layout with 1-byte elements), so at run time
//   one elementwise widening s8 -> f32 yields the packed f32 operand of an ordinary f32
//   matmul on the unscaled integers; the per-column scale and bias go to the epilogue
//   y = acc · s[n] + bias[n] (exact: q is integer, so the GEMM sees q exactly).
//   Resident: the packed s8 weights only. Scratch: one packed f32 layer (≈ 4·N·K bytes),
//   reused across nodes.
//   Under FloatPrecision::kBF16 the wide operand is bf16 instead (the twin of oneDNN's packed
//   bf16 layout, widened exactly) and x is rounded to bf16 into scratch (M·K·2 bytes): a
//   bf16 × bf16 -> f32 matmul, the epilogue as above. Scratch: ≈ 2·N·K bytes.
//
// Both modes keep their packed weights, scales and bias in the backend's WeightCache
// (weight_cache.h), shared with every other node and executable that wants the same weight
// in the same form and layout; the forms say the mode ("s8 packed for w8a8" carries the
// compensation its layout asks for, "s8 twin for w8" is the f32 layout's s8 twin), and the
// layout is compared exactly, so a shape whose primitive wants another layout packs anew.
#include <immintrin.h>
#include <algorithm>

#include <cstring>

#include <dnnl.hpp>

#include "backend/cpu/int8_common.h"
#include "backend/cpu/vec_math.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class LinearInt8Kernel final : public Kernel {
 public:
  LinearInt8Kernel(const PrepareContext& ctx, Int8Mode mode, FloatPrecision precision)
      : w8a8_(mode == Int8Mode::kW8A8),
        low_rank_(ctx, precision, /*s8_down=*/mode == Int8Mode::kW8A8),
        geglu_(ctx.node.epilogue(), 0, 0) {
    const Shape& x = ctx.input(0).shape;
    S8Weight w = load_s8_weight(ctx, 1);  // q [N, K], scale [N]
    key_.n = w.rows;
    key_.k = w.cols;
    key_.m = x.numel() / key_.k;
    bf16_ = mode == Int8Mode::kW8 && precision == FloatPrecision::kBF16 &&
            linear_runs_bf16(x, key_.n, key_.k);
    const DType wide = bf16_ ? DType::kBF16 : DType::kF32;
    key_.a_type = w8a8_ ? DType::kS8 : wide;
    key_.w_type = w8a8_ ? DType::kS8 : wide;
    key_.out_type = w8a8_ ? DType::kS32 : DType::kF32;
    key_.w_transposed = true;
    // No bias in either mode (our epilogue adds it); W8 shares the f32 (bf16) linear's program.
    matmul_ = chunked_matmul(ctx.cache, key_, ctx.node.epilogue(), ctx.node.name,
                             gemm_rows_per_sample(x, key_.k));
    geglu_ = GegluStage(ctx.node.epilogue(), matmul_.rows, key_.n);
    col_scale_ = std::move(w.scale);

    packed_desc_ = matmul_.chunk->pd.weights_desc();
    // W8A8: the s8 layout (with compensation) the matmul reads; W8: the wide layout's twin.
    const memory::desc packed_s8 = w8a8_ ? packed_desc_ : s8_twin_of(packed_desc_);
    packed_s8_elems_ = static_cast<int64_t>(packed_s8.get_size());  // W8: no extras, 1 B each
    const auto mk = static_cast<size_t>(key_.m * key_.k);
    const auto elems = static_cast<size_t>(packed_s8_elems_);
    scratch_ = w8a8_   ? Int8RunScratch(mk, static_cast<size_t>(key_.m) * sizeof(float), 0)
               : bf16_ ? Int8RunScratch(mk * sizeof(uint16_t), 0, elems * sizeof(uint16_t))
                       : Int8RunScratch(0, 0, elems * sizeof(float));
    packed_ = shared_weight(
        ctx, 1,
        w8a8_   ? "s8 packed for w8a8"
        : bf16_ ? "s8 twin for w8 bf16"
                : "s8 twin for w8",
        packed_s8,
        [&] {
          if (w8a8_)
            return pack_s8_matmul_weights(w.q, key_.n, key_.k, packed_s8,
                                          ctx.node.name + " packed s8 weights");
          // q [N, K] row-major is qᵀ [K, N] with strides {1, K}: oneDNN's `ba` tag.
          const memory::desc stored({key_.k, key_.n}, dt::s8, tag::ba);
          return pack_weights(stored, w.q, packed_s8, ctx.node.name + " packed s8 weights");
        },
        &held_bytes_);
    if (ctx.node.gemm_bias() != ir::kNone) bias_ = shared_weight_f32(ctx, 2);
    epilogue_ = ctx.node.epilogue();
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    HYRT_ASSERT(inputs[0].numel() == key_.m * key_.k &&
                output.numel() == key_.m * key_.n / (geglu_.active() ? 2 : 1));
    const float* bias = bias_ ? bias_->as<float>() : nullptr;
    GemmEpilogueArgs epilogue = GemmEpilogueArgs::of(epilogue_, inputs);
    const auto* x = inputs[0].as<const float>();  // [M, K]
    // The product's source (s8, bf16 or f32 rows of K), its element size, and per run the
    // weights it reads.
    const void* src = x;
    size_t src_size = sizeof(float);
    const void* weights = packed_->data();
    const float* row_scale = nullptr;
    if (w8a8_ && inputs[0].dtype == DType::kS8Rows) {
      // Quantized by its producer (a layer norm): its values [M, K], then M row scales.
      src = inputs[0].data;
      src_size = 1;
      row_scale = s8rows_scales(inputs[0]);
    } else if (w8a8_) {
      auto* q = static_cast<int8_t*>(scratch_.activations());
      float* scales = scratch_.row_scales();
      quantize_rows_s8(x, key_.m, key_.k, q, scales);
      low_rank_.prepare_run(inputs, &epilogue, q, scales);  // h from the same q
      src = q;
      src_size = 1;
      row_scale = scales;
    } else if (bf16_) {
      low_rank_.prepare_run(inputs, &epilogue);
      auto* wb = static_cast<uint16_t*>(scratch_.weights());
      widen_s8_to_bf16(packed_->as<int8_t>(), wb, packed_s8_elems_);
      auto* xb = static_cast<uint16_t*>(scratch_.activations());
      round_to_bf16(x, xb, key_.m * key_.k);
      src = xb;
      src_size = sizeof(uint16_t);
      weights = wb;
    } else {
      low_rank_.prepare_run(inputs, &epilogue);
      auto* wf = static_cast<float*>(scratch_.weights());
      widen_s8_to_f32(packed_->as<int8_t>(), wf, packed_s8_elems_);
      weights = wf;
    }
    // Rows [r0, r0 + rows) through `program` into `acc`, then the epilogue over them.
    const auto product = [&](const MatmulProgram& program, int64_t r0, int64_t rows, void* acc,
                             const GemmEpilogueArgs& e) {
      void* a = const_cast<char*>(static_cast<const char*>(src)) +
                static_cast<size_t>(r0 * key_.k) * src_size;
      execute_packed(program.pd, program.primitive, a, acc, packed_desc_, weights, nullptr);
      if (w8a8_)
        dequant_epilogue<int32_t>(acc, rows, key_.n, row_scale + r0, 0.0f, col_scale_->as<float>(),
                                  bias, e);
      else
        dequant_epilogue<float>(acc, rows, key_.n, nullptr, 1.0f, col_scale_->as<float>(), bias, e);
    };
    if (!geglu_.active()) {
      // acc [M, N] (s32 or f32) lands in the output's bytes and is rewritten there as f32.
      matmul_.for_each_chunk(key_.m, [&](int64_t r0, int64_t rows, const MatmulProgram& p) {
        product(p, r0, rows, output.as<float>() + r0 * key_.n, epilogue.from_row(r0, key_.n));
      });
      return;
    }
    // GEGLU: chunk by chunk into the stage's buffer, each gated into its rows of the output
    // (a low-rank term added before the gate).
    matmul_.for_each_chunk(key_.m, [&](int64_t r0, int64_t rows, const MatmulProgram& p) {
      GemmEpilogueArgs chunk = epilogue.from_row(r0, key_.n);
      chunk.geglu_out = output.as<float>() + r0 * (key_.n / 2);
      product(p, r0, rows, geglu_.gemm_out(nullptr), chunk);
    });
  }

  // The weights are the backend's WeightCache's (shared); this kernel's own are only a pack
  // it made in a layout for this shape (weight_cache.h, Accounting).
  size_t held_bytes() const override { return held_bytes_ + geglu_.own_bytes(); }
  // The run-time scratch (int8_common.h), then a GEGLU epilogue's GEMM result, then the
  // low-rank term's transposed up (each 0 without).
  size_t workspace_bytes() const override {
    return low_rank_.workspace_bytes_after(own_workspace_bytes());
  }
  void bind_workspace(void* workspace) override {
    scratch_.bind(workspace);
    geglu_.bind(workspace ? static_cast<uint8_t*>(workspace) + align_up(scratch_.bytes())
                          : nullptr);
    low_rank_.bind_workspace_after(workspace, own_workspace_bytes());
  }

 private:
  size_t own_workspace_bytes() const { return align_up(scratch_.bytes()) + geglu_.bytes(); }

  bool w8a8_;
  LowRankStage low_rank_;
  GegluStage geglu_;
  bool bf16_ = false;  // W8 on bf16 operands
  ir::GemmEpilogue epilogue_;
  GemmKey key_;                  // all M rows
  ChunkedMatmul matmul_;         // one chunk of all M rows but under a GEGLU epilogue
  memory::desc packed_desc_;     // the weights layout the primitive reads (s8 or f32)
  int64_t packed_s8_elems_ = 0;  // W8: elements of the s8 twin = of the wide packed layout
  Int8RunScratch scratch_{0, 0, 0};
  SharedBuffer packed_;     // W8A8: in packed_desc_; W8: in its s8 twin
  SharedBuffer col_scale_;  // f32 [N]
  SharedBuffer bias_;       // f32 [N] or null
  size_t held_bytes_ = 0;
};

class LinearInt8GemvKernel final : public Kernel {
 public:
  explicit LinearInt8GemvKernel(const PrepareContext& ctx)
      : low_rank_(ctx, FloatPrecision::kF32),
        geglu_(ctx.node.epilogue(), ctx.input(0).shape.numel() / ctx.input(1).shape[1],
               ctx.input(1).shape[0]) {
    S8Weight w = load_s8_weight(ctx, 1);  // q [N, K], scale [N]
    n_ = w.rows;
    k_ = w.cols;
    m_ = ctx.input(0).shape.numel() / k_;
    q_ = shared_weight(ctx, 1, "s8 copy", memory::desc(), [&] {
      AlignedBuffer q(static_cast<size_t>(n_ * k_), ctx.node.name + " s8 weights");
      std::memcpy(q.data(), w.q, static_cast<size_t>(n_ * k_));
      return q;
    });
    scale_ = std::move(w.scale);
    if (ctx.node.gemm_bias() != ir::kNone) bias_ = shared_weight_f32(ctx, 2);
    epilogue_ = ctx.node.epilogue();
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    HYRT_ASSERT(inputs[0].numel() == m_ * k_ &&
                output.numel() == m_ * n_ / (geglu_.active() ? 2 : 1));
    const auto* x = inputs[0].as<const float>();
    const auto* q = q_->as<int8_t>();
    const float* s = scale_->as<float>();
    const float* bias = bias_ ? bias_->as<float>() : nullptr;
    GemmEpilogueArgs epilogue = GemmEpilogueArgs::of(epilogue_, inputs);
    if (geglu_.active()) {  // the rows plain into the stage's buffer, [the term,] then gated
      auto* full = static_cast<float*>(geglu_.gemm_out(nullptr));
      run_rows<Identity>(x, full, q, s, bias, nullptr);
      if (low_rank_.active()) {
        low_rank_.prepare_run(inputs, &epilogue);
        apply_gemm_epilogue_rows(full, m_, n_, epilogue);
      }
      geglu_rows(full, m_, n_ / 2, output.as<float>());
      return;
    }
    auto* y = output.as<float>();
    if (low_rank_.active()) {  // the rows plain, then the whole epilogue over them
      low_rank_.prepare_run(inputs, &epilogue);
      run_rows<Identity>(x, y, q, s, bias, nullptr);
      apply_gemm_epilogue_rows(y, m_, n_, epilogue);
      return;
    }
    with_activation(epilogue.activation,
                    [&]<class Act>(Act) { run_rows<Act>(x, y, q, s, bias, epilogue.residual); });
  }

  // held_bytes(): 0 — the weights, scales and bias are the WeightCache's (shared), but a GEGLU
  // stage's buffer made while unbound (tests). Workspace: a GEGLU epilogue's GEMM result, then
  // the low-rank term's (each 0 without).
  size_t held_bytes() const override { return geglu_.own_bytes(); }
  size_t workspace_bytes() const override {
    return low_rank_.workspace_bytes_after(geglu_.bytes());
  }
  void bind_workspace(void* workspace) override {
    geglu_.bind(workspace);
    low_rank_.bind_workspace_after(workspace, geglu_.bytes());
  }

 private:
  template <class Act>
  void run_rows(const float* x, float* y, const int8_t* q, const float* s, const float* bias,
                const float* residual) const {
    parallel_for(n_, 16, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        const int8_t* row = q + n * k_;
        for (int64_t m = 0; m < m_; ++m) {
          const float* xm = x + m * k_;
          __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
          int64_t k = 0;
          for (; k + 16 <= k_; k += 16) {
            const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k));
            const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
            const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8)));
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(xm + k), w0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(xm + k + 8), w1, acc1);
          }
          alignas(32) float lanes[8];
          _mm256_store_ps(lanes, _mm256_add_ps(acc0, acc1));
          float sum = 0.0f;
          for (float l : lanes)
            sum += l;
          for (; k < k_; ++k)
            sum += xm[k] * static_cast<float>(row[k]);
          const float v = Act::one(sum * s[n] + (bias ? bias[n] : 0.0f));
          y[m * n_ + n] = residual ? v + residual[m * n_ + n] : v;
        }
      }
    });
  }

  int64_t m_ = 0, n_ = 0, k_ = 0;
  ir::GemmEpilogue epilogue_;
  LowRankStage low_rank_;
  GegluStage geglu_;
  SharedBuffer q_;      // s8 [N, K], as stored
  SharedBuffer scale_;  // f32 [N]
  SharedBuffer bias_;   // f32 [N] or null
};

}  // namespace

// A linear with at most kGemvMaxRowsPerSample activation rows per sample (SD's
// time-embedding layers: one row per sample; the lowest UNet level at tiny sizes): weight-
// bandwidth bound, so neither mode's machinery pays off — W8A8 would add activation rounding
// for no speed, W8 would widen a whole layer to multiply two rows. Instead each output is
// s[n] · Σₖ x[m, k] · q[n, k] in f32, read straight from the s8 rows (one pass over the
// weights for all rows), i.e. weight-only accuracy in both modes.
// The choice never depends on the batch (x's first dimension), so a sample computes the same
// numbers alone or batched with others (request batching, pipeline/txt2img.h): x [samples, K]
// (one row per sample) runs as the GEMV up to kGemvMaxVectorRows rows; x [B, ..., K] when it
// has at most kGemvMaxRowsPerSample rows per sample (4: what 8 rows were for the usual batch of
// 2 under guidance).
constexpr int64_t kGemvMaxRowsPerSample = 4;
constexpr int64_t kGemvMaxVectorRows = 256;

bool runs_as_gemv(const Shape& x, int64_t k) {
  const int64_t rows = x.numel() / k;
  if (x.rank() <= 2) return rows <= kGemvMaxVectorRows;
  return rows / std::max<int64_t>(x[0], 1) <= kGemvMaxRowsPerSample;
}

std::unique_ptr<Kernel> make_linear_s8_kernel(const PrepareContext& ctx, Int8Mode mode,
                                              FloatPrecision precision) {
  const Shape& w = ctx.input(1).shape;
  const int64_t k = w.numel() / w[0];
  if (runs_as_gemv(ctx.input(0).shape, k)) return std::make_unique<LinearInt8GemvKernel>(ctx);
  return std::make_unique<LinearInt8Kernel>(ctx, mode, precision);
}

}  // namespace hyrt::backend::cpu

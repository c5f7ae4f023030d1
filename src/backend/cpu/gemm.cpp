// kLinear: y [M, N] = x [M, K] · wᵀ (w stored [N, K]) + bias [N], through a oneDNN matmul.
//
// Graphs have static shapes, so M (all leading dimensions of x folded together) is fixed
// per node and the primitive is created with a compile-time M: a runtime M would move
// oneDNN 2.6 from brgemm to the slower gemm:jit (notes/onednn-2.6.md). The primitive for
// a (M, N, K, bias) is shared between nodes through ProgramCache under
// GemmKey::to_string(). The packed weights (format_tag::any lets oneDNN choose the blocked
// layout its kernel reads fastest; we reorder into it once) and the f32 bias are shared
// through the backend's WeightCache: every node, in any executable, that wants this weight in
// this layout uses one copy (weight_cache.h).
//
// A weight with a rank-sized side (N or K ≤ kPlainWeightMaxSide: a LoRA's down and up
// projections) is not packed: the primitive reads it in its stored [N, K] order — in place
// when it is stored in f32, else widened to f32 in the kernel's workspace at each run (f16
// LoRA adapters). Such a weight is small, so its layout changes little at run time, and
// preparing it without a reorder or a copy is what keeps a LoRA switch (hundreds of such nodes
// prepared anew) short and its memory the adapters' own: on 2 cores the reorders and the fresh
// f32 copies cost ~0.2 ms a node, most of a switch.
//
// bf16 (FloatPrecision::kBF16, where the CPU has bf16 dot products): the weights are packed as
// bf16 (rounded once, at prepare) and x is rounded to bf16 into the kernel's workspace at each
// run ([M, K] bf16), for a bf16 × bf16 -> f32 matmul (AMX or AVX-512 BF16) with the f32 bias.
// A rank-sized weight stays f32 (small products; the LoRA path above is unchanged).
#include <dnnl.hpp>

#include <algorithm>
#include <optional>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/onednn_compat.h"
#include "core/half.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

dt onednn_type(DType t) {
  switch (t) {
    case DType::kS8:
      return dt::s8;
    case DType::kS32:
      return dt::s32;
    case DType::kBF16:
      return dt::bf16;
    default:
      return dt::f32;
  }
}

constexpr int64_t kPlainWeightMaxSide = 64;

class LinearKernel final : public Kernel {
 public:
  LinearKernel(const PrepareContext& ctx, FloatPrecision precision)
      : low_rank_(ctx, precision), geglu_(ctx.node.epilogue(), 0, 0) {
    const Shape& x = ctx.input(0).shape;
    const Shape& w = ctx.input(1).shape;  // [N, K]
    key_.n = w[0];
    key_.k = w[1];
    key_.m = x.numel() / key_.k;
    key_.a_type = key_.w_type = key_.out_type = DType::kF32;
    key_.w_transposed = true;
    const bool has_bias = ctx.node.gemm_bias() != ir::kNone;
    epilogue_ = ctx.node.epilogue();
    key_.epilogue = has_bias ? static_cast<uint8_t>(Epilogue::kBias) : 0;
    const bool plain = std::min(key_.n, key_.k) <= kPlainWeightMaxSide;
    bf16_ = precision == FloatPrecision::kBF16 && linear_runs_bf16(x, key_.n, key_.k);
    if (bf16_) {
      key_.a_type = key_.w_type = DType::kBF16;
      workspace_ = KernelWorkspace(static_cast<size_t>(key_.m * key_.k) * 2, "linear bf16 source");
    }
    matmul_ = chunked_matmul(ctx.cache, key_, epilogue_, ctx.node.name,
                             gemm_rows_per_sample(x, key_.k), plain);
    geglu_ = GegluStage(epilogue_, matmul_.rows, key_.n);

    packed_desc_ = matmul_.chunk->pd.weights_desc();
    if (plain) {
      // Read from the bound view ([N, K] = wᵀ in `ba` order, as the pd says; stored views stay
      // valid for the executable's life, weight_source.h): in place when f32, else widened to
      // f32 in the workspace at each run (a LoRA's f16 projections: milliseconds per UNet step
      // on 2 cores, against a resident f32 copy of every adapter and the time to make it).
      plain_dtype_ = ctx.input(1).dtype;
      if (plain_dtype_ != DType::kF32)
        workspace_ = KernelWorkspace(static_cast<size_t>(key_.n * key_.k) * sizeof(float),
                                     "linear weight staging");
    } else {
      // w [N, K] row-major is wᵀ [K, N] with strides {1, K}: oneDNN's `ba` tag.
      const memory::desc stored({key_.k, key_.n}, dt::f32, tag::ba);
      packed_weights_ =
          PackedFloatWeight(ctx, 1, stored, packed_desc_, precision, bf16_, &held_bytes_);
      // Never with bf16_ (which rounds x into the workspace): the widened pack's.
      if (const size_t widened = packed_weights_.workspace_bytes())
        workspace_ = KernelWorkspace(widened, "linear f32 pack widened");
    }
    if (has_bias) bias_ = shared_weight_f32(ctx, 2);
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    HYRT_ASSERT(inputs[0].numel() == key_.m * key_.k &&
                output.numel() == key_.m * key_.n / (geglu_.active() ? 2 : 1));
    // x: [M, K], y: [M, N] (with a GEGLU epilogue into the stage's buffer, then gated)
    const void* w = packed_weights_ ? packed_weights_.data(workspace_.get()) : nullptr;
    void* x = inputs[0].data;
    if (bf16_) {
      x = workspace_.get();
      round_to_bf16(inputs[0].as<const float>(), static_cast<uint16_t*>(x), key_.m * key_.k);
    }
    if (plain_dtype_) {
      HYRT_CHECK(inputs.size() > 1 && inputs[1].dtype == *plain_dtype_ &&
                     inputs[1].numel() == key_.n * key_.k && inputs[1].data != nullptr,
                 kInvalidArgument, "linear: the weight is not bound as ", dtype_name(*plain_dtype_),
                 " [", key_.n, ", ", key_.k, "]");
      w = inputs[1].data;
      if (*plain_dtype_ != DType::kF32) {
        w = workspace_.get();
        convert_to_f32(*plain_dtype_, inputs[1].data, static_cast<float*>(workspace_.get()),
                       static_cast<size_t>(key_.n * key_.k));
      }
    }
    const float* bias = bias_ ? bias_->as<float>() : nullptr;
    const size_t x_size = bf16_ ? sizeof(uint16_t) : sizeof(float);
    if (geglu_.active()) {  // chunk by chunk into the stage's buffer, each gated into the output
      GemmEpilogueArgs epilogue = GemmEpilogueArgs::of(epilogue_, inputs);
      low_rank_.prepare_run(inputs, &epilogue);  // (a term is added to each chunk, then gated)
      auto* y = static_cast<float*>(geglu_.gemm_out(nullptr));
      matmul_.for_each_chunk(key_.m, [&](int64_t r0, int64_t rows, const MatmulProgram& p) {
        execute_packed(p.pd, p.primitive,
                       static_cast<char*>(x) + static_cast<size_t>(r0 * key_.k) * x_size, y,
                       packed_desc_, w, bias);
        if (epilogue.low_rank.h)
          apply_gemm_epilogue_rows(y, rows, key_.n, epilogue.from_row(r0, key_.n));
        geglu_rows(y, rows, key_.n / 2, output.as<float>() + r0 * (key_.n / 2));
      });
      return;
    }
    matmul_.for_each_chunk(key_.m, [&](int64_t r0, int64_t, const MatmulProgram& p) {
      execute_packed(p.pd, p.primitive,
                     static_cast<char*>(x) + static_cast<size_t>(r0 * key_.k) * x_size,
                     output.as<float>() + r0 * key_.n, packed_desc_, w, bias);
    });
    if (!epilogue_.empty()) {
      GemmEpilogueArgs epilogue = GemmEpilogueArgs::of(epilogue_, inputs);
      low_rank_.prepare_run(inputs, &epilogue);
      apply_gemm_epilogue_rows(output.as<float>(), key_.m, key_.n, epilogue);
    }
  }

  // The weights are the backend's WeightCache's (shared); this kernel's own are only a pack
  // it made in a layout for this shape (weight_cache.h, Accounting).
  size_t held_bytes() const override { return held_bytes_ + geglu_.own_bytes(); }

  // A plain 16-bit weight or a 16-bit-held f32 pack widened per run, or bf16's rounded x (0
  // otherwise); then a GEGLU epilogue's GEMM result; then the low-rank term's transposed up.
  size_t workspace_bytes() const override {
    return low_rank_.workspace_bytes_after(own_workspace_bytes());
  }
  void bind_workspace(void* workspace) override {
    workspace_.bind(workspace);
    geglu_.bind(workspace ? static_cast<uint8_t*>(workspace) + align_up(workspace_.bytes())
                          : nullptr);
    low_rank_.bind_workspace_after(workspace, own_workspace_bytes());
  }

 private:
  GemmKey key_;        // all M rows
  bool bf16_ = false;  // bf16 operands (x rounded into the workspace at each run)
  ir::GemmEpilogue epilogue_;
  ChunkedMatmul matmul_;  // one chunk of all M rows but under a GEGLU epilogue
  memory::desc packed_desc_;
  PackedFloatWeight packed_weights_;  // in packed_desc_ (empty for a plain weight)
  // A plain weight (rank-sized side): its stored dtype, read from the bound view — in place
  // when f32, else widened into the workspace (f32 [N, K]) at each run.
  std::optional<DType> plain_dtype_;
  // Plain 16-bit weights: f32 [N, K]; a 16-bit-held pack: it widened; bf16: x [M, K].
  KernelWorkspace workspace_{0, ""};
  LowRankStage low_rank_;
  GegluStage geglu_;
  size_t own_workspace_bytes() const { return align_up(workspace_.bytes()) + geglu_.bytes(); }
  SharedBuffer bias_;  // f32 [N] or null
  size_t held_bytes_ = 0;
};

}  // namespace

// chunked_matmul: a GEGLU epilogue's GEMM runs in chunks of rows whose result stays under
// kGegluChunkBytes: each chunk is gated while it is in cache, and the stage's buffer holds one
// chunk rather than the whole [M, 2N] (84 MB at SD 1.5's 64² level, more than the unfused graph's
// peak there). At least kGegluMinChunkRows rows, as each chunk reads all the weights again (13 MB
// at the 16² level's 1280 -> 10240). SD 1.5's 512² W8A8 step on 2 Zen 4 cores (three interleaved
// runs each): linear + geglu 688 -> 676 ms (within the machine's noise), peak RSS 1.162e9
// -> 1.110e9 bytes; chunks of 2 MiB were slower (704 ms), 4 and 16 MiB the same as 8 within the
// noise.
constexpr int64_t kGegluChunkBytes = 8 << 20;
constexpr int64_t kGegluMinChunkRows = 256;

// Request batching promises a sample the same bits alone or beside others, so a sample's rows
// must not see how many rows the GEMM has. oneDNN's brgemm matmuls (AVX-512 and up) compute each
// row the same whatever M; its gemm:jit ones (the f32 and int8 GEMMs of AVX2 machines, which 2.6
// has no brgemm for) do not: on an AVX2-only EPYC, the rows of a 2-row and a 6-row f32 GEMM
// differed in their last bits at every K from 32 to 768 (one thread or two). Where the program
// is not brgemm, the chunks restart at each sample's first row (period = sample_rows), so that a
// sample's GEMMs are the same calls alone or batched; that costs AVX2 machines more, smaller
// GEMMs (the time embedding's run a row each), and AVX-512 ones nothing.
ChunkedMatmul chunked_matmul(ProgramCache& cache, const GemmKey& key, const ir::GemmEpilogue& e,
                             const std::string& what, int64_t sample_rows, bool plain_weights) {
  HYRT_ASSERT(sample_rows >= 1 && key.m % sample_rows == 0);
  const auto chunks_of = [&](int64_t period) {
    ChunkedMatmul c;
    c.period = period;
    c.rows = period;
    if (e.geglu) {
      const int64_t bytes = period * key.n * static_cast<int64_t>(sizeof(float));
      const int64_t chunks =
          std::max<int64_t>(1, (bytes + kGegluChunkBytes - 1) / kGegluChunkBytes);
      c.rows = std::min(period, std::max(kGegluMinChunkRows, (period + chunks - 1) / chunks));
    }
    GemmKey chunk = key;
    chunk.m = c.rows;
    c.chunk = matmul_program(cache, chunk, what, plain_weights);
    if (const int64_t last = period % c.rows; last != 0) {
      chunk.m = last;
      c.last = matmul_program(cache, chunk, what, plain_weights);
      if (c.last->pd.weights_desc() != c.chunk->pd.weights_desc()) {
        c.rows = period;
        chunk.m = period;
        c.chunk = matmul_program(cache, chunk, what, plain_weights);
        c.last.reset();
      }
    }
    return c;
  };
  ChunkedMatmul c = chunks_of(key.m);
  const auto brgemm = [](const MatmulProgram& p) {
    return std::string_view(p.pd.impl_info_str()).starts_with("brg");
  };
  const bool row_invariant = brgemm(*c.chunk) && (!c.last || brgemm(*c.last));
  if (row_invariant || sample_rows == key.m) return c;
  return chunks_of(sample_rows);
}

int64_t gemm_rows_per_sample(const Shape& x, int64_t k) {
  return x.rank() <= 2 ? 1 : x.numel() / k / std::max<int64_t>(x[0], 1);
}

std::shared_ptr<MatmulProgram> matmul_program(ProgramCache& cache, const GemmKey& key,
                                              const std::string& what, bool plain_weights) {
  const std::string name = key.to_string() + (plain_weights ? " plain-weights" : "");
  return cache.get_or_create<MatmulProgram>(name, [&] {
    const bool has_bias = (key.epilogue & static_cast<uint8_t>(Epilogue::kBias)) != 0;
    const memory::desc src({key.m, key.k}, onednn_type(key.a_type), tag::ab);
    const memory::desc weights({key.k, key.n}, onednn_type(key.w_type),
                               plain_weights ? tag::ba : tag::any);
    const memory::desc bias =
        has_bias ? memory::desc({1, key.n}, dt::f32, tag::ab) : memory::desc();
    const memory::desc dst({key.m, key.n}, onednn_type(key.out_type), tag::ab);
    auto program = std::make_shared<MatmulProgram>();
    try {
      program->pd = make_matmul_pd(dnnl_engine(), src, weights, bias, dst);
    } catch (const dnnl::error& e) {
      fail(ErrorCode::kUnsupported, what, " (", name, "): oneDNN has no implementation (", e.what(),
           ")");
    }
    refuse_reference_impl(program->pd.impl_info_str(), what + " (" + name + ")");
    program->primitive = dnnl::matmul(program->pd);
    return program;
  });
}

// Staying f32 under bf16: a rank-sized weight (kPlainWeightMaxSide, read as stored), and x with
// fewer than 16 rows per sample — weight-bandwidth bound (SD's time embedding: x [samples, K],
// one row each), where bf16 would only add its rounding. Rows per sample, not rows: a sample
// must compute the same numbers alone or batched with others (request batching).
bool linear_runs_bf16(const Shape& x, int64_t n, int64_t k) {
  constexpr int64_t kBf16MinRowsPerSample = 16;
  return gemm_rows_per_sample(x, k) >= kBf16MinRowsPerSample &&
         std::min(n, k) > kPlainWeightMaxSide;
}

std::unique_ptr<Kernel> make_linear_kernel(const PrepareContext& ctx, FloatPrecision precision) {
  return std::make_unique<LinearKernel>(ctx, precision);
}

void round_to_bf16(const float* x, uint16_t* y, int64_t n) {
  // Memory-bound: split only where each thread gets enough to beat the fork.
  parallel_for(n, 1 << 16, [&](int64_t begin, int64_t end) {
    convert_from_f32(x + begin, DType::kBF16, y + begin, static_cast<size_t>(end - begin));
  });
}

}  // namespace hyrt::backend::cpu

// Internal to the CPU backend: what the per-family kernel files share.
//
// cpu_backend.cpp checks supports() and then calls one factory per op family
// (gemm.cpp, conv.cpp, attention.cpp, norm.cpp, elementwise.cpp, data_movement.cpp).
// Every factory receives a node the backend supports: f32 activations, weights stored
// f32/f16/bf16 — except linear/conv2d weights stored s8 ("8-bit S"), which go to the
// *_s8_kernel factories (gemm_int8.cpp, conv_int8.cpp).
//
// Weights: a kernel copies (and converts to f32, or packs) every weight it needs at
// prepare time and ignores the weight views passed to run(), so WeightSource memory is
// only read during prepare. Those copies are shared between kernels through the backend's
// WeightCache (weight_cache.h): a kernel whose weight is already held in the form it needs
// (by a kernel of this or an earlier executable) takes that buffer and reads nothing.
#pragma once

#include <omp.h>
#include <dnnl.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/weight_cache.h"
#include "core/buffer.h"
#include "core/error.h"

namespace hyrt::backend::cpu {

struct PrepareContext {
  const ir::Graph& graph;
  const ir::Node& node;
  const weights::WeightSource& weights;
  ProgramCache& cache;
  WeightCache& weight_cache;  // the backend's

  const ir::Value& input(size_t i) const { return graph.value(node.inputs.at(i)); }
  const ir::Value& output() const { return graph.value(node.output); }
  bool input_is_weight(size_t i) const { return input(i).kind == ir::ValueKind::kWeight; }
};

// Weight input `i` of the node in `form` (packed into `layout`, or the zero descriptor for a
// plain form), shared through the backend's WeightCache: the live buffer another kernel made
// for the same weight, form and layout, else what make() returns (make() may read the stored
// bytes; a hit reads none). When make() packed a layout other than the one(s) already held for
// this weight and form — a copy for this shape — its bytes are added to *held_bytes (if not
// null), for the kernel's held_bytes() (weight_cache.h, Accounting). Throws kInvalidModel when
// the stored tensor's shape or dtype differs from the graph's, hit or miss.
SharedBuffer shared_weight(const PrepareContext& ctx, size_t i, std::string_view form,
                           const dnnl::memory::desc& layout,
                           const std::function<AlignedBuffer()>& make,
                           size_t* held_bytes = nullptr);
// The same for a buffer made from `stored`, a tensor the source keeps for weight `name` (its
// per-row scales): keyed by the name, `form` and the view's address, dtype and shape.
SharedBuffer shared_weight_data(const PrepareContext& ctx, std::string_view name,
                                const TensorView& stored, std::string_view form,
                                const std::function<AlignedBuffer()>& make);
// Weight input `i` converted to f32 (f32/f16/bf16 stored), 64-byte aligned, shared.
SharedBuffer shared_weight_f32(const PrepareContext& ctx, size_t i);
// A new buffer holding `data` (laid out as `stored`) reordered into the `packed` layout, by
// oneDNN (which also computes whatever extras `packed` asks for, e.g. s8·s8 compensation).
AlignedBuffer pack_weights(const dnnl::memory::desc& stored, const void* data,
                           const dnnl::memory::desc& packed, std::string_view what);
// Weight input `i` converted to f32 as by shared_weight_f32, but into a staging buffer
// reused across prepare() calls (for weights that are packed right away): no fresh pages
// per layer, so packing a UNet does not page-fault and zero gigabytes of temporaries.
// Valid until the next call on this thread. The buffer stays (the largest such weight yet)
// until release_weight_staging(), which CpuBackend::end_prepare() calls (backend.h).
const float* stage_weight_f32(const PrepareContext& ctx, size_t i);
void release_weight_staging();
// The bytes this thread's staging buffer holds now (0 once released).
size_t weight_staging_bytes();

// Weight input `i` packed for a float primitive (f32, or bf16 where the layer runs bf16) from its
// f32 view in `stored_f32` order, shared through the WeightCache as by shared_weight.
// A layer kept f32 under FloatPrecision::kBF16 for accuracy (1x1 convolutions, one-row-per-
// sample linears: conv.cpp, gemm.cpp) whose weights are stored 16-bit would otherwise hold its
// f32 pack at twice the stored bytes for the executable's life (~140 MiB of an int8 SD 1.5
// UNet's f16 weights). It keeps the packed f32 layout element for element in the stored dtype
// instead, and widens it at each run into the kernel's workspace (planned into the arena with
// the activations) — exact, since every value (padding's zeros too) came from that dtype, so
// the results are bit-identical. These layers are ~3 % of a UNet's work, so the widening
// (memory-bound, ~2 B read and 4 B written per weight) costs well under 1 % of a step; under
// kF32 precision every layer would pay it, so there the f32 pack stays.
class PackedFloatWeight {
 public:
  PackedFloatWeight() = default;
  PackedFloatWeight(const PrepareContext& ctx, size_t i, const dnnl::memory::desc& stored_f32,
                    const dnnl::memory::desc& packed, FloatPrecision precision, bool runs_bf16,
                    size_t* held_bytes);
  explicit operator bool() const { return buffer_ != nullptr; }
  // Workspace bytes data() needs: the widened pack of a 16-bit-held one, else 0.
  size_t workspace_bytes() const;
  // The pack as the primitive reads it: held 16-bit, widened into `workspace` first.
  const void* data(void* workspace) const;

 private:
  SharedBuffer buffer_;
  std::optional<DType> held_16bit_;  // the stored f16/bf16 its f32 elements are held in
};

// Node inputs resolved to f32 pointers at run time: weight inputs point at the f32 copy
// made at prepare, other inputs at the bound activation buffers. Lets elementwise and
// norm kernels take a parameter either as a weight (bias, gamma) or as an activation.
class F32Inputs {
 public:
  // Converts every weight input of the node to f32 at prepare time.
  explicit F32Inputs(const PrepareContext& ctx);
  const float* get(std::span<const TensorView> inputs, size_t i) const {
    return i < converted_.size() && converted_[i] ? converted_[i]->as<float>()
                                                  : inputs[i].as<const float>();
  }

 private:
  std::vector<SharedBuffer> converted_;  // shared_weight_f32 of each weight input
};

// The process-wide oneDNN CPU engine, and a stream per OpenMP thread slot (oneDNN
// streams must not be used by two threads at once; the attention kernel runs matmuls
// from inside a parallel region).
dnnl::engine& dnnl_engine();
dnnl::stream& dnnl_stream(int thread_slot = 0);

// Whether hyrt's own loops may take their AVX-512 forms: the CPU has AVX-512 and oneDNN may use
// it too, so DNNL_MAX_CPU_ISA=AVX2 also runs our AVX2 forms (tests/CMakeLists.txt caps the ISA
// to test the lower paths).
bool cpu_has_avx512();

// Whether oneDNN may use AMX tiles here (the CPU has them and DNNL_MAX_CPU_ISA allows them).
bool cpu_has_amx();

// Throws kUnsupported when oneDNN picked a reference implementation: those run about
// 5000x slower (../shared/notes/onednn-2.6.md) and would silently ruin a run.
void refuse_reference_impl(const std::string& impl_info, const std::string& what);

// Runs a weight-packed oneDNN primitive (matmul or convolution) on dense activations:
// src -> dst with the weights in `packed_desc` layout at `packed`, plus an optional f32 bias
// (null: none). oneDNN only reads the weights and bias.
template <class PrimitiveDesc, class Primitive>
void execute_packed(const PrimitiveDesc& pd, const Primitive& primitive, void* src, void* dst,
                    const dnnl::memory::desc& packed_desc, const void* packed, const float* bias) {
  dnnl::engine& eng = dnnl_engine();
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, dnnl::memory(pd.src_desc(), eng, src)},
      {DNNL_ARG_WEIGHTS, dnnl::memory(packed_desc, eng, const_cast<void*>(packed))},
      {DNNL_ARG_DST, dnnl::memory(pd.dst_desc(), eng, dst)}};
  if (bias)
    args.emplace(DNNL_ARG_BIAS, dnnl::memory(pd.bias_desc(), eng, const_cast<float*>(bias)));
  primitive.execute(dnnl_stream(), args);
  dnnl_stream().wait();
}

// n rounded up to a multiple of 64: where a second workspace starts inside one binding.
inline size_t align_up(size_t n) {
  return (n + 63) / 64 * 64;
}

// A kernel's Kernel::workspace_bytes() scratch: the buffer the executor binds (its arena), or,
// when nothing is bound (tests, benchmarks), one of its own made on first use.
class KernelWorkspace {
 public:
  KernelWorkspace(size_t bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {}
  size_t bytes() const { return bytes_; }
  // What it holds of its own: a buffer made by get() while unbound (tests), 0 once bound.
  size_t own_bytes() const { return own_.size(); }
  void bind(void* workspace) {
    bound_ = workspace;
    if (workspace) own_ = AlignedBuffer();
  }
  void* get() {
    if (bound_) return bound_;
    if (own_.size() < bytes_) own_ = AlignedBuffer(bytes_, what_);
    return own_.data();
  }

 private:
  size_t bytes_;
  std::string what_;
  void* bound_ = nullptr;
  AlignedBuffer own_;
};

// Sets the OpenMP thread count for the current scope and restores it afterwards. Used
// when creating oneDNN primitives that will run single-threaded inside our own parallel
// region, so that they partition their work for one thread.
class ScopedOmpThreads {
 public:
  explicit ScopedOmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ScopedOmpThreads() { omp_set_num_threads(saved_); }
  ScopedOmpThreads(const ScopedOmpThreads&) = delete;
  ScopedOmpThreads& operator=(const ScopedOmpThreads&) = delete;

 private:
  int saved_;
};

// oneDNN programs shared by the f32 and "8-bit S" GEMM kernels, cached in the
// ProgramCache by what they compute. Weights use the layout oneDNN picks (tag::any); the
// caller packs into pd.weights_desc(). Throw kUnsupported naming `what` when oneDNN has
// no implementation or only its `ref` one.
struct MatmulProgram {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul primitive;
};
// src [m, k] a_type × weights [k, n] w_type -> dst [m, n] out_type (f32, s8 or s32 from
// the key), plus an f32 bias when key.epilogue has Epilogue::kBias. Key: key.to_string(), and
// " plain-weights" with `plain_weights`: the weights then in their stored [n, k] row-major
// order (oneDNN's `ba` for [k, n]) instead of the blocked layout oneDNN picks (tag::any).
std::shared_ptr<MatmulProgram> matmul_program(ProgramCache& cache, const GemmKey& key,
                                              const std::string& what, bool plain_weights = false);

struct ConvProgram {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward primitive;
};
// NHWC activations, OIHW logical weights, symmetric padding.
struct ConvShape {
  int64_t batch, height, width, in_channels, out_channels, kernel_h, kernel_w;
  int64_t out_height, out_width;
  int stride, padding;
  bool bias;          // f32 bias fused into the primitive
  bool s8;            // s8 source and weights, s32 destination (W8A8)
  bool bf16 = false;  // bf16 source and weights, f32 destination; neither: f32 throughout
  std::string key() const;
};
std::shared_ptr<ConvProgram> conv_program(ProgramCache& cache, const ConvShape& shape,
                                          const std::string& what);

// Per-family factories.
// A linear's low-rank epilogue term (ir::GemmEpilogue::low_rank) as the kernels read it:
// y[r, c] += Σₖ h[r, k] · up_t[k, c], h = x · downᵀ computed by the kernel (LowRankStage).
// Under FloatPrecision::kBF16 the products are bf16 × bf16 -> f32 (AVX512_BF16 dot products of
// pairs along the rank): up_pairs instead of up_t, and h rounded to bf16 as it is read.
struct LowRankTerm {
  const float* h = nullptr;     // [rows, rank]
  const float* up_t = nullptr;  // [rank, cols]: the up weight [cols, rank] transposed, f32
  // bf16: [ceil(rank / 2), cols] pairs (up[c, 2p] low half, up[c, 2p + 1] high half; 0 past
  // the rank); up_t is then null.
  const uint32_t* up_pairs = nullptr;
  int64_t rank = 0;
};

// A linear/conv2d node's fused epilogue (ir::GemmEpilogue) as a kernel applies it at run
// time: the low-rank term (null h without one), the activation, and the residual's data (f32,
// the output's shape; null without one).
struct GemmEpilogueArgs {
  ir::Activation activation = ir::Activation::kNone;
  const float* residual = nullptr;
  LowRankTerm low_rank;
  // A GEGLU epilogue (ir::GemmEpilogue::geglu): the gated rows [rows, cols / 2] go here (the
  // node's output) instead of over the GEMM result; only a low-rank term is set beside it
  // (added before the gate).
  float* geglu_out = nullptr;
  // These arguments for the rows [r0, ...) of a kernel that runs its rows in chunks: the
  // low-rank term's h and the residual start at row r0 (geglu_out is the caller's to set).
  GemmEpilogueArgs from_row(int64_t r0, int64_t cols) const {
    GemmEpilogueArgs e = *this;
    if (e.low_rank.h) e.low_rank.h += r0 * e.low_rank.rank;
    if (e.residual) e.residual += r0 * cols;
    return e;
  }
  // The node's epilogue with the residual taken from the bound inputs (its last one); the
  // low-rank term is the kernel's to fill (LowRankStage), geglu_out GegluStage's.
  static GemmEpilogueArgs of(const ir::GemmEpilogue& e, std::span<const TensorView> inputs) {
    return {e.activation, e.residual ? inputs.back().as<const float>() : nullptr, {}, nullptr};
  }
};

// y [rows, n] = x[:, :n] · gelu(x[:, n:]) for x [rows, 2n] (kGeglu, and the GEGLU epilogue of
// kernels whose GEMM ends in a oneDNN primitive), over the OpenMP team.
void geglu_rows(const float* x, int64_t rows, int64_t n, float* y);
// The same on the calling thread alone (for passes that already split rows among threads).
void geglu_rows_serial(const float* x, int64_t rows, int64_t n, float* y);

// A linear's matmul programs in chunks of rows: `rows` per chunk (all key.m but under a GEGLU
// epilogue: gemm.cpp says why), `chunk` for them and `last` for a run's last chunk when it has
// fewer (null otherwise). The chunks restart every `period` rows: key.m, or a sample's rows
// where oneDNN's program for them would make a sample's numbers depend on the samples beside it
// (gemm.cpp, chunked_matmul). Both read one weights layout (chunk->pd.weights_desc()); where
// oneDNN would want two, one chunk of all of a period's rows.
struct ChunkedMatmul {
  int64_t rows = 0;
  int64_t period = 0;
  std::shared_ptr<MatmulProgram> chunk, last;
  const MatmulProgram& for_rows(int64_t n) const { return n == rows ? *chunk : *last; }
  // f(r0, rows, program) for each chunk of the m rows, in order.
  template <class F>
  void for_each_chunk(int64_t m, F&& f) const {
    for (int64_t p0 = 0; p0 < m; p0 += period) {
      const int64_t end = std::min(p0 + period, m);
      for (int64_t r0 = p0; r0 < end; r0 += rows) {
        const int64_t n = std::min(rows, end - r0);
        f(r0, n, for_rows(n));
      }
    }
  }
};
// sample_rows: the GEMM rows of one sample (gemm_rows_per_sample), which divides key.m.
ChunkedMatmul chunked_matmul(ProgramCache& cache, const GemmKey& key, const ir::GemmEpilogue& e,
                             const std::string& what, int64_t sample_rows,
                             bool plain_weights = false);
// A linear's GEMM rows per sample for its input x [samples, ..., k]: 1 for x [samples, k].
int64_t gemm_rows_per_sample(const Shape& x, int64_t k);

// A linear kernel's side of a GEGLU epilogue (ir::GemmEpilogue::geglu): its GEMM writes the
// full result of a chunk of rows [rows, cols] into this workspace, and the epilogue gates it
// into the node's output [rows, cols / 2]. Inactive (0 bytes; the GEMM writes the output)
// without one.
class GegluStage {
 public:
  GegluStage(const ir::GemmEpilogue& e, int64_t rows, int64_t cols)
      : buffer_(e.geglu ? static_cast<size_t>(rows * cols) * sizeof(float) : 0,
                "GEGLU epilogue's GEMM result") {}
  bool active() const { return buffer_.bytes() > 0; }
  size_t bytes() const { return buffer_.bytes(); }
  void bind(void* workspace) { buffer_.bind(workspace); }
  size_t own_bytes() const { return buffer_.own_bytes(); }
  // Where the GEMM writes: the stage's buffer when active, else the node's output.
  void* gemm_out(void* output) { return active() ? buffer_.get() : output; }

 private:
  KernelWorkspace buffer_;
};

// y [n] = act(y) + residual, in place — for kernels whose GEMM (oneDNN f32) ends without a
// pass of our own to fold the epilogue into. No low-rank term (apply_gemm_epilogue_rows).
void apply_gemm_epilogue(float* y, int64_t n, const GemmEpilogueArgs& epilogue);
// The same over one span, single-threaded (residual may be null).
void activate_and_add(float* y, const float* residual, int64_t n, ir::Activation activation);
// y [rows, cols] = act(y + low-rank term) + residual, in place, the whole epilogue: row group
// by row group, so each group's rows stay in cache between the term and the rest.
void apply_gemm_epilogue_rows(float* y, int64_t rows, int64_t cols,
                              const GemmEpilogueArgs& epilogue);
// Rows [r0, r1) of y [*, cols]: y += the low-rank term, then act and residual (the epilogue's
// last steps), single-threaded — for passes that already split rows among threads.
void finish_low_rank_rows(float* y, int64_t r0, int64_t r1, int64_t cols,
                          const GemmEpilogueArgs& epilogue);
// Rows per group of the low-rank passes: 16, the AMX tiles' rows (the vector loops do 8 at once).
inline constexpr int64_t kLowRankRowGroup = 16;

// finish_low_rank_rows for a pass that walks its rows in groups on one thread: the AMX tile
// configuration (where the term's bf16 products take tiles) is loaded once here and released
// by the destructor, not per group. One per thread and pass; nothing else may use the tiles
// on this thread while it lives.
class LowRankRows {
 public:
  LowRankRows(const GemmEpilogueArgs& epilogue, int64_t cols);
  ~LowRankRows();
  LowRankRows(const LowRankRows&) = delete;
  LowRankRows& operator=(const LowRankRows&) = delete;
  // finish_low_rank_rows(y, r0, r1, cols, epilogue).
  void finish(float* y, int64_t r0, int64_t r1);

 private:
  const GemmEpilogueArgs& epilogue_;
  int64_t cols_;
  bool tiles_ = false;
};

// A linear kernel's side of a low-rank epilogue: h = x · downᵀ (a oneDNN f32 matmul reading
// the down weight in its stored order, as the separate down linear did: the same numbers) and
// the up weight laid out for the epilogue, both in a workspace at each run — LoRA adapters
// change between executables, and resident copies would double their memory. Inactive for a
// node without a low-rank term.
class LowRankStage {
 public:
  // kBF16 (which the backend passes only where the CPU has bf16 dot products): the term's
  // products in bf16. s8_down: h from the kernel's W8A8-quantized x (prepare_run's xq) and the
  // down quantized per row at each run, by an s8 · s8 product (the down's FMAs were a rank-32
  // LoRA's largest cost left on 2 cores once the up was in the epilogue; x's quantization
  // exists already).
  LowRankStage(const PrepareContext& ctx, FloatPrecision precision, bool s8_down = false);
  bool active() const { return down_index_ >= 0; }
  size_t workspace_bytes() const { return workspace_.bytes(); }
  void bind_workspace(void* workspace) { workspace_.bind(workspace); }
  // Its workspace placed in one binding after `own` bytes of the kernel's (at a 64-byte
  // boundary): the kernel's workspace_bytes() and bind_workspace() with this stage in them.
  size_t workspace_bytes_after(size_t own) const { return align_up(own) + workspace_bytes(); }
  void bind_workspace_after(void* workspace, size_t own) {
    bind_workspace(workspace ? static_cast<uint8_t*>(workspace) + align_up(own) : nullptr);
  }
  // Computes h and fills epilogue->low_rank: from x (inputs[0], f32 [M, K]), or with s8_down
  // from xq (s8 [M, K]) with its per-row scales.
  void prepare_run(std::span<const TensorView> inputs, GemmEpilogueArgs* epilogue,
                   const int8_t* xq = nullptr, const float* x_row_scales = nullptr);

 private:
  int down_index_ = -1, up_index_ = -1;
  int64_t m_ = 0, k_ = 0, rank_ = 0, cols_ = 0;
  bool bf16_ = false, s8_down_ = false;
  ChunkedMatmul down_;       // per sample where the GEMM is not row-invariant (chunked_matmul)
  dnnl::reorder pack_down_;  // s8_down: the quantized down [R, K] into the program's layout
  // h f32 [M, R]; up laid out (f32 [R, cols] or bf16 pairs); the down widened to f32 [R, K]
  // when stored 16-bit; s8_down: the down quantized s8 [R, K], its scales f32 [R] and packed.
  // Offsets 64-byte aligned.
  size_t up_at_ = 0, down_at_ = 0, down_s8_at_ = 0, down_scale_at_ = 0, down_packed_at_ = 0;
  KernelWorkspace workspace_{0, ""};
};

// kBF16: bf16 operands (packed bf16 weights, x rounded at each run), f32 accumulation and
// result. Callers pass kBF16 only where cpu_has_bf16_dot_product().
std::unique_ptr<Kernel> make_linear_kernel(const PrepareContext& ctx, FloatPrecision precision);
// residual_stream_bf16: 1x1 convolutions (the residual stream's) multiply in bf16 under kBF16
// too (conv.cpp: they stay f32 otherwise).
std::unique_ptr<Kernel> make_conv2d_kernel(const PrepareContext& ctx, FloatPrecision precision,
                                           bool residual_stream_bf16);
// Whether a linear x [..., k] · w [n, k]ᵀ / a convolution with weights w [Cout, Cin, kh, kw]
// multiplies in bf16 under FloatPrecision::kBF16, float or W8 weights alike (the others stay f32
// where bf16 does not pay for its rounding: gemm.cpp and conv.cpp say which and why).
bool linear_runs_bf16(const Shape& x, int64_t n, int64_t k);
bool conv_runs_bf16(const Shape& w, bool residual_stream_bf16);
// y [n] = bf16(x [n]) (round to nearest even, core/half.h's f32_to_bf16), on the OpenMP team.
void round_to_bf16(const float* x, uint16_t* y, int64_t n);
// Weight input 1 stored s8 with per-row scales. Throw kInvalidModel (naming the weight)
// when the scale is missing or not f32[rows], kUnsupported when oneDNN has only `ref`.
// `precision` applies to kW8 (its widened weights and float activations); kW8A8 ignores it.
// A linear whose x is quantized (DType::kS8Rows, from a layer norm with quantize_output) runs
// W8A8 on x's values and row scales as bound (no quantize pass); the backend admits it only
// under kW8A8 and where the product is not the GEMV (runs_as_gemv).
std::unique_ptr<Kernel> make_linear_s8_kernel(const PrepareContext& ctx, Int8Mode mode,
                                              FloatPrecision precision);
// Whether a linear over x of this shape with K inputs runs as the s8 GEMV kernel (few rows per
// sample; gemm_int8.cpp says why).
bool runs_as_gemv(const Shape& x, int64_t k);
std::unique_ptr<Kernel> make_conv2d_s8_kernel(const PrepareContext& ctx, Int8Mode mode,
                                              FloatPrecision precision);
// The products' operands (attention.cpp): kF32; kBF16: Q, K, V and the probabilities rounded
// to bf16 (f32 scores, softmax and accumulation), only where the CPU has bf16 dot products;
// kInt8: the fused int8 kernel (attention_int8.h) where the CPU has AVX-512 VNNI and no AMX,
// else as kBF16.
enum class AttentionPrecision { kF32, kBF16, kInt8 };
std::unique_ptr<Kernel> make_attention_kernel(const PrepareContext& ctx,
                                              AttentionPrecision precision);
// What make_attention_kernel runs when asked for `requested` with head dims d, dv on this CPU
// (kInt8 -> kBF16 -> kF32 as the CPU lacks what each needs).
AttentionPrecision attention_precision_run(AttentionPrecision requested, int64_t d, int64_t dv);
// $HYRT_CPU_ATTENTION, a knob for measuring, read once: f32 keeps every attention f32 (the
// backend's choice); onednn / fused runs bf16 attention as oneDNN's products / hyrt's fused bf16
// kernel wherever a reduced precision runs at all, int8 as the fused int8 kernel (where the CPU
// has VNNI, AMX or not; attention.cpp); unset or anything else: the defaults.
enum class AttentionOverride { kNone, kF32, kOneDnn, kFused, kInt8 };
AttentionOverride attention_override();
// Group and layer norm; a layer norm with ir::NormAttrs::quantize_output writes s8rows: each
// f32 row quantized by quantize_rows_s8 (the W8A8 linear's own rule: the same bits).
std::unique_ptr<Kernel> make_norm_kernel(const PrepareContext& ctx);           // group, layer
std::unique_ptr<Kernel> make_elementwise_kernel(const PrepareContext& ctx);    // activations,
                                                                               // add/mul, scale,
                                                                               // softmax
std::unique_ptr<Kernel> make_data_movement_kernel(const PrepareContext& ctx);  // concat, upsample,
                                                                               // permute, reshape,
                                                                               // embeddings

}  // namespace hyrt::backend::cpu

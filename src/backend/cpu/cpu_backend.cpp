// The CPU backend: op support, the roofline estimate, host memory, and dispatch of
// prepare() to the per-family kernel factories (cpu_kernels.h).
#include "backend/cpu/cpu_backend.h"

#include <cstdlib>

#include <algorithm>
#include <dnnl.hpp>
#include <mutex>
#include <string_view>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/int8_common.h"
#include "core/half.h"
#include "core/parallel.h"

namespace hyrt::backend {
namespace cpu {

namespace {

// The stored tensor of weight input `i`, checked against the graph's value.
TensorView stored_weight(const PrepareContext& ctx, size_t i) {
  const ir::Value& v = ctx.input(i);
  HYRT_ASSERT(v.kind == ir::ValueKind::kWeight, "input ", i, " of '", ctx.node.name,
              "' is not a weight");
  const TensorView stored = ctx.weights.get(v.name);
  HYRT_CHECK(stored.shape == v.shape && stored.dtype == v.dtype, kInvalidModel, "weight '", v.name,
             "' is stored as ", dtype_name(stored.dtype), stored.shape.to_string(), " but node '",
             ctx.node.name, "' expects ", dtype_name(v.dtype), v.shape.to_string());
  return stored;
}

SharedBuffer cached(const PrepareContext& ctx, std::string_view name, const TensorView& stored,
                    std::string_view form, const dnnl::memory::desc& layout,
                    const std::function<AlignedBuffer()>& make, size_t* held_bytes = nullptr) {
  // The form names the stored bytes too (weight_cache.h: a guard against a replaced tensor).
  const std::string what = str_cat(form, " of ", dtype_name(stored.dtype), stored.shape.to_string(),
                                   " at ", reinterpret_cast<uintptr_t>(stored.data));
  WeightCache::Lookup got =
      ctx.weight_cache.get_or_make({ctx.weights.generation_of(name), name, what, layout}, make);
  if (got.extra_layout && held_bytes) *held_bytes += got.buffer->size();
  return std::move(got.buffer);
}

}  // namespace

SharedBuffer shared_weight(const PrepareContext& ctx, size_t i, std::string_view form,
                           const dnnl::memory::desc& layout,
                           const std::function<AlignedBuffer()>& make, size_t* held_bytes) {
  const TensorView stored = stored_weight(ctx, i);
  return cached(ctx, ctx.input(i).name, stored, form, layout, make, held_bytes);
}

SharedBuffer shared_weight_data(const PrepareContext& ctx, std::string_view name,
                                const TensorView& stored, std::string_view form,
                                const std::function<AlignedBuffer()>& make) {
  return cached(ctx, name, stored, form, dnnl::memory::desc(), make);
}

SharedBuffer shared_weight_f32(const PrepareContext& ctx, size_t i) {
  const TensorView stored = stored_weight(ctx, i);
  const std::string& name = ctx.input(i).name;
  return cached(ctx, name, stored, "f32 copy", dnnl::memory::desc(), [&] {
    const size_t n = static_cast<size_t>(stored.shape.numel());
    AlignedBuffer out(std::max<size_t>(n, 1) * sizeof(float),
                      str_cat("an f32 copy of weight '", name, "'"));
    convert_to_f32(stored.dtype, stored.data, out.as<float>(), n);
    return out;
  });
}

AlignedBuffer pack_weights(const dnnl::memory::desc& stored, const void* data,
                           const dnnl::memory::desc& packed, std::string_view what) {
  AlignedBuffer out(packed.get_size(), what);
  dnnl::memory stored_mem(stored, dnnl_engine(), const_cast<void*>(data));
  dnnl::memory packed_mem(packed, dnnl_engine(), out.data());
  dnnl::reorder(stored_mem, packed_mem).execute(dnnl_stream(), stored_mem, packed_mem);
  dnnl_stream().wait();
  return out;
}

namespace {
// stage_weight_f32's buffer: reused by every prepare() on this thread until end_prepare().
AlignedBuffer& weight_staging() {
  thread_local AlignedBuffer staging;
  return staging;
}
}  // namespace

const float* stage_weight_f32(const PrepareContext& ctx, size_t i) {
  const ir::Value& v = ctx.input(i);
  const TensorView stored = stored_weight(ctx, i);
  const size_t n = static_cast<size_t>(v.shape.numel());
  AlignedBuffer& staging = weight_staging();
  if (staging.size() < n * sizeof(float))
    staging = AlignedBuffer(std::max<size_t>(n, 1) * sizeof(float),
                            str_cat("an f32 staging copy of weight '", v.name, "'"));
  float* out = staging.as<float>();
  // Large weights: convert in parallel chunks (f16 -> f32 is memory-bound).
  parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t b, int64_t e) {
    convert_to_f32(stored.dtype,
                   static_cast<const char*>(stored.data) + b * dtype_size(stored.dtype), out + b,
                   static_cast<size_t>(e - b));
  });
  return out;
}

void release_weight_staging() {
  weight_staging() = AlignedBuffer();
}

size_t weight_staging_bytes() {
  return weight_staging().size();
}

PackedFloatWeight::PackedFloatWeight(const PrepareContext& ctx, size_t i,
                                     const dnnl::memory::desc& stored_f32,
                                     const dnnl::memory::desc& packed, FloatPrecision precision,
                                     bool runs_bf16, size_t* held_bytes) {
  const DType stored = ctx.input(i).dtype;
  if (precision == FloatPrecision::kBF16 && !runs_bf16 &&
      (stored == DType::kF16 || stored == DType::kBF16))
    held_16bit_ = stored;
  const std::string_view form = runs_bf16               ? "bf16 packed"
                                : !held_16bit_          ? "f32 packed"
                                : stored == DType::kF16 ? "f32 packed, held f16"
                                                        : "f32 packed, held bf16";
  buffer_ = shared_weight(
      ctx, i, form, packed,
      [&] {
        AlignedBuffer f32 = pack_weights(stored_f32, stage_weight_f32(ctx, i), packed,
                                         ctx.node.name + " packed weights");
        if (!held_16bit_) return f32;
        const size_t n = f32.size() / sizeof(float), size = dtype_size(*held_16bit_);
        AlignedBuffer out(std::max<size_t>(n, 1) * size,
                          ctx.node.name + " packed weights (16-bit)");
        parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t b, int64_t e) {
          convert_from_f32(f32.as<float>() + b, *held_16bit_, out.as<char>() + b * size,
                           static_cast<size_t>(e - b));
        });
        return out;
      },
      held_bytes);
}

size_t PackedFloatWeight::workspace_bytes() const {
  return held_16bit_ ? buffer_->size() / dtype_size(*held_16bit_) * sizeof(float) : 0;
}

const void* PackedFloatWeight::data(void* workspace) const {
  if (!held_16bit_) return buffer_->data();
  const size_t size = dtype_size(*held_16bit_), n = buffer_->size() / size;
  auto* out = static_cast<float*>(workspace);
  parallel_for(static_cast<int64_t>(n), 1 << 16, [&](int64_t b, int64_t e) {
    convert_to_f32(*held_16bit_, buffer_->as<char>() + b * size, out + b,
                   static_cast<size_t>(e - b));
  });
  return out;
}

F32Inputs::F32Inputs(const PrepareContext& ctx) {
  converted_.resize(ctx.node.inputs.size());
  for (size_t i = 0; i < ctx.node.inputs.size(); ++i)
    if (ctx.input_is_weight(i)) converted_[i] = shared_weight_f32(ctx, i);
}

dnnl::engine& dnnl_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& dnnl_stream(int thread_slot) {
  // One stream per thread slot, created on first use; slots never move once created.
  static std::mutex mu;
  static std::vector<std::unique_ptr<dnnl::stream>> streams;
  std::lock_guard<std::mutex> lock(mu);
  if (static_cast<size_t>(thread_slot) >= streams.size()) streams.resize(thread_slot + 1);
  auto& s = streams[thread_slot];
  if (!s) s = std::make_unique<dnnl::stream>(dnnl_engine());
  return *s;
}

void refuse_reference_impl(const std::string& impl_info, const std::string& what) {
  HYRT_CHECK(impl_info.rfind("ref", 0) != 0, kUnsupported, what,
             ": oneDNN only offers its reference implementation '", impl_info,
             "' (thousands of times slower); refusing it");
}

namespace {

// --- Roofline constants (documented in estimate_us) -------------------------------------
// f32 GEMM rate: oneDNN brgemm measured 358–407 GFLOP/s on 2 Zen 5 cores
// (../shared/notes/onednn-2.6.md); 350 / 2 = 175 GFLOP/s per thread, rounded down for
// the less regular shapes.
constexpr double kGemmFlopsPerThread = 175e9;
// Memory: ~20 GB/s sustained for our streaming kernels on the 2-core machines.
constexpr double kBytesPerSecond = 20e9;
// Per-invocation overhead: argument binding, OpenMP fork/join, oneDNN execute.
constexpr double kOverheadUs = 2.0;

// Inputs that kernels copy to f32 at prepare when they are weights (cpu_kernels.h).
bool converts_weight_input(ir::OpKind op, size_t i) {
  switch (op) {
    case ir::OpKind::kLinear:
    case ir::OpKind::kConv2d:
    case ir::OpKind::kGroupNorm:
    case ir::OpKind::kLayerNorm:
      return i >= 1;
    case ir::OpKind::kAdd:
    case ir::OpKind::kMul:
    case ir::OpKind::kEmbedding:
      return i == 1;
    case ir::OpKind::kConcat:
      return true;
    default:
      return false;
  }
}

bool is_float_storage(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

class CpuMemory final : public DeviceMemory {
 public:
  CpuMemory(size_t bytes, std::string_view what) : buf_(bytes, what) {}
  void* data() override { return buf_.data(); }
  size_t size() const override { return buf_.size(); }

 private:
  AlignedBuffer buf_;
};

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuBackendOptions& options)
      : int8_mode_(usable(options.int8_mode)),
        float_precision_(usable(options.float_precision)),
        num_threads_(options.num_threads) {
    if (num_threads_ > 0) set_num_threads(num_threads_);
    // oneDNN keeps its own cache of every primitive created (1024 by default, process-wide,
    // never shrinking): hyrt's ProgramCache already keeps the programs it reuses, so oneDNN's
    // need only cover weight reorders made while preparing. Bounded, a process that visits
    // many shapes does not grow without end, and what it keeps after a model is unloaded stays
    // small: bf16 AMX primitives hold ~0.5 MiB of JIT code each, so 64 of them kept 32 MiB
    // (tests/library's unload check), 16 keep 16 MiB. The user's ONEDNN_PRIMITIVE_CACHE_CAPACITY
    // wins.
    if (!std::getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")) dnnl::set_primitive_cache_capacity(16);
  }
  // OpenMP's thread count is a per-thread setting: a run from another thread than the one
  // that made this backend must ask for this backend's count again.
  void attach_thread() override {
    if (num_threads_ > 0) set_num_threads(num_threads_);
  }

  std::string_view name() const override { return "cpu"; }
  std::string library() const override {
    const dnnl_version_t* v = dnnl_version();
    const char* runtime = v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other";
    return str_cat("oneDNN ", v->major, ".", v->minor, ".", v->patch, " (", runtime, ")");
  }
  void set_int8_mode(Int8Mode mode) override { int8_mode_ = usable(mode); }
  void set_float_precision(FloatPrecision precision) override {
    float_precision_ = usable(precision);
  }
  FloatPrecision float_precision() const override { return float_precision_; }
  bool copies_weights() const override { return true; }
  DeviceType device_type() const override { return DeviceType::kHost; }

  bool supports(const ir::Graph& graph, const ir::Node& node) const override {
    // Stacked projections and packed attention inputs (plan::stack_projections) are for
    // backends whose separate GEMMs leave the machine idle; the host runs them apart.
    if (node.gemm_weights() != 1 || ir::packed_qkv(node.attrs)) return false;
    const ir::Value& out = graph.value(node.output);
    if (out.dtype == DType::kS8Rows ||
        (!node.inputs.empty() && graph.value(node.inputs[0]).dtype == DType::kS8Rows))
      return supports_quantized_activation(graph, node);
    if (out.dtype != DType::kF32) return false;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      const ir::Value& in = graph.value(node.inputs[i]);
      const bool is_ids = node.op == ir::OpKind::kEmbedding && i == 0;
      if (is_ids) {
        if (in.dtype != DType::kS32) return false;
      } else if (in.kind == ir::ValueKind::kWeight) {
        // s8 "8-bit S" weights: only as the GEMM operand of linear/conv2d (int8 kernels).
        // Kernels convert f16/bf16 weights to f32 at prepare only where a weight is
        // expected; elsewhere (a weight fed to, say, a permute) they read the bound view
        // and need f32.
        if (in.dtype == DType::kS8) {
          if (i != 1 || (node.op != ir::OpKind::kLinear && node.op != ir::OpKind::kConv2d))
            return false;
          continue;
        }
        if (!is_float_storage(in.dtype)) return false;
        if (!converts_weight_input(node.op, i) && in.dtype != DType::kF32) return false;
      } else if (in.dtype != DType::kF32) {
        return false;
      }
    }
    // GEMM-class weights (a low-rank term's down and up too) are read at prepare or from their
    // stored views, so they must be graph weights. A fused residual is an f32 activation (read
    // as bound).
    if (node.op == ir::OpKind::kLinear || node.op == ir::OpKind::kConv2d) {
      const ir::ValueId residual = node.gemm_residual();
      for (size_t i = 1; i < node.inputs.size(); ++i)
        if ((graph.value(node.inputs[i]).kind == ir::ValueKind::kWeight) !=
            (node.inputs[i] != residual))
          return false;
    }
    if (node.op == ir::OpKind::kEmbedding &&
        graph.value(node.inputs[1]).kind != ir::ValueKind::kWeight)
      return false;
    return true;
  }

  // Roofline: t = flops / (175 GFLOP/s · threads) + bytes / 20 GB/s + 2 µs, where bytes
  // counts every input and the output once (weights as f32, which is how they are kept),
  // and flops is the GEMM work for linear/conv/attention and 0 otherwise (the other ops
  // are memory-bound). Summing rather than taking the max errs on the slow side, which
  // is what placement wants from a host estimate.
  double estimate_us(const ir::Graph& graph, const ir::Node& node) const override {
    double bytes = static_cast<double>(graph.value(node.output).shape.numel()) * 4.0;
    for (ir::ValueId v : node.inputs)
      bytes += static_cast<double>(graph.value(v).shape.numel()) * 4.0;
    if (ir::op_traits(node.op).view) bytes = 0;  // reshape moves no data in place
    const double flops = gemm_flops(graph, node);
    const double threads = std::max(1, num_threads());
    return 1e6 * (flops / (kGemmFlopsPerThread * threads) + bytes / kBytesPerSecond) + kOverheadUs;
  }

  std::unique_ptr<Kernel> prepare(const ir::Graph& graph, const ir::Node& node,
                                  const weights::WeightSource& weights,
                                  ProgramCache& cache) override {
    HYRT_CHECK(supports(graph, node), kUnsupported, "cpu backend cannot run node '", node.name,
               "' (", ir::op_name(node.op), ") with these dtypes");
    const PrepareContext ctx{graph, node, weights, cache, weight_cache_};
    switch (node.op) {
      case ir::OpKind::kLinear:
        if (ctx.input(1).dtype == DType::kS8)
          return make_linear_s8_kernel(ctx, int8_mode_, float_precision_);
        return make_linear_kernel(ctx, float_precision_);
      case ir::OpKind::kConv2d:
        if (ctx.input(1).dtype == DType::kS8)
          return make_conv2d_s8_kernel(ctx, int8_mode_, float_precision_);
        // (The graph scan only where the flag can matter: under kBF16.)
        return make_conv2d_kernel(
            ctx, float_precision_,
            float_precision_ == FloatPrecision::kBF16 && w8a8_on_quantized(graph));
      case ir::OpKind::kAttention:
        return make_attention_kernel(ctx, attention_precision(graph, node));
      case ir::OpKind::kGroupNorm:
      case ir::OpKind::kLayerNorm:
        return make_norm_kernel(ctx);
      case ir::OpKind::kSoftmax:
      case ir::OpKind::kGelu:
      case ir::OpKind::kGeglu:
      case ir::OpKind::kQuickGelu:
      case ir::OpKind::kSilu:
      case ir::OpKind::kRelu:
      case ir::OpKind::kTanh:
      case ir::OpKind::kAdd:
      case ir::OpKind::kMul:
      case ir::OpKind::kScale:
        return make_elementwise_kernel(ctx);
      case ir::OpKind::kConcat:
      case ir::OpKind::kUpsampleNearest:
      case ir::OpKind::kTimestepEmbedding:
      case ir::OpKind::kEmbedding:
      case ir::OpKind::kReshape:
      case ir::OpKind::kPermute:
      case ir::OpKind::kSlice:
        return make_data_movement_kernel(ctx);
    }
    fail(ErrorCode::kUnsupported, "cpu backend: unknown op in node '", node.name, "'");
  }

  std::unique_ptr<DeviceMemory> allocate(size_t bytes, std::string_view what) override {
    return std::make_unique<CpuMemory>(bytes, what);
  }

  // The weights its kernels keep packed or converted, each counted once (weight_cache.h; the
  // kernels' held_bytes() count their shape's extra layouts among these too).
  size_t resident_weight_bytes() const override { return weight_cache_.live_bytes(); }
  const WeightCache& weight_cache() const { return weight_cache_; }
  void end_prepare() override { release_weight_staging(); }

  void drop_idle() override {
    weight_cache_.prune();
    // oneDNN's own primitive cache too (the constructor bounds it): our programs hold their
    // primitives themselves, so what it keeps after an unload is only JIT code — up to 16 MiB
    // of bf16 AMX kernels, enough to fail the library's unload check on a minimal root.
    const int capacity = dnnl::get_primitive_cache_capacity();
    dnnl::set_primitive_cache_capacity(0);
    dnnl::set_primitive_cache_capacity(capacity);
  }

 private:
  // Attention in bf16 (attention.cpp) where it is within the precision the graph already
  // runs at — under FloatPrecision::kBF16, or W8A8 on a graph with 8-bit S weights (W8A8's own
  // error vs f32, 4.2e-2 relative L2 on the golden model, dwarfs bf16's ~3e-3) — on a CPU with
  // bf16 dot products, for attention big enough to matter (Tq·Tk >= 256², not the text
  // encoders' 77 tokens). Otherwise f32. W8A8 asks for int8 products (attention_int8.h: every
  // other GEMM of that mode already rounds its activations to 8 bits), which the kernel takes
  // where the CPU has AVX-512 VNNI (with or without AMX). $HYRT_CPU_ATTENTION=f32 keeps f32
  // everywhere, onednn / fused keep int8 out (attention_override()).
  AttentionPrecision attention_precision(const ir::Graph& graph, const ir::Node& node) const {
    const AttentionOverride forced = attention_override();
    if (forced == AttentionOverride::kF32) return AttentionPrecision::kF32;
    const Shape& q = graph.value(node.inputs[0]).shape;
    const Shape& k = graph.value(node.inputs[1]).shape;
    if (q.rank() != 3 || k.rank() != 3 || q[1] * k[1] < 256 * 256) return AttentionPrecision::kF32;
    const bool w8a8 = w8a8_on_quantized(graph);
    if (!w8a8 && float_precision_ != FloatPrecision::kBF16) return AttentionPrecision::kF32;
    // make_attention_kernel falls back from kInt8 to kBF16 (and that to kF32) where the CPU
    // lacks what it needs.
    if (forced == AttentionOverride::kInt8 || (w8a8 && forced == AttentionOverride::kNone))
      return AttentionPrecision::kInt8;
    return cpu_has_bf16_dot_product() ? AttentionPrecision::kBF16 : AttentionPrecision::kF32;
  }

  // Quantized activations (s8rows: plan::quantize_activations), only under W8A8, where they are
  // the int8 products' operand: a layer norm over an f32 activation writing them (gamma and beta
  // as for the plain one), and a linear with 8-bit S weights reading them as x (any epilogue but
  // a low-rank term, which the IR refuses; not the GEMV, which reads x in f32).
  bool supports_quantized_activation(const ir::Graph& graph, const ir::Node& node) const {
    if (int8_mode_ != Int8Mode::kW8A8) return false;
    const ir::Value& x = graph.value(node.inputs[0]);
    if (node.op == ir::OpKind::kLayerNorm) {
      if (x.dtype != DType::kF32 || x.kind == ir::ValueKind::kWeight) return false;
      for (size_t i = 1; i < node.inputs.size(); ++i)
        if (!is_float_storage(graph.value(node.inputs[i]).dtype)) return false;
      return true;
    }
    if (node.op != ir::OpKind::kLinear || x.dtype != DType::kS8Rows) return false;
    const ir::Value& w = graph.value(node.inputs[1]);
    if (w.kind != ir::ValueKind::kWeight || w.dtype != DType::kS8 ||
        graph.value(node.output).dtype != DType::kF32 || runs_as_gemv(x.shape, w.shape[1]))
      return false;
    const ir::ValueId residual = node.gemm_residual();
    for (size_t i = 2; i < node.inputs.size(); ++i) {
      const ir::Value& v = graph.value(node.inputs[i]);
      if (node.inputs[i] == residual
              ? v.dtype != DType::kF32 || v.kind == ir::ValueKind::kWeight
              : v.kind != ir::ValueKind::kWeight || !is_float_storage(v.dtype))
        return false;
    }
    return true;
  }

  // W8A8 on a graph with 8-bit S weights (a quantized model's): its own error against f32
  // (4.1–4.3e-2 relative L2 on the golden UNet) dwarfs bf16's rounding, so the parts kept f32
  // for bf16's sake may round too. The 16-bit 1x1 convolutions of the residual stream (kept out
  // of int8 by weights/quantize.h, and out of bf16 by conv.cpp) then multiply in bf16 where
  // the precision is kBF16: golden UNet W8A8 error 4.17 / 4.31 / 4.07e-2 -> 3.85 / 4.03 /
  // 4.07e-2 (noise), the SD 1.5 512² W8A8 step on 2 Zen 4 cores ~3.04 -> ~2.72 s (conv2d
  // 1386 -> 1155 ms).
  bool w8a8_on_quantized(const ir::Graph& graph) const {
    if (int8_mode_ != Int8Mode::kW8A8) return false;
    for (const ir::Value& v : graph.values())
      if (v.kind == ir::ValueKind::kWeight && v.dtype == DType::kS8) return true;
    return false;
  }

  // W8A8 needs int8 dot products (VNNI or AMX); W8 runs anywhere. bf16 products need bf16
  // dot-product instructions: oneDNN 2.6 emulates them elsewhere, slower than f32.
  static Int8Mode usable(Int8Mode mode) {
    return mode == Int8Mode::kW8A8 && !cpu_has_int8_dot_product() ? Int8Mode::kW8 : mode;
  }
  static FloatPrecision usable(FloatPrecision precision) {
    return precision == FloatPrecision::kBF16 && !cpu_has_bf16_dot_product() ? FloatPrecision::kF32
                                                                             : precision;
  }

  Int8Mode int8_mode_;
  FloatPrecision float_precision_;
  int num_threads_ = 0;  // CpuBackendOptions::num_threads
  // Kernels' packed/converted weights, shared between them (and so between executables).
  // Outlives every kernel (a Backend outlives its kernels); kernels own the buffers anyway.
  WeightCache weight_cache_;

  static double gemm_flops(const ir::Graph& graph, const ir::Node& node) {
    auto shape = [&](size_t i) -> const Shape& { return graph.value(node.inputs[i]).shape; };
    const Shape& out = graph.value(node.output).shape;
    switch (node.op) {
      case ir::OpKind::kLinear:  // 2·M·N·K
        return 2.0 * static_cast<double>(out.numel()) * static_cast<double>(shape(0).dim(-1));
      case ir::OpKind::kConv2d:  // 2·(B·Ho·Wo·Cout)·(Cin·kh·kw)
        return 2.0 * static_cast<double>(out.numel()) *
               static_cast<double>(shape(1).numel() / shape(1)[0]);
      case ir::OpKind::kAttention: {  // 2·B·Tq·Tk·(H·D + H·Dv)
        const Shape &q = shape(0), &k = shape(1), &v = shape(2);
        return 2.0 * static_cast<double>(q[0] * q[1] * k[1]) * static_cast<double>(q[2] + v[2]);
      }
      default:
        return 0.0;
    }
  }
};

}  // namespace

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") != 0 &&
                          (static_cast<unsigned>(dnnl::get_effective_cpu_isa()) &
                           static_cast<unsigned>(dnnl_cpu_isa_avx512_core)) ==
                              static_cast<unsigned>(dnnl_cpu_isa_avx512_core);
  return has;
}

bool cpu_has_amx() {
  // dnnl_cpu_isa_avx512_core_amx's bits over avx512_core_bf16: the AMX tile ISA.
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const unsigned amx_bits = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_amx) &
                            ~static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16);
  return (isa & amx_bits) != 0;
}

}  // namespace cpu

bool cpu_has_bf16_dot_product() {
  // As cpu_has_int8_dot_product: avx512_core_bf16's bit over avx512_core_vnni (AMX includes it).
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const unsigned bf16_bit = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16) &
                            ~static_cast<unsigned>(dnnl_cpu_isa_avx512_core_vnni);
  return (isa & bf16_bit) != 0;
}

bool cpu_has_int8_dot_product() {
  // oneDNN ISA values are feature bit sets; dnnl_cpu_isa_avx512_core_vnni's extra bit over
  // avx512_core is VNNI, and every AMX level includes it. AVX2-VNNI is left out: oneDNN
  // 2.6's s8·s8 kernels for it are untested here.
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const unsigned vnni_bit = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_vnni) &
                            ~static_cast<unsigned>(dnnl_cpu_isa_avx512_core);
  return (isa & vnni_bit) != 0;
}

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options) {
  return std::make_unique<cpu::CpuBackend>(options);
}

CpuWeightCacheStats cpu_weight_cache_stats(const Backend& backend) {
  const auto* cpu = dynamic_cast<const cpu::CpuBackend*>(&backend);
  HYRT_CHECK(cpu != nullptr, kInvalidArgument, "cpu_weight_cache_stats: backend '", backend.name(),
             "' is not the CPU backend");
  const cpu::WeightCache::Stats s = cpu->weight_cache().stats();
  return {s.hits, s.misses, s.extra_layouts, s.entries, s.bytes};
}

}  // namespace hyrt::backend

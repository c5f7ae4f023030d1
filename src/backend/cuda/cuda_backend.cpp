// The CUDA backend: op support, the roofline estimate (replaced by measurements once a key
// is tuned), device memory and copies, and dispatch of prepare() to the GEMM programs.
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <limits>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "backend/cuda/convert_kernels.h"
#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_ops.h"
#include "core/env.h"
#include "core/error.h"
#include "core/log.h"
#include "core/quiet_worker.h"
#include "weights/lora.h"

namespace hyrt::backend::cuda {
namespace {

// Linear nodes whose input is an f16 or f32 activation, with a graph weight stored s8 (8-bit
// S), f16, bf16 or f32, an optional float bias weight and any fused epilogue
// (gemm_inputs_supported); or whose input is quantized (s8rows), with 8-bit S weights and a
// float output held as f16 (the backend also asks that the fused W8A8 kernel applies:
// CudaBackend::supports).
bool supports_linear(const ir::Graph& graph, const ir::Node& node) {
  if (node.op != ir::OpKind::kLinear || !gemm_inputs_supported(graph, node)) return false;
  const ir::Value& x = graph.value(node.inputs[0]);
  const ir::Value& w = graph.value(node.inputs[1]);
  const ir::Value& y = graph.value(node.output);
  if (x.kind == ir::ValueKind::kWeight) return false;
  if (x.dtype == DType::kS8Rows) {
    if (w.dtype != DType::kS8 || !dtype_is_float(y.dtype) ||
        device_storage_dtype(y) != DType::kF16 || node.epilogue().low_rank)
      return false;
  } else {
    if (x.dtype != DType::kF16 && x.dtype != DType::kF32) return false;
    if (y.dtype != x.dtype) return false;
  }
  if (w.kind != ir::ValueKind::kWeight || w.shape.rank() != 2) return false;
  if (w.dtype != DType::kS8 && !dtype_is_float(w.dtype)) return false;
  return w.shape[0] > 0 && w.shape[1] > 0 && x.shape.numel() > 0;
}

// HYRT_CUDA_LORA=side: LoRA adapters run as their two GEMMs instead of merged into the layer.
bool lora_as_side_gemms() {
  static const bool side = env_is("HYRT_CUDA_LORA", "side");
  return side;
}

class CudaMemory final : public DeviceMemory {
 public:
  CudaMemory(size_t bytes, std::string_view what) : buf_(bytes, what) {}
  void* data() override { return buf_.data(); }
  size_t size() const override { return buf_.size(); }

 private:
  DeviceBuffer buf_;
};

// Page-locked host memory (Backend::allocate_host): copies to and from it are DMA transfers
// that run asynchronously, without the driver staging them through its own buffer.
class PinnedHostMemory final : public DeviceMemory {
 public:
  PinnedHostMemory(void* data, size_t bytes) : data_(data), size_(bytes) {}
  ~PinnedHostMemory() override { cudaFreeHost(data_); }
  void* data() override { return data_; }
  size_t size() const override { return size_; }

 private:
  void* data_;
  size_t size_;
};

// An event recorded on the backend's stream after an asynchronous download.
class CudaFence final : public Fence {
 public:
  CudaFence() { HYRT_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~CudaFence() override { cudaEventDestroy(event_); }
  void record(cudaStream_t stream) {
    HYRT_CUDA_CHECK(cudaEventRecord(event_, stream));
    recorded_ = true;
  }
  void wait() override {
    if (recorded_) HYRT_CUDA_CHECK(cudaEventSynchronize(event_));
  }

 private:
  cudaEvent_t event_ = nullptr;
  bool recorded_ = false;
};

// Timestamps on the backend's stream (Backend::make_timeline): one timing event per mark,
// created on first use and reused after clear().
class CudaTimeline final : public Timeline {
 public:
  explicit CudaTimeline(cudaStream_t stream) : stream_(stream) {}
  ~CudaTimeline() override {
    for (cudaEvent_t e : events_)
      cudaEventDestroy(e);
  }
  size_t mark() override {
    if (used_ == events_.size()) {
      cudaEvent_t e = nullptr;
      HYRT_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    HYRT_CUDA_CHECK(cudaEventRecord(events_[used_], stream_));
    return used_++;
  }
  double elapsed_ms(size_t a, size_t b) override {
    HYRT_CHECK(a < used_ && b < used_, kInvalidArgument, "timeline: no mark ", std::max(a, b));
    float ms = 0;
    HYRT_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[a], events_[b]));
    return ms;
  }
  void clear() override { used_ = 0; }

 private:
  cudaStream_t stream_;
  std::vector<cudaEvent_t> events_;
  size_t used_ = 0;  // marks recorded since the last clear()
};

// A CUDA graph recorded from the backend's stream (Backend::begin_capture/end_capture).
class CudaReplay final : public Replay {
 public:
  // Takes ownership of `graph`, also when instantiating it fails.
  CudaReplay(cudaGraph_t graph, cudaStream_t stream) : graph_(graph), stream_(stream) {
    const cudaError_t status = cudaGraphInstantiate(&exec_, graph_, 0);
    if (status != cudaSuccess) {
      cudaGraphDestroy(graph_);
      HYRT_CUDA_CHECK(status);
    }
  }
  ~CudaReplay() override {
    if (exec_) cudaGraphExecDestroy(exec_);
    cudaGraphDestroy(graph_);
  }
  void launch() override { HYRT_CUDA_CHECK(cudaGraphLaunch(exec_, stream_)); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

class CudaBackendImpl final : public CudaBackend {
 public:
  CudaBackendImpl(const CudaBackendOptions& options, const CudaDeviceInfo& device)
      : options_(options), policy_(options.gemm), ctx_(device, options.workspace_bytes) {}

  // W8: 8-bit S weights widened to f16 per layer, f16 activations (the f16 candidate: only
  // the weights' rounding); W8A8: the configured policy (default: the faster candidate).
  void set_int8_mode(Int8Mode mode) override {
    options_.gemm = mode == Int8Mode::kW8 ? GemmPolicy::kF16 : policy_;
  }

  // Whether a linear/conv2d node with a fused residual would run its W8A8 candidate as the
  // fused Hopper kernel, which adds the residual in its epilogue for free (no activation; int8
  // weights; W8A8 allowed). Should the roofline or autotuning pick the f16 candidate instead,
  // a pass of ours adds the residual (cuda_gemm.cpp): as dear as the add node it replaced.
  bool fused_residual_here(const ir::Graph& graph, const ir::Node& node) const {
    // HYRT_CUDA_FUSED_RESIDUAL=0 leaves such adds to their own kernel (for comparison).
    static const bool off = env_is("HYRT_CUDA_FUSED_RESIDUAL", "0");
    if (off || options_.gemm == GemmPolicy::kF16) return false;
    if (node.op != ir::OpKind::kLinear && node.op != ir::OpKind::kConv2d) return false;
    if (!gemm_inputs_supported(graph, node)) return false;
    const GemmKey key = node.op == ir::OpKind::kLinear ? linear_gemm_key(graph, node)
                                                       : conv2d_gemm_key(graph, node);
    return fused_s8_applies(key, ctx_.device(), options_.fused_s8_gemm);
  }

  std::string_view name() const override { return "cuda"; }
  // The libraries behind the kernels: the CUDA runtime, and cuDNN where the attention uses it.
  std::string library() const override {
    return str_cat(runtime_version_string(), "; cuBLASLt; attention: ", attention_library());
  }
  DeviceType device_type() const override { return DeviceType::kCuda; }

  DType storage_dtype(const ir::Value& v) const override { return device_storage_dtype(v); }

  // Linear and conv2d (GEMM programs), attention (one fused kernel), and every other op the
  // device kernels of cuda_ops.h run; reshape is a view.
  bool supports(const ir::Graph& graph, const ir::Node& node) const override {
    // A linear's low-rank term (a LoRA adapter) merges into the layer's widened f16 weights
    // (gemm_inputs_supported): one GEMM of N x K x rank per run instead of the adapter's two
    // GEMMs over all M rows, which cost 1.19x the plain step at SD 1.5 512² (a kernel of our
    // own after the layer's GEMM measured slower still: bench/results/README.md).
    // HYRT_CUDA_LORA=side keeps the adapter's two GEMMs (for comparison). Nor gates a GEGLU
    // (ir::GemmEpilogue::geglu): that stays its own kernel here.
    if (node.epilogue().geglu) return false;
    if (node.epilogue().low_rank && (node.op != ir::OpKind::kLinear || lora_as_side_gemms()))
      return false;
    // A LoRA's up projection (K = rank) always takes the residual: the add it saves would cost
    // as much as the GEMM itself, and LoRA layers are few next to a new resolution's GEMMs. So
    // does a GEMM the fused W8A8 kernel runs, which adds it in its epilogue (fused_residual_here);
    // others only where asked (fuse_residual: cuBLASLt's beta·C slowed new sizes' first steps).
    if (node.epilogue().residual && !node.epilogue().low_rank && !options_.fuse_residual &&
        !fused_residual_here(graph, node) &&
        !(node.inputs.size() > 1 && weights::is_lora_up_name(graph.value(node.inputs[1]).name)))
      return false;
    switch (node.op) {
      case ir::OpKind::kLinear:
        if (!supports_linear(graph, node)) return false;
        // On a quantized x only the fused W8A8 kernel runs (GemmKernel::run_quantized_input).
        if (graph.value(node.inputs[0]).dtype == DType::kS8Rows)
          return options_.gemm != GemmPolicy::kF16 &&
                 fused_s8_applies(linear_gemm_key(graph, node), ctx_.device(),
                                  options_.fused_s8_gemm);
        return true;
      case ir::OpKind::kConv2d:
        if (!supports_conv2d(graph, node)) return false;
        // On a quantized x only the implicit-GEMM W8A8 kernel runs (run_quantized_input).
        if (graph.value(node.inputs[0]).dtype == DType::kS8Rows)
          return options_.gemm != GemmPolicy::kF16 &&
                 conv2d_reads_quantized_input(graph, node, ctx_.device(), options_.fused_s8_gemm);
        return true;
      case ir::OpKind::kAttention:
        return supports_attention(graph, node);
      default:
        return supports_device_op(graph, node);
    }
  }

  // The time of the candidate this backend runs for the node's GemmKey once a node of that
  // key was prepared (measured, or estimated when untuned); before that the lower roofline
  // of the candidates (gemm_roofline_us).
  double estimate_us(const ir::Graph& graph, const ir::Node& node) const override {
    if (!supports(graph, node)) return std::numeric_limits<double>::infinity();
    if (node.op == ir::OpKind::kAttention) return estimate_attention_us(graph, node);
    if (!ir::op_traits(node.op).gemm_class) return estimate_device_op_us(graph, node);
    const GemmKey key = node.op == ir::OpKind::kConv2d ? conv2d_gemm_key(graph, node)
                                                       : linear_gemm_key(graph, node);
    // A low-rank node runs the float candidate on merged weights (gemm_inputs_supported).
    if (node.epilogue().low_rank) return gemm_roofline_us(key, GemmCandidate::kF16);
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Programs are shared across fused epilogues (gemm_program_key).
      if (auto it = measured_us_.find(gemm_program_key(key)); it != measured_us_.end())
        return it->second;
    }
    const double f16 = gemm_roofline_us(key, GemmCandidate::kF16);
    if (key.w_type != DType::kS8) return f16;
    return std::min(f16,
                    gemm_roofline_us(key, GemmCandidate::kW8A8,
                                     fused_s8_applies(key, ctx_.device(), options_.fused_s8_gemm)));
  }

  std::unique_ptr<Kernel> prepare(const ir::Graph& graph, const ir::Node& node,
                                  const weights::WeightSource& weights,
                                  ProgramCache& cache) override {
    HYRT_CHECK(supports(graph, node), kUnsupported, "cuda backend cannot run node '", node.name,
               "' (", ir::op_name(node.op), ") with these shapes and dtypes");
    ctx_.make_current();
    background_builds().note_busy();  // a compile: background builds keep off it
    if (node.op == ir::OpKind::kAttention) return make_attention_kernel(ctx_, graph, node);
    if (!ir::op_traits(node.op).gemm_class)
      return make_device_op_kernel(ctx_, graph, node, weights);
    std::unique_ptr<CudaGemmKernel> kernel =
        node.op == ir::OpKind::kConv2d
            ? make_conv2d_kernel(ctx_, options_, graph, node, weights, cache)
            : make_linear_kernel(ctx_, options_, graph, node, weights, cache);
    const GemmTuning& t = kernel->tuning();
    std::lock_guard<std::mutex> lock(mu_);
    // (A low-rank node's forced float candidate says nothing of its plain program's choice.)
    if (!node.epilogue().low_rank) measured_us_[t.key] = t.stats(kernel->candidate()).total_us;
    return kernel;
  }

  std::unique_ptr<DeviceMemory> allocate(size_t bytes, std::string_view what) override {
    ctx_.make_current();
    return std::make_unique<CudaMemory>(std::max<size_t>(bytes, 256), what);
  }

  void synchronize() override { HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream())); }

  bool copies_weights() const override { return true; }

  // Host f32 -> device f16 goes over the bus as f32 into a staging buffer and is narrowed on
  // the device (the GPU converts at memory speed; the host would spend milliseconds). The
  // staging buffer is shared by every copy: they run in stream order, one after another.
  void upload_value(const TensorView& src, const TensorView& dst) override {
    upload_value_async(src, dst);
    // From page-locked memory the transfer may run after the call returns; the synchronous
    // contract lets the caller reuse `src` at once.
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
  }

  void upload_value_async(const TensorView& src, const TensorView& dst) override {
    HYRT_CHECK(src.shape.numel() == dst.shape.numel(), kInvalidArgument,
               "cuda upload: ", src.shape.to_string(), " into ", dst.shape.to_string());
    ctx_.make_current();
    const int64_t n = src.shape.numel();
    if (src.dtype == dst.dtype) {
      HYRT_CUDA_CHECK(
          cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyHostToDevice, ctx_.stream()));
      return;
    }
    HYRT_CHECK(src.dtype == DType::kF32 && dst.dtype == DType::kF16, kUnsupported,
               "cuda upload: ", dtype_name(src.dtype), " -> ", dtype_name(dst.dtype));
    void* staging = staging_for(src.bytes());
    HYRT_CUDA_CHECK(
        cudaMemcpyAsync(staging, src.data, src.bytes(), cudaMemcpyHostToDevice, ctx_.stream()));
    HYRT_CUDA_CHECK(launch_f32_to_f16(static_cast<const float*>(staging), n,
                                      static_cast<uint16_t*>(dst.data), ctx_.stream()));
  }

  void download_value(const TensorView& src, const TensorView& dst) override {
    enqueue_download(src, dst);
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
  }

  void download_value_async(const TensorView& src, const TensorView& dst, Fence& done) override {
    enqueue_download(src, dst);
    static_cast<CudaFence&>(done).record(ctx_.stream());
  }

  void reserve_copy_staging(size_t host_bytes) override {
    ctx_.make_current();
    staging_for(host_bytes);
  }

  std::unique_ptr<Fence> make_fence() override {
    ctx_.make_current();
    return std::make_unique<CudaFence>();
  }

  std::unique_ptr<Timeline> make_timeline() override {
    ctx_.make_current();
    return std::make_unique<CudaTimeline>(ctx_.stream());
  }

  std::unique_ptr<DeviceMemory> allocate_host(size_t bytes, std::string_view what) override {
    ctx_.make_current();
    void* p = nullptr;
    const cudaError_t err = cudaHostAlloc(&p, std::max<size_t>(bytes, 64), cudaHostAllocPortable);
    if (err != cudaSuccess) {
      cudaGetLastError();  // not sticky; plain host memory serves instead
      HYRT_LOG(kWarning) << "could not page-lock " << bytes << " bytes for " << what << " ("
                         << cudaGetErrorString(err) << "); copies of it will be synchronous";
      return nullptr;
    }
    return std::make_unique<PinnedHostMemory>(p, std::max<size_t>(bytes, 64));
  }

  bool supports_capture() const override { return true; }

  void begin_capture() override {
    ctx_.make_current();
    background_builds().note_busy();
    HYRT_CUDA_CHECK(cudaStreamBeginCapture(ctx_.stream(), cudaStreamCaptureModeThreadLocal));
  }

  std::unique_ptr<Replay> end_capture() override {
    cudaGraph_t graph = nullptr;
    HYRT_CUDA_CHECK(cudaStreamEndCapture(ctx_.stream(), &graph));
    auto replay = std::make_unique<CudaReplay>(graph, ctx_.stream());
    background_builds().note_busy();  // after the graph's instantiation
    return replay;
  }

  void attach_thread() override { ctx_.make_current(); }

  void abort_capture() noexcept override {
    cudaGraph_t graph = nullptr;
    if (cudaStreamEndCapture(ctx_.stream(), &graph) == cudaSuccess && graph)
      cudaGraphDestroy(graph);
    (void)cudaGetLastError();  // an invalidated capture's error is not sticky: clear it
  }

  const CudaDeviceInfo& device_info() const override { return ctx_.device(); }
  cudaStream_t stream() const override { return ctx_.stream(); }

  void copy_to_device(void* device_dst, const void* host_src, size_t bytes) override {
    if (bytes == 0) return;
    HYRT_CUDA_CHECK(
        cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, ctx_.stream()));
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
  }

  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override {
    if (bytes == 0) return;
    HYRT_CUDA_CHECK(
        cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, ctx_.stream()));
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
  }

  void fill_bytes(void* device_dst, int value, size_t bytes) override {
    if (bytes == 0) return;
    HYRT_CUDA_CHECK(cudaMemsetAsync(device_dst, value, bytes, ctx_.stream()));
  }

  size_t scratch_bytes() const override { return ctx_.bytes_held(); }
  size_t resident_weight_bytes() const override { return ctx_.resident_bytes(); }

  std::string cache_signature() const override {
    int lt = static_cast<int>(cublasLtGetVersion());
    return str_cat(ctx_.device().name, " sm", ctx_.device().compute_major,
                   ctx_.device().compute_minor, " ", runtime_version_string(), " cublasLt ", lt);
  }

 private:
  void enqueue_download(const TensorView& src, const TensorView& dst) {
    HYRT_CHECK(src.shape.numel() == dst.shape.numel(), kInvalidArgument,
               "cuda download: ", src.shape.to_string(), " into ", dst.shape.to_string());
    ctx_.make_current();
    const int64_t n = src.shape.numel();
    if (src.dtype == dst.dtype) {
      HYRT_CUDA_CHECK(
          cudaMemcpyAsync(dst.data, src.data, src.bytes(), cudaMemcpyDeviceToHost, ctx_.stream()));
      return;
    }
    HYRT_CHECK(src.dtype == DType::kF16 && dst.dtype == DType::kF32, kUnsupported,
               "cuda download: ", dtype_name(src.dtype), " -> ", dtype_name(dst.dtype));
    void* staging = staging_for(dst.bytes());
    HYRT_CUDA_CHECK(launch_f16_to_f32(static_cast<const uint16_t*>(src.data), n,
                                      static_cast<float*>(staging), ctx_.stream()));
    HYRT_CUDA_CHECK(
        cudaMemcpyAsync(dst.data, staging, dst.bytes(), cudaMemcpyDeviceToHost, ctx_.stream()));
  }

  // The copy staging buffer: sized at prepare (reserve_copy_staging), grown by a larger copy
  // only if no executor announced it (tests).
  void* staging_for(size_t bytes) {
    if (staging_.size() < bytes) {
      HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));  // in-flight copies use it
      staging_ = DeviceBuffer();
      staging_ = DeviceBuffer(bytes, "copy staging");
    }
    return staging_.data();
  }

  CudaBackendOptions options_;  // read by kernels while they are prepared
  GemmPolicy policy_;           // options.gemm as given
  CudaContext ctx_;
  DeviceBuffer staging_;
  mutable std::mutex mu_;
  std::unordered_map<GemmKey, double, GemmKeyHash> measured_us_;
};

}  // namespace

DType device_storage_dtype(const ir::Value& v) {
  if (!dtype_is_float(v.dtype)) return v.dtype;
  if (v.wide_range && v.kind != ir::ValueKind::kWeight) return DType::kF32;
  return v.shape.rank() >= 2 ? DType::kF16 : DType::kF32;
}

std::unique_ptr<CudaBackend> make_cuda_backend(const CudaBackendOptions& options) {
  std::string why;
  const std::vector<CudaDeviceInfo> devices = list_devices(&why);
  HYRT_CHECK(!devices.empty(), kUnsupported,
             "the CUDA backend needs a CUDA device and found none (", why, "; ",
             runtime_version_string(), ")");
  HYRT_CHECK(options.device >= 0 && static_cast<size_t>(options.device) < devices.size(),
             kInvalidArgument, "CUDA device ", options.device, " does not exist: ", devices.size(),
             " device(s) present");
  const CudaDeviceInfo& d = devices[static_cast<size_t>(options.device)];
  HYRT_CHECK(d.compute_major >= 9, kUnsupported, "CUDA device ", d.index, " (", d.name, ", sm_",
             d.compute_major, d.compute_minor,
             ") is too old for this build: hyrt's CUDA kernels are compiled for sm_90 (Hopper) "
             "and newer");
  HYRT_CHECK(options.tune_algos >= 1 && options.tune_reps >= 1, kInvalidArgument,
             "CUDA backend: tune_algos and tune_reps must be at least 1");
  return std::make_unique<CudaBackendImpl>(options, d);
}

std::unique_ptr<CudaBackend> try_make_cuda_backend(const CudaBackendOptions& options,
                                                   std::string* why_not) {
  try {
    return make_cuda_backend(options);
  } catch (const Error& e) {
    if (why_not) *why_not = e.what();
    return nullptr;
  }
}

}  // namespace hyrt::backend::cuda

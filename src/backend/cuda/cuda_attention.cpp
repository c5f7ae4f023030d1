// kAttention on the CUDA backend: shape bookkeeping around launch_flash_attention.
#include "backend/cuda/cuda_attention.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cudnn_api.h"
#include "backend/cuda/cudnn_attention.h"
#include "backend/cuda/op_kernels.h"
#include "core/env.h"
#include "core/error.h"
#include "core/log.h"
#include "core/quiet_worker.h"

namespace hyrt::backend::cuda {
namespace {

// The node's geometry, read once from the graph.
struct AttentionShape {
  int64_t batch = 0, tq = 0, tk = 0;
  int heads = 0, d = 0, dv = 0;
  float scale = 0.0f;  // resolved: never 0
  bool causal = false;
  // A head wider than the fused kernel's registers hold (the VAE's 1 × 512), or f32 storage
  // (wide-range values, which the f16 fused kernel cannot hold): query-row chunks through two
  // cuBLAS GEMMs and the softmax kernel instead (no causal mask there).
  bool wide = false;
  DType storage = DType::kF16;  // q, k, v and out as the device holds them: f16 or f32
  // q, k and v side by side in one input [B, T, 3·heads·d] (ir::AttentionAttrs::packed_qkv):
  // each read by its row stride (the fused kernels' ld_q/ld_k/ld_v, cuDNN's strides). Fused
  // kernels only (not wide).
  bool packed = false;
  // Elements between token rows of q, k and v as bound: heads·d (and heads·dv) for separate
  // inputs, 3·heads·d packed.
  int64_t ld_q() const { return packed ? 3 * int64_t{heads} * d : int64_t{heads} * d; }
  int64_t ld_v() const { return packed ? 3 * int64_t{heads} * d : int64_t{heads} * dv; }
};

// Wide heads: up to this head dim, and scores of at most this many bytes per chunk.
constexpr int64_t kWideMaxHeadDim = 4096;
constexpr int64_t kWideScoreBytes = int64_t{16} << 20;

bool read_shape(const ir::Graph& graph, const ir::Node& node, AttentionShape& s) {
  if (node.op != ir::OpKind::kAttention) return false;
  if (!std::holds_alternative<ir::AttentionAttrs>(node.attrs)) return false;
  const auto& a = node.attr<ir::AttentionAttrs>();
  // A packed node's q, k and v: the three column blocks [B, T, W] of its one input.
  ir::Value block;
  if (a.packed_qkv) {
    if (node.inputs.size() != 1) return false;
    block = graph.value(node.inputs[0]);
    if (block.shape.rank() != 3 || block.shape[2] % 3 != 0) return false;
    block.shape[2] /= 3;
  } else if (node.inputs.size() != 3) {
    return false;
  }
  const auto input = [&](size_t i) -> const ir::Value& {
    return a.packed_qkv ? block : graph.value(node.inputs[i]);
  };
  const ir::Value &q = input(0), &k = input(1), &v = input(2), &out = graph.value(node.output);
  for (const ir::Value* x : {&q, &k, &v, &out})
    if (x->shape.rank() != 3 || !dtype_is_float(x->dtype)) return false;
  // One storage dtype for all four: f16, or f32 where the graph asks for wide range.
  s.storage = device_storage_dtype(out);
  for (const ir::Value* x : {&q, &k, &v})
    if (device_storage_dtype(*x) != s.storage) return false;
  if (s.storage != DType::kF16 && s.storage != DType::kF32) return false;
  if (a.heads < 1 || q.shape[0] != k.shape[0] || q.shape[0] != v.shape[0] ||
      k.shape[1] != v.shape[1] || q.shape[2] != k.shape[2] || q.shape[2] % a.heads != 0 ||
      v.shape[2] % a.heads != 0)
    return false;
  s.batch = q.shape[0];
  s.tq = q.shape[1];
  s.tk = k.shape[1];
  s.heads = a.heads;
  const int64_t d = q.shape[2] / a.heads, dv = v.shape[2] / a.heads;
  if (d < 1 || dv < 1 || d > kWideMaxHeadDim || dv > kWideMaxHeadDim) return false;
  s.wide =
      d > kFlashAttentionMaxHeadDim || dv > kFlashAttentionMaxHeadDim || s.storage == DType::kF32;
  if (s.wide && (a.causal || d % 8 != 0 || dv % 8 != 0)) return false;
  s.d = static_cast<int>(d);
  s.dv = static_cast<int>(dv);
  s.scale = a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(d));
  s.causal = a.causal;
  // Packed rows are read by stride: the fused kernels do, the chunked wide path does not.
  s.packed = a.packed_qkv;
  if (s.packed && s.wide) return false;
  // Grid limits (y = heads, z = batch) and the shapes the output must have.
  return s.batch >= 1 && s.batch <= 65535 && s.heads <= 65535 && s.tq >= 1 && s.tk >= 1 &&
         out.shape == Shape{s.batch, s.tq, v.shape[2]};
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// HYRT_CUDA_ATTENTION_LEGACY=1 runs the fused kernel in its earlier form (uncapped registers,
// a rescale at every growth of a row's maximum) for A/B runs of whole models. Read once.
bool legacy_attention_form() {
  static const bool on = env_is("HYRT_CUDA_ATTENTION_LEGACY", "1");
  return on;
}

// Which program runs a node cuDNN can take: cuDNN's plan where cuDNN is found and
// HYRT_CUDA_ATTENTION=cudnn. cuDNN's plans are faster per step (H200: SD 1.5 1024² 36.4 -> 29.5
// ms, SDXL 35.7 -> 32.3) but cost 50-100 ms each to build, serialised inside cuDNN (six per SD
// 1.5 resolution), and the first build loads cuDNN's engine libraries (0.1-0.7 s). So they are
// built off the run's path: a node runs hyrt's kernel until its plan is ready (Kernel::settled).
// Run on an H100 (2026-12-06, bench/results/cudnn_background_plans_h100.json) with each build on
// a thread of its own from the kernel's construction: tests, parity, the switch and the recapture
// work and the steady step gains (1024² 37.3 -> 30.2 ms, 768² 17.8 -> 15.7), but the builds
// slowed the foreground — a new size's first step 54-58 ms with hyrt's kernel alone, 72-118 ms
// with cuDNN — and a process's first step (956 -> 1000-1675 ms). So the builds now queue on the
// process's quiet worker (core/quiet_worker.h), which runs them one at a time and only while the
// foreground is not preparing, running kernels one by one or recording graphs. Measured so on
// an H100 (2026-12-06, bench/results/cudnn_quiet_worker_h100.json): a process's first step and a
// new size's first step within the noise of hyrt's kernel alone, the steady steps as before
// (SD 1.5 1024² 30.0 ms against 37.2, SDXL 1024² 32.9 against 36.8) — so cuDNN is the default.
// HYRT_CUDA_ATTENTION=own keeps hyrt's kernel (bit-reproducible pictures whatever the timing:
// the two agree to ~4e-4, and the switch comes after however many steps the builds took).
// HYRT_CUDA_ATTENTION=cudnn or =own choose; unset, this does (cudnn_attention_enabled).
constexpr bool kCudnnAttentionByDefault = true;

// What HYRT_CUDA_ATTENTION asks for, read once: "cudnn", "hopper" (Hopper's kernel where it
// takes the node, cuDNN's plans elsewhere), any other value hyrt's own kernel, unset the
// defaults below; HYRT_CUDA_ATTENTION_LEGACY=1 means hyrt's own kernel whatever it says.
enum class AttentionAsked { kDefault, kOwn, kCudnn, kHopper };
AttentionAsked attention_asked() {
  static const AttentionAsked asked = [] {
    if (legacy_attention_form()) return AttentionAsked::kOwn;
    const char* v = std::getenv("HYRT_CUDA_ATTENTION");
    if (!v || !*v) return AttentionAsked::kDefault;
    const std::string_view name(v);
    return name == "cudnn"    ? AttentionAsked::kCudnn
           : name == "hopper" ? AttentionAsked::kHopper
                              : AttentionAsked::kOwn;
  }();
  return asked;
}

// Whether nodes Hopper's kernel takes (hopper_takes) run it, ahead of cuDNN's plans, unless
// HYRT_CUDA_ATTENTION says otherwise (hopper_attention_enabled). Off: correct, but slower than
// cuDNN's plans in every run so far (bench/results/attention_sm90_h100.json, the latest with the
// 32-byte-swizzled layout: 3.07 against 2.30 ms per SD 1.5 1024² self attention, 0.35 against
// 0.18 at SDXL's 4096-token head-64 one). It becomes the default where it is measured faster
// than cuDNN's plans at SD 1.5's and SDXL's shapes, with no plan to build at a new size.
constexpr bool kHopperAttentionByDefault = false;

// Nodes Hopper's kernel (attention_kernels.h, launch_flash_attention_sm90) takes on `device`:
// f16, non-causal, its head dims, an sm_90 device, this build having it and it enabled (each
// run checks its views' alignment).
bool hopper_takes(const AttentionShape& s, const CudaDeviceInfo& device) {
  if (s.wide || s.storage != DType::kF16 || !hopper_attention_enabled() ||
      !flash_attention_sm90_available(device.compute_major, device.compute_minor))
    return false;
  return flash_attention_sm90_takes_shape(s.batch, s.heads, s.tq, s.tk, s.d, s.dv, s.causal);
}

// Nodes cuDNN's SDPA operation takes: f16, non-causal, head dims multiples of 8 up to 256.
bool cudnn_shape(const AttentionShape& s) {
  return !s.wide && !s.causal && s.storage == DType::kF16 && s.d % 8 == 0 && s.dv % 8 == 0 &&
         s.d <= 256 && s.dv <= 256;
}

using PlanPtr = std::shared_ptr<const CudnnAttentionPlan>;

// One plan's build, shared by its job on the quiet worker and the kernels waiting for it
// (through a PlanTicket). Its states under `mu`: queued -> running -> done, or abandoned when
// the last kernel lets go first (a queued job then does nothing). A running build is waited
// for, never left behind: a build still inside cuDNN when the process exits would race the
// teardown of cuDNN's own statics.
struct PlanBuild {
  enum class State { kQueued, kRunning, kDone, kAbandoned };
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<State> state{State::kQueued};  // changed under mu; ready() reads it without
  PlanPtr plan;                              // when done: null where cuDNN refused the shape
};

// What kernels hold of a build: its result once done; the last holder abandons it (waiting
// for it first if it is running) and releases the plan on its own thread.
class PlanTicket {
 public:
  explicit PlanTicket(std::shared_ptr<PlanBuild> build) : build_(std::move(build)) {}
  ~PlanTicket() {
    std::unique_lock<std::mutex> lock(build_->mu);
    build_->cv.wait(lock, [&] { return build_->state != PlanBuild::State::kRunning; });
    build_->state = PlanBuild::State::kAbandoned;
    build_->plan.reset();
  }
  PlanTicket(const PlanTicket&) = delete;
  PlanTicket& operator=(const PlanTicket&) = delete;

  bool ready() const { return build_->state.load() == PlanBuild::State::kDone; }
  void wait() const {
    std::unique_lock<std::mutex> lock(build_->mu);
    build_->cv.wait(lock, [&] { return build_->state == PlanBuild::State::kDone; });
  }
  // The plan (null where refused); only once ready().
  PlanPtr plan() const {
    std::lock_guard<std::mutex> lock(build_->mu);
    return build_->plan;
  }

 private:
  std::shared_ptr<PlanBuild> build_;
};

// Workspace laid out for a cuDNN plan before it exists (its size is known only once built, and
// the executor plans memory at compile time). Plans measured on an H200 want 0-256 bytes; one
// that wants more than this runs hyrt's kernel instead (the same choice every time: plans are
// deterministic per shape and cuDNN version).
constexpr size_t kCudnnWorkspaceReserve = size_t{64} << 10;

// The build of one plan, on its thread: null where cuDNN refuses it (logged).
std::shared_ptr<const CudnnAttentionPlan> build_cudnn_plan(const CudnnAttentionShape& shape,
                                                           cudaStream_t stream, int device) {
  // Opening cuDNN is part of the first build (not of the foreground's compile).
  std::string why;
  if (!cudnn_attention_available(&why)) {
    static std::once_flag logged;
    std::call_once(logged,
                   [&] { HYRT_LOG(kInfo) << "CUDA attention: hyrt's kernel (" << why << ")"; });
    return nullptr;
  }
  try {
    // A thread starts on device 0; cuDNN's handle belongs to the thread's current device.
    HYRT_CUDA_CHECK(cudaSetDevice(device));
    auto plan = std::make_shared<const CudnnAttentionPlan>(shape, stream);
    HYRT_LOG(kDebug) << "CUDA attention " << shape.key() << ": cuDNN plan in " << plan->build_ms()
                     << " ms, workspace " << plan->workspace_bytes() << " B, engine "
                     << plan->engine();
    if (plan->workspace_bytes() <= kCudnnWorkspaceReserve) return plan;
    HYRT_LOG(kInfo) << "CUDA attention " << shape.key() << ": hyrt's kernel (cuDNN's plan wants "
                    << plan->workspace_bytes() << " B of workspace)";
  } catch (const std::exception& e) {
    HYRT_LOG(kInfo) << "CUDA attention " << shape.key() << ": hyrt's kernel (" << e.what() << ")";
  }
  return nullptr;
}

// Whether cuDNN is wanted, not known to be absent, and its SDPA operation takes the node's
// shape. Whether cuDNN is present is otherwise the first build's question (build_cudnn_plan):
// opening it here would load it on the compile's path.
bool cudnn_takes(const AttentionShape& s) {
  return cudnn_attention_enabled() && cudnn_shape(s) && !cudnn_known_absent();
}

// The plan for a shape cuDNN takes (cudnn_takes): one per (stream, shape), shared by the
// kernels of every node of that shape (SD 1.5's UNet has 5 self-attentions of one shape per
// level); it lives while a kernel holds it. Building takes 43-100 ms (cuDNN's heuristics and
// its kernel's finalisation), so each is queued on the quiet worker (background_builds) and the
// kernel runs hyrt's program until the plan is ready. One worker loses nothing: cuDNN
// serialises the builds themselves (six on six threads took as long as one after another on
// the H200).
std::shared_ptr<const PlanTicket> cudnn_plan_for(const AttentionShape& s, cudaStream_t stream,
                                                 int device) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const PlanTicket>> plans;
  CudnnAttentionShape shape;
  shape.batch = s.batch, shape.heads = s.heads, shape.tq = s.tq, shape.tk = s.tk;
  shape.d = s.d, shape.dv = s.dv, shape.scale = s.scale;
  if (s.packed) shape.ld_q = shape.ld_k = shape.ld_v = s.ld_q();
  const std::string key =
      str_cat(device, " ", reinterpret_cast<uintptr_t>(stream), " ", shape.key());
  std::lock_guard<std::mutex> lock(mu);
  if (auto ticket = plans[key].lock()) return ticket;
  auto build = std::make_shared<PlanBuild>();
  auto ticket = std::make_shared<const PlanTicket>(build);
  plans[key] = ticket;
  background_builds().submit([build, shape, stream, device] {
    {
      std::lock_guard<std::mutex> lock(build->mu);
      if (build->state == PlanBuild::State::kAbandoned) return;  // no kernel wants it now
      build->state = PlanBuild::State::kRunning;
    }
    PlanPtr plan = build_cudnn_plan(shape, stream, device);
    {
      std::lock_guard<std::mutex> lock(build->mu);
      build->plan = std::move(plan);
      build->state = PlanBuild::State::kDone;
    }
    build->cv.notify_all();
  });
  return ticket;
}

class AttentionKernel final : public Kernel {
 public:
  AttentionKernel(CudaContext& ctx, const ir::Graph& graph, const ir::Node& node)
      : ctx_(ctx), name_(node.name) {
    HYRT_CHECK(read_shape(graph, node, s_), kUnsupported, "node '", node.name,
               "': the CUDA backend cannot run this attention node (needs rank-3 float q, k, v "
               "of consistent shapes and head dims 1..",
               kFlashAttentionMaxHeadDim, ", or non-causal multiples of 8 up to ", kWideMaxHeadDim,
               ")");
    if (s_.wide) {
      const int64_t elem = static_cast<int64_t>(dtype_size(s_.storage));
      chunk_rows_ = std::clamp<int64_t>(kWideScoreBytes / (s_.tk * elem), 1, s_.tq);
      // Laid out only: nothing is reserved here (cuda_context.h, Scratch).
      layout_.add(Scratch::kAttnScores, static_cast<size_t>(chunk_rows_ * s_.tk * elem));
    }
    hopper_ = hopper_takes(s_, ctx_.device());
    candidate_ = !hopper_ && cudnn_takes(s_);
    if (candidate_) layout_.add(Scratch::kCudnnWork, kCudnnWorkspaceReserve);
    start_plan();
  }

  // "cudnn" or "own": which program runs this node once settled (tests and benchmarks
  // report it). Waits for a plan still being built.
  const char* program() {
    if (hopper_) return "hopper";
    settle();
    return cudnn() ? "cudnn" : "own";
  }

  // Unsettled until cuDNN's plan is built (runs meanwhile take hyrt's kernel).
  bool settled() const override { return !candidate_ && (!pending_ || pending_->ready()); }
  void settle() override {
    if (!pending_) return;
    QuietWorker::Hurry hurry(background_builds());
    pending_->wait();
  }

  // Wide heads: one chunk's scores (cuda_attention.h); the fused kernel needs none.
  size_t workspace_bytes() const override { return layout_.workspace_bytes(); }

  // Null unbinds (runs fall back to the context's slot again).
  void bind_workspace(void* workspace) override {
    bound_.reset();
    if (workspace && !layout_.empty()) bound_ = layout_.carve(workspace);
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const size_t arity = s_.packed ? 1 : 3;
    HYRT_CHECK(inputs.size() == arity, kInvalidArgument, "node '", name_, "': ", inputs.size(),
               " inputs bound, attention takes ", s_.packed ? "qkv packed" : "q, k, v");
    const int64_t qk_width = int64_t{s_.heads} * s_.d, v_width = int64_t{s_.heads} * s_.dv;
    auto check = [&](const TensorView& t, const char* what, int64_t elems) {
      HYRT_CHECK(t.dtype == s_.storage && t.numel() == elems && t.data != nullptr, kInvalidArgument,
                 "node '", name_, "': ", what, " bound as ", dtype_name(t.dtype),
                 t.shape.to_string(), ", expected ", dtype_name(s_.storage), " with ", elems,
                 " elements");
    };
    if (s_.packed) {
      check(inputs[0], "qkv", s_.batch * s_.tq * s_.ld_q());
    } else {
      check(inputs[0], "q", s_.batch * s_.tq * qk_width);
      check(inputs[1], "k", s_.batch * s_.tk * qk_width);
      check(inputs[2], "v", s_.batch * s_.tk * v_width);
    }
    check(output, "the output", s_.batch * s_.tq * v_width);
    // A run outside a replay: the foreground is busy (the plans' builds wait).
    background_builds().note_busy();
    if (s_.wide) return run_wide(inputs, output, qk_width, v_width);
    FlashAttentionParams p;
    p.q = inputs[0].as<const uint16_t>();
    if (s_.packed) {  // k and v: the next column blocks of the same rows
      p.k = p.q + qk_width;
      p.v = p.q + 2 * qk_width;
    } else {
      p.k = inputs[1].as<const uint16_t>();
      p.v = inputs[2].as<const uint16_t>();
    }
    p.out = output.as<uint16_t>();
    p.batch = s_.batch, p.tq = s_.tq, p.tk = s_.tk;
    p.heads = s_.heads, p.d = s_.d, p.dv = s_.dv;
    p.ld_q = p.ld_k = s_.ld_q();
    p.ld_v = s_.ld_v();
    p.ld_out = v_width;
    p.scale = s_.scale;
    p.causal = s_.causal;
    p.multiprocessors = ctx_.device().multiprocessors;
    if (hopper_ && flash_attention_sm90_takes(p)) {
      HYRT_CUDA_CHECK(launch_flash_attention_sm90(p, ctx_.stream()));
      return;
    }
    if (const CudnnAttentionPlan* plan = cudnn();
        plan && aligned16(p.q) && aligned16(p.k) && aligned16(p.v) && aligned16(p.out)) {
      void* work = nullptr;
      if (plan->workspace_bytes() > 0)
        work = (bound_ ? *bound_ : layout_.reserve_in(ctx_))[Scratch::kCudnnWork];
      return plan->run(p.q, p.k, p.v, p.out, work);
    }
    if (legacy_attention_form()) p.uncapped_registers = true, p.rescale_slack = 0.0f;
    HYRT_CUDA_CHECK(launch_flash_attention(p, ctx_.stream()));
  }

 private:
  // Per (batch, head) and chunk of R query rows, row-major thinking, column-major calls:
  //   S [R, Tk] = scale · Q [R, D] · K [Tk, D]ᵀ   (cuBLAS: Sᵀ = Kᵀᵀ · Qᵀ, op T/N)
  //   P = softmax(S) by rows, in place             (f32 math, storage as the tensors)
  //   O [R, Dv] = P [R, Tk] · V [Tk, Dv]           (cuBLAS: Oᵀ = Vᵀ · Pᵀ, op N/N)
  // f16 operands with f32 accumulation, as the fused kernel; f32 storage (wide range) runs
  // TF32 operands (f16's mantissa, f32's range) with f32 scores and accumulation.
  void run_wide(std::span<const TensorView> inputs, const TensorView& output, int64_t qk_width,
                int64_t v_width) {
    // The bound workspace, else the context's shared slot, grown by the first such run.
    void* scores = (bound_ ? *bound_ : layout_.reserve_in(ctx_))[Scratch::kAttnScores];
    const bool f32 = s_.storage == DType::kF32;
    const size_t elem = dtype_size(s_.storage);
    const cudaDataType_t type = f32 ? CUDA_R_32F : CUDA_R_16F;
    const cublasComputeType_t compute = f32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const auto* q = static_cast<const uint8_t*>(inputs[0].data);
    const auto* k = static_cast<const uint8_t*>(inputs[1].data);
    const auto* v = static_cast<const uint8_t*>(inputs[2].data);
    auto* out = static_cast<uint8_t*>(output.data);
    const auto at = [elem](int64_t elements) { return static_cast<size_t>(elements) * elem; };
    const float zero = 0.0f, one = 1.0f;
    for (int64_t b = 0; b < s_.batch; ++b)
      for (int h = 0; h < s_.heads; ++h)
        for (int64_t r0 = 0; r0 < s_.tq; r0 += chunk_rows_) {
          const int64_t rows = std::min(chunk_rows_, s_.tq - r0);
          const uint8_t* qc = q + at((b * s_.tq + r0) * qk_width + int64_t{h} * s_.d);
          const uint8_t* kc = k + at(b * s_.tk * qk_width + int64_t{h} * s_.d);
          const uint8_t* vc = v + at(b * s_.tk * v_width + int64_t{h} * s_.dv);
          uint8_t* oc = out + at((b * s_.tq + r0) * v_width + int64_t{h} * s_.dv);
          HYRT_CUBLAS_CHECK(cublasGemmEx(ctx_.blas(), CUBLAS_OP_T, CUBLAS_OP_N,
                                         static_cast<int>(s_.tk), static_cast<int>(rows), s_.d,
                                         &s_.scale, kc, type, static_cast<int>(qk_width), qc, type,
                                         static_cast<int>(qk_width), &zero, scores, type,
                                         static_cast<int>(s_.tk), compute, CUBLAS_GEMM_DEFAULT));
          HYRT_CUDA_CHECK(launch_softmax(scores, scores, f32 ? FloatType::kF32 : FloatType::kF16,
                                         rows, s_.tk, ctx_.stream()));
          HYRT_CUBLAS_CHECK(cublasGemmEx(ctx_.blas(), CUBLAS_OP_N, CUBLAS_OP_N, s_.dv,
                                         static_cast<int>(rows), static_cast<int>(s_.tk), &one, vc,
                                         type, static_cast<int>(v_width), scores, type,
                                         static_cast<int>(s_.tk), &zero, oc, type,
                                         static_cast<int>(v_width), compute, CUBLAS_GEMM_DEFAULT));
        }
  }

  CudaContext& ctx_;
  std::string name_;
  AttentionShape s_;
  int64_t chunk_rows_ = 0;        // wide heads: query rows per chunk
  StagingLayout layout_;          // wide heads: the scores of one chunk; else empty
  std::optional<Staging> bound_;  // the scores in the bound workspace, if one is bound
  // cuDNN's plan once its build has finished (adopted by the first call after that; never
  // waits): null while it is being built, or where cuDNN refused the shape.
  const CudnnAttentionPlan* cudnn() {
    if (pending_ && settled()) {
      cudnn_ = pending_->plan();
      pending_.reset();
    }
    return cudnn_.get();
  }

  // Starts the build of cuDNN's plan, once.
  void start_plan() {
    if (!candidate_) return;
    candidate_ = false;
    pending_ = cudnn_plan_for(s_, ctx_.stream(), ctx_.device().index);
  }

  bool hopper_ = false;     // Hopper's kernel runs the node (where its views are aligned)
  bool candidate_ = false;  // cuDNN takes the node and its plan's build has not started
  std::shared_ptr<const PlanTicket> pending_;        // the plan being built, until adopted
  std::shared_ptr<const CudnnAttentionPlan> cudnn_;  // cuDNN's program, else null: hyrt's
};

}  // namespace

bool supports_attention(const ir::Graph& graph, const ir::Node& node) {
  AttentionShape s;
  return read_shape(graph, node, s);
}

std::unique_ptr<Kernel> make_attention_kernel(CudaContext& ctx, const ir::Graph& graph,
                                              const ir::Node& node) {
  return std::make_unique<AttentionKernel>(ctx, graph, node);
}

bool cudnn_attention_enabled() {
  const AttentionAsked a = attention_asked();
  return a == AttentionAsked::kDefault
             ? kCudnnAttentionByDefault
             : a == AttentionAsked::kCudnn || a == AttentionAsked::kHopper;
}

bool hopper_attention_enabled() {
  const AttentionAsked a = attention_asked();
  return a == AttentionAsked::kDefault ? kHopperAttentionByDefault : a == AttentionAsked::kHopper;
}

std::string attention_library() {
  const std::string hopper =
      hopper_attention_enabled() ? "hyrt's Hopper kernel (sm_90, head dims 40, 64, 80), " : "";
  if (!cudnn_attention_enabled()) return hopper + "hyrt's kernel";
  if (!cudnn_attention_available()) return hopper + "hyrt's kernel (" + cudnn_description() + ")";
  return hopper + cudnn_description() +
         ", hyrt's kernel while a shape's plan builds and where cuDNN "
         "refuses it";
}

const char* attention_program(Kernel& kernel) {
  auto* k = dynamic_cast<AttentionKernel*>(&kernel);
  return k ? k->program() : "";
}

double estimate_attention_us(const ir::Graph& graph, const ir::Node& node) {
  AttentionShape s;
  if (!read_shape(graph, node, s)) return std::numeric_limits<double>::infinity();
  // Rates of this mma.sync kernel on Hopper (measured: B=2, T=4096, 8 heads of 40 at ~190
  // padded TFLOP/s on an H200): tensor FLOP/µs, ex2 per µs (16 per SM per clock), HBM bytes
  // per µs; plus launch, prologue and tail (a 77-token CLIP call takes ~7 µs).
  constexpr double kFlopsPerUs = 190e6, kExpPerUs = 3.5e6, kBytesPerUs = 3.0e6, kFixedUs = 6.0;
  const auto pad16 = [](int x) { return (x + 15) / 16 * 16.0; };
  const double pairs = static_cast<double>(s.batch) * s.heads * static_cast<double>(s.tq) *
                       static_cast<double>(s.tk) * (s.causal ? 0.5 : 1.0);
  const double dp = std::max(pad16(s.d), pad16(s.dv));
  const double flops = 4.0 * pairs * dp;
  const double bytes =
      2.0 * static_cast<double>(s.batch) * s.heads *
      (static_cast<double>(s.tq) * (s.d + s.dv) + static_cast<double>(s.tk) * (s.d + s.dv));
  return std::max({flops / kFlopsPerUs, pairs / kExpPerUs, bytes / kBytesPerUs}) + kFixedUs;
}

}  // namespace hyrt::backend::cuda

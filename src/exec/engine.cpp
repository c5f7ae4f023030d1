#include "exec/engine.h"

#include "backend/cpu/cpu_backend.h"
#include "core/clock.h"
#include "core/env.h"
#include "core/error.h"
#include "core/log.h"
#include "plan/fuse.h"
#include "plan/memory.h"
#include "plan/quantize.h"
#include "plan/schedule.h"
#include "plan/stack.h"

#ifdef HYRT_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace hyrt::exec {

namespace {

// The accelerator backend for `options`, or null with `why` set.
std::unique_ptr<backend::Backend> make_accelerator(const EngineOptions& options, std::string* why) {
#ifdef HYRT_HAVE_CUDA
  backend::cuda::CudaBackendOptions co;
  co.device = options.device;
  co.autotune = options.autotune;
  co.fuse_residual = options.fuse_epilogues && options.device_residual_fusion;
  std::unique_ptr<backend::cuda::CudaBackend> b = backend::cuda::try_make_cuda_backend(co, why);
  if (b) {
    const auto& d = b->device_info();
    *why = "cuda: " + d.name + " (sm_" + std::to_string(d.compute_major) +
           std::to_string(d.compute_minor) + ")";
  }
  return b;
#else
  (void)options;
  *why = "this build of hyrt has no accelerator backend (built without the CUDA toolkit)";
  return nullptr;
#endif
}

}  // namespace

Engine::Engine(const EngineOptions& options) : options_(options) {
  backend::CpuBackendOptions cpu;
  cpu.num_threads = options.num_threads;
  cpu.int8_mode = options.int8_mode;
  cpu.float_precision = options.float_precision;
  host_ = backend::make_cpu_backend(cpu);
  if (options.share_scratch) scratch_ = std::make_unique<SharedScratch>(*host_);
  if (options.placement == plan::PlacementMode::kHost) {
    accel_status_ = "not used (placement host)";
    return;
  }
  accel_ = make_accelerator(options, &accel_status_);
  HYRT_CHECK(accel_ || options.placement == plan::PlacementMode::kAuto, kUnsupported, "placement '",
             plan::placement_mode_name(options.placement),
             "' needs an accelerator: ", accel_status_);
  if (!accel_) {
    HYRT_LOG(kInfo) << "no accelerator (" << accel_status_ << "): running on the host";
    return;
  }
  if (options.share_scratch) {
    accel_scratch_ = std::make_unique<SharedScratch>(*accel_);
    // Host arenas in memory the accelerator copies directly (no staging through the driver).
    if (options.overlap) scratch_ = std::make_unique<SharedScratch>(*host_, accel_.get());
  }
  if (options.disk_cache) {
    backend::DiskStoreOptions store;
    store.device_signature = accel_->cache_signature();
    const size_t loaded = cache_.open_disk_store(store);
    HYRT_LOG(kDebug) << "program cache: " << loaded << " records from "
                     << cache_.disk_store_path().string();
  }
}

Engine::~Engine() = default;

void Engine::trim() {
  if (scratch_) scratch_->release();
  if (accel_scratch_) accel_scratch_->release();
  cache_.drop_idle();
  host_->drop_idle();
  if (accel_) accel_->drop_idle();
}

std::unique_ptr<Executable> Engine::compile(std::shared_ptr<const ir::Graph> graph,
                                            const weights::WeightSource& weights,
                                            std::optional<backend::Int8Mode> int8_mode) {
  // This graph's int8 mode, on every backend, for its prepare only.
  struct Int8Scope {
    std::vector<backend::Backend*> backends;
    backend::Int8Mode restore;
    ~Int8Scope() {
      for (backend::Backend* b : backends)
        b->set_int8_mode(restore);
    }
  } scope{{host_.get()}, options_.int8_mode};
  if (accel_) scope.backends.push_back(accel_.get());
  for (backend::Backend* b : scope.backends)
    b->set_int8_mode(int8_mode.value_or(options_.int8_mode));
  backend::Backend* host = host_.get();
  ExecOptions eo;
  eo.profile = options_.profile;
  eo.profile_shapes = options_.profile_shapes;
  eo.capture = options_.capture;
  eo.overlap = options_.overlap;
  eo.reuse_invariant = options_.reuse_invariant;
  eo.shared_scratch = {scratch_.get(), accel_scratch_.get()};
  std::vector<backend::Backend*> backends = {host};
  if (accel_) backends.push_back(accel_.get());
  const std::vector<const backend::Backend*> const_backends(backends.begin(), backends.end());
  plan::PlacementOptions po;
  po.mode = accel_ ? options_.placement : plan::PlacementMode::kHost;
  // Placement on the graph as built, then epilogue fusion where it landed, then the order.
  auto plan_graph = [&](std::shared_ptr<const ir::Graph>& g) {
    const auto t0 = Clock::now();
    plan::Placement placement = plan::place(*g, plan::default_order(*g), const_backends, po);
    const auto t1 = Clock::now();
    if (options_.fuse_epilogues) {
      plan::EpilogueFusion fused = plan::fuse_epilogues(g, placement, const_backends, po.copy);
      if (fused.fused() > 0) {
        HYRT_LOG(kInfo) << "fused " << fused.residual_adds << " residual adds, "
                        << fused.activations << " activations and " << fused.geglus
                        << " GEGLUs into GEMMs";
      }
      g = std::move(fused.graph);
      placement = std::move(fused.placement);
      if (options_.stack_projections && !env_is("HYRT_STACKED_PROJECTIONS", "0")) {
        plan::StackedProjections s = plan::stack_projections(g, placement, const_backends, po.copy);
        if (s.attentions > 0)
          HYRT_LOG(kInfo) << s.attentions << " attentions read q, k and v from one stacked linear";
        g = std::move(s.graph);
        placement = std::move(s.placement);
      }
      if (options_.quantize_activations && !env_is("HYRT_QUANTIZED_ACTIVATIONS", "0")) {
        plan::ActivationQuantization q =
            plan::quantize_activations(g, placement, const_backends, po.copy);
        if (q.linears > 0)
          HYRT_LOG(kInfo) << q.layer_norms << " layer norms and " << q.geglus
                          << " GEGLUs write quantized activations for " << q.linears << " linears";
        if (q.convs > 0)
          HYRT_LOG(kInfo) << q.group_norms << " group norms write quantized activations for "
                          << q.convs << " convolutions";
        g = std::move(q.graph);
        placement = std::move(q.placement);
      }
    }
    const auto t2 = Clock::now();
    if (options_.overlap)
      placement = plan::overlap_schedule(*g, placement, const_backends, po.copy);
    if (options_.reuse_invariant)
      placement = plan::run_invariant_first(*g, placement, const_backends, po.copy);
    HYRT_LOG(kInfo) << "planned " << g->nodes().size() << " nodes in "
                    << ms_between(t0, Clock::now()) << " ms (placement " << ms_between(t0, t1)
                    << ", fusion " << ms_between(t1, t2) << ", order "
                    << ms_between(t2, Clock::now()) << ")";
    return placement;
  };
  std::shared_ptr<const ir::Graph> placed = graph;
  try {
    plan::Placement placement = plan_graph(placed);
    return Executable::create(std::move(placed), backends, std::move(placement), weights, cache_,
                              eo);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kOutOfMemory || options_.placement != plan::PlacementMode::kAuto)
      throw;
    HYRT_LOG(kWarning) << e.what() << " — preparing this graph on the host instead";
  }
  po.mode = plan::PlacementMode::kHost;
  plan::Placement placement = plan_graph(graph);
  return Executable::create(std::move(graph), backends, std::move(placement), weights, cache_, eo);
}

size_t Engine::accelerator_bytes() const {
  if (!accel_) return 0;
  return (accel_scratch_ ? accel_scratch_->bytes() : 0) + accel_->scratch_bytes() +
         accel_->resident_weight_bytes();
}

}  // namespace hyrt::exec

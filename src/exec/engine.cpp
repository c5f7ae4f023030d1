#include "exec/engine.h"

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "plan/memory.h"

namespace hyrt::exec {

Engine::Engine(const EngineOptions& options) : options_(options) {
  HYRT_CHECK(options.placement == plan::PlacementMode::kHost ||
                 options.placement == plan::PlacementMode::kAuto,
             kUnsupported, "placement '", plan::placement_mode_name(options.placement),
             "' needs an accelerator backend in the executor, which this version does not have "
             "yet (the CUDA GEMM programs are built and tested on their own); use host or auto");
  backend::CpuBackendOptions cpu;
  cpu.num_threads = options.num_threads;
  cpu.int8_mode = options.int8_mode;
  host_ = backend::make_cpu_backend(cpu);
  if (options.share_scratch) scratch_ = std::make_unique<SharedScratch>(*host_);
}

Engine::~Engine() = default;

std::unique_ptr<Executable> Engine::compile(std::shared_ptr<const ir::Graph> graph,
                                            const weights::WeightSource& weights,
                                            std::optional<backend::Int8Mode> int8_mode) {
  backend::Backend* host = host_.get();
  if (int8_mode && *int8_mode != options_.int8_mode) {
    auto& b = host_by_mode_[*int8_mode];
    if (!b) {
      backend::CpuBackendOptions cpu;
      cpu.num_threads = options_.num_threads;
      cpu.int8_mode = *int8_mode;
      b = backend::make_cpu_backend(cpu);
    }
    host = b.get();
  }
  ExecOptions eo;
  eo.profile = options_.profile;
  eo.shared_scratch = scratch_.get();
  const backend::Backend* backends[] = {host};
  plan::PlacementOptions po;
  po.mode = options_.placement;
  plan::Placement placement = plan::place(*graph, plan::default_order(*graph), backends, po);
  auto exe = Executable::create(std::move(graph), *host, weights, cache_, eo);
  exe->set_placement(std::move(placement));
  return exe;
}

}  // namespace hyrt::exec

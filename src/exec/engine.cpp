#include "exec/engine.h"

#include "backend/cpu/cpu_backend.h"

namespace hyrt::exec {

Engine::Engine(const EngineOptions& options) : options_(options) {
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
  return Executable::create(std::move(graph), *host, weights, cache_, eo);
}

}  // namespace hyrt::exec

// exec::Engine — the runtime's owner of backends and compiled programs. Layers above ask
// it for an Executable for a graph and never learn which backend runs which node.
//
// Today every node runs on the host backend; placement across host and accelerator
// (plan::place, modes host/hybrid/device/auto) plugs in here.
//
// Thread safety: compile() may be called from one thread at a time; Executables it
// returns are independent, but all of them share the host's OpenMP team, so run them
// one at a time.
#pragma once

#include <map>
#include <memory>
#include <optional>

#include "backend/backend.h"
#include "exec/executable.h"

namespace hyrt::exec {

struct EngineOptions {
  int num_threads = 0;  // host threads; 0 = every core the process may use
  bool profile = false;
  // Where nodes run (plan/placement.h). Only the host backend is wired into the executor
  // so far: kHost and kAuto place everything there; kHybrid/kDevice are refused.
  plan::PlacementMode placement = plan::PlacementMode::kAuto;
  // Executables share one scratch arena sized to the largest (they never run at once).
  bool share_scratch = true;
  // How the host runs linear/conv2d nodes with "8-bit S" weights (backend/backend.h).
  backend::Int8Mode int8_mode = backend::Int8Mode::kW8A8;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& options = {});
  ~Engine();

  // Prepares `graph` (kernels, memory plan, arena). `weights` must outlive the result.
  // `int8_mode` overrides EngineOptions::int8_mode for this graph's 8-bit S nodes.
  std::unique_ptr<Executable> compile(std::shared_ptr<const ir::Graph> graph,
                                      const weights::WeightSource& weights,
                                      std::optional<backend::Int8Mode> int8_mode = std::nullopt);

  backend::ProgramCache& program_cache() { return cache_; }
  backend::Backend& host() { return *host_; }
  const EngineOptions& options() const { return options_; }

 private:
  EngineOptions options_;
  std::unique_ptr<backend::Backend> host_;
  // Host backends for the other int8 mode, made on first use (same threads and memory).
  std::map<backend::Int8Mode, std::unique_ptr<backend::Backend>> host_by_mode_;
  backend::ProgramCache cache_;
  std::unique_ptr<SharedScratch> scratch_;  // when options_.share_scratch
};

}  // namespace hyrt::exec

// exec::Executable — a graph bound to a backend: prepared kernels, a memory plan and the
// arena it lays out, ready to run repeatedly.
//
// Create (pack weights, build/fetch programs) is separate from run (bind pointers, call
// kernels), so a step costs only kernel time. Shapes are static per Executable: a new
// resolution or batch is a new Executable (cheap: programs come from the ProgramCache).
//
// Inputs and outputs live in the arena: write inputs through input() before every run()
// (their contents may be consumed), read outputs through output() after it; output
// views stay valid until the next run() or destruction — with a SharedScratch, until
// another executable sharing it is used.
//
// Lifetime: the graph is shared; the WeightSource must outlive the Executable (kernels
// may read stored weights at run time). Thread safety: one run() at a time.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "plan/memory.h"
#include "plan/placement.h"

namespace hyrt::exec {

// Scratch memory shared by executables that never run at the same time (an Engine's):
// it grows to the largest arena among them, so a model's text encoder, UNet and VAE
// decoder need max(arenas) rather than their sum. Growing frees the old buffer first
// (contents are not kept); executables notice the new base and rebind their views.
// Thread safety: none; used from the thread that runs the executables.
class SharedScratch {
 public:
  explicit SharedScratch(backend::Backend& backend) : backend_(&backend) {}
  // A buffer of at least `bytes` (64-byte aligned); may move when it has to grow.
  uint8_t* reserve(size_t bytes);

 private:
  backend::Backend* backend_;
  std::unique_ptr<backend::DeviceMemory> memory_;
};

struct ExecOptions {
  bool profile = false;  // time each node (adds a clock read per node)
  plan::MemoryPlanOptions memory;
  // Where the arena lives: null = the executable allocates its own; otherwise this shared
  // buffer (which must outlive the executable, and whose other users must not run while
  // this executable's inputs are written, it runs, or its outputs are read).
  SharedScratch* shared_scratch = nullptr;
};

// Accumulated run time per op kind (when ExecOptions::profile is set).
struct OpProfile {
  std::string op;
  int count = 0;
  double total_ms = 0;
};

class Executable {
 public:
  static std::unique_ptr<Executable> create(std::shared_ptr<const ir::Graph> graph,
                                            backend::Backend& backend,
                                            const weights::WeightSource& weights,
                                            backend::ProgramCache& cache,
                                            const ExecOptions& options = {});

  // Graph input i (in Graph::inputs() order), or by name; throws kNotFound.
  TensorView input(size_t i) const;
  TensorView input(std::string_view name) const;
  // Graph output i (in Graph::outputs() order).
  TensorView output(size_t i) const;
  size_t num_inputs() const { return graph_->inputs().size(); }
  size_t num_outputs() const { return graph_->outputs().size(); }

  void run();

  const ir::Graph& graph() const { return *graph_; }
  const plan::MemoryPlan& memory_plan() const { return plan_; }
  std::vector<OpProfile> profile() const;
  double prepare_ms() const { return prepare_ms_; }
  // Where each node runs and what crosses between backends (set by the Engine).
  const plan::Placement& placement() const { return placement_; }
  void set_placement(plan::Placement p) { placement_ = std::move(p); }

 private:
  Executable() = default;
  TensorView value_view(ir::ValueId id) const;
  // Points every activation view at the current arena (the shared one may have moved).
  void bind() const;

  std::shared_ptr<const ir::Graph> graph_;
  backend::Backend* backend_ = nullptr;
  ExecOptions options_;
  std::vector<ir::NodeId> order_;
  plan::MemoryPlan plan_;
  std::unique_ptr<backend::DeviceMemory> arena_;
  std::vector<std::unique_ptr<backend::Kernel>> kernels_;     // per step
  mutable std::vector<TensorView> views_;                     // per value
  mutable std::vector<std::vector<TensorView>> step_inputs_;  // per step
  mutable uint8_t* bound_base_ = nullptr;                     // arena base the views use
  std::vector<double> op_ms_;
  std::vector<int> op_count_;
  double prepare_ms_ = 0;
  plan::Placement placement_;
};

}  // namespace hyrt::exec

// exec::Executable — a graph bound to its backends: prepared kernels, one memory plan and
// arena per backend, the copies between them, ready to run repeatedly.
//
// Create (pack weights, build/fetch programs) is separate from run (bind pointers, call
// kernels), so a step costs only kernel time. Shapes are static per Executable: a new
// resolution or batch is a new Executable (cheap: programs come from the ProgramCache).
//
// Placement (plan::place) decides which backend runs each node, and in which order (the
// placement's `order`); the executable follows it: a value lives in the arena of the
// backend that produced it, and each copy the placement lists brings it to another
// backend, converting between the backends' storage dtypes (Backend::storage_dtype).
// Copies are synchronous (made just before the first step that needs them) unless
// ExecOptions::overlap is set: then each is issued right after its source is produced and
// the host waits only before a host step that reads a downloaded value, so host steps run
// while accelerators work through their queues (plan/schedule.h orders the steps for
// that; the memory plans keep both ends of a copy intact while it may be in flight).
// Consecutive steps on a backend that supports capture, with no copy issued or awaited
// between them, are recorded on the second run and replayed as one unit (a CUDA graph).
//
// Run-invariant prefix (ExecOptions::reuse_invariant). The nodes that read only run-invariant
// graph inputs (ir::Value::run_invariant: a UNet's text conditioning, the same for every step
// of a picture) and weights compute the same thing in every run while those inputs keep their
// contents: a UNet's cross-attention keys and values of the text. When the order puts them
// first (plan::run_invariant_first; the executable takes the leading such steps as it finds
// them, plan::run_invariant_prefix), their results are kept in the arenas for the whole run
// (plan::Residency::reusable_prefix) and a run skips those steps — and the copies they need —
// when every run-invariant input holds the same bytes as at the last run that computed them
// and no other executable has used a shared scratch since (SharedScratch::claim). Otherwise,
// and after a failed run, the prefix runs again. Results are bit-identical either way.
//
// Inputs and outputs live in the host's arena: write inputs through input() before every
// run() (their contents may be consumed), read outputs through output() after it; output
// views stay valid until the next run() or destruction — with a SharedScratch, until
// another executable sharing it is used.
//
// Lifetime: the graph is shared; the WeightSource must outlive the Executable (kernels
// may read stored weights at run time). Thread safety: one run() at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
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
  // Memory of `backend`; host memory from `host_memory_of`->allocate_host() where that
  // backend offers it (page-locked, for an accelerator's asynchronous copies).
  explicit SharedScratch(backend::Backend& backend, backend::Backend* host_memory_of = nullptr)
      : backend_(&backend), host_memory_of_(host_memory_of) {}
  // A buffer of at least `bytes` (64-byte aligned); may move when it has to grow.
  uint8_t* reserve(size_t bytes);
  // Frees the buffer (the next reserve allocates again; executables rebind then).
  void release() {
    memory_.reset();
    user_ = nullptr;
  }
  size_t bytes() const { return memory_ ? memory_->size() : 0; }
  // Records `user` as the buffer's latest user. True when it already was, and the buffer has
  // not been reallocated or released since: its contents are as `user` left them.
  bool claim(const void* user) {
    const bool same = memory_ && user_ == user;
    user_ = user;
    return same;
  }

 private:
  backend::Backend* backend_;
  backend::Backend* host_memory_of_;
  std::unique_ptr<backend::DeviceMemory> memory_;
  const void* user_ = nullptr;  // claim()
};

struct ExecOptions {
  // Time each node: host kernels by a clock read around each, kernels of a backend with a
  // Timeline (CUDA) by timestamps in its queue, read at the end of the run — no wait per node,
  // so the device runs as it would unprofiled, less CUDA-graph replay.
  bool profile = false;
  // With profile: time nodes per op kind and shapes (each distinct GEMM, convolution or
  // attention shape apart, e.g. "linear out[2,1024,1280] w[1280,1280]s8") instead of per op
  // kind alone, so a profile says which layers the time goes to.
  bool profile_shapes = false;
  plan::MemoryPlanOptions memory;
  // Where each backend's arena lives, by backend index: null (or absent) = the executable
  // allocates its own; otherwise this shared buffer (which must outlive the executable,
  // and whose other users must not run while this executable's inputs are written, it
  // runs, or its outputs are read).
  std::vector<SharedScratch*> shared_scratch;
  // Record runs of device steps into Replays (CUDA graphs) on the second run.
  bool capture = true;
  // Asynchronous copies between backends (see the top of this file), and a host arena in
  // memory the accelerator copies directly (Backend::allocate_host) where one is offered.
  bool overlap = true;
  // Skip the run-invariant prefix while its inputs are unchanged (see the top of this file);
  // false computes every step in every run, for comparison.
  bool reuse_invariant = true;
};

// Accumulated run time per op kind (when ExecOptions::profile is set); the GEMMs of a LoRA's
// side path are counted apart, as "lora_down" and "lora_up". With ExecOptions::profile_shapes
// `op` also names the node's shapes.
struct OpProfile {
  std::string op;
  int count = 0;
  double total_ms = 0;
};

class Executable {
 public:
  // Every node on `backend` (which must hold host memory: inputs and outputs live there).
  static std::unique_ptr<Executable> create(std::shared_ptr<const ir::Graph> graph,
                                            backend::Backend& backend,
                                            const weights::WeightSource& weights,
                                            backend::ProgramCache& cache,
                                            const ExecOptions& options = {});
  // Nodes where `placement` says (made by plan::place over the same `backends`), in its
  // order (plan::default_order if it has none); backends[0] is the host. Borrowed backends
  // outlive the result.
  static std::unique_ptr<Executable> create(std::shared_ptr<const ir::Graph> graph,
                                            std::span<backend::Backend* const> backends,
                                            plan::Placement placement,
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

  // Runs the graph once. If it throws, the work already queued on every backend is
  // finished (or abandoned) and any capture in progress ended before the exception leaves,
  // so the executable — and the backends — can run again.
  void run();

  const ir::Graph& graph() const { return *graph_; }
  // The host's memory plan; memory_plans()[b] is backend b's.
  const plan::MemoryPlan& memory_plan() const { return plans_[0]; }
  const std::vector<plan::MemoryPlan>& memory_plans() const { return plans_; }
  // Steps replayed from captured units, and how many units (0 before the second run).
  int captured_steps() const;
  int captured_units() const { return static_cast<int>(segments_.size()); }
  std::vector<OpProfile> profile() const;
  double prepare_ms() const { return prepare_ms_; }
  // Bytes this executable holds for its lifetime: its kernels' (Kernel::held_bytes) and its
  // own arenas (not shared scratch, not backends' resident weights).
  size_t held_bytes() const;
  // Time create() spent preparing kernels (compile/fetch programs, upload/pack weights), per
  // op kind.
  std::vector<OpProfile> prepare_profile() const;
  // Where each node runs and what crosses between backends.
  const plan::Placement& placement() const { return placement_; }
  // Leading steps kept from run to run (the run-invariant prefix; 0: none, or
  // ExecOptions::reuse_invariant off), and how many runs skipped them.
  size_t invariant_steps() const { return invariant_steps_; }
  int reused_runs() const { return reused_runs_; }
  // False while a kernel is still preparing a faster program off this thread
  // (backend::Kernel::settled: a library's plan being built). Runs meanwhile use the kernels'
  // fallbacks; a unit captured then is provisional and is captured again by the first run
  // after its kernels settle. recaptures() counts those.
  bool settled() const;
  // Blocks until settled() (benchmarks of the steady state; the next run recaptures).
  void settle();
  int recaptures() const { return recaptures_; }

 private:
  Executable() = default;
  // Points every activation view at the current arenas (shared ones may have moved);
  // a move drops captured units (they hold the old addresses).
  void bind() const;
  // Issues copy k (synchronously unless async_); wait_copy waits for an asynchronous
  // download's fence.
  void issue_copy(size_t k) const;
  void wait_copy(size_t k) const;
  void run_steps(size_t begin, size_t end);
  void run_once();  // run() without the cleanup after a failure
  // Per copy: when it is issued and how long its source must stay intact (async_), and
  // the issue order.
  void plan_copy_windows();
  // The steps that can form captured units: maximal runs on one capturing backend with
  // no copy issued or awaited before any step but the first.
  void find_segments();

  struct Segment {
    size_t begin = 0, end = 0;  // steps [begin, end)
    int backend = 0;
    std::unique_ptr<backend::Replay> replay;  // recorded on the second run
    bool provisional = false;                 // recorded while a kernel of it was unsettled
  };
  // Every kernel of steps [begin, end) settled (backend::Kernel::settled).
  bool steps_settled(size_t begin, size_t end) const;

  std::shared_ptr<const ir::Graph> graph_;
  std::vector<backend::Backend*> backends_;
  ExecOptions options_;
  std::vector<ir::NodeId> order_;
  std::vector<int> step_backend_;  // per step
  std::vector<int> step_class_;    // per step: its profile class (op kind, or a LoRA side GEMM)
  std::vector<plan::MemoryPlan> plans_;                         // per backend
  std::vector<std::unique_ptr<backend::DeviceMemory>> arenas_;  // per backend (own arenas)
  std::vector<std::unique_ptr<backend::Kernel>> kernels_;       // per step
  mutable std::vector<std::vector<TensorView>> views_;          // per backend, per value
  mutable std::vector<std::vector<TensorView>> step_inputs_;    // per step
  mutable std::vector<uint8_t*> bound_base_;                    // per backend: arena base bound
  mutable std::vector<Segment> segments_;
  bool async_ = false;                     // ExecOptions::overlap, with copies to make
  std::vector<plan::CopyWindow> windows_;  // per copy (empty unless async_)
  std::vector<size_t> issue_order_;        // copy indices by issue step
  std::vector<std::unique_ptr<backend::Fence>> fences_;  // per copy (async downloads)
  int runs_ = 0;
  size_t invariant_steps_ = 0;         // the run-invariant prefix's steps
  mutable bool prefix_valid_ = false;  // the arenas hold the prefix's results for invariant_inputs_
  int reused_runs_ = 0;
  int recaptures_ = 0;
  // Per run-invariant graph input: its id and its bytes at the last run that ran the prefix.
  std::vector<std::pair<ir::ValueId, std::vector<uint8_t>>> invariant_inputs_;
  // Claims every shared scratch for this executable (SharedScratch::claim); one that another
  // executable used since drops the prefix's kept results.
  void claim_scratch() const;
  // True when the prefix's kept results are valid for this run: kept since the last run and
  // every run-invariant input unchanged.
  bool can_skip_prefix() const;
  // Profile classes: their names (op kinds, or op kinds with shapes), and per class the
  // accumulated run time and count; step_class_ indexes them.
  std::vector<std::string> class_names_;
  std::vector<double> op_ms_;
  std::vector<int> op_count_;
  // Profiling: per backend, its timestamps (null: time by the clock), and this run's marks.
  std::vector<std::unique_ptr<backend::Timeline>> timelines_;
  struct Mark {
    int op;
    int backend;
    size_t begin, end;
  };
  std::vector<Mark> marks_;
  double prepare_ms_ = 0;
  std::vector<double> prepare_op_ms_;
  std::vector<int> prepare_op_count_;
  plan::Placement placement_;
};

}  // namespace hyrt::exec

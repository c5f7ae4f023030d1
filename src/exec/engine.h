// exec::Engine — the runtime's owner of backends and compiled programs. Layers above ask
// it for an Executable for a graph and never learn which backend runs which node.
//
// Backends: the host (CPU) always; the CUDA device `EngineOptions::device` when the build has
// the CUDA backend, the placement mode is not kHost, and a usable GPU is present. Every
// compile() places the graph over them (plan::place) and builds an Executable that follows
// the placement. Without an accelerator, kAuto runs everything on the host (the reason is
// kept in accelerator_status()); kHybrid and kDevice refuse with that reason. If the device
// runs out of memory while a kAuto graph is prepared there, the graph is prepared again on
// the host alone, so the request is not lost.
//
// Thread safety: compile() may be called from one thread at a time; Executables it
// returns are independent, but all of them share the host's OpenMP team, so run them
// one at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "backend/backend.h"
#include "exec/executable.h"

namespace hyrt::exec {

struct EngineOptions {
  int num_threads = 0;  // host threads; 0 = every core the process may use
  bool profile = false;
  bool profile_shapes = false;  // ExecOptions::profile_shapes
  // Where nodes run (plan/placement.h).
  plan::PlacementMode placement = plan::PlacementMode::kAuto;
  int device = 0;       // CUDA device index
  bool capture = true;  // replay device steps as CUDA graphs (ExecOptions::capture)
  // Host and accelerator work at the same time where the graph allows: asynchronous copies
  // (ExecOptions::overlap), page-locked host arenas, and an execution order chosen for it
  // (plan::overlap_schedule) whenever a graph is placed across both.
  bool overlap = true;
  // Compute what only run-invariant inputs feed (a UNet's text conditioning) once while they
  // stay the same, not in every run: the order puts it first (plan::run_invariant_first) and
  // executables skip it while its inputs are unchanged (ExecOptions::reuse_invariant).
  bool reuse_invariant = true;
  // Fold the activation or residual add after a linear/conv2d into the GEMM where the
  // backend that runs both has a fused kernel (plan::fuse_epilogues); false runs them as
  // separate nodes, for comparison.
  bool fuse_epilogues = true;
  // Layer norms that only W8A8 linears read write their output quantized, once, instead of
  // each linear quantizing it (plan::quantize_activations), where the backend runs both so;
  // needs fuse_epilogues. $HYRT_QUANTIZED_ACTIVATIONS=0 turns it off (for comparison).
  bool quantize_activations = true;
  // A self-attention's q, k and v projections as one linear over their stacked weights, read
  // packed by the attention (plan::stack_projections), where the backend that runs them takes
  // those forms (CUDA; the host does not); needs fuse_epilogues. $HYRT_STACKED_PROJECTIONS=0
  // turns it off (for comparison). H100, 2026-12-07: SDXL 1024² 26.1 -> 25.1 ms a step, SD 1.5
  // 512² 6.55 -> 6.40 (bench/results/stacked_projections_h100.json).
  bool stack_projections = true;
  // Also fold residual adds into the accelerator's GEMMs (CudaBackendOptions::fuse_residual:
  // off by default, it slows the first step at a new resolution); the host always folds them.
  bool device_residual_fusion = false;
  // Time GEMM candidates on the accelerator on first use of a shape (CudaBackendOptions::
  // autotune); results persist in the disk cache, which every engine reads.
  bool autotune = false;
  // The ProgramCache's on-disk store (backend/program_cache.h; default directory
  // $HYRT_CACHE_DIR, $XDG_CACHE_HOME/hyrt or ~/.cache/hyrt), opened when an accelerator is
  // in use; false keeps records in memory only.
  bool disk_cache = true;
  // Executables share one scratch arena sized to the largest (they never run at once).
  bool share_scratch = true;
  // How the host runs linear/conv2d nodes with "8-bit S" weights (backend/backend.h).
  backend::Int8Mode int8_mode = backend::Int8Mode::kW8A8;
  // How the host multiplies float operands (backend/backend.h; CpuBackendOptions): every graph
  // this engine compiles. kBF16 on a CPU without bf16 products runs kF32.
  backend::FloatPrecision float_precision = backend::FloatPrecision::kF32;
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
  // Returns what no executable holds: frees the shared scratch arenas (host and
  // accelerator; the next run allocates them again at its size) and drops the programs no
  // kernel uses any more. For when a model is unloaded: the arenas were sized for the
  // largest shape it ran, the idle programs were its. No executable may be running.
  void trim();
  backend::Backend& host() { return *host_; }
  // How the host multiplies float operands: EngineOptions::float_precision after the CPU's
  // fallback (kF32 without bf16 products), for reports.
  backend::FloatPrecision host_float_precision() const { return host_->float_precision(); }
  // The accelerator in use, or null.
  backend::Backend* accelerator() { return accel_.get(); }
  // Accelerator memory hyrt holds now: the shared scratch arena, kernel scratch and library
  // workspaces, resident weights (0 without an accelerator). Executables' own arenas, when
  // EngineOptions::share_scratch is off, are not counted.
  size_t accelerator_bytes() const;
  // "cuda: NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)", or why there is none.
  const std::string& accelerator_status() const { return accel_status_; }
  const EngineOptions& options() const { return options_; }

 private:
  EngineOptions options_;
  std::unique_ptr<backend::Backend> host_;
  std::unique_ptr<backend::Backend> accel_;
  std::string accel_status_;
  backend::ProgramCache cache_;
  std::unique_ptr<SharedScratch> scratch_;        // host, when options_.share_scratch
  std::unique_ptr<SharedScratch> accel_scratch_;  // accelerator, likewise
};

}  // namespace hyrt::exec

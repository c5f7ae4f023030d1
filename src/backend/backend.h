// The backend contract (../shared/DESIGN.md, "The backend contract").
//
// A Backend answers, per graph node, whether it can run it (supports) and how long it
// expects to take (estimate_us); it turns a node into a Kernel (prepare: compile or
// fetch a program, pack or upload the node's weights in their stored form) and provides
// the memory the planner lays out (allocate). Placement asks backends only through
// supports/estimate_us; the executor binds pointers and calls Kernel::run.
//
// Lifetime: a Backend outlives every Kernel and DeviceMemory it made. Kernels hold
// whatever packed weights they need; views into a WeightSource are only read during
// prepare unless the backend documents otherwise (the CPU backend copies/packs).
//
// Thread safety: prepare may be called from one thread at a time per backend; distinct
// Kernels may run concurrently only if the backend says so (the CPU backend: no — its
// kernels share the OpenMP team).
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "backend/program_cache.h"
#include "core/tensor.h"
#include "ir/graph.h"
#include "weights/weight_source.h"

namespace hyrt::backend {

enum class DeviceType { kHost, kCuda };

// A prepared node, ready to run on bound buffers.
class Kernel {
 public:
  virtual ~Kernel() = default;
  // inputs: one view per node input, in node order. Weight inputs carry the stored
  // tensor (a kernel that packed its weights at prepare ignores them). output: the
  // node's output buffer, which aliases inputs[0] when the op's traits allow in-place
  // execution and the memory planner chose it — kernels of such ops must handle that.
  // All views are dense, row-major, in the backend's memory.
  virtual void run(std::span<const TensorView> inputs, const TensorView& output) = 0;
  // Scratch the kernel needs while it runs (staging buffers, partial results), in its
  // backend's memory. The executor plans it into that backend's arena, live during this
  // kernel's step only (so kernels of other steps reuse the bytes), and calls
  // bind_workspace with a 64-byte-aligned pointer to workspace_bytes() bytes before the
  // first run() and again whenever the arena moves. A kernel run without a bound workspace
  // (tests, benchmarks) falls back to scratch of its own. 0 = none needed.
  virtual size_t workspace_bytes() const { return 0; }
  virtual void bind_workspace(void* /*workspace*/) {}
  // Bytes of host memory this kernel holds for its lifetime (packed weights, tables, its
  // own scratch), for the per-shape cache budget. Memory shared between kernels (a
  // backend's resident weights, the arenas) is not counted here.
  virtual size_t held_bytes() const { return 0; }
  // False while the kernel is still preparing a faster program off the calling thread (a
  // library's plan being built): until then run() enqueues a fallback's work, and the first
  // run() after the program is ready switches to it, so work captured into a Replay while a
  // kernel is unsettled is provisional and must be captured again once it settles
  // (exec::Executable does). Both results are the op's; they may differ in rounding.
  // Thread safe (the executor polls it between runs).
  virtual bool settled() const { return true; }
  // Blocks until settled() (benchmarks of the steady state, tests).
  virtual void settle() {}
};

// Memory owned by a backend (host RAM or device memory).
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual void* data() = 0;
  virtual size_t size() const = 0;
};

// How GEMM-class nodes with "8-bit S" weights (s8 + per-row f32 scales from
// WeightSource::scale) run on a backend. Either way the int8 weights stay resident as
// int8; no dequantized copy of a layer is kept beyond one layer's scratch. (The CPU
// backend's realisation is described here; cpu/cpu_backend.h chooses it per backend.)
enum class Int8Mode {
  // Activations quantized to s8 at run time (linear: one scale per row/token, exact;
  // conv2d: one dynamic scale per sample), s8·s8 -> s32 in oneDNN, dequantized with
  // activation × weight scales plus bias in our epilogue. Fastest (int8 GEMM ~4x f32);
  // adds activation rounding error (~6e-3 relative L2 on random data, op tests).
  kW8A8,
  // Activations stay f32; the layer's int8 weights are widened to f32 into a scratch
  // buffer reused across layers at each run, then an f32 GEMM/conv and a per-channel
  // scale epilogue. Only the weight quantization error; f32 speed minus the widening.
  // Also what kW8A8 becomes where cpu_has_int8_dot_product() is false.
  kW8,
};

// "w8a8" / "w8": the names the CLI and benchmark JSON use.
const char* int8_mode_name(Int8Mode mode);

// The arithmetic of GEMM-class nodes (linear, conv2d, attention) on float operands: nodes with
// 16/32-bit weights, attention, and the 8-bit S nodes that Int8Mode::kW8 runs on float
// activations. Values between nodes keep their storage dtype (Backend::storage_dtype) either
// way; this is only what the products round their operands to.
enum class FloatPrecision {
  // Operands as stored (f32 on the host): the reference arithmetic.
  kF32,
  // Operands rounded to bf16 (8 significant bits, f32's range), products accumulated and
  // written in f32. Where the hardware multiplies bf16 natively (the host: AVX-512 BF16 or AMX)
  // about twice to several times f32's speed, for ~3e-3 relative error per product. A backend
  // without bf16 products runs kF32 instead (CpuBackend: cpu_has_bf16_dot_product()).
  kBF16,
};

// "f32" / "bf16".
const char* float_precision_name(FloatPrecision precision);

// Timestamps taken in a backend's queue, for profiling asynchronous kernels without waiting
// for each one (Backend::make_timeline): mark() enqueues a timestamp after the work submitted
// so far and returns its index; once the backend has been synchronized, elapsed_ms(a, b) is
// the time between marks a and b as the device saw it. clear() forgets the marks (the
// timestamps are reused). Not for use while the backend is capturing.
class Timeline {
 public:
  virtual ~Timeline() = default;
  virtual size_t mark() = 0;
  virtual double elapsed_ms(size_t a, size_t b) = 0;
  virtual void clear() = 0;
};

// Work recorded once and replayed as a unit (a CUDA graph): the kernels a backend enqueued
// between Backend::begin_capture() and end_capture(), with the buffers bound then.
class Replay {
 public:
  virtual ~Replay() = default;
  // Enqueues the recorded work again (asynchronously, like the kernels it replaces).
  virtual void launch() = 0;
};

// The completion of a backend's asynchronous copy (Backend::download_value_async). Made once
// per copy (Backend::make_fence) and signalled again by each use.
class Fence {
 public:
  virtual ~Fence() = default;
  // Returns once the work the fence was last given to has finished (at once if none).
  virtual void wait() = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  virtual DeviceType device_type() const = 0;
  // The compute library behind the kernels and its version, for reports and benchmark JSON
  // ("oneDNN 2.6.3 (OpenMP)"); empty if none worth naming.
  virtual std::string library() const { return {}; }
  // Can this backend run `node` of `graph` (op, dtypes, shapes, attributes)?
  virtual bool supports(const ir::Graph& graph, const ir::Node& node) const = 0;
  // Predicted run time of `node` in microseconds (roofline model, later calibrated).
  virtual double estimate_us(const ir::Graph& graph, const ir::Node& node) const = 0;
  // Builds the kernel for `node`. Reads the node's weights from `weights` (stored form)
  // and may cache programs in `cache`. Throws hyrt::Error(kUnsupported) if !supports().
  virtual std::unique_ptr<Kernel> prepare(const ir::Graph& graph, const ir::Node& node,
                                          const weights::WeightSource& weights,
                                          ProgramCache& cache) = 0;
  // Allocates `bytes` of this backend's memory, 64-byte aligned (throws kOutOfMemory).
  virtual std::unique_ptr<DeviceMemory> allocate(size_t bytes, std::string_view what) = 0;
  // Waits for all work submitted to this backend.
  virtual void synchronize() {}
  // Forgets what its caches keep for weights no kernel holds any more (a model was unloaded):
  // bookkeeping that would otherwise stay until the next pruning. No kernel may be preparing.
  virtual void drop_idle() {}
  // Called by Executable::create on the thread that prepared its kernels, once all of them
  // are prepared (or one prepare() threw): a backend may let go of what it keeps only to make
  // a run of prepare() calls cheap (the CPU backend: its f32 staging of 16-bit weights being
  // packed, ~13 MiB for SD 1.5, else resident through every later run). Prepared kernels
  // must not depend on it; a later prepare() may allocate it again.
  virtual void end_prepare() {}
  // Makes this backend usable from the calling thread (CUDA: its device current there).
  // Executables call it at the start of every run, since runs may come from any thread.
  virtual void attach_thread() {}
  // The dtype in which this backend holds graph value `v` (an activation or input) in its
  // memory. The graph's dtypes describe the computation; a backend may store activations
  // narrower (CUDA: f16). The executor sizes arenas and converts at copies by this.
  virtual DType storage_dtype(const ir::Value& v) const { return v.dtype; }
  // Copies value data from host memory `src` (in the host's storage dtype) into this
  // backend's memory `dst` (in this backend's storage dtype), converting; same element
  // count. Ordered after the work already submitted to this backend; `src` may be reused
  // as soon as the call returns. The host backend itself does not implement it.
  virtual void upload_value(const TensorView& src, const TensorView& dst);
  // The reverse: this backend's `src` into host memory `dst`; returns when `dst` is
  // written (after all work submitted before it).
  virtual void download_value(const TensorView& src, const TensorView& dst);
  // Asynchronous copies, for executors that keep the host working while this backend runs
  // its queue (exec::ExecOptions::overlap). This backend runs its kernels and these copies
  // in the order they were submitted. The defaults are the synchronous copies above (and a
  // fence that never waits), which satisfy the same contract.
  //  - upload_value_async: like upload_value, but `src` must stay unchanged until the copy
  //    has run — known once a fence of a download_value_async submitted after it has been
  //    waited on, or synchronize() has returned.
  //  - download_value_async: like download_value, but returns at once; `dst` is written
  //    (and may be read) once `done.wait()` returns; until then the host must not touch it.
  virtual void upload_value_async(const TensorView& src, const TensorView& dst) {
    upload_value(src, dst);
  }
  virtual void download_value_async(const TensorView& src, const TensorView& dst, Fence& /*done*/) {
    download_value(src, dst);
  }
  virtual std::unique_ptr<Fence> make_fence();
  // Timestamps in this backend's queue (Timeline), or null where its kernels are synchronous
  // (the host: a clock read around run() serves) or it has none.
  virtual std::unique_ptr<Timeline> make_timeline() { return nullptr; }
  // The largest value copy (host-side bytes) this backend will be asked to make: a backend
  // that stages copies (CUDA converts f32 <-> f16 through a device buffer) allocates that
  // now, at prepare, rather than during the first run. May be called again with more.
  virtual void reserve_copy_staging(size_t /*host_bytes*/) {}
  // Host memory that this backend's copies read and write directly, so they run
  // asynchronously and at full speed (CUDA: page-locked memory); null if plain host memory
  // serves as well (the default).
  virtual std::unique_ptr<DeviceMemory> allocate_host(size_t /*bytes*/, std::string_view /*what*/) {
    return nullptr;
  }
  // Capture of a run of kernels into a Replay (kernels must then not depend on anything
  // but their bound buffers). Backends without it answer false and are never asked.
  virtual bool supports_capture() const { return false; }
  virtual void begin_capture();
  virtual std::unique_ptr<Replay> end_capture();
  // Ends a capture after a failure inside it: whatever was recorded is discarded, the queue
  // leaves capture mode, and no error escapes (the caller is already unwinding one).
  virtual void abort_capture() noexcept;
  // Memory this backend holds outside the executors' arenas: kernel scratch and library
  // workspaces, and weights kept resident in its memory (0 where nothing is kept apart).
  virtual size_t scratch_bytes() const { return 0; }
  virtual size_t resident_weight_bytes() const { return 0; }
  // How kernels prepared from now on run GEMM-class nodes with 8-bit S weights (kernels
  // already prepared keep theirs). Backends without int8 choices ignore it.
  virtual void set_int8_mode(Int8Mode mode) {}
  // How kernels prepared from now on multiply float operands (FloatPrecision; kernels already
  // prepared keep theirs). Backends whose float GEMMs have one arithmetic only ignore it (CUDA:
  // f16 operands with f32 accumulation, or f32 where a value holds a wide range).
  virtual void set_float_precision(FloatPrecision precision) {}
  // The precision its kernels prepared from now on use (after any fallback; kF32 where
  // set_float_precision is ignored), for reports.
  virtual FloatPrecision float_precision() const { return FloatPrecision::kF32; }
  // What the records this backend puts in a ProgramCache are valid for (device, driver and
  // library versions), naming its on-disk store; empty = it keeps no records.
  virtual std::string cache_signature() const { return {}; }
  // True if prepare() keeps its own copy of every weight it reads (packed, converted or
  // uploaded), so the executor may tell the WeightSource to drop the stored pages.
  virtual bool copies_weights() const { return false; }
};

}  // namespace hyrt::backend

// The CUDA backend (../shared/DESIGN.md, "The backend contract"), built only where the CUDA
// toolkit is found (HYRT_HAVE_CUDA).
//
// What it runs: every op of the IR. GEMM-class nodes as programs keyed by GemmKey —
// kLinear (y [..., N] = x [..., K] · w [N, K]ᵀ (+ bias [N])) and kConv2d (im2col + the same
// GEMM; 1x1 stride 1 is the linear) with two candidates measured against each other on first
// use of a key (see GemmCandidate) — kAttention as one fused flash-style kernel
// (cuda_attention.h), and the rest (norms, elementwise, concat, upsample, embeddings, views)
// as the kernels of cuda_ops.h; supports() says no where a kernel's limits are exceeded
// (placement then keeps the node on the host). Its memory is device memory: allocate()
// returns cudaMalloc memory, and every TensorView a kernel receives for an activation must
// point into it. upload_value/download_value convert at copies; begin/end_capture record
// CUDA graphs of the stream.
//
// Activations are held in device_storage_dtype(): f16 for the graph's f32 activations, the
// device path DESIGN.md describes, and f32 for wide-range ones; the GEMM programs are built
// from the node as the device holds it (f16 in, f16 out; f32 in, f32 out on TF32 operands —
// also a linear node whose rank-1 input is f32). Accumulation is f32 (float candidate) or s32
// (W8A8). Activation and output buffers must be
// 16-byte aligned (the memory planner's 64-byte offsets in a cudaMalloc arena are).
//
// Weights are uploaded at prepare in their stored form and owned by the kernel:
//   - "8-bit S" (s8 [N, K] + f32 [N] scales from WeightSource::scale): s8, rows and columns
//     zero-padded to multiples of 4 (cuBLASLt's int8 GEMM needs them), and the f32 scales;
//     no f16 copy is kept: the f16 candidate widens one layer at a time into the kernel's
//     staging (its workspace in the executor's arena, live for that step only; cuda_gemm.h,
//     "Staging");
//   - f32 / bf16 / f16 weights: as f16 [N, K] (as f32 for f32 activations);
//   - bias: f32, plus an f16 copy when the output is f16 (cuBLASLt's bias epilogue reads the
//     output's type).
//
// Thread safety: prepare() and allocate() from one thread at a time; kernels of one backend
// share its stream, cuBLASLt workspace and (run without a bound workspace) its fallback
// staging slots, so they must not run concurrently (the
// executor runs them in order on one thread). Kernels are enqueued asynchronously on the
// backend's stream; synchronize() waits for them. Lifetime: the backend outlives its kernels
// and memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>

#include "backend/backend.h"
#include "backend/cuda/cuda_device.h"

namespace hyrt::backend::cuda {

// The two GEMM candidates for a linear node.
enum class GemmCandidate : uint8_t {
  // The float candidate (named "f16" after its usual operands): cuBLASLt f16 x f16 -> f32
  // accumulate -> f16 out, bias in cuBLASLt's epilogue; on f32 activations (wide range) the
  // operands are f32 on TF32 tensor cores and the output f32. 8-bit S weights are first
  // dequantized (s·q, rounded to the operand type) into the kernel's staging (cuda_gemm.h).
  kF16,
  // W8A8: activations quantized per row on the device (absmax/127, the CPU backend's exact
  // rule), cuBLASLt s8 x s8 -> s32 ("TN"), then hyrt's epilogue
  // y = acc · (row scale · weight row scale) + bias to f16/f32. Only for 8-bit S weights.
  kW8A8,
};
const char* candidate_name(GemmCandidate c);  // "f16", "w8a8"

enum class GemmPolicy : uint8_t {
  kAuto,  // the faster candidate as measured on first use of the GemmKey (the default)
  kF16,   // always kF16
  kW8A8,  // kW8A8 where the weights are 8-bit S, kF16 elsewhere
};

// CudaBackendOptions::fused_s8_gemm's default: true unless $HYRT_CUDA_FUSED_S8 is "0".
bool default_fused_s8_gemm();

struct CudaBackendOptions {
  int device = 0;
  GemmPolicy gemm = GemmPolicy::kAuto;
  // Autotuning on first use of a GemmKey: the cuBLASLt heuristic's top `tune_algos`
  // algorithms are timed per candidate (GEMM alone), then each candidate as a whole; each
  // measurement is the median of `tune_reps` runs (cudaEvent timing on random data).
  int tune_algos = 8;
  int tune_reps = 7;
  // Time candidates on first use of a GemmKey (above). Off, a new key costs no GPU time: each
  // candidate takes the cuBLASLt heuristic's first algorithm and the roofline estimate
  // (gemm_roofline_us) picks between them — what keeps a first start and a new resolution
  // fast. Tuned records go to the ProgramCache's disk store, and any later process (tuning
  // or not) uses them.
  bool autotune = false;
  // Accept linear/conv2d nodes with a fused residual add (ir::GemmEpilogue; plan::
  // fuse_epilogues then folds them). Off by default: on an H100 the fused UNet step at 512²
  // was 1 % faster and its arena 4 % smaller, but the first step at each new resolution took
  // 20–80 ms longer (cuBLASLt's first calls with beta·C on new layouts; not module loading —
  // CUDA_MODULE_LOADING=EAGER changed nothing), which put 512 -> 768 over its 100 ms budget
  // (bench/results/README.md, fused epilogues). Fused activations are always accepted.
  bool fuse_residual = false;
  size_t workspace_bytes = size_t{32} << 20;  // cuBLASLt workspace (32 MiB suits Hopper)
  // W8A8 on Hopper as one fused kernel where it applies (cuda_gemm.h, fused_s8_applies): the
  // s32 result never leaves the GEMM. On by default; $HYRT_CUDA_FUSED_S8=0 turns the default
  // off (a knob for measuring what the fusion gains).
  bool fused_s8_gemm = default_fused_s8_gemm();
};

// Measured cost of one candidate for one GemmKey (microseconds of GPU time, median).
struct GemmCandidateStats {
  bool available = false;  // cuBLASLt offered a working algorithm (and, W8A8, s8 weights)
  bool measured = false;   // total_us was timed (false: the roofline estimate)
  double total_us = NAN;   // the whole candidate: staging kernels + GEMM + epilogue
  double gemm_us = NAN;    // the cuBLASLt call alone, with the best algorithm
  int algos_timed = 0;     // heuristic results that ran
};

// What the ProgramCache entry of a GemmKey records: the choice and the measurements behind it.
struct GemmTuning {
  GemmKey key;
  GemmCandidate chosen = GemmCandidate::kF16;
  GemmCandidateStats f16, w8a8;
  const GemmCandidateStats& stats(GemmCandidate c) const {
    return c == GemmCandidate::kF16 ? f16 : w8a8;
  }
  // "gemm m=.. n=.. k=..: f16 12.0 us (gemm 11.1), w8a8 9.8 us (gemm 8.3) -> w8a8"
  std::string to_string() const;
};

// The Kernel that CudaBackend::prepare returns for a linear node.
class CudaGemmKernel : public Kernel {
 public:
  // The tuning record of this node's GemmKey (shared with every node of that key).
  virtual const GemmTuning& tuning() const = 0;
  // The candidate run() enqueues: the tuned choice, or what the backend's policy forces.
  virtual GemmCandidate candidate() const = 0;
  // Whether the W8A8 candidate runs as the fused Hopper kernel (cuda_gemm.h, fused_s8_applies)
  // rather than cuBLASLt's s8 GEMM and hyrt's rescale pass.
  virtual bool fused_s8() const = 0;
  // Enqueues a given candidate (tests, benchmarks). Throws kUnsupported if unavailable.
  virtual void run_candidate(GemmCandidate c, std::span<const TensorView> inputs,
                             const TensorView& output) = 0;
};

// The roofline estimate of one candidate for `key` in microseconds (the backend's estimate_us
// before measurements, and the untimed choice between candidates):
//   t = max(flops / rate, bytes / 3.0 TB/s) + 6 µs, flops = 2·M·N·K, rate 700 TFLOP/s (f16)
//   or 1200 TOPS (s8); bytes = activations in and out (a conv through im2col reads its input,
//   M·K/9 values: each pixel of a 3x3 conv feeds 9 rows, the repeats served by L2; its f16
//   candidate writes the M·K matrix and reads it back) + weights as stored, + for f16 with s8
//   weights the f16 copy written and read, + for W8A8 the quantized activations and the s32
//   result written and read. ($HYRT_CUDA_ROOFLINE=matrix: a conv's input counted as the whole
//   matrix read and no read-back, the estimate before 2026-12-06 — for measuring.)
// W8A8 run by the fused kernel (fused_s8: cuda_gemm.h, fused_s8_applies) writes and reads no
// s32 result and launches two kernels, not three.
double gemm_roofline_us(const GemmKey& key, GemmCandidate c, bool fused_s8 = false);

class CudaBackend : public Backend {
 public:
  virtual const CudaDeviceInfo& device_info() const = 0;
  // The stream every kernel of this backend is enqueued on.
  virtual cudaStream_t stream() const = 0;
  // Copies between host memory and this backend's device memory, ordered after the work
  // already enqueued; they return when the copy is done. Any alignment.
  virtual void copy_to_device(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* device_src, size_t bytes) = 0;
  // Sets `bytes` of device memory to the byte `value` (0xff poisons f16 and f32 with NaN).
  virtual void fill_bytes(void* device_dst, int value, size_t bytes) = 0;
  // scratch_bytes(): device bytes held outside the executors' arenas: the cuBLASLt workspace,
  // plus the fallback staging slots (cuda_context.h, Scratch) that kernels run without a
  // bound workspace grow (tests, benchmarks). Under an executor that is just the cuBLASLt
  // workspace: each kernel's staging is its workspace in the arena. resident_weight_bytes():
  // the weights.
};

// The dtype in which the CUDA backend holds a graph value on the device (Backend::storage_dtype):
// floating values of rank >= 2 (activations) in f16, as DESIGN.md says activations live on
// CUDA; floating values of rank <= 1 (per-sample scalars such as the timesteps [B], which an
// f16 would round to 0.5 near t = 1000) keep f32; integer values (token ids) keep their dtype.
// Wide-range activations (ir::Value::wide_range: the SDXL VAE's under force_upcast) are f32 at
// any rank: the GEMMs then run TF32 operands (f16's mantissa, f32's range) and the other
// kernels their f32 forms, so that placement may run those graphs here (plan::holds_wide_range).
// Every CUDA kernel reads and writes its activations in this dtype.
DType device_storage_dtype(const ir::Value& v);

// The backend on CUDA device `options.device`. Throws hyrt::Error with a message saying why
// when it cannot be made: kUnsupported for no device or driver (the runtime's reason is
// quoted) or a GPU older than sm_90 (the kernels are built for sm_90 with PTX for newer);
// kInvalidArgument for a device index out of range.
std::unique_ptr<CudaBackend> make_cuda_backend(const CudaBackendOptions& options = {});
// The same, returning nullptr instead of throwing; `why_not` (if given) receives the reason.
std::unique_ptr<CudaBackend> try_make_cuda_backend(const CudaBackendOptions& options,
                                                   std::string* why_not);

}  // namespace hyrt::backend::cuda

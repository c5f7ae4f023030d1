// Internal to the CUDA backend: GEMM programs for linear and conv2d nodes (cuda_gemm.cpp).
//
// A program is keyed by GemmKey (what it computes) and lives in the ProgramCache under
// "cuda <device name> sm<cc> <gemm_program_key(key).to_string()>" — the key without fused
// activation/residual bits, which only change our passes around the matmul — (plus the im2col
// geometry for a conv
// that gathers its operand, below): the cuBLASLt algorithm chosen for each candidate and the
// GemmTuning record (which candidate runs, measured microseconds). It is made on first use of
// the key by timing both candidates on that node's own uploaded weights and random
// activations (cuda_backend.h, CudaBackendOptions); every later node of the same key reuses it
// without timing anything.
//
// Convolutions (kConv2d: x [B, H, W, Cin] NHWC, w [Cout, Cin, kh, kw] OIHW, optional bias
// [Cout] -> y [B, Ho, Wo, Cout]) run as the same GEMM programs:
//   - 1x1, stride 1, padding 0: exactly the linear y [B·H·W, Cout] = x [B·H·W, Cin] · wᵀ, with
//     the linear program of that key (shared with a linear node of the same key);
//   - otherwise: the GEMM with M = B·Ho·Wo, N = Cout, K = kh·kw·Cin on the im2col matrix of x
//     (cuda_kernels.h) and weights reordered once at upload, on the device, to
//     [Cout, kh, kw, Cin] (8-bit S weights stay s8 with their per-output-channel scales). The
//     f16 candidate writes the im2col matrix into its staging (launch_im2col); W8A8
//     quantizes its rows as it gathers them (launch_im2col_quantize_s8). The program's timings
//     include that pass, so its key carries kIm2colOperand and its cache entry the geometry.
//     Two forms skip the im2col matrix (cuda_gemm.cpp says when): a W8A8 conv whose input a
//     group norm wrote and whose tiles fill the GPU runs as an implicit GEMM on its input
//     quantized per image (gemm_s8_fused.h, launch_implicit_s8_conv; $HYRT_CUDA_CONV_IMPLICIT),
//     and a float conv to a few channels is computed directly (launch_conv_narrow;
//     $HYRT_CUDA_CONV_NARROW=0 turns it off). Their cache entries say so (" implicit128|160",
//     " narrow").
// Padding is symmetric (the same on every side), the CPU backend's (oneDNN's) and PyTorch's
// semantics: Ho = (H + 2·padding − kh) / stride + 1.
// Activations are as the device holds them (device_storage_dtype): f16 whatever the graph's
// float dtype says, f32 for wide-range values (and a linear's rank-1 f32 input). On f32
// activations the float ("f16") candidate's operands are f32 on TF32 tensor cores — weights
// widened or uploaded as f32, a conv's im2col matrix f32 — and W8A8 quantizes from f32.
//
// Row chunks (bounded staging). A candidate stages operands that grow with M through staging
// buffers (below): f16 — a conv's im2col matrix [rows, K] in the operand type;
// W8A8 — the quantized activations s8 [rows, K4], their scales f32 [rows] and the s32 result
// [rows, N4]. So that this staging does not scale with the resolution, a candidate whose
// staging for all M rows exceeds the staging budget (gemm_staging_budget) runs M in chunks of
// rows (gemm_chunking): per chunk its staging kernels, the cuBLASLt matmul and the epilogue,
// each chunk writing its rows of the output. A candidate whose whole M fits runs as one chunk:
// the layouts, algorithm and launches of an unchunked program. (kWeightWide, one layer's
// widened weights, does not depend on M.)
// gemm_roofline_us counts the launches that further chunks add.
//
// Staging (the kernel's Kernel::workspace_bytes/bind_workspace). The buffers one run of the
// kernel's chosen candidate (CudaGemmKernel::candidate, fixed at prepare) uses, for one chunk,
// laid out by StagingLayout (cuda_context.h: the workspace's start aligned up to 256 bytes, then
// each buffer at a 256-byte-aligned offset, in Scratch order):
//   f16:  kWeightWide [N, K] for 8-bit S weights, then kIm2col [rows, K] for a conv that
//         gathers its operand, both in the operand type (f16, or f32 on f32 activations);
//   W8A8: kActS8 s8 [rows, K4], kRowScales f32 [rows], kAccS32 s32 [rows, N4]; the implicit
//         conv (never chunked): kActS8 s8 [B, H, W, Cin] (its input quantized), kRowScales
//         f32 [M + B] (the per-row scales, then each image's absmax); the narrow conv: none;
// workspace_bytes() = their sizes, each rounded up to 256, + 192 bytes of slack for the
// alignment (kWorkspaceSlack); 0 when the candidate stages nothing (f16 on f16 activations of a
// linear with float weights). With a workspace bound, run() stages there; without one (tests,
// benchmarks), and always for run_candidate of the other candidate, it stages in the context's
// shared slots, grown by that first run (cuda_context.h, Scratch). Preparing reserves nothing
// (tuning stages in a buffer of its own, freed before prepare returns).
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"

namespace hyrt::backend::cuda {

// The program of one cache entry. For a chunked candidate (gemm_chunking) the recorded
// algorithm is the one for a full chunk's layouts (GemmChunking::rows rows), gemm_us the
// cuBLASLt calls of all chunks together and total_us the whole candidate over all chunks; the
// cache key then names the rows per chunk (the budget decides them: another budget, another
// program). The last chunk, when shorter, has an algorithm of its own that is not recorded
// but derived whenever the program is made: the recorded one where cublasLtMatmulAlgoCheck
// accepts it for the shorter layouts, else the heuristic's first for them.
struct CudaGemmProgram {
  GemmTuning tuning;
  cublasLtMatmulAlgo_t f16_algo{};       // valid when tuning.f16.available
  cublasLtMatmulAlgo_t s8_algo{};        // valid when tuning.w8a8.available
  cublasLtMatmulAlgo_t f16_tail_algo{};  // the last chunk's (f16_algo when unchunked or even)
  cublasLtMatmulAlgo_t s8_tail_algo{};   // the last chunk's (s8_algo when unchunked or even)
};

// The default budget for one candidate's M-dependent staging, all its buffers together. 64 MiB:
// on an H200 the SDXL UNet step at 1024² (batch 2, int8) took 38.8 ms with it against 40.0 ms
// with 32 MiB, 42.9 with 16 and 45.9 with 8 (fewer, larger chunks of the big GEMMs; 256 MiB
// gained nothing more), for at most 32 MiB more of one kernel's workspace in the arena.
inline constexpr size_t kGemmStagingBudget = size_t{64} << 20;
// Rows per chunk are a multiple of this (one chunk at least, whatever the budget).
inline constexpr int64_t kGemmChunkRowAlign = 64;

// The budget kernels run their chunks under, read when a kernel is made (prepare) and by
// gemm_roofline_us: kGemmStagingBudget unless set (or, at start-up, $HYRT_CUDA_GEMM_STAGING_MB).
// set_gemm_staging_budget replaces it process-wide and returns the previous value — for tests and
// benchmarks that make small shapes run in chunks; kernels made before keep their chunks.
size_t gemm_staging_budget();
size_t set_gemm_staging_budget(size_t bytes);

// How one candidate of a GEMM covers its M rows.
struct GemmChunking {
  int64_t rows = 0;          // rows of every chunk but the last (M when unchunked)
  int64_t count = 1;         // chunks
  int64_t tail_rows = 0;     // rows of the last chunk, 1..rows (M when unchunked)
  size_t staging_bytes = 0;  // the candidate's M-dependent staging, for `rows` rows
  bool chunked() const { return count > 1; }
};

// Bytes of candidate c's M-dependent staging per GEMM row (0: it stages none, e.g. f16 on f16
// activations of a linear, or W8A8 without 8-bit S weights): f16 — K times the operand size
// (2, or 4 on f32 activations) for a conv's im2col matrix (kIm2colOperand); W8A8 —
// K4 + 4 + N4·4, or K4 + 4 when the fused kernel runs it (fused_s8: no s32 result staged).
size_t gemm_staging_bytes_per_row(const GemmKey& key, GemmCandidate c, bool fused_s8 = false);

// The chunks of candidate c for `key` under `budget`:
//   - one chunk of M rows when M · bytes_per_row <= budget (or nothing is staged);
//   - else at most R = max(64, ⌊budget / bytes_per_row / 64⌋ · 64) rows per chunk, balanced:
//     count = ⌈M / R⌉, rows = ⌈⌈M / count⌉ / 64⌉ · 64 (<= R), count = ⌈M / rows⌉ (>= 2),
//     tail_rows = M − (count − 1) · rows.
// Chunk i covers GEMM rows [i · rows, i · rows + (i < count − 1 ? rows : tail_rows)).
// fused_s8: W8A8 runs as the fused kernel (fused_s8_applies).
GemmChunking gemm_chunking(const GemmKey& key, GemmCandidate c, size_t budget,
                           bool fused_s8 = false);

// Whether the W8A8 candidate of `key` runs as the fused Hopper kernel (gemm_s8_fused.h) on
// `device` — quantize, then one GEMM whose epilogue rescales to f16 — rather than cuBLASLt's
// s8 GEMM and the rescale pass: `enabled` (CudaBackendOptions::fused_s8_gemm), a build with the
// kernels on an sm_90 device, 8-bit S weights on f16 activations, no fused activation (a fused
// residual it adds in its epilogue), and a shape the kernel takes (K a multiple of 16, N of 8).
bool fused_s8_applies(const GemmKey& key, const CudaDeviceInfo& device, bool enabled);

// A GemmKey::epilogue bit beyond program_cache.h's Epilogue values: the program's activation
// operand is gathered by im2col from an NHWC input (a conv other than 1x1/stride 1/padding 0),
// so it does more than a linear of the same M, N, K and must not share its key or timings.
// (A stop-gap until GemmKey has a field for a gathered operand.)
inline constexpr uint8_t kIm2colOperand = 1u << 7;

// The GemmKey of a linear node as this backend runs it: M = rows of x, N, K from the weight,
// a_type = out_type = x as the device holds it (device_storage_dtype), w_type = s8 for 8-bit S
// weights and the operand type otherwise (the uploaded form: f16, f32 on f32 activations), epilogue
// = kBias when there is a bias.
GemmKey linear_gemm_key(const ir::Graph& graph, const ir::Node& node);

// Uploads the node's weights, fetches or tunes its program, lays out its staging (above).
// A linear whose x is quantized (DType::kS8Rows, made by a layer norm or GEGLU:
// plan::quantize_activations) always runs W8A8 as the fused kernel on x as bound — its values
// [M, K] and row scales — with no quantize pass, no staging and no row chunks; its GemmKey is
// the one a float x of the output's storage dtype would give (it shares that program).
std::unique_ptr<CudaGemmKernel> make_linear_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache);

// The key a GEMM program is cached, tuned and recorded under: the node's GemmKey without its
// fused activation and residual bits. Those change only our own passes around the cuBLASLt
// call (beta·C, the rescale, the activation pass), not the matmul whose algorithms the program
// holds, so a fused node shares the program (and the candidate choice) of the plain GEMM of
// its shape: no extra heuristic queries or tuning per epilogue at a new resolution.
GemmKey gemm_program_key(const GemmKey& key);

// The bias and fused-epilogue inputs of a linear/conv2d node as this backend takes them: an
// optional float bias weight, and for a fused residual (ir::GemmEpilogue) an activation of the
// output's shape and dtype (held like the output on the device, read as bound). Any activation
// is supported: W8A8 applies it in its rescale pass; the f16 candidate in one pass after the
// GEMM (cuBLASLt has no SiLU or QuickGELU epilogue), where a residual without an activation is
// cuBLASLt's own beta·C. A linear's low-rank term (ir::GemmEpilogue::low_rank, a LoRA adapter):
// float down [R, K] and up [N, R] weights with x and y f16 on the device; such a node runs the
// f16 candidate on its weights widened with up · down added (one small GEMM per run, whatever
// M: cheaper than the adapter's two GEMMs over every row), the stored weights only read.
bool gemm_inputs_supported(const ir::Graph& graph, const ir::Node& node);

// Conv2d nodes this backend runs: x a float activation of rank 4 (held as f16 on the device,
// or f32 when wide-range), y of x's dtype and storage, w a graph weight [Cout, Cin, kh, kw] stored
// s8 (8-bit S), f32, f16 or bf16, an optional float bias weight [Cout], Conv2dAttrs with stride >=
// 1 and padding >= 0. Or x quantized (s8rows, a group norm's: plan::quantize_activations) with y
// float held as f16 — which the backend runs only where conv2d_reads_quantized_input says.
bool supports_conv2d(const ir::Graph& graph, const ir::Node& node);

// Whether a conv2d node supports_conv2d takes can read its x quantized (s8rows with one scale per
// image on each row: a quantizing group norm's output): only as the implicit-GEMM W8A8 kernel
// (8-bit S weights, the fused kernel on this device, the tile rule giving it a tile — about a wave
// — under $HYRT_CUDA_CONV_IMPLICIT), with its GEMM rows the input's positions (stride 1, same size:
// the row scales are then the epilogue's), no fused activation, an f16 output. The node's kernel
// then runs that form on x as bound, with no quantize pass (make_conv2d_kernel).
bool conv2d_reads_quantized_input(const ir::Graph& graph, const ir::Node& node,
                                  const CudaDeviceInfo& device, bool fused_s8_enabled);

// The GemmKey of a supported conv2d node: M = B·Ho·Wo, N = Cout, K = kh·kw·Cin, a_type =
// out_type = x's storage (f16, f32 when wide-range), w_type = s8 (8-bit S) or the operand type
// (f16, or f32 beside f32 activations), epilogue = kBias when there is a bias, plus
// kIm2colOperand unless the conv is 1x1 / stride 1 / padding 0 (then it equals the key of the
// linear over [B·H·W, Cin] with the same activations).
GemmKey conv2d_gemm_key(const ir::Graph& graph, const ir::Node& node);

// Uploads the node's weights (reordered to [Cout, kh, kw, Cin]), fetches or tunes its
// program, lays out its staging (the f16 candidate's im2col matrix: rows·K·2 bytes — ·4 on f32
// activations — for the rows of a chunk, gemm_chunking). The kernel's run() takes
// x [B, H, W, Cin] and writes y [B, Ho, Wo, Cout] as the device holds them (f16, or f32 when
// wide-range), both 16-byte aligned device
// memory; bound weight views are ignored (the kernel owns its uploaded copies).
std::unique_ptr<CudaGemmKernel> make_conv2d_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache);

}  // namespace hyrt::backend::cuda

// Internal to the CUDA backend: GEMM programs for linear and conv2d nodes (cuda_gemm.cpp).
//
// A program is keyed by GemmKey (what it computes) and lives in the ProgramCache under
// "cuda <device name> sm<cc> <GemmKey::to_string()>" (plus the im2col geometry for a conv
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
//     (cuda_kernels.h) and weights reordered once at upload to [Cout, kh, kw, Cin] (8-bit S
//     weights stay s8 with their per-output-channel scales). The f16 candidate writes the
//     im2col matrix into a backend scratch (launch_im2col_f16); W8A8 quantizes its rows as it
//     gathers them (launch_im2col_quantize_s8). The program's timings include that pass, so
//     its key carries kIm2colOperand and its cache entry the geometry.
// Padding is symmetric (the same on every side), the CPU backend's (oneDNN's) and PyTorch's
// semantics: Ho = (H + 2·padding − kh) / stride + 1.
// Conv activations are f16 on the device (device_storage_dtype) whatever the graph's float
// dtype says; linear nodes keep the graph's dtype (f32 or f16, cuda_backend.h).
#pragma once

#include <cublasLt.h>

#include <memory>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_context.h"

namespace hyrt::backend::cuda {

struct CudaGemmProgram {
  GemmTuning tuning;
  cublasLtMatmulAlgo_t f16_algo{};  // valid when tuning.f16.available
  cublasLtMatmulAlgo_t s8_algo{};   // valid when tuning.w8a8.available
};

// A GemmKey::epilogue bit beyond program_cache.h's Epilogue values: the program's activation
// operand is gathered by im2col from an NHWC input (a conv other than 1x1/stride 1/padding 0),
// so it does more than a linear of the same M, N, K and must not share its key or timings.
// (A stop-gap until GemmKey has a field for a gathered operand.)
inline constexpr uint8_t kIm2colOperand = 1u << 7;

// The GemmKey of a linear node as this backend runs it: M = rows of x, N, K from the weight,
// a_type = out_type = x as the device holds it (device_storage_dtype), w_type = s8 for 8-bit S
// weights and f16 otherwise (the uploaded form), epilogue = kBias when there is a bias.
GemmKey linear_gemm_key(const ir::Graph& graph, const ir::Node& node);

// Uploads the node's weights, fetches or tunes its program, reserves its scratch.
std::unique_ptr<CudaGemmKernel> make_linear_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache);

// Conv2d nodes this backend runs: x a float activation of rank 4 (held as f16 on the device),
// y of x's dtype, w a graph weight [Cout, Cin, kh, kw] stored s8 (8-bit S), f32, f16 or bf16,
// an optional float bias weight [Cout], Conv2dAttrs with stride >= 1 and padding >= 0.
bool supports_conv2d(const ir::Graph& graph, const ir::Node& node);

// The GemmKey of a supported conv2d node: M = B·Ho·Wo, N = Cout, K = kh·kw·Cin, a_type =
// out_type = f16, w_type = s8 (8-bit S) or f16, epilogue = kBias when there is a bias, plus
// kIm2colOperand unless the conv is 1x1 / stride 1 / padding 0 (then it equals the key of the
// linear over [B·H·W, Cin] with f16 activations).
GemmKey conv2d_gemm_key(const ir::Graph& graph, const ir::Node& node);

// Uploads the node's weights (reordered to [Cout, kh, kw, Cin]), fetches or tunes its
// program, reserves its scratch (the im2col matrix: M·K·2 bytes). The kernel's run() takes
// x f16 [B, H, W, Cin] and writes y f16 [B, Ho, Wo, Cout], both 16-byte aligned device
// memory; bound weight views are ignored (the kernel owns its uploaded copies).
std::unique_ptr<CudaGemmKernel> make_conv2d_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache);

}  // namespace hyrt::backend::cuda

// Internal to the CUDA backend: GEMM programs for linear nodes (cuda_gemm.cpp).
//
// A program is keyed by GemmKey (what it computes) and lives in the ProgramCache under
// "cuda <device name> sm<cc> <GemmKey::to_string()>": the cuBLASLt algorithm chosen for each
// candidate and the GemmTuning record (which candidate runs, measured microseconds). It is
// made on first use of the key by timing both candidates on that node's own uploaded weights
// and random activations (cuda_backend.h, CudaBackendOptions); every later node of the same
// key reuses it without timing anything.
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

// The GemmKey of a linear node as this backend runs it: M = rows of x, N, K from the weight,
// a_type = out_type = x's dtype, w_type = s8 for 8-bit S weights and f16 otherwise (the
// uploaded form), epilogue = kBias when there is a bias.
GemmKey linear_gemm_key(const ir::Graph& graph, const ir::Node& node);

// Uploads the node's weights, fetches or tunes its program, reserves its scratch.
std::unique_ptr<CudaGemmKernel> make_linear_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache);

}  // namespace hyrt::backend::cuda

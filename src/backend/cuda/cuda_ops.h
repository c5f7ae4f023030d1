// The CUDA backend's kernels for every non-GEMM op of the IR (everything except kLinear,
// kConv2d, kAttention), so that `device` placement keeps whole models on the GPU. Semantics are
// the CPU backend's (cpu/{norm,elementwise,data_movement}.cpp), including broadcasting, eps,
// the erf GELU and the timestep embedding's f32 rounding; the launches are in op_kernels.h.
//
// Storage. Every value is read and written in device_storage_dtype (cuda_backend.h): float
// values of rank ≥ 2 in f16, of rank ≤ 1 in f32, token ids in s32; math is f32. An op may mix
// them (an f32 [C] activation added to f16 [B, T, C] ones). A reshape between a rank ≤ 1 and a
// rank ≥ 2 value changes storage, so it converts instead of aliasing (and refuses to run in
// place then). Bound activation views must carry their storage dtype and be 16-byte aligned
// (a cudaMalloc arena at the planner's 64-byte offsets is); run() checks both.
//
// Weights (gamma/beta, weight operands of add/mul/concat, embedding tables, anything else fed
// as a weight) are converted at prepare to their storage dtype — an embedding table to its
// output's — uploaded to device buffers the kernel owns, and the weight views passed to run()
// are ignored. Float weights stored f32, f16 or bf16 are accepted; "8-bit S" s8 weights only
// feed GEMMs and are refused here.
//
// Kernels enqueue on the context's stream and return (no host synchronisation, no allocation
// at run), so a run can be captured in a CUDA graph. Group norm nodes own a small workspace
// (partial sums, one counter per sample), zeroed at prepare; a kernel must not be run twice
// concurrently. Embedding ids outside [0, V) produce NaN rows (op_kernels.h) instead of the CPU
// backend's exception: a device kernel cannot throw, and NaN cannot pass for a result.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "backend/cuda/cuda_context.h"

namespace hyrt::backend::cuda {

// True if a kernel of this file runs `node` (every op except kLinear, kConv2d, kAttention, with
// float activations and weights — s32 ids for kEmbedding — and group norm up to 4096 channels).
bool supports_device_op(const ir::Graph& graph, const ir::Node& node);
// Why supports_device_op is false ("" when it is true), for error messages and logs.
std::string device_op_unsupported_reason(const ir::Graph& graph, const ir::Node& node);
// Builds it; uploads the node's weights. Throws hyrt::Error(kUnsupported) naming the node and
// the reason otherwise, kInvalidModel when a stored weight differs from the graph's.
std::unique_ptr<Kernel> make_device_op_kernel(CudaContext& ctx, const ir::Graph& graph,
                                              const ir::Node& node,
                                              const weights::WeightSource& weights);
// Reads weight `v` from `weights` and uploads it as `storage` (f16/f32 from any float dtype,
// s32 as is) into a buffer of its own; kInvalidModel naming `node_name` when the stored tensor
// differs from the graph's declaration. Callers share it through CudaContext::resident.
DeviceBuffer upload_weight(const CudaContext& ctx, const weights::WeightSource& weights,
                           const ir::Value& v, DType storage, const std::string& node_name);
// A rough estimate in microseconds for placement: bytes moved (inputs, weights and output in
// their storage dtypes; group norm reads x twice) / 2.5 TB/s + 3 µs per launch; 0 for a
// reshape that aliases. Infinity when unsupported.
double estimate_device_op_us(const ir::Graph& graph, const ir::Node& node);

}  // namespace hyrt::backend::cuda

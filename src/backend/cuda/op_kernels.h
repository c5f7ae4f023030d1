// hyrt's CUDA kernels for the non-GEMM ops of the IR (norm.cu, elementwise.cu,
// data_movement.cu); the Kernel classes that call them are in cuda_ops.cpp, and the op
// semantics they implement are the CPU backend's (cpu/{norm,elementwise,data_movement}.cpp).
//
// Plain functions over device pointers, so that this header compiles as ordinary C++17 and the
// .cu files include no hyrt header beyond cuda_kernels.h. As there: each launch_* enqueues on
// `stream` and returns cudaGetLastError() right after its launches (cudaErrorInvalidValue for
// arguments it cannot run, without launching anything); zero-sized work launches nothing.
//
// Storage: float data is f16 (IEEE binary16) or f32, named by a FloatType; all math is f32
// (statistics of the norms accumulate in f32 per thread and are combined in double). Data is
// dense and row-major. Every pointer must be 16-byte aligned (the memory planner's offsets in
// a cudaMalloc arena are); the kernels move 16 bytes per access where the sizes allow it and
// fall back to narrower accesses for odd sizes, never for misaligned pointers.
//
// In place: the ops that the IR lets run in place (op.h, OpTraits::in_place_input0) are
// correct with y == x (or y == a): every output element is written by the thread that read the
// input elements it depends on, after reading them (norms and softmax read their whole row or
// group first).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/cuda_kernels.h"  // FloatType

namespace hyrt::backend::cuda {

inline constexpr int kMaxOpDims = 8;

// --- norm.cu ---------------------------------------------------------------------------------

// Group norm over channels-last x [batch, positions, channels] (positions = every dim between
// batch and channels), `groups` groups of channels/groups consecutive channels; statistics per
// (batch, group) over positions · channels/groups values; y = (x − mean)·rstd·γ + β, then
// y·sigmoid(y) when `silu`. γ, β: f32 [channels].
struct GroupNormShape {
  int64_t batch = 0, positions = 0, channels = 0, groups = 1;
  float eps = 1e-5f;
  bool silu = false;
};
// Whether launch_group_norm runs this shape: groups dividing channels ≤ 4096, channels / w ≤
// 1024 where w is the widest of 8, 4, 2, 1 dividing channels (a block holds one thread per w
// channels of a row), and the statistics kernel's shared memory within 48 KiB (it rules out
// only thousands of groups at the widest rows).
bool group_norm_supported(int64_t channels, int64_t groups);
// Bytes of the workspace a launch needs (partial sums, per-channel coefficients, counters).
// `multiprocessors` sizes the split of the reduction; pass the same value to the launch.
size_t group_norm_workspace_bytes(const GroupNormShape& s, int multiprocessors);
// Two kernels: partial sums over ~2 blocks per multiprocessor (shifted by each group's first
// value, so that E[x²] − E[x]² does not cancel), the last block of each sample folding them
// into per-channel scale and shift; then a streaming pass that applies them. The workspace
// must be zeroed once before its first use (cudaMemset); each launch leaves it reusable. One
// workspace serves one launch at a time.
cudaError_t launch_group_norm(const void* x, void* y, FloatType type, const GroupNormShape& s,
                              const float* gamma, const float* beta, void* workspace,
                              int multiprocessors, cudaStream_t stream);

// The group norm above with its output quantized per sample (ir::NormAttrs::quantize_output on
// a group norm): every value as launch_group_norm would write it in f16, quantized by the W8A8
// rule (launch_quantize_rows_s8's: scale = bound / 127) against one bound per sample, into q s8
// [batch, positions, channels] (x's layout); the sample's scale is written for each of its
// rows into row_scales f32 [batch · positions]. The bound is the largest |value| at any
// channel's smallest or largest input, raised to SiLU's minimum magnitude (0.2785) where a
// channel's normalised range spans SiLU's minimum: so it equals what launch_quantize_images_s8
// finds over launch_group_norm's output — the same bits — unless SiLU's minimum lies inside a
// channel's range and no value reaches 0.2785 (then the scale is a little coarser, and still
// nothing clips). The statistics pass also folds each channel's extremes (atomics into the
// workspace, which its last block reads and resets): no pass beyond launch_group_norm's two,
// and q has half the f16 output's bytes. x f16, 16-byte aligned, q 8-byte
// aligned; channels as group_norm_quantize_supported says. Workspace: zeroed once before its
// first use, group_norm_quantize_workspace_bytes, one launch at a time.
bool group_norm_quantize_supported(int64_t channels, int64_t groups);
size_t group_norm_quantize_workspace_bytes(const GroupNormShape& s, int multiprocessors);
cudaError_t launch_group_norm_quantize(const void* x, const GroupNormShape& s, const float* gamma,
                                       const float* beta, int8_t* q, float* row_scales,
                                       void* workspace, int multiprocessors, cudaStream_t stream);

// Layer norm over the last axis: x [rows, channels] -> y, mean and Σ(x − mean)² over the row
// (two passes in f32), y = (x − mean)·rstd·γ + β with γ, β f32 [channels].
cudaError_t launch_layer_norm(const void* x, void* y, FloatType type, int64_t rows,
                              int64_t channels, float eps, const float* gamma, const float* beta,
                              cudaStream_t stream);

// The layer norm above with its output quantized (ir::NormAttrs::quantize_output): each row as
// launch_layer_norm would write it in f16, quantized by launch_quantize_rows_s8's rule (the same
// bits as those two launches) into q s8 [rows, channels] (ld = channels) and scales f32 [rows].
// x f16, 16-byte aligned; channels as layer_norm_quantize_supported says (a multiple of 8, up
// to 2048: the row is held in registers), else cudaErrorInvalidValue.
bool layer_norm_quantize_supported(int64_t channels);
cudaError_t launch_layer_norm_quantize(const void* x, FloatType type, int64_t rows,
                                       int64_t channels, float eps, const float* gamma,
                                       const float* beta, int8_t* q, float* scales,
                                       cudaStream_t stream);

// Softmax over the last axis: x [rows, cols] -> y = exp(x − max) / Σ exp(x − max).
cudaError_t launch_softmax(const void* x, void* y, FloatType type, int64_t rows, int64_t cols,
                           cudaStream_t stream);

// --- elementwise.cu --------------------------------------------------------------------------

enum class UnaryOp : uint8_t {
  kGelu,       // x · Φ(x), erf form
  kQuickGelu,  // x · sigmoid(1.702 x)
  kSilu,       // x · sigmoid(x)
  kScale,      // x · alpha + beta
  kRelu,       // max(x, 0)
  kTanh,       // tanh(x)
};
// y[i] = op(x[i]) for n elements; x and y of the same type.
cudaError_t launch_unary(UnaryOp op, const void* x, void* y, FloatType type, int64_t n, float alpha,
                         float beta, cudaStream_t stream);

// x [rows, 2n] -> y [rows, n]: y = x[:, :n] · gelu(x[:, n:]) (diffusers GEGLU).
cudaError_t launch_geglu(const void* x, void* y, FloatType type, int64_t rows, int64_t n,
                         cudaStream_t stream);
// GEGLU with its output quantized (ir::GegluAttrs::quantize_output): each row as launch_geglu
// would write it in f16, quantized by launch_quantize_rows_s8's rule (the same bits as those two
// launches) into q s8 [rows, n] (ld = n) and scales f32 [rows]. x f16, 16-byte aligned; n as
// geglu_quantize_supported says (a multiple of 8, up to 32768: the row is held in registers),
// else cudaErrorInvalidValue.
bool geglu_quantize_supported(int64_t n);
cudaError_t launch_geglu_quantize(const void* x, FloatType type, int64_t rows, int64_t n, int8_t* q,
                                  float* scales, cudaStream_t stream);

enum class BinaryOp : uint8_t { kAdd, kMul };
// b broadcast onto a, as merged dims (the CPU backend's plan_broadcast): a and y are dense with
// dims extent[0..rank) (outermost first); b's element for a's index (i_0, ..., i_r-1) is at
// Σ i_d · b_stride[d], b_stride 0 for broadcast dims. The innermost b_stride must be 0 or 1.
struct BroadcastDims {
  int rank = 1;
  int64_t extent[kMaxOpDims] = {};
  int64_t b_stride[kMaxOpDims] = {};
};
// y = a + b or a · b; a and y of type `type`, b of `b_type` (an f32 per-sample vector may meet
// f16 activations).
cudaError_t launch_binary(BinaryOp op, const void* a, const void* b, FloatType b_type, void* y,
                          FloatType type, const BroadcastDims& dims, cudaStream_t stream);

// y[i] = x[i] converted (f16 <-> f32, or a copy when the types match), rounded to nearest even.
cudaError_t launch_convert(const void* x, FloatType x_type, void* y, FloatType y_type, int64_t n,
                           cudaStream_t stream);

// --- data_movement.cu ------------------------------------------------------------------------
// Data movement is type-blind: elements are `elem_bytes` wide (1, 2, 4 or 8).

// Concatenation: every input i is [outer, row_bytes[i]] (bytes), the output [outer, Σ
// row_bytes]; output row r is the inputs' rows r side by side. Any number of inputs (one
// launch per 8).
cudaError_t launch_concat(const void* const* inputs, const int64_t* row_bytes, int count,
                          int64_t outer, void* y, cudaStream_t stream);

// Nearest-neighbour resampling x [batch, h, w, c] -> y [batch, oh, ow, c], PyTorch's
// "nearest": src(i) = min(floor(f32(i) · f32(in / out)), in − 1) — the CPU backend's rule.
cudaError_t launch_upsample_nearest(const void* x, void* y, int elem_bytes, int64_t batch,
                                    int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                                    cudaStream_t stream);

// A permutation reduced to its essentials (cuda_ops.cpp builds it: size-1 dims dropped, runs of
// dims that stay adjacent merged): the output is dense with dims extent[0..rank), and output
// index (i_0, ..., i_r-1) reads input element Σ i_d · src_stride[d]. rank ≥ 1.
struct PermuteDims {
  int rank = 1;
  int64_t extent[kMaxOpDims] = {};
  int64_t src_stride[kMaxOpDims] = {};
};
// Innermost output dim contiguous in the input (src_stride 1): rows copied in 16-byte words
// where the sizes allow; otherwise 32x32 tiles through shared memory, so that both the reads
// (along the input's contiguous dim) and the writes (along the output's) coalesce.
cudaError_t launch_permute(const void* x, void* y, int elem_bytes, const PermuteDims& dims,
                           cudaStream_t stream);

// Sinusoidal timestep embedding: t f32 [batch], freqs f32 [half] -> y [batch, 2·half]:
// arg = t[b] · freqs[i] (an f32 product), y[b, sin_at + i] = sin(arg), y[b, cos_at + i] =
// cos(arg) with (sin_at, cos_at) = (half, 0) when flip_sin_to_cos, else (0, half).
cudaError_t launch_timestep_embedding(const float* t, const float* freqs, int64_t batch,
                                      int64_t half, bool flip_sin_to_cos, void* y, FloatType type,
                                      cudaStream_t stream);

// Row lookup: ids s32 [n], table [vocab, width] -> y [n, width] (table and y of one type). An id
// outside [0, vocab) reads nothing: its output row is NaN, so a bad id shows in the result
// instead of reading out of bounds.
cudaError_t launch_embedding(const int32_t* ids, int64_t n, const void* table, int64_t vocab,
                             int64_t width, void* y, FloatType type, cudaStream_t stream);

}  // namespace hyrt::backend::cuda

// Internal to the CUDA backend: the W8A8 GEMM with hyrt's rescale epilogue fused into it, for
// Hopper (sm_90). Built from CUTLASS 3 (wgmma tensor-core instructions fed by TMA, a
// warp-specialized persistent kernel) when the build found CUTLASS (HYRT_HAVE_CUTLASS; the
// kernels live in sm90/gemm_s8_fused.cu, compiled for sm_90a only).
//
// Why: cuBLASLt's int8 GEMM can only write s32, which hyrt's rescale pass then reads back —
// 8 bytes per output beyond the f16 result, and a launch, for each of the ~750 int8 linears of
// an SDXL step. Here the accumulator is scaled, biased and rounded to f16 in the GEMM's own
// epilogue, with the same arithmetic as launch_rescale_s32:
//   y[m, n] = f16( float(Σ_k a[m, k] · w[n, k]) · (a_scale[m] · w_scale[n]) + bias[n]
//                  [+ float(residual[m, n])] )
// (round to nearest, once). No activation: nodes with one keep the separate pass.
//
// Operands (all device memory): a s8 [M, lda] row-major (the first K of each row used),
// w s8 [N, ldw] (PyTorch's [out, in]), a_scale f32 [M], w_scale f32 [N], bias f32 [N] or null,
// residual f16 [M, N] (ld = N) or null, y f16 [M, N] (ld = N; not overlapping the residual).
// Pointers 16-byte aligned.
// Stateless; safe from any host thread.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace hyrt::backend::cuda {

// The tile shape a launch runs (M x N per thread-block tile; K steps of 128).
enum class FusedS8Tile : uint8_t {
  kAuto,   // by the shape (fused_s8_auto_tile)
  kLarge,  // 128 x 128, two consumer warp groups cooperating on one tile
  kSmall,  // 64 x 128, two consumer warp groups on alternate tiles ("ping-pong")
};

// Whether this build holds the kernels and a device of compute capability major.minor can run
// them (sm_90 exactly: wgmma is not in later architectures' instruction sets under sm_90a).
bool fused_s8_gemm_available(int cc_major, int cc_minor);

// Whether the kernels take this shape: K, lda and ldw multiples of 16 (TMA's 16-byte row
// alignment for s8), N a multiple of 8 (f16 rows), and every extent below 2^31.
bool fused_s8_gemm_shape_ok(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldw);

// The tile kAuto picks for an M x N x K problem on a device with `multiprocessors` SMs: kLarge
// when K >= 2880 and its tiles are at least one per SM, or when they fill the device 4 times
// over; else kSmall (a rule from measurements: gemm_s8_fused.cu).
FusedS8Tile fused_s8_auto_tile(int64_t m, int64_t n, int64_t k, int multiprocessors);

// Enqueues y = the fused GEMM above on `stream`. cudaErrorInvalidValue for a shape
// fused_s8_gemm_shape_ok refuses or a build without the kernels; otherwise the launch's status.
// Needs no workspace. The first call of each tile shape sets the kernel's shared-memory
// attribute (not a stream operation: prime it with fused_s8_gemm_prime before a graph capture).
cudaError_t launch_fused_s8_gemm(const int8_t* a, int64_t lda, const int8_t* w, int64_t ldw,
                                 const float* a_scale, const float* w_scale, const float* bias,
                                 const __half* residual, __half* y, int64_t m, int64_t n, int64_t k,
                                 FusedS8Tile tile, int multiprocessors, cudaStream_t stream);

// Sets the kernels' shared-memory attributes now (idempotent): cudaSuccess, or why not.
cudaError_t fused_s8_gemm_prime();

}  // namespace hyrt::backend::cuda

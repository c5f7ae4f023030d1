// hyrt's fused attention kernel for the CUDA backend (attention.cu): flash-attention style,
// one kernel per call, no score matrix in memory.
//
// Plain C++ over device pointers so that this header compiles as ordinary C++ and the .cu
// file includes no hyrt header (cuda_kernels.h states the conventions: f16 data as uint16_t
// IEEE binary16 bits, launch_* enqueues on `stream` and returns cudaGetLastError()).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace hyrt::backend::cuda {

// One attention call: for every batch b and head h,
//   out[b, i, h, :] = softmax_j(q[b, i, h, :] · k[b, j, h, :] · scale [+ mask]) · v[b, j, h, :]
// with the causal mask (when `causal`) removing keys j > i — index against index, also when
// tq != tk. Rows are tokens, strided: head h of query row i of batch b starts at
//   q + (b·tq + i)·ld_q + h·d        (likewise k with ld_k, v with ld_v and dv, out with ld_out)
// so q, k and v may be distinct buffers or column views of one packed tensor (ld = 3·heads·d).
// Storage f16; scores, softmax and accumulation f32; the probabilities enter the second
// product rounded to f16 (as in FlashAttention). out must not overlap q, k or v.
struct FlashAttentionParams {
  const uint16_t* q = nullptr;  // [batch, tq, ld_q]
  const uint16_t* k = nullptr;  // [batch, tk, ld_k]
  const uint16_t* v = nullptr;  // [batch, tk, ld_v]
  uint16_t* out = nullptr;      // [batch, tq, ld_out]
  int64_t batch = 0, tq = 0, tk = 0;
  int heads = 0;
  int d = 0;                                         // q/k head dim, 1..kFlashAttentionMaxHeadDim
  int dv = 0;                                        // v/out head dim, 1..kFlashAttentionMaxHeadDim
  int64_t ld_q = 0, ld_k = 0, ld_v = 0, ld_out = 0;  // elements between token rows
  float scale = 0.0f;                                // applied to q·k (no default here)
  bool causal = false;
  // Query rows per warp: 16 or 32 (more reuse of each K/V fragment, more registers), only
  // honoured up to head dims of 64 (16 above); 0 picks by head dim and size. For benchmarks.
  int rows_per_warp = 0;
  // The output is rescaled only when a row's running maximum grows by more than this (log2
  // units; until then the old maximum is subtracted, so probabilities reach at most 2^slack
  // before normalisation, which f16 and the f32 sums hold as well); 0 rescales at every
  // growth; -1 picks the default, 8. For tests and benchmarks.
  float rescale_slack = -1.0f;
  // The device's multiprocessor count, for the block-size choice (0: assume an H100/H200's 132).
  int multiprocessors = 0;
  // Heads up to 64 run with registers capped so that 3 (32 rows per warp) or 4 (16) blocks
  // fit on an SM, and pick the rows per warp by waves (attention.cu); true runs the kernel as
  // it was before that: uncapped, 2 blocks. For benchmarks.
  bool uncapped_registers = false;
  // launch_flash_attention_sm90 only: consumer warp groups per block (64 query rows each), 2
  // or 3; 0 picks 3. For benchmarks.
  int sm90_warp_groups = 0;
  // launch_flash_attention_sm90 only: 0, or 4 to take the exponentials of every fourth group of
  // 8 keys off the SFU (a cubic on the FMA pipes). For benchmarks.
  int sm90_poly_exp_every = 0;
  // launch_flash_attention_sm90 only: whether the consumer warp groups take turns issuing their
  // products (named barriers) or issue whenever they are ready. 0: turns at head dim 40 only
  // (measured on an H100: 2779 against 2831 µs at 16384² d40, but 420 against 342 at SDXL's
  // 4096² d64 and level at d80); 1: turns; 2: none. For benchmarks.
  int sm90_turns = 0;
  // launch_flash_attention_sm90 only: no fence.proxy.async between a tile's arrival and its
  // wgmma reads (as CUTLASS's cp.async mainloop). For benchmarks: what the fence costs.
  bool sm90_no_proxy_fence = false;
  // launch_flash_attention_sm90 only: keys per tile, 64 or 128 (128 with two warp groups
  // only); 0 picks 64. For benchmarks.
  int sm90_key_tile = 0;
  // launch_flash_attention_sm90 only: the softmax's scale and maximum not folded into the
  // product (attention_sm90.cu, kFold; folded at head dim 40 where |scale|·log2(e) <= 1). For
  // benchmarks.
  bool sm90_no_fold = false;
  // launch_flash_attention_sm90 only: the schedule one tile deeper (a second score buffer, the
  // next tile's q·kᵀ under this one's softmax; attention_sm90.cu, kDeepStep), drained every 2 or
  // 4 tiles (4: without the cubic); head 40 folded, 64-key tiles. 0 picks 2 where the launch can
  // and there are more than two key tiles (measured on an H100: 2564 against 2782 µs at 16384²
  // d40, 187 against 200 at 4096², 19.9 against 18.6 at 77 keys), -1 none. For benchmarks.
  int sm90_deep = 0;
};

constexpr int kFlashAttentionMaxHeadDim = 256;

// FlashAttentionParams::rescale_slack as both kernels use it: 8 for -1 (probabilities up to 256),
// the value itself in [0, 12]; -1 for anything else (NaN included), which they refuse.
inline float flash_attention_rescale_slack(float asked) {
  if (asked == -1.0f) return 8.0f;
  return asked >= 0.0f && asked <= 12.0f ? asked : -1.0f;
}

// Any d, dv in 1..256, any tq, tk >= 1, batch·heads >= 1. Fast path: d and dv multiples of
// 8, every ld a multiple of 8 and q, k, v 16-byte aligned (then K/V tiles stream in with
// cp.async); anything else runs the same kernel with element-wise tile loads. Zero-sized
// work launches nothing; invalid parameters return cudaErrorInvalidValue.
cudaError_t launch_flash_attention(const FlashAttentionParams& p, cudaStream_t stream);

// Hopper's form of the same contract (sm90/attention_sm90.cu: wgmma, a producer warp streaming
// K/V tiles, the next tile's q·kᵀ under this tile's softmax), built with CUTLASS's headers (for
// their wgmma wrappers) for sm_90a only. Same results as launch_flash_attention up to f32
// summation order (P is rounded to f16 the same way).
// True when this build has it and a device of compute capability cc_major.cc_minor runs it.
bool flash_attention_sm90_available(int cc_major, int cc_minor);
// Whether it takes a call of this shape: non-causal, (d, dv) one of (40, 40), (64, 64), (80, 80),
// batch·heads <= 65535, tq and tk >= 1 and below 2^31.
bool flash_attention_sm90_takes_shape(int64_t batch, int heads, int64_t tq, int64_t tk, int d,
                                      int dv, bool causal);
// ... and p itself: its shape, q, k, v, out 16-byte aligned, ld_q, ld_k, ld_v multiples of 8
// and ld_out of 2, a valid rescale_slack, sm90_warp_groups 0, 2 or 3, sm90_key_tile 0, 64 or
// 128, sm90_poly_exp_every 0 or 4, sm90_turns 0, 1 or 2, and sm90_deep 0 or -1, or 2 or 4
// where the launch folds head 40 at 64-key tiles (4 without the cubic).
bool flash_attention_sm90_takes(const FlashAttentionParams& p);
// Enqueues it (no allocation, no synchronisation: capturable); cudaErrorInvalidValue where it
// does not take p or is not built. Call only where flash_attention_sm90_available.
cudaError_t launch_flash_attention_sm90(const FlashAttentionParams& p, cudaStream_t stream);

}  // namespace hyrt::backend::cuda

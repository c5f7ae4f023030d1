// Internal to the CUDA backend: kAttention nodes as hyrt's own fused flash-attention kernel
// (attention.cu, contract in attention_kernels.h), or, by default (HYRT_CUDA_ATTENTION=own
// turns it off), as cuDNN's fused SDPA plan where cuDNN is found and takes the node
// (cudnn_attention.h: f16, non-causal, head dims multiples of 8 up to 256) — hyrt's kernel still
// running the node while that plan is being built.
//
// A node q [B, Tq, H·D], k [B, Tk, H·D], v [B, Tk, H·Dv] -> out [B, Tq, H·Dv]
// (ir/op.h, AttentionAttrs) runs per (batch, head) as softmax(q·kᵀ·scale [+ causal mask])·v
// with every tensor in the backend's activation storage dtype, f16 (device_storage_dtype),
// dense row-major in device memory; scores, softmax and accumulation are f32 and no score
// matrix is ever written. Wide-range nodes (f32 storage, non-causal, head dims multiples of 8)
// run the chunked GEMM path below in f32 on TF32 operands. Head dims 1..256 (any Tq, Tk >= 1); D
// and Dv multiples of 8 take the fast path (cp.async tile loads), others run the same kernel with
// element-wise loads.
//
// The fused kernel holds no device memory and no scratch: run() only enqueues one launch on the
// context's stream (never synchronises, never allocates: capturable into a CUDA graph), and
// workspace_bytes() is 0. A node cuDNN takes lays out a fixed 64 KiB workspace for its plan,
// which is queued at the kernel's construction on the process's quiet worker
// (core/quiet_worker.h: one build at a time, 50-100 ms each, only while the foreground is
// quiet — every run() of this kernel notes it busy, as the backend's prepare and graph
// recording do; settle() hurries the worker); until it is ready the kernel is unsettled
// (Kernel::settled) and runs hyrt's
// kernel, and the first run after that runs cuDNN's plan (never waiting for it), as capturable;
// a plan that cuDNN refuses, or that wants more workspace, leaves the node to hyrt's kernel.
// Heads wider than the fused kernel's (> kFlashAttentionMaxHeadDim, up to 4096, non-causal,
// multiples of 8) run per (batch, head) in chunks of query rows through two cuBLAS GEMMs and
// the softmax kernel, staging one chunk's probabilities [rows, Tk] in the storage dtype (rows =
// 16 MiB / (Tk · its size) clamped to 1..Tq). That buffer is the kernel's workspace
// (Kernel::workspace_bytes: its bytes rounded up to 256, + 192 bytes of slack for aligning the
// bound pointer up to 256; layout as cuda_context.h, StagingLayout): with one bound, run() stages
// there and allocates nothing; without one (tests, benchmarks), the first run grows the context's
// shared kAttnScores slot (allocates and synchronises), later runs reuse it. Thread safety as for
// every kernel of the backend (cuda_backend.h): one run at a time.
#pragma once

#include <memory>
#include <string>

#include "backend/backend.h"
#include "backend/cuda/cuda_context.h"

namespace hyrt::backend::cuda {

// True for a kAttention node with three rank-3 float inputs of consistent shapes (the
// graph verifier's rules), 1 <= D, Dv <= 256 and a batch and head count a grid can hold.
bool supports_attention(const ir::Graph& graph, const ir::Node& node);

// The kernel for a supported node (throws hyrt::Error(kUnsupported) otherwise). Its run()
// takes inputs {q, k, v} and the output as TensorViews of the node's shapes in its storage
// dtype (f16, or f32 for wide-range values), 16-byte
// aligned for the fast path; out must not overlap the inputs.
std::unique_ptr<Kernel> make_attention_kernel(CudaContext& ctx, const ir::Graph& graph,
                                              const ir::Node& node);

// "hopper" when the kernel runs Hopper's (attention_kernels.h, launch_flash_attention_sm90),
// "cudnn" when it runs cuDNN's SDPA plan once settled (cudnn_attention.h: f16,
// non-causal, head dims multiples of 8 up to 256, cuDNN >= 9.13.1 found,
// cudnn_attention_enabled()), "own" for hyrt's kernels; "" for a kernel that is not an attention
// kernel. Waits for a cuDNN plan still being built (Kernel::settle).
const char* attention_program(Kernel& kernel);

// Whether nodes cuDNN can take are to run its plans: HYRT_CUDA_ATTENTION=cudnn or =own, else
// the default (cuDNN's: kCudnnAttentionByDefault in cuda_attention.cpp says why). Whether
// cuDNN is found is cudnn_attention_available's question.
bool cudnn_attention_enabled();

// Whether nodes Hopper's kernel takes (attention_kernels.h, flash_attention_sm90_takes; sm_90
// devices, a build with CUTLASS's headers) run it ahead of cuDNN's plans:
// HYRT_CUDA_ATTENTION=hopper (cuDNN's plans still run the nodes it does not take), else the default
// (kHopperAttentionByDefault in cuda_attention.cpp says why).
bool hopper_attention_enabled();

// What runs the attention, for reports: cuDNN's description (cudnn_description(), which
// opens cuDNN) where it is used, else "hyrt's kernel" and why.
std::string attention_library();

// Predicted microseconds on an H100-class GPU: the larger of tensor-core time (padded head
// dims, causal halving), exponentials on the SFUs and HBM traffic (q, k, v, out once each),
// plus a launch overhead. +inf for an unsupported node.
double estimate_attention_us(const ir::Graph& graph, const ir::Node& node);

}  // namespace hyrt::backend::cuda

// Internal to the CUDA backend: attention as cuDNN's fused scaled-dot-product-attention
// operation (CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR, cuDNN >= 9.13.1), one execution plan
// per shape.
//
// Why: on Hopper cuDNN's engines for this operation use wgmma and TMA, which hyrt's own
// mma.sync flash kernel (attention.cu) does not; it stays the fallback (no cuDNN, causal
// masks, head dims cuDNN refuses) and the reference the tests hold cuDNN's results to.
//
// Layout: q [B, Tq, H·D], k [B, Tk, H·D], v [B, Tk, H·Dv], out [B, Tq, H·Dv] in f16, row-major
// in device memory (cuDNN's BSHD strides over them; q, k and v rows may be further apart:
// CudnnAttentionShape::ld_q), 16-byte aligned. Scores and
// softmax in f32, P rounded to f16 for P·V (as hyrt's kernel). Non-causal only.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace hyrt::backend::cuda {

struct CudnnAttentionShape {
  int64_t batch = 0, heads = 0, tq = 0, tk = 0, d = 0, dv = 0;
  float scale = 0.0f;
  // Elements between token rows of q, k and v; 0: dense (H·D, H·Dv). A packed qkv tensor
  // [B, T, 3·H·D] gives each 3·H·D (ir::AttentionAttrs::packed_qkv).
  int64_t ld_q = 0, ld_k = 0, ld_v = 0;
  int64_t row_q() const { return ld_q ? ld_q : heads * d; }
  int64_t row_k() const { return ld_k ? ld_k : heads * d; }
  int64_t row_v() const { return ld_v ? ld_v : heads * dv; }
  std::string key() const;  // "b2 h8 q4096 k4096 d40 v40 s0.158114" (+ " ld1920,1920,1920")
};

// One finalized execution plan, with the handle it was built on. Immutable after build; run()
// from one thread at a time (the backend's kernels run one at a time).
class CudnnAttentionPlan {
 public:
  // Builds the plan for `stream` on a cuDNN handle of its own (so plans may be built on several
  // threads at once). Throws
  // hyrt::Error(kUnsupported) with cuDNN's reason when cuDNN is absent or refuses the shape.
  CudnnAttentionPlan(const CudnnAttentionShape& shape, cudaStream_t stream);
  ~CudnnAttentionPlan();
  CudnnAttentionPlan(const CudnnAttentionPlan&) = delete;
  CudnnAttentionPlan& operator=(const CudnnAttentionPlan&) = delete;

  // Device bytes the plan needs as scratch during run() (often 0).
  size_t workspace_bytes() const { return workspace_bytes_; }
  // The engine cuDNN chose, as its JSON names it (for logs).
  const std::string& engine() const { return engine_; }
  // Milliseconds the build took in all, and the heuristics' query within it (the rest is the
  // plan's finalisation, which may compile a kernel).
  double build_ms() const { return build_ms_; }
  double heuristics_ms() const { return heuristics_ms_; }
  double handle_ms() const { return handle_ms_; }  // cudnnCreate, within build_ms

  // Enqueues the attention on the plan's stream: no synchronisation, no allocation
  // (capturable). `workspace` holds workspace_bytes() (may be null when that is 0).
  void run(const void* q, const void* k, const void* v, void* out, void* workspace) const;

 private:
  struct State;
  std::unique_ptr<State> st_;
  size_t workspace_bytes_ = 0;
  std::string engine_;
  double build_ms_ = 0.0, heuristics_ms_ = 0.0, handle_ms_ = 0.0;
};

// True when cuDNN is present and new enough (cudnn_api.h); `why` says otherwise.
bool cudnn_attention_available(std::string* why = nullptr);

}  // namespace hyrt::backend::cuda

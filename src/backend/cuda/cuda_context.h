// Internal to the CUDA backend: device memory ownership and the state its kernels share.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "backend/cuda/cuda_device.h"

namespace hyrt::backend::cuda {

// An owning, move-only block of device memory from cudaMalloc (256-byte aligned). Allocation
// failure throws hyrt::Error(kOutOfMemory) naming `what`, the size and the device's free
// memory. Zero bytes holds no memory (data() is null).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(size_t bytes, std::string_view what);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return size_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};

// The staging buffers of the GEMM and attention kernels, one kind per use. A kernel's
// staging lives in one of two places (StagingLayout below):
//   - the workspace the executor binds (Kernel::workspace_bytes/bind_workspace): the kernel's
//     buffers, laid out one after another, in the backend's planned activation arena, live
//     during that kernel's step only — how an Executable runs kernels;
//   - else these slots of the CudaContext, one buffer per kind shared by every kernel of the
//     backend, grown on first use by a run without a bound workspace (tests and benchmarks
//     that call run() directly, and run_candidate of a candidate the kernel did not choose).
//     Growing allocates and synchronises the device, so such a first run is not capturable;
//     later runs only look the pointer up. Kernels run one at a time (cuda_backend.h), so one
//     buffer per slot is enough.
// Nothing is reserved at prepare: with an executor, the slots stay empty.
enum class Scratch : uint8_t {
  kWeightWide,  // one layer's 8-bit S weights widened to the operand type [N, K] (float candidate)
  kActS8,       // quantized activations s8 [M, K4] (W8A8)
  kRowScales,   // their per-row scales f32 [M] (W8A8)
  kAccS32,      // the int8 GEMM's s32 result [M, N4] (W8A8)
  kIm2col,      // a convolution's im2col matrix [M, K], the operand type (float candidate)
  kAttnScores,  // a chunk of query rows' attention probabilities [rows, Tk] (GEMM attention)
  kCudnnWork,   // a cuDNN execution plan's workspace (cudnn_attention.h), when it needs one
  kCount,
};

// Where one run of a kernel finds its staging buffers, by kind (null: not used).
struct Staging {
  std::array<void*, static_cast<size_t>(Scratch::kCount)> at{};
  void* operator[](Scratch s) const { return at[static_cast<size_t>(s)]; }
};

// Alignment of every staging buffer inside a workspace: cuBLASLt's default pointer alignment
// promise (the W8A8 GEMM's operands and result are staging buffers), and cudaMalloc's.
inline constexpr size_t kStagingAlign = 256;
// The alignment the executor guarantees for a bound workspace (backend.h), and the slack a
// workspace adds so that its start can be aligned up to kStagingAlign: at most 192 bytes.
inline constexpr size_t kWorkspaceBaseAlign = 64;
inline constexpr size_t kWorkspaceSlack = kStagingAlign - kWorkspaceBaseAlign;

class CudaContext;

// The staging buffers one kernel uses in one run (the bytes of each kind it uses) and their
// layout in a workspace: the workspace's start aligned up to kStagingAlign, then each buffer
// in Scratch order at an offset rounded up to kStagingAlign.
class StagingLayout {
 public:
  // Adds a buffer of `bytes` of kind `s` (each kind at most once; 0 bytes adds nothing).
  void add(Scratch s, size_t bytes);
  size_t bytes(Scratch s) const { return bytes_[static_cast<size_t>(s)]; }
  bool empty() const;
  // What Kernel::workspace_bytes() reports for this layout: every buffer, each rounded up to
  // kStagingAlign, plus kWorkspaceSlack; 0 when empty.
  size_t workspace_bytes() const;
  // The buffers inside `workspace` (kWorkspaceBaseAlign-aligned, workspace_bytes() long).
  Staging carve(void* workspace) const;
  // The buffers in ctx's shared slots, grown first where smaller (may allocate and
  // synchronise the device: runs without a bound workspace only).
  Staging reserve_in(CudaContext& ctx) const;

 private:
  std::array<size_t, static_cast<size_t>(Scratch::kCount)> bytes_{};
};

// The device, stream, cuBLASLt handle and workspace, and the fallback staging slots (Scratch)
// of one CUDA backend.
// Owned by the backend; kernels keep a reference (the backend outlives them).
class CudaContext {
 public:
  CudaContext(const CudaDeviceInfo& device, size_t workspace_bytes);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  const CudaDeviceInfo& device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t lt() const { return lt_; }
  // A cuBLAS handle on the same stream, sharing the cuBLASLt workspace (kernels run one at
  // a time, so the two never use it at once).
  cublasHandle_t blas() const { return blas_; }
  void* workspace() const { return workspace_.data(); }
  size_t workspace_bytes() const { return workspace_.size(); }
  // Makes this backend's device current on the calling thread.
  void make_current() const;
  // Host -> device, complete on return (prepare time: weights). On this context's stream — a
  // non-blocking stream does not wait for the legacy default stream a plain cudaMemcpy
  // uses — then synchronised.
  void upload(void* dst, const void* src, size_t bytes) const;

  // Grows slot `s` to at least `bytes`: frees the old buffer (cudaFree waits for the device)
  // and allocates, so never while capturing. Runs without a bound workspace only (Scratch).
  void reserve(Scratch s, size_t bytes);
  // The slot's buffer; asserts that `bytes` were reserved.
  void* scratch(Scratch s, size_t bytes) const;
  // The slots' bytes plus the cuBLASLt workspace's (CudaBackend::scratch_bytes): with an
  // executor binding kernels' workspaces, just the cuBLASLt workspace.
  size_t bytes_held() const;

  // A weight resident on the device in one form, shared by every kernel of this backend that
  // uses it — the backend contract's upload(): once, not once per executable, so a new
  // resolution or batch uploads nothing. Keyed by the WeightSource's generation (never its
  // address: a model loaded where a freed one lived must not be served the old weights), the
  // weight's name and `form` (e.g. "s8 [1280, 320] padded"); make() builds the buffer on a
  // miss. The entry lives while a kernel holds it; expired entries are pruned as new ones
  // are added.
  std::shared_ptr<const DeviceBuffer> resident(uint64_t source, const std::string& name,
                                               const std::string& form,
                                               const std::function<DeviceBuffer()>& make);
  // Device bytes of the resident weights alive now.
  size_t resident_bytes() const;

 private:
  CudaDeviceInfo device_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  DeviceBuffer workspace_;
  std::array<DeviceBuffer, static_cast<size_t>(Scratch::kCount)> scratch_;
  std::unordered_map<std::string, std::weak_ptr<const DeviceBuffer>> resident_;
  size_t pruned_at_ = 0;  // resident_.size() after the last pruning
};

}  // namespace hyrt::backend::cuda

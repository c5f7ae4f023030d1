#include "backend/cuda/cuda_context.h"

#include <cstdint>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "core/error.h"
#include "core/log.h"

namespace hyrt::backend::cuda {

DeviceBuffer::DeviceBuffer(size_t bytes, std::string_view what) : size_(bytes) {
  if (bytes == 0) return;
  const cudaError_t st = cudaMalloc(&data_, bytes);
  if (st == cudaSuccess) return;
  data_ = nullptr;
  cudaGetLastError();
  if (st != cudaErrorMemoryAllocation) throw_cuda_error(st, "cudaMalloc", __FILE__, __LINE__);
  size_t free_bytes = 0, total_bytes = 0;
  cudaMemGetInfo(&free_bytes, &total_bytes);
  cudaGetLastError();
  constexpr double kMiB = 1024.0 * 1024.0;
  fail(ErrorCode::kOutOfMemory, "out of GPU memory: cudaMalloc of ", bytes / kMiB, " MiB for ",
       what, " failed (", free_bytes / kMiB, " MiB free of ", total_bytes / kMiB, " MiB)");
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ && cudaFree(data_) != cudaSuccess) {
    // A destructor must not throw; the error (usually an earlier kernel fault) is reported
    // by whichever call next touches the device.
    HYRT_LOG(kDebug) << "cudaFree failed: " << cudaGetErrorString(cudaGetLastError());
  }
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    DeviceBuffer old(std::move(*this));  // frees our block on scope exit
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

CudaContext::CudaContext(const CudaDeviceInfo& device, size_t workspace_bytes) : device_(device) {
  make_current();
  HYRT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    HYRT_CUBLAS_CHECK(cublasLtCreate(&lt_));
    workspace_ = DeviceBuffer(workspace_bytes, "the cuBLASLt workspace");
    HYRT_CUBLAS_CHECK(cublasCreate(&blas_));
    HYRT_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    // Our own workspace: no allocation inside a call, so calls can be captured.
    HYRT_CUBLAS_CHECK(cublasSetWorkspace(blas_, workspace_.data(), workspace_.size()));
  } catch (...) {
    if (blas_) cublasDestroy(blas_);
    if (lt_) cublasLtDestroy(lt_);
    cudaStreamDestroy(stream_);
    throw;
  }
}

CudaContext::~CudaContext() {
  // Work still queued may use the scratch and workspace freed after this body.
  cudaStreamSynchronize(stream_);
  cublasDestroy(blas_);
  cublasLtDestroy(lt_);
  cudaStreamDestroy(stream_);
  cudaGetLastError();
}

void CudaContext::make_current() const {
  HYRT_CUDA_CHECK(cudaSetDevice(device_.index));
}

void CudaContext::upload(void* dst, const void* src, size_t bytes) const {
  if (bytes == 0) return;
  HYRT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  HYRT_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaContext::reserve(Scratch s, size_t bytes) {
  DeviceBuffer& b = scratch_[static_cast<size_t>(s)];
  if (b.size() >= bytes) return;
  // cudaFree waits for the device, so no queued kernel still uses the old buffer.
  b = DeviceBuffer();
  b = DeviceBuffer(bytes, str_cat("GEMM scratch slot ", static_cast<int>(s)));
}

void* CudaContext::scratch(Scratch s, size_t bytes) const {
  const DeviceBuffer& b = scratch_[static_cast<size_t>(s)];
  HYRT_ASSERT(b.size() >= bytes, "scratch slot ", static_cast<int>(s), " holds ", b.size(),
              " bytes, ", bytes, " needed: not reserved");
  return b.data();
}

size_t CudaContext::bytes_held() const {
  size_t n = workspace_.size();
  for (const DeviceBuffer& b : scratch_)
    n += b.size();
  return n;
}

namespace {

size_t align_up(size_t v, size_t a) {
  return (v + a - 1) / a * a;
}

}  // namespace

void StagingLayout::add(Scratch s, size_t bytes) {
  size_t& b = bytes_[static_cast<size_t>(s)];
  HYRT_ASSERT(b == 0, "staging buffer ", static_cast<int>(s), " added twice");
  b = bytes;
}

bool StagingLayout::empty() const {
  for (size_t b : bytes_)
    if (b) return false;
  return true;
}

size_t StagingLayout::workspace_bytes() const {
  size_t n = 0;
  for (size_t b : bytes_)
    n += align_up(b, kStagingAlign);
  return n ? n + kWorkspaceSlack : 0;
}

Staging StagingLayout::carve(void* workspace) const {
  Staging st;
  if (empty()) return st;
  const auto base = reinterpret_cast<uintptr_t>(workspace);
  HYRT_CHECK(base != 0 && base % kWorkspaceBaseAlign == 0, kInvalidArgument,
             "a kernel's workspace must be ", kWorkspaceBaseAlign,
             "-byte aligned device memory, got ", workspace);
  // The slack covers this: an address that is a multiple of 64 is at most 192 below a
  // multiple of 256.
  uintptr_t at = align_up(base, kStagingAlign);
  for (size_t i = 0; i < bytes_.size(); ++i) {
    if (bytes_[i] == 0) continue;
    st.at[i] = reinterpret_cast<void*>(at);
    at += align_up(bytes_[i], kStagingAlign);
  }
  return st;
}

Staging StagingLayout::reserve_in(CudaContext& ctx) const {
  Staging st;
  for (size_t i = 0; i < bytes_.size(); ++i) {
    if (bytes_[i] == 0) continue;
    const auto s = static_cast<Scratch>(i);
    ctx.reserve(s, bytes_[i]);
    st.at[i] = ctx.scratch(s, bytes_[i]);
  }
  return st;
}

std::shared_ptr<const DeviceBuffer> CudaContext::resident(
    uint64_t source, const std::string& name, const std::string& form,
    const std::function<DeviceBuffer()>& make) {
  std::string key = std::to_string(source);
  key += '|';
  key += name;
  key += '|';
  key += form;
  if (auto it = resident_.find(key); it != resident_.end())
    if (std::shared_ptr<const DeviceBuffer> held = it->second.lock()) return held;
  auto made = std::make_shared<const DeviceBuffer>(make());
  if (resident_.size() >= 2 * pruned_at_ + 64) {  // amortised: the map stays O(live entries)
    std::erase_if(resident_, [](const auto& entry) { return entry.second.expired(); });
    pruned_at_ = resident_.size();
  }
  resident_[key] = made;
  return made;
}

size_t CudaContext::resident_bytes() const {
  size_t total = 0;
  for (const auto& [key, weak] : resident_)
    if (auto held = weak.lock()) total += held->size();
  return total;
}

}  // namespace hyrt::backend::cuda

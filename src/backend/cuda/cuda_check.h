// Status checking for the CUDA runtime and cuBLASLt: every call's status is checked, and a
// failure becomes a hyrt::Error that names the call (its source text), the library's error
// name and description, and the file and line.
//
// Error codes: out of device memory -> kOutOfMemory; no device, a driver older than the
// runtime, or no kernel image for this GPU -> kUnsupported; anything else -> kInternal.
//
// Kernel launches are checked through the launch_* wrappers of cuda_kernels.h, which return
// cudaGetLastError() right after the launch; errors raised while a kernel runs surface at the
// next synchronising call (CudaBackend::synchronize, a copy, an event wait).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

namespace hyrt::backend::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                   int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line);

}  // namespace hyrt::backend::cuda

#define HYRT_CUDA_CHECK(call)                                                                \
  do {                                                                                       \
    const cudaError_t hyrt_cuda_status_ = (call);                                            \
    if (hyrt_cuda_status_ != cudaSuccess)                                                    \
      ::hyrt::backend::cuda::throw_cuda_error(hyrt_cuda_status_, #call, __FILE__, __LINE__); \
  } while (0)

#define HYRT_CUBLAS_CHECK(call)                                                                  \
  do {                                                                                           \
    const cublasStatus_t hyrt_cublas_status_ = (call);                                           \
    if (hyrt_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::hyrt::backend::cuda::throw_cublas_error(hyrt_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

#include "backend/cuda/cuda_check.h"

#include <cstring>

#include "core/error.h"

namespace hyrt::backend::cuda {
namespace {

// "src/backend/cuda/cuda_gemm.cpp" rather than the build machine's absolute path.
const char* short_path(const char* file) {
  const char* p = std::strstr(file, "src/backend/");
  return p ? p : file;
}

ErrorCode code_of(cudaError_t status) {
  switch (status) {
    case cudaErrorMemoryAllocation:
      return ErrorCode::kOutOfMemory;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorDevicesUnavailable:
      return ErrorCode::kUnsupported;
    default:
      return ErrorCode::kInternal;
  }
}

}  // namespace

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  // Clears the runtime's last-error slot so that a caller who catches this starts clean
  // (sticky errors — a faulting kernel — stay, and every later call reports them too).
  cudaGetLastError();
  fail(code_of(status), "CUDA call `", call, "` failed: ", cudaGetErrorName(status), " (",
       cudaGetErrorString(status), ") at ", short_path(file), ":", line);
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  const ErrorCode code =
      status == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kOutOfMemory
      : status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_ARCH_MISMATCH
          ? ErrorCode::kUnsupported
          : ErrorCode::kInternal;
  fail(code, "cuBLASLt call `", call, "` failed: ", cublasLtGetStatusName(status), " (",
       cublasLtGetStatusString(status), ") at ", short_path(file), ":", line);
}

}  // namespace hyrt::backend::cuda

#include "backend/cuda/cuda_device.h"

#include <cuda_runtime_api.h>

#include "core/error.h"

namespace hyrt::backend::cuda {

std::vector<CudaDeviceInfo> list_devices(std::string* why_none) {
  std::vector<CudaDeviceInfo> out;
  int count = 0;
  const cudaError_t st = cudaGetDeviceCount(&count);
  if (st != cudaSuccess) {
    if (why_none) *why_none = cudaGetErrorString(st);
    cudaGetLastError();  // clear the sticky error
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    out.push_back({i, p.name, p.major, p.minor, static_cast<int64_t>(p.totalGlobalMem),
                   p.multiProcessorCount});
  }
  if (out.empty() && why_none) *why_none = "no CUDA device";
  return out;
}

std::string runtime_version_string() {
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  auto fmt = [](int v) { return str_cat(v / 1000, ".", (v % 1000) / 10); };
  return str_cat("CUDA runtime ", fmt(rt), ", driver ", drv ? fmt(drv) : std::string("none"));
}

}  // namespace hyrt::backend::cuda

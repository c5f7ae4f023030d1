// CUDA device discovery. Built only when the CUDA toolkit is found (HYRT_HAVE_CUDA); the
// CUDA backend proper (GEMM programs, device kernels) builds on this folder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hyrt::backend::cuda {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0, compute_minor = 0;
  int64_t total_memory = 0;
  int multiprocessors = 0;
};

// Devices the CUDA runtime sees; empty (never an error) when there is no driver or GPU.
// `why_none` receives the runtime's reason when the list is empty.
std::vector<CudaDeviceInfo> list_devices(std::string* why_none = nullptr);
// "CUDA runtime 13.0, driver 13.0" (driver "none" when absent).
std::string runtime_version_string();

}  // namespace hyrt::backend::cuda

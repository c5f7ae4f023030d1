// The host backend: every IR op on the CPU. GEMM-class ops go through oneDNN (f32 now;
// int8 "8-bit S" is its own issue); the rest are hyrt's own vectorised, OpenMP-parallel
// kernels, one file per op family in this folder.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace hyrt::backend {

struct CpuBackendOptions {
  int num_threads = 0;  // 0: all cores the process may use
};

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options = {});

}  // namespace hyrt::backend

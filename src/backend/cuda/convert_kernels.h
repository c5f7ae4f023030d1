// Element type conversion on the device for the executor's copies between host and device
// memory (convert.cu): the host holds activations in f32, the device in f16
// (device_storage_dtype). Plain functions over device pointers, like cuda_kernels.h: each
// enqueues on `stream` and returns cudaGetLastError(); n == 0 launches nothing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace hyrt::backend::cuda {

// y[i] = f32(x[i]) for n f16 values (exact).
cudaError_t launch_f16_to_f32(const uint16_t* x, int64_t n, float* y, cudaStream_t stream);

}  // namespace hyrt::backend::cuda

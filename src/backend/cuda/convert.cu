// f16 -> f32 widening for copies from the device to the host (convert_kernels.h). The other
// direction is launch_f32_to_f16 (cuda_kernels.h).
#include <cuda_fp16.h>

#include "backend/cuda/convert_kernels.h"

namespace hyrt::backend::cuda {
namespace {

// Four values per thread: one 8-byte load, one 16-byte store.
__global__ void f16_to_f32_kernel(const __half* __restrict__ x, int64_t n, float* __restrict__ y) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i + 4 <= n && (reinterpret_cast<uintptr_t>(x + i) & 7) == 0 &&
      (reinterpret_cast<uintptr_t>(y + i) & 15) == 0) {
    const uint2 raw = *reinterpret_cast<const uint2*>(x + i);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
    *reinterpret_cast<float4*>(y + i) = make_float4(a.x, a.y, b.x, b.y);
    return;
  }
  for (int64_t j = i; j < n && j < i + 4; ++j)
    y[j] = __half2float(x[j]);
}

}  // namespace

cudaError_t launch_f16_to_f32(const uint16_t* x, int64_t n, float* y, cudaStream_t stream) {
  if (n <= 0) return cudaSuccess;
  const int64_t threads = 256;
  const int64_t blocks = ((n + 3) / 4 + threads - 1) / threads;
  f16_to_f32_kernel<<<static_cast<unsigned>(blocks), static_cast<unsigned>(threads), 0, stream>>>(
      reinterpret_cast<const __half*>(x), n, y);
  return cudaGetLastError();
}

}  // namespace hyrt::backend::cuda

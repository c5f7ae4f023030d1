// Device helpers shared by the CUDA attention kernels (attention.cu, sm90/attention_sm90.cu):
// PTX wrappers with no state. Included by .cu files only.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

namespace hyrt::backend::cuda::attention_device {

// A shared-memory pointer as the 32-bit address PTX's shared-state-space operands take.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 2^x on the SFU; 2^-inf = +0.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats rounded to f16 (nearest even), lo in the low half: an mma A/B operand register.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

}  // namespace hyrt::backend::cuda::attention_device

// Device helpers shared by the CUDA attention kernels (attention.cu, sm90/attention_sm90.cu)
// and the instruction-rate benchmark that measures them (bench/cuda/pipe_rates.cu): PTX wrappers
// with no state. Included by .cu files only.
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

// 2^x for x <= 0 (or NaN) on the FMA and integer pipes instead of the SFU, whose 16 results per
// clock per SM are the floor of a head-40 attention: 2^round(x) goes into the exponent field and
// 2^f, f = x - round(x) in [-0.5, 0.5], is a cubic (relative error 7.5e-5, a third of f16's half
// ulp: P is rounded to f16). x is clamped to -125 so that the exponent stays a normal one: below
// 2^-125 the result is that instead of 0 (0 in f16 all the same; 2^-125 per key in the f32 sums).
// NaN stays NaN (max.NaN), as the SFU's does.
__device__ __forceinline__ float exp2_poly(float x) {
  asm("max.NaN.f32 %0, %0, 0fC2FA0000;\n" : "+f"(x));  // -125
  constexpr float kRound = 12582912.0f;                // 1.5·2^23: x + it holds round(x)
  const float shifted = x + kRound;
  const float f = x - (shifted - kRound);
  float y = fmaf(fmaf(fmaf(0.05517104f, f, 0.24260958f), f, 0.69326097f), f, 0.99992818f);
  return __uint_as_float(__float_as_uint(y) + (__float_as_uint(shifted) << 23));
}

// Two floats rounded to f16 (nearest even), lo in the low half: an mma A/B operand register.
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

}  // namespace hyrt::backend::cuda::attention_device

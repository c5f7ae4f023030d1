// f16 and bf16 <-> f32 conversion. Scalar versions are exact IEEE conversions
// (round-to-nearest-even on the way down); the bulk versions are vectorised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/dtype.h"

namespace hyrt {

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

// Converts n elements of a float type (f32, f16, bf16) to f32. src and dst must not overlap.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);
// Converts n f32 values to a float type (f32, f16, bf16).
void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n);

}  // namespace hyrt

// Mirrors ATen's CPU normal kernel (aten/src/ATen/native/cpu/DistributionTemplates.h,
// normal_fill / normal_fill_16 and at::normal_distribution<double>) — reimplemented from the
// description in rng.h, not copied.
#include "pipeline/rng.h"

#include <cmath>
#include <numbers>

namespace hyrt::pipeline {
namespace {

constexpr float kTwoPiF = static_cast<float>(2.0 * std::numbers::pi);

// Box–Muller on one block of 16 uniforms, in place: slots [0, 8) pair with [8, 16).
void box_muller_16(float* data) {
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - data[j];  // [0, 1) -> (0, 1] so the log is finite
    const float u2 = data[j + 8];
    const float radius = std::sqrt(-2.0f * std::log(u1));
    // 2π is rounded to float first and the product formed in float, as torch's vectorised
    // kernel does (forming it in double instead changes ~40% of the outputs by an ulp or so).
    const float theta = kTwoPiF * u2;
    data[j] = radius * std::cos(theta);
    data[j + 8] = radius * std::sin(theta);
  }
}

}  // namespace

void TorchCpuRng::manual_seed(uint64_t seed) {
  engine_.seed(static_cast<uint32_t>(seed));
  cached_normal_.reset();
}

float TorchCpuRng::uniform_float() {
  return static_cast<float>(engine_() & 0xFFFFFFu) * (1.0f / 16777216.0f);
}

double TorchCpuRng::uniform_double() {
  const uint64_t hi = engine_();
  const uint64_t lo = engine_();
  const uint64_t bits = ((hi << 32) | lo) & ((uint64_t{1} << 53) - 1);
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
}

double TorchCpuRng::scalar_normal() {
  if (cached_normal_) {
    const double value = *cached_normal_;
    cached_normal_.reset();
    return value;
  }
  const double u1 = uniform_double();
  const double u2 = uniform_double();
  const double radius = std::sqrt(-2.0 * std::log1p(-u2));
  const double theta = 2.0 * std::numbers::pi * u1;
  cached_normal_ = radius * std::sin(theta);
  return radius * std::cos(theta);
}

void TorchCpuRng::randn(std::span<float> out) {
  const size_t n = out.size();
  if (n < 16) {
    for (float& v : out)
      v = static_cast<float>(scalar_normal());
    return;
  }
  float* data = out.data();
  for (size_t i = 0; i < n; ++i)
    data[i] = uniform_float();
  for (size_t i = 0; i + 16 <= n; i += 16)
    box_muller_16(data + i);
  if (n % 16 != 0) {
    float* tail = data + n - 16;
    for (int i = 0; i < 16; ++i)
      tail[i] = uniform_float();
    box_muller_16(tail);
  }
}

void TorchCpuRng::rand(std::span<float> out) {
  for (float& v : out)
    v = uniform_float();
}

std::vector<float> TorchCpuRng::randn(size_t count) {
  std::vector<float> out(count);
  randn(out);
  return out;
}

}  // namespace hyrt::pipeline

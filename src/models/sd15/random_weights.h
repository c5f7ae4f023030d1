// Random weights for an SD 1.5-architecture model of any size: every tensor the config
// needs (models/keys.h), initialised like PyTorch's defaults (uniform ±1/sqrt(fan_in)
// for linear/conv weights, small biases, norm scales near 1) so activations stay in a
// realistic range. Deterministic for a seed. Used by the self-check and by benchmarks of
// real-size models without a download.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/dtype.h"
#include "models/keys.h"
#include "weights/memory_weights.h"

namespace hyrt::models::sd15 {

// The value stream behind add_random_weights(), one tensor at a time — for writers that
// must not hold a whole model in memory. Feeding it the same list in the same order with
// the same seed yields exactly the tensors add_random_weights() makes.
// Not thread-safe (it owns one RNG); cheap to construct.
class RandomWeightStream {
 public:
  explicit RandomWeightStream(uint64_t seed);
  ~RandomWeightStream();
  RandomWeightStream(const RandomWeightStream&) = delete;
  RandomWeightStream& operator=(const RandomWeightStream&) = delete;

  // The next tensor's values (the init depends on e.name and e.shape), written to `out` as
  // `dtype` (f32, f16 or bf16): e.shape.numel() x dtype_size(dtype) bytes.
  void next(const ExpectedTensor& e, DType dtype, void* out);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Fills `out` with the tensors listed in `expected`, stored as `dtype` (f32, f16 or bf16).
void add_random_weights(const std::vector<ExpectedTensor>& expected, uint64_t seed, DType dtype,
                        weights::MemoryWeights& out);

// Small configs of the SD 1.5 architecture (the sizes of ../shared/golden/sd15-tiny).
ClipTextConfig tiny_clip_text_config();
UNetConfig tiny_unet_config();
VaeConfig tiny_vae_config();

}  // namespace hyrt::models::sd15

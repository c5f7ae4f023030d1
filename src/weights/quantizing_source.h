// QuantizingWeights — "quantize on load": a WeightSource over another one (an f32/f16/bf16
// checkpoint) that presents every tensor the 8-bit S policy selects (quantize.h,
// QuantizePolicy) as s8 with its per-row scales, quantizing each on first access and
// keeping only the int8 copy (1 byte per parameter + 4 bytes per row). Everything else
// passes through unchanged. Already-quantized sources pass through too.
//
// Lifetime: `source` must outlive this object; views stay valid while it lives.
// Thread safety: get/scale may be called concurrently (first-access quantization is
// serialised by a mutex).
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "weights/quantize.h"
#include "weights/weight_source.h"

namespace hyrt::weights {

class QuantizingWeights final : public WeightSource {
 public:
  explicit QuantizingWeights(const WeightSource& source, QuantizePolicy policy = {},
                             int refit_iterations = kDefaultRefitIterations);

  TensorView get(std::string_view name) const override;
  bool contains(std::string_view name) const override { return source_.contains(name); }
  std::optional<TensorView> scale(std::string_view name) const override;
  // Forwards to the source (the int8 copies made here are kept).
  void release_stored(std::string_view name) const override { source_.release_stored(name); }

  // Bytes held by the int8 copies made so far (weights + scales).
  size_t quantized_bytes() const;

 private:
  const QuantizedTensor* quantized(std::string_view name) const;

  const WeightSource& source_;
  QuantizePolicy policy_;
  int refit_iterations_;
  mutable std::mutex mu_;
  struct Entry {
    bool quantized = false;  // false: the policy (or the source's dtype) said no
    QuantizedTensor q;
  };
  mutable std::map<std::string, Entry, std::less<>> cache_;
};

}  // namespace hyrt::weights

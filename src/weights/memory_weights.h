// MemoryWeights: a WeightSource that owns its tensors in host memory — for random-weight
// models (self-check, benchmarks at real size without a download) and tests.
// Thread safety: add() is not synchronised; get/contains are safe once filled.
#pragma once

#include <map>
#include <string>

#include "core/tensor.h"
#include "weights/weight_source.h"

namespace hyrt::weights {

class MemoryWeights final : public WeightSource {
 public:
  // Stores `tensor` under `name`, replacing any previous one.
  void add(std::string name, Tensor tensor);
  // Stores an "8-bit S" weight: `q` s8 with its f32 [rows] per-row `scale`.
  void add_quantized(std::string name, Tensor q, Tensor scale);
  TensorView get(std::string_view name) const override;
  bool contains(std::string_view name) const override;
  std::optional<TensorView> scale(std::string_view name) const override;
  const std::map<std::string, Tensor, std::less<>>& tensors() const { return tensors_; }
  size_t bytes() const;

 private:
  std::map<std::string, Tensor, std::less<>> tensors_;
  std::map<std::string, Tensor, std::less<>> scales_;
};

}  // namespace hyrt::weights

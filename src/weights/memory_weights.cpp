#include "weights/memory_weights.h"

#include "core/error.h"

namespace hyrt::weights {

void MemoryWeights::add(std::string name, Tensor tensor) {
  tensors_[std::move(name)] = std::move(tensor);
}

void MemoryWeights::add_quantized(std::string name, Tensor q, Tensor scale) {
  HYRT_CHECK(q.dtype() == DType::kS8 && scale.dtype() == DType::kF32 && q.shape().rank() >= 1 &&
                 scale.shape() == Shape{q.shape()[0]},
             kInvalidArgument, "add_quantized('", name,
             "'): need s8 weights and f32 [rows] scales, got ", dtype_name(q.dtype()),
             q.shape().to_string(), " and ", dtype_name(scale.dtype()), scale.shape().to_string());
  scales_[name] = std::move(scale);
  tensors_[std::move(name)] = std::move(q);
}

std::optional<TensorView> MemoryWeights::scale(std::string_view name) const {
  auto it = scales_.find(name);
  if (it == scales_.end()) return std::nullopt;
  return it->second.view();
}

TensorView MemoryWeights::get(std::string_view name) const {
  auto it = tensors_.find(name);
  HYRT_CHECK(it != tensors_.end(), kNotFound, "no weight named '", name, "'");
  return it->second.view();
}

bool MemoryWeights::contains(std::string_view name) const {
  return tensors_.find(name) != tensors_.end();
}

size_t MemoryWeights::bytes() const {
  size_t b = 0;
  for (const auto& [n, t] : tensors_)
    b += t.bytes();
  for (const auto& [n, t] : scales_)
    b += t.bytes();
  return b;
}

}  // namespace hyrt::weights

#include "weights/memory_weights.h"

#include "core/error.h"

namespace hyrt::weights {

void MemoryWeights::add(std::string name, Tensor tensor) {
  tensors_[std::move(name)] = std::move(tensor);
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
  return b;
}

}  // namespace hyrt::weights

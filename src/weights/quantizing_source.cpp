#include "weights/quantizing_source.h"

#include "core/error.h"

namespace hyrt::weights {

QuantizingWeights::QuantizingWeights(const WeightSource& source, QuantizePolicy policy,
                                     int refit_iterations)
    : source_(source), policy_(std::move(policy)), refit_iterations_(refit_iterations) {}

const QuantizedTensor* QuantizingWeights::quantized(std::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = cache_.find(name);
  if (it == cache_.end()) {
    const TensorView stored = source_.get(name);
    Entry e;
    e.quantized = dtype_is_float(stored.dtype) && !source_.scale(name) &&
                  policy_.quantize(name, stored.shape);
    if (e.quantized) {
      try {
        e.q = quantize_per_row(stored, refit_iterations_);
      } catch (const Error& err) {
        fail(err.code(), "quantizing weight '", name, "' ", dtype_name(stored.dtype),
             stored.shape.to_string(), ": ", err.what());
      }
    }
    it = cache_.emplace(std::string(name), std::move(e)).first;
  }
  return it->second.quantized ? &it->second.q : nullptr;
}

TensorView QuantizingWeights::get(std::string_view name) const {
  if (const QuantizedTensor* q = quantized(name)) return q->q.view();
  return source_.get(name);
}

std::optional<TensorView> QuantizingWeights::scale(std::string_view name) const {
  if (const QuantizedTensor* q = quantized(name)) return q->scale.view();
  return source_.scale(name);
}

size_t QuantizingWeights::quantized_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  size_t b = 0;
  for (const auto& [name, e] : cache_)
    if (e.quantized) b += e.q.q.bytes() + e.q.scale.bytes();
  return b;
}

}  // namespace hyrt::weights

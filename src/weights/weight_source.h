// WeightSource: where backends and graph builders fetch weights by canonical name
// (`<component>.<diffusers key>`, e.g. `unet.conv_in.weight`; see checkpoint.h).
//
// Contract for implementations: get() returns a view whose memory stays valid and
// unchanged for the lifetime of the source; the memory is read-only (it may be a
// PROT_READ file mapping — never write through the view); the data pointer may be
// unaligned for the element type (safetensors.h explains). Both methods are const and
// must be safe to call concurrently from several threads.
#pragma once

#include <string_view>

#include "core/tensor.h"

namespace hyrt::weights {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Throws hyrt::Error(kNotFound) naming the weight and the source when absent.
  virtual TensorView get(std::string_view name) const = 0;
  virtual bool contains(std::string_view name) const = 0;
};

}  // namespace hyrt::weights

// WeightSource: where backends and graph builders fetch weights by canonical name
// (`<component>.<diffusers key>`, e.g. `unet.conv_in.weight`; see checkpoint.h).
//
// Contract for implementations: get() returns a view whose memory stays valid and
// unchanged for the lifetime of the source; the memory is read-only (it may be a
// PROT_READ file mapping — never write through the view); the data pointer may be
// unaligned for the element type (safetensors.h explains). Both methods are const and
// must be safe to call concurrently from several threads.
#pragma once

#include <optional>
#include <string_view>

#include "core/tensor.h"

namespace hyrt::weights {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  // Throws hyrt::Error(kNotFound) naming the weight and the source when absent.
  virtual TensorView get(std::string_view name) const = 0;
  virtual bool contains(std::string_view name) const = 0;
  // For an "8-bit S" weight (dtype s8, value = scale[row] · q): its per-row scales, an f32
  // [rows] view (rows = dim 0); nullopt for weights that are not quantized.
  virtual std::optional<TensorView> scale(std::string_view name) const { return std::nullopt; }
  // Hint: the caller has its own copy of `name` (a backend packed it) and will not read
  // the stored bytes soon. A file-mapped source may drop their pages from memory; views
  // stay valid (the next read faults the bytes back in from the file), so calling this
  // is always safe — only the resident set changes. Unknown names are ignored.
  virtual void release_stored(std::string_view name) const { (void)name; }
};

}  // namespace hyrt::weights

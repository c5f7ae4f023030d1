// WeightSource: where backends and graph builders fetch weights by canonical name
// (`<component>.<diffusers key>`, e.g. `unet.conv_in.weight`; see checkpoint.h).
//
// Contract for implementations: get() returns a view whose memory stays valid and
// unchanged for the lifetime of the source; the memory is read-only (it may be a
// PROT_READ file mapping — never write through the view); the data pointer is aligned for
// the element type (safetensors.h copies what a file stores misaligned). Both methods are const and
// must be safe to call concurrently from several threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string_view>

#include "core/tensor.h"

namespace hyrt::weights {

class WeightSource {
 public:
  WeightSource() : generation_(next_generation()) {}
  // A copy (or a moved-to source) is another source: it gets its own generation.
  WeightSource(const WeightSource&) : generation_(next_generation()) {}
  WeightSource& operator=(const WeightSource&) {
    generation_ = next_generation();
    return *this;
  }
  virtual ~WeightSource() = default;
  // This source's identity for caches that outlive a lookup (an accelerator's resident
  // weights): unique within the process and never reused — unlike the source's address,
  // which a source loaded after this one is freed may be given.
  uint64_t generation() const { return generation_; }
  // The identity of the bytes behind `name`: the generation of the source that stores them.
  // A source that forwards some names to another (an overlay adding LoRA tensors to a model)
  // returns that source's generation for them, so caches keyed by (generation_of(name), name)
  // — packed host weights, an accelerator's resident weights — are shared between the two
  // instead of holding a second copy. Two names with the same (generation_of, name) must have
  // the same contents (and scales).
  virtual uint64_t generation_of(std::string_view name) const {
    (void)name;
    return generation_;
  }
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

 private:
  static uint64_t next_generation() {
    static std::atomic<uint64_t> counter{0};
    return ++counter;
  }
  uint64_t generation_;
};

}  // namespace hyrt::weights

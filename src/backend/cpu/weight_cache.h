// Internal to the CPU backend: the weights its kernels keep in a form of their own — packed
// into the blocked layout a oneDNN primitive reads (linear/conv2d, f32 or s8), converted to
// f32 (biases, norm parameters, embedding tables, weights of elementwise ops), copied aligned
// (per-row scales, the s8 rows of the int8 GEMV) — shared between kernels, and so between
// executables. An executable for a new resolution or batch, or a graph that adds side nodes
// to a model but keeps its weights (a LoRA overlay forwards WeightSource::generation_of), finds
// the packs its model's earlier executables made instead of repacking every weight (seconds
// for a UNet) and holding another full copy of them. Two nodes of one graph that use the same
// weight (a UNet built as one chain per sample) share one copy too.
//
// Key: what the bytes are made from and what was made of them —
//   - WeightSource::generation_of(name): the source that really stores the bytes, unique in the
//     process and never reused (a model loaded where a freed one lived is not served its packs);
//   - the weight's name, and (a guard, free to check) the stored view's address, dtype and shape:
//     a source's views are stable for its lifetime, so a replaced tensor misses;
//   - the form: what was made (e.g. "f32 packed", "s8 packed for w8a8", "s8 twin for w8",
//     "f32 copy", "f32 scale"), which also says which int8 mode it serves;
//   - the layout: the exact oneDNN memory descriptor of a packed form, compared with oneDNN's
//     own equality (memory::desc ==, the same public call on oneDNN 2 and 3: dims, data type,
//     blocking and strides, padding, offsets, and the extra flags that mark the s8·s8
//     compensation appended to the data). A primitive for another shape that wants another
//     layout misses and packs again (correct, one more entry while both are in use).
// Everything the reorder writes follows from the source bytes and the descriptor, so equal keys
// mean equal buffers.
//
// Ownership: get_or_make() hands out shared_ptrs; kernels hold them, the cache holds only
// weak_ptrs. A buffer is freed when the last kernel that uses it goes, so dropping a model's
// executables frees its packs; expired entries are pruned as new ones are added.
//
// Where it lives: one per CpuBackend, i.e. one per exec::Engine (hyrt::Runtime), like the CUDA
// backend's resident weights. Backends are per Engine, and a WeightSource is compiled only by
// the Engine it was loaded into (a DiffusionModel holds its Engine), so a per-backend cache
// catches every reuse that happens; in exchange the backend reports exactly what its own
// kernels hold (Backend::resident_weight_bytes), tests see one backend's hits, and two Runtimes
// never wait on one lock. (Packs are valid for any CPU backend — they use the one process-wide
// oneDNN engine — so sharing across Engines would only need the cache moved to a static.)
//
// Accounting: a buffer is counted once, by the backend (resident_weight_bytes(), which is
// live_bytes()). A kernel's held_bytes() counts only the packs it made in a second (third, ...)
// layout of a weight already held in another one: those exist because this shape's primitive
// wants its own layout (measured: 26 of the f32 SD 1.5 UNet's convolutions, 427 MiB, at a
// second resolution; 6 of the int8 one's), so they are per-shape state like the arenas. The
// first pack of each weight, and every buffer a kernel found in the cache, are the model's:
// counted by no executable. Executable::held_bytes, and so the per-shape budget of a
// DiffusionModel (ModelOptions::cache_bytes), then measures what dropping an executable
// frees: its arenas and its shape's extra layouts, not the packs its model's other
// executables keep using. (Counting a shared pack in every executable would charge the
// budget once per shape for bytes held once, and evict shapes to "free" memory that stays in
// use.) What this leaves out: the first packs are in no executable's figure, so dropping the
// last executable of a model frees more than its held_bytes() said (the packs go with it).
//
// Thread safety: every member may be called from several threads (the backend contract has
// one prepare at a time per backend; the lock makes the cache safe beyond it). make() runs
// outside the lock, so a long pack blocks no other lookup; two threads making the same key at
// once both pack, and the second one's buffer is dropped in favour of the first's.
#pragma once

#include <dnnl.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/buffer.h"

namespace hyrt::backend::cpu {

using SharedBuffer = std::shared_ptr<const AlignedBuffer>;

class WeightCache {
 public:
  struct Key {
    uint64_t generation = 0;  // WeightSource::generation_of(name)
    std::string_view name;
    // What it is made from and what was made: the caller's words, including the stored
    // view's address, dtype and shape (see the file comment).
    std::string_view form;
    dnnl::memory::desc layout;  // a packed form's layout; the zero descriptor for plain forms
  };
  struct Stats {
    uint64_t hits = 0;           // get_or_make calls served from a live entry
    uint64_t misses = 0;         // calls that ran make()
    uint64_t extra_layouts = 0;  // misses that were Lookup::extra_layout
    size_t entries = 0;          // live buffers
    size_t bytes = 0;            // their bytes
  };
  struct Lookup {
    SharedBuffer buffer;
    // This call made the buffer, in a layout other than the one(s) already held for the same
    // generation, name and form: a per-shape copy (see Accounting above).
    bool extra_layout = false;
  };

  // The live buffer for `key`, or make()'s, which is then kept for later calls while someone
  // holds it. make() must return the same bytes for the same key.
  Lookup get_or_make(const Key& key, const std::function<AlignedBuffer()>& make);

  Stats stats() const;
  // Removes the entries whose buffers are gone (their keys and layouts stay otherwise until the
  // map has grown enough to prune itself: megabytes after a large model is unloaded).
  void prune();
  size_t live_bytes() const { return stats().bytes; }

 private:
  struct Entry {
    dnnl::memory::desc layout;
    std::weak_ptr<const AlignedBuffer> buffer;
  };
  // Under mu_: the live entry of `bucket` with `layout`, or null.
  static SharedBuffer find(const std::vector<Entry>& bucket, const dnnl::memory::desc& layout);
  void prune_locked();  // prune() with mu_ held

  mutable std::mutex mu_;
  // By generation, name and form; the layouts that share them in a short list.
  std::unordered_map<std::string, std::vector<Entry>> entries_;
  size_t pruned_at_ = 0;  // entries_.size() after the last pruning
  uint64_t hits_ = 0, misses_ = 0, extra_layouts_ = 0;
};

}  // namespace hyrt::backend::cpu

// The CPU backend's shared weight cache. Contracts in weight_cache.h.
#include "backend/cpu/weight_cache.h"

#include <algorithm>
#include <iterator>

namespace hyrt::backend::cpu {

SharedBuffer WeightCache::find(const std::vector<Entry>& bucket, const dnnl::memory::desc& layout) {
  for (const Entry& e : bucket)
    if (e.layout == layout)
      if (SharedBuffer held = e.buffer.lock()) return held;
  return nullptr;
}

WeightCache::Lookup WeightCache::get_or_make(const Key& key,
                                             const std::function<AlignedBuffer()>& make) {
  std::string id = std::to_string(key.generation);
  id += '|';
  id += key.name;
  id += '|';
  id += key.form;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (auto it = entries_.find(id); it != entries_.end())
      if (SharedBuffer held = find(it->second, key.layout)) {
        ++hits_;
        return {std::move(held), false};
      }
  }
  // Made outside the lock (packing a large layer takes a while).
  auto made = std::make_shared<const AlignedBuffer>(make());
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Entry>& bucket = entries_[id];
  if (SharedBuffer held = find(bucket, key.layout)) {  // another thread made it meanwhile
    ++hits_;
    return {std::move(held), false};
  }
  ++misses_;
  std::erase_if(bucket, [](const Entry& e) { return e.buffer.expired(); });
  // The live entries left hold this weight in other layouts.
  const bool extra_layout = !bucket.empty();
  extra_layouts_ += extra_layout ? 1 : 0;
  bucket.push_back({key.layout, made});
  if (entries_.size() >= 2 * pruned_at_ + 64) prune_locked();  // the map stays O(live entries)
  return {std::move(made), extra_layout};
}

void WeightCache::prune_locked() {
  for (auto it = entries_.begin(); it != entries_.end();) {
    std::erase_if(it->second, [](const Entry& e) { return e.buffer.expired(); });
    it = it->second.empty() ? entries_.erase(it) : std::next(it);
  }
  pruned_at_ = entries_.size();
}

void WeightCache::prune() {
  std::lock_guard<std::mutex> lock(mu_);
  prune_locked();
  if (entries_.empty()) decltype(entries_)().swap(entries_);  // its buckets' memory too
}

WeightCache::Stats WeightCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s;
  s.hits = hits_;
  s.misses = misses_;
  s.extra_layouts = extra_layouts_;
  for (const auto& [id, bucket] : entries_)
    for (const Entry& e : bucket)
      if (SharedBuffer held = e.buffer.lock()) {
        ++s.entries;
        s.bytes += held->size();
      }
  return s;
}

}  // namespace hyrt::backend::cpu

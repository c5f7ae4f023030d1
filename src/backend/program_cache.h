// GemmKey and ProgramCache.
//
// GemmKey identifies what a GEMM program computes — (M, N, K, batch, dtypes, layouts,
// epilogue) — so layers of the same shape share one compiled program. It is compared
// and hashed field by field, never through the raw bytes of the struct.
//
// ProgramCache maps a key string to a backend-specific program object. This is the
// in-memory half; the on-disk store (tuning choices and measured costs under
// $XDG_CACHE_HOME/hyrt) belongs to the accelerator issue.
//
// Thread safety: all ProgramCache methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "core/dtype.h"

namespace hyrt::backend {

enum class Epilogue : uint8_t {
  kNone = 0,
  kBias = 1 << 0,
  kSilu = 1 << 1,
  kGelu = 1 << 2,
  kResidualAdd = 1 << 3,
};

struct GemmKey {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  DType a_type = DType::kF32;    // activations
  DType w_type = DType::kF32;    // weights (s8 = "8-bit S")
  DType out_type = DType::kF32;
  bool w_transposed = true;      // weights stored [N, K] (PyTorch layout)
  uint8_t epilogue = 0;          // Epilogue bit set

  bool operator==(const GemmKey& o) const;
  // Canonical text form, also the cache key: "gemm m=.. n=.. k=.. b=.. a=f32 w=f32 o=f32 wt=1 e=0".
  std::string to_string() const;
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const;
};

class ProgramCache {
 public:
  // Returns the program stored under `key`, creating it with make() on a miss.
  // make() runs without the lock held; if two threads race, the first stored wins.
  template <class T>
  std::shared_ptr<T> get_or_create(const std::string& key,
                                   const std::function<std::shared_ptr<T>()>& make) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = programs_.find(key); it != programs_.end()) {
        ++hits_;
        return std::static_pointer_cast<T>(it->second);
      }
    }
    std::shared_ptr<T> made = make();
    std::lock_guard<std::mutex> lock(mu_);
    ++misses_;
    auto [it, inserted] = programs_.emplace(key, made);
    return std::static_pointer_cast<T>(it->second);
  }

  size_t size() const;
  uint64_t hits() const;
  uint64_t misses() const;
  void clear();

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<void>> programs_;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace hyrt::backend

// GemmKey and ProgramCache.
//
// GemmKey identifies what a GEMM program computes — (M, N, K, batch, dtypes, layouts,
// epilogue) — so layers of the same shape share one compiled program. It is compared
// and hashed field by field, never through the raw bytes of the struct.
//
// ProgramCache has two halves:
//  - programs: key string -> a backend-specific program object, in memory only
//    (get_or_create);
//  - records: key string -> a small opaque byte string (typically JSON: the chosen GEMM
//    candidate, measured microseconds) that survives the process through an on-disk
//    store, so a second start skips autotuning (put_record / find_record / flush).
//
// The on-disk store is one file per (store name, device signature) under a directory
// (default_cache_dir()). The caller's device signature (GPU name, driver, ...) plus hyrt's
// version and the file format version name the file and are repeated in its header: a
// different GPU, driver or hyrt never reads another's records. Every record carries an
// FNV-1a checksum; a corrupt, truncated or stale file or record is dropped with a one-line
// warning and rewritten at the next flush — never trusted, never a crash. Nothing in the
// store is required: every failure to read or write it degrades to an in-memory cache.
//
// File format (little-endian):
//   "HYRTPC01" | u32 signature length | signature | u64 fnv1a64(everything before)
//   then records: u32 key length | u32 blob length | u32 fnv1a32(those 8 bytes)
//                 | key | blob | u64 fnv1a64(the 8 length bytes, key, blob)
// A bad length checksum ends parsing (later framing is unknowable); a bad payload checksum
// drops just that record.
//
// Writes are atomic: flush() writes a temporary file in the same directory and renames it
// over the store, so readers see the old or the new file, never a mix. Under an advisory
// lock (flock on "<file>.lock") it first re-reads the file and merges in records other
// processes added, so two processes tuning at once both keep their records; where the lock
// is unavailable the rename alone still keeps the file whole (last writer wins).
//
// Thread safety: all ProgramCache methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "core/dtype.h"

namespace hyrt::backend {

enum class Epilogue : uint8_t {
  kNone = 0,
  kBias = 1 << 0,
  kSilu = 1 << 1,
  kGelu = 1 << 2,
  kResidualAdd = 1 << 3,
  kQuickGelu = 1 << 4,
  kRelu = 1 << 5,
};

struct GemmKey {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  DType a_type = DType::kF32;  // activations
  DType w_type = DType::kF32;  // weights (s8 = "8-bit S")
  DType out_type = DType::kF32;
  bool w_transposed = true;  // weights stored [N, K] (PyTorch layout)
  uint8_t epilogue = 0;      // Epilogue bit set

  bool operator==(const GemmKey& o) const;
  // Canonical text form, also the cache key: "gemm m=.. n=.. k=.. b=.. a=f32 w=f32 o=f32 wt=1 e=0".
  std::string to_string() const;
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const;
};

// $HYRT_CACHE_DIR if set, else $XDG_CACHE_HOME/hyrt, else $HOME/.cache/hyrt; empty when
// none of those variables is set (then there is no default on-disk store).
std::filesystem::path default_cache_dir();

struct DiskStoreOptions {
  std::filesystem::path dir;      // empty: default_cache_dir()
  std::string device_signature;   // what records are valid for, e.g. "NVIDIA H100 80GB HBM3
                                  // sm_90 driver 13000"; hyrt's version is appended
  std::string name = "programs";  // file stem: several stores may share one directory
};

class ProgramCache {
 public:
  ProgramCache() = default;
  // Flushes pending records to the disk store, if one is open (failures only warn).
  ~ProgramCache();
  ProgramCache(const ProgramCache&) = delete;
  ProgramCache& operator=(const ProgramCache&) = delete;

  // Returns the program stored under `key`, creating it with make() on a miss.
  // make() runs without the lock held; if two threads race, the first stored wins.
  // Bounded memory: programs no kernel holds any more ("idle": only the cache refers to
  // them) are kept up to max_idle_programs(), the least recently asked for dropped first,
  // so a process that visits many shapes keeps the recent ones warm without growing for
  // ever. Programs in use are never dropped.
  template <class T>
  std::shared_ptr<T> get_or_create(const std::string& key,
                                   const std::function<std::shared_ptr<T>()>& make) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (auto it = programs_.find(key); it != programs_.end()) {
        ++hits_;
        it->second.last_used = ++clock_;
        return std::static_pointer_cast<T>(it->second.program);
      }
    }
    std::shared_ptr<T> made = make();
    std::lock_guard<std::mutex> lock(mu_);
    ++misses_;
    auto [it, inserted] = programs_.emplace(key, Entry{made, ++clock_});
    if (inserted && programs_.size() > max_idle_ + programs_at_trim_) drop_idle_locked();
    return std::static_pointer_cast<T>(it->second.program);
  }
  // Drops every idle program now (when a model is unloaded).
  void drop_idle();
  // How many idle programs are kept (default 1024); smaller values drop idle ones now.
  void set_max_idle_programs(size_t n);
  size_t max_idle_programs() const;

  // Programs: count, lookups, and clear() (which leaves records alone).
  size_t size() const;
  uint64_t hits() const;
  uint64_t misses() const;
  void clear();

  // --- Records (persistent) ---

  // Attaches the on-disk store and loads its records (records put before, with no store
  // open, win over the file's and are written to it). Replaces any store opened before,
  // flushing it first and forgetting its records. Never throws
  // for file problems: they are one-line warnings and the store starts (partly) empty.
  // Returns the number of records loaded from the file.
  size_t open_disk_store(const DiskStoreOptions& options);
  // The store's file ("<dir>/<name>-<16 hex digits of the signature hash>.bin"), or empty.
  std::filesystem::path disk_store_path() const;

  // The record under `key`, if any (from this process or the disk store).
  std::optional<std::string> find_record(std::string_view key) const;
  // Stores a record in memory; flush() (or the destructor) writes it to the disk store.
  void put_record(std::string key, std::string blob);
  size_t record_count() const;
  // Writes records put since the last flush to the disk store. Returns true on success or
  // when there is nothing to write; false (after a one-line warning, given once per store)
  // when the store cannot be written — the records stay in memory.
  bool flush();

 private:
  mutable std::mutex mu_;
  struct Entry {
    std::shared_ptr<void> program;
    uint64_t last_used = 0;  // clock_ at the last lookup
  };
  // Drops the least recently used idle programs beyond max_idle_ (mu_ held).
  void drop_idle_locked();
  std::unordered_map<std::string, Entry> programs_;
  uint64_t clock_ = 0;
  size_t max_idle_ = 1024;
  size_t programs_at_trim_ = 0;  // programs in use at the last drop_idle_locked()
  uint64_t hits_ = 0, misses_ = 0;

  // Guards everything below; never held together with mu_.
  mutable std::mutex records_mu_;
  std::unordered_map<std::string, std::string> records_;
  std::unordered_set<std::string> dirty_;  // keys put since the last successful flush
  bool rewrite_ = false;  // the file held bad or stale data: rewrite it even if clean
  bool warned_write_ = false;
  std::filesystem::path store_path_;
  std::string signature_;  // the full signature written in the header
  bool flush_locked();     // flush() with records_mu_ held
};

}  // namespace hyrt::backend

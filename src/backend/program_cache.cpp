#include "backend/program_cache.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>
#include <vector>

#include "core/build_info.h"
#include "core/error.h"
#include "core/log.h"

namespace hyrt::backend {

bool GemmKey::operator==(const GemmKey& o) const {
  return m == o.m && n == o.n && k == o.k && batch == o.batch && a_type == o.a_type &&
         w_type == o.w_type && out_type == o.out_type && w_transposed == o.w_transposed &&
         epilogue == o.epilogue;
}

std::string GemmKey::to_string() const {
  return str_cat("gemm m=", m, " n=", n, " k=", k, " b=", batch, " a=", dtype_name(a_type),
                 " w=", dtype_name(w_type), " o=", dtype_name(out_type),
                 " wt=", w_transposed ? 1 : 0, " e=", static_cast<int>(epilogue));
}

size_t GemmKeyHash::operator()(const GemmKey& k) const {
  size_t h = 1469598103934665603ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 1099511628211ull; };
  mix(static_cast<uint64_t>(k.m));
  mix(static_cast<uint64_t>(k.n));
  mix(static_cast<uint64_t>(k.k));
  mix(static_cast<uint64_t>(k.batch));
  mix(static_cast<uint64_t>(k.a_type));
  mix(static_cast<uint64_t>(k.w_type));
  mix(static_cast<uint64_t>(k.out_type));
  mix(k.w_transposed ? 1 : 0);
  mix(k.epilogue);
  return h;
}

void ProgramCache::drop_idle_locked() {
  std::vector<std::pair<uint64_t, std::string>> idle;
  for (const auto& [key, e] : programs_)
    if (e.program.use_count() == 1) idle.emplace_back(e.last_used, key);
  const size_t in_use = programs_.size() - idle.size();
  if (idle.size() > max_idle_) {
    std::sort(idle.begin(), idle.end());
    for (size_t i = 0; i < idle.size() - max_idle_; ++i)
      programs_.erase(idle[i].second);
  }
  // The next scan comes after max_idle_ more insertions beyond what is in use now: each
  // scan is O(programs), so insertions stay amortised O(1).
  programs_at_trim_ = in_use;
}

void ProgramCache::drop_idle() {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t keep = max_idle_;
  max_idle_ = 0;
  drop_idle_locked();
  max_idle_ = keep;
}

void ProgramCache::set_max_idle_programs(size_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  max_idle_ = n;
  drop_idle_locked();
}

size_t ProgramCache::max_idle_programs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_idle_;
}

size_t ProgramCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return programs_.size();
}
uint64_t ProgramCache::hits() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hits_;
}
uint64_t ProgramCache::misses() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_;
}
void ProgramCache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  programs_.clear();
}

// ---------------------------------------------------------------------------------------
// On-disk records.

namespace {

constexpr char kMagic[8] = {'H', 'Y', 'R', 'T', 'P', 'C', '0', '1'};  // format version 01
constexpr int kFormatVersion = 1;
// Far above any real record; a larger length is corruption, not a big record.
constexpr uint32_t kMaxKeyBytes = 1u << 16;
constexpr uint32_t kMaxBlobBytes = 64u << 20;

uint64_t fnv1a64(std::string_view bytes, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : bytes)
    h = (h ^ c) * 1099511628211ull;
  return h;
}
uint32_t fnv1a32(std::string_view bytes) {
  uint32_t h = 2166136261u;
  for (unsigned char c : bytes)
    h = (h ^ c) * 16777619u;
  return h;
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint64_t get_le(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return v;
}

std::string header_bytes(const std::string& signature) {
  std::string h(kMagic, sizeof kMagic);
  put_u32(h, static_cast<uint32_t>(signature.size()));
  h += signature;
  put_u64(h, fnv1a64(h));
  return h;
}

void append_record(std::string& out, const std::string& key, const std::string& blob) {
  std::string lengths;
  put_u32(lengths, static_cast<uint32_t>(key.size()));
  put_u32(lengths, static_cast<uint32_t>(blob.size()));
  out += lengths;
  put_u32(out, fnv1a32(lengths));
  out += key;
  out += blob;
  put_u64(out, fnv1a64(blob, fnv1a64(key, fnv1a64(lengths))));
}

// What parsing a store file found. `problem` is empty when the file was whole and valid.
struct Parsed {
  std::unordered_map<std::string, std::string> records;
  std::string problem;
};

Parsed parse_store(std::string_view file, const std::string& signature) {
  Parsed p;
  const std::string want = header_bytes(signature);
  if (file.size() < sizeof kMagic ||
      file.substr(0, sizeof kMagic) != std::string_view(kMagic, sizeof kMagic)) {
    p.problem = "not a hyrt program cache of this format version";
    return p;
  }
  if (file.size() < want.size() || file.substr(0, want.size()) != want) {
    p.problem = "written for another device, driver or hyrt version (stale)";
    return p;
  }
  size_t at = want.size();
  int dropped = 0;
  while (at < file.size()) {
    if (file.size() - at < 12) {
      p.problem = str_cat("truncated record header at byte ", at);
      break;
    }
    const std::string_view lengths = file.substr(at, 8);
    const uint32_t key_len = static_cast<uint32_t>(get_le(file, at, 4));
    const uint32_t blob_len = static_cast<uint32_t>(get_le(file, at + 4, 4));
    if (static_cast<uint32_t>(get_le(file, at + 8, 4)) != fnv1a32(lengths) ||
        key_len > kMaxKeyBytes || blob_len > kMaxBlobBytes) {
      p.problem = str_cat("corrupt record header at byte ", at, "; dropped the rest");
      break;
    }
    const size_t body = size_t{key_len} + blob_len + 8;
    if (file.size() - at - 12 < body) {
      p.problem = str_cat("truncated record at byte ", at);
      break;
    }
    const std::string_view key = file.substr(at + 12, key_len);
    const std::string_view blob = file.substr(at + 12 + key_len, blob_len);
    if (get_le(file, at + 12 + key_len + blob_len, 8) ==
        fnv1a64(blob, fnv1a64(key, fnv1a64(lengths))))
      p.records[std::string(key)] = std::string(blob);
    else
      ++dropped;
    at += 12 + body;
  }
  if (dropped > 0)
    p.problem = str_cat(p.problem.empty() ? "" : p.problem + "; ", dropped,
                        " record(s) with a bad checksum dropped");
  return p;
}

// Reads the whole file; nullopt when it does not exist or cannot be read (`error` says why
// for the latter).
std::optional<std::string> read_file(const std::filesystem::path& path, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) *error = std::strerror(errno);
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    *error = "read error";
    return std::nullopt;
  }
  return std::move(ss).str();
}

// Holds an exclusive flock on `path` while alive; holds nothing if that fails (a
// read-only or lock-less file system): the caller then relies on rename alone.
class FileLock {
 public:
  explicit FileLock(const std::filesystem::path& path) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ >= 0 && ::flock(fd_, LOCK_EX) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~FileLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the lock
  }
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// Writes `bytes` to a unique temporary file beside `path` and renames it over `path`.
// Returns an error message, or empty on success.
std::string write_atomically(const std::filesystem::path& path, const std::string& bytes) {
  static std::atomic<uint64_t> counter{0};
  const std::filesystem::path tmp =
      path.string() + str_cat(".tmp.", ::getpid(), ".", counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return str_cat("cannot create ", tmp.string(), ": ", std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string err = str_cat("cannot write ", tmp.string(), ": ", std::strerror(errno));
      ::close(fd);
      ::unlink(tmp.c_str());
      return err;
    }
    done += static_cast<size_t>(n);
  }
  // fsync before rename: after a crash the store is the old file or the new one, whole.
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const std::string err = str_cat("cannot write ", tmp.string(), ": ", std::strerror(errno));
    ::unlink(tmp.c_str());
    return err;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err =
        str_cat("cannot rename onto ", path.string(), ": ", std::strerror(errno));
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
}

std::string hex16(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::filesystem::path default_cache_dir() {
  auto env = [](const char* name) -> std::string {
    const char* v = std::getenv(name);
    return v ? v : "";
  };
  if (auto d = env("HYRT_CACHE_DIR"); !d.empty()) return d;
  if (auto d = env("XDG_CACHE_HOME"); !d.empty()) return std::filesystem::path(d) / "hyrt";
  if (auto d = env("HOME"); !d.empty()) return std::filesystem::path(d) / ".cache" / "hyrt";
  return {};
}

ProgramCache::~ProgramCache() {
  try {
    flush();
  } catch (...) {
    // A destructor must not throw; flush() itself only warns, this is belt and braces.
  }
}

size_t ProgramCache::open_disk_store(const DiskStoreOptions& options) {
  std::lock_guard<std::mutex> lock(records_mu_);
  if (!store_path_.empty()) {
    // Records of another store may be tuned for another device: never carry them over.
    flush_locked();
    records_.clear();
    dirty_.clear();
  }
  const std::filesystem::path dir = options.dir.empty() ? default_cache_dir() : options.dir;
  store_path_.clear();
  rewrite_ = false;
  warned_write_ = false;
  if (dir.empty()) {
    HYRT_LOG(kWarning) << "program cache: no cache directory (set HYRT_CACHE_DIR, "
                          "XDG_CACHE_HOME or HOME); keeping records in memory only";
    return 0;
  }
  signature_ =
      str_cat(options.device_signature, "|hyrt ", HYRT_VERSION_STRING, "|format ", kFormatVersion);
  store_path_ = dir / str_cat(options.name, "-", hex16(fnv1a64(signature_)), ".bin");
  // Everything in memory is new to this file until a flush writes it.
  for (const auto& [key, blob] : records_)
    dirty_.insert(key);

  std::string error;
  const std::optional<std::string> file = read_file(store_path_, &error);
  if (!file) {
    if (!error.empty()) {
      HYRT_LOG(kWarning) << "program cache " << store_path_.string() << ": " << error
                         << "; starting empty";
    }
    return 0;
  }
  Parsed parsed = parse_store(*file, signature_);
  if (!parsed.problem.empty()) {
    HYRT_LOG(kWarning) << "program cache " << store_path_.string() << ": " << parsed.problem
                       << "; rebuilding";
    rewrite_ = true;
  }
  size_t loaded = 0;
  for (auto& [key, blob] : parsed.records) {
    ++loaded;
    if (!dirty_.count(key)) records_[key] = std::move(blob);
  }
  return loaded;
}

std::filesystem::path ProgramCache::disk_store_path() const {
  std::lock_guard<std::mutex> lock(records_mu_);
  return store_path_;
}

std::optional<std::string> ProgramCache::find_record(std::string_view key) const {
  std::lock_guard<std::mutex> lock(records_mu_);
  if (auto it = records_.find(std::string(key)); it != records_.end()) return it->second;
  return std::nullopt;
}

void ProgramCache::put_record(std::string key, std::string blob) {
  HYRT_CHECK(key.size() <= kMaxKeyBytes && blob.size() <= kMaxBlobBytes, kInvalidArgument,
             "program cache record '", key.substr(0, 80), "' is too large (", key.size(), " + ",
             blob.size(), " bytes)");
  std::lock_guard<std::mutex> lock(records_mu_);
  dirty_.insert(key);
  records_[std::move(key)] = std::move(blob);
}

size_t ProgramCache::record_count() const {
  std::lock_guard<std::mutex> lock(records_mu_);
  return records_.size();
}

bool ProgramCache::flush() {
  std::lock_guard<std::mutex> lock(records_mu_);
  return flush_locked();
}

bool ProgramCache::flush_locked() {
  if (store_path_.empty() || (dirty_.empty() && !rewrite_)) return true;
  auto warn = [&](const std::string& why) {
    if (!warned_write_) {
      HYRT_LOG(kWarning) << "program cache: " << why << "; records stay in memory only";
    }
    warned_write_ = true;
    return false;
  };
  std::error_code ec;
  std::filesystem::create_directories(store_path_.parent_path(), ec);
  if (ec)
    return warn(str_cat("cannot create ", store_path_.parent_path().string(), ": ", ec.message()));

  const FileLock file_lock(store_path_.string() + ".lock");
  // Merge what other processes wrote since we loaded; our own new records win.
  std::string error;
  if (const auto file = read_file(store_path_, &error)) {
    Parsed parsed = parse_store(*file, signature_);
    for (auto& [key, blob] : parsed.records)
      if (!dirty_.count(key)) records_[key] = std::move(blob);
  }
  std::string bytes = header_bytes(signature_);
  // Sorted, so the same records always make the same file.
  std::vector<const std::pair<const std::string, std::string>*> sorted;
  for (const auto& r : records_)
    sorted.push_back(&r);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  for (const auto* r : sorted)
    append_record(bytes, r->first, r->second);
  if (const std::string err = write_atomically(store_path_, bytes); !err.empty()) return warn(err);
  dirty_.clear();
  rewrite_ = false;
  return true;
}

}  // namespace hyrt::backend

#include "weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "weights/json_text.h"

namespace hyrt::weights {
namespace {

using nlohmann::json;

struct DTypeName {
  std::string_view name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16}, {"I8", DType::kS8},
    {"U8", DType::kU8},   {"I32", DType::kS32}, {"I64", DType::kS64},
};
// Valid safetensors dtypes that hyrt does not handle: reported as kUnsupported rather
// than as a malformed file, so the user learns the file is fine but hyrt is not.
constexpr std::string_view kKnownUnsupported[] = {"F64",     "BOOL",    "I16",     "U16",
                                                  "U32",     "U64",     "F8_E4M3", "F8_E5M2",
                                                  "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};

DType parse_st_dtype(const std::string& label, const std::string& tensor, const std::string& s) {
  for (const auto& d : kDTypes)
    if (d.name == s) return d.dtype;
  for (auto u : kKnownUnsupported)
    if (u == s)
      fail(ErrorCode::kUnsupported, label, ": tensor '", tensor, "' has dtype ", s,
           ", which hyrt does not support (supported: F32, F16, BF16, I8, U8, I32, I64)");
  fail(ErrorCode::kInvalidModel, label, ": tensor '", tensor, "' has unknown dtype \"", s, "\"");
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | p[i];
  return v;
}

// Reads a JSON value as a non-negative integer that fits int64 (dims) or uint64 (offsets).
bool as_uint(const json& v, uint64_t max, uint64_t* out) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > max) return false;
    *out = u;
    return true;
  }
  if (v.is_number_integer()) {  // a signed integer: only valid when >= 0
    int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = static_cast<uint64_t>(i);
    return *out <= max;
  }
  return false;
}

}  // namespace

std::string_view safetensors_dtype_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.dtype == t) return d.name;
  fail(ErrorCode::kInternal, "no safetensors name for dtype ", dtype_name(t));
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) ::munmap(mapping_, size_);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->label_ = path.string();
  std::error_code ec;
  auto st = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(st)) fail(ErrorCode::kNotFound, f->label_, ": no such file");
  if (std::filesystem::is_directory(st))
    fail(ErrorCode::kInvalidModel, f->label_, ": is a directory, not a safetensors file");
  // A FIFO would block in open() and a device such as /dev/zero never ends: only regular
  // files are mapped.
  require_regular_file(path);

  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::kIo, f->label_, ": cannot open: ", std::strerror(errno));
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) {
    int err = errno;
    ::close(fd);
    fail(ErrorCode::kIo, f->label_, ": cannot stat: ", std::strerror(err));
  }
  f->size_ = static_cast<size_t>(sb.st_size);
  if (f->size_ > 0) {
    // MAP_PRIVATE + PROT_READ: views can never write to the file. Pages load lazily, so
    // opening a multi-GB checkpoint costs only the header read.
    void* m = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      // ENOMEM: the address space (ulimit -v) or the kernel's map count ran out.
      if (err == ENOMEM) fail_out_of_memory(str_cat("mapping ", f->label_), f->size_);
      fail(ErrorCode::kIo, f->label_, ": cannot mmap ", f->size_, " bytes: ", std::strerror(err));
    }
    f->mapping_ = m;
    f->base_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);  // the mapping keeps the file referenced
  f->parse();
  return f;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::from_bytes(std::vector<uint8_t> bytes,
                                                             std::string label) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->label_ = std::move(label);
  f->owned_ = std::move(bytes);
  f->base_ = f->owned_.data();
  f->size_ = f->owned_.size();
  f->parse();
  return f;
}

void SafetensorsFile::parse() {
  const std::string& L = label_;
  HYRT_CHECK(size_ >= 8, kInvalidModel, L, ": truncated safetensors file: ", size_,
             " bytes, shorter than the 8-byte header length");
  const uint64_t header_len = read_le64(base_);
  HYRT_CHECK(header_len <= kMaxHeaderBytes, kInvalidModel, L, ": header length ", header_len,
             " bytes is absurd (limit ", kMaxHeaderBytes, "); not a safetensors file?");
  HYRT_CHECK(header_len <= size_ - 8, kInvalidModel, L, ": header length ", header_len,
             " runs past the end of the file (", size_, " bytes): truncated file?");
  data_start_ = 8 + header_len;
  const uint64_t data_size = size_ - data_start_;
  const char* hbegin = reinterpret_cast<const char*>(base_ + 8);
  const char* hend = hbegin + header_len;

  // One iterative pass bounds the nesting depth (nlohmann recurses per level) and counts
  // the top-level keys: nlohmann keeps the last of duplicate keys silently, and a
  // duplicated tensor name is a malformed file. (A parse callback could see each key, but
  // nlohmann's callback parser rescans the parent object at every closing brace: quadratic
  // in the number of tensors.)
  const JsonScan scan = scan_json(std::string_view(hbegin, header_len));
  HYRT_CHECK(!scan.depth_exceeded, kInvalidModel, L, ": header JSON is nested deeper than ",
             kMaxJsonDepth, " levels (at byte ", 8 + scan.stop_offset,
             "); not a safetensors file?");
  HYRT_CHECK(scan.top_level_keys <= kMaxTensors, kInvalidModel, L, ": header has ",
             scan.top_level_keys, " entries, more than the ", kMaxTensors,
             " hyrt accepts; not a model checkpoint?");
  json header;
  try {
    header = json::parse(hbegin, hend);
  } catch (const json::exception& e) {
    fail(ErrorCode::kInvalidModel, L, ": header is not valid JSON: ", excerpt(e.what(), 200));
  }
  HYRT_CHECK(header.is_object(), kInvalidModel, L, ": header is not a JSON object (found ",
             header.type_name(), ")");
  if (scan.top_level_keys != header.size()) {
    // Rare and already an error: find which name repeats by reading the keys in order.
    std::unordered_set<std::string> seen;
    std::string duplicate = "?";
    auto on_event = [&](int depth, json::parse_event_t event, json& parsed) {
      if (event == json::parse_event_t::key && depth == 1 && duplicate == "?" &&
          !seen.insert(parsed.get<std::string>()).second)
        duplicate = parsed.get<std::string>();
      return depth == 0;  // keep nothing below the top: no rescans, nothing built
    };
    (void)json::parse(hbegin, hend, on_event, /*allow_exceptions=*/false);
    fail(ErrorCode::kInvalidModel, L, ": duplicate tensor name '", excerpt(duplicate),
         "' in the header");
  }

  tensors_.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      HYRT_CHECK(entry.is_object(), kInvalidModel, L, ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        HYRT_CHECK(v.is_string(), kInvalidModel, L, ": __metadata__ value for '", excerpt(k),
                   "' is not a string");
        metadata_.emplace(k, v.get<std::string>());
      }
      continue;
    }
    const std::string where = str_cat(L, ": tensor '", excerpt(name), "'");
    HYRT_CHECK(entry.is_object(), kInvalidModel, where, ": entry is not an object");
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    HYRT_CHECK(dt != entry.end(), kInvalidModel, where, ": missing \"dtype\"");
    HYRT_CHECK(sh != entry.end(), kInvalidModel, where, ": missing \"shape\"");
    HYRT_CHECK(off != entry.end(), kInvalidModel, where, ": missing \"data_offsets\"");
    HYRT_CHECK(dt->is_string(), kInvalidModel, where, ": \"dtype\" is not a string");
    HYRT_CHECK(sh->is_array(), kInvalidModel, where, ": \"shape\" is not an array");
    HYRT_CHECK(off->is_array() && off->size() == 2, kInvalidModel, where,
               ": \"data_offsets\" is not an array [begin, end]");

    TensorInfo info;
    info.name = name;
    info.dtype = parse_st_dtype(L, excerpt(name), excerpt(dt->get<std::string>()));
    HYRT_CHECK(sh->size() <= static_cast<size_t>(Shape::kMaxRank), kUnsupported, where, ": rank ",
               sh->size(), " exceeds hyrt's maximum of ", Shape::kMaxRank);
    // Element count with overflow checks: a hostile shape such as [2^40, 2^40] must be
    // rejected here, not wrap around into a small byte count.
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      uint64_t dim = 0;
      HYRT_CHECK(as_uint(d, std::numeric_limits<int64_t>::max(), &dim), kInvalidModel, where,
                 ": shape ", json_excerpt(*sh),
                 " has a dimension that is not a non-negative integer");
      info.shape.push_back(static_cast<int64_t>(dim));
      if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
    }
    uint64_t expected_bytes = 0;
    overflow = overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
               __builtin_mul_overflow(numel, dtype_size(info.dtype), &expected_bytes);
    HYRT_CHECK(!overflow, kInvalidModel, where, ": shape ", json_excerpt(*sh),
               " overflows: its element count does not fit 64 bits");

    uint64_t begin = 0, end = 0;
    HYRT_CHECK(as_uint((*off)[0], std::numeric_limits<uint64_t>::max(), &begin) &&
                   as_uint((*off)[1], std::numeric_limits<uint64_t>::max(), &end),
               kInvalidModel, where, ": data_offsets ", json_excerpt(*off),
               " are not non-negative integers");
    HYRT_CHECK(begin <= end, kInvalidModel, where, ": data_offsets ", json_excerpt(*off),
               " have begin > end");
    HYRT_CHECK(end <= data_size, kInvalidModel, where, ": data_offsets ", json_excerpt(*off),
               " lie outside the data section (", data_size, " bytes): truncated file?");
    HYRT_CHECK(end - begin == expected_bytes, kInvalidModel, where, ": byte length ", end - begin,
               " does not match ", dtype_name(info.dtype), " x ", info.shape.to_string(), " = ",
               expected_bytes, " bytes");
    info.offset = begin;
    info.bytes = expected_bytes;
    tensors_.push_back(std::move(info));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.offset != b.offset) return a.offset < b.offset;
    return a.name < b.name;
  });
  // After sorting by offset, two non-empty tensors overlap iff one starts before the
  // furthest end seen so far. Zero-sized tensors occupy no bytes and may sit anywhere.
  const TensorInfo* furthest = nullptr;
  for (const auto& t : tensors_) {
    if (t.bytes == 0) continue;
    if (furthest && t.offset < furthest->offset + furthest->bytes)
      fail(ErrorCode::kInvalidModel, L, ": tensors '", furthest->name, "' [", furthest->offset,
           ", ", furthest->offset + furthest->bytes, ") and '", t.name, "' [", t.offset, ", ",
           t.offset + t.bytes, ") overlap");
    if (!furthest || t.offset + t.bytes > furthest->offset + furthest->bytes) furthest = &t;
  }
  index_.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i)
    index_.emplace(tensors_[i].name, i);

  // Views are aligned for their element type (see the header): a tensor the file stores at an
  // address its type cannot be read from is copied once, here.
  size_t copied_bytes = 0;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TensorInfo& t = tensors_[i];
    const uint8_t* at = base_ + data_start_ + t.offset;
    if (t.bytes == 0 || reinterpret_cast<uintptr_t>(at) % dtype_size(t.dtype) == 0) continue;
    AlignedBuffer copy(t.bytes, str_cat(L, ": an aligned copy of '", t.name, "'"));
    std::memcpy(copy.data(), at, t.bytes);
    aligned_copies_.emplace(i, std::move(copy));
    copied_bytes += t.bytes;
  }
  if (!aligned_copies_.empty())
    HYRT_LOG(kInfo) << L << ": " << aligned_copies_.size()
                    << " tensors are not aligned for their types in the file; reading copies "
                       "of them ("
                    << copied_bytes << " bytes)";
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

TensorView SafetensorsFile::view(std::string_view name) const {
  const TensorInfo* info = find(name);
  HYRT_CHECK(info, kNotFound, label_, ": no tensor named '", name, "'");
  return view(*info);
}

size_t SafetensorsFile::drop_pages(const TensorInfo& info) const {
  return drop_pages(info, 0, info.bytes);
}

size_t SafetensorsFile::drop_pages(const TensorInfo& info, uint64_t offset, uint64_t bytes) const {
  offset = std::min(offset, info.bytes);
  bytes = std::min(bytes, info.bytes - offset);
  if (!mapping_ || bytes == 0 || aligned_copies_.count(index_of(info))) return 0;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(base_ + data_start_ + info.offset + offset);
  const uintptr_t end = begin + bytes;
  // Only pages wholly inside the tensor: a neighbour's bytes stay resident.
  const uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
  if (last <= first) return 0;
  // Never fails on a valid mapping range; if it did, the pages simply stay resident.
  if (::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED) != 0) return 0;
  return last - first;
}

TensorView SafetensorsFile::view(const TensorInfo& info) const {
  TensorView v;
  // const_cast: TensorView has a mutable pointer, but the memory is read-only (see header).
  auto copy = aligned_copies_.find(index_of(info));
  v.data = copy != aligned_copies_.end()
               ? const_cast<void*>(static_cast<const void*>(copy->second.data()))
               : const_cast<uint8_t*>(base_ + data_start_ + info.offset);
  v.dtype = info.dtype;
  v.shape = info.shape;
  return v;
}

// ---- writer ----

namespace {

struct Layout {
  std::string header;             // padded JSON
  std::vector<uint64_t> offsets;  // of each tensor, relative to the data section
  uint64_t data_size = 0;
};

constexpr uint64_t kTensorAlign = 8;

uint64_t tensor_bytes(const TensorDecl& d) {
  return static_cast<uint64_t>(d.shape.numel()) * dtype_size(d.dtype);
}

Layout plan_layout(const std::vector<TensorDecl>& tensors,
                   const std::map<std::string, std::string>& metadata, std::string_view who) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = h["__metadata__"];
    m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata)
      m[k] = v;
  }
  Layout out;
  std::unordered_set<std::string_view> names;
  uint64_t offset = 0;
  for (const TensorDecl& t : tensors) {
    HYRT_CHECK(t.name != "__metadata__", kInvalidArgument, who,
               ": '__metadata__' is reserved and cannot name a tensor");
    HYRT_CHECK(names.insert(t.name).second, kInvalidArgument, who, ": duplicate tensor name '",
               t.name, "'");
    const uint64_t bytes = tensor_bytes(t);
    offset = (offset + kTensorAlign - 1) / kTensorAlign * kTensorAlign;
    auto& e = h[t.name];
    e["dtype"] = std::string(safetensors_dtype_name(t.dtype));
    e["shape"] = nlohmann::ordered_json::array();
    for (int64_t d : t.shape.dims())
      e["shape"].push_back(d);
    e["data_offsets"] = {offset, offset + bytes};
    out.offsets.push_back(offset);
    offset += bytes;
  }
  out.data_size = offset;
  out.header = h.dump();
  // Pad so the data section (at 8 + header length) starts 8-byte aligned.
  out.header.append((8 - out.header.size() % 8) % 8, ' ');
  return out;
}

void append_le64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Declarations of views, checking each has data.
std::vector<TensorDecl> decls_of(const std::vector<std::pair<std::string, TensorView>>& tensors,
                                 std::string_view who) {
  std::vector<TensorDecl> decls;
  decls.reserve(tensors.size());
  for (const auto& [name, view] : tensors) {
    HYRT_CHECK(view.bytes() == 0 || view.data, kInvalidArgument, who, ": tensor '", name,
               "' has no data");
    decls.push_back({name, view.dtype, view.shape});
  }
  return decls;
}

// pwrite() all of [p, p + n) at `offset`, retrying short writes and EINTR. 0 or errno.
int pwrite_all(int fd, const void* p, uint64_t n, uint64_t offset) {
  const auto* b = static_cast<const uint8_t*>(p);
  while (n > 0) {
    // Linux transfers at most ~2 GiB per call; ask for 1 GiB at a time.
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1ull << 30));
    const ssize_t w = ::pwrite(fd, b, chunk, static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    b += w;
    n -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
  return 0;
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(std::filesystem::path path, std::vector<TensorDecl> tensors,
                                     const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), tensors_(std::move(tensors)) {
  const Layout layout = plan_layout(tensors_, metadata, "write_safetensors");
  const uint64_t data_start = 8 + layout.header.size();
  offsets_.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    offsets_.push_back(data_start + layout.offsets[i]);
    index_.emplace(tensors_[i].name, i);
  }
  written_.assign(tensors_.size(), false);
  file_size_ = data_start + layout.data_size;

  tmp_ = path_;
  tmp_ += ".tmp";
  // Never write into an existing file: a stale temporary (or a link someone made under that
  // name) is unlinked, which leaves any other name of its data intact, and the new one is
  // created exclusively.
  ::unlink(tmp_.c_str());
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  HYRT_CHECK(fd_ >= 0, kIo, path_.string(), ": cannot create: ", std::strerror(errno));
  std::vector<uint8_t> head;
  append_le64(head, layout.header.size());
  head.insert(head.end(), layout.header.begin(), layout.header.end());
  // Sizing the file first makes the alignment padding read as zeros (a hole) without
  // writing it, and lets write() run in any order.
  int err = ::ftruncate(fd_, static_cast<off_t>(file_size_)) == 0 ? 0 : errno;
  if (!err) err = pwrite_all(fd_, head.data(), head.size(), 0);
  if (err) {
    abandon();
    fail(ErrorCode::kIo, path_.string(), ": write failed: ", std::strerror(err));
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  abandon();
}

void SafetensorsWriter::abandon() noexcept {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  std::error_code ec;
  std::filesystem::remove(tmp_, ec);
}

void SafetensorsWriter::write(std::string_view name, const void* data) {
  HYRT_CHECK(fd_ >= 0, kInvalidArgument, path_.string(), ": write of '", name,
             "' after the writer finished or failed");
  auto it = index_.find(name);
  HYRT_CHECK(it != index_.end(), kInvalidArgument, path_.string(), ": tensor '", name,
             "' was not declared");
  const size_t i = it->second;
  HYRT_CHECK(!written_[i], kInvalidArgument, path_.string(), ": tensor '", name, "' written twice");
  const uint64_t bytes = tensor_bytes(tensors_[i]);
  HYRT_CHECK(bytes == 0 || data, kInvalidArgument, path_.string(), ": tensor '", name,
             "' has no data");
  if (const int err = bytes ? pwrite_all(fd_, data, bytes, offsets_[i]) : 0) {
    abandon();
    fail(ErrorCode::kIo, path_.string(), ": write of tensor '", name,
         "' failed: ", std::strerror(err));
  }
  written_[i] = true;
  bytes_written_ += bytes;
}

void SafetensorsWriter::finish() {
  HYRT_CHECK(fd_ >= 0, kInvalidArgument, path_.string(),
             ": finish() after the writer finished or failed");
  for (size_t i = 0; i < tensors_.size(); ++i)
    HYRT_CHECK(written_[i], kInvalidArgument, path_.string(), ": tensor '", tensors_[i].name,
               "' was declared but never written");
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int err = errno;
    std::error_code ec;
    std::filesystem::remove(tmp_, ec);
    fail(ErrorCode::kIo, path_.string(), ": write failed: ", std::strerror(err));
  }
  std::error_code ec;
  std::filesystem::rename(tmp_, path_, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp_, ignored);
    fail(ErrorCode::kIo, path_.string(), ": cannot rename the temporary file: ", ec.message());
  }
}

std::vector<uint8_t> serialize_safetensors(
    const std::vector<std::pair<std::string, TensorView>>& tensors,
    const std::map<std::string, std::string>& metadata) {
  Layout layout =
      plan_layout(decls_of(tensors, "write_safetensors"), metadata, "write_safetensors");
  std::vector<uint8_t> out;
  checked_reserve(out, 8 + layout.header.size() + layout.data_size, "a safetensors file in memory");
  append_le64(out, layout.header.size());
  out.insert(out.end(), layout.header.begin(), layout.header.end());
  const size_t data_start = out.size();
  out.resize(data_start + layout.data_size, 0);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& v = tensors[i].second;
    if (v.bytes()) std::memcpy(out.data() + data_start + layout.offsets[i], v.data, v.bytes());
  }
  return out;
}

void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, TensorView>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  SafetensorsWriter w(path, decls_of(tensors, "write_safetensors"), metadata);
  for (const auto& [name, view] : tensors)
    w.write(name, view.data);
  w.finish();
}

}  // namespace hyrt::weights

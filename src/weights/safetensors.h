// safetensors reader (mmap, zero-copy) and writer.
//
// File layout (https://github.com/huggingface/safetensors, format only):
//   [u64 little-endian N] [N bytes of JSON header] [data section]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]}, with
// offsets relative to the start of the data section, plus an optional "__metadata__"
// object of string -> string.
//
// Validation: open()/from_bytes() check the whole header before returning — sizes,
// JSON types, dtypes, shape overflow, offsets inside the data section, byte lengths that
// match dtype x shape, no overlapping tensors, no duplicate names. A file that passes can
// be viewed without further bounds checks. Failures throw hyrt::Error whose message
// starts with the file's label (path) and names the tensor and the problem:
//   kNotFound     the path does not exist
//   kIo           it exists but cannot be opened/mapped
//   kInvalidModel the bytes are not a valid safetensors file
//   kUnsupported  a valid dtype that hyrt does not handle (F64, BOOL, F8_*, ...)
// Holes between tensors are tolerated (some writers pad); overlaps are not.
//
// Ownership, lifetime, thread safety: a SafetensorsFile owns its mapping (or its byte
// copy). TensorViews returned by view() point into it and stay valid while the
// SafetensorsFile lives; they point at read-only memory (writing through them faults —
// the mapping is PROT_READ). After construction the object is immutable: every const
// method is safe to call from any number of threads.
//
// Alignment: the data section starts at 8 + N. Writers (ours included) pad N to a
// multiple of 8 and align each tensor to 8 bytes, but a foreign (careless or hostile) file
// may not. A view's data pointer IS aligned for its element type: a tensor the file stores
// at an address that is not is copied once at open into memory the SafetensorsFile owns
// (logged once, at info level, with the count), and view() returns the copy; drop_pages() leaves
// such a copy alone. Readers may dereference typed pointers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "core/dtype.h"
#include "core/shape.h"
#include "core/tensor.h"

namespace hyrt::weights {

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;   // == numel * dtype_size(dtype)
};

class SafetensorsFile {
 public:
  // Largest header accepted; real SD checkpoints have headers of ~200 KB.
  static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
  // Most entries (tensors + __metadata__) accepted; SDXL with int8 scales has ~5,000.
  static constexpr size_t kMaxTensors = 100000;

  // Maps `path` read-only (MAP_PRIVATE) and validates it fully, in time linear in the
  // header's size; a path that is not a regular file (a FIFO, /dev/zero) is refused before
  // it is opened.
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  // Same validation over an owned byte buffer; `label` names it in messages.
  static std::unique_ptr<SafetensorsFile> from_bytes(std::vector<uint8_t> bytes, std::string label);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  // All tensors, in file order (ascending data offset; ties — zero-sized tensors — by name).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr if absent.
  const TensorInfo* find(std::string_view name) const;
  // Zero-copy view; throws kNotFound naming the file and the tensor if absent.
  TensorView view(std::string_view name) const;
  // `info` must be one of this file's tensors().
  TensorView view(const TensorInfo& info) const;
  // Drops the resident pages lying wholly inside `info`'s bytes (madvise MADV_DONTNEED on
  // the read-only private mapping: the next access reads them back from the file). A
  // no-op for from_bytes() files. Returns the bytes dropped.
  size_t drop_pages(const TensorInfo& info) const;
  // The same for the bytes [offset, offset + bytes) of `info`'s (clamped to them): a part of
  // a tensor, e.g. one of the row ranges a split weight views.
  size_t drop_pages(const TensorInfo& info, uint64_t offset, uint64_t bytes) const;
  // The "__metadata__" entries (empty if the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The path (or label) used in messages.
  const std::string& label() const { return label_; }
  // Size of the whole file in bytes.
  size_t file_size() const { return size_; }
  // Start of the data section (8 + header length).
  uint64_t data_start() const { return data_start_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };

  SafetensorsFile() = default;
  void parse();  // validates base_/size_ and fills the tables; throws on any problem

  std::string label_;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;
  void* mapping_ = nullptr;     // non-null when base_ is an mmap we must unmap
  std::vector<uint8_t> owned_;  // the bytes, for from_bytes()
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> index_;
  std::map<std::string, std::string> metadata_;
  // By index into tensors_: aligned copies of the tensors stored misaligned (see the header).
  std::unordered_map<size_t, AlignedBuffer> aligned_copies_;
  size_t index_of(const TensorInfo& info) const {
    return static_cast<size_t>(&info - tensors_.data());
  }
};

// A tensor a writer will store: its name, dtype and shape (the bytes come later).
struct TensorDecl {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
};

// Streams a safetensors file whose tensor list is known up front but whose data is
// produced one tensor at a time — so writing a multi-GB checkpoint never holds more than
// one tensor in memory. The layout is fixed at construction (same as write_safetensors:
// JSON header padded to a multiple of 8, tensors 8-byte aligned in declaration order);
// write() then puts each tensor's bytes at its offset.
//
// The bytes go to `<path>.tmp` (in the target folder, so the rename is atomic; an existing
// file of that name is unlinked and a new one created exclusively, so no existing file is
// ever written into), renamed to `path` by finish(), so a crash or an exception never leaves
// a half-written file under the final name; a writer destroyed before finish() removes the
// temporary.
//
// Errors: the constructor throws kInvalidArgument for a duplicate name or one equal to
// "__metadata__", kIo (naming the path) if the temporary cannot be created; write() throws
// kInvalidArgument for an unknown or already written name, kIo if the write fails;
// finish() throws kInvalidArgument if a declared tensor was never written, kIo if closing
// or renaming fails. After any kIo the temporary is removed and the writer is dead.
//
// Not thread-safe: one thread drives a writer.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path path, std::vector<TensorDecl> tensors,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Copies numel x dtype_size bytes from `data` (may be null for a zero-sized tensor) to
  // the tensor `name`'s place. Any order; each declared tensor exactly once.
  void write(std::string_view name, const void* data);
  // Checks every tensor was written, closes the temporary and renames it to the path.
  void finish();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorDecl>& tensors() const { return tensors_; }
  // Size of the finished file in bytes (known from construction).
  uint64_t file_size() const { return file_size_; }
  // Bytes of tensor data written so far (for progress reports).
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  void abandon() noexcept;  // closes and removes the temporary

  std::filesystem::path path_;
  std::filesystem::path tmp_;
  std::vector<TensorDecl> tensors_;
  std::vector<uint64_t> offsets_;  // absolute file offsets of each tensor's bytes
  std::vector<bool> written_;
  std::unordered_map<std::string_view, size_t> index_;  // views into tensors_' names
  uint64_t file_size_ = 0;
  uint64_t bytes_written_ = 0;
  int fd_ = -1;
};

// Writes a safetensors file: 8-byte LE header length, JSON header padded with spaces to a
// multiple of 8, then each tensor's bytes at 8-byte-aligned offsets in the given order.
// Names must be unique and not "__metadata__" (kInvalidArgument). Throws kIo on failure.
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<std::pair<std::string, TensorView>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Same, into memory (used by tests and to build fuzzing seeds).
std::vector<uint8_t> serialize_safetensors(
    const std::vector<std::pair<std::string, TensorView>>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// safetensors dtype string ("F16", ...) for a DType.
std::string_view safetensors_dtype_name(DType t);

}  // namespace hyrt::weights

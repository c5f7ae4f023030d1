// AlignedBuffer: an owning, move-only, 64-byte-aligned block of host memory.
// Allocation failure throws hyrt::Error(kOutOfMemory) naming the size and the purpose.
#pragma once

#include <cstddef>
#include <string_view>

namespace hyrt {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 64;
  // Buffers of at least this many bytes are anonymous memory mappings (page-aligned, so
  // kAlignment holds), returned to the system when freed; smaller ones come from malloc.
  static constexpr size_t kMapThreshold = size_t{1} << 20;

  AlignedBuffer() = default;
  // Allocates `bytes` (rounded up to the alignment). `what` names the buffer in errors.
  explicit AlignedBuffer(size_t bytes, std::string_view what = "buffer");
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& o) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <class T>
  T* as() {
    return static_cast<T*>(data_);
  }
  template <class T>
  const T* as() const {
    return static_cast<const T*>(data_);
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  void release() noexcept;

  void* data_ = nullptr;
  size_t size_ = 0;
  size_t mapped_bytes_ = 0;  // > 0: data_ is an mmap of this many bytes
};

}  // namespace hyrt

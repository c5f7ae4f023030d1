// AlignedBuffer: an owning, move-only, 64-byte-aligned block of host memory.
// Allocation failure throws hyrt::Error(kOutOfMemory) naming the size and the purpose.
#pragma once

#include <cstddef>
#include <string_view>

namespace hyrt {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 64;

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
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace hyrt

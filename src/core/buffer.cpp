#include "core/buffer.h"

#include <cstdlib>
#include <utility>

#include "core/error.h"

namespace hyrt {

AlignedBuffer::AlignedBuffer(size_t bytes, std::string_view what) : size_(bytes) {
  if (bytes == 0) return;
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  HYRT_CHECK(rounded >= bytes, kOutOfMemory, "cannot allocate ", bytes, " bytes for ", what);
  data_ = std::aligned_alloc(kAlignment, rounded);
  HYRT_CHECK(data_ != nullptr, kOutOfMemory, "out of memory allocating ", bytes, " bytes for ",
             what);
}

AlignedBuffer::~AlignedBuffer() { std::free(data_); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    std::free(data_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

}  // namespace hyrt

#include "core/buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <utility>

#include "core/alloc.h"

namespace hyrt {

AlignedBuffer::AlignedBuffer(size_t bytes, std::string_view what) : size_(bytes) {
  if (bytes == 0) return;
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded < bytes) fail_out_of_memory(what, bytes);
  if (rounded >= kMapThreshold) {
    // Large buffers (packed weights, arenas) are their own mappings, so freeing one returns
    // its pages to the system at once. From malloc they would come from the heap once glibc's
    // dynamic mmap threshold has risen past their size (it follows the largest freed mapping,
    // up to 32 MiB), and a freed stage's gigabytes of packed weights would stay resident.
    void* p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail_out_of_memory(what, bytes);
    data_ = p;
    mapped_bytes_ = rounded;
    return;
  }
  data_ = std::aligned_alloc(kAlignment, rounded);
  if (data_ == nullptr) fail_out_of_memory(what, bytes);
}

void AlignedBuffer::release() noexcept {
  if (mapped_bytes_ > 0)
    munmap(data_, mapped_bytes_);
  else
    std::free(data_);
  data_ = nullptr;
  size_ = 0;
  mapped_bytes_ = 0;
}

AlignedBuffer::~AlignedBuffer() {
  release();
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      mapped_bytes_(std::exchange(o.mapped_bytes_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    mapped_bytes_ = std::exchange(o.mapped_bytes_, 0);
  }
  return *this;
}

}  // namespace hyrt

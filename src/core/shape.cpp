#include "core/shape.h"

#include "core/error.h"

namespace hyrt {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims)) {}

Shape::Shape(std::span<const int64_t> dims) {
  HYRT_CHECK(dims.size() <= kMaxRank, kUnsupported, "rank ", dims.size(), " exceeds ", kMaxRank);
  for (int64_t d : dims) dims_[rank_++] = d;
}

void Shape::push_back(int64_t d) {
  HYRT_CHECK(rank_ < kMaxRank, kUnsupported, "rank exceeds ", kMaxRank);
  dims_[rank_++] = d;
}

int64_t checked_mul(int64_t a, int64_t b) {
  HYRT_CHECK(a >= 0 && b >= 0, kInvalidArgument, "negative dimension");
  int64_t r;
  HYRT_CHECK(!__builtin_mul_overflow(a, b, &r), kInvalidArgument, "size overflows int64");
  return r;
}

int64_t Shape::numel() const { return numel(0, rank_); }

int64_t Shape::numel(int begin, int end) const {
  int64_t n = 1;
  for (int i = begin; i < end; ++i) n = checked_mul(n, dims_[i]);
  return n;
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

std::string Shape::to_string() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  return s + "]";
}

}  // namespace hyrt

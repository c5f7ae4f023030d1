// Shape: up to kMaxRank int64 dimensions stored inline (no heap), row-major (the last
// dimension is contiguous). Element counts are overflow-checked: a hostile file cannot
// make hyrt compute a wrapped-around size.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

namespace hyrt {

class Shape {
 public:
  static constexpr int kMaxRank = 8;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t& operator[](int i) { return dims_[i]; }
  // Negative indices count from the back: dim(-1) is the innermost dimension.
  int64_t dim(int i) const { return dims_[i < 0 ? i + rank_ : i]; }
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + rank_; }
  std::span<const int64_t> dims() const { return {dims_.data(), static_cast<size_t>(rank_)}; }

  void push_back(int64_t d);
  // Product of all dimensions (1 for rank 0). Throws kInvalidArgument on overflow or a
  // negative dimension.
  int64_t numel() const;
  // Product of dimensions [begin, end).
  int64_t numel(int begin, int end) const;

  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }
  std::string to_string() const;  // "[2, 77, 768]"

 private:
  std::array<int64_t, kMaxRank> dims_{};
  int rank_ = 0;
};

// a * b, throwing kInvalidArgument on int64 overflow or negative operands.
int64_t checked_mul(int64_t a, int64_t b);

}  // namespace hyrt

#include "core/dtype.h"

#include "core/error.h"

namespace hyrt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kS8:
      return 1;
    case DType::kU8:
      return 1;
    case DType::kS32:
      return 4;
    case DType::kS64:
      return 8;
    case DType::kS8Rows:
      return 1;
  }
  HYRT_ASSERT(false, "unknown dtype ", static_cast<int>(t));
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kS8:
      return "s8";
    case DType::kU8:
      return "u8";
    case DType::kS32:
      return "s32";
    case DType::kS64:
      return "s64";
    case DType::kS8Rows:
      return "s8rows";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t :
       {DType::kF32, DType::kF16, DType::kBF16, DType::kS8, DType::kU8, DType::kS32, DType::kS64}) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

int64_t s8rows_scales_offset(int64_t numel) {
  return (numel + 15) / 16 * 16;
}

size_t storage_bytes(DType t, const Shape& shape) {
  const int64_t n = shape.numel();
  if (t != DType::kS8Rows) return static_cast<size_t>(n) * dtype_size(t);
  HYRT_CHECK(shape.rank() >= 1, kInvalidArgument, "an s8rows tensor has rows: rank 0 given");
  const int64_t k = shape.dim(-1);
  const int64_t rows = k > 0 ? n / k : 0;
  return static_cast<size_t>(s8rows_scales_offset(n)) + static_cast<size_t>(rows) * sizeof(float);
}

bool dtype_is_float(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

}  // namespace hyrt

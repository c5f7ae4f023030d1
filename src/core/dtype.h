// Element types. Activations are f32 (or bf16) on the host and f16 on CUDA; weights may
// be stored f32/f16/bf16 or as "8-bit S" int8 (s8) with per-row f32 scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace hyrt {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kS8,
  kU8,
  kS32,
  kS64,
};

// Bytes per element.
size_t dtype_size(DType t);
// Short lower-case name: "f32", "f16", "bf16", "s8", "u8", "s32", "s64".
std::string_view dtype_name(DType t);
// Parses dtype_name() output; nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name);
bool dtype_is_float(DType t);

}  // namespace hyrt

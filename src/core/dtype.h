// Element types. Activations are f32 (or bf16) on the host and f16 on CUDA; weights may
// be stored f32/f16/bf16 or as "8-bit S" int8 (s8) with per-row f32 scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "core/shape.h"

namespace hyrt {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kS8,
  kU8,
  kS32,
  kS64,
  // Activations only, never a weight file's: "8-bit S" activations, a linear's or conv's operand
  // quantized once by the node before it (ir::NormAttrs::quantize_output) instead of by each
  // consumer. A tensor of shape [..., K] holds rows = numel / K rows of K s8 values, dense
  // (ld = K), then, at byte offset s8rows_scales_offset(numel), rows f32 scales:
  // x[r, k] ≈ q[r, k] · scale[r]. The rule is the W8A8 activation quantizer's (symmetric:
  // scale = bound / 127, backend/cuda/cuda_kernels.h, launch_quantize_rows_s8), the bound being
  // each row's absmax — or, from a group norm, its sample's (every row of a sample then carries
  // the same scale: ir::NormAttrs::quantize_output).
  kS8Rows,
};

// Bytes per element (kS8Rows: of its s8 values; storage_bytes counts its scales too).
size_t dtype_size(DType t);
// Bytes of a dense tensor of `t` and `shape`: numel · dtype_size(t), and for kS8Rows its row
// scales after the values. Throws kInvalidArgument for a kS8Rows shape of rank 0.
size_t storage_bytes(DType t, const Shape& shape);
// kS8Rows: the byte offset of the row scales from the tensor's start (numel rounded up to 16,
// so that the scales stay 16-byte aligned wherever the values are).
int64_t s8rows_scales_offset(int64_t numel);
// Short lower-case name: "f32", "f16", "bf16", "s8", "u8", "s32", "s64", "s8rows".
std::string_view dtype_name(DType t);
// Parses dtype_name() output; nullopt for anything else (and for "s8rows", which no file or
// flag may ask for).
std::optional<DType> parse_dtype(std::string_view name);
bool dtype_is_float(DType t);

}  // namespace hyrt

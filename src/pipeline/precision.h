// The arithmetic a run uses, as users choose it (`--precision`, RuntimeOptions::precision):
// one name for every backend and entry point, turned here into the engine's and the model's
// settings.
//
//   f32   float weights multiply in f32; 8-bit S (int8) weights run weight-only (W8) on f32
//         activations. The reference arithmetic.
//   bf16  products on bf16 operands with f32 accumulation (FloatPrecision::kBF16) for float
//         weights, attention and W8's widened int8 weights; activations stay f32 between ops.
//   int8  16/32-bit weights quantized to 8-bit S on load; the text encoders and the UNet run
//         W8A8 (activations quantized per row), the VAE weight-only (ModelOptions::
//         vae_int8_mode), and what stays float runs as under bf16.
//   auto  the fastest that keeps the weights as stored: int8 files run as under int8, float
//         ones as under bf16 (nothing is quantized on load: that changes the picture, so it
//         is asked for by name).
// A backend without bf16 products runs bf16's float products in f32 (the host: without
// AVX-512 BF16 or AMX), and one without int8 dot products runs W8A8 as W8: `auto` therefore
// picks the fastest the machine has. The GPU keeps its own 16-bit arithmetic (f16 operands,
// f32 where a value needs the range) under f32, bf16 and auto.
#pragma once

#include <string>
#include <string_view>

#include "backend/backend.h"

namespace hyrt::pipeline {

enum class Precision { kAuto, kF32, kBF16, kInt8 };

// "auto", "f32", "bf16", "int8" (case-insensitive); throws kInvalidArgument naming the choices.
Precision parse_precision(std::string_view name);
const char* precision_name(Precision precision);

struct PrecisionSettings {
  bool quantize_int8 = false;  // ModelOptions::quantize_int8
  backend::Int8Mode int8_mode = backend::Int8Mode::kW8A8;
  backend::FloatPrecision float_precision = backend::FloatPrecision::kF32;
};
PrecisionSettings precision_settings(Precision precision);

}  // namespace hyrt::pipeline

#include "pipeline/precision.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"

namespace hyrt::pipeline {

Precision parse_precision(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (n == "auto") return Precision::kAuto;
  if (n == "f32" || n == "fp32") return Precision::kF32;
  if (n == "bf16") return Precision::kBF16;
  if (n == "int8") return Precision::kInt8;
  fail(ErrorCode::kInvalidArgument, "unknown precision '", name, "' (auto, f32, bf16 or int8)");
}

const char* precision_name(Precision precision) {
  switch (precision) {
    case Precision::kF32:
      return "f32";
    case Precision::kBF16:
      return "bf16";
    case Precision::kInt8:
      return "int8";
    case Precision::kAuto:
      break;
  }
  return "auto";
}

PrecisionSettings precision_settings(Precision precision) {
  using backend::FloatPrecision;
  using backend::Int8Mode;
  switch (precision) {
    case Precision::kF32:
      return {false, Int8Mode::kW8, FloatPrecision::kF32};
    case Precision::kBF16:
      return {false, Int8Mode::kW8, FloatPrecision::kBF16};
    case Precision::kInt8:
      return {true, Int8Mode::kW8A8, FloatPrecision::kBF16};
    case Precision::kAuto:
      break;
  }
  return {false, Int8Mode::kW8A8, FloatPrecision::kBF16};
}

}  // namespace hyrt::pipeline

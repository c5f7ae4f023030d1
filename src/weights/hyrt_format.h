// The hyrt model file: a whole SD 1.5 model — weights, configs, scheduler config and
// tokenizer — in ONE .safetensors file, with "8-bit S" int8 weights (quantize.h). It is all
// `hyrt generate` needs; `hyrt quantize` writes it, Checkpoint::open reads it.
//
// Layout (format "hyrt-sd15", format_version "1"):
//   tensors
//     <canonical name>          every weight under its canonical name (checkpoint.h), e.g.
//                               `unet.down_blocks.0.resnets.0.conv1.weight`; quantized ones
//                               as I8 (same shape as the source), the rest in their source
//                               dtype (f16 stays f16: nothing is upcast)
//     <canonical name>.scale    F32 [rows] per-row scales, exactly for each I8 weight
//     __tokenizer__.vocab.json               U8 [bytes]: the files' contents, verbatim.
//     __tokenizer__.merges.txt               Tensors rather than metadata strings: the
//     __tokenizer__.tokenizer_config.json    1.5 MB vocabulary stays out of the JSON header
//                                            (no escaping, no header parse cost) and is
//                                            read zero-copy. The config one is optional.
//   __metadata__ (string -> string)
//     format            "hyrt-sd15"
//     format_version    "1"
//     quantization      "8-bit S: symmetric int8, per-output-row f32 scale, least-squares refit"
//     config.text_encoder, config.unet, config.vae   each component's config as JSON text,
//                       diffusers/transformers field names (parse_*_config reads them back)
//     config.scheduler  the scheduler_config.json text, when the source had one
//
// Reading rules (read_hyrt_contents), each failure naming the file and the tensor or key:
//   kUnsupported   `format` is another hyrt architecture ("hyrt-…" ≠ "hyrt-sd15"), or
//                  `format_version` is not "1" (a newer writer: refusing beats misreading)
//   kInvalidModel  `format_version` missing; an I8 tensor without its `.scale`; a `.scale`
//                  without its tensor, or for a tensor that is not I8; a scale that is not
//                  F32, not rank 1, or not one entry per row; a NaN, ±Inf or negative
//                  scale; an I8 tensor of rank < 2; a config missing (for a component that
//                  has weights) or not a JSON object; a malformed scheduler config; a
//                  tokenizer with only one of vocab.json / merges.txt, or a `__tokenizer__`
//                  tensor that is not U8 [n]
// Tensors outside text_encoder./unet./vae. (and not the above) are reported as unexpected
// keys, as for any checkpoint.
//
// Thread safety: pure functions over immutable inputs.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "weights/checkpoint.h"
#include "weights/quantize.h"
#include "weights/safetensors.h"

namespace hyrt::weights {

inline constexpr std::string_view kHyrtFormat = "hyrt-sd15";
inline constexpr std::string_view kHyrtFormatVersion = "1";
inline constexpr std::string_view kHyrtQuantization =
    "8-bit S: symmetric int8, per-output-row f32 scale, least-squares refit";
inline constexpr std::string_view kScaleSuffix = ".scale";
inline constexpr std::string_view kTokenizerPrefix = "__tokenizer__.";

// Metadata keys.
inline constexpr std::string_view kMetaFormat = "format";
inline constexpr std::string_view kMetaFormatVersion = "format_version";
inline constexpr std::string_view kMetaQuantization = "quantization";
inline constexpr std::string_view kMetaSchedulerConfig = "config.scheduler";
// "config.text_encoder", "config.unet", "config.vae".
std::string hyrt_config_key(Component c);

// True if the file's metadata claims to be a hyrt file of any architecture (`format`
// starts with "hyrt-"); read_hyrt_contents() then decides whether this build reads it.
bool is_hyrt_file(const SafetensorsFile& file);

// ---- reading ----

struct HyrtWeight {
  const TensorInfo* tensor = nullptr;  // the weight (name = canonical name)
  Component component = Component::kUNet;
  const TensorInfo* scale = nullptr;  // for I8 weights, else nullptr
};

struct HyrtContents {
  std::vector<HyrtWeight> weights;      // file order
  std::vector<std::string> unexpected;  // tensors that are none of the above
  std::optional<nlohmann::json>
      configs[3];  // by Component; present for each component with weights
  std::optional<std::string> scheduler_config;  // JSON text (validated as a JSON object)
  std::optional<TokenizerFiles> tokenizer;
};

// Validates `file` as a hyrt-sd15 file (rules above) and sorts its tensors. The returned
// pointers point into `file`.
HyrtContents read_hyrt_contents(const SafetensorsFile& file);

// ---- writing ----

struct HyrtWriteOptions {
  int refit_iterations = kDefaultRefitIterations;
  QuantizePolicy policy;
  // Each component's config as JSON text in diffusers field names
  // (models::sd15::*_config_to_json). Required for every component the source has.
  std::optional<std::string> configs[3];
  std::optional<std::string> scheduler_config;
  std::optional<TokenizerFiles> tokenizer;
};

struct HyrtTensorReport {
  std::string name;
  Component component = Component::kUNet;
  DType source_dtype = DType::kF32;
  DType stored_dtype = DType::kF32;
  Shape shape;
  bool quantized = false;
  double rel_error = 0;  // ‖W − W'‖/‖W‖ of the quantized tensor (0 when kept)
  double worst_row_rel_error = 0;
  uint64_t bytes_before = 0;  // the source's bytes
  uint64_t bytes_after = 0;   // stored bytes, scales included
};

struct HyrtComponentReport {
  int quantized = 0;
  int kept = 0;
  uint64_t bytes_before = 0;
  uint64_t bytes_after = 0;
  double worst_rel_error = 0;
  std::string worst_tensor;  // "" when nothing was quantized
};

struct HyrtWriteReport {
  std::vector<HyrtTensorReport> tensors;  // in file order
  HyrtComponentReport components[3];      // by Component
  uint64_t file_bytes = 0;
};

// Writes `source` as a hyrt file at `out`: every weight of every component the source has,
// quantized per options.policy (an s8 weight of a hyrt source is copied with its scales),
// plus the metadata and tokenizer above. Streams through SafetensorsWriter: one tensor in
// memory at a time, `<out>.tmp` renamed on success (no half-written file under `out`).
// `progress` (optional) is called after each weight. Throws kInvalidArgument if a config is
// missing for a component the source has or `out` is the source itself, kIo on write
// failure, and what quantize_per_row throws (a non-finite weight, named).
HyrtWriteReport write_hyrt_file(
    const Checkpoint& source, const std::filesystem::path& out, const HyrtWriteOptions& options,
    const std::function<void(const HyrtTensorReport&, size_t done, size_t total)>& progress = {});

}  // namespace hyrt::weights

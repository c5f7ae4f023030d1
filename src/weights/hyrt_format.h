// The hyrt model file: a whole SD 1.5 or SDXL model — weights, configs, scheduler config and
// tokenizers — in ONE .safetensors file, with "8-bit S" int8 weights (quantize.h). It is all
// `hyrt generate` needs; `hyrt quantize` writes it, Checkpoint::open reads it.
//
// Layout (format "hyrt-sd15" or "hyrt-sdxl", format_version "1"; the two formats share the
// layout, the name says the family: "hyrt-sdxl" exactly when the file has text_encoder_2
// weights — so a build that predates SDXL refuses such a file by name (kUnsupported) rather
// than opening it as an SD 1.5 model without its second encoder; SD 1.5 files are
// unchanged and still read by such builds):
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
//     __tokenizer_2__.{vocab.json,merges.txt,tokenizer_config.json}
//                               the second text encoder's tokenizer (SDXL's tokenizer_2/),
//                               same rules
//   __metadata__ (string -> string)
//     format            "hyrt-sd15"
//     format_version    "1"
//     quantization      "8-bit S: symmetric int8, per-output-row f32 scale, least-squares refit"
//     config.text_encoder, config.text_encoder_2, config.unet, config.vae
//                       each component's config as JSON text, diffusers/transformers field
//                       names (parse_*_config reads them back)
//     config.scheduler  the scheduler_config.json text, when the source had one
//     model_index       the source's model_index.json text (a JSON object), when it had one
//                       (SDXL's pipeline reads force_zeros_for_empty_prompt from it). Older
//                       readers ignore it, so it does not change the format.
//
// Reading rules (read_hyrt_contents), each failure naming the file and the tensor or key:
//   kUnsupported   `format` is another hyrt architecture ("hyrt-…" other than "hyrt-sd15"
//                  and "hyrt-sdxl"), or
//                  `format_version` is not "1" (a newer writer: refusing beats misreading)
//   kInvalidModel  `format_version` missing; an I8 tensor without its `.scale`; a `.scale`
//                  without its tensor, or for a tensor that is not I8; a scale that is not
//                  F32, not rank 1, or not one entry per row; a NaN, ±Inf or negative
//                  scale; an I8 tensor of rank < 2; a config missing (for a component that
//                  has weights) or not a JSON object; a malformed scheduler config or
//                  model_index; a tokenizer with only one of vocab.json / merges.txt, or a
//                  `__tokenizer__` / `__tokenizer_2__` tensor that is not U8 [n]; a
//                  "hyrt-sd15" file with text_encoder_2 weights or a "hyrt-sdxl" file
//                  without them
// Tensors outside text_encoder./text_encoder_2./unet./vae. (and not the above) are reported
// as unexpected keys, as for any checkpoint.
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
inline constexpr std::string_view kHyrtFormatSdxl = "hyrt-sdxl";
inline constexpr std::string_view kHyrtFormatVersion = "1";
inline constexpr std::string_view kHyrtQuantization =
    "8-bit S: symmetric int8, per-output-row f32 scale, least-squares refit";
inline constexpr std::string_view kScaleSuffix = ".scale";
inline constexpr std::string_view kTokenizerPrefix = "__tokenizer__.";
inline constexpr std::string_view kTokenizer2Prefix = "__tokenizer_2__.";
// kTokenizerPrefix for kTextEncoder, kTokenizer2Prefix for kTextEncoder2, "" otherwise.
std::string_view hyrt_tokenizer_prefix(Component c);

// Metadata keys.
inline constexpr std::string_view kMetaFormat = "format";
inline constexpr std::string_view kMetaFormatVersion = "format_version";
inline constexpr std::string_view kMetaQuantization = "quantization";
inline constexpr std::string_view kMetaSchedulerConfig = "config.scheduler";
inline constexpr std::string_view kMetaModelIndex = "model_index";
// "config.text_encoder", "config.text_encoder_2", "config.unet", "config.vae".
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
  // By Component; present for each component with weights.
  std::optional<nlohmann::json> configs[kNumComponents];
  std::optional<std::string> scheduler_config;  // JSON text (validated as a JSON object)
  // By Component: the text encoders' embedded tokenizers (other slots stay empty).
  std::optional<TokenizerFiles> tokenizers[kNumComponents];
  std::optional<nlohmann::json> model_index;  // a JSON object
};

// Validates `file` as a hyrt-sd15 / hyrt-sdxl file (rules above) and sorts its tensors. The
// returned pointers point into `file`.
HyrtContents read_hyrt_contents(const SafetensorsFile& file);

// ---- writing ----

struct HyrtWriteOptions {
  int refit_iterations = kDefaultRefitIterations;
  QuantizePolicy policy;
  // Each component's config as JSON text in diffusers field names, by Component
  // (models' configs_to_json_texts). Required for every component the source has.
  std::optional<std::string> configs[kNumComponents];
  std::optional<std::string> scheduler_config;
  std::optional<TokenizerFiles> tokenizer;    // the text encoder's
  std::optional<TokenizerFiles> tokenizer_2;  // the second text encoder's (SDXL)
  // model_index.json text (Checkpoint::model_index().dump()); must parse as a JSON object.
  std::optional<std::string> model_index;
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
  std::vector<HyrtTensorReport> tensors;           // in file order
  HyrtComponentReport components[kNumComponents];  // by Component
  uint64_t file_bytes = 0;
};

// Writes `source` as a hyrt file at `out`: every weight of every component the source has,
// quantized per options.policy (an s8 weight of a hyrt source is copied with its scales),
// plus the metadata and tokenizers above; the format is "hyrt-sdxl" if the source has
// text_encoder_2 weights, else "hyrt-sd15". Streams through SafetensorsWriter: one tensor in
// memory at a time, `<out>.tmp` renamed on success (no half-written file under `out`).
// `progress` (optional) is called after each weight. Throws kInvalidArgument if a config is
// missing for a component the source has, options.model_index is not a JSON object,
// options.tokenizer_2 is given for a source without a second text encoder, or `out` is any
// file the source reads (refuse_overwriting_inputs), kIo on write failure, and what
// quantize_per_row throws (a non-finite weight, named).
// Throws kInvalidArgument, naming both, if `out` exists and is (by device and inode, so
// through links too) the single file, a weight file, config, tokenizer file, model_index or
// scheduler config that `source` reads.
void refuse_overwriting_inputs(const Checkpoint& source, const std::filesystem::path& out);

HyrtWriteReport write_hyrt_file(
    const Checkpoint& source, const std::filesystem::path& out, const HyrtWriteOptions& options,
    const std::function<void(const HyrtTensorReport&, size_t done, size_t total)>& progress = {});

}  // namespace hyrt::weights

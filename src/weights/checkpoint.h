// Checkpoint: an SD 1.5 or SDXL model on disk — a diffusers folder, an LDM/CompVis or SGM
// single .safetensors file, or a hyrt model file (hyrt_format.h: canonical names, configs and
// tokenizers inside, "8-bit S" int8 weights) — seen through one set of canonical weight names.
//
// Canonical names are `<component>.<diffusers key>` (ldm_names.h):
//   text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight
//   text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.weight   (SDXL)
//   text_encoder_2.text_projection.weight                                (SDXL)
//   unet.down_blocks.0.resnets.0.conv1.weight
//   vae.decoder.mid_block.attentions.0.to_q.weight
// Layout differences between real checkpoints are resolved at open(): old VAE attention
// names, LDM's [C, C, 1, 1] VAE attention weights (exposed as [C, C]: same bytes, only
// the view's shape differs), text-encoder keys without `text_model.`, and in SGM files
// OpenCLIP's stacked q/k/v (`in_proj_weight` [3C, C]: exposed as three [C, C] views into
// the stacked rows, zero-copy) and transposed `text_projection` (stored [width, proj]: the
// one weight materialised at open, as a transposed copy the Checkpoint owns, in the stored
// dtype). Each weight keeps its stored dtype (checkpoints mix f32/f16/bf16); converting is
// the reader's job.
//
// Quantized weights (hyrt files only): get() returns the s8 view of the stored int8 values;
// scale() returns the f32 [rows] per-row scales that go with it (value = scale[row] · q).
// The `<name>.scale` tensors and the embedded tokenizer are not weights: they appear in no
// names() list and never as unexpected keys.
//
// Keys that are not weights (DDPM schedule buffers, model_ema.*, position_ids) are listed
// in ignored_keys(); keys that cannot be mapped are listed in unexpected_keys() under
// their original names. Neither is an error: key checks against an architecture live in
// models/keys.h.
//
// Ownership and lifetime: the Checkpoint owns its mapped files and its few materialised
// weights; every TensorView from get() points into them (zero-copy, read-only memory,
// aligned for its type — see safetensors.h) and is valid while the Checkpoint lives. Thread safety:
// immutable after open(); all const methods may be called concurrently.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "weights/ldm_names.h"
#include "weights/safetensors.h"
#include "weights/weight_source.h"

namespace hyrt::weights {

// kLdmSingleFile: `model.diffusion_model.*`, `first_stage_model.*`,
// `cond_stage_model.transformer.*` (SD 1.x/2.x as CompVis wrote them). kSgmSingleFile: the
// same UNet and VAE keys with the text encoders under `conditioner.embedders.*` (SDXL, as
// Stability's generative-models writes them) — any file with such a key is an SGM file.
enum class CheckpointFormat { kDiffusersFolder, kLdmSingleFile, kHyrtFile, kSgmSingleFile };
// "diffusers folder", "LDM single file", "hyrt file", "SGM single file".
std::string_view checkpoint_format_name(CheckpointFormat f);

// The CLIP tokenizer's files, by content.
struct TokenizerFiles {
  std::string vocab_json;
  std::string merges_txt;
  std::string tokenizer_config_json;  // empty when the source has none
};
// Reads `dir`/vocab.json, merges.txt and (if present) tokenizer_config.json; nullopt if
// either of the first two is missing; kIo if one cannot be read.
std::optional<TokenizerFiles> read_tokenizer_files(const std::filesystem::path& dir);

// "tokenizer" for kTextEncoder, "tokenizer_2" for kTextEncoder2 (the diffusers sub-folder
// of the text encoder's tokenizer); "" for components without one.
std::string_view tokenizer_folder_name(Component c);

struct WeightInfo {
  std::string name;  // canonical
  Component component = Component::kUNet;
  DType dtype = DType::kF32;
  Shape shape;                            // as exposed by get() (after any squeeze or split)
  const SafetensorsFile* file = nullptr;  // the file holding it (owned by the Checkpoint)
  // Its entry there: original name, stored shape. Several weights share one entry when it
  // is split (SGM's stacked q/k/v): then tensor->bytes covers all of them, bytes() one.
  const TensorInfo* tensor = nullptr;
  // Where get()'s bytes start inside `tensor`'s: 0, or for the k and v rows of a stacked
  // tensor the rows before them. The view covers bytes() bytes from there.
  uint64_t byte_offset = 0;
  // Non-null for a weight materialised at open (SGM's transposed text_projection): get()
  // returns this Checkpoint-owned copy (dtype/shape as above); `tensor` still names the
  // stored original, which get() does not read. Such a weight has no file pages to release.
  const Tensor* materialized = nullptr;
  // For an "8-bit S" weight (dtype s8): its `<name>.scale` entry, f32 [rows]; else nullptr.
  const TensorInfo* scale = nullptr;

  // Bytes of the weight as exposed (shape × dtype), scales excluded.
  uint64_t bytes() const { return static_cast<uint64_t>(shape.numel()) * dtype_size(dtype); }
};

class Checkpoint final : public WeightSource {
 public:
  // Opens `path`: a directory is read as a diffusers folder (model_index.json and/or
  // text_encoder/, text_encoder_2/, unet/, vae/ sub-folders with *.safetensors and
  // config.json); a file whose metadata says `"format": "hyrt-…"` as a hyrt file (validated
  // as hyrt_format.h describes); any other file as an LDM or SGM single .safetensors file.
  // Throws kNotFound if `path` does not exist; kInvalidModel if it is neither (naming what
  // was expected), a file or config.json is malformed, or an SGM tensor that must be split
  // or transposed has an impossible shape (named: an `in_proj_*` whose dim 0 is not a
  // multiple of 3, a `text_projection` not of rank 2); kUnsupported for pickle checkpoints
  // (.ckpt/.bin/.pt) and for hyrt files of another architecture or format version.
  // A diffusers folder lacking some components opens; has() reports which are present
  // (an SD 1.5 model has no kTextEncoder2).
  static std::unique_ptr<Checkpoint> open(const std::filesystem::path& path);

  CheckpointFormat format() const { return format_; }
  const std::filesystem::path& root() const { return root_; }

  bool has(Component c) const { return !names_[index(c)].empty(); }
  // Canonical names of the component's weights, in file order.
  const std::vector<std::string>& names(Component c) const { return names_[index(c)]; }
  // nullptr if absent.
  const WeightInfo* find(std::string_view name) const;
  // Throws kNotFound naming the checkpoint and the weight.
  const WeightInfo& info(std::string_view name) const;

  // WeightSource
  TensorView get(std::string_view name) const override;
  bool contains(std::string_view name) const override { return find(name) != nullptr; }

  // For an "8-bit S" weight, its per-row scales: an f32 [rows] view (validated at open: the
  // right length, finite, >= 0; 0 only for rows that are all zero). nullopt for a weight
  // stored in a float dtype. Throws kNotFound for an unknown name.
  std::optional<TensorView> scale(std::string_view name) const override;
  // Drops the mapped pages of the weight's bytes (and of its scale); for a split weight only
  // the pages wholly inside its own rows; nothing for a materialised one.
  void release_stored(std::string_view name) const override;

  // The component's parsed config: a diffusers folder's config.json, or a hyrt file's
  // `config.<component>` metadata entry; nullopt for LDM files or a folder without one.
  std::optional<nlohmann::json> config_json(Component c) const;
  // Where config_json() came from: the config.json path, or the hyrt file itself.
  std::optional<std::filesystem::path> config_path(Component c) const;
  // The tokenizer of text encoder `c` (tokenizer_folder_name(c): `tokenizer/` for
  // kTextEncoder, `tokenizer_2/` for kTextEncoder2) in a diffusers folder, if that folder
  // exists; nullopt otherwise and for components that are not text encoders.
  std::optional<std::filesystem::path> tokenizer_dir(Component c = Component::kTextEncoder) const {
    return tokenizer_dirs_[index(c)];
  }
  // That tokenizer's files by content: a diffusers folder's tokenizer dir (read on each
  // call; kIo if unreadable), or the copy embedded in a hyrt file; nullopt if there is none.
  std::optional<TokenizerFiles> tokenizer_files(Component c = Component::kTextEncoder) const;
  // The pipeline-level description: a diffusers folder's parsed model_index.json (validated
  // as a JSON object at open), or a hyrt file's `model_index` metadata entry; nullopt for
  // single files and folders without one. SDXL's pipeline reads `_class_name` and
  // `force_zeros_for_empty_prompt` from it.
  std::optional<nlohmann::json> model_index() const { return model_index_; }
  // The scheduler config JSON text: a diffusers folder's scheduler/scheduler_config.json
  // (read on each call) or a hyrt file's `config.scheduler`; nullopt if there is none.
  std::optional<std::string> scheduler_config_text() const;
  // The single file's `__metadata__` (LDM, SGM and hyrt files; empty for folders).
  const std::map<std::string, std::string>& metadata() const;
  // The .safetensors files a component was read from.
  std::vector<std::filesystem::path> weight_files(Component c) const;

  // Original names of tensors that could not be mapped (not an error).
  const std::vector<std::string>& unexpected_keys() const { return unexpected_; }
  // Original names of known non-weights that were skipped.
  const std::vector<std::string>& ignored_keys() const { return ignored_; }
  // Observations worth showing a user (a component folder with only .bin weights, a
  // missing config.json, ...).
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  static size_t index(Component c) { return static_cast<size_t>(c); }

  Checkpoint() = default;
  void open_diffusers();
  void open_single_file();
  void open_ldm(const SafetensorsFile& file);
  void open_hyrt(const SafetensorsFile& file);
  void load_component_files(Component c, const std::filesystem::path& dir);
  // Adds the weight(s) `m` maps `t` to (three for a split, a materialised transpose, or
  // one view); records ignored and unexpected keys.
  void add(const SafetensorsFile& file, const TensorInfo& t, const KeyMapping& m);
  void add_weight(WeightInfo w);

  CheckpointFormat format_ = CheckpointFormat::kDiffusersFolder;
  std::filesystem::path root_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::filesystem::path> component_files_[kNumComponents];
  std::vector<WeightInfo> weights_;
  // Materialised weights (WeightInfo::materialized points at them; unique_ptr: stable).
  std::vector<std::unique_ptr<Tensor>> owned_;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> by_name_;
  std::vector<std::string> names_[kNumComponents];
  std::optional<nlohmann::json> configs_[kNumComponents];
  std::optional<std::filesystem::path> config_paths_[kNumComponents];
  // By Component; only the text encoders' slots are ever set.
  std::optional<std::filesystem::path> tokenizer_dirs_[kNumComponents];
  std::optional<TokenizerFiles> embedded_tokenizers_[kNumComponents];  // hyrt files
  std::optional<std::string> embedded_scheduler_;                      // hyrt files
  std::optional<nlohmann::json> model_index_;
  std::vector<std::string> unexpected_;
  std::vector<std::string> ignored_;
  std::vector<std::string> notes_;
};

}  // namespace hyrt::weights

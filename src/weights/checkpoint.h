// Checkpoint: an SD 1.5 model on disk — a diffusers folder or an LDM/CompVis single
// .safetensors file — seen through one set of canonical weight names.
//
// Canonical names are `<component>.<diffusers key>` (ldm_names.h):
//   text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight
//   unet.down_blocks.0.resnets.0.conv1.weight
//   vae.decoder.mid_block.attentions.0.to_q.weight
// Layout differences between real checkpoints are resolved at open(): old VAE attention
// names, LDM's [C, C, 1, 1] VAE attention weights (exposed as [C, C]: same bytes, only
// the view's shape differs), text-encoder keys without `text_model.`. Each weight keeps
// its stored dtype (checkpoints mix f32/f16/bf16); converting is the reader's job.
//
// Keys that are not weights (DDPM schedule buffers, model_ema.*, position_ids) are listed
// in ignored_keys(); keys that cannot be mapped are listed in unexpected_keys() under
// their original names. Neither is an error: key checks against an architecture live in
// models/sd15/keys.h.
//
// Ownership and lifetime: the Checkpoint owns its mapped files; every TensorView from
// get() points into them (zero-copy, read-only memory, possibly unaligned — see
// safetensors.h) and is valid while the Checkpoint lives. Thread safety: immutable after
// open(); all const methods may be called concurrently.
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

enum class CheckpointFormat { kDiffusersFolder, kLdmSingleFile };
// "diffusers folder", "LDM single file".
std::string_view checkpoint_format_name(CheckpointFormat f);

struct WeightInfo {
  std::string name;  // canonical
  Component component = Component::kUNet;
  DType dtype = DType::kF32;
  Shape shape;                            // as exposed by get() (after any 1x1 squeeze)
  const SafetensorsFile* file = nullptr;  // the file holding it (owned by the Checkpoint)
  const TensorInfo* tensor = nullptr;     // its entry there: original name, stored shape
};

class Checkpoint final : public WeightSource {
 public:
  // Opens `path`: a directory is read as a diffusers folder (model_index.json and/or
  // text_encoder/, unet/, vae/ sub-folders with *.safetensors and config.json), a file as
  // an LDM single .safetensors file. Throws kNotFound if `path` does not exist;
  // kInvalidModel if it is neither (naming what was expected) or a file or config.json is
  // malformed; kUnsupported for pickle checkpoints (.ckpt/.bin/.pt).
  // A diffusers folder lacking some components opens; has() reports which are present.
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

  // The component's parsed config.json (diffusers folders only; nullopt otherwise or if the
  // folder has none).
  std::optional<nlohmann::json> config_json(Component c) const;
  std::optional<std::filesystem::path> config_path(Component c) const;
  // `tokenizer/` of a diffusers folder (vocab.json + merges.txt), if present.
  std::optional<std::filesystem::path> tokenizer_dir() const { return tokenizer_dir_; }
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
  void open_ldm();
  void load_component_files(Component c, const std::filesystem::path& dir);
  void add(const SafetensorsFile& file, const TensorInfo& t, const KeyMapping& m);

  CheckpointFormat format_ = CheckpointFormat::kDiffusersFolder;
  std::filesystem::path root_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::filesystem::path> component_files_[3];
  std::vector<WeightInfo> weights_;
  std::unordered_map<std::string, size_t, StringHash, std::equal_to<>> by_name_;
  std::vector<std::string> names_[3];
  std::optional<nlohmann::json> configs_[3];
  std::optional<std::filesystem::path> config_paths_[3];
  std::optional<std::filesystem::path> tokenizer_dir_;
  std::vector<std::string> unexpected_;
  std::vector<std::string> ignored_;
  std::vector<std::string> notes_;
};

}  // namespace hyrt::weights

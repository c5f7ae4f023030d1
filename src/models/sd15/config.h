// Configurations of the three SD 1.5 components, with diffusers'/transformers' field
// names. Read from a diffusers folder's config.json, or — for an LDM single file, which
// carries none — SD 1.5's defaults with every size read off the tensor shapes.
//
// Parsing contract: parse_*_config() read diffusers/transformers config.json objects; a
// field that is absent or null takes the SD 1.5 default below; a field of the wrong type
// or out of range throws hyrt::Error(kInvalidModel) naming `source` (the file) and the
// field. Pure functions: thread-safe.
#pragma once

#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace hyrt::weights {
class Checkpoint;
}

namespace hyrt::models::sd15 {

// transformers CLIPTextConfig
struct ClipTextConfig {
  int vocab_size = 49408;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // "quick_gelu" or "gelu"
  float layer_norm_eps = 1e-5f;
  int bos_token_id = 49406;
  int eos_token_id = 49407;
};

// diffusers UNet2DConditionModel (the SD 1.5 subset)
struct UNetConfig {
  int in_channels = 4;
  int out_channels = 4;
  std::vector<int> block_out_channels = {320, 640, 1280, 1280};
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"};
  int layers_per_block = 2;
  int cross_attention_dim = 768;
  // Heads per attention block, one entry per down block (diffusers' SD 1.5 configs call this
  // `attention_head_dim` = 8 but use it as the number of heads; `num_attention_heads` wins
  // when set).
  std::vector<int> num_attention_heads = {8, 8, 8, 8};
  int norm_num_groups = 32;
  float norm_eps = 1e-5f;
  bool flip_sin_to_cos = true;
  float freq_shift = 0.0f;
  int downsample_padding = 1;
  bool use_linear_projection = false;  // SD 1.5: proj_in/proj_out are 1x1 convs
  int transformer_layers_per_block = 1;
  int sample_size = 64;
};

// diffusers AutoencoderKL
struct VaeConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;
  bool mid_block_add_attention = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  int sample_size = 512;
};

ClipTextConfig parse_clip_text_config(const nlohmann::json& j,
                                      std::string_view source = "text_encoder/config.json");
// diffusers quirk: SD 1.5 configs put the head count in `attention_head_dim` and leave
// `num_attention_heads` null; either may be an int or a list with one entry per down block.
UNetConfig parse_unet_config(const nlohmann::json& j, std::string_view source = "unet/config.json");
VaeConfig parse_vae_config(const nlohmann::json& j, std::string_view source = "vae/config.json");

// The inverse of parse_*_config: a config object in diffusers'/transformers' field names
// (with `_class_name` / `architectures` and `model_type` for people and diffusers), such
// that parse_*_config(*_config_to_json(c)) == c field for field. The UNet's head counts
// are written as diffusers' SD 1.5 configs write them: `attention_head_dim` as a list,
// `num_attention_heads` null (diffusers rejects the latter for this model class).
nlohmann::json clip_text_config_to_json(const ClipTextConfig& c);
nlohmann::json unet_config_to_json(const UNetConfig& c);
nlohmann::json vae_config_to_json(const VaeConfig& c);

// A component's config: its config.json for a diffusers folder that has one (or the
// metadata entry of a hyrt file, which always has one); otherwise
// (LDM single files) SD 1.5's defaults with every size read off the tensor shapes. What
// shapes cannot show — head counts, norm groups, eps, activation, sample size — keeps the
// SD 1.5 default (CLIP heads: hidden_size / 64, the CLIP convention; 12 at width 768).
// Throws kNotFound if the checkpoint lacks the component, kInvalidModel if a tensor needed
// to infer a size is missing.
ClipTextConfig clip_text_config_from_checkpoint(const weights::Checkpoint& ck);
UNetConfig unet_config_from_checkpoint(const weights::Checkpoint& ck);
VaeConfig vae_config_from_checkpoint(const weights::Checkpoint& ck);

// The configs of the components the checkpoint has (nullopt for absent ones).
struct Sd15Configs {
  std::optional<ClipTextConfig> text_encoder;
  std::optional<UNetConfig> unet;
  std::optional<VaeConfig> vae;
};

// The configs present in `configs` as compact JSON text (`*_config_to_json(...).dump()`),
// indexed by weights::Component — what a hyrt file stores (weights/hyrt_format.h).
std::array<std::optional<std::string>, 3> configs_to_json_texts(const Sd15Configs& configs);

// Loads every present component's config. With `config_dir` (a diffusers-layout folder,
// like A1111's v1-inference.yaml beside an LDM file), `<config_dir>/<component>/config.json`
// is used where it exists, else *_config_from_checkpoint(). kNotFound if config_dir is
// given but is not a directory.
Sd15Configs load_configs(const weights::Checkpoint& ck,
                         const std::optional<std::filesystem::path>& config_dir = std::nullopt);

}  // namespace hyrt::models::sd15

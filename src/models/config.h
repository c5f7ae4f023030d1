// Configurations of the components of an SD 1.5- or SDXL-family model (diffusers'
// UNet2DConditionModel, AutoencoderKL and transformers' CLIPTextModel[WithProjection]), with
// diffusers'/transformers' field names. Read from a diffusers folder's config.json, or — for
// an LDM/SGM single file, which carries none — the family's defaults with every size read off
// the tensor shapes. One set of structs serves both families: SDXL is the same diffusers
// classes with other settings (two text encoders, per-level transformer depth, the
// "text_time" added embedding), so nothing here is forked per family.
//
// Parsing contract: parse_*_config() read diffusers/transformers config.json objects; a
// field that is absent or null takes the SD 1.5 default below; a field of the wrong type
// or out of range throws hyrt::Error(kInvalidModel) naming `source` (the file) and the
// field; a setting hyrt does not implement throws kUnsupported naming it. Pure functions:
// thread-safe.
#pragma once

#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "weights/ldm_names.h"  // weights::Component, kNumComponents

namespace hyrt::weights {
class Checkpoint;
}

namespace hyrt::models {

// transformers CLIPTextConfig (CLIPTextModel; CLIPTextModelWithProjection when
// projection_dim > 0 — SDXL's second encoder, whose pooled output is projected).
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
  // CLIPTextModelWithProjection: `text_projection.weight` [projection_dim, hidden_size], no
  // bias. 0 for a plain CLIPTextModel.
  int projection_dim = 0;
};

// diffusers UNet2DConditionModel (the subset SD 1.5 and SDXL use)
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
  // BasicTransformerBlocks per Transformer2DModel, one entry per down level (SDXL base:
  // 1, 2, 10). The mid block uses the last entry; up level i uses entry n-1-i (diffusers'
  // reversed list).
  std::vector<int> transformer_layers_per_block = {1, 1, 1, 1};
  // "" (none) or "text_time" (SDXL): an embedding of the pooled text embedding and the six
  // micro-conditioning values (original size, crop top-left, target size), each a
  // sinusoidal embedding of addition_time_embed_dim, through add_embedding (linear_1, silu,
  // linear_2) and added to the time embedding.
  std::string addition_embed_type;
  int addition_time_embed_dim = 0;
  // add_embedding.linear_1's input width: pooled text width + 6 · addition_time_embed_dim.
  int projection_class_embeddings_input_dim = 0;
  // LCM-distilled models (latent consistency, e.g. LCM_Dreamshaper): the width of the guidance
  // embedding fed through time_embedding.cond_proj; guidance is embedded rather than applied as
  // classifier-free guidance. 0: none.
  int time_cond_proj_dim = 0;
  int sample_size = 64;

  bool text_time_embedding() const { return addition_embed_type == "text_time"; }
  // Width of the pooled text embedding the UNet expects ("text_embeds"), 0 without one.
  int pooled_text_dim() const {
    return text_time_embedding()
               ? projection_class_embeddings_input_dim - 6 * addition_time_embed_dim
               : 0;
  }
};

// diffusers AutoencoderKL
struct VaeConfig {
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;  // SDXL: 0.13025
  // The decoder's activations overflow f16 (the real SDXL VAE): run it in f32/bf16 wherever
  // activations would otherwise be held in f16. diffusers' default is true.
  bool force_upcast = true;
  bool mid_block_add_attention = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  int sample_size = 512;
};

// The parse_*_config functions check every number against a range and fail with
// kInvalidModel naming the source, the field, its value and the range. The ranges lie far
// beyond every published model but keep all sizes computed from them small enough not to
// overflow or exhaust memory: channels and widths [1, 65536], image/latent channels [1, 64],
// head counts and norm groups [1, 1024], layers [1, 256], levels at most 16, CLIP vocabulary
// [1, 2^20] and positions [1, 16384], eps in (0, 1], VAE scaling_factor in (0, 100],
// freq_shift in [0, 16], downsample_padding in {0, 1}, sample_size [1, 16384].
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
// (LDM/SGM single files) the family's defaults with every size read off the tensor shapes.
// What shapes cannot show keeps the default of the family the keys show (a second text
// encoder or an add_embedding means SDXL): CLIP heads hidden_size / 64 (the CLIP
// convention: 12 at width 768, 20 at 1280); UNet heads 8 per level for SD 1.5, channels / 64
// for SDXL; the second encoder's activation gelu (OpenCLIP), the first's quick_gelu; SDXL's
// addition_time_embed_dim 256 and VAE scaling factor 0.13025; sample size 64 / 128.
// Throws kNotFound if the checkpoint lacks the component, kInvalidModel if a tensor needed
// to infer a size is missing.
ClipTextConfig clip_text_config_from_checkpoint(
    const weights::Checkpoint& ck, weights::Component which = weights::Component::kTextEncoder);
UNetConfig unet_config_from_checkpoint(const weights::Checkpoint& ck);
VaeConfig vae_config_from_checkpoint(const weights::Checkpoint& ck);

// The configs of the components the checkpoint has (nullopt for absent ones).
struct ModelConfigs {
  std::optional<ClipTextConfig> text_encoder;
  std::optional<ClipTextConfig> text_encoder_2;  // SDXL's second (OpenCLIP-kind) encoder
  std::optional<UNetConfig> unet;
  std::optional<VaeConfig> vae;
};

// The model families hyrt runs, told apart by their configs: SDXL has a second text
// encoder and a UNet with the "text_time" added embedding.
enum class ModelFamily { kSd15, kSdxl };
// "SD 1.5" / "SDXL".
std::string_view model_family_name(ModelFamily f);
// The family of `configs` and, in `why` (if given), the evidence in words. kInvalidModel
// for an inconsistent set (a second text encoder without a text_time UNet or the reverse,
// or a UNet whose pooled width or cross-attention width does not match the encoders).
ModelFamily model_family(const ModelConfigs& configs, std::string* why = nullptr);

// The configs present in `configs` as compact JSON text (`*_config_to_json(...).dump()`),
// indexed by weights::Component — what a hyrt file stores (weights/hyrt_format.h).
std::array<std::optional<std::string>, weights::kNumComponents> configs_to_json_texts(
    const ModelConfigs& configs);

// Configs that contradict each other, refused with kInvalidModel naming both values: an SD 1.5
// UNet's cross_attention_dim must equal the text encoder's hidden_size (SDXL: the sum of
// both, in model_family()), and the UNet's out_channels must equal the VAE's latent_channels,
// its in_channels too (or 2 x latent + 1 for an inpainting UNet).
void check_config_consistency(const ModelConfigs& configs);

// Loads every present component's config and checks that they form one model
// (model_family(), and check_config_consistency()). With `config_dir` (a diffusers-layout folder,
// like A1111's v1-inference.yaml beside an LDM file), `<config_dir>/<component>/config.json`
// is used where it exists, else *_config_from_checkpoint(). kNotFound if config_dir is
// given but is not a directory.
ModelConfigs load_configs(const weights::Checkpoint& ck,
                          const std::optional<std::filesystem::path>& config_dir = std::nullopt);

}  // namespace hyrt::models

#include "models/config.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "weights/checkpoint.h"

namespace hyrt::models {
namespace {

using nlohmann::json;
using weights::Checkpoint;
using weights::Component;

// Typed field readers: absent or null -> `fallback`; wrong type -> kInvalidModel naming
// the file and the field.
class Fields {
 public:
  Fields(const json& j, std::string_view source) : j_(j), source_(source) {
    HYRT_CHECK(j.is_object(), kInvalidModel, source_, ": config is not a JSON object");
  }

  const json* get(const char* key) const {
    auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }

  int integer(const char* key, int fallback, int min_value = 0) const {
    const json* v = get(key);
    if (!v) return fallback;
    return as_int(*v, key, min_value);
  }

  float number(const char* key, float fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_number(), kInvalidModel, source_, ": field `", key,
               "` must be a number, found ", v->dump());
    return v->get<float>();
  }

  bool boolean(const char* key, bool fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_boolean(), kInvalidModel, source_, ": field `", key,
               "` must be true or false, found ", v->dump());
    return v->get<bool>();
  }

  std::string string(const char* key, const std::string& fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_string(), kInvalidModel, source_, ": field `", key,
               "` must be a string, found ", v->dump());
    return v->get<std::string>();
  }

  std::vector<int> int_list(const char* key, const std::vector<int>& fallback,
                            int min_value = 1) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_array() && !v->empty(), kInvalidModel, source_, ": field `", key,
               "` must be a non-empty list of integers, found ", v->dump());
    std::vector<int> out;
    for (const auto& e : *v)
      out.push_back(as_int(e, key, min_value));
    return out;
  }

  // An int applied to every block, or a list with one entry per block.
  std::vector<int> int_or_list(const char* key, const std::vector<int>& fallback, size_t n) const {
    const json* v = get(key);
    if (!v) return fallback;
    if (v->is_array()) {
      auto out = int_list(key, fallback);
      HYRT_CHECK(out.size() == n, kInvalidModel, source_, ": field `", key, "` has ", out.size(),
                 " entries for ", n, " blocks");
      return out;
    }
    return std::vector<int>(n, as_int(*v, key, 1));
  }

  std::vector<std::string> string_list(const char* key,
                                       const std::vector<std::string>& fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_array() && !v->empty(), kInvalidModel, source_, ": field `", key,
               "` must be a non-empty list of strings, found ", v->dump());
    std::vector<std::string> out;
    for (const auto& e : *v) {
      HYRT_CHECK(e.is_string(), kInvalidModel, source_, ": field `", key,
                 "` must contain strings, found ", e.dump());
      out.push_back(e.get<std::string>());
    }
    return out;
  }

  const std::string& source() const { return source_; }

 private:
  int as_int(const json& v, const char* key, int min_value) const {
    HYRT_CHECK(v.is_number_integer(), kInvalidModel, source_, ": field `", key,
               "` must be an integer, found ", v.dump());
    const int64_t i = v.get<int64_t>();
    HYRT_CHECK(i >= min_value && i <= (1 << 24), kInvalidModel, source_, ": field `", key,
               "` = ", i, " is out of range");
    return static_cast<int>(i);
  }

  const json& j_;
  std::string source_;
};

std::optional<Shape> shape_of(const Checkpoint& ck, const std::string& name) {
  const auto* w = ck.find(name);
  if (!w) return std::nullopt;
  return w->shape;
}

// The shape of a tensor needed to infer a size; kInvalidModel naming it when absent.
Shape need(const Checkpoint& ck, const std::string& name, int rank) {
  auto s = shape_of(ck, name);
  HYRT_CHECK(s, kInvalidModel, ck.root().string(), ": cannot infer the config: weight '", name,
             "' is missing");
  HYRT_CHECK(s->rank() == rank, kInvalidModel, ck.root().string(), ": weight '", name,
             "' has shape ", s->to_string(), ", expected rank ", rank);
  return *s;
}

int count_indexed(const Checkpoint& ck, const std::string& prefix, const std::string& suffix) {
  int n = 0;
  while (ck.contains(prefix + std::to_string(n) + suffix))
    ++n;
  return n;
}

json read_config_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  HYRT_CHECK(in, kIo, path.string(), ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    fail(ErrorCode::kInvalidModel, path.string(), ": not valid JSON: ", e.what());
  }
}

// Where a checkpoint's own config came from, for messages.
std::string config_source(const Checkpoint& ck, Component c) {
  if (ck.format() == weights::CheckpointFormat::kHyrtFile)
    return str_cat(ck.root().string(), " (metadata 'config.", weights::component_name(c), "')");
  const auto p = ck.config_path(c);
  return p ? p->string() : str_cat(weights::component_name(c), "/config.json");
}

// The shortest decimal that reads back as the same float: 1e-05, not 9.99999974737875e-06.
double tidy(float f) {
  char buf[32];
  for (int digits = 6; digits < 9; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return static_cast<double>(f);
}

void require_component(const Checkpoint& ck, Component c) {
  HYRT_CHECK(ck.has(c), kNotFound, ck.root().string(), ": the checkpoint has no ",
             weights::component_title(c));
}

}  // namespace

ClipTextConfig parse_clip_text_config(const json& j, std::string_view source) {
  Fields f(j, source);
  ClipTextConfig c;
  c.vocab_size = f.integer("vocab_size", c.vocab_size, 1);
  c.hidden_size = f.integer("hidden_size", c.hidden_size, 1);
  c.intermediate_size = f.integer("intermediate_size", c.intermediate_size, 1);
  c.num_hidden_layers = f.integer("num_hidden_layers", c.num_hidden_layers, 1);
  c.num_attention_heads = f.integer("num_attention_heads", c.num_attention_heads, 1);
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings, 1);
  c.hidden_act = f.string("hidden_act", c.hidden_act);
  c.layer_norm_eps = f.number("layer_norm_eps", c.layer_norm_eps);
  c.bos_token_id = f.integer("bos_token_id", c.bos_token_id);
  c.eos_token_id = f.integer("eos_token_id", c.eos_token_id);
  c.projection_dim = f.integer("projection_dim", c.projection_dim, 0);
  // A CLIPTextConfig with `projection_dim` describes a plain CLIPTextModel too (transformers
  // writes the field for both): only the WithProjection architecture has the projection.
  if (const json* arch = f.get("architectures")) {
    bool with_projection = false;
    if (arch->is_array())
      for (const auto& a : *arch)
        with_projection |= a.is_string() && a.get<std::string>() == "CLIPTextModelWithProjection";
    if (!with_projection) c.projection_dim = 0;
  } else if (!f.get("projection_dim")) {
    c.projection_dim = 0;
  }
  HYRT_CHECK(c.hidden_act == "quick_gelu" || c.hidden_act == "gelu", kUnsupported, f.source(),
             ": field `hidden_act` = \"", c.hidden_act, "\" (supported: quick_gelu, gelu)");
  HYRT_CHECK(c.hidden_size % c.num_attention_heads == 0, kInvalidModel, f.source(),
             ": `hidden_size` ", c.hidden_size, " is not divisible by `num_attention_heads` ",
             c.num_attention_heads);
  return c;
}

UNetConfig parse_unet_config(const json& j, std::string_view source) {
  Fields f(j, source);
  UNetConfig c;
  c.in_channels = f.integer("in_channels", c.in_channels, 1);
  c.out_channels = f.integer("out_channels", c.out_channels, 1);
  c.block_out_channels = f.int_list("block_out_channels", c.block_out_channels);
  const size_t nb = c.block_out_channels.size();
  c.down_block_types = f.string_list("down_block_types", c.down_block_types);
  c.up_block_types = f.string_list("up_block_types", c.up_block_types);
  HYRT_CHECK(c.down_block_types.size() == nb && c.up_block_types.size() == nb, kInvalidModel,
             f.source(), ": fields `down_block_types` (", c.down_block_types.size(),
             ") and `up_block_types` (", c.up_block_types.size(),
             ") must have one entry per `block_out_channels` entry (", nb, ")");
  for (const auto& t : c.down_block_types)
    HYRT_CHECK(t == "CrossAttnDownBlock2D" || t == "DownBlock2D", kUnsupported, f.source(),
               ": field `down_block_types` has \"", t, "\"");
  for (const auto& t : c.up_block_types)
    HYRT_CHECK(t == "CrossAttnUpBlock2D" || t == "UpBlock2D", kUnsupported, f.source(),
               ": field `up_block_types` has \"", t, "\"");
  c.layers_per_block = f.integer("layers_per_block", c.layers_per_block, 1);
  // SD 1.5 passes a single int; SDXL-style per-block lists must agree (SD 1.5 subset).
  const json* cad = f.get("cross_attention_dim");
  if (cad && cad->is_array()) {
    auto v = f.int_list("cross_attention_dim", {});
    for (int x : v)
      HYRT_CHECK(x == v[0], kUnsupported, f.source(),
                 ": per-block `cross_attention_dim` values differ");
    c.cross_attention_dim = v[0];
  } else {
    c.cross_attention_dim = f.integer("cross_attention_dim", c.cross_attention_dim, 1);
  }
  // diffusers' naming bug: SD 1.5's `attention_head_dim` is the head count. When
  // `num_attention_heads` is set it is the real head count and wins.
  std::vector<int> defaults(nb, c.num_attention_heads.empty() ? 8 : c.num_attention_heads[0]);
  if (f.get("num_attention_heads"))
    c.num_attention_heads = f.int_or_list("num_attention_heads", defaults, nb);
  else
    c.num_attention_heads = f.int_or_list("attention_head_dim", defaults, nb);
  c.norm_num_groups = f.integer("norm_num_groups", c.norm_num_groups, 1);
  c.norm_eps = f.number("norm_eps", c.norm_eps);
  c.flip_sin_to_cos = f.boolean("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = f.number("freq_shift", c.freq_shift);
  c.downsample_padding = f.integer("downsample_padding", c.downsample_padding, 0);
  c.use_linear_projection = f.boolean("use_linear_projection", c.use_linear_projection);
  c.transformer_layers_per_block =
      f.int_or_list("transformer_layers_per_block", std::vector<int>(nb, 1), nb);
  // diffusers' per-layer list for the up blocks (a list of lists); absent in SD 1.5 and SDXL
  // configs, which use the reversed per-level list.
  HYRT_CHECK(!f.get("reverse_transformer_layers_per_block"), kUnsupported, f.source(),
             ": field `reverse_transformer_layers_per_block` is not supported");
  c.addition_embed_type = f.string("addition_embed_type", "");
  HYRT_CHECK(c.addition_embed_type.empty() || c.text_time_embedding(), kUnsupported, f.source(),
             ": field `addition_embed_type` = \"", c.addition_embed_type,
             "\" (supported: none, text_time)");
  if (c.text_time_embedding()) {
    c.addition_time_embed_dim = f.integer("addition_time_embed_dim", 256, 2);
    c.projection_class_embeddings_input_dim =
        f.integer("projection_class_embeddings_input_dim", 2816, 1);
    HYRT_CHECK(c.addition_time_embed_dim % 2 == 0 && c.pooled_text_dim() >= 1, kInvalidModel,
               f.source(), ": `projection_class_embeddings_input_dim` ",
               c.projection_class_embeddings_input_dim,
               " leaves no room for a pooled text embedding ",
               "beside 6 x `addition_time_embed_dim` ", c.addition_time_embed_dim);
  }
  for (const char* unsupported_field :
       {"class_embed_type", "encoder_hid_dim_type", "time_cond_proj_dim", "num_class_embeds"})
    HYRT_CHECK(!f.get(unsupported_field), kUnsupported, f.source(), ": field `", unsupported_field,
               "` is not supported");
  const std::string mid = f.string("mid_block_type", "UNetMidBlock2DCrossAttn");
  HYRT_CHECK(mid == "UNetMidBlock2DCrossAttn", kUnsupported, f.source(),
             ": field `mid_block_type` = \"", mid, "\"");
  c.sample_size = f.integer("sample_size", c.sample_size, 1);
  for (size_t i = 0; i < nb; ++i) {
    HYRT_CHECK(c.block_out_channels[i] % c.norm_num_groups == 0, kInvalidModel, f.source(),
               ": `block_out_channels` ", c.block_out_channels[i],
               " is not divisible by `norm_num_groups` ", c.norm_num_groups);
    HYRT_CHECK(c.block_out_channels[i] % c.num_attention_heads[i] == 0, kInvalidModel, f.source(),
               ": `block_out_channels` ", c.block_out_channels[i],
               " is not divisible by the head count ", c.num_attention_heads[i]);
  }
  return c;
}

VaeConfig parse_vae_config(const json& j, std::string_view source) {
  Fields f(j, source);
  VaeConfig c;
  c.in_channels = f.integer("in_channels", c.in_channels, 1);
  c.out_channels = f.integer("out_channels", c.out_channels, 1);
  c.latent_channels = f.integer("latent_channels", c.latent_channels, 1);
  c.block_out_channels = f.int_list("block_out_channels", c.block_out_channels);
  c.layers_per_block = f.integer("layers_per_block", c.layers_per_block, 1);
  c.norm_num_groups = f.integer("norm_num_groups", c.norm_num_groups, 1);
  c.scaling_factor = f.number("scaling_factor", c.scaling_factor);
  HYRT_CHECK(std::isfinite(c.scaling_factor) && c.scaling_factor > 0, kInvalidModel, f.source(),
             ": field `scaling_factor` must be a positive number");
  c.force_upcast = f.boolean("force_upcast", c.force_upcast);
  c.mid_block_add_attention = f.boolean("mid_block_add_attention", c.mid_block_add_attention);
  c.use_quant_conv = f.boolean("use_quant_conv", c.use_quant_conv);
  c.use_post_quant_conv = f.boolean("use_post_quant_conv", c.use_post_quant_conv);
  c.sample_size = f.integer("sample_size", c.sample_size, 1);
  for (int ch : c.block_out_channels)
    HYRT_CHECK(ch % c.norm_num_groups == 0, kInvalidModel, f.source(), ": `block_out_channels` ",
               ch, " is not divisible by `norm_num_groups` ", c.norm_num_groups);
  return c;
}

json clip_text_config_to_json(const ClipTextConfig& c) {
  json j;
  j["architectures"] = {c.projection_dim > 0 ? "CLIPTextModelWithProjection" : "CLIPTextModel"};
  j["model_type"] = "clip_text_model";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["hidden_act"] = c.hidden_act;
  j["layer_norm_eps"] = tidy(c.layer_norm_eps);
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  if (c.projection_dim > 0) j["projection_dim"] = c.projection_dim;
  return j;
}

json unet_config_to_json(const UNetConfig& c) {
  json j;
  j["_class_name"] = "UNet2DConditionModel";
  j["in_channels"] = c.in_channels;
  j["out_channels"] = c.out_channels;
  j["block_out_channels"] = c.block_out_channels;
  j["down_block_types"] = c.down_block_types;
  j["up_block_types"] = c.up_block_types;
  j["layers_per_block"] = c.layers_per_block;
  j["cross_attention_dim"] = c.cross_attention_dim;
  j["attention_head_dim"] = c.num_attention_heads;
  j["num_attention_heads"] = nullptr;
  j["norm_num_groups"] = c.norm_num_groups;
  j["norm_eps"] = tidy(c.norm_eps);
  j["flip_sin_to_cos"] = c.flip_sin_to_cos;
  j["freq_shift"] = tidy(c.freq_shift);
  j["downsample_padding"] = c.downsample_padding;
  j["use_linear_projection"] = c.use_linear_projection;
  j["transformer_layers_per_block"] = c.transformer_layers_per_block;
  if (c.text_time_embedding()) {
    j["addition_embed_type"] = c.addition_embed_type;
    j["addition_time_embed_dim"] = c.addition_time_embed_dim;
    j["projection_class_embeddings_input_dim"] = c.projection_class_embeddings_input_dim;
  }
  j["sample_size"] = c.sample_size;
  return j;
}

json vae_config_to_json(const VaeConfig& c) {
  json j;
  j["_class_name"] = "AutoencoderKL";
  j["in_channels"] = c.in_channels;
  j["out_channels"] = c.out_channels;
  j["latent_channels"] = c.latent_channels;
  j["block_out_channels"] = c.block_out_channels;
  j["layers_per_block"] = c.layers_per_block;
  j["norm_num_groups"] = c.norm_num_groups;
  j["scaling_factor"] = tidy(c.scaling_factor);
  j["force_upcast"] = c.force_upcast;
  j["mid_block_add_attention"] = c.mid_block_add_attention;
  j["use_quant_conv"] = c.use_quant_conv;
  j["use_post_quant_conv"] = c.use_post_quant_conv;
  j["sample_size"] = c.sample_size;
  return j;
}

std::array<std::optional<std::string>, weights::kNumComponents> configs_to_json_texts(
    const ModelConfigs& configs) {
  std::array<std::optional<std::string>, weights::kNumComponents> out;
  auto at = [&](Component c) -> std::optional<std::string>& { return out[static_cast<size_t>(c)]; };
  if (configs.text_encoder)
    at(Component::kTextEncoder) = clip_text_config_to_json(*configs.text_encoder).dump();
  if (configs.text_encoder_2)
    at(Component::kTextEncoder2) = clip_text_config_to_json(*configs.text_encoder_2).dump();
  if (configs.unet) at(Component::kUNet) = unet_config_to_json(*configs.unet).dump();
  if (configs.vae) at(Component::kVae) = vae_config_to_json(*configs.vae).dump();
  return out;
}

ClipTextConfig clip_text_config_from_checkpoint(const Checkpoint& ck, Component which) {
  HYRT_CHECK(which == Component::kTextEncoder || which == Component::kTextEncoder2,
             kInvalidArgument, "clip_text_config_from_checkpoint: not a text encoder");
  require_component(ck, which);
  if (auto j = ck.config_json(which)) return parse_clip_text_config(*j, config_source(ck, which));
  const std::string root = str_cat(weights::component_name(which), ".");
  const std::string p = root + "text_model.";
  ClipTextConfig c;
  const Shape tok = need(ck, p + "embeddings.token_embedding.weight", 2);
  c.vocab_size = static_cast<int>(tok[0]);
  c.hidden_size = static_cast<int>(tok[1]);
  c.max_position_embeddings =
      static_cast<int>(need(ck, p + "embeddings.position_embedding.weight", 2)[0]);
  c.num_hidden_layers = count_indexed(ck, p + "encoder.layers.", ".layer_norm1.weight");
  HYRT_CHECK(c.num_hidden_layers > 0, kInvalidModel, ck.root().string(), ": the ",
             weights::component_title(which), " has no encoder layers");
  c.intermediate_size = static_cast<int>(need(ck, p + "encoder.layers.0.mlp.fc1.weight", 2)[0]);
  // Head count is invisible in the shapes; CLIP uses 64-wide heads (12 at width 768).
  c.num_attention_heads = c.hidden_size % 64 == 0 ? c.hidden_size / 64 : 1;
  if (which == Component::kTextEncoder2) c.hidden_act = "gelu";  // OpenCLIP ViT-bigG
  if (ck.contains(root + "text_projection.weight")) {
    const Shape proj = need(ck, root + "text_projection.weight", 2);
    HYRT_CHECK(proj[1] == c.hidden_size, kInvalidModel, ck.root().string(), ": ", root,
               "text_projection.weight has shape ", proj.to_string(), ", expected [*, ",
               c.hidden_size, "]");
    c.projection_dim = static_cast<int>(proj[0]);
  }
  return c;
}

UNetConfig unet_config_from_checkpoint(const Checkpoint& ck) {
  require_component(ck, Component::kUNet);
  if (auto j = ck.config_json(Component::kUNet))
    return parse_unet_config(*j, config_source(ck, Component::kUNet));
  UNetConfig c;
  const Shape conv_in = need(ck, "unet.conv_in.weight", 4);
  c.in_channels = static_cast<int>(conv_in[1]);
  c.out_channels = static_cast<int>(need(ck, "unet.conv_out.weight", 4)[0]);
  c.block_out_channels.clear();
  c.down_block_types.clear();
  c.up_block_types.clear();
  for (int i = 0;; ++i) {
    const std::string block = "unet.down_blocks." + std::to_string(i) + ".";
    auto s = shape_of(ck, block + "resnets.0.conv2.weight");
    if (!s) break;
    c.block_out_channels.push_back(static_cast<int>((*s)[0]));
    c.down_block_types.push_back(
        ck.contains(block + "attentions.0.norm.weight") ? "CrossAttnDownBlock2D" : "DownBlock2D");
    const std::string up = "unet.up_blocks." + std::to_string(i) + ".";
    c.up_block_types.push_back(ck.contains(up + "attentions.0.norm.weight") ? "CrossAttnUpBlock2D"
                                                                            : "UpBlock2D");
  }
  HYRT_CHECK(!c.block_out_channels.empty(), kInvalidModel, ck.root().string(),
             ": cannot infer the UNet config: no unet.down_blocks.0.resnets.0.conv2.weight");
  c.layers_per_block = count_indexed(ck, "unet.down_blocks.0.resnets.", ".conv1.weight");
  const size_t nb = c.block_out_channels.size();
  const bool sdxl = ck.contains("unet.add_embedding.linear_1.weight");
  // Heads: SD 1.5 has 8 per level; SDXL 64-wide heads (5, 10, 20 in the base model).
  c.num_attention_heads.assign(nb, 8);
  if (sdxl)
    for (size_t i = 0; i < nb; ++i)
      c.num_attention_heads[i] =
          c.block_out_channels[i] % 64 == 0 ? c.block_out_channels[i] / 64 : 1;
  // Transformers per level: the cross-attention width, the projection kind and the depth of
  // each level (the mid block's depth is the last level's).
  c.transformer_layers_per_block.assign(nb, 1);
  for (size_t i = 0; i < nb; ++i) {
    if (c.down_block_types[i] != "CrossAttnDownBlock2D") continue;
    const std::string attn = "unet.down_blocks." + std::to_string(i) + ".attentions.0.";
    c.transformer_layers_per_block[i] =
        std::max(1, count_indexed(ck, attn + "transformer_blocks.", ".norm1.weight"));
  }
  std::string attn;
  for (size_t i = 0; i < nb && attn.empty(); ++i)
    if (c.down_block_types[i] == "CrossAttnDownBlock2D")
      attn = "unet.down_blocks." + std::to_string(i) + ".attentions.0.";
  if (attn.empty() && ck.contains("unet.mid_block.attentions.0.norm.weight"))
    attn = "unet.mid_block.attentions.0.";
  if (!attn.empty()) {
    c.cross_attention_dim =
        static_cast<int>(need(ck, attn + "transformer_blocks.0.attn2.to_k.weight", 2)[1]);
    auto proj = shape_of(ck, attn + "proj_in.weight");
    c.use_linear_projection = proj && proj->rank() == 2;
  }
  if (sdxl) {
    c.addition_embed_type = "text_time";
    c.projection_class_embeddings_input_dim =
        static_cast<int>(need(ck, "unet.add_embedding.linear_1.weight", 2)[1]);
    // The pooled width is the second text encoder's projection; the rest is 6 embeddings.
    int pooled = 1280;  // SDXL base
    if (auto tp = shape_of(ck, "text_encoder_2.text_projection.weight"); tp && tp->rank() == 2)
      pooled = static_cast<int>((*tp)[0]);
    const int rest = c.projection_class_embeddings_input_dim - pooled;
    c.addition_time_embed_dim = rest > 0 && rest % 12 == 0 ? rest / 6 : 256;
    c.sample_size = 128;
  }
  return c;
}

VaeConfig vae_config_from_checkpoint(const Checkpoint& ck) {
  require_component(ck, Component::kVae);
  if (auto j = ck.config_json(Component::kVae))
    return parse_vae_config(*j, config_source(ck, Component::kVae));
  VaeConfig c;
  c.block_out_channels.clear();
  const int enc_levels = count_indexed(ck, "vae.encoder.down_blocks.", ".resnets.0.conv2.weight");
  if (enc_levels > 0) {
    for (int i = 0; i < enc_levels; ++i)
      c.block_out_channels.push_back(static_cast<int>(need(
          ck, "vae.encoder.down_blocks." + std::to_string(i) + ".resnets.0.conv2.weight", 4)[0]));
    c.layers_per_block = count_indexed(ck, "vae.encoder.down_blocks.0.resnets.", ".conv1.weight");
  } else {
    // Decoder-only checkpoint: its up_blocks run from the widest level down.
    const int dec_levels = count_indexed(ck, "vae.decoder.up_blocks.", ".resnets.0.conv2.weight");
    HYRT_CHECK(dec_levels > 0, kInvalidModel, ck.root().string(),
               ": cannot infer the VAE config: no encoder or decoder blocks");
    for (int i = dec_levels - 1; i >= 0; --i)
      c.block_out_channels.push_back(static_cast<int>(need(
          ck, "vae.decoder.up_blocks." + std::to_string(i) + ".resnets.0.conv2.weight", 4)[0]));
    c.layers_per_block = count_indexed(ck, "vae.decoder.up_blocks.0.resnets.", ".conv1.weight") - 1;
  }
  if (auto s = shape_of(ck, "vae.encoder.conv_in.weight"))
    c.in_channels = static_cast<int>((*s)[1]);
  if (auto s = shape_of(ck, "vae.decoder.conv_out.weight"))
    c.out_channels = static_cast<int>((*s)[0]);
  if (auto s = shape_of(ck, "vae.decoder.conv_in.weight"))
    c.latent_channels = static_cast<int>((*s)[1]);
  else if (auto s2 = shape_of(ck, "vae.encoder.conv_out.weight"))
    c.latent_channels = static_cast<int>((*s2)[0] / 2);
  c.use_quant_conv = ck.contains("vae.quant_conv.weight");
  c.use_post_quant_conv = ck.contains("vae.post_quant_conv.weight");
  c.mid_block_add_attention = ck.contains("vae.decoder.mid_block.attentions.0.to_q.weight") ||
                              ck.contains("vae.encoder.mid_block.attentions.0.to_q.weight");
  // An SDXL file (a second text encoder or an added embedding) carries SDXL's VAE.
  if (ck.has(Component::kTextEncoder2) || ck.contains("unet.add_embedding.linear_1.weight")) {
    c.scaling_factor = 0.13025f;
    c.sample_size = 1024;
  }
  return c;
}

ModelConfigs load_configs(const Checkpoint& ck,
                          const std::optional<std::filesystem::path>& config_dir) {
  if (config_dir) {
    std::error_code ec;
    HYRT_CHECK(std::filesystem::is_directory(*config_dir, ec), kNotFound, config_dir->string(),
               ": config folder not found");
  }
  // The override file for a component, if one exists.
  auto override_file = [&](Component c) -> std::optional<std::filesystem::path> {
    if (!config_dir) return std::nullopt;
    auto p = *config_dir / weights::component_name(c) / "config.json";
    std::error_code ec;
    if (!std::filesystem::is_regular_file(p, ec)) return std::nullopt;
    return p;
  };
  ModelConfigs out;
  for (Component c : {Component::kTextEncoder, Component::kTextEncoder2}) {
    if (!ck.has(c)) continue;
    auto p = override_file(c);
    (c == Component::kTextEncoder ? out.text_encoder : out.text_encoder_2) =
        p ? parse_clip_text_config(read_config_file(*p), p->string())
          : clip_text_config_from_checkpoint(ck, c);
  }
  if (ck.has(Component::kUNet)) {
    auto p = override_file(Component::kUNet);
    out.unet =
        p ? parse_unet_config(read_config_file(*p), p->string()) : unet_config_from_checkpoint(ck);
  }
  if (ck.has(Component::kVae)) {
    auto p = override_file(Component::kVae);
    out.vae =
        p ? parse_vae_config(read_config_file(*p), p->string()) : vae_config_from_checkpoint(ck);
  }
  if (out.unet || out.text_encoder_2) {
    try {
      model_family(out);
    } catch (const Error& e) {
      fail(e.code(), ck.root().string(), ": ", e.what());
    }
  }
  return out;
}

std::string_view model_family_name(ModelFamily f) {
  return f == ModelFamily::kSdxl ? "SDXL" : "SD 1.5";
}

ModelFamily model_family(const ModelConfigs& c, std::string* why) {
  const bool text_time = c.unet && c.unet->text_time_embedding();
  const bool second = c.text_encoder_2.has_value();
  if (!text_time && !second) {
    if (why) *why = "one text encoder and a UNet without an added embedding";
    return ModelFamily::kSd15;
  }
  if (c.unet && second) {
    HYRT_CHECK(text_time, kInvalidModel,
               "a second text encoder, but the UNet has no text_time added embedding");
    HYRT_CHECK(c.text_encoder_2->projection_dim == c.unet->pooled_text_dim(), kInvalidModel,
               "the second text encoder projects to ", c.text_encoder_2->projection_dim,
               " but the UNet's added embedding expects a pooled width of ",
               c.unet->pooled_text_dim());
    const int width =
        c.text_encoder_2->hidden_size + (c.text_encoder ? c.text_encoder->hidden_size : 0);
    HYRT_CHECK(width == c.unet->cross_attention_dim, kInvalidModel,
               "the text encoders' widths add up to ", width,
               " but the UNet's cross_attention_dim is ", c.unet->cross_attention_dim);
  }
  // A UNet alone (a folder holding only unet/) is fine; beside a first text encoder it needs
  // the second.
  HYRT_CHECK(second || !c.text_encoder, kInvalidModel,
             "the UNet has a text_time added embedding (SDXL) but there is no second text "
             "encoder");
  if (why)
    *why = second ? str_cat("a second text encoder (with a ", c.text_encoder_2->projection_dim,
                            "-wide projection)",
                            text_time ? " and a UNet with the text_time added embedding" : "")
                  : "a UNet with the text_time added embedding";
  return ModelFamily::kSdxl;
}

}  // namespace hyrt::models

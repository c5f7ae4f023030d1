#include "models/sd15/config.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "weights/checkpoint.h"

namespace hyrt::models::sd15 {
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
  const json* tl = f.get("transformer_layers_per_block");
  if (tl && tl->is_array()) {
    auto v = f.int_or_list("transformer_layers_per_block", {}, nb);
    for (int x : v)
      HYRT_CHECK(x == v[0], kUnsupported, f.source(),
                 ": per-block `transformer_layers_per_block` values differ");
    c.transformer_layers_per_block = v[0];
  } else {
    c.transformer_layers_per_block =
        f.integer("transformer_layers_per_block", c.transformer_layers_per_block, 1);
  }
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
  j["architectures"] = {"CLIPTextModel"};
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
  j["mid_block_add_attention"] = c.mid_block_add_attention;
  j["use_quant_conv"] = c.use_quant_conv;
  j["use_post_quant_conv"] = c.use_post_quant_conv;
  j["sample_size"] = c.sample_size;
  return j;
}

std::array<std::optional<std::string>, 3> configs_to_json_texts(const Sd15Configs& configs) {
  std::array<std::optional<std::string>, 3> out;
  auto at = [&](Component c) -> std::optional<std::string>& { return out[static_cast<size_t>(c)]; };
  if (configs.text_encoder)
    at(Component::kTextEncoder) = clip_text_config_to_json(*configs.text_encoder).dump();
  if (configs.unet) at(Component::kUNet) = unet_config_to_json(*configs.unet).dump();
  if (configs.vae) at(Component::kVae) = vae_config_to_json(*configs.vae).dump();
  return out;
}

ClipTextConfig clip_text_config_from_checkpoint(const Checkpoint& ck) {
  require_component(ck, Component::kTextEncoder);
  if (auto j = ck.config_json(Component::kTextEncoder))
    return parse_clip_text_config(*j, config_source(ck, Component::kTextEncoder));
  const std::string p = "text_encoder.text_model.";
  ClipTextConfig c;
  const Shape tok = need(ck, p + "embeddings.token_embedding.weight", 2);
  c.vocab_size = static_cast<int>(tok[0]);
  c.hidden_size = static_cast<int>(tok[1]);
  c.max_position_embeddings =
      static_cast<int>(need(ck, p + "embeddings.position_embedding.weight", 2)[0]);
  c.num_hidden_layers = count_indexed(ck, p + "encoder.layers.", ".layer_norm1.weight");
  HYRT_CHECK(c.num_hidden_layers > 0, kInvalidModel, ck.root().string(),
             ": the text encoder has no encoder layers");
  c.intermediate_size = static_cast<int>(need(ck, p + "encoder.layers.0.mlp.fc1.weight", 2)[0]);
  // Head count is invisible in the shapes; CLIP uses 64-wide heads (12 at width 768).
  c.num_attention_heads = c.hidden_size % 64 == 0 ? c.hidden_size / 64 : 1;
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
  c.num_attention_heads.assign(c.block_out_channels.size(), 8);  // SD 1.5: 8 heads everywhere
  // The first transformer found tells the cross-attention width, the projection kind and
  // the transformer depth (uniform in SD 1.5).
  std::string attn;
  for (size_t i = 0; i < c.block_out_channels.size() && attn.empty(); ++i)
    if (c.down_block_types[i] == "CrossAttnDownBlock2D")
      attn = "unet.down_blocks." + std::to_string(i) + ".attentions.0.";
  if (attn.empty() && ck.contains("unet.mid_block.attentions.0.norm.weight"))
    attn = "unet.mid_block.attentions.0.";
  if (!attn.empty()) {
    c.cross_attention_dim =
        static_cast<int>(need(ck, attn + "transformer_blocks.0.attn2.to_k.weight", 2)[1]);
    auto proj = shape_of(ck, attn + "proj_in.weight");
    c.use_linear_projection = proj && proj->rank() == 2;
    c.transformer_layers_per_block =
        count_indexed(ck, attn + "transformer_blocks.", ".norm1.weight");
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
  return c;
}

Sd15Configs load_configs(const Checkpoint& ck,
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
  Sd15Configs out;
  if (ck.has(Component::kTextEncoder)) {
    auto p = override_file(Component::kTextEncoder);
    out.text_encoder = p ? parse_clip_text_config(read_config_file(*p), p->string())
                         : clip_text_config_from_checkpoint(ck);
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
  return out;
}

}  // namespace hyrt::models::sd15

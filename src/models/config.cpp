#include "models/config.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/keys.h"
#include "weights/checkpoint.h"
#include "weights/json_text.h"

namespace hyrt::models {
namespace {

using nlohmann::json;
using weights::Checkpoint;
using weights::Component;

// Ranges of config fields (see config.h): far beyond every published model, small enough that
// nothing sized from them overflows or asks for terabytes.
constexpr int kMaxSize = 1 << 16;       // channels, widths, hidden sizes
constexpr int kMaxChannels = 64;        // image and latent channels
constexpr int kMaxHeads = 1024;         // attention heads
constexpr int kMaxLayers = 256;         // layers per block, encoder layers
constexpr size_t kMaxListEntries = 16;  // levels of a UNet or VAE
constexpr int kMaxVocab = 1 << 20;      // CLIP has 49,408 tokens
constexpr int kMaxPositions = 1 << 14;  // CLIP has 77

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

  int integer(const char* key, int fallback, int min_value = 0, int max_value = kMaxSize) const {
    const json* v = get(key);
    if (!v) return fallback;
    return as_int(*v, key, min_value, max_value);
  }

  // A finite number in [lo, hi], or in (lo, hi] with `open_low` (for eps and scales, where 0
  // is as wrong as a negative).
  float number(const char* key, float fallback, double lo, double hi, bool open_low = false) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_number(), kInvalidModel, source_, ": field `", key,
               "` must be a number, found ", weights::json_excerpt(*v));
    const double d = v->get<double>();
    HYRT_CHECK(std::isfinite(d) && (open_low ? d > lo : d >= lo) && d <= hi, kInvalidModel, source_,
               ": field `", key, "` = ", d, " is out of range ", open_low ? "(" : "[", lo, ", ", hi,
               "]");
    // Checked again as the float it is kept as: 1e-85 is above 0 but rounds to 0 (found by
    // config_json_fuzz), and an eps of 0 divides by zero.
    const float f = static_cast<float>(d);
    HYRT_CHECK(open_low ? f > lo : f >= lo, kInvalidModel, source_, ": field `", key, "` = ", d,
               " is out of range ", open_low ? "(" : "[", lo, ", ", hi, "] as a 32-bit float (", f,
               ")");
    return f;
  }

  bool boolean(const char* key, bool fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_boolean(), kInvalidModel, source_, ": field `", key,
               "` must be true or false, found ", weights::json_excerpt(*v));
    return v->get<bool>();
  }

  std::string string(const char* key, const std::string& fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_string(), kInvalidModel, source_, ": field `", key,
               "` must be a string, found ", weights::json_excerpt(*v));
    return v->get<std::string>();
  }

  std::vector<int> int_list(const char* key, const std::vector<int>& fallback, int min_value = 1,
                            int max_value = kMaxSize, size_t max_entries = kMaxListEntries) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_array() && !v->empty(), kInvalidModel, source_, ": field `", key,
               "` must be a non-empty list of integers, found ", weights::json_excerpt(*v));
    HYRT_CHECK(v->size() <= max_entries, kInvalidModel, source_, ": field `", key, "` has ",
               v->size(), " entries, at most ", max_entries, " are accepted");
    std::vector<int> out;
    for (const auto& e : *v)
      out.push_back(as_int(e, key, min_value, max_value));
    return out;
  }

  // An int applied to every block, or a list with one entry per block.
  std::vector<int> int_or_list(const char* key, const std::vector<int>& fallback, size_t n,
                               int max_value = kMaxSize) const {
    const json* v = get(key);
    if (!v) return fallback;
    if (v->is_array()) {
      auto out = int_list(key, fallback, 1, max_value);
      HYRT_CHECK(out.size() == n, kInvalidModel, source_, ": field `", key, "` has ", out.size(),
                 " entries for ", n, " blocks");
      return out;
    }
    return std::vector<int>(n, as_int(*v, key, 1, max_value));
  }

  std::vector<std::string> string_list(const char* key,
                                       const std::vector<std::string>& fallback) const {
    const json* v = get(key);
    if (!v) return fallback;
    HYRT_CHECK(v->is_array() && !v->empty(), kInvalidModel, source_, ": field `", key,
               "` must be a non-empty list of strings, found ", weights::json_excerpt(*v));
    HYRT_CHECK(v->size() <= kMaxListEntries, kInvalidModel, source_, ": field `", key, "` has ",
               v->size(), " entries, at most ", kMaxListEntries, " are accepted");
    std::vector<std::string> out;
    for (const auto& e : *v) {
      HYRT_CHECK(e.is_string(), kInvalidModel, source_, ": field `", key,
                 "` must contain strings, found ", weights::json_excerpt(e));
      out.push_back(weights::excerpt(e.get<std::string>()));
    }
    return out;
  }

  const std::string& source() const { return source_; }

 private:
  int as_int(const json& v, const char* key, int min_value, int max_value) const {
    HYRT_CHECK(v.is_number_integer(), kInvalidModel, source_, ": field `", key,
               "` must be an integer, found ", weights::json_excerpt(v));
    // Unsigned values past int64 would wrap in get<int64_t>().
    const bool fits = !v.is_number_unsigned() || v.get<uint64_t>() <= uint64_t{1} << 62;
    const int64_t i = fits ? v.get<int64_t>() : int64_t{1} << 62;
    HYRT_CHECK(i >= min_value && i <= max_value, kInvalidModel, source_, ": field `", key,
               "` = ", weights::json_excerpt(v), " is out of range [", min_value, ", ", max_value,
               "]");
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
  // An index present past a gap is a damaged or mixed-up file, not a smaller model.
  for (int k = n + 1; k <= n + 64; ++k)
    if (const auto* w = ck.find(str_cat(prefix, k, suffix)))
      fail(ErrorCode::kInvalidModel, ck.root().string(), ": weight '", prefix, n, suffix,
           "' is missing but '", prefix, k, suffix, "' is present ('", w->tensor->name, "' in ",
           w->file->label(), "): a damaged or incomplete file?");
  return n;
}

json read_config_file(const std::filesystem::path& path) {
  return weights::read_json_file_bounded(path);
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
  c.vocab_size = f.integer("vocab_size", c.vocab_size, 1, kMaxVocab);
  c.hidden_size = f.integer("hidden_size", c.hidden_size, 1);
  c.intermediate_size = f.integer("intermediate_size", c.intermediate_size, 1);
  c.num_hidden_layers = f.integer("num_hidden_layers", c.num_hidden_layers, 1, kMaxLayers);
  c.num_attention_heads = f.integer("num_attention_heads", c.num_attention_heads, 1, kMaxHeads);
  c.max_position_embeddings =
      f.integer("max_position_embeddings", c.max_position_embeddings, 1, kMaxPositions);
  c.hidden_act = f.string("hidden_act", c.hidden_act);
  c.layer_norm_eps = f.number("layer_norm_eps", c.layer_norm_eps, 0, 1, /*open_low=*/true);
  c.bos_token_id = f.integer("bos_token_id", c.bos_token_id, 0, kMaxVocab - 1);
  c.eos_token_id = f.integer("eos_token_id", c.eos_token_id, 0, kMaxVocab - 1);
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
  HYRT_CHECK(c.bos_token_id < c.vocab_size && c.eos_token_id < c.vocab_size, kInvalidModel,
             f.source(), ": `bos_token_id` ", c.bos_token_id, " or `eos_token_id` ", c.eos_token_id,
             " is not below `vocab_size` ", c.vocab_size);
  HYRT_CHECK(c.hidden_size % c.num_attention_heads == 0, kInvalidModel, f.source(),
             ": `hidden_size` ", c.hidden_size, " is not divisible by `num_attention_heads` ",
             c.num_attention_heads);
  return c;
}

UNetConfig parse_unet_config(const json& j, std::string_view source) {
  Fields f(j, source);
  UNetConfig c;
  c.in_channels = f.integer("in_channels", c.in_channels, 1, kMaxChannels);
  c.out_channels = f.integer("out_channels", c.out_channels, 1, kMaxChannels);
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
  c.layers_per_block = f.integer("layers_per_block", c.layers_per_block, 1, kMaxLayers);
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
    c.num_attention_heads = f.int_or_list("num_attention_heads", defaults, nb, kMaxHeads);
  else
    c.num_attention_heads = f.int_or_list("attention_head_dim", defaults, nb, kMaxHeads);
  c.norm_num_groups = f.integer("norm_num_groups", c.norm_num_groups, 1, kMaxHeads);
  c.norm_eps = f.number("norm_eps", c.norm_eps, 0, 1, /*open_low=*/true);
  c.flip_sin_to_cos = f.boolean("flip_sin_to_cos", c.flip_sin_to_cos);
  c.freq_shift = f.number("freq_shift", c.freq_shift, 0, 16);
  c.downsample_padding = f.integer("downsample_padding", c.downsample_padding, 0, 1);
  c.use_linear_projection = f.boolean("use_linear_projection", c.use_linear_projection);
  c.transformer_layers_per_block =
      f.int_or_list("transformer_layers_per_block", std::vector<int>(nb, 1), nb, kMaxLayers);
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
  if (f.get("time_cond_proj_dim"))
    c.time_cond_proj_dim = f.integer("time_cond_proj_dim", 0, 2, kMaxChannels);
  HYRT_CHECK(c.time_cond_proj_dim % 2 == 0, kUnsupported, f.source(), ": `time_cond_proj_dim` ",
             c.time_cond_proj_dim, " is odd (the guidance embedding's sines and cosines)");
  for (const char* unsupported_field :
       {"class_embed_type", "encoder_hid_dim_type", "num_class_embeds"})
    HYRT_CHECK(!f.get(unsupported_field), kUnsupported, f.source(), ": field `", unsupported_field,
               "` is not supported");
  const std::string mid = f.string("mid_block_type", "UNetMidBlock2DCrossAttn");
  HYRT_CHECK(mid == "UNetMidBlock2DCrossAttn", kUnsupported, f.source(),
             ": field `mid_block_type` = \"", mid, "\"");
  c.sample_size = f.integer("sample_size", c.sample_size, 1, kMaxPositions);
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
  c.in_channels = f.integer("in_channels", c.in_channels, 1, kMaxChannels);
  c.out_channels = f.integer("out_channels", c.out_channels, 1, kMaxChannels);
  c.latent_channels = f.integer("latent_channels", c.latent_channels, 1, kMaxChannels);
  c.block_out_channels = f.int_list("block_out_channels", c.block_out_channels);
  c.layers_per_block = f.integer("layers_per_block", c.layers_per_block, 1, kMaxLayers);
  c.norm_num_groups = f.integer("norm_num_groups", c.norm_num_groups, 1, kMaxHeads);
  c.scaling_factor = f.number("scaling_factor", c.scaling_factor, 0, 100, /*open_low=*/true);
  HYRT_CHECK(std::isfinite(c.scaling_factor) && c.scaling_factor > 0, kInvalidModel, f.source(),
             ": field `scaling_factor` must be a positive number");
  c.force_upcast = f.boolean("force_upcast", c.force_upcast);
  c.mid_block_add_attention = f.boolean("mid_block_add_attention", c.mid_block_add_attention);
  c.use_quant_conv = f.boolean("use_quant_conv", c.use_quant_conv);
  c.use_post_quant_conv = f.boolean("use_post_quant_conv", c.use_post_quant_conv);
  c.sample_size = f.integer("sample_size", c.sample_size, 1, kMaxPositions);
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
  if (c.time_cond_proj_dim > 0) j["time_cond_proj_dim"] = c.time_cond_proj_dim;
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

namespace {

// The sizes the tensors show, whatever the config says (heads, eps and the like come from
// SD's defaults: shapes cannot show them).
ClipTextConfig infer_clip_text_config(const Checkpoint& ck, Component which) {
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

UNetConfig infer_unet_config(const Checkpoint& ck) {
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

VaeConfig infer_vae_config(const Checkpoint& ck) {
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

std::string list_str(const std::vector<int>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += str_cat(i ? ", " : "", v[i]);
  return s + "]";
}

// A config field that the tensors contradict: the field, both values and a tensor that shows
// the size, with its shape.
class WeightCheck {
 public:
  WeightCheck(const Checkpoint& ck, std::string source) : ck_(ck), source_(std::move(source)) {}

  template <class T>
  void field(const char* name, const T& config_value, const T& weights_value,
             const std::string& tensor) const {
    if (config_value == weights_value) return;
    std::string shown;
    if (const auto* w = ck_.find(tensor))
      shown = str_cat(" (tensor '", tensor, "' has shape ", w->shape.to_string(), ")");
    fail(ErrorCode::kInvalidModel, source_, ": field `", name, "` is ", str(config_value),
         " but the weights have ", str(weights_value), shown,
         ": the config does not belong to these weights");
  }

 private:
  static std::string str(int v) { return std::to_string(v); }
  static std::string str(bool v) { return v ? "true" : "false"; }
  static std::string str(const std::vector<int>& v) { return list_str(v); }
  static std::string str(const std::vector<std::string>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i)
      s += str_cat(i ? ", " : "", v[i]);
    return s + "]";
  }
  const Checkpoint& ck_;
  std::string source_;
};

void check_clip_against_weights(const Checkpoint& ck, Component which, const ClipTextConfig& c,
                                const std::string& source) {
  std::optional<ClipTextConfig> inferred;
  try {
    inferred = infer_clip_text_config(ck, which);
  } catch (const Error&) {
    return;  // a weight the sizes are read from is missing: the graph builder names it
  }
  const ClipTextConfig& w = *inferred;
  const std::string p = str_cat(weights::component_name(which), ".text_model.");
  const WeightCheck check(ck, source);
  check.field("vocab_size", c.vocab_size, w.vocab_size, p + "embeddings.token_embedding.weight");
  check.field("hidden_size", c.hidden_size, w.hidden_size, p + "embeddings.token_embedding.weight");
  check.field("max_position_embeddings", c.max_position_embeddings, w.max_position_embeddings,
              p + "embeddings.position_embedding.weight");
  check.field("num_hidden_layers", c.num_hidden_layers, w.num_hidden_layers,
              str_cat(p, "encoder.layers.", w.num_hidden_layers - 1, ".layer_norm1.weight"));
  check.field("intermediate_size", c.intermediate_size, w.intermediate_size,
              p + "encoder.layers.0.mlp.fc1.weight");
  if (w.projection_dim > 0 && c.projection_dim > 0)
    check.field("projection_dim", c.projection_dim, w.projection_dim,
                str_cat(weights::component_name(which), ".text_projection.weight"));
}

void check_unet_against_weights(const Checkpoint& ck, const UNetConfig& c,
                                const std::string& source) {
  std::optional<UNetConfig> inferred;
  try {
    inferred = infer_unet_config(ck);
  } catch (const Error&) {
    return;  // a weight the sizes are read from is missing: the graph builder names it
  }
  const UNetConfig& w = *inferred;
  const WeightCheck check(ck, source);
  check.field("in_channels", c.in_channels, w.in_channels, "unet.conv_in.weight");
  check.field("out_channels", c.out_channels, w.out_channels, "unet.conv_out.weight");
  check.field(
      "block_out_channels", c.block_out_channels, w.block_out_channels,
      str_cat("unet.down_blocks.", w.block_out_channels.size() - 1, ".resnets.0.conv2.weight"));
  check.field("down_block_types", c.down_block_types, w.down_block_types,
              "unet.down_blocks.0.attentions.0.norm.weight");
  check.field("up_block_types", c.up_block_types, w.up_block_types,
              "unet.up_blocks.0.attentions.0.norm.weight");
  check.field("layers_per_block", c.layers_per_block, w.layers_per_block,
              str_cat("unet.down_blocks.0.resnets.", w.layers_per_block - 1, ".conv1.weight"));
  bool any_attention = false;
  for (const auto& t : w.down_block_types)
    any_attention |= t == "CrossAttnDownBlock2D";
  if (any_attention) {
    check.field("cross_attention_dim", c.cross_attention_dim, w.cross_attention_dim,
                "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight");
    check.field("use_linear_projection", c.use_linear_projection, w.use_linear_projection,
                "unet.down_blocks.0.attentions.0.proj_in.weight");
    for (size_t i = 0; i < w.down_block_types.size(); ++i)
      if (w.down_block_types[i] == "CrossAttnDownBlock2D")
        check.field(
            "transformer_layers_per_block", c.transformer_layers_per_block[i],
            w.transformer_layers_per_block[i],
            str_cat("unet.down_blocks.", i, ".attentions.0.transformer_blocks.0.norm1.weight"));
  }
}

void check_vae_against_weights(const Checkpoint& ck, const VaeConfig& c,
                               const std::string& source) {
  std::optional<VaeConfig> inferred;
  try {
    inferred = infer_vae_config(ck);
  } catch (const Error&) {
    return;  // a weight the sizes are read from is missing: the graph builder names it
  }
  const VaeConfig& w = *inferred;
  const WeightCheck check(ck, source);
  check.field("block_out_channels", c.block_out_channels, w.block_out_channels,
              "vae.decoder.up_blocks.0.resnets.0.conv2.weight");
  check.field("layers_per_block", c.layers_per_block, w.layers_per_block,
              "vae.decoder.up_blocks.0.resnets.0.conv1.weight");
  if (ck.contains("vae.encoder.conv_in.weight"))
    check.field("in_channels", c.in_channels, w.in_channels, "vae.encoder.conv_in.weight");
  if (ck.contains("vae.decoder.conv_out.weight"))
    check.field("out_channels", c.out_channels, w.out_channels, "vae.decoder.conv_out.weight");
  if (ck.contains("vae.decoder.conv_in.weight"))
    check.field("latent_channels", c.latent_channels, w.latent_channels,
                "vae.decoder.conv_in.weight");
}

}  // namespace

ClipTextConfig clip_text_config_from_checkpoint(const Checkpoint& ck, Component which) {
  HYRT_CHECK(which == Component::kTextEncoder || which == Component::kTextEncoder2,
             kInvalidArgument, "clip_text_config_from_checkpoint: not a text encoder");
  require_component(ck, which);
  if (auto j = ck.config_json(which)) return parse_clip_text_config(*j, config_source(ck, which));
  return infer_clip_text_config(ck, which);
}

UNetConfig unet_config_from_checkpoint(const Checkpoint& ck) {
  require_component(ck, Component::kUNet);
  if (auto j = ck.config_json(Component::kUNet))
    return parse_unet_config(*j, config_source(ck, Component::kUNet));
  return infer_unet_config(ck);
}

VaeConfig vae_config_from_checkpoint(const Checkpoint& ck) {
  require_component(ck, Component::kVae);
  if (auto j = ck.config_json(Component::kVae))
    return parse_vae_config(*j, config_source(ck, Component::kVae));
  return infer_vae_config(ck);
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
  // Where a component's config came from, or nullopt when it was read from the tensors.
  auto written_config = [&](Component c) -> std::optional<std::string> {
    if (auto p = override_file(c)) return p->string();
    if (ck.config_json(c)) return config_source(ck, c);
    return std::nullopt;
  };
  ModelConfigs out;
  for (Component c : {Component::kTextEncoder, Component::kTextEncoder2}) {
    if (!ck.has(c)) continue;
    auto p = override_file(c);
    auto& cfg = c == Component::kTextEncoder ? out.text_encoder : out.text_encoder_2;
    cfg = p ? parse_clip_text_config(read_config_file(*p), p->string())
            : clip_text_config_from_checkpoint(ck, c);
    if (auto src = written_config(c)) check_clip_against_weights(ck, c, *cfg, *src);
  }
  if (ck.has(Component::kUNet)) {
    auto p = override_file(Component::kUNet);
    out.unet =
        p ? parse_unet_config(read_config_file(*p), p->string()) : unet_config_from_checkpoint(ck);
    if (auto src = written_config(Component::kUNet))
      check_unet_against_weights(ck, *out.unet, *src);
  }
  if (ck.has(Component::kVae)) {
    auto p = override_file(Component::kVae);
    out.vae =
        p ? parse_vae_config(read_config_file(*p), p->string()) : vae_config_from_checkpoint(ck);
    if (auto src = written_config(Component::kVae)) check_vae_against_weights(ck, *out.vae, *src);
  }
  try {
    if (out.unet || out.text_encoder_2) model_family(out);
    check_config_consistency(out);
  } catch (const Error& e) {
    // A component folder without weights reads as a missing component: say which.
    std::string hint;
    std::error_code ec;
    for (Component c : weights::kAllComponents)
      if (!ck.has(c) && std::filesystem::is_directory(ck.root() / weights::component_name(c), ec))
        hint += str_cat(hint.empty() ? " (" : "; ", weights::component_name(c),
                        "/ holds no weights: an incomplete download?");
    fail(e.code(), ck.root().string(), ": ", e.what(), hint.empty() ? "" : hint + ")");
  }
  // Every tensor's shape against what the configs imply, before anything is allocated: a
  // tensor of the wrong size (a damaged file, a stacked q/k/v of the wrong width) is named
  // here with its name in the file, not found later inside a graph node.
  const KeyReport keys = check_checkpoint_keys(ck, out);
  if (!keys.shape_mismatch.empty()) {
    const std::string& first = keys.shape_mismatch.front();  // "name: expected [..], found [..]"
    const std::string name = first.substr(0, first.find(": "));
    std::string stored;
    if (const auto* w = ck.find(name); w && w->tensor && w->tensor->name != name)
      stored = str_cat(" (stored as '", w->tensor->name, "' in ", w->file->label(), ")");
    const size_t more = keys.shape_mismatch.size() - 1;
    fail(ErrorCode::kInvalidModel, ck.root().string(), ": weight ", first, stored,
         more ? str_cat("; ", more, " more tensor", more > 1 ? "s have" : " has",
                        " the wrong shape (`hyrt info --keys` lists them)")
              : "",
         ": the file is damaged or its tensors do not match its configs");
  }
  return out;
}

void check_config_consistency(const ModelConfigs& c) {
  if (c.unet && c.text_encoder && !c.text_encoder_2 && !c.unet->text_time_embedding())
    HYRT_CHECK(c.text_encoder->hidden_size == c.unet->cross_attention_dim, kInvalidModel,
               "the text encoder's hidden_size is ", c.text_encoder->hidden_size,
               " but the UNet's cross_attention_dim is ", c.unet->cross_attention_dim,
               ": the two configs belong to different models");
  if (c.unet && c.vae) {
    const int latent = c.vae->latent_channels;
    HYRT_CHECK(c.unet->out_channels == latent, kInvalidModel, "the UNet's out_channels is ",
               c.unet->out_channels, " but the VAE's latent_channels is ", latent,
               ": the two configs belong to different models");
    HYRT_CHECK(c.unet->in_channels == latent || c.unet->in_channels == 2 * latent + 1,
               kInvalidModel, "the UNet's in_channels is ", c.unet->in_channels,
               " but the VAE's latent_channels is ", latent, " (expected ", latent, ", or ",
               2 * latent + 1, " for inpainting)");
  }
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

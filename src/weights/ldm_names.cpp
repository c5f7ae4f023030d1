#include "weights/ldm_names.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <iterator>
#include <optional>
#include <utility>

#include "core/error.h"

namespace hyrt::weights {
namespace {

constexpr std::string_view kUNetPrefix = "model.diffusion_model.";
constexpr std::string_view kVaePrefix = "first_stage_model.";
constexpr std::string_view kTextPrefix = "cond_stage_model.transformer.";
constexpr std::string_view kSgmEmbedders = "conditioner.embedders.";
// The SGM keys sgm_key_for writes (SDXL base numbering).
constexpr std::string_view kSgmClipPrefix = "conditioner.embedders.0.transformer.";
constexpr std::string_view kSgmOpenClipPrefix = "conditioner.embedders.1.model.";

// Top-level LDM buffers that are not weights of the three networks: the DDPM noise
// schedule (registered as buffers by ldm.models.diffusion.ddpm), its loss weights and the
// latent scale factor.
constexpr std::string_view kScheduleBuffers[] = {
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "lvlb_weights",
    "logvar",
    "scale_factor",
};

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// Parses a non-negative decimal index (no sign, no leading '+'); nullopt otherwise.
std::optional<int> parse_index(std::string_view s) {
  if (s.empty() || s.size() > 6) return std::nullopt;
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

// Splits "a.b.rest" into the first `n` dot-separated pieces and the remainder.
// Returns false if there are fewer than n pieces followed by a non-empty remainder.
bool split_head(std::string_view key, int n, std::vector<std::string_view>* head,
                std::string_view* rest) {
  head->clear();
  for (int i = 0; i < n; ++i) {
    size_t dot = key.find('.');
    if (dot == std::string_view::npos) return false;
    head->push_back(key.substr(0, dot));
    key.remove_prefix(dot + 1);
  }
  *rest = key;
  return !key.empty();
}

// Replaces a leading `from` of `rest` with `to`; nullopt if `rest` does not start with it.
std::optional<std::string> rename_head(std::string_view rest, std::string_view from,
                                       std::string_view to) {
  if (!starts_with(rest, from)) return std::nullopt;
  return std::string(to) + std::string(rest.substr(from.size()));
}

using Rename = std::pair<std::string_view, std::string_view>;  // {LDM, diffusers}

// LDM ResBlock (openaimodel.py) parameter names -> diffusers ResnetBlock2D.
constexpr Rename kUNetResnetRenames[] = {
    {"in_layers.0.", "norm1."},          {"in_layers.2.", "conv1."},
    {"emb_layers.1.", "time_emb_proj."}, {"out_layers.0.", "norm2."},
    {"out_layers.3.", "conv2."},         {"skip_connection.", "conv_shortcut."},
};
// LDM VAE AttnBlock -> diffusers Attention projections (1x1 convs in LDM, linear here).
constexpr Rename kVaeAttentionProjections[] = {
    {"q.", "to_q."}, {"k.", "to_k."}, {"v.", "to_v."}, {"proj_out.", "to_out.0."}};

// UNet parameters outside the blocks. `label_emb.0` is SDXL's `text_time` addition
// embedding (a Sequential of Linear, SiLU, Linear): diffusers' add_embedding.
constexpr Rename kUNetTopRenames[] = {
    {"time_embed.0.", "time_embedding.linear_1."},
    {"time_embed.2.", "time_embedding.linear_2."},
    {"label_emb.0.0.", "add_embedding.linear_1."},
    {"label_emb.0.2.", "add_embedding.linear_2."},
    {"input_blocks.0.0.", "conv_in."},
    {"out.0.", "conv_norm_out."},
    {"out.2.", "conv_out."},
};

std::optional<std::string> map_unet_resnet(std::string_view rest) {
  for (const auto& [from, to] : kUNetResnetRenames)
    if (auto r = rename_head(rest, from, to)) return r;
  return std::nullopt;
}

// LDM SpatialTransformer and diffusers Transformer2DModel share parameter names.
std::optional<std::string> map_unet_attention(std::string_view rest) {
  for (std::string_view p : {"norm.", "proj_in.", "proj_out.", "transformer_blocks."})
    if (starts_with(rest, p)) return std::string(rest);
  return std::nullopt;
}

// LDM VAE ResnetBlock -> diffusers ResnetBlock2D (no time embedding).
std::optional<std::string> map_vae_resnet(std::string_view rest) {
  for (std::string_view p : {"norm1.", "conv1.", "norm2.", "conv2."})
    if (starts_with(rest, p)) return std::string(rest);
  return rename_head(rest, "nin_shortcut.", "conv_shortcut.");
}

// LDM VAE AttnBlock -> diffusers Attention. `*is_projection` reports the 1x1-conv weights
// that diffusers stores as linear layers.
std::optional<std::string> map_vae_attention(std::string_view rest, bool* is_projection) {
  *is_projection = false;
  if (auto r = rename_head(rest, "norm.", "group_norm.")) return r;
  for (const auto& [from, to] : kVaeAttentionProjections)
    if (auto r = rename_head(rest, from, to)) {
      *is_projection = true;
      return r;
    }
  return std::nullopt;
}

std::string cat(std::initializer_list<std::string_view> parts) {
  std::string s;
  for (auto p : parts)
    s += p;
  return s;
}

std::string idx(int i) {
  return std::to_string(i);
}

// OpenCLIP's text tower (open_clip TextTransformer, SDXL's conditioner.embedders.1.model)
// -> transformers' CLIPTextModelWithProjection, as diffusers' convert_open_clip_checkpoint.
constexpr Rename kOpenClipTop[] = {
    {"token_embedding.", "text_model.embeddings.token_embedding."},
    {"ln_final.", "text_model.final_layer_norm."},
};
constexpr Rename kOpenClipLayer[] = {
    {"ln_1.", "layer_norm1."},
    {"ln_2.", "layer_norm2."},
    {"attn.out_proj.", "self_attn.out_proj."},
    {"mlp.c_fc.", "mlp.fc1."},
    {"mlp.c_proj.", "mlp.fc2."},
};
constexpr std::string_view kOpenClipLayers = "transformer.resblocks.";
constexpr std::string_view kCanonicalLayers = "text_model.encoder.layers.";
constexpr std::string_view kOpenClipPositional = "positional_embedding";
constexpr std::string_view kCanonicalPositional = "text_model.embeddings.position_embedding.weight";
constexpr std::string_view kOpenClipProjection = "text_projection";
constexpr std::string_view kCanonicalProjection = "text_projection.weight";
constexpr std::string_view kInProj[] = {"attn.in_proj_weight", "attn.in_proj_bias"};
constexpr std::string_view kQkv[] = {"q_proj.", "k_proj.", "v_proj."};

// Applies the first table entry whose source head starts `rest` (and is followed by a
// parameter name), in the diffusers direction.
std::optional<std::string> unrename_to_diffusers(std::string_view rest, const Rename* begin,
                                                 const Rename* end) {
  for (const Rename* r = begin; r != end; ++r)
    if (starts_with(rest, r->first)) {
      if (rest.size() == r->first.size()) return std::nullopt;
      return rename_head(rest, r->first, r->second);
    }
  return std::nullopt;
}

// `k`: an OpenCLIP text-tower key without the `conditioner.embedders.{i}.model.` prefix.
KeyMapping map_open_clip(std::string_view k) {
  KeyMapping m;
  m.component = Component::kTextEncoder2;
  const std::string prefix = std::string(component_name(m.component)) + ".";
  // logit_scale: CLIP's contrastive temperature (no part of text conditioning); attn_mask:
  // the causal mask, a buffer.
  if (k == "logit_scale" || k == "attn_mask") {
    m.kind = KeyMapping::Kind::kIgnored;
    return m;
  }
  std::optional<std::string> mapped;
  if (k == kOpenClipPositional) {
    mapped = std::string(kCanonicalPositional);
  } else if (k == kOpenClipProjection) {
    mapped = std::string(kCanonicalProjection);
    m.transpose = true;
  } else if (auto r = unrename_to_diffusers(k, std::begin(kOpenClipTop), std::end(kOpenClipTop))) {
    mapped = r;
  } else if (starts_with(k, kOpenClipLayers)) {
    std::string_view rest = k.substr(kOpenClipLayers.size());
    const size_t dot = rest.find('.');
    const auto n = dot == std::string_view::npos ? std::nullopt : parse_index(rest.substr(0, dot));
    if (n) {
      rest.remove_prefix(dot + 1);
      const std::string layer = cat({prefix, kCanonicalLayers, idx(*n), "."});
      for (size_t w = 0; w < 2; ++w)
        if (rest == kInProj[w]) {
          m.kind = KeyMapping::Kind::kMapped;
          for (std::string_view part : kQkv)
            m.split_rows.push_back(cat({layer, "self_attn.", part, w == 0 ? "weight" : "bias"}));
          return m;
        }
      if (auto r =
              unrename_to_diffusers(rest, std::begin(kOpenClipLayer), std::end(kOpenClipLayer)))
        mapped = cat({kCanonicalLayers, idx(*n), ".", *r});
    }
  }
  if (!mapped) {
    m.transpose = false;
    return m;  // kUnexpected
  }
  m.kind = KeyMapping::Kind::kMapped;
  m.canonical = prefix + *mapped;
  return m;
}

}  // namespace

std::string_view component_name(Component c) {
  switch (c) {
    case Component::kTextEncoder:
      return "text_encoder";
    case Component::kTextEncoder2:
      return "text_encoder_2";
    case Component::kUNet:
      return "unet";
    case Component::kVae:
      return "vae";
  }
  return "?";
}

std::string_view component_title(Component c) {
  switch (c) {
    case Component::kTextEncoder:
      return "text encoder";
    case Component::kTextEncoder2:
      return "second text encoder";
    case Component::kUNet:
      return "UNet";
    case Component::kVae:
      return "VAE";
  }
  return "?";
}

namespace {
// A HF CLIPTextModel key (after the single file's prefix) as a canonical name's rest: some
// files omit the `text_model.` level; canonical names always carry it.
std::string clip_text_model_name(std::string_view k) {
  return starts_with(k, "text_model.") ? std::string(k) : "text_model." + std::string(k);
}
}  // namespace

bool is_ignorable_buffer(std::string_view key) {
  return key == "position_ids" || ends_with(key, ".position_ids");
}

LdmKeyMap::LdmKeyMap(const std::vector<std::string>& keys) {
  // UNet: input_blocks are [conv_in] then per level L resnet(+attention) entries and, on
  // all levels but the last, one downsampler entry `input_blocks.N.0.op`. The first
  // downsampler's index is therefore 1 + L. With a single level there is no downsampler
  // and the highest index is L.
  int first_op = INT_MAX, max_input = 0;
  std::vector<std::string_view> head;
  std::string_view rest;
  for (const auto& k : keys) {
    std::string_view key = k;
    if (starts_with(key, kSgmEmbedders)) sgm_ = true;
    if (starts_with(key, kUNetPrefix)) {
      key.remove_prefix(kUNetPrefix.size());
      if (!split_head(key, 3, &head, &rest) || head[0] != "input_blocks") continue;
      auto n = parse_index(head[1]);
      if (!n || *n == 0) continue;
      max_input = std::max(max_input, *n);
      if (head[2] == "0" && starts_with(rest, "op.")) first_op = std::min(first_op, *n);
    } else if (starts_with(key, kVaePrefix)) {
      key.remove_prefix(kVaePrefix.size());
      if (!split_head(key, 3, &head, &rest) || head[0] != "decoder" || head[1] != "up") continue;
      if (auto i = parse_index(head[2])) vae_max_up_ = std::max(vae_max_up_, *i);
    }
  }
  if (first_op != INT_MAX)
    unet_layers_per_block_ = first_op - 1;
  else if (max_input > 0)
    unet_layers_per_block_ = max_input;
  if (unet_layers_per_block_ < 1) unet_layers_per_block_ = 1;
}

std::optional<std::string> LdmKeyMap::map_unet(std::string_view key) const {
  for (const auto& [ldm, diffusers] : kUNetTopRenames)
    if (auto r = rename_head(key, ldm, diffusers)) return r;

  std::vector<std::string_view> head;
  std::string_view rest;
  // middle_block.{0,1,2}: resnet, attention, resnet.
  if (split_head(key, 2, &head, &rest) && head[0] == "middle_block") {
    if (head[1] == "0") {
      if (auto r = map_unet_resnet(rest)) return "mid_block.resnets.0." + *r;
    } else if (head[1] == "1") {
      if (auto r = map_unet_attention(rest)) return "mid_block.attentions.0." + *r;
    } else if (head[1] == "2") {
      if (auto r = map_unet_resnet(rest)) return "mid_block.resnets.1." + *r;
    }
    return std::nullopt;
  }
  if (!split_head(key, 3, &head, &rest)) return std::nullopt;
  auto n = parse_index(head[1]);
  auto j = parse_index(head[2]);
  if (!n || !j) return std::nullopt;
  const int layers = unet_layers_per_block_;

  if (head[0] == "input_blocks" && *n >= 1) {
    // Each down level holds `layers` resnet/attention entries plus one downsampler entry.
    const int level = (*n - 1) / (layers + 1), pos = (*n - 1) % (layers + 1);
    const std::string block = cat({"down_blocks.", idx(level), "."});
    if (pos == layers) {
      if (*j != 0) return std::nullopt;
      auto r = rename_head(rest, "op.", "");
      if (!r) return std::nullopt;
      return cat({block, "downsamplers.0.conv.", *r});
    }
    if (*j == 0) {
      auto r = map_unet_resnet(rest);
      if (r) return cat({block, "resnets.", idx(pos), ".", *r});
    } else if (*j == 1) {
      auto r = map_unet_attention(rest);
      if (r) return cat({block, "attentions.", idx(pos), ".", *r});
    }
    return std::nullopt;
  }
  if (head[0] == "output_blocks") {
    // Each up level holds layers + 1 entries; the upsampler sits in the level's last
    // entry after the resnet (and attention, if any).
    const int level = *n / (layers + 1), pos = *n % (layers + 1);
    const std::string block = cat({"up_blocks.", idx(level), "."});
    if (*j == 0) {
      auto r = map_unet_resnet(rest);
      if (r) return cat({block, "resnets.", idx(pos), ".", *r});
      return std::nullopt;
    }
    if (auto r = rename_head(rest, "conv.", "")) {
      if (pos != layers) return std::nullopt;
      return cat({block, "upsamplers.0.conv.", *r});
    }
    if (*j == 1) {
      auto r = map_unet_attention(rest);
      if (r) return cat({block, "attentions.", idx(pos), ".", *r});
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<std::string> LdmKeyMap::map_vae(std::string_view key, bool* squeeze) const {
  *squeeze = false;
  for (std::string_view same : {"encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.",
                                "decoder.conv_out.", "quant_conv.", "post_quant_conv."})
    if (starts_with(key, same)) return std::string(key);
  if (auto r = rename_head(key, "encoder.norm_out.", "encoder.conv_norm_out.")) return r;
  if (auto r = rename_head(key, "decoder.norm_out.", "decoder.conv_norm_out.")) return r;

  std::vector<std::string_view> head;
  std::string_view rest;
  if (!split_head(key, 1, &head, &rest)) return std::nullopt;
  const std::string_view coder = head[0];  // encoder | decoder
  if (coder != "encoder" && coder != "decoder") return std::nullopt;
  std::string_view body = rest;

  // mid.block_1 / mid.attn_1 / mid.block_2
  if (auto r = rename_head(body, "mid.block_1.", "")) {
    auto m = map_vae_resnet(*r);
    if (m) return cat({coder, ".mid_block.resnets.0.", *m});
    return std::nullopt;
  }
  if (auto r = rename_head(body, "mid.block_2.", "")) {
    auto m = map_vae_resnet(*r);
    if (m) return cat({coder, ".mid_block.resnets.1.", *m});
    return std::nullopt;
  }
  if (auto r = rename_head(body, "mid.attn_1.", "")) {
    bool projection = false;
    auto m = map_vae_attention(*r, &projection);
    if (!m) return std::nullopt;
    *squeeze = projection && ends_with(*m, ".weight");
    return cat({coder, ".mid_block.attentions.0.", *m});
  }

  // encoder.down.{i}.block.{j} / .downsample.conv, decoder.up.{i}.block.{j} / .upsample.conv
  if (!split_head(body, 3, &head, &rest)) return std::nullopt;
  const bool enc = coder == "encoder";
  if (head[0] != (enc ? "down" : "up")) return std::nullopt;
  auto i = parse_index(head[1]);
  if (!i) return std::nullopt;
  int level = *i;
  if (!enc) {
    // LDM builds the decoder's levels from the lowest resolution up but numbers them from
    // the highest, the reverse of diffusers' up_blocks order.
    if (level > vae_max_up_) return std::nullopt;
    level = vae_max_up_ - level;
  }
  const std::string block = cat({coder, enc ? ".down_blocks." : ".up_blocks.", idx(level), "."});
  if (head[2] == "block") {
    std::vector<std::string_view> h2;
    std::string_view r2;
    if (!split_head(rest, 1, &h2, &r2)) return std::nullopt;
    auto j = parse_index(h2[0]);
    auto m = j ? map_vae_resnet(r2) : std::nullopt;
    if (m) return cat({block, "resnets.", idx(*j), ".", *m});
    return std::nullopt;
  }
  if (head[2] == (enc ? "downsample" : "upsample")) {
    auto r = rename_head(rest, "conv.", "");
    if (r) return cat({block, enc ? "downsamplers.0.conv." : "upsamplers.0.conv.", *r});
  }
  return std::nullopt;
}

KeyMapping LdmKeyMap::map(std::string_view key) const {
  KeyMapping m;
  if (is_ignorable_buffer(key) || starts_with(key, "model_ema.")) {
    m.kind = KeyMapping::Kind::kIgnored;
    return m;
  }
  for (auto b : kScheduleBuffers)
    if (key == b) {
      m.kind = KeyMapping::Kind::kIgnored;
      return m;
    }
  std::optional<std::string> mapped;
  if (starts_with(key, kUNetPrefix)) {
    m.component = Component::kUNet;
    mapped = map_unet(key.substr(kUNetPrefix.size()));
  } else if (starts_with(key, kVaePrefix)) {
    m.component = Component::kVae;
    std::string_view k = key.substr(kVaePrefix.size());
    if (starts_with(k, "loss.")) {  // training-only discriminator / LPIPS weights
      m.kind = KeyMapping::Kind::kIgnored;
      return m;
    }
    mapped = map_vae(k, &m.squeeze_1x1);
  } else if (starts_with(key, kTextPrefix)) {
    m.component = Component::kTextEncoder;
    mapped = clip_text_model_name(key.substr(kTextPrefix.size()));
  } else if (starts_with(key, kSgmEmbedders)) {
    // conditioner.embedders.{i}.transformer.* (HF CLIP) or .model.* (OpenCLIP): by kind.
    std::string_view k = key.substr(kSgmEmbedders.size());
    const size_t dot = k.find('.');
    if (dot != std::string_view::npos && parse_index(k.substr(0, dot))) {
      k.remove_prefix(dot + 1);
      if (starts_with(k, "transformer.") && k.size() > std::string_view("transformer.").size()) {
        m.component = Component::kTextEncoder;
        mapped = clip_text_model_name(k.substr(std::string_view("transformer.").size()));
      } else if (starts_with(k, "model.")) {
        return map_open_clip(k.substr(std::string_view("model.").size()));
      }
    }
  }
  if (!mapped) {
    m.squeeze_1x1 = false;
    return m;  // kUnexpected
  }
  m.kind = KeyMapping::Kind::kMapped;
  m.canonical = cat({component_name(m.component), ".", *mapped});
  return m;
}

KeyMapping map_diffusers_key(Component component, std::string_view key, int rank,
                             bool trailing_1x1) {
  KeyMapping m;
  m.component = component;
  if (is_ignorable_buffer(key)) {
    m.kind = KeyMapping::Kind::kIgnored;
    return m;
  }
  std::string mapped(key);
  if (is_text_encoder(component)) {
    // Recent transformers save CLIPTextModel without the `text_model.` level.
    // (CLIPTextModelWithProjection's `text_projection.weight` sits outside it: unchanged.)
    for (std::string_view p : {"embeddings.", "encoder.", "final_layer_norm."})
      if (starts_with(key, p)) mapped = "text_model." + mapped;
  } else if (component == Component::kVae) {
    // Older diffusers folders (the original SD 1.5 release included) name the VAE's
    // attention projections query/key/value/proj_attn.
    static constexpr std::pair<std::string_view, std::string_view> kOld[] = {
        {".query.", ".to_q."},
        {".key.", ".to_k."},
        {".value.", ".to_v."},
        {".proj_attn.", ".to_out.0."}};
    const size_t at = mapped.find(".attentions.");
    if (at != std::string::npos) {
      for (const auto& [from, to] : kOld) {
        size_t p = mapped.find(from, at);
        if (p != std::string::npos) {
          mapped.replace(p, from.size(), to);
          break;
        }
      }
      const bool projection = mapped.find(".to_q.", at) != std::string::npos ||
                              mapped.find(".to_k.", at) != std::string::npos ||
                              mapped.find(".to_v.", at) != std::string::npos ||
                              mapped.find(".to_out.0.", at) != std::string::npos;
      m.squeeze_1x1 = projection && rank == 4 && trailing_1x1 && ends_with(mapped, ".weight");
    }
  }
  m.kind = KeyMapping::Kind::kMapped;
  m.canonical = cat({component_name(component), ".", mapped});
  return m;
}

// ---- canonical -> LDM ----

namespace {

// Consumes a leading `p` of `*s`.
bool take(std::string_view* s, std::string_view p) {
  if (!starts_with(*s, p)) return false;
  s->remove_prefix(p.size());
  return true;
}

// Consumes a leading "<index>." of `*s`; the index must lie in [0, limit).
bool take_index(std::string_view* s, int limit, int* out) {
  const size_t dot = s->find('.');
  if (dot == std::string_view::npos) return false;
  auto v = parse_index(s->substr(0, dot));
  if (!v || *v >= limit) return false;
  *out = *v;
  s->remove_prefix(dot + 1);
  return true;
}

// Applies the first table entry whose diffusers head starts `rest`, in the LDM direction.
std::optional<std::string> unrename(std::string_view rest, const Rename* begin, const Rename* end) {
  for (const Rename* r = begin; r != end; ++r)
    if (auto m = rename_head(rest, r->second, r->first)) return m;
  return std::nullopt;
}

std::optional<std::string> prefixed(std::string_view prefix, std::optional<std::string> rest) {
  if (!rest) return std::nullopt;
  return std::string(prefix) + *rest;
}

std::optional<std::string> unet_resnet_ldm(std::string_view rest) {
  return unrename(rest, std::begin(kUNetResnetRenames), std::end(kUNetResnetRenames));
}

std::optional<std::string> vae_resnet_ldm(std::string_view rest) {
  for (std::string_view p : {"norm1.", "conv1.", "norm2.", "conv2."})
    if (starts_with(rest, p)) return std::string(rest);
  return rename_head(rest, "conv_shortcut.", "nin_shortcut.");
}

std::optional<std::string> vae_attention_ldm(std::string_view rest) {
  if (auto r = rename_head(rest, "group_norm.", "norm.")) return r;
  return unrename(rest, std::begin(kVaeAttentionProjections), std::end(kVaeAttentionProjections));
}

// `k`: a canonical UNet name without "unet.".
std::optional<std::string> unet_ldm_key(std::string_view k, const LdmStructure& s) {
  if (auto r = unrename(k, std::begin(kUNetTopRenames), std::end(kUNetTopRenames))) return r;
  if (take(&k, "mid_block.")) {
    if (take(&k, "resnets.0.")) return prefixed("middle_block.0.", unet_resnet_ldm(k));
    if (take(&k, "attentions.0.")) return prefixed("middle_block.1.", map_unet_attention(k));
    if (take(&k, "resnets.1.")) return prefixed("middle_block.2.", unet_resnet_ldm(k));
    return std::nullopt;
  }
  const int layers = s.unet_layers_per_block;
  const int levels = static_cast<int>(s.unet_up_attention.size());
  int level = 0, pos = 0;
  if (take(&k, "down_blocks.")) {
    // input_blocks: [conv_in], then per level `layers` resnet(+attention) entries and a
    // downsampler entry.
    if (!take_index(&k, levels, &level)) return std::nullopt;
    const int base = 1 + level * (layers + 1);
    if (take(&k, "resnets.")) {
      if (!take_index(&k, layers, &pos)) return std::nullopt;
      return prefixed(cat({"input_blocks.", idx(base + pos), ".0."}), unet_resnet_ldm(k));
    }
    if (take(&k, "attentions.")) {
      if (!take_index(&k, layers, &pos)) return std::nullopt;
      return prefixed(cat({"input_blocks.", idx(base + pos), ".1."}), map_unet_attention(k));
    }
    if (take(&k, "downsamplers.0.conv.") && !k.empty())
      return cat({"input_blocks.", idx(base + layers), ".0.op.", k});
    return std::nullopt;
  }
  if (take(&k, "up_blocks.")) {
    // output_blocks: per level `layers + 1` entries; the last also holds the upsampler.
    if (!take_index(&k, levels, &level)) return std::nullopt;
    const int base = level * (layers + 1);
    if (take(&k, "resnets.")) {
      if (!take_index(&k, layers + 1, &pos)) return std::nullopt;
      return prefixed(cat({"output_blocks.", idx(base + pos), ".0."}), unet_resnet_ldm(k));
    }
    if (take(&k, "attentions.")) {
      if (!take_index(&k, layers + 1, &pos)) return std::nullopt;
      return prefixed(cat({"output_blocks.", idx(base + pos), ".1."}), map_unet_attention(k));
    }
    if (take(&k, "upsamplers.0.conv.") && !k.empty()) {
      const int slot = s.unet_up_attention[static_cast<size_t>(level)] ? 2 : 1;
      return cat({"output_blocks.", idx(base + layers), ".", idx(slot), ".conv.", k});
    }
  }
  return std::nullopt;
}

// `k`: a canonical VAE name without "vae.".
std::optional<std::string> vae_ldm_key(std::string_view k, const LdmStructure& s) {
  for (std::string_view same : {"encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.",
                                "decoder.conv_out.", "quant_conv.", "post_quant_conv."})
    if (starts_with(k, same)) return std::string(k);
  if (auto r = rename_head(k, "encoder.conv_norm_out.", "encoder.norm_out.")) return r;
  if (auto r = rename_head(k, "decoder.conv_norm_out.", "decoder.norm_out.")) return r;

  const bool enc = take(&k, "encoder.");
  if (!enc && !take(&k, "decoder.")) return std::nullopt;
  const std::string coder = enc ? "encoder." : "decoder.";
  if (take(&k, "mid_block.")) {
    if (take(&k, "resnets.0.")) return prefixed(coder + "mid.block_1.", vae_resnet_ldm(k));
    if (take(&k, "resnets.1.")) return prefixed(coder + "mid.block_2.", vae_resnet_ldm(k));
    if (take(&k, "attentions.0.")) return prefixed(coder + "mid.attn_1.", vae_attention_ldm(k));
    return std::nullopt;
  }
  int level = 0, j = 0;
  if (!take(&k, enc ? "down_blocks." : "up_blocks.") || !take_index(&k, s.vae_levels, &level))
    return std::nullopt;
  // The decoder's LDM levels count from the highest resolution: the reverse of up_blocks.
  const int top = s.vae_decoder_top_up_index < 0 ? s.vae_levels - 1 : s.vae_decoder_top_up_index;
  const int ldm_level = enc ? level : top - level;
  const std::string block = cat({coder, enc ? "down." : "up.", idx(ldm_level), "."});
  if (take(&k, "resnets.")) {
    if (!take_index(&k, INT_MAX, &j)) return std::nullopt;
    return prefixed(cat({block, "block.", idx(j), "."}), vae_resnet_ldm(k));
  }
  if (take(&k, enc ? "downsamplers.0.conv." : "upsamplers.0.conv.") && !k.empty())
    return cat({block, enc ? "downsample.conv." : "upsample.conv.", k});
  return std::nullopt;
}

}  // namespace

std::string ldm_key_for(std::string_view canonical_name, const LdmStructure& structure) {
  HYRT_CHECK(structure.unet_layers_per_block >= 1 && !structure.unet_up_attention.empty() &&
                 structure.vae_levels >= 1 &&
                 (structure.vae_decoder_top_up_index < 0 ||
                  structure.vae_decoder_top_up_index >= structure.vae_levels - 1),
             kInvalidArgument, "ldm_key_for: invalid LDM structure (",
             structure.unet_layers_per_block, " UNet layers per block, ",
             structure.unet_up_attention.size(), " UNet levels, ", structure.vae_levels,
             " VAE levels)");
  std::string_view k = canonical_name;
  std::optional<std::string> key;
  if (take(&k, "unet."))
    key = prefixed(kUNetPrefix, unet_ldm_key(k, structure));
  else if (take(&k, "vae."))
    key = prefixed(kVaePrefix, vae_ldm_key(k, structure));
  else if (take(&k, "text_encoder.") && starts_with(k, "text_model.") &&
           k.size() > std::string_view("text_model.").size())
    key = cat({kTextPrefix, k});
  HYRT_CHECK(key, kInvalidArgument, "ldm_key_for: weight '", canonical_name,
             "' has no LDM single-file key (unknown component, block or index)");
  return *key;
}

namespace {

// `k`: a canonical text_encoder_2 name without "text_encoder_2."; the inverse of
// map_open_clip (without the prefix).
std::optional<SgmKey> open_clip_sgm_key(std::string_view k) {
  SgmKey out;
  if (k == kCanonicalPositional) {
    out.key = kOpenClipPositional;
    return out;
  }
  if (k == kCanonicalProjection) {
    out.key = kOpenClipProjection;
    out.transposed = true;
    return out;
  }
  if (auto r = unrename(k, std::begin(kOpenClipTop), std::end(kOpenClipTop))) {
    if (ends_with(*r, ".")) return std::nullopt;
    out.key = *r;
    return out;
  }
  int n = 0;
  if (!take(&k, kCanonicalLayers) || !take_index(&k, INT_MAX, &n)) return std::nullopt;
  const std::string layer = cat({kOpenClipLayers, idx(n), "."});
  for (int part = 0; part < 3; ++part) {
    std::string_view rest = k;
    if (!take(&rest, "self_attn.") || !take(&rest, kQkv[part])) continue;
    if (rest != "weight" && rest != "bias") return std::nullopt;
    out.key = cat({layer, kInProj[rest == "weight" ? 0 : 1]});
    out.stacked_part = part;
    return out;
  }
  auto r = unrename(k, std::begin(kOpenClipLayer), std::end(kOpenClipLayer));
  if (!r || ends_with(*r, ".")) return std::nullopt;
  out.key = layer + *r;
  return out;
}

}  // namespace

SgmKey sgm_key_for(std::string_view canonical_name, const LdmStructure& structure) {
  std::string_view k = canonical_name;
  std::optional<SgmKey> key;
  if (take(&k, "text_encoder_2.")) {
    key = open_clip_sgm_key(k);
    if (key) key->key = cat({kSgmOpenClipPrefix, key->key});
  } else if (take(&k, "text_encoder.")) {
    if (starts_with(k, "text_model.") && k.size() > std::string_view("text_model.").size())
      key = SgmKey{cat({kSgmClipPrefix, k})};
  } else {
    // UNet and VAE: as in LDM files (ldm_key_for names the weight when it has no key).
    SgmKey out;
    out.key = ldm_key_for(canonical_name, structure);
    out.as_1x1_conv = ldm_stores_as_1x1_conv(canonical_name);
    return out;
  }
  HYRT_CHECK(key, kInvalidArgument, "sgm_key_for: weight '", canonical_name,
             "' has no SGM single-file key (unknown name or index)");
  return *key;
}

bool ldm_stores_as_1x1_conv(std::string_view canonical_name) {
  if (!starts_with(canonical_name, "vae.")) return false;
  for (std::string_view coder : {"vae.encoder.", "vae.decoder."}) {
    std::string_view k = canonical_name;
    if (!take(&k, coder) || !take(&k, "mid_block.attentions.0.")) continue;
    for (const auto& [ldm, diffusers] : kVaeAttentionProjections)
      if (k == cat({diffusers, "weight"})) return true;
  }
  return false;
}

}  // namespace hyrt::weights

#include "models/keys.h"

#include <algorithm>
#include <unordered_set>

#include "core/error.h"

namespace hyrt::models {
namespace {

// Accumulates expected tensors under a running prefix.
class Expect {
 public:
  explicit Expect(std::vector<ExpectedTensor>* out) : out_(out) {}

  void tensor(const std::string& name, Shape shape) { out_->push_back({name, shape}); }
  // weight [out, in] + bias [out]
  void linear(const std::string& p, int64_t in, int64_t out, bool bias = true) {
    tensor(p + ".weight", {out, in});
    if (bias) tensor(p + ".bias", {out});
  }
  // weight [out, in, k, k] + bias [out]
  void conv(const std::string& p, int64_t in, int64_t out, int64_t k) {
    tensor(p + ".weight", {out, in, k, k});
    tensor(p + ".bias", {out});
  }
  // GroupNorm / LayerNorm affine parameters
  void norm(const std::string& p, int64_t c) {
    tensor(p + ".weight", {c});
    tensor(p + ".bias", {c});
  }

 private:
  std::vector<ExpectedTensor>* out_;
};

std::string at(const std::string& p, int i) {
  return p + "." + std::to_string(i);
}

// diffusers ResnetBlock2D; temb_channels == 0 for the VAE's (no time embedding).
void resnet(Expect& e, const std::string& p, int64_t in, int64_t out, int64_t temb) {
  e.norm(p + ".norm1", in);
  e.conv(p + ".conv1", in, out, 3);
  if (temb > 0) e.linear(p + ".time_emb_proj", temb, out);
  e.norm(p + ".norm2", out);
  e.conv(p + ".conv2", out, out, 3);
  if (in != out) e.conv(p + ".conv_shortcut", in, out, 1);
}

// diffusers Transformer2DModel (SD 1.5: GroupNorm, proj_in/out as 1x1 conv or linear,
// BasicTransformerBlock with self-attn, cross-attn and a GEGLU feed-forward).
void transformer(Expect& e, const std::string& p, int64_t c, const UNetConfig& cfg, int depth) {
  e.norm(p + ".norm", c);
  if (cfg.use_linear_projection) {
    e.linear(p + ".proj_in", c, c);
    e.linear(p + ".proj_out", c, c);
  } else {
    e.conv(p + ".proj_in", c, c, 1);
    e.conv(p + ".proj_out", c, c, 1);
  }
  const int64_t ctx = cfg.cross_attention_dim;
  for (int t = 0; t < depth; ++t) {
    const std::string b = at(p + ".transformer_blocks", t);
    e.norm(b + ".norm1", c);
    e.linear(b + ".attn1.to_q", c, c, false);
    e.linear(b + ".attn1.to_k", c, c, false);
    e.linear(b + ".attn1.to_v", c, c, false);
    e.linear(b + ".attn1.to_out.0", c, c);
    e.norm(b + ".norm2", c);
    e.linear(b + ".attn2.to_q", c, c, false);
    e.linear(b + ".attn2.to_k", ctx, c, false);
    e.linear(b + ".attn2.to_v", ctx, c, false);
    e.linear(b + ".attn2.to_out.0", c, c);
    e.norm(b + ".norm3", c);
    e.linear(b + ".ff.net.0.proj", c, 4 * c * 2);  // GEGLU: value and gate halves
    e.linear(b + ".ff.net.2", 4 * c, c);
  }
}

// diffusers Attention as used by the VAE mid block (single head, linear projections).
void vae_attention(Expect& e, const std::string& p, int64_t c) {
  e.norm(p + ".group_norm", c);
  e.linear(p + ".to_q", c, c);
  e.linear(p + ".to_k", c, c);
  e.linear(p + ".to_v", c, c);
  e.linear(p + ".to_out.0", c, c);
}

}  // namespace

std::vector<ExpectedTensor> expected_text_encoder_tensors(const ClipTextConfig& c,
                                                          weights::Component which) {
  std::vector<ExpectedTensor> out;
  Expect e(&out);
  const std::string root(weights::component_name(which));
  const std::string p = root + ".text_model";
  const int64_t h = c.hidden_size;
  e.tensor(p + ".embeddings.token_embedding.weight", {c.vocab_size, h});
  e.tensor(p + ".embeddings.position_embedding.weight", {c.max_position_embeddings, h});
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    const std::string l = at(p + ".encoder.layers", i);
    e.norm(l + ".layer_norm1", h);
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"})
      e.linear(l + ".self_attn." + proj, h, h);
    e.norm(l + ".layer_norm2", h);
    e.linear(l + ".mlp.fc1", h, c.intermediate_size);
    e.linear(l + ".mlp.fc2", c.intermediate_size, h);
  }
  e.norm(p + ".final_layer_norm", h);
  if (c.projection_dim > 0) e.linear(root + ".text_projection", h, c.projection_dim, false);
  return out;
}

std::vector<ExpectedTensor> expected_unet_tensors(const UNetConfig& c) {
  std::vector<ExpectedTensor> out;
  Expect e(&out);
  const std::string p = "unet";
  const auto& ch = c.block_out_channels;
  const int nb = static_cast<int>(ch.size());
  HYRT_CHECK(nb > 0 && static_cast<int>(c.down_block_types.size()) == nb &&
                 static_cast<int>(c.up_block_types.size()) == nb,
             kInvalidArgument, "UNet config: block lists differ in length");
  const int64_t temb = 4 * ch[0];  // TimestepEmbedding width: 4 x the first block's width
  const int layers = c.layers_per_block;
  const std::vector<int>& depth = c.transformer_layers_per_block;
  HYRT_CHECK(static_cast<int>(depth.size()) == nb, kInvalidArgument,
             "UNet config: transformer_layers_per_block has ", depth.size(), " entries for ", nb,
             " levels");

  e.linear(p + ".time_embedding.linear_1", ch[0], temb);
  e.linear(p + ".time_embedding.linear_2", temb, temb);
  if (c.time_cond_proj_dim > 0)
    e.linear(p + ".time_embedding.cond_proj", c.time_cond_proj_dim, ch[0], /*bias=*/false);
  if (c.text_time_embedding()) {
    e.linear(p + ".add_embedding.linear_1", c.projection_class_embeddings_input_dim, temb);
    e.linear(p + ".add_embedding.linear_2", temb, temb);
  }
  e.conv(p + ".conv_in", c.in_channels, ch[0], 3);

  int64_t prev = ch[0];
  for (int i = 0; i < nb; ++i) {
    const std::string b = at(p + ".down_blocks", i);
    const bool attn = c.down_block_types[i] == "CrossAttnDownBlock2D";
    for (int l = 0; l < layers; ++l) {
      resnet(e, at(b + ".resnets", l), l == 0 ? prev : ch[i], ch[i], temb);
      if (attn) transformer(e, at(b + ".attentions", l), ch[i], c, depth[i]);
    }
    if (i != nb - 1) e.conv(b + ".downsamplers.0.conv", ch[i], ch[i], 3);
    prev = ch[i];
  }

  const int64_t mid = ch[nb - 1];
  resnet(e, p + ".mid_block.resnets.0", mid, mid, temb);
  transformer(e, p + ".mid_block.attentions.0", mid, c, depth.back());
  resnet(e, p + ".mid_block.resnets.1", mid, mid, temb);

  // Up path: level i works at reversed width rc[i]; each of its layers + 1 resnets takes
  // the previous output concatenated with one skip connection from the down path.
  std::vector<int64_t> rc(ch.rbegin(), ch.rend());
  int64_t prev_out = rc[0];
  for (int i = 0; i < nb; ++i) {
    const std::string b = at(p + ".up_blocks", i);
    const bool attn = c.up_block_types[i] == "CrossAttnUpBlock2D";
    const int64_t out_ch = rc[i];
    const int64_t in_ch = rc[std::min(i + 1, nb - 1)];
    for (int l = 0; l < layers + 1; ++l) {
      const int64_t skip = l == layers ? in_ch : out_ch;
      const int64_t res_in = l == 0 ? prev_out : out_ch;
      resnet(e, at(b + ".resnets", l), res_in + skip, out_ch, temb);
      if (attn) transformer(e, at(b + ".attentions", l), out_ch, c, depth[nb - 1 - i]);
    }
    if (i != nb - 1) e.conv(b + ".upsamplers.0.conv", out_ch, out_ch, 3);
    prev_out = out_ch;
  }

  e.norm(p + ".conv_norm_out", ch[0]);
  e.conv(p + ".conv_out", ch[0], c.out_channels, 3);
  return out;
}

std::vector<ExpectedTensor> expected_vae_tensors(const VaeConfig& c, bool decoder_only) {
  std::vector<ExpectedTensor> out;
  Expect e(&out);
  const auto& ch = c.block_out_channels;
  const int nb = static_cast<int>(ch.size());
  HYRT_CHECK(nb > 0, kInvalidArgument, "VAE config: empty block_out_channels");
  const int64_t lat = c.latent_channels;
  const int64_t top = ch[nb - 1];

  auto mid_block = [&](const std::string& p) {
    resnet(e, p + ".resnets.0", top, top, 0);
    if (c.mid_block_add_attention) vae_attention(e, p + ".attentions.0", top);
    resnet(e, p + ".resnets.1", top, top, 0);
  };

  if (!decoder_only) {
    const std::string p = "vae.encoder";
    e.conv(p + ".conv_in", c.in_channels, ch[0], 3);
    int64_t prev = ch[0];
    for (int i = 0; i < nb; ++i) {
      const std::string b = at(p + ".down_blocks", i);
      for (int l = 0; l < c.layers_per_block; ++l)
        resnet(e, at(b + ".resnets", l), l == 0 ? prev : ch[i], ch[i], 0);
      if (i != nb - 1) e.conv(b + ".downsamplers.0.conv", ch[i], ch[i], 3);
      prev = ch[i];
    }
    mid_block(p + ".mid_block");
    e.norm(p + ".conv_norm_out", top);
    e.conv(p + ".conv_out", top, 2 * lat, 3);  // mean and log-variance
    if (c.use_quant_conv) e.conv("vae.quant_conv", 2 * lat, 2 * lat, 1);
  }
  if (c.use_post_quant_conv) e.conv("vae.post_quant_conv", lat, lat, 1);

  const std::string p = "vae.decoder";
  e.conv(p + ".conv_in", lat, top, 3);
  mid_block(p + ".mid_block");
  int64_t prev = top;
  for (int i = 0; i < nb; ++i) {
    const std::string b = at(p + ".up_blocks", i);
    const int64_t out_ch = ch[nb - 1 - i];
    for (int l = 0; l < c.layers_per_block + 1; ++l)
      resnet(e, at(b + ".resnets", l), l == 0 ? prev : out_ch, out_ch, 0);
    if (i != nb - 1) e.conv(b + ".upsamplers.0.conv", out_ch, out_ch, 3);
    prev = out_ch;
  }
  e.norm(p + ".conv_norm_out", ch[0]);
  e.conv(p + ".conv_out", ch[0], c.out_channels, 3);
  return out;
}

KeyReport check_keys(const std::vector<ExpectedTensor>& expected, const weights::Checkpoint& ck,
                     weights::Component component) {
  KeyReport r;
  std::unordered_set<std::string_view> wanted;
  for (const auto& t : expected) {
    wanted.insert(t.name);
    const auto* w = ck.find(t.name);
    if (!w)
      r.missing.push_back(t.name);
    else if (w->shape != t.shape)
      r.shape_mismatch.push_back(
          str_cat(t.name, ": expected ", t.shape.to_string(), ", found ", w->shape.to_string()));
  }
  for (const auto& name : ck.names(component))
    if (!wanted.count(name)) r.unexpected.push_back(name);
  return r;
}

KeyReport check_checkpoint_keys(const weights::Checkpoint& ck, const ModelConfigs& configs) {
  KeyReport all;
  auto merge = [&](KeyReport r) {
    for (auto v : {&KeyReport::missing, &KeyReport::shape_mismatch, &KeyReport::unexpected})
      (all.*v).insert((all.*v).end(), (r.*v).begin(), (r.*v).end());
  };
  using weights::Component;
  if (configs.text_encoder)
    merge(check_keys(expected_text_encoder_tensors(*configs.text_encoder), ck,
                     Component::kTextEncoder));
  if (configs.text_encoder_2)
    merge(
        check_keys(expected_text_encoder_tensors(*configs.text_encoder_2, Component::kTextEncoder2),
                   ck, Component::kTextEncoder2));
  if (configs.unet) merge(check_keys(expected_unet_tensors(*configs.unet), ck, Component::kUNet));
  if (configs.vae) {
    // A decoder-only VAE (no encoder weights at all) is complete for text-to-image.
    const bool decoder_only = !ck.contains("vae.encoder.conv_in.weight");
    merge(check_keys(expected_vae_tensors(*configs.vae, decoder_only), ck, Component::kVae));
  }
  all.unexpected.insert(all.unexpected.end(), ck.unexpected_keys().begin(),
                        ck.unexpected_keys().end());
  return all;
}

}  // namespace hyrt::models

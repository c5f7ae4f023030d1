// Transformer2DModel / BasicTransformerBlock (UNet) and the VAE's single-head attention —
// mirror diffusers.models.transformers.transformer_2d and diffusers.models.attention.
#include "models/blocks/blocks.h"

namespace hyrt::models {

namespace {

// diffusers Attention: to_q/to_k/to_v (no bias in the UNet), to_out.0 (with bias).
ValueId attention_module(GraphBuilder& b, ValueId x, ValueId context, int heads, bool qkv_bias) {
  const ValueId kv_src = context == ir::kNone ? x : context;
  const ValueId q = b.linear(x, "to_q", qkv_bias);
  const ValueId k = b.linear(kv_src, "to_k", qkv_bias);
  const ValueId v = b.linear(kv_src, "to_v", qkv_bias);
  return b.linear(b.attention(q, k, v, heads), "to_out.0");
}

// BasicTransformerBlock (norm_type "layer_norm", GEGLU feed-forward). x: [B, T, C].
ValueId basic_transformer_block(GraphBuilder& b, ValueId x, ValueId context, int heads) {
  constexpr float kEps = 1e-5f;
  ValueId n = b.layer_norm(x, "norm1", kEps);
  {
    GraphBuilder::Scope s(b, "attn1");
    n = attention_module(b, n, ir::kNone, heads, false);
  }
  x = b.add(x, n);
  n = b.layer_norm(x, "norm2", kEps);
  {
    GraphBuilder::Scope s(b, "attn2");
    n = attention_module(b, n, context, heads, false);
  }
  x = b.add(x, n);
  n = b.layer_norm(x, "norm3", kEps);
  {
    GraphBuilder::Scope s(b, "ff.net");
    n = b.linear(b.op(ir::OpKind::kGeglu, {b.linear(n, "0.proj")}), "2");
  }
  return b.add(x, n);
}

}  // namespace

ValueId transformer_2d(GraphBuilder& b, ValueId x, ValueId context, int heads, int groups,
                       bool linear_projection, int layers) {
  const Shape s = b.shape(x);  // [B, H, W, C]
  const int64_t batch = s[0], tokens = s[1] * s[2];
  // Transformer2DModel's GroupNorm uses eps 1e-6.
  ValueId h = b.group_norm(x, "norm", groups, 1e-6f, false);
  if (linear_projection) {
    h = b.linear(b.reshape(h, {batch, tokens, s[3]}), "proj_in");
  } else {
    h = b.conv2d(h, "proj_in");  // 1x1
    h = b.reshape(h, {batch, tokens, b.shape(h)[3]});
  }
  for (int i = 0; i < layers; ++i) {
    GraphBuilder::Scope sc(b, "transformer_blocks." + std::to_string(i));
    h = basic_transformer_block(b, h, context, heads);
  }
  if (linear_projection) {
    h = b.reshape(b.linear(h, "proj_out"), {batch, s[1], s[2], s[3]});
  } else {
    h = b.conv2d(b.reshape(h, {batch, s[1], s[2], b.shape(h)[2]}), "proj_out");
  }
  return b.add(h, x);
}

ValueId vae_attention(GraphBuilder& b, ValueId x, int groups, float eps) {
  const Shape s = b.shape(x);
  ValueId h = b.group_norm(x, "group_norm", groups, eps, false);
  h = b.reshape(h, {s[0], s[1] * s[2], s[3]});
  h = attention_module(b, h, ir::kNone, /*heads=*/1, /*qkv_bias=*/true);
  h = b.reshape(h, s);
  return b.add(h, x);
}

}  // namespace hyrt::models

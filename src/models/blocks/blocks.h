// Block families shared by every model family's graph builders (internal to src/models).
// Each function emits the block in the builder's current weight scope; each mirrors the
// diffusers class named beside it, parametrised by its arguments — a new family reuses these
// rather than copying them.
#pragma once

#include "models/graph_builder.h"

namespace hyrt::models {

// diffusers ResnetBlock2D (resnet_time_scale_shift "default", output_scale_factor 1):
//   h = conv1(silu(norm1(x))) [+ time_emb_proj(temb_act)[:, None, None, :]]
//   h = conv2(silu(norm2(h)));  out = (conv_shortcut(x) if present else x) + h
// x: [B, H, W, Cin] -> [B, H, W, Cout]. temb_act: [B, Ct] = silu(time embedding), or kNone.
ValueId resnet_block(GraphBuilder& b, ValueId x, ValueId temb_act, int groups, float eps);

// diffusers Transformer2DModel (continuous input) holding BasicTransformerBlocks with
// self-attention, cross-attention on `context` and a GEGLU feed-forward.
// x: [B, H, W, C] -> [B, H, W, C]; context: [B, T, Ccross].
ValueId transformer_2d(GraphBuilder& b, ValueId x, ValueId context, int heads, int groups,
                       bool linear_projection, int layers);

// diffusers Attention as used by the VAE mid block (group_norm, one head, residual).
// x: [B, H, W, C] -> [B, H, W, C].
ValueId vae_attention(GraphBuilder& b, ValueId x, int groups, float eps);

// diffusers Upsample2D(use_conv=True): nearest upsampling — 2x, or to out_height x
// out_width when given (diffusers' `upsample_size`, used when a latent side is not a
// multiple of the UNet's total downsampling) — then a 3x3 conv named "conv".
ValueId upsample_conv(GraphBuilder& b, ValueId x, int64_t out_height = 0, int64_t out_width = 0);

}  // namespace hyrt::models

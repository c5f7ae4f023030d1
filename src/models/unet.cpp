// UNet2DConditionModel — mirrors diffusers.models.unets.unet_2d_condition (forward) with
// the block types of unet_2d_blocks that SD 1.5 and SDXL use, and SDXL's "text_time" added
// embedding (diffusers' TextTimeEmbedding path: add_time_proj + add_embedding).
#include "core/error.h"
#include "models/blocks/blocks.h"
#include "models/components.h"

namespace hyrt::models {

namespace {

bool is_cross_attn(const std::string& type) {
  return type.rfind("CrossAttn", 0) == 0;
}

void check_config(const UNetConfig& c) {
  const size_t n = c.block_out_channels.size();
  HYRT_CHECK(n >= 1 && c.down_block_types.size() == n && c.up_block_types.size() == n,
             kInvalidModel, "UNet config: ", n, " block_out_channels but ",
             c.down_block_types.size(), " down and ", c.up_block_types.size(), " up block types");
  HYRT_CHECK(c.num_attention_heads.size() == n, kInvalidModel,
             "UNet config: num_attention_heads has ", c.num_attention_heads.size(),
             " entries, expected ", n);
  for (const auto& t : c.down_block_types)
    HYRT_CHECK(t == "CrossAttnDownBlock2D" || t == "DownBlock2D", kUnsupported,
               "UNet down block type '", t, "'");
  for (const auto& t : c.up_block_types)
    HYRT_CHECK(t == "CrossAttnUpBlock2D" || t == "UpBlock2D", kUnsupported, "UNet up block type '",
               t, "'");
  HYRT_CHECK(c.layers_per_block >= 1, kInvalidModel, "UNet config: layers_per_block must be >= 1");
  HYRT_CHECK(c.transformer_layers_per_block.size() == n, kInvalidModel,
             "UNet config: transformer_layers_per_block has ",
             c.transformer_layers_per_block.size(), " entries, expected ", n);
  for (int d : c.transformer_layers_per_block)
    HYRT_CHECK(d >= 1, kInvalidModel, "UNet config: transformer_layers_per_block must be >= 1");
  HYRT_CHECK(c.addition_embed_type.empty() || c.text_time_embedding(), kUnsupported,
             "UNet addition_embed_type '", c.addition_embed_type, "'");
  HYRT_CHECK(
      !c.text_time_embedding() || (c.addition_time_embed_dim >= 2 && c.pooled_text_dim() >= 1),
      kInvalidModel, "UNet config: bad text_time sizes (addition_time_embed_dim ",
      c.addition_time_embed_dim, ", projection_class_embeddings_input_dim ",
      c.projection_class_embeddings_input_dim, ")");
}

// The micro-conditioning values time_ids hold per sample (diffusers' add_time_ids).
constexpr int kTimeIds = 6;

// SDXL's added embedding: time_ids [B, 6] -> sinusoidal [B·6, d] -> [B, 6d]; concatenated
// after text_embeds [B, P]; add_embedding (linear_1, silu, linear_2) -> [B, Ct].
ValueId text_time_embedding(GraphBuilder& b, const UNetConfig& cfg, ValueId text_embeds,
                            ValueId time_ids) {
  const int64_t batch = b.shape(time_ids)[0];
  const int d = cfg.addition_time_embed_dim;
  ValueId t = b.reshape(time_ids, {batch * kTimeIds});
  t = b.op(ir::OpKind::kTimestepEmbedding, {t},
           ir::TimestepAttrs{d, cfg.flip_sin_to_cos, cfg.freq_shift});
  t = b.reshape(t, {batch, kTimeIds * d});
  ValueId aug = b.op(ir::OpKind::kConcat, {text_embeds, t}, ir::ConcatAttrs{-1});
  GraphBuilder::Scope s(b, "add_embedding");
  return b.linear(b.silu(b.linear(aug, "linear_1")), "linear_2");
}

// The UNet's forward from (sample, timestep, context) to the predicted noise, any batch.
// The extra inputs of the text_time embedding (kNone without it).
struct AddedConditioning {
  ValueId text_embeds = ir::kNone;
  ValueId time_ids = ir::kNone;
  ValueId guidance = ir::kNone;  // LCM models: w = guidance scale − 1, [B]
};

ValueId unet_forward(GraphBuilder& b, const UNetConfig& cfg, ValueId sample, ValueId timestep,
                     ValueId context, const AddedConditioning& added) {
  const int nblocks = static_cast<int>(cfg.block_out_channels.size());
  const int groups = cfg.norm_num_groups;
  const float eps = cfg.norm_eps;
  const std::vector<int>& depth = cfg.transformer_layers_per_block;

  // Timesteps -> sinusoidal [B, C0] -> TimestepEmbedding (linear_1, silu, linear_2).
  ValueId temb =
      b.op(ir::OpKind::kTimestepEmbedding, {timestep},
           ir::TimestepAttrs{cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift});
  {
    GraphBuilder::Scope s(b, "time_embedding");
    if (cfg.time_cond_proj_dim > 0) {
      // LCM models (diffusers' TimestepEmbedding with cond_proj): the pipeline's
      // get_guidance_scale_embedding(w) — sin/cos of w · 1000 at the frequencies
      // exp(−ln(10000) · i / (half − 1)), sines first: the timestep embedding with shift 1, no
      // flip — through cond_proj (no bias), added before linear_1.
      ValueId w = b.op(ir::OpKind::kScale, {added.guidance}, ir::ScaleAttrs{1000.0f, 0.0f});
      w = b.op(ir::OpKind::kTimestepEmbedding, {w},
               ir::TimestepAttrs{cfg.time_cond_proj_dim, /*flip_sin_to_cos=*/false,
                                 /*freq_shift=*/1.0f});
      temb = b.add(temb, b.linear(w, "cond_proj", /*bias=*/false));
    }
    temb = b.linear(b.silu(b.linear(temb, "linear_1")), "linear_2");
  }
  b.tap(temb, "time_embedding");
  if (cfg.text_time_embedding()) {
    const ValueId aug = text_time_embedding(b, cfg, added.text_embeds, added.time_ids);
    b.tap(aug, "add_embedding");
    temb = b.add(temb, aug);
  }
  // Every resnet applies SiLU to the embedding first; computing it once is the same.
  const ValueId temb_act = b.silu(temb);

  ValueId h = b.conv2d(sample, "conv_in");
  b.tap(h, "conv_in");
  std::vector<ValueId> skips{h};

  for (int i = 0; i < nblocks; ++i) {
    GraphBuilder::Scope s(b, "down_blocks." + std::to_string(i));
    const bool attn = is_cross_attn(cfg.down_block_types[i]);
    for (int j = 0; j < cfg.layers_per_block; ++j) {
      {
        GraphBuilder::Scope r(b, "resnets." + std::to_string(j));
        h = resnet_block(b, h, temb_act, groups, eps);
      }
      if (attn) {
        GraphBuilder::Scope a(b, "attentions." + std::to_string(j));
        h = transformer_2d(b, h, context, cfg.num_attention_heads[i], groups,
                           cfg.use_linear_projection, depth[i]);
      }
      skips.push_back(h);
    }
    if (i + 1 < nblocks) {
      GraphBuilder::Scope d(b, "downsamplers.0");
      h = b.conv2d(h, "conv", /*stride=*/2, cfg.downsample_padding);
      skips.push_back(h);
    }
    b.tap(h, "down_blocks." + std::to_string(i));
  }

  {
    GraphBuilder::Scope s(b, "mid_block");
    {
      GraphBuilder::Scope r(b, "resnets.0");
      h = resnet_block(b, h, temb_act, groups, eps);
    }
    {
      GraphBuilder::Scope a(b, "attentions.0");
      h = transformer_2d(b, h, context, cfg.num_attention_heads.back(), groups,
                         cfg.use_linear_projection, depth.back());
    }
    {
      GraphBuilder::Scope r(b, "resnets.1");
      h = resnet_block(b, h, temb_act, groups, eps);
    }
  }
  b.tap(h, "mid_block");

  for (int i = 0; i < nblocks; ++i) {
    GraphBuilder::Scope s(b, "up_blocks." + std::to_string(i));
    const bool attn = is_cross_attn(cfg.up_block_types[i]);
    const int heads = cfg.num_attention_heads[nblocks - 1 - i];
    const int up_depth = depth[nblocks - 1 - i];
    for (int j = 0; j <= cfg.layers_per_block; ++j) {
      HYRT_ASSERT(!skips.empty());
      h = b.op(ir::OpKind::kConcat, {h, skips.back()}, ir::ConcatAttrs{-1});
      skips.pop_back();
      {
        GraphBuilder::Scope r(b, "resnets." + std::to_string(j));
        h = resnet_block(b, h, temb_act, groups, eps);
      }
      if (attn) {
        GraphBuilder::Scope a(b, "attentions." + std::to_string(j));
        h = transformer_2d(b, h, context, heads, groups, cfg.use_linear_projection, up_depth);
      }
    }
    if (i + 1 < nblocks) {
      // Upsample to the size of the skip connection this level concatenates next: 2x when
      // the latent divides evenly, otherwise the odd size the downsampler produced.
      GraphBuilder::Scope u(b, "upsamplers.0");
      const Shape& next = b.shape(skips.back());
      h = upsample_conv(b, h, next[1], next[2]);
    }
    b.tap(h, "up_blocks." + std::to_string(i));
  }
  HYRT_ASSERT(skips.empty(), "UNet skip connections left over");

  return b.conv2d(b.group_norm(h, "conv_norm_out", groups, eps, /*silu=*/true), "conv_out");
}

}  // namespace

BuiltGraph build_unet(const UNetConfig& cfg, const weights::WeightSource& weights,
                      const UNetShape& shape) {
  check_config(cfg);
  HYRT_CHECK(shape.batch >= 1 && shape.latent_height >= 1 && shape.latent_width >= 1,
             kInvalidArgument, "UNet: bad latent size ", shape.latent_height, "x",
             shape.latent_width);
  HYRT_CHECK(
      !(shape.taps && shape.independent_samples && shape.batch > 1), kInvalidArgument,
      "UNet: taps name one chain of nodes; they cannot be combined with independent_samples");
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, "unet");
  b.enable_taps(shape.taps);
  const ValueId sample =
      graph->add_input("sample", DType::kF32,
                       {shape.batch, shape.latent_height, shape.latent_width, cfg.in_channels});
  const ValueId timestep = graph->add_input("timestep", DType::kF32, {shape.batch});
  const ValueId context =
      graph->add_input("encoder_hidden_states", DType::kF32,
                       {shape.batch, shape.context_tokens, cfg.cross_attention_dim});
  AddedConditioning added;
  if (cfg.text_time_embedding()) {
    added.text_embeds =
        graph->add_input("text_embeds", DType::kF32, {shape.batch, cfg.pooled_text_dim()});
    added.time_ids = graph->add_input("time_ids", DType::kF32, {shape.batch, kTimeIds});
    graph->set_run_invariant(added.text_embeds);
    graph->set_run_invariant(added.time_ids);
  }
  if (cfg.time_cond_proj_dim > 0) {
    added.guidance = graph->add_input("guidance_scale", DType::kF32, {shape.batch});
    graph->set_run_invariant(added.guidance);
  }
  // The text conditioning is the same for every step of a picture: what only it feeds (the
  // cross-attention keys and values, SDXL's added embedding) an executable may keep across
  // steps (exec/executable.h, "Run-invariant prefix").
  graph->set_run_invariant(context);
  if (!shape.independent_samples || shape.batch == 1) {
    auto taps = b.finish(unet_forward(b, cfg, sample, timestep, context, added));
    return {graph, std::move(taps)};
  }
  // One chain of nodes per sample (the same weights), joined at the end.
  std::vector<ValueId> outs;
  for (int i = 0; i < shape.batch; ++i) {
    auto one = [&](ValueId v) {
      return v == ir::kNone ? v : b.op(ir::OpKind::kSlice, {v}, ir::SliceAttrs{0, i, 1});
    };
    outs.push_back(
        unet_forward(b, cfg, one(sample), one(timestep), one(context),
                     {one(added.text_embeds), one(added.time_ids), one(added.guidance)}));
  }
  auto taps = b.finish(b.op(ir::OpKind::kConcat, outs, ir::ConcatAttrs{0}));
  return {graph, std::move(taps)};
}

}  // namespace hyrt::models

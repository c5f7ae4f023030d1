// AutoencoderKL — the decoder mirrors diffusers.models.autoencoders.vae.Decoder (with
// UNetMidBlock2D and UpDecoderBlock2D) preceded by AutoencoderKL's post_quant_conv; the
// encoder mirrors vae.Encoder (DownEncoderBlock2D, UNetMidBlock2D) followed by quant_conv.
#include "core/error.h"
#include "models/blocks/blocks.h"
#include "models/components.h"

namespace hyrt::models {

namespace {

constexpr float kEps = 1e-6f;  // the VAE's resnets, attention and output norms

// UNetMidBlock2D as the VAE uses it (no time embedding): resnet, [attention], resnet.
ValueId vae_mid_block(GraphBuilder& b, ValueId h, const VaeConfig& cfg) {
  GraphBuilder::Scope s(b, "mid_block");
  {
    GraphBuilder::Scope r(b, "resnets.0");
    h = resnet_block(b, h, ir::kNone, cfg.norm_num_groups, kEps);
  }
  if (cfg.mid_block_add_attention) {
    GraphBuilder::Scope a(b, "attentions.0");
    h = vae_attention(b, h, cfg.norm_num_groups, kEps);
  }
  {
    GraphBuilder::Scope r(b, "resnets.1");
    h = resnet_block(b, h, ir::kNone, cfg.norm_num_groups, kEps);
  }
  return h;
}

// One zero row (axis 1) or column (axis 2) appended to x [B, H, W, C]: the zeros are a slice
// of x times 0, exact for finite x (a non-finite x spoils the result whatever pads it).
ValueId pad_end_with_zero(GraphBuilder& b, ValueId x, int axis) {
  const int64_t len = b.shape(x)[axis];
  const ValueId edge = b.op(ir::OpKind::kSlice, {x}, ir::SliceAttrs{axis, len - 1, 1});
  const ValueId zero = b.op(ir::OpKind::kScale, {edge}, ir::ScaleAttrs{0.0f, 0.0f});
  return b.op(ir::OpKind::kConcat, {x, zero}, ir::ConcatAttrs{axis});
}

}  // namespace

BuiltGraph build_vae_encoder(const VaeConfig& cfg, const weights::WeightSource& weights, int batch,
                             int height, int width, bool wide_range) {
  const int nblocks = static_cast<int>(cfg.block_out_channels.size());
  HYRT_CHECK(!cfg.block_out_channels.empty() && cfg.layers_per_block >= 1, kInvalidModel,
             "VAE config: empty block_out_channels or layers_per_block < 1");
  const int factor = 1 << (nblocks - 1);
  HYRT_CHECK(batch >= 1 && height >= factor && width >= factor && height % factor == 0 &&
                 width % factor == 0,
             kInvalidArgument, "VAE encoder: image size ", height, "x", width,
             " is not a positive multiple of ", factor);
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, "vae");
  const int groups = cfg.norm_num_groups;
  ValueId h = graph->add_input("image", DType::kF32, {batch, height, width, cfg.in_channels});
  if (wide_range) {  // as the decoder: diffusers upcasts the whole VAE under force_upcast
    graph->set_wide_range(h);
    b.set_wide_range(true);
  }
  {
    GraphBuilder::Scope enc(b, "encoder");
    h = b.conv2d(h, "conv_in");
    for (int i = 0; i < nblocks; ++i) {
      GraphBuilder::Scope s(b, "down_blocks." + std::to_string(i));
      for (int j = 0; j < cfg.layers_per_block; ++j) {
        GraphBuilder::Scope r(b, "resnets." + std::to_string(j));
        h = resnet_block(b, h, ir::kNone, groups, kEps);
      }
      if (i + 1 < nblocks) {
        // Downsample2D(use_conv=True, padding=0): F.pad(x, (0, 1, 0, 1)) — one zero column
        // on the right and one zero row at the bottom — then a 3x3 stride-2 conv, padding 0.
        GraphBuilder::Scope d(b, "downsamplers.0");
        h = pad_end_with_zero(b, pad_end_with_zero(b, h, 2), 1);
        h = b.conv2d(h, "conv", /*stride=*/2, /*padding=*/0);
      }
    }
    h = vae_mid_block(b, h, cfg);
    h = b.conv2d(b.group_norm(h, "conv_norm_out", groups, kEps, /*silu=*/true), "conv_out");
  }
  if (cfg.use_quant_conv) h = b.conv2d(h, "quant_conv");
  return {graph, b.finish(h)};
}

BuiltGraph build_vae_decoder(const VaeConfig& cfg, const weights::WeightSource& weights, int batch,
                             int latent_height, int latent_width, bool unscale, bool wide_range) {
  HYRT_CHECK(batch >= 1 && latent_height >= 1 && latent_width >= 1, kInvalidArgument,
             "VAE decoder: bad latent size ", latent_height, "x", latent_width);
  HYRT_CHECK(!cfg.block_out_channels.empty() && cfg.layers_per_block >= 1, kInvalidModel,
             "VAE config: empty block_out_channels or layers_per_block < 1");
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, "vae");
  const int groups = cfg.norm_num_groups;
  const int nblocks = static_cast<int>(cfg.block_out_channels.size());

  ValueId h = graph->add_input("latent", DType::kF32,
                               {batch, latent_height, latent_width, cfg.latent_channels});
  // The decoder's activations may overflow f16 (the real SDXL VAE: force_upcast), so every
  // value is wide-range and placement keeps it off backends that would hold it in f16.
  if (wide_range) {
    graph->set_wide_range(h);
    b.set_wide_range(true);
  }
  if (unscale) h = b.op(ir::OpKind::kScale, {h}, ir::ScaleAttrs{1.0f / cfg.scaling_factor, 0.0f});
  if (cfg.use_post_quant_conv) h = b.conv2d(h, "post_quant_conv");

  GraphBuilder::Scope dec(b, "decoder");
  h = b.conv2d(h, "conv_in");
  h = vae_mid_block(b, h, cfg);
  for (int i = 0; i < nblocks; ++i) {
    GraphBuilder::Scope s(b, "up_blocks." + std::to_string(i));
    for (int j = 0; j <= cfg.layers_per_block; ++j) {
      GraphBuilder::Scope r(b, "resnets." + std::to_string(j));
      h = resnet_block(b, h, ir::kNone, groups, kEps);
    }
    if (i + 1 < nblocks) {
      GraphBuilder::Scope u(b, "upsamplers.0");
      h = upsample_conv(b, h);
    }
  }
  h = b.conv2d(b.group_norm(h, "conv_norm_out", groups, kEps, /*silu=*/true), "conv_out");
  return {graph, b.finish(h)};
}

}  // namespace hyrt::models

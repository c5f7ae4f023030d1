// AutoencoderKL decoder — mirrors diffusers.models.autoencoders.vae.Decoder (with
// UNetMidBlock2D and UpDecoderBlock2D) preceded by AutoencoderKL's post_quant_conv.
#include "core/error.h"
#include "models/blocks/blocks.h"
#include "models/components.h"

namespace hyrt::models {

BuiltGraph build_vae_decoder(const VaeConfig& cfg, const weights::WeightSource& weights, int batch,
                             int latent_height, int latent_width, bool unscale, bool wide_range) {
  HYRT_CHECK(batch >= 1 && latent_height >= 1 && latent_width >= 1, kInvalidArgument,
             "VAE decoder: bad latent size ", latent_height, "x", latent_width);
  HYRT_CHECK(!cfg.block_out_channels.empty() && cfg.layers_per_block >= 1, kInvalidModel,
             "VAE config: empty block_out_channels or layers_per_block < 1");
  auto graph = std::make_shared<ir::Graph>();
  GraphBuilder b(*graph, weights, "vae");
  constexpr float kEps = 1e-6f;  // the decoder's resnets, attention and output norm
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
  {
    GraphBuilder::Scope s(b, "mid_block");
    {
      GraphBuilder::Scope r(b, "resnets.0");
      h = resnet_block(b, h, ir::kNone, groups, kEps);
    }
    if (cfg.mid_block_add_attention) {
      GraphBuilder::Scope a(b, "attentions.0");
      h = vae_attention(b, h, groups, kEps);
    }
    {
      GraphBuilder::Scope r(b, "resnets.1");
      h = resnet_block(b, h, ir::kNone, groups, kEps);
    }
  }
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

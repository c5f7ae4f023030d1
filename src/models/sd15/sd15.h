// Graph builders for the three Stable Diffusion 1.5 components. Each mirrors the
// diffusers/transformers module named beside it and reads every size from the config
// and the checkpoint's tensor shapes — nothing is hard-coded to SD 1.5's dimensions.
//
// Weight names are canonical ("<component>.<diffusers key>", see weights::Checkpoint).
// Activations are channels-last (core/tensor.h): images and latents NHWC, tokens [B, T, C].
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"
#include "models/sd15/config.h"
#include "weights/weight_source.h"

namespace hyrt::models::sd15 {

struct BuiltGraph {
  std::shared_ptr<ir::Graph> graph;
  // Named intermediate outputs for locating mismatches (only when requested); each is
  // also a graph output after the main one.
  std::vector<std::pair<std::string, ir::ValueId>> taps;
};

// transformers CLIPTextModel -> last_hidden_state (after final_layer_norm).
// Inputs: "input_ids" s32 [batch, seq], "position_ids" s32 [1, seq] (0..seq-1).
// Output 0: [batch, seq, hidden_size].
BuiltGraph build_clip_text_encoder(const ClipTextConfig& config,
                                   const weights::WeightSource& weights, int batch, int seq = 77);

struct UNetShape {
  int batch = 2;  // CFG: unconditional + conditional in one call
  int latent_height = 64;
  int latent_width = 64;
  int context_tokens = 77;
  bool taps = false;  // time_embedding, conv_in, down_blocks.k, mid_block, up_blocks.k
  // One independent chain of nodes per sample (inputs sliced, outputs concatenated), the
  // same computation: lets a host and an accelerator work on the two CFG halves at once
  // (plan/schedule.h). One batched chain runs faster where a single backend runs it all.
  // Not with taps.
  bool independent_samples = false;
};

// diffusers UNet2DConditionModel (SD 1.5 blocks: CrossAttnDownBlock2D, DownBlock2D,
// UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D).
// Inputs: "sample" [B, h, w, in_channels], "timestep" f32 [B],
//         "encoder_hidden_states" [B, context_tokens, cross_attention_dim].
// Output 0: the predicted noise [B, h, w, out_channels].
BuiltGraph build_unet(const UNetConfig& config, const weights::WeightSource& weights,
                      const UNetShape& shape);

// diffusers AutoencoderKL.decode: post_quant_conv + Decoder.
// Input: "latent" [B, h, w, latent_channels]; when `unscale` is set the graph first
// multiplies by 1/scaling_factor (what StableDiffusionPipeline does before decode).
// Output 0: the image [B, 8h, 8w, out_channels] in about [-1, 1] (for 4 blocks).
BuiltGraph build_vae_decoder(const VaeConfig& config, const weights::WeightSource& weights,
                             int batch, int latent_height, int latent_width, bool unscale);

}  // namespace hyrt::models::sd15

// Graph builders for the components of SD 1.5- and SDXL-family models. Each mirrors the
// diffusers/transformers module named beside it and reads every size and option from the
// config (models/config.h) and the checkpoint's tensor shapes — nothing is hard-coded to one
// family's dimensions: SDXL is the same modules with other settings.
//
// Weight names are canonical ("<component>.<diffusers key>", see weights::Checkpoint).
// Activations are channels-last (core/tensor.h): images and latents NHWC, tokens [B, T, C].
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ir/graph.h"
#include "models/config.h"
#include "weights/weight_source.h"

namespace hyrt::models {

struct BuiltGraph {
  std::shared_ptr<ir::Graph> graph;
  // Named intermediate outputs for locating mismatches (only when requested); each is
  // also a graph output after the main one.
  std::vector<std::pair<std::string, ir::ValueId>> taps;
};

// Which hidden states a text encoder graph returns.
struct TextEncoderShape {
  int batch = 1;
  int seq = 77;
  // Output 0: 0 = last_hidden_state, after final_layer_norm (what SD 1.5 conditions on);
  // k > 0 = transformers' hidden_states[-1 - k], the output of layer n-1-k without the final
  // norm (SDXL: k = 1, the penultimate state; A1111's "CLIP skip" s is k = s - 1). Layers
  // after the one returned are not built unless `last_hidden` asks for them.
  int skip_layers = 0;
  // With skip_layers > 0, still apply final_layer_norm to the state returned: CLIP skip on SD 1.x
  // (A1111's CLIP_stop_at_last_layers and diffusers' clip_skip normalise the earlier layer's
  // output as if it were the last; SDXL's penultimate state is used as is).
  bool norm_skipped = false;
  // Also return (as the next output) the last layer's output before final_layer_norm: the
  // states the pooled output is taken from (build_text_pooled_projection).
  bool last_hidden = false;
};

// transformers CLIPTextModel / CLIPTextModelWithProjection (the encoder part) of text
// encoder `which` (weights under "<component>.text_model.").
// Inputs: "input_ids" s32 [batch, seq], "position_ids" s32 [1, seq] (0..seq-1).
// Output 0: [batch, seq, hidden_size] as TextEncoderShape::skip_layers says; output 1 (with
// last_hidden): [batch, seq, hidden_size].
BuiltGraph build_clip_text_encoder(const ClipTextConfig& config,
                                   const weights::WeightSource& weights,
                                   const TextEncoderShape& shape,
                                   weights::Component which = weights::Component::kTextEncoder);

// CLIPTextModelWithProjection's pooled, projected output from the last layer's hidden state
// at each prompt's end-of-text token (gathered by the caller: the position depends on the
// prompt, the graph does not): final_layer_norm, then text_projection (no bias).
// Input: "hidden" [batch, hidden_size]. Output 0: "text_embeds" [batch, projection_dim].
// kInvalidModel if config.projection_dim is 0.
BuiltGraph build_text_pooled_projection(const ClipTextConfig& config,
                                        const weights::WeightSource& weights, int batch,
                                        weights::Component which);

struct UNetShape {
  int batch = 2;  // CFG: unconditional + conditional in one call
  int latent_height = 64;
  int latent_width = 64;
  int context_tokens = 77;
  // time_embedding, add_embedding (SDXL), conv_in, down_blocks.k, mid_block, up_blocks.k
  bool taps = false;
  // One independent chain of nodes per sample (inputs sliced, outputs concatenated), the
  // same computation: lets a host and an accelerator work on the two CFG halves at once
  // (plan/schedule.h). One batched chain runs faster where a single backend runs it all.
  // Not with taps.
  bool independent_samples = false;
};

// diffusers UNet2DConditionModel (blocks: CrossAttnDownBlock2D, DownBlock2D,
// UNetMidBlock2DCrossAttn, UpBlock2D, CrossAttnUpBlock2D; SDXL's "text_time" added embedding).
// Inputs: "sample" [B, h, w, in_channels], "timestep" f32 [B],
//         "encoder_hidden_states" [B, context_tokens, cross_attention_dim];
//         with time_cond_proj_dim (LCM models) also "guidance_scale" f32 [B] (w = the
//         guidance scale − 1, embedded as diffusers' get_guidance_scale_embedding);
//         with the text_time embedding also "text_embeds" [B, pooled_text_dim()] and
//         "time_ids" f32 [B, 6] (original h, w; crop top, left; target h, w).
// Output 0: the predicted noise [B, h, w, out_channels].
BuiltGraph build_unet(const UNetConfig& config, const weights::WeightSource& weights,
                      const UNetShape& shape);

// diffusers AutoencoderKL.decode: post_quant_conv + Decoder.
// Input: "latent" [B, h, w, latent_channels]; when `unscale` is set the graph first
// multiplies by 1/scaling_factor (what StableDiffusionPipeline does before decode).
// Output 0: the image [B, 8h, 8w, out_channels] in about [-1, 1] (for 4 blocks).
// With `wide_range` every value of the graph is wide-range (ir::Value::wide_range): what a
// pipeline asks for when the VAE's activations overflow f16 (SDXL's force_upcast).
BuiltGraph build_vae_decoder(const VaeConfig& config, const weights::WeightSource& weights,
                             int batch, int latent_height, int latent_width, bool unscale,
                             bool wide_range = false);

// diffusers AutoencoderKL.encode: Encoder, then quant_conv (when the config uses it).
// Input: "image" [B, H, W, in_channels] in [-1, 1], H and W multiples of 2^(blocks - 1).
// Output 0: the latent distribution's moments [B, H/f, W/f, 2 * latent_channels]: channels
// [0, latent_channels) the mean, the rest the log-variance before DiagonalGaussianDistribution
// clamps it to [-30, 20] (the caller does that). `wide_range` as for the decoder.
BuiltGraph build_vae_encoder(const VaeConfig& config, const weights::WeightSource& weights,
                             int batch, int height, int width, bool wide_range = false);

// A TAESD decoder's layout (diffusers DecoderTiny), read off its weights
// (`taesd.decoder.layers.<i>.*`, weights::TinyAutoencoderWeights): conv, ReLU, then stages of
// AutoencoderTinyBlocks each followed by a 2x nearest upsample and a convolution, the last
// stage's convolution giving the picture.
struct TinyVaeDecoderLayout {
  int latent_channels = 0;  // the first convolution's input channels
  int out_channels = 0;     // the last convolution's output channels
  int upscale = 1;          // 2^(upsamples): the pixel size of one latent
  int layers = 0;           // diffusers' layer count (indices 0 … layers − 1)
};
// Throws kInvalidModel naming the layer when the weights do not form a DecoderTiny.
TinyVaeDecoderLayout inspect_tiny_vae_decoder(const weights::WeightSource& weights);

// diffusers AutoencoderTiny.decode (DecoderTiny.forward): tanh(x / 3) · 3, the layers, then
// x · 2 − 1. Input: "latent" [B, h, w, latent_channels], the latents as the UNet makes them
// (AutoencoderTiny's scaling factor is 1). Output 0: the image [B, up·h, up·w, out_channels]
// in about [-1, 1], as build_vae_decoder's.
BuiltGraph build_tiny_vae_decoder(const weights::WeightSource& weights, int batch,
                                  int latent_height, int latent_width);

}  // namespace hyrt::models

// The weights an SD 1.5- or SDXL-family model needs, by canonical name (weights/ldm_names.h)
// and shape, derived from its configs — and a comparison of that list against a checkpoint.
//
// Naming mirrors diffusers/transformers: CLIPTextModel (text_model.*; WithProjection adds
// text_projection.weight),
// UNet2DConditionModel (CrossAttnDownBlock2D / DownBlock2D / UNetMidBlock2DCrossAttn /
// UpBlock2D / CrossAttnUpBlock2D; Transformer2DModel; ResnetBlock2D), AutoencoderKL
// (Encoder, Decoder, quant_conv, post_quant_conv). Shapes are PyTorch's: conv weights
// [out, in, kh, kw], linear weights [out, in]; VAE attention projections are linear.
//
// Pure functions: thread-safe.
#pragma once

#include <string>
#include <vector>

#include "core/shape.h"
#include "models/config.h"
#include "weights/checkpoint.h"

namespace hyrt::models {

struct ExpectedTensor {
  std::string name;  // canonical, component-prefixed
  Shape shape;
};

std::vector<ExpectedTensor> expected_text_encoder_tensors(
    const ClipTextConfig& c, weights::Component which = weights::Component::kTextEncoder);
std::vector<ExpectedTensor> expected_unet_tensors(const UNetConfig& c);
// decoder_only: only what decoding latents needs (post_quant_conv + decoder).
std::vector<ExpectedTensor> expected_vae_tensors(const VaeConfig& c, bool decoder_only = false);

struct KeyReport {
  std::vector<std::string> missing;         // expected, absent from the checkpoint
  std::vector<std::string> shape_mismatch;  // "name: expected [..], found [..]"
  std::vector<std::string> unexpected;      // present but not expected (canonical or original)
  bool ok() const { return missing.empty() && shape_mismatch.empty() && unexpected.empty(); }
};

// Compares `expected` with the checkpoint's weights of `component`: every checkpoint
// name of that component not in `expected` is unexpected.
KeyReport check_keys(const std::vector<ExpectedTensor>& expected, const weights::Checkpoint& ck,
                     weights::Component component);

// All components that have a config in `configs`, plus the checkpoint's unmappable keys
// (Checkpoint::unexpected_keys()) as unexpected. Ignored keys are not reported.
KeyReport check_checkpoint_keys(const weights::Checkpoint& ck, const ModelConfigs& configs);

}  // namespace hyrt::models

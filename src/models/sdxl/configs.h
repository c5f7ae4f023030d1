// The configs of SDXL-family models that hyrt builds without a checkpoint: the real SDXL
// base size (random-weight benchmarks and `make-random-checkpoint --arch sdxl`) and a tiny
// one of the same architecture (self-checks and tests). Values are diffusers'
// stabilityai/stable-diffusion-xl-base-1.0 configs: the UNet, VAE and both text encoders are
// the shared diffusers/transformers classes (models/config.h) with SDXL's settings.
// Pure functions: thread-safe.
#pragma once

#include "models/config.h"

namespace hyrt::models::sdxl {

// SDXL base 1.0: text encoders CLIP ViT-L/14 (768 wide, 12 layers, quick_gelu) and OpenCLIP
// ViT-bigG/14 (1280 wide, 32 layers, gelu, 1280-wide projection); UNet 320/640/1280 with
// transformer depths 1/2/10 (none at the highest resolution), 64-wide heads, cross-attention
// 2048, text_time embedding 256 · 6 + 1280 = 2816; VAE as SD 1.5's with scaling 0.13025.
ModelConfigs base_configs();

// The architecture at a tiny size: the sizes of ../shared/golden/sdxl-tiny.
ModelConfigs tiny_configs();

}  // namespace hyrt::models::sdxl

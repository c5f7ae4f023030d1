// Text to image — mirrors diffusers' StableDiffusionPipeline.__call__ and, for SDXL models,
// StableDiffusionXLPipeline.__call__: encode the prompt and the negative prompt, draw the
// initial latents, run the sampler with classifier-free guidance (unconditional and
// conditional batched in one UNet call), decode with the VAE, map [-1, 1] to [0, 1].
//
// SDXL specifics: the conditioning is both encoders' penultimate states plus the pooled
// embedding and the size micro-conditioning (original size, crop top-left, target size:
// Txt2ImgParams); with no negative prompt at all (nullopt, not "") and the model's
// force_zeros_for_empty_prompt, the negative conditioning is zeros.
//
// Noise: TorchCpuRng (rng.h) seeded with `seed` draws the initial latents as
// torch.randn([B, 4, h, w]) in NCHW order — so a seed gives diffusers' latents for a CPU
// generator — and Euler a draws its per-step noise from the same generator. The loop keeps
// latents in NCHW (as diffusers does) and converts to hyrt's NHWC around each UNet call.
#pragma once

#include <array>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "pipeline/clip_tokenizer.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/scheduler.h"

namespace hyrt::pipeline {

struct Txt2ImgParams {
  std::string prompt;
  // nullopt: no negative prompt. SD 1.5 then encodes "" (as diffusers does); SDXL models
  // with force_zeros_for_empty_prompt use zero negative conditioning instead. "" is encoded
  // like any other prompt in both families.
  std::optional<std::string> negative_prompt;
  int width = 512;  // pixels; any multiple of the VAE factor (8)
  int height = 512;
  // SDXL micro-conditioning, in pixels as (height, width) / (top, left) like diffusers:
  // nullopt sizes mean the image size (diffusers' defaults).
  std::optional<std::array<int, 2>> original_size;
  std::array<int, 2> crop_top_left = {0, 0};
  std::optional<std::array<int, 2>> target_size;
  int steps = 20;
  float cfg_scale = 7.5f;  // <= 1 disables guidance (one UNet batch per step)
  uint64_t seed = 0;
  SamplerKind sampler = SamplerKind::kEulerAncestral;
  int batch = 1;
  // Unscaled standard-normal initial latents, NCHW [batch, C, h, w] f32 (diffusers'
  // `latents=` argument); drawn from the seed when absent.
  std::optional<Tensor> initial_latents;
  // Free each model stage (text encoder, UNet) once this call is done with it, so the
  // peak memory is the largest stage rather than all of them (for one-shot jobs such as
  // the CLI; a later call recompiles the stages, which costs seconds at real size).
  bool release_stages = false;
  // Called after each denoising step with (step index + 1, steps).
  std::function<void(int, int)> on_step;
};

struct Txt2ImgTimings {
  double text_ms = 0;
  double denoise_ms = 0;     // the whole sampler loop
  double first_step_ms = 0;  // includes compiling the UNet for this shape
  double decode_ms = 0;
};

struct Txt2ImgResult {
  Tensor images;  // [batch, H, W, 3] f32 in [0, 1] (before rounding to 8 bits)
  Txt2ImgTimings timings;
  std::vector<std::string> warnings;  // e.g. prompt truncation
};

// Validates `params` (sizes, steps, batch) with clear errors, then generates.
Txt2ImgResult txt2img(DiffusionModel& model, const SchedulerConfig& scheduler,
                      const Txt2ImgParams& params);

// The checks txt2img runs first, available to CLIs that want to fail before loading.
void validate_txt2img_params(const Txt2ImgParams& params, int size_multiple);

}  // namespace hyrt::pipeline

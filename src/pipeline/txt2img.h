// Text to image — mirrors diffusers' StableDiffusionPipeline.__call__: encode the prompt
// and the negative prompt, draw the initial latents, run the sampler with classifier-free
// guidance (unconditional and conditional batched in one UNet call), decode with the VAE,
// map [-1, 1] to [0, 1].
//
// Noise: TorchCpuRng (rng.h) seeded with `seed` draws the initial latents as
// torch.randn([B, 4, h, w]) in NCHW order — so a seed gives diffusers' latents for a CPU
// generator — and Euler a draws its per-step noise from the same generator. The loop keeps
// latents in NCHW (as diffusers does) and converts to hyrt's NHWC around each UNet call.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "pipeline/clip_tokenizer.h"
#include "pipeline/scheduler.h"
#include "pipeline/sd15_model.h"

namespace hyrt::pipeline {

struct Txt2ImgParams {
  std::string prompt;
  std::string negative_prompt;
  int width = 512;  // pixels; a multiple of 8 · 2^(UNet blocks − 1) for SD 1.5-like UNets
  int height = 512;
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
Txt2ImgResult txt2img(Sd15Model& model, const ClipTokenizer& tokenizer,
                      const SchedulerConfig& scheduler, const Txt2ImgParams& params);

// The checks txt2img runs first, available to CLIs that want to fail before loading.
void validate_txt2img_params(const Txt2ImgParams& params, int size_multiple);

}  // namespace hyrt::pipeline

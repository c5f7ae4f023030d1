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
// img2img and inpainting (Txt2ImgParams::init, the same loop) mirror diffusers'
// StableDiffusionImg2ImgPipeline and StableDiffusionInpaintPipeline: the picture is encoded
// by the VAE, noised to the timestep where the shortened schedule starts (strength), and
// denoised from there. With a mask and an ordinary (4-channel) UNet, after every step the
// latents outside the mask are replaced by the picture's latents noised to the next timestep;
// an inpainting UNet (in_channels = 2·latent + 1) instead sees the mask and the masked
// picture's latents beside the latents at every step.
//
// Noise: TorchCpuRng (rng.h) seeded with `seed` draws the initial latents as
// torch.randn([B, 4, h, w]) in NCHW order — so a seed gives diffusers' latents for a CPU
// generator — and Euler a draws its per-step noise from the same generator. The loop keeps
// latents in NCHW (as diffusers does) and converts to hyrt's NHWC around each UNet call.
#pragma once

#include <array>
#include <exception>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "pipeline/clip_tokenizer.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/image_io.h"
#include "pipeline/scheduler.h"

namespace hyrt::pipeline {

// The picture img2img and inpainting start from.
struct InitImage {
  // NHWC [1 or batch, height, width, 3] f32 in [0, 1], at the params' width and height (the
  // caller resizes, as diffusers' VaeImageProcessor does); normalised to [-1, 1] here.
  Tensor image;
  // How much of the schedule runs, in (0, 1]: steps · strength of them (diffusers'
  // get_timesteps). 1 starts from pure noise (for a 4-channel model still anchored outside
  // the mask).
  double strength = 0.8;
  // Instead of `image` (left empty): latents NCHW [1 or batch, C, height/f, width/f], already
  // × scaling_factor — diffusers' img2img given a 4-channel `image`: no VAE encode and no draw
  // for it, the noise is the generator's first draw. Not with a mask.
  std::optional<Tensor> latents;
  // Inpainting: NHWC [1, height, width, 1] in [0, 1], 1 = repaint; binarised at 0.5 and
  // resized to the latent size by nearest neighbour (diffusers' mask processor and
  // prepare_mask_latents). Absent: img2img.
  std::optional<Tensor> mask;
};

// A1111's "hires fix": the picture drawn at the params' size, upscaled, and drawn again from it
// as img2img at the larger size. The upscale is A1111's pixel one: the 8-bit picture resized by
// Lanczos (Pillow's filter, as the init images of img2img are), so a hires call gives exactly
// what saving the first picture and running img2img on it with the same seed gives.
struct HiresFix {
  // How the first pass is made larger: kLanczos as above; A1111's "Latent" (kLatent: its final
  // latents resized bilinearly, torch's interpolate without antialiasing, as diffusers' img2img
  // takes latents: no decode of the first pass, no VAE encode) and "Latent (nearest)".
  enum class Upscaler { kLanczos, kLatent, kLatentNearest };
  Upscaler upscaler = Upscaler::kLanczos;
  double scale = 2.0;     // the larger size: the params' size × scale (A1111's hr_scale) ...
  int width = 0;          // ... unless width / height are given (hr_resize_x / hr_resize_y; one
  int height = 0;         // alone keeps the aspect ratio); rounded down to the VAE factor
  int steps = 0;          // the second pass's steps (hr_second_pass_steps); 0: the params' steps
  double strength = 0.7;  // its denoising strength, (0, 1] (A1111's denoising_strength)
};

// The second pass's size for a first pass of width x height (VAE factor m): hires.width/height
// when given (one alone scales the other by the aspect ratio), else the size × scale; rounded
// down to a multiple of m, at least m.
std::array<int, 2> hires_size(const HiresFix& hires, int width, int height, int m);

// The hires fix in A1111's parameters text: "Denoising strength", "Hires upscale" (or "Hires
// resize: WxH"), "Hires steps" (when set), "Hires upscaler" (Lanczos, Latent, Latent (nearest)).
// hires_upscaler_name / parse_hires_upscaler: those names (parse: case-insensitive;
// kInvalidArgument listing them for another).
std::string_view hires_upscaler_name(HiresFix::Upscaler u);
HiresFix::Upscaler parse_hires_upscaler(std::string_view name);
void add_hires_parameters(const HiresFix& hires, GenerationParameters& gp);

// Move-only (tensors). A field added here is also copied by txt2img.cpp's settings_of().
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
  // A1111's "Clip skip" (DiffusionModel::encode_tokens): 1 = the family's usual text state.
  int clip_skip = 1;
  uint64_t seed = 0;
  SamplerKind sampler = SamplerKind::kEulerAncestral;
  int batch = 1;
  // Unscaled standard-normal initial latents, NCHW [batch, C, h, w] f32 (diffusers'
  // `latents=` argument); drawn from the seed when absent.
  std::optional<Tensor> initial_latents;
  // img2img / inpainting; absent: txt2img. Not with initial_latents. Draws from the seeded
  // generator in diffusers' order: the picture's latent sample (mean + std·randn; skipped by
  // an inpainting UNet at strength 1, which does not use it), the noise, then with a mask the
  // masked picture's latent sample.
  std::optional<InitImage> init;
  // LoRAs for this call (DiffusionModel::set_loras before the text encoders; an empty list
  // removes them); nullopt leaves the model's LoRAs as they are. Calls batch together only with
  // the same LoRAs.
  std::optional<std::vector<weights::LoraUse>> loras;
  // Free each model stage (text encoder, VAE encoder, UNet) once this call is done with it, so the
  // peak memory is the largest stage rather than all of them (for one-shot jobs such as
  // the CLI; a later call recompiles the stages, which costs seconds at real size).
  bool release_stages = false;
  // The hires fix (txt2img only; such a call runs alone, never in a batch with others). Both
  // passes report to on_step, on_latents and on_denoised: the second pass's steps count on
  // from the first's, with the total growing by its steps when it starts. The result's images
  // are the second pass's; its timings add both passes'.
  std::optional<HiresFix> hires;
  // Decode with the model's TAESD decoder (DiffusionModel::set_tiny_vae) instead of its VAE:
  // much faster, a softer picture. kInvalidArgument when the model has none.
  bool tiny_vae = false;
  // Called after each denoising step with (steps run so far, steps that will run). An
  // exception it throws propagates out of txt2img; the model stays usable.
  std::function<void(int, int)> on_step;
  // Polled before the text encoders, before each denoising step and before the VAE decode:
  // true stops the call with hyrt::Cancelled (the model stays usable).
  std::function<bool()> cancelled;
  // Called after each denoising step with the latents, NCHW [batch, C, h, w] (parity checks).
  std::function<void(const Tensor&)> on_latents;
  // false: stop after denoising, without the VAE decode (the result holds the final latents
  // instead of images) — the hires fix's latent first pass.
  bool decode = true;
  // Live previews: called after each denoising step with (steps run so far, steps that will
  // run, the clean latents the model predicts at that step: Sampler::predicted_original of the
  // guided output, NCHW [batch, C, h, w], before 1/scaling_factor — decode_preview() makes
  // pictures of them). Computed only when set. An exception it throws ends the call as
  // on_step's does.
  std::function<void(int, int, const Tensor&)> on_denoised;
};

// A call's A1111 parameters but the prompt and the model's name, which the caller sets (the
// prompt verbatim, LoRA tags included): steps, sampler, CFG scale, seed, size (the first pass's
// under the hires fix), then in A1111's order "VAE: <vae_name>" when the call decodes with the
// TAESD, SDXL's size conditioning where set, "Denoising strength" (img2img), "Clip skip" (> 1)
// and the hires fields. One definition for the CLI's PNGs and the library's Image::parameters.
GenerationParameters generation_parameters(const DiffusionModel& model, const Txt2ImgParams& p,
                                           std::string_view vae_name);

// Latents NCHW [batch, C, h, w] (before 1/scaling_factor) to pictures NHWC [batch, H, W, 3] f32
// in [0, 1]: with the model's TAESD decoder when `tiny_vae` (kInvalidArgument without one),
// else with its VAE. What txt2img's last stage does, also for previews from on_denoised.
Tensor decode_preview(DiffusionModel& model, const Tensor& latents, bool tiny_vae);

// The first image of `latents` (NCHW, as on_denoised gives them) as an 8-bit RGB picture:
// decode_preview of its first row. What live previews show.
Image8 preview_image8(DiffusionModel& model, const Tensor& latents, bool tiny_vae);

struct Txt2ImgTimings {
  double text_ms = 0;
  double denoise_ms = 0;     // the whole sampler loop
  double first_step_ms = 0;  // includes compiling the UNet for this shape
  double decode_ms = 0;
};

struct Txt2ImgResult {
  Tensor images;  // [batch, H, W, 3] f32 in [0, 1] (before rounding to 8 bits)
  // Txt2ImgParams::decode false: the final latents NCHW [batch, C, h, w] (before
  // 1/scaling_factor) instead of images; else empty.
  Tensor latents;
  Txt2ImgTimings timings;
  std::vector<std::string> warnings;  // e.g. prompt truncation
};

// Validates `params` (sizes, steps, batch) with clear errors, then generates.
Txt2ImgResult txt2img(DiffusionModel& model, const SchedulerConfig& scheduler,
                      const Txt2ImgParams& params);

// Request batching: several independent requests in one denoising loop, each step one UNet
// batch of all of them (under guidance [negative rows of every request, positive rows of every
// request]); each request keeps its own prompts, seed (its generator draws exactly what a lone
// call's draws), sampler state, guidance scale, callbacks and cancel. The kernels compute
// every row independently of the others (per-row/per-sample activation scales, per-sample
// norms and attention), so each request's images equal those of txt2img alone with its params
// — tests/library checks that on the host and the GPU.
//
// Requests must be compatible (can_batch_together with the first; else that one fails with
// kInvalidArgument). One that fails — bad params, cancelled, its on_step throwing — ends
// alone: its outcome holds the exception, and its rows ride along frozen so the others keep
// their compiled shape. An error of the shared work (the UNet, the VAE: out of memory at a new
// batch) fails every request still running. Requests whose conditioning lengths differ (long
// prompts in chunks) run as separate loops, one after another.
struct Txt2ImgOutcome {
  Txt2ImgResult result;      // when `error` is empty
  std::exception_ptr error;  // what ended the request
};

// Whether `p` runs classifier-free guidance on `model` (a negative half in every UNet batch): a
// scale above 1, on a model that does not embed the guidance scale in its UNet (LCM-distilled
// models, UNetConfig::time_cond_proj_dim, take the scale as an input instead).
bool uses_cfg(const DiffusionModel& model, const Txt2ImgParams& p);

// True when the two can share one denoising loop on `model`: the same size, steps, sampler,
// guidance on or off (uses_cfg), LoRAs and decoder; txt2img (no init image) and not
// release_stages.
bool can_batch_together(const DiffusionModel& model, const Txt2ImgParams& a,
                        const Txt2ImgParams& b);

// One outcome per request, in order. Throws only for an empty `requests`.
std::vector<Txt2ImgOutcome> txt2img_batch(DiffusionModel& model, const SchedulerConfig& scheduler,
                                          std::span<const Txt2ImgParams* const> requests);

// The checks txt2img runs first, available to CLIs that want to fail before loading.
void validate_txt2img_params(const Txt2ImgParams& params, int size_multiple);

}  // namespace hyrt::pipeline

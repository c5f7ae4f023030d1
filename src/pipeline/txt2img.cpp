#include "pipeline/txt2img.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"

namespace hyrt::pipeline {

namespace {

constexpr int kMaxSide = 4096;
constexpr int kMaxBatch = 64;
constexpr int kMaxSteps = 1000;

// The picture side of img2img / inpainting, NCHW [b, ...] (empty tensors where unused).
struct ImageLatents {
  Tensor image;   // scaling_factor · the picture's latent sample [b, C, h, w]
  Tensor noise;   // the noise drawn after it [b, C, h, w]
  Tensor mask;    // the mask at the latent size [b, 1, h, w], 1 = repaint
  Tensor masked;  // scaling_factor · the masked picture's latent sample [b, C, h, w]
};

// diffusers' retrieve_latents(vae.encode(x), generator) · scaling_factor: x NHWC in [-1, 1]
// [1 or b, H, W, 3] -> NCHW [b, C, h, w], one draw of the rows given, repeated to b rows (as
// the pipelines repeat init latents for a larger batch).
Tensor encode_sample(DiffusionModel& model, const Tensor& x, int b, TorchCpuRng& rng) {
  const LatentDistribution d = model.encode_image(x.view());
  const Tensor mean = nhwc_to_nchw(d.mean.view());
  const Tensor std_nhwc = d.std();
  const Tensor sd = nhwc_to_nchw(std_nhwc.view());
  Tensor draw(DType::kF32, mean.shape());
  const size_t rows_n = static_cast<size_t>(mean.numel());
  rng.randn({draw.as<float>(), rows_n});
  const float scale = model.vae_config().scaling_factor;
  for (size_t i = 0; i < rows_n; ++i) {
    const float sample = mean.as<float>()[i] + sd.as<float>()[i] * draw.as<float>()[i];
    draw.as<float>()[i] = scale * sample;
  }
  Shape shape = mean.shape();
  shape[0] = b;
  Tensor out(DType::kF32, shape);
  for (int64_t i = 0; i < out.numel(); ++i)
    out.as<float>()[i] = draw.as<float>()[static_cast<size_t>(i) % rows_n];
  return out;
}

ImageLatents prepare_image_latents(DiffusionModel& model, const InitImage& init, int b, int uc,
                                   TorchCpuRng& rng) {
  const Shape& is = init.image.shape();
  const int f = model.vae_scale_factor();
  const int lc = model.vae_config().latent_channels;
  const int64_t height = is[1], width = is[2], lh = height / f, lw = width / f;
  ImageLatents out;
  // [0, 1] -> [-1, 1] (VaeImageProcessor.normalize).
  Tensor picture(DType::kF32, is);
  for (int64_t i = 0; i < picture.numel(); ++i)
    picture.as<float>()[i] = 2.0f * init.image.as<float>()[i] - 1.0f;
  const bool inpaint_unet = uc != lc;
  // The inpainting pipeline encodes the picture for a 4-channel UNet (its latents anchor the
  // unmasked area) or when strength < 1 (they are noised to the first timestep).
  if (!inpaint_unet || init.strength < 1.0) out.image = encode_sample(model, picture, b, rng);
  out.noise = Tensor(DType::kF32, {b, lc, lh, lw});
  rng.randn({out.noise.as<float>(), static_cast<size_t>(out.noise.numel())});
  if (!init.mask) return out;
  // Mask processor: binarise at 0.5; prepare_mask_latents: nearest resize to the latent
  // size (torch interpolate "nearest": src = floor(dst · in / out)).
  const float* m = init.mask->as<float>();
  out.mask = Tensor(DType::kF32, {b, 1, lh, lw});
  for (int r = 0; r < b; ++r)
    for (int64_t y = 0; y < lh; ++y)
      for (int64_t x = 0; x < lw; ++x) {
        const int64_t sy = y * height / lh, sx = x * width / lw;
        out.mask.as<float>()[(r * lh + y) * lw + x] = m[sy * width + sx] >= 0.5f ? 1.0f : 0.0f;
      }
  // masked_image = image * (mask < 0.5), in [-1, 1], then its latent sample.
  Tensor masked = to_f32(picture.view());
  const int64_t pixels = height * width;
  for (int64_t i = 0; i < masked.numel() / 3; ++i)
    if (m[i % pixels] >= 0.5f)
      for (int c = 0; c < 3; ++c)
        masked.as<float>()[i * 3 + c] = 0.0f;
  out.masked = encode_sample(model, masked, b, rng);
  return out;
}

}  // namespace

void validate_txt2img_params(const Txt2ImgParams& p, int m) {
  HYRT_CHECK(p.width > 0 && p.height > 0 && p.width % m == 0 && p.height % m == 0, kInvalidArgument,
             "width and height must be positive multiples of ", m, " (got ", p.width, "x", p.height,
             ")");
  HYRT_CHECK(p.width <= kMaxSide && p.height <= kMaxSide, kInvalidArgument, "image size ", p.width,
             "x", p.height, " is larger than the supported ", kMaxSide, "x", kMaxSide);
  HYRT_CHECK(p.steps >= 1 && p.steps <= kMaxSteps, kInvalidArgument, "steps must be in [1, ",
             kMaxSteps, "] (got ", p.steps, ")");
  HYRT_CHECK(p.batch >= 1 && p.batch <= kMaxBatch, kInvalidArgument, "batch must be in [1, ",
             kMaxBatch, "] (got ", p.batch, ")");
  HYRT_CHECK(std::isfinite(p.cfg_scale) && p.cfg_scale >= 0 && p.cfg_scale <= 100, kInvalidArgument,
             "cfg scale must be in [0, 100] (got ", p.cfg_scale, ")");
  for (const auto* size : {&p.original_size, &p.target_size})
    if (*size)
      HYRT_CHECK((**size)[0] > 0 && (**size)[1] > 0 && (**size)[0] <= 16384 && (**size)[1] <= 16384,
                 kInvalidArgument, "size conditioning must be in [1, 16384] (got ", (**size)[0],
                 "x", (**size)[1], ")");
  HYRT_CHECK(p.crop_top_left[0] >= 0 && p.crop_top_left[1] >= 0 && p.crop_top_left[0] <= 16384 &&
                 p.crop_top_left[1] <= 16384,
             kInvalidArgument, "crop coordinates must be in [0, 16384] (got ", p.crop_top_left[0],
             ",", p.crop_top_left[1], ")");
  if (!p.init) return;
  HYRT_CHECK(!p.initial_latents, kInvalidArgument,
             "initial latents and an init image exclude each other");
  HYRT_CHECK(std::isfinite(p.init->strength) && p.init->strength > 0 && p.init->strength <= 1,
             kInvalidArgument, "strength must be in (0, 1] (got ", p.init->strength, ")");
  const Shape& is = p.init->image.shape();
  HYRT_CHECK(p.init->image.dtype() == DType::kF32 && is.rank() == 4 &&
                 (is[0] == 1 || is[0] == p.batch) && is[1] == p.height && is[2] == p.width &&
                 is[3] == 3,
             kInvalidArgument, "init image must be f32 [1 or ", p.batch, ", ", p.height, ", ",
             p.width, ", 3] (resized to the output size), got ", is.to_string());
  if (p.init->mask) {
    const Shape& ms = p.init->mask->shape();
    HYRT_CHECK(p.init->mask->dtype() == DType::kF32 && ms.rank() == 4 && ms[0] == 1 &&
                   ms[1] == p.height && ms[2] == p.width && ms[3] == 1,
               kInvalidArgument, "mask must be f32 [1, ", p.height, ", ", p.width,
               ", 1] (resized to the output size), got ", ms.to_string());
  }
  (void)first_img2img_step(p.steps, p.init->strength);  // at least one step runs
}

Txt2ImgResult txt2img(DiffusionModel& model, const SchedulerConfig& scheduler_config,
                      const Txt2ImgParams& p) {
  const int vae_factor = model.vae_scale_factor();
  // Any multiple of the VAE factor: the UNet upsamples to its skip connections' sizes, as
  // diffusers does for sizes that are not multiples of its total downsampling.
  validate_txt2img_params(p, vae_factor);
  Txt2ImgResult result;
  const int b = p.batch;
  const bool cfg = p.cfg_scale > 1.0f;
  const int lh = p.height / vae_factor, lw = p.width / vae_factor;
  const int lc = model.vae_config().latent_channels;  // the latents
  const int uc = model.unet_config().in_channels;     // the UNet's input (2·lc + 1 inpainting)
  HYRT_CHECK(uc == lc || (p.init && p.init->mask && uc == 2 * lc + 1), kInvalidArgument,
             "the UNet takes ", uc, " input channels for ", lc,
             "-channel latents: an inpainting model, which needs a picture and a mask");

  auto stop_if_cancelled = [&](const auto&... where) {
    if (p.cancelled && p.cancelled()) throw Cancelled(str_cat("cancelled ", where...));
  };
  stop_if_cancelled("before the text encoders");

  // 1. Text: [negative × b, prompt × b] (diffusers' order) -> context [2b or b, T, C]
  //    (+ pooled [2b or b, P] for SDXL).
  auto t0 = Clock::now();
  const bool sdxl = model.family() == models::ModelFamily::kSdxl;
  const bool zero_negative =
      cfg && sdxl && !p.negative_prompt.has_value() && model.force_zeros_for_empty_prompt();
  std::vector<std::string> prompts;
  if (cfg && !zero_negative) prompts.push_back(p.negative_prompt.value_or(""));
  prompts.push_back(p.prompt);
  PromptConditioning enc = model.encode_prompts(prompts);
  for (auto& w : enc.warnings)
    result.warnings.push_back(std::move(w));
  const int unet_batch = cfg ? 2 * b : b;
  // Rows of `enc` for [negative, positive] (an absent row is zeros).
  const int64_t ctx_row = enc.context.shape()[1] * enc.context.shape()[2];
  const int64_t pool_row = enc.pooled ? enc.pooled->shape()[1] : 0;
  Tensor context(DType::kF32, {unet_batch, enc.context.shape()[1], enc.context.shape()[2]});
  Tensor pooled(DType::kF32, {unet_batch, std::max<int64_t>(pool_row, 1)});
  std::memset(context.data(), 0, context.bytes());
  std::memset(pooled.data(), 0, pooled.bytes());
  const int positive_row = static_cast<int>(prompts.size()) - 1;
  for (int r = 0; r < unet_batch; ++r) {
    const bool negative = cfg && r < b;
    if (negative && zero_negative) continue;
    const int src = negative ? 0 : positive_row;
    std::memcpy(context.as<float>() + r * ctx_row, enc.context.as<float>() + src * ctx_row,
                static_cast<size_t>(ctx_row) * sizeof(float));
    if (enc.pooled)
      std::memcpy(pooled.as<float>() + r * pool_row, enc.pooled->as<float>() + src * pool_row,
                  static_cast<size_t>(pool_row) * sizeof(float));
  }
  // SDXL's add_time_ids: original size, crop top-left, target size, the same for every row.
  std::vector<float> time_ids;
  if (sdxl) {
    const std::array<int, 2> image{p.height, p.width};
    const auto original = p.original_size.value_or(image);
    const auto target = p.target_size.value_or(image);
    for (int r = 0; r < unet_batch; ++r)
      for (int v :
           {original[0], original[1], p.crop_top_left[0], p.crop_top_left[1], target[0], target[1]})
        time_ids.push_back(static_cast<float>(v));
  }
  UNetConditioning conditioning{context.view(), {}, {}};
  if (sdxl) {
    HYRT_CHECK(enc.pooled, kInvalidModel,
               "the SDXL model's second text encoder gave no pooled output");
    conditioning.text_embeds = pooled.view();
    conditioning.time_ids = time_ids;
  }
  result.timings.text_ms = ms_since(t0);
  if (p.release_stages) {
    model.release("text_encoder");
    model.release("text_encoder_2");
  }
  HYRT_LOG(kInfo) << "resident after the text encoder: " << (current_rss_bytes() >> 20) << " MiB";

  // 2. Initial latents, NCHW [b, C, h, w].
  t0 = Clock::now();
  TorchCpuRng rng(p.seed);
  Tensor latents(DType::kF32, {b, lc, lh, lw});
  const size_t n = static_cast<size_t>(latents.numel());
  auto sampler = make_sampler(p.sampler, scheduler_config);
  sampler->set_timesteps(p.steps);
  int first_step = 0;
  ImageLatents init;  // img2img / inpainting only
  if (p.init) {
    first_step = first_img2img_step(p.steps, p.init->strength);
    sampler->set_begin_index(first_step);
    init = prepare_image_latents(model, *p.init, b, uc, rng);
    if (p.release_stages) model.release("vae_encoder");
    if (init.image.numel() > 0 && p.init->strength < 1.0) {
      // StableDiffusionImg2ImgPipeline.prepare_latents: the picture noised to the first
      // timestep that runs.
      sampler->add_noise({init.image.as<float>(), n}, {init.noise.as<float>(), n}, first_step,
                         {latents.as<float>(), n});
    } else {
      // StableDiffusionInpaintPipeline at strength 1: pure noise.
      const float sigma0 = sampler->init_noise_sigma();
      for (size_t i = 0; i < n; ++i)
        latents.as<float>()[i] = init.noise.as<float>()[i] * sigma0;
    }
  } else {
    if (p.initial_latents) {
      HYRT_CHECK(p.initial_latents->shape() == latents.shape(), kInvalidArgument,
                 "initial latents have shape ", p.initial_latents->shape().to_string(),
                 ", expected ", latents.shape().to_string());
      std::memcpy(latents.data(), p.initial_latents->data(), latents.bytes());
    } else {
      rng.randn({latents.as<float>(), n});
    }
    const float sigma0 = sampler->init_noise_sigma();
    for (size_t i = 0; i < n; ++i)
      latents.as<float>()[i] *= sigma0;
  }
  // An inpainting UNet's extra input channels: [mask, masked picture latents] per sample.
  const bool extra_channels = uc != lc;
  // A 4-channel model with a mask: latents outside it are reset after every step.
  const bool blend = p.init && p.init->mask && !extra_channels;

  // 3. Denoise. The UNet input batch is [x, x] under guidance.
  Tensor scaled(DType::kF32, latents.shape());
  Tensor unet_x(DType::kF32, {b, uc, lh, lw});  // NCHW, what the UNet sees for one half
  const size_t n_in = static_cast<size_t>(unet_x.numel());
  const size_t plane = static_cast<size_t>(lh) * lw;
  Tensor unet_in(DType::kF32, {unet_batch, lh, lw, uc});
  Tensor guided(DType::kF32, latents.shape());
  Tensor proper(DType::kF32, latents.shape());
  std::vector<float> timesteps(static_cast<size_t>(unet_batch));
  const int steps_run = sampler->num_steps() - first_step;
  for (int step = first_step; step < sampler->num_steps(); ++step) {
    stop_if_cancelled("before step ", step - first_step + 1, " of ", steps_run);
    const auto ts = Clock::now();
    sampler->scale_model_input({latents.as<float>(), n}, {scaled.as<float>(), n}, step);
    const float* x_in = scaled.as<float>();
    if (extra_channels) {
      // torch.cat([latent_model_input, mask, masked_image_latents], dim=1)
      for (int i = 0; i < b; ++i) {
        float* dst = unet_x.as<float>() + static_cast<size_t>(i) * uc * plane;
        std::memcpy(dst, x_in + i * lc * plane, lc * plane * sizeof(float));
        std::memcpy(dst + lc * plane, init.mask.as<float>() + i * plane, plane * sizeof(float));
        std::memcpy(dst + (lc + 1) * plane, init.masked.as<float>() + i * lc * plane,
                    lc * plane * sizeof(float));
      }
    } else {
      std::memcpy(unet_x.data(), x_in, n * sizeof(float));
    }
    const Tensor x_nhwc = nchw_to_nhwc(unet_x.view());
    for (int r = 0; r < unet_batch / b; ++r)
      std::memcpy(unet_in.as<float>() + r * n_in, x_nhwc.data(), n_in * sizeof(float));
    std::fill(timesteps.begin(), timesteps.end(), sampler->timesteps()[step]);
    const Tensor eps_nhwc = model.predict_noise(unet_in.view(), timesteps, conditioning);
    const Tensor eps = nhwc_to_nchw(eps_nhwc.view());  // [unet_batch, C, h, w]
    const float* e = eps.as<float>();
    float* g = guided.as<float>();
    if (cfg) {
      const float* uncond = e;
      const float* text = e + n;
      for (size_t i = 0; i < n; ++i)
        g[i] = uncond[i] + p.cfg_scale * (text[i] - uncond[i]);
    } else {
      std::memcpy(g, e, n * sizeof(float));
    }
    sampler->step({g, n}, step, {latents.as<float>(), n}, &rng);
    if (blend) {
      // StableDiffusionInpaintPipeline (4-channel UNet): the picture's latents noised to the
      // next timestep (un-noised after the last step) outside the mask.
      const float* keep = init.image.as<float>();
      if (step + 1 < sampler->num_steps()) {
        sampler->add_noise({init.image.as<float>(), n}, {init.noise.as<float>(), n}, step + 1,
                           {proper.as<float>(), n});
        keep = proper.as<float>();
      }
      float* x = latents.as<float>();
      for (size_t i = 0; i < n; ++i) {
        const float m = init.mask.as<float>()[(i / (lc * plane)) * plane + i % plane];
        x[i] = (1.0f - m) * keep[i] + m * x[i];
      }
    }
    if (step == first_step) result.timings.first_step_ms = ms_since(ts);
    if (p.on_step) p.on_step(step - first_step + 1, steps_run);
    if (p.on_latents) p.on_latents(latents);
  }
  result.timings.denoise_ms = ms_since(t0);
  if (p.release_stages) model.release("unet");
  HYRT_LOG(kInfo) << "resident after sampling: " << (current_rss_bytes() >> 20) << " MiB";

  // 4. Decode: latents / scaling_factor -> VAE -> (x / 2 + 0.5).clamp(0, 1), NHWC.
  stop_if_cancelled("before the VAE decode");
  t0 = Clock::now();
  const Tensor lat_nhwc = nchw_to_nhwc(latents.view());
  Tensor image = model.decode_latents(lat_nhwc.view(), /*unscale=*/true);
  float* px = image.as<float>();
  for (int64_t i = 0; i < image.numel(); ++i)
    px[i] = std::clamp(px[i] * 0.5f + 0.5f, 0.0f, 1.0f);
  result.timings.decode_ms = ms_since(t0);
  HYRT_LOG(kInfo) << "resident after the VAE decode: " << (current_rss_bytes() >> 20)
                  << " MiB (peak " << (peak_rss_bytes() >> 20) << " MiB)";
  result.images = std::move(image);
  return result;
}

}  // namespace hyrt::pipeline

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
  const int lc = model.unet_config().in_channels;

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
  if (p.initial_latents) {
    HYRT_CHECK(p.initial_latents->shape() == latents.shape(), kInvalidArgument,
               "initial latents have shape ", p.initial_latents->shape().to_string(), ", expected ",
               latents.shape().to_string());
    std::memcpy(latents.data(), p.initial_latents->data(), latents.bytes());
  } else {
    rng.randn({latents.as<float>(), static_cast<size_t>(latents.numel())});
  }
  auto sampler = make_sampler(p.sampler, scheduler_config);
  sampler->set_timesteps(p.steps);
  const float sigma0 = sampler->init_noise_sigma();
  const size_t n = static_cast<size_t>(latents.numel());
  for (size_t i = 0; i < n; ++i)
    latents.as<float>()[i] *= sigma0;

  // 3. Denoise. The UNet input batch is [x, x] under guidance.
  Tensor scaled(DType::kF32, latents.shape());
  Tensor unet_in(DType::kF32, {unet_batch, lh, lw, lc});
  Tensor guided(DType::kF32, latents.shape());
  std::vector<float> timesteps(static_cast<size_t>(unet_batch));
  for (int step = 0; step < sampler->num_steps(); ++step) {
    const auto ts = Clock::now();
    sampler->scale_model_input({latents.as<float>(), n}, {scaled.as<float>(), n}, step);
    const Tensor x_nhwc = nchw_to_nhwc(scaled.view());
    for (int r = 0; r < unet_batch / b; ++r)
      std::memcpy(unet_in.as<float>() + r * n, x_nhwc.data(), n * sizeof(float));
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
    if (step == 0) result.timings.first_step_ms = ms_since(ts);
    if (p.on_step) p.on_step(step + 1, sampler->num_steps());
  }
  result.timings.denoise_ms = ms_since(t0);
  if (p.release_stages) model.release("unet");
  HYRT_LOG(kInfo) << "resident after sampling: " << (current_rss_bytes() >> 20) << " MiB";

  // 4. Decode: latents / scaling_factor -> VAE -> (x / 2 + 0.5).clamp(0, 1), NHWC.
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

#include "pipeline/txt2img.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "pipeline/init_image.h"

namespace hyrt::pipeline {

namespace {

// `hyrt generate -v`'s memory trail: the resident set after a stage, and the peak so far.
void log_resident_after(const char* stage) {
  HYRT_LOG(kInfo) << "resident after " << stage << ": " << (current_rss_bytes() >> 20)
                  << " MiB (peak " << (peak_rss_bytes() >> 20) << " MiB)";
}

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
  Tensor draw(DType::kF32, mean.shape(), "the picture's latent sample");
  const size_t rows_n = static_cast<size_t>(mean.numel());
  rng.randn({draw.as<float>(), rows_n});
  const float scale = model.vae_config().scaling_factor;
  for (size_t i = 0; i < rows_n; ++i) {
    const float sample = mean.as<float>()[i] + sd.as<float>()[i] * draw.as<float>()[i];
    draw.as<float>()[i] = scale * sample;
  }
  Shape shape = mean.shape();
  shape[0] = b;
  Tensor out(DType::kF32, shape, "the picture's latents for the batch");
  for (int64_t i = 0; i < out.numel(); ++i)
    out.as<float>()[i] = draw.as<float>()[static_cast<size_t>(i) % rows_n];
  return out;
}

ImageLatents prepare_image_latents(DiffusionModel& model, const InitImage& init, int b, int uc,
                                   TorchCpuRng& rng) {
  if (init.latents) {
    // diffusers' prepare_latents for a 4-channel `image`: the latents as they are, repeated to
    // the batch; the noise is the first draw.
    const Shape& ls = init.latents->shape();
    HYRT_CHECK(ls[1] == model.vae_config().latent_channels && uc == ls[1], kInvalidArgument,
               "init latents have ", ls[1], " channels; the model's latents ",
               model.vae_config().latent_channels, " (and its UNet takes ", uc, ")");
    ImageLatents out;
    out.image = Tensor(DType::kF32, {b, ls[1], ls[2], ls[3]}, "the init latents for the batch");
    const int64_t rows_n = init.latents->numel();
    for (int64_t i = 0; i < out.image.numel(); ++i)
      out.image.as<float>()[i] = init.latents->as<float>()[i % rows_n];
    out.noise = Tensor(DType::kF32, out.image.shape(), "the img2img noise");
    rng.randn({out.noise.as<float>(), static_cast<size_t>(out.noise.numel())});
    return out;
  }
  const Shape& is = init.image.shape();
  const int f = model.vae_scale_factor();
  const int lc = model.vae_config().latent_channels;
  const int64_t height = is[1], width = is[2], lh = height / f, lw = width / f;
  ImageLatents out;
  // [0, 1] -> [-1, 1] (VaeImageProcessor.normalize).
  Tensor picture(DType::kF32, is, "the init picture in [-1, 1]");
  for (int64_t i = 0; i < picture.numel(); ++i)
    picture.as<float>()[i] = 2.0f * init.image.as<float>()[i] - 1.0f;
  const bool inpaint_unet = uc != lc;
  // The inpainting pipeline encodes the picture for a 4-channel UNet (its latents anchor the
  // unmasked area) or when strength < 1 (they are noised to the first timestep).
  if (!inpaint_unet || init.strength < 1.0) out.image = encode_sample(model, picture, b, rng);
  out.noise = Tensor(DType::kF32, {b, lc, lh, lw}, "the img2img noise");
  rng.randn({out.noise.as<float>(), static_cast<size_t>(out.noise.numel())});
  if (!init.mask) return out;
  // Mask processor: binarise at 0.5; prepare_mask_latents: nearest resize to the latent
  // size (torch interpolate "nearest": src = floor(dst · in / out)).
  const float* m = init.mask->as<float>();
  out.mask = Tensor(DType::kF32, {b, 1, lh, lw}, "the mask at the latent size");
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
  HYRT_CHECK(p.clip_skip >= 1 && p.clip_skip <= 64, kInvalidArgument,
             "clip skip must be in [1, 64] (1: no layer skipped; got ", p.clip_skip, ")");
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
  if (p.hires) {
    const HiresFix& h = *p.hires;
    HYRT_CHECK(!p.init, kInvalidArgument, "the hires fix is for text to image, not img2img");
    HYRT_CHECK(std::isfinite(h.scale) && h.scale >= 1 && h.scale <= 8, kInvalidArgument,
               "hires scale must be in [1, 8] (got ", h.scale, ")");
    HYRT_CHECK(h.width >= 0 && h.height >= 0 && h.width <= kMaxSide && h.height <= kMaxSide,
               kInvalidArgument, "hires size must be in [0, ", kMaxSide, "] (got ", h.width, "x",
               h.height, ")");
    HYRT_CHECK(h.steps >= 0 && h.steps <= kMaxSteps, kInvalidArgument,
               "hires steps must be in [0, ", kMaxSteps, "] (got ", h.steps, ")");
    HYRT_CHECK(std::isfinite(h.strength) && h.strength > 0 && h.strength <= 1, kInvalidArgument,
               "hires denoising strength must be in (0, 1] (got ", h.strength, ")");
    const auto [w2, h2] = hires_size(h, p.width, p.height, m);
    HYRT_CHECK(w2 <= kMaxSide && h2 <= kMaxSide, kInvalidArgument, "the hires size ", w2, "x", h2,
               " is larger than the supported ", kMaxSide, "x", kMaxSide);
    (void)first_img2img_step(h.steps > 0 ? h.steps : p.steps, h.strength);  // a step runs
  }
  if (!p.init) return;
  HYRT_CHECK(!p.initial_latents, kInvalidArgument,
             "initial latents and an init image exclude each other");
  HYRT_CHECK(std::isfinite(p.init->strength) && p.init->strength > 0 && p.init->strength <= 1,
             kInvalidArgument, "strength must be in (0, 1] (got ", p.init->strength, ")");
  if (p.init->latents) {
    const Shape& ls = p.init->latents->shape();
    HYRT_CHECK(p.init->latents->dtype() == DType::kF32 && ls.rank() == 4 &&
                   (ls[0] == 1 || ls[0] == p.batch) && ls[2] == p.height / m &&
                   ls[3] == p.width / m,
               kInvalidArgument, "init latents must be f32 [1 or ", p.batch, ", C, ", p.height / m,
               ", ", p.width / m, "], got ", ls.to_string());
    HYRT_CHECK(!p.init->mask, kInvalidArgument, "init latents take no mask (inpainting)");
    (void)first_img2img_step(p.steps, p.init->strength);
    return;
  }
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

GenerationParameters generation_parameters(const DiffusionModel& model, const Txt2ImgParams& p,
                                           std::string_view vae_name) {
  GenerationParameters gp;
  gp.negative_prompt = p.negative_prompt.value_or("");
  gp.steps = p.steps;
  gp.sampler = std::string(sampler_display_name(p.sampler));
  gp.cfg_scale = p.cfg_scale;
  gp.seed = p.seed;
  gp.width = p.width;
  gp.height = p.height;
  if (p.tiny_vae) gp.extra.emplace_back("VAE", std::string(vae_name));
  if (model.family() == models::ModelFamily::kSdxl) {
    // What A1111 records for SDXL's size conditioning when it differs from the defaults.
    if (p.original_size)
      gp.extra.emplace_back("Original size",
                            str_cat((*p.original_size)[1], "x", (*p.original_size)[0]));
    if (p.crop_top_left != std::array<int, 2>{0, 0})
      gp.extra.emplace_back("Crop", str_cat(p.crop_top_left[0], ",", p.crop_top_left[1]));
    if (p.target_size)
      gp.extra.emplace_back("Target size", str_cat((*p.target_size)[1], "x", (*p.target_size)[0]));
  }
  if (p.init) gp.extra.emplace_back("Denoising strength", str_cat(p.init->strength));
  if (p.clip_skip > 1) gp.extra.emplace_back("Clip skip", str_cat(p.clip_skip));
  if (p.hires) add_hires_parameters(*p.hires, gp);
  return gp;
}

bool uses_cfg(const DiffusionModel& model, const Txt2ImgParams& p) {
  return p.cfg_scale > 1.0f && model.unet_config().time_cond_proj_dim == 0;
}

bool can_batch_together(const DiffusionModel& model, const Txt2ImgParams& a,
                        const Txt2ImgParams& b) {
  // One loop runs every lane: the same latent shape, the same timesteps, guidance for all or
  // none. img2img / inpainting and release_stages stay lone calls.
  // The same LoRAs (the UNet's adapters are per model, not per row).
  auto same_loras = [](const std::optional<std::vector<weights::LoraUse>>& x,
                       const std::optional<std::vector<weights::LoraUse>>& y) {
    if (!x || !y) return !x && !y;
    return std::equal(x->begin(), x->end(), y->begin(), y->end(),
                      [](const weights::LoraUse& u, const weights::LoraUse& v) {
                        return u.file == v.file && u.multiplier == v.multiplier;
                      });
  };
  return a.width == b.width && a.height == b.height && a.steps == b.steps &&
         a.sampler == b.sampler && uses_cfg(model, a) == uses_cfg(model, b) && !a.init && !b.init &&
         !a.hires && !b.hires && !a.release_stages && !b.release_stages &&
         same_loras(a.loras, b.loras) && a.tiny_vae == b.tiny_vae && a.decode == b.decode;
}

namespace {

// One request of a batch: its conditioning, generator, sampler and latents, and how it ended.
struct Lane {
  const Txt2ImgParams* p = nullptr;
  std::exception_ptr error;  // set: the lane has stopped (its rows still ride along)
  Txt2ImgResult result;
  PromptConditioning enc;
  bool zero_negative = false;  // SDXL with no negative prompt: zero negative conditioning
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<TorchCpuRng> rng;
  Tensor latents;     // NCHW [b, C, h, w]
  ImageLatents init;  // img2img / inpainting only
  int first_step = 0;
  int64_t row = 0;                 // its first row within each half of the UNet batch
  std::optional<Tensor> denoised;  // on_denoised only: the last step's predicted clean latents
  bool alive() const { return !error; }
  void fail() { error = std::current_exception(); }
};

[[noreturn]] void throw_cancelled(const auto&... where) {
  throw Cancelled(str_cat("cancelled ", where...));
}

// Stops the lane if its caller cancelled it.
void poll_cancel(Lane& lane, const auto&... where) {
  if (!lane.alive() || !lane.p->cancelled || !lane.p->cancelled()) return;
  try {
    throw_cancelled(where...);
  } catch (...) {
    lane.fail();
  }
}

bool any_alive(const std::vector<Lane*>& lanes) {
  return std::any_of(lanes.begin(), lanes.end(), [](const Lane* l) { return l->alive(); });
}

// 1. Text for one lane: [negative, prompt] (diffusers' order; the negative left out when it
// is zeros or guidance is off — also for LCM models, which embed the guidance scale instead).
void encode_lane(DiffusionModel& model, Lane& lane) {
  const Txt2ImgParams& p = *lane.p;
  const bool cfg = uses_cfg(model, p);
  const bool sdxl = model.family() == models::ModelFamily::kSdxl;
  lane.zero_negative =
      cfg && sdxl && !p.negative_prompt.has_value() && model.force_zeros_for_empty_prompt();
  std::vector<std::string> prompts;
  if (cfg && !lane.zero_negative) prompts.push_back(p.negative_prompt.value_or(""));
  prompts.push_back(p.prompt);
  lane.enc = model.encode_prompts(prompts, p.clip_skip);
  HYRT_CHECK(!sdxl || lane.enc.pooled, kInvalidModel,
             "the SDXL model's second text encoder gave no pooled output");
  for (auto& w : lane.enc.warnings)
    lane.result.warnings.push_back(std::move(w));
}

// 2. A lane's initial latents, NCHW [b, C, h, w], drawn from its own generator.
void start_lane(DiffusionModel& model, const SchedulerConfig& scheduler_config, Lane& lane) {
  const Txt2ImgParams& p = *lane.p;
  const int vae_factor = model.vae_scale_factor();
  const int lh = p.height / vae_factor, lw = p.width / vae_factor, b = p.batch;
  const int lc = model.vae_config().latent_channels;
  const int uc = model.unet_config().in_channels;
  lane.rng = std::make_unique<TorchCpuRng>(p.seed);
  TorchCpuRng& rng = *lane.rng;
  lane.latents = Tensor(DType::kF32, {b, lc, lh, lw}, "the latents");
  Tensor& latents = lane.latents;
  const size_t n = static_cast<size_t>(latents.numel());
  lane.sampler = make_sampler(p.sampler, scheduler_config);
  Sampler& sampler = *lane.sampler;
  sampler.set_timesteps(p.steps);
  if (p.init) {
    // diffusers' t_start · order: Heun's schedule lists two calls per step.
    lane.first_step = first_img2img_step(p.steps, p.init->strength) * sampler.order();
    sampler.set_begin_index(lane.first_step);
    lane.init = prepare_image_latents(model, *p.init, b, uc, rng);
    if (p.release_stages) model.release("vae_encoder");
    ImageLatents& init = lane.init;
    if (init.image.numel() > 0 && p.init->strength < 1.0) {
      // StableDiffusionImg2ImgPipeline.prepare_latents: the picture noised to the first
      // timestep that runs.
      sampler.add_noise({init.image.as<float>(), n}, {init.noise.as<float>(), n}, lane.first_step,
                        {latents.as<float>(), n});
    } else {
      // StableDiffusionInpaintPipeline at strength 1: pure noise.
      const float sigma0 = sampler.init_noise_sigma();
      for (size_t i = 0; i < n; ++i)
        latents.as<float>()[i] = init.noise.as<float>()[i] * sigma0;
    }
    return;
  }
  if (p.initial_latents) {
    HYRT_CHECK(p.initial_latents->shape() == latents.shape(), kInvalidArgument,
               "initial latents have shape ", p.initial_latents->shape().to_string(), ", expected ",
               latents.shape().to_string());
    std::memcpy(latents.data(), p.initial_latents->data(), latents.bytes());
  } else {
    rng.randn({latents.as<float>(), n});
  }
  const float sigma0 = sampler.init_noise_sigma();
  for (size_t i = 0; i < n; ++i)
    latents.as<float>()[i] *= sigma0;
}

// 3 and 4 for lanes of one latent shape and one conditioning length: every step runs all of
// them as one UNet batch — under guidance [negative rows of every lane, positive rows of every
// lane], so one lane gives diffusers' [x, x] — then each lane's own guidance and sampler step;
// the VAE decodes the lanes still running together. A lane that stops (cancelled, a throwing
// callback) keeps its rows in the batch, frozen, so the others keep their compiled shape.
void denoise_and_decode(DiffusionModel& model, const std::vector<Lane*>& lanes) {
  const Txt2ImgParams& p0 = *lanes.front()->p;
  const int vae_factor = model.vae_scale_factor();
  const int lh = p0.height / vae_factor, lw = p0.width / vae_factor;
  const int lc = model.vae_config().latent_channels;
  const int uc = model.unet_config().in_channels;
  // LCM models embed the guidance scale in the UNet instead (diffusers: no CFG when the UNet
  // has time_cond_proj_dim).
  const bool embedded_guidance = model.unet_config().time_cond_proj_dim > 0;
  const bool cfg = uses_cfg(model, p0);  // the same for every lane (can_batch_together)
  const bool sdxl = model.family() == models::ModelFamily::kSdxl;
  const bool lone = lanes.size() == 1;
  int64_t rows = 0;  // B: rows per half
  for (Lane* l : lanes) {
    l->row = rows;
    rows += l->p->batch;
  }
  const int64_t unet_batch = cfg ? 2 * rows : rows;
  const Shape& cs = lanes.front()->enc.context.shape();
  const int64_t ctx_row = cs[1] * cs[2];
  const int64_t pool_row = lanes.front()->enc.pooled ? lanes.front()->enc.pooled->shape()[1] : 0;
  Tensor context(DType::kF32, {unet_batch, cs[1], cs[2]}, "the UNet's text conditioning");
  Tensor pooled(DType::kF32, {unet_batch, std::max<int64_t>(pool_row, 1)},
                "the UNet's pooled text embedding");
  std::memset(context.data(), 0, context.bytes());
  std::memset(pooled.data(), 0, pooled.bytes());
  std::vector<float> time_ids(sdxl ? static_cast<size_t>(unet_batch) * 6 : 0);
  for (Lane* l : lanes) {
    const Txt2ImgParams& p = *l->p;
    const int positive_row = static_cast<int>(l->enc.context.shape()[0]) - 1;
    // SDXL's add_time_ids: original size, crop top-left, target size.
    const std::array<int, 2> image{p.height, p.width};
    const auto original = p.original_size.value_or(image);
    const auto target = p.target_size.value_or(image);
    const std::array<int, 6> ids{original[0],        original[1], p.crop_top_left[0],
                                 p.crop_top_left[1], target[0],   target[1]};
    for (int half = 0; half < (cfg ? 2 : 1); ++half)
      for (int i = 0; i < p.batch; ++i) {
        const int64_t r = half * rows + l->row + i;
        const bool negative = cfg && half == 0;
        for (int k = 0; k < (sdxl ? 6 : 0); ++k)
          time_ids[static_cast<size_t>(r * 6 + k)] =
              static_cast<float>(ids[static_cast<size_t>(k)]);
        if (negative && l->zero_negative) continue;
        const int src = negative ? 0 : positive_row;
        std::memcpy(context.as<float>() + r * ctx_row, l->enc.context.as<float>() + src * ctx_row,
                    static_cast<size_t>(ctx_row) * sizeof(float));
        if (l->enc.pooled)
          std::memcpy(pooled.as<float>() + r * pool_row,
                      l->enc.pooled->as<float>() + src * pool_row,
                      static_cast<size_t>(pool_row) * sizeof(float));
      }
  }
  UNetConditioning conditioning{.context = context.view()};
  if (sdxl) {
    conditioning.text_embeds = pooled.view();
    conditioning.time_ids = time_ids;
  }
  std::vector<float> guidance;
  if (embedded_guidance) {
    guidance.resize(static_cast<size_t>(unet_batch));
    for (Lane* l : lanes)
      for (int i = 0; i < l->p->batch; ++i)
        guidance[static_cast<size_t>(l->row + i)] = l->p->cfg_scale;
    conditioning.guidance_scale = guidance;
  }

  // 3. Denoise. Rows of stopped lanes keep their last input (zeros before the first step).
  const size_t plane = static_cast<size_t>(lh) * lw;
  const size_t in_row = static_cast<size_t>(uc) * plane;  // one UNet input row (NCHW/NHWC)
  Tensor unet_in(DType::kF32, {unet_batch, lh, lw, uc}, "the UNet input batch");
  std::memset(unet_in.data(), 0, unet_in.bytes());
  std::vector<float> timesteps(static_cast<size_t>(unet_batch));
  Sampler& schedule = *lanes.front()->sampler;  // every lane's timesteps are the same
  const int first_step = lanes.front()->first_step;
  const int steps_run = schedule.num_steps() - first_step;
  auto t0 = Clock::now();
  for (int step = first_step; step < schedule.num_steps(); ++step) {
    for (Lane* l : lanes)
      poll_cancel(*l, "before step ", step - first_step + 1, " of ", steps_run);
    if (!any_alive(lanes)) return;
    const auto ts = Clock::now();
    for (Lane* l : lanes) {
      if (!l->alive()) continue;
      const Txt2ImgParams& p = *l->p;
      const size_t n = static_cast<size_t>(l->latents.numel());
      Tensor scaled(DType::kF32, l->latents.shape(), "the scaled latents");
      l->sampler->scale_model_input({l->latents.as<float>(), n}, {scaled.as<float>(), n}, step);
      Tensor unet_x(DType::kF32, {p.batch, uc, lh, lw},
                    "a request's UNet input");  // NCHW, the lane's rows of one half
      const float* x_in = scaled.as<float>();
      if (uc != lc) {
        // torch.cat([latent_model_input, mask, masked_image_latents], dim=1)
        for (int i = 0; i < p.batch; ++i) {
          float* dst = unet_x.as<float>() + static_cast<size_t>(i) * in_row;
          std::memcpy(dst, x_in + i * lc * plane, lc * plane * sizeof(float));
          std::memcpy(dst + lc * plane, l->init.mask.as<float>() + i * plane,
                      plane * sizeof(float));
          std::memcpy(dst + (lc + 1) * plane, l->init.masked.as<float>() + i * lc * plane,
                      lc * plane * sizeof(float));
        }
      } else {
        std::memcpy(unet_x.data(), x_in, n * sizeof(float));
      }
      const Tensor x_nhwc = nchw_to_nhwc(unet_x.view());
      for (int half = 0; half < (cfg ? 2 : 1); ++half)
        std::memcpy(unet_in.as<float>() + (half * rows + l->row) * in_row, x_nhwc.data(),
                    x_nhwc.bytes());
    }
    std::fill(timesteps.begin(), timesteps.end(), schedule.timesteps()[step]);
    const Tensor eps_nhwc = model.predict_noise(unet_in.view(), timesteps, conditioning);
    const Tensor eps = nhwc_to_nchw(eps_nhwc.view());  // [unet_batch, C, h, w]
    const size_t out_row = static_cast<size_t>(lc) * plane;
    for (Lane* l : lanes) {
      if (!l->alive()) continue;
      const Txt2ImgParams& p = *l->p;
      const size_t n = static_cast<size_t>(l->latents.numel());
      Tensor guided(DType::kF32, l->latents.shape(), "the guided noise prediction");
      float* g = guided.as<float>();
      const float* uncond = eps.as<float>() + l->row * out_row;
      if (cfg) {
        const float* text = eps.as<float>() + (rows + l->row) * out_row;
        for (size_t i = 0; i < n; ++i)
          g[i] = uncond[i] + p.cfg_scale * (text[i] - uncond[i]);
      } else {
        std::memcpy(g, uncond, n * sizeof(float));
      }
      if (p.on_denoised) {
        // The prediction from this step's input: scale the latents again before step() moves them.
        l->denoised = Tensor(DType::kF32, l->latents.shape(), "the predicted clean latents");
        const std::span<float> x0{l->denoised->as<float>(), n};
        l->sampler->scale_model_input({l->latents.as<float>(), n}, x0, step);
        l->sampler->predicted_original(x0, {g, n}, step, x0);
      }
      l->sampler->step({g, n}, step, {l->latents.as<float>(), n}, l->rng.get());
      if (p.init && p.init->mask && uc == lc) {
        // StableDiffusionInpaintPipeline (4-channel UNet): the picture's latents noised to the
        // next timestep (un-noised after the last step) outside the mask.
        const float* keep = l->init.image.as<float>();
        Tensor proper(DType::kF32, l->latents.shape(), "the re-noised picture latents");
        if (step + 1 < l->sampler->num_steps()) {
          l->sampler->add_noise({l->init.image.as<float>(), n}, {l->init.noise.as<float>(), n},
                                step + 1, {proper.as<float>(), n});
          keep = proper.as<float>();
        }
        float* x = l->latents.as<float>();
        for (size_t i = 0; i < n; ++i) {
          const float m = l->init.mask.as<float>()[(i / (lc * plane)) * plane + i % plane];
          x[i] = (1.0f - m) * keep[i] + m * x[i];
        }
      }
      if (step == first_step) l->result.timings.first_step_ms = ms_since(ts);
      try {
        if (p.on_step) p.on_step(step - first_step + 1, steps_run);
        if (p.on_latents) p.on_latents(l->latents);
        if (p.on_denoised) p.on_denoised(step - first_step + 1, steps_run, *l->denoised);
      } catch (...) {
        l->fail();
      }
    }
  }
  const double denoise_ms = ms_since(t0);
  if (lone && p0.release_stages) model.release("unet");
  log_resident_after("sampling");
  if (!p0.decode) {  // the same for every lane (can_batch_together)
    for (Lane* l : lanes) {
      l->result.timings.denoise_ms = denoise_ms;
      if (l->alive()) l->result.latents = std::move(l->latents);
    }
    return;
  }

  // 4. Decode: latents / scaling_factor -> VAE -> (x / 2 + 0.5).clamp(0, 1), NHWC.
  for (Lane* l : lanes)
    poll_cancel(*l, "before the VAE decode");
  std::vector<Lane*> decoding;
  for (Lane* l : lanes)
    if (l->alive()) decoding.push_back(l);
  if (decoding.empty()) return;
  t0 = Clock::now();
  int64_t decode_rows = 0;
  for (Lane* l : decoding)
    decode_rows += l->p->batch;
  Tensor all(DType::kF32, {decode_rows, lc, lh, lw}, "the latents to decode");
  int64_t at = 0;
  for (Lane* l : decoding) {
    std::memcpy(all.as<float>() + at, l->latents.data(), l->latents.bytes());
    at += l->latents.numel();
  }
  Tensor image = decode_preview(model, all, p0.tiny_vae);
  const float* px = image.as<float>();
  const double decode_ms = ms_since(t0);
  log_resident_after("the VAE decode");
  const int64_t pixels = static_cast<int64_t>(p0.height) * p0.width * 3;
  at = 0;
  for (Lane* l : decoding) {
    Tensor own(DType::kF32, {l->p->batch, p0.height, p0.width, 3}, "a request's pictures");
    std::memcpy(own.data(), px + at, own.bytes());
    at += l->p->batch * pixels;
    l->result.images = std::move(own);
    l->result.timings.denoise_ms = denoise_ms;
    l->result.timings.decode_ms = decode_ms;
  }
}

Txt2ImgResult txt2img_hires(DiffusionModel& model, const SchedulerConfig& scheduler_config,
                            const Txt2ImgParams& p);

}  // namespace

Tensor decode_preview(DiffusionModel& model, const Tensor& latents, bool tiny_vae) {
  HYRT_CHECK(latents.dtype() == DType::kF32 && latents.shape().rank() == 4, kInvalidArgument,
             "decode_preview: latents must be f32 NCHW, got ", latents.shape().to_string());
  const Tensor lat_nhwc = nchw_to_nhwc(latents.view());
  Tensor image = tiny_vae ? model.decode_latents_tiny(lat_nhwc.view())
                          : model.decode_latents(lat_nhwc.view(), /*unscale=*/true);
  float* px = image.as<float>();
  for (int64_t i = 0; i < image.numel(); ++i)
    px[i] = std::clamp(px[i] * 0.5f + 0.5f, 0.0f, 1.0f);
  return image;
}

Image8 preview_image8(DiffusionModel& model, const Tensor& latents, bool tiny_vae) {
  const Shape& s = latents.shape();
  HYRT_CHECK(latents.dtype() == DType::kF32 && s.rank() == 4 && s[0] >= 1, kInvalidArgument,
             "preview_image8: latents must be f32 NCHW, got ", s.to_string());
  Tensor first(DType::kF32, {1, s[1], s[2], s[3]}, "the first image's latents");
  std::memcpy(first.data(), latents.data(), first.bytes());
  const Tensor px = decode_preview(model, first, tiny_vae);
  return float_to_image8({px.as<float>(), static_cast<size_t>(px.numel())},
                         static_cast<int>(px.shape()[1]), static_cast<int>(px.shape()[2]));
}

std::vector<Txt2ImgOutcome> txt2img_batch(DiffusionModel& model,
                                          const SchedulerConfig& scheduler_config,
                                          std::span<const Txt2ImgParams* const> requests) {
  HYRT_CHECK(!requests.empty(), kInvalidArgument, "txt2img_batch: no requests");
  if (requests.size() == 1 && requests[0]->hires) {  // runs alone (can_batch_together)
    std::vector<Txt2ImgOutcome> out(1);
    try {
      out[0].result = txt2img_hires(model, scheduler_config, *requests[0]);
    } catch (...) {
      out[0].error = std::current_exception();
    }
    return out;
  }
  const int vae_factor = model.vae_scale_factor();
  const int lc = model.vae_config().latent_channels;  // the latents
  const int uc = model.unet_config().in_channels;     // the UNet's input (2·lc + 1 inpainting)
  std::vector<Lane> lanes(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    Lane& l = lanes[i];
    l.p = requests[i];
    try {
      const Txt2ImgParams& p = *l.p;
      // Any multiple of the VAE factor: the UNet upsamples to its skip connections' sizes, as
      // diffusers does for sizes that are not multiples of its total downsampling.
      validate_txt2img_params(p, vae_factor);
      HYRT_CHECK(!p.tiny_vae || model.has_tiny_vae(), kInvalidArgument,
                 "a TAESD decode was asked for but the model has no TAESD decoder "
                 "(DiffusionModel::set_tiny_vae; the CLI's --taesd)");
      HYRT_CHECK(i == 0 || can_batch_together(model, *requests[0], p), kInvalidArgument,
                 "txt2img_batch: request ", i, " cannot share the first one's UNet batch");
      HYRT_CHECK(uc == lc || (p.init && p.init->mask && uc == 2 * lc + 1), kInvalidArgument,
                 "the UNet takes ", uc, " input channels for ", lc,
                 "-channel latents: an inpainting model, which needs a picture and a mask");
    } catch (...) {
      l.fail();
    }
  }

  // The LoRAs every lane shares (can_batch_together): a LoRA that does not fit the model fails
  // them all.
  if (requests[0]->loras) {
    try {
      model.set_loras(*requests[0]->loras);
    } catch (...) {
      for (Lane& l : lanes)
        if (l.alive()) l.fail();
    }
  }

  // 1. Text, one lane at a time (each encodes exactly what a lone call encodes).
  auto t0 = Clock::now();
  for (Lane& l : lanes) {
    poll_cancel(l, "before the text encoders");
    if (!l.alive()) continue;
    try {
      encode_lane(model, l);
    } catch (...) {
      l.fail();
    }
  }
  const double text_ms = ms_since(t0);
  if (requests.size() == 1 && requests[0]->release_stages) {
    model.release("text_encoder");
    model.release("text_encoder_2");
  }
  log_resident_after("the text encoder");

  // 2. Initial latents, each lane from its own seed.
  for (Lane& l : lanes) {
    if (!l.alive()) continue;
    l.result.timings.text_ms = text_ms;
    try {
      start_lane(model, scheduler_config, l);
    } catch (...) {
      l.fail();
    }
  }

  // 3 and 4, per conditioning length (prompts of different lengths cannot share a UNet
  // batch); an error there stops every lane of that group.
  std::vector<bool> done(lanes.size(), false);
  for (size_t i = 0; i < lanes.size(); ++i) {
    if (done[i] || !lanes[i].alive()) continue;
    std::vector<Lane*> group;
    for (size_t j = i; j < lanes.size(); ++j)
      if (!done[j] && lanes[j].alive() &&
          lanes[j].enc.context.shape() == lanes[i].enc.context.shape()) {
        group.push_back(&lanes[j]);
        done[j] = true;
      }
    try {
      denoise_and_decode(model, group);
    } catch (...) {
      for (Lane* l : group)
        if (l->alive()) l->fail();
    }
  }

  std::vector<Txt2ImgOutcome> out(lanes.size());
  for (size_t i = 0; i < lanes.size(); ++i) {
    out[i].error = lanes[i].error;
    if (!out[i].error) out[i].result = std::move(lanes[i].result);
  }
  return out;
}

namespace {

// torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear" or "nearest",
// align_corners=False, antialias=False) of NCHW latents, as A1111's latent upscalers call it.
Tensor resize_latents(const Tensor& x, int64_t h, int64_t w, bool bilinear) {
  const Shape& s = x.shape();
  const int64_t planes = s[0] * s[1], ih = s[2], iw = s[3];
  Tensor out(DType::kF32, {s[0], s[1], h, w}, "the upscaled latents");
  // Source coordinates (ATen's area_pixel_compute_source_index; nearest: floor(dst · in / out)).
  struct Tap {
    int64_t i0, i1;
    float w0, w1;
  };
  const auto taps = [bilinear](int64_t in, int64_t out_n) {
    std::vector<Tap> t(static_cast<size_t>(out_n));
    const float scale = static_cast<float>(in) / static_cast<float>(out_n);
    for (int64_t d = 0; d < out_n; ++d) {
      if (!bilinear) {
        const int64_t i =
            std::min(static_cast<int64_t>(std::floor(static_cast<float>(d) * scale)), in - 1);
        t[static_cast<size_t>(d)] = {i, i, 1.0f, 0.0f};
        continue;
      }
      const float src = std::max(scale * (static_cast<float>(d) + 0.5f) - 0.5f, 0.0f);
      const int64_t i0 = static_cast<int64_t>(src);
      const int64_t step = i0 < in - 1 ? 1 : 0;
      const float l1 = src - static_cast<float>(i0);
      t[static_cast<size_t>(d)] = {i0, i0 + step, 1.0f - l1, l1};
    }
    return t;
  };
  const std::vector<Tap> ty = taps(ih, h), tx = taps(iw, w);
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* src = x.as<float>() + pl * ih * iw;
    float* dst = out.as<float>() + pl * h * w;
    for (int64_t y = 0; y < h; ++y) {
      const Tap& a = ty[static_cast<size_t>(y)];
      const float* r0 = src + a.i0 * iw;
      const float* r1 = src + a.i1 * iw;
      for (int64_t xx = 0; xx < w; ++xx) {
        const Tap& b = tx[static_cast<size_t>(xx)];
        dst[y * w + xx] =
            a.w0 * (b.w0 * r0[b.i0] + b.w1 * r0[b.i1]) + a.w1 * (b.w0 * r1[b.i0] + b.w1 * r1[b.i1]);
      }
    }
  }
  return out;
}

// Every field of `p` but its tensors (initial_latents, init), which a hires pass sets itself.
// A field added to Txt2ImgParams is added here.
Txt2ImgParams settings_of(const Txt2ImgParams& p) {
  Txt2ImgParams q;
  q.prompt = p.prompt;
  q.negative_prompt = p.negative_prompt;
  q.width = p.width;
  q.height = p.height;
  q.original_size = p.original_size;
  q.crop_top_left = p.crop_top_left;
  q.target_size = p.target_size;
  q.steps = p.steps;
  q.cfg_scale = p.cfg_scale;
  q.clip_skip = p.clip_skip;
  q.seed = p.seed;
  q.sampler = p.sampler;
  q.batch = p.batch;
  q.loras = p.loras;
  q.release_stages = p.release_stages;
  q.hires = p.hires;
  q.tiny_vae = p.tiny_vae;
  q.on_step = p.on_step;
  q.cancelled = p.cancelled;
  q.on_latents = p.on_latents;
  q.on_denoised = p.on_denoised;
  q.decode = p.decode;
  return q;
}

// The hires fix (Txt2ImgParams::hires): txt2img at the params' size, its 8-bit pictures resized
// by Lanczos to the hires size (or, for the latent upscalers, its final latents resized without
// a decode), then img2img from them with the same seed.
Txt2ImgResult txt2img_hires(DiffusionModel& model, const SchedulerConfig& scheduler_config,
                            const Txt2ImgParams& p) {
  validate_txt2img_params(p, model.vae_scale_factor());
  const HiresFix& hr = *p.hires;
  int first_total = 0;
  Txt2ImgParams first = settings_of(p);
  if (p.initial_latents) {
    first.initial_latents.emplace(DType::kF32, p.initial_latents->shape(), "the initial latents");
    std::memcpy(first.initial_latents->data(), p.initial_latents->data(),
                p.initial_latents->bytes());
  }
  first.hires.reset();
  first.release_stages = false;  // the second pass needs them all again
  const bool latent = hr.upscaler != HiresFix::Upscaler::kLanczos;
  first.decode = !latent;
  first.on_step = [&](int done, int total) {
    first_total = total;
    if (p.on_step) p.on_step(done, total);
  };
  Txt2ImgResult r1 = txt2img(model, scheduler_config, first);

  const int f = model.vae_scale_factor();
  const auto [w2, h2] = hires_size(hr, p.width, p.height, f);
  InitImage init;
  init.strength = hr.strength;
  if (latent) {
    init.latents =
        resize_latents(r1.latents, h2 / f, w2 / f, hr.upscaler == HiresFix::Upscaler::kLatent);
  } else {
    const int64_t pixels = int64_t{p.height} * p.width * 3;
    init.image = Tensor(DType::kF32, {p.batch, h2, w2, 3}, "the upscaled first-pass pictures");
    for (int i = 0; i < p.batch; ++i) {
      const Image8 img = float_to_image8(
          {r1.images.as<float>() + i * pixels, static_cast<size_t>(pixels)}, p.height, p.width);
      const Tensor t = picture_tensor(img, w2, h2);
      std::memcpy(init.image.as<float>() + i * t.numel(), t.data(), t.bytes());
    }
  }
  r1.images = Tensor();  // the first pass's pictures are not kept
  Txt2ImgParams second = settings_of(p);
  second.hires.reset();
  second.width = w2;
  second.height = h2;
  second.steps = hr.steps > 0 ? hr.steps : p.steps;
  second.original_size.reset();  // SDXL: the micro-conditioning of the larger size
  second.target_size.reset();
  second.init = std::move(init);
  if (p.on_step)
    second.on_step = [&](int done, int total) {
      p.on_step(first_total + done, first_total + total);
    };
  if (p.on_denoised)
    second.on_denoised = [&](int done, int total, const Tensor& x0) {
      p.on_denoised(first_total + done, first_total + total, x0);
    };
  Txt2ImgResult r2 = txt2img(model, scheduler_config, second);
  r2.timings.text_ms += r1.timings.text_ms;
  r2.timings.denoise_ms += r1.timings.denoise_ms;
  r2.timings.decode_ms += r1.timings.decode_ms;
  r2.timings.first_step_ms = r1.timings.first_step_ms;
  r1.warnings.insert(r1.warnings.end(), r2.warnings.begin(), r2.warnings.end());
  r2.warnings = std::move(r1.warnings);
  return r2;
}

}  // namespace

Txt2ImgResult txt2img(DiffusionModel& model, const SchedulerConfig& scheduler_config,
                      const Txt2ImgParams& p) {
  if (p.hires) return txt2img_hires(model, scheduler_config, p);
  const Txt2ImgParams* one[] = {&p};
  std::vector<Txt2ImgOutcome> out = txt2img_batch(model, scheduler_config, one);
  if (out[0].error) std::rethrow_exception(out[0].error);
  return std::move(out[0].result);
}

}  // namespace hyrt::pipeline

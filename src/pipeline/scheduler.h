// Samplers (diffusers "schedulers") for the denoising loop: DDIM, Euler, Euler ancestral, Heun,
// DPM++ 2M, LCM, and the Karras noise schedule for the σ-based ones.
//
// Each sampler mirrors one diffusers class and reproduces its numbers: the timestep and sigma
// tables follow diffusers' float64 (numpy) / float32 (torch) split exactly, and `step` does the
// same float32 operations in the same order, so trajectories agree with diffusers to float
// rounding (see tests/unit/scheduler_test.cpp for the measured error against golden data).
//
//   SamplerKind::kDdim            DDIMScheduler (eta = 0)
//   SamplerKind::kEuler           EulerDiscreteScheduler (s_churn = 0)
//   SamplerKind::kEulerAncestral  EulerAncestralDiscreteScheduler
//   SamplerKind::kDpmpp2m         DPMSolverMultistepScheduler (solver_order 2, dpmsolver++,
//                                 midpoint, lower_order_final, final_sigmas_type "zero")
//   SamplerKind::kDpmpp2mKarras   the same with use_karras_sigmas=True
//   SamplerKind::kDpmpp2mSde      the same with algorithm_type "sde-dpmsolver++" (draws noise
//                                 every step; diffusers' per-step randn, not k-diffusion's
//                                 Brownian tree, so seeds match diffusers rather than A1111)
//   SamplerKind::kDpmpp2mSdeKarras  and with use_karras_sigmas=True
//   SamplerKind::kEulerKarras     EulerDiscreteScheduler with use_karras_sigmas=True
//   SamplerKind::kEulerAncestralKarras  Euler ancestral steps over that Karras schedule
//                                 (A1111's "Euler a" + "Karras"; diffusers' class has no such
//                                 option, so only the schedule is checked against diffusers)
//   SamplerKind::kHeun            HeunDiscreteScheduler (2nd order: two UNet calls per step but
//                                 the last, so num_steps() = 2·steps − 1 as diffusers lists them)
//   SamplerKind::kHeunKarras      the same with use_karras_sigmas=True
//   SamplerKind::kLcm             LCMScheduler (latent consistency: LCM-LoRA and LCM models, a
//                                 few steps at guidance 1–2; draws fresh noise after each step)
//
// How the txt2img loop drives any sampler (x: the latents, NCHW or NHWC — samplers are
// elementwise, so any layout works as long as model_output uses the same one):
//
//   sampler->set_timesteps(steps);
//   rng.randn(x); scale x by sampler->init_noise_sigma();
//   for (int i = 0; i < sampler->num_steps(); ++i) {
//     sampler->scale_model_input(x, x_in, i);           // x_in = x / sqrt(σ² + 1) or x
//     eps = unet(x_in, sampler->timesteps()[i], ...);    // then classifier-free guidance
//     sampler->step(eps, i, x, &rng);                    // x <- x at the next step
//   }
//
// Contract of `step`: call it with step_index = 0, 1, ..., num_steps() - 1 in order after one
// set_timesteps (multistep samplers keep the previous model outputs, Heun its first half-step;
// calling the begin index again restarts). An out-of-order index throws kInvalidArgument.
// `model_output` is what the UNet predicts (ε, v or x0 per SchedulerConfig::prediction_type) after
// guidance, with the same element count as `sample`. `rng` is needed only where needs_noise() is
// true (Euler a) and must be the generator the initial latents were drawn from to reproduce
// diffusers' images (Euler a, Euler a Karras, LCM).
//
// Thread safety: a Sampler is mutable state for one generation; do not share one between
// threads. Distinct Sampler objects are independent.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/rng.h"

namespace hyrt::pipeline {

enum class BetaSchedule { kLinear, kScaledLinear };
enum class TimestepSpacing { kLeading, kTrailing, kLinspace };
enum class PredictionType { kEpsilon, kVPrediction, kSample };

// The parts of a diffusers `scheduler_config.json` that these samplers read.
// Largest num_train_timesteps accepted (SD uses 1000; tables are sized from it).
inline constexpr int kMaxTrainTimesteps = 100000;

struct SchedulerConfig {
  int num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  BetaSchedule beta_schedule = BetaSchedule::kScaledLinear;
  int steps_offset = 1;
  // nullopt: the sampler's own diffusers default ("leading" for DDIM, "linspace" for Euler,
  // Euler a and DPM++), which is what `XScheduler.from_config(cfg)` does when cfg lacks the key.
  std::optional<TimestepSpacing> timestep_spacing = TimestepSpacing::kLeading;
  PredictionType prediction_type = PredictionType::kEpsilon;
  bool set_alpha_to_one = false;  // DDIM only: alpha_prod at the final step is 1 (else ᾱ₀)
  bool clip_sample = false;       // DDIM, Heun, LCM: clamp the predicted x0 to ±clip_sample_range
  double clip_sample_range = 1.0;
  // LCM only: the distillation schedule the steps are taken from (train_steps / this apart)
  // and the boundary-condition scale of the consistency function (diffusers' defaults).
  int original_inference_steps = 50;
  double timestep_scaling = 10.0;
  // The config's `_class_name` ("DDIMScheduler", "LCMScheduler", ...); "" when absent. The
  // sampler is the caller's choice, as in A1111; a CLI may take its default from this.
  std::string class_name;

  // Stable Diffusion 1.5's values (scaled-linear betas 0.00085–0.012, 1000 steps, offset 1,
  // leading spacing, epsilon prediction).
  static SchedulerConfig sd15_defaults() { return {}; }
  // Parses a scheduler_config.json text; keys it lacks keep the SD 1.5 defaults, except a
  // missing timestep_spacing which becomes nullopt (the sampler's default), as in diffusers.
  // Unknown values of known keys throw kInvalidModel (kUnsupported for e.g. a cosine schedule).
  // Ranges, checked with the field, value and range in the message: num_train_timesteps in
  // [2, kMaxTrainTimesteps], beta_start <= beta_end both in (0, 1), steps_offset in
  // [0, num_train_timesteps), clip_sample_range in (0, 1e6), original_inference_steps in
  // [1, num_train_timesteps], timestep_scaling in (0, 1e6).
  static SchedulerConfig from_json(std::string_view json_text, std::string_view origin = "json");
  // Reads `model_dir/scheduler/scheduler_config.json` if it exists, else sd15_defaults().
  static SchedulerConfig load_or_default(const std::filesystem::path& model_dir);
};

enum class SamplerKind {
  kDdim,
  kEuler,
  kEulerAncestral,
  kDpmpp2m,
  kDpmpp2mKarras,
  kEulerKarras,
  kEulerAncestralKarras,
  kHeun,
  kHeunKarras,
  kLcm,
  kDpmpp2mSde,
  kDpmpp2mSdeKarras,
};

// "ddim", "euler", "euler_a", "heun", "dpmpp_2m", "dpmpp_2m_sde", "lcm", and "euler_karras",
// "euler_a_karras", "heun_karras", "dpmpp_2m_karras", "dpmpp_2m_sde_karras" (also accepts A1111's
// display names such as "Euler a" or "DPM++ 2M Karras", case-insensitively). Throws
// kInvalidArgument listing the accepted names.
SamplerKind parse_sampler_kind(std::string_view name);
// The short name above ("euler_a").
std::string_view sampler_id(SamplerKind kind);
// The name AUTOMATIC1111's web UI shows (and writes into PNG parameters): "Euler a"; a Karras
// kind is the sampler's name + " Karras", which A1111 reads back as sampler + schedule type.
std::string_view sampler_display_name(SamplerKind kind);
// Every kind, in the order --help lists them.
std::span<const SamplerKind> all_sampler_kinds();
// The kind with the Karras schedule for `kind` (itself if it has it already), or nullopt when
// the sampler has no such variant (DDIM, LCM).
std::optional<SamplerKind> karras_variant(SamplerKind kind);

class Sampler {
 public:
  virtual ~Sampler() = default;

  SamplerKind kind() const { return kind_; }
  const SchedulerConfig& config() const { return config_; }

  // Builds the schedule for `num_steps` denoising steps (1 ≤ num_steps ≤ num_train_timesteps)
  // and clears any multistep history. Throws kInvalidArgument for a bad count.
  virtual void set_timesteps(int num_steps) = 0;

  // step() calls (= UNet evaluations) of the schedule: the step count asked for, except Heun's
  // 2·steps − 1.
  int num_steps() const { return static_cast<int>(timesteps_.size()); }
  // UNet evaluations per step of the schedule as the user counts steps (Heun 2, else 1):
  // img2img starts at first_img2img_step(...) · order(), as diffusers does.
  virtual int order() const { return 1; }
  // [num_steps]: the UNet's timestep input at each step, as diffusers' `scheduler.timesteps`
  // (integers for DDIM/DPM++, fractional values for Euler with linspace spacing).
  const std::vector<float>& timesteps() const { return timesteps_; }
  // [num_steps + 1]: the noise level σ at each step, ending with 0, as diffusers'
  // `scheduler.sigmas`; empty for DDIM, which has none.
  const std::vector<float>& sigmas() const { return sigmas_; }
  // The standard deviation of the initial latents: randn() · init_noise_sigma().
  float init_noise_sigma() const { return init_noise_sigma_; }

  // x_in = x / sqrt(σᵢ² + 1) for the Euler family, a copy otherwise (diffusers'
  // scale_model_input). `out` may alias `sample`. Sizes must match.
  void scale_model_input(std::span<const float> sample, std::span<float> out, int step_index) const;
  // The same scaling as one multiplier, for callers that fuse it into another kernel
  // (multiplying by it can differ from diffusers' division in the last bit).
  float model_input_scale(int step_index) const;

  // Advances `sample` in place from step `step_index` to the next one (see the header comment
  // for the contract).
  virtual void step(std::span<const float> model_output, int step_index, std::span<float> sample,
                    TorchCpuRng* rng) = 0;

  // The clean latents the model predicts at step `step_index` (diffusers' pred_original_sample,
  // before any clipping), for live previews: from the UNet's input `model_input` (after
  // scale_model_input) and its guided `model_output`,
  //   ε: (x_in − sqrt(1 − ᾱ)·ε) / sqrt(ᾱ),  v: sqrt(ᾱ)·x_in − sqrt(1 − ᾱ)·v,  sample: as is,
  // with ᾱ = ᾱ_t for DDIM and LCM and 1/(σᵢ² + 1) for the σ-based samplers (whose scaled input
  // is sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·ε too). `out` may alias either input; sizes must match.
  void predicted_original(std::span<const float> model_input, std::span<const float> model_output,
                          int step_index, std::span<float> out) const;

  // True if step() draws noise (Euler a, DPM++ 2M SDE, LCM).
  virtual bool needs_noise() const { return false; }

  // diffusers' set_begin_index: the first step() of this schedule will be `step_index`
  // (img2img starts part-way, see first_img2img_step). Multistep samplers start their
  // history there; the others need nothing. Cleared by set_timesteps.
  virtual void set_begin_index(int step_index);
  int begin_index() const { return begin_index_; }

  // diffusers' add_noise: `original` noised to the level of step `step_index`'s timestep,
  // written to `out` (which may alias either input; sizes must match):
  //   DDIM, LCM: sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·n;  Euler, Euler a, Heun: x + σ·n;
  //   DPM++: α_σ·x + σ_σ·n with α_σ = 1/sqrt(σ² + 1), σ_σ = σ·α_σ.
  void add_noise(std::span<const float> original, std::span<const float> noise, int step_index,
                 std::span<float> out) const;

 protected:
  Sampler(SamplerKind kind, const SchedulerConfig& config);
  void check_step_args(std::span<const float> model_output, int step_index,
                       std::span<float> sample) const;
  TimestepSpacing spacing_or(TimestepSpacing sampler_default) const {
    return config_.timestep_spacing.value_or(sampler_default);
  }

  SamplerKind kind_;
  SchedulerConfig config_;
  // ᾱ_t for t in [0, num_train_timesteps), float32 as diffusers holds it.
  std::vector<float> alphas_cumprod_;
  std::vector<float> timesteps_;
  std::vector<float> sigmas_;
  float init_noise_sigma_ = 1.0f;
  bool scales_model_input_ = false;
  int begin_index_ = 0;
};

// diffusers' StableDiffusionImg2ImgPipeline.get_timesteps: with `steps` scheduled and
// `strength` in (0, 1], the first step that runs, steps - min(int(steps · strength), steps),
// counted in steps as the user gives them: the first step() index is this · Sampler::order().
// Throws kInvalidArgument when no step would run or strength is outside (0, 1].
int first_img2img_step(int steps, double strength);

// A sampler of `kind` for `config`; call set_timesteps before use.
std::unique_ptr<Sampler> make_sampler(SamplerKind kind, const SchedulerConfig& config);

}  // namespace hyrt::pipeline

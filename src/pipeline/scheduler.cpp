// Samplers mirroring diffusers' DDIMScheduler, EulerDiscreteScheduler,
// EulerAncestralDiscreteScheduler, HeunDiscreteScheduler, DPMSolverMultistepScheduler and
// LCMScheduler.
//
// Numbers: diffusers builds betas and ᾱ with torch in float32, the timestep/sigma tables with
// numpy in float64 (then stores them as float32), and runs each step as float32 tensor
// arithmetic with 0-dim float32 scalars. Each computation below says which of these it mirrors;
// scalar factors are formed in float in the same order so results match to the last bit where
// the C library agrees with torch.
#include "pipeline/scheduler.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "weights/json_text.h"

namespace hyrt::pipeline {
namespace {

// torch.linspace(start, end, steps, dtype=float32) on the CPU: the step is formed in float and
// the second half is counted back from `end`, which keeps both endpoints exact.
std::vector<float> torch_linspace_f32(double start_d, double end_d, int steps) {
  const float start = static_cast<float>(start_d);
  const float end = static_cast<float>(end_d);
  std::vector<float> out(steps);
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const float step = (end - start) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i) {
    out[i] = i < halfway ? start + step * static_cast<float>(i)
                         : end - step * static_cast<float>(steps - i - 1);
  }
  return out;
}

// np.linspace(start, stop, num) in float64: i·step + start, with the endpoint set exactly.
std::vector<double> numpy_linspace(double start, double stop, int num) {
  std::vector<double> out(num);
  if (num == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / (num - 1);
  for (int i = 0; i < num; ++i)
    out[i] = static_cast<double>(i) * step + start;
  out[num - 1] = stop;
  return out;
}

// ᾱ_t (diffusers: betas by torch.linspace in float32, alphas_cumprod = torch.cumprod(1 - β),
// which accumulates in double on the CPU and stores float32).
std::vector<float> make_alphas_cumprod(const SchedulerConfig& c) {
  std::vector<float> betas;
  switch (c.beta_schedule) {
    case BetaSchedule::kLinear:
      betas = torch_linspace_f32(c.beta_start, c.beta_end, c.num_train_timesteps);
      break;
    case BetaSchedule::kScaledLinear:
      betas =
          torch_linspace_f32(std::sqrt(c.beta_start), std::sqrt(c.beta_end), c.num_train_timesteps);
      for (float& b : betas)
        b = b * b;
      break;
  }
  std::vector<float> alphas_cumprod(betas.size());
  double product = 1.0;
  for (size_t t = 0; t < betas.size(); ++t) {
    product *= static_cast<double>(1.0f - betas[t]);
    alphas_cumprod[t] = static_cast<float>(product);
  }
  return alphas_cumprod;
}

// σ_t = sqrt((1 − ᾱ_t) / ᾱ_t), in float32 as diffusers computes it from the torch tensor.
std::vector<float> make_train_sigmas(const std::vector<float>& alphas_cumprod) {
  std::vector<float> sigmas(alphas_cumprod.size());
  for (size_t t = 0; t < sigmas.size(); ++t) {
    sigmas[t] = std::sqrt((1.0f - alphas_cumprod[t]) / alphas_cumprod[t]);
  }
  return sigmas;
}

// np.interp(x, arange(n), table) in float64.
double interp_table(double x, const std::vector<float>& table) {
  const int last = static_cast<int>(table.size()) - 1;
  if (x <= 0) return table[0];
  if (x >= last) return table[last];
  const int j = static_cast<int>(std::floor(x));
  const double slope = (static_cast<double>(table[j + 1]) - table[j]) / 1.0;
  return slope * (x - j) + table[j];
}

// Timesteps (descending) for the Euler family and DDIM: diffusers' three spacings, in float64.
// `round_linspace`: DDIM rounds linspace values to integers, Euler keeps them fractional.
std::vector<double> spaced_timesteps(TimestepSpacing spacing, int train_steps, int steps,
                                     int steps_offset, bool round_linspace) {
  std::vector<double> t(steps);
  switch (spacing) {
    case TimestepSpacing::kLinspace: {
      const auto grid = numpy_linspace(0.0, train_steps - 1, steps);
      for (int i = 0; i < steps; ++i) {
        const double v = grid[steps - 1 - i];
        t[i] = round_linspace ? std::nearbyint(v) : static_cast<double>(static_cast<float>(v));
      }
      break;
    }
    case TimestepSpacing::kLeading: {
      const int ratio = train_steps / steps;
      for (int i = 0; i < steps; ++i)
        t[i] = static_cast<double>(steps - 1 - i) * ratio + steps_offset;
      break;
    }
    case TimestepSpacing::kTrailing: {
      // np.arange(train_steps, 0, -ratio).round() - 1
      const double ratio = static_cast<double>(train_steps) / steps;
      for (int i = 0; i < steps; ++i)
        t[i] = std::nearbyint(train_steps - i * ratio) - 1.0;
      break;
    }
  }
  return t;
}

// diffusers' _sigma_to_t: the fractional training timestep whose log σ matches, interpolating
// linearly in log σ between neighbouring training steps. log_sigmas ascend with t.
double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const int n = static_cast<int>(log_sigmas.size());
  // Index of the last entry ≤ log_sigma (0 if none), clipped so that low + 1 exists.
  int low = 0;
  for (int i = 0; i < n; ++i) {
    if (log_sigma - static_cast<double>(log_sigmas[i]) >= 0) low = i;
  }
  low = std::min(low, n - 2);
  const int high = low + 1;
  const float low_value = log_sigmas[low];
  const float high_value = log_sigmas[high];
  // (low - high) is a float32 difference in numpy; (low - log_sigma) is float64.
  double w =
      (static_cast<double>(low_value) - log_sigma) / static_cast<double>(low_value - high_value);
  w = std::clamp(w, 0.0, 1.0);
  return (1.0 - w) * low + w * high;
}

// log σ of each training sigma, in float32 (numpy's np.log of the float32 table).
std::vector<float> logs_of(const std::vector<float>& sigmas) {
  std::vector<float> logs(sigmas.size());
  for (size_t i = 0; i < logs.size(); ++i)
    logs[i] = std::log(sigmas[i]);
  return logs;
}

// Karras et al. (2022): `steps` noise levels from sigma_max down to sigma_min, evenly spaced in
// σ^(1/ρ) with ρ = 7 (diffusers' _convert_to_karras, float64).
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int steps) {
  const double rho = 7.0;
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  const auto ramp = numpy_linspace(0.0, 1.0, steps);
  std::vector<double> sigmas(static_cast<size_t>(steps));
  for (int i = 0; i < steps; ++i)
    sigmas[static_cast<size_t>(i)] =
        std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  return sigmas;
}

void check_step_count(int num_steps, const SchedulerConfig& c) {
  HYRT_CHECK(num_steps >= 1 && num_steps <= c.num_train_timesteps, kInvalidArgument,
             "sampler steps must be in [1, ", c.num_train_timesteps, "], got ", num_steps);
}

// How the sampler turns the UNet output into x0 for σ-parameterised samplers (Euler family):
// x = x0 + σ·ε in the "variance exploding" form used by k-diffusion.
float predicted_x0_sigma(PredictionType type, float sample, float output, float sigma) {
  switch (type) {
    case PredictionType::kEpsilon:
      return sample - sigma * output;
    case PredictionType::kVPrediction: {
      const float sigma_sq_plus_one = sigma * sigma + 1.0f;
      const float c_out = -sigma / std::sqrt(sigma_sq_plus_one);
      return output * c_out + sample / sigma_sq_plus_one;
    }
    case PredictionType::kSample:
      return output;
  }
  return output;
}

// ---------------------------------------------------------------------------------------------
// DDIMScheduler with eta = 0 (deterministic).
class DdimSampler final : public Sampler {
 public:
  explicit DdimSampler(const SchedulerConfig& c) : Sampler(SamplerKind::kDdim, c) {
    final_alpha_cumprod_ = c.set_alpha_to_one ? 1.0f : alphas_cumprod_[0];
  }

  void set_timesteps(int num_steps) override {
    begin_index_ = 0;
    check_step_count(num_steps, config_);
    const auto t = spaced_timesteps(spacing_or(TimestepSpacing::kLeading),
                                    config_.num_train_timesteps, num_steps, config_.steps_offset,
                                    /*round_linspace=*/true);
    timesteps_.assign(t.begin(), t.end());
    sigmas_.clear();
    init_noise_sigma_ = 1.0f;
  }

  void step(std::span<const float> model_output, int step_index, std::span<float> sample,
            TorchCpuRng* /*rng*/) override {
    check_step_args(model_output, step_index, sample);
    const int t = static_cast<int>(timesteps_[step_index]);
    // diffusers steps back by train_steps // steps whatever the spacing.
    const int prev_t = t - config_.num_train_timesteps / num_steps();
    HYRT_CHECK(t >= 0 && t < config_.num_train_timesteps, kInternal, "DDIM timestep ", t);
    const float alpha_prod_t = alphas_cumprod_[t];
    const float alpha_prod_prev = prev_t >= 0 ? alphas_cumprod_[prev_t] : final_alpha_cumprod_;
    const float beta_prod_t = 1.0f - alpha_prod_t;
    const float sqrt_alpha_t = std::sqrt(alpha_prod_t);
    const float sqrt_beta_t = std::sqrt(beta_prod_t);
    const float sqrt_alpha_prev = std::sqrt(alpha_prod_prev);
    // eta = 0: std_dev_t = 0, so the direction coefficient is sqrt(1 − ᾱ_prev − 0).
    const float direction_coef = std::sqrt(1.0f - alpha_prod_prev - 0.0f);
    const float clip = static_cast<float>(config_.clip_sample_range);
    for (size_t i = 0; i < sample.size(); ++i) {
      const float x = sample[i];
      const float out = model_output[i];
      float x0, eps;
      switch (config_.prediction_type) {
        case PredictionType::kEpsilon:
          x0 = (x - sqrt_beta_t * out) / sqrt_alpha_t;
          eps = out;
          break;
        case PredictionType::kVPrediction:
          x0 = sqrt_alpha_t * x - sqrt_beta_t * out;
          eps = sqrt_alpha_t * out + sqrt_beta_t * x;
          break;
        case PredictionType::kSample:
        default:
          x0 = out;
          eps = (x - sqrt_alpha_t * x0) / sqrt_beta_t;
          break;
      }
      if (config_.clip_sample) x0 = std::clamp(x0, -clip, clip);
      sample[i] = sqrt_alpha_prev * x0 + direction_coef * eps;
    }
  }

 private:
  float final_alpha_cumprod_ = 1.0f;
};

// ---------------------------------------------------------------------------------------------
// EulerDiscreteScheduler (s_churn = 0) and EulerAncestralDiscreteScheduler share the schedule.
class EulerFamilySampler : public Sampler {
 protected:
  EulerFamilySampler(SamplerKind kind, const SchedulerConfig& c, bool karras)
      : Sampler(kind, c), karras_(karras) {}

  // timesteps_ [num_steps] and sigmas_ [num_steps + 1] as EulerDiscreteScheduler builds them
  // (HeunDiscreteScheduler builds the same and then repeats the inner entries).
  void build_schedule(int num_steps) {
    check_step_count(num_steps, config_);
    const TimestepSpacing spacing = spacing_or(TimestepSpacing::kLinspace);
    const auto t = spaced_timesteps(spacing, config_.num_train_timesteps, num_steps,
                                    config_.steps_offset, /*round_linspace=*/false);
    const auto train_sigmas = make_train_sigmas(alphas_cumprod_);
    timesteps_.resize(num_steps);
    sigmas_.resize(num_steps + 1);
    std::vector<double> spaced_sigmas(num_steps);
    for (int i = 0; i < num_steps; ++i) {
      // numpy holds these timesteps as float32 before interpolating.
      const float t32 = static_cast<float>(t[i]);
      timesteps_[i] = t32;
      spaced_sigmas[i] = interp_table(t32, train_sigmas);
      sigmas_[i] = static_cast<float>(spaced_sigmas[i]);
    }
    if (karras_) {
      // _convert_to_karras between the spaced schedule's own extremes (not the training
      // range, as DPM++ uses), ρ = 7, in float64; each σ maps back to a fractional timestep.
      const std::vector<float> log_sigmas = logs_of(train_sigmas);
      const auto sigmas = karras_sigmas(spaced_sigmas.back(), spaced_sigmas.front(), num_steps);
      for (int i = 0; i < num_steps; ++i) {
        sigmas_[i] = static_cast<float>(sigmas[i]);
        timesteps_[i] = static_cast<float>(sigma_to_t(sigmas[i], log_sigmas));
      }
    }
    sigmas_[num_steps] = 0.0f;
    const float max_sigma = *std::max_element(sigmas_.begin(), sigmas_.end());
    init_noise_sigma_ =
        (spacing == TimestepSpacing::kLinspace || spacing == TimestepSpacing::kTrailing)
            ? max_sigma
            : std::sqrt(max_sigma * max_sigma + 1.0f);
    scales_model_input_ = true;
  }

  bool karras_;
};

class EulerSampler final : public EulerFamilySampler {
 public:
  EulerSampler(const SchedulerConfig& c, bool karras)
      : EulerFamilySampler(karras ? SamplerKind::kEulerKarras : SamplerKind::kEuler, c, karras) {}

  void set_timesteps(int num_steps) override {
    begin_index_ = 0;
    build_schedule(num_steps);
  }

  void step(std::span<const float> model_output, int step_index, std::span<float> sample,
            TorchCpuRng* /*rng*/) override {
    check_step_args(model_output, step_index, sample);
    const float sigma = sigmas_[step_index];
    const float sigma_hat = sigma * (0.0f + 1.0f);  // gamma = 0 without churn
    const float dt = sigmas_[step_index + 1] - sigma_hat;
    for (size_t i = 0; i < sample.size(); ++i) {
      const float x = sample[i];
      const float x0 = predicted_x0_sigma(config_.prediction_type, x, model_output[i], sigma_hat);
      const float derivative = (x - x0) / sigma_hat;
      sample[i] = x + derivative * dt;
    }
  }
};

class EulerAncestralSampler final : public EulerFamilySampler {
 public:
  EulerAncestralSampler(const SchedulerConfig& c, bool karras)
      : EulerFamilySampler(
            karras ? SamplerKind::kEulerAncestralKarras : SamplerKind::kEulerAncestral, c, karras) {
  }

  void set_timesteps(int num_steps) override {
    begin_index_ = 0;
    build_schedule(num_steps);
  }
  bool needs_noise() const override { return true; }

  void step(std::span<const float> model_output, int step_index, std::span<float> sample,
            TorchCpuRng* rng) override {
    check_step_args(model_output, step_index, sample);
    HYRT_CHECK(rng != nullptr, kInvalidArgument, sampler_display_name(kind_),
               " needs a random generator for its step noise");
    const float sigma_from = sigmas_[step_index];
    const float sigma_to = sigmas_[step_index + 1];
    const float from_sq = sigma_from * sigma_from;
    const float to_sq = sigma_to * sigma_to;
    const float sigma_up = std::sqrt(to_sq * (from_sq - to_sq) / from_sq);
    const float sigma_down = std::sqrt(to_sq - sigma_up * sigma_up);
    const float dt = sigma_down - sigma_from;
    // diffusers draws the noise after the deterministic update, one randn over the whole batch.
    noise_.resize(sample.size());
    rng->randn(noise_);
    for (size_t i = 0; i < sample.size(); ++i) {
      const float x = sample[i];
      const float x0 = predicted_x0_sigma(config_.prediction_type, x, model_output[i], sigma_from);
      const float derivative = (x - x0) / sigma_from;
      const float deterministic = x + derivative * dt;
      sample[i] = deterministic + noise_[i] * sigma_up;
    }
  }

 private:
  std::vector<float> noise_;
};

// HeunDiscreteScheduler: Euler's schedule with every inner entry repeated (timesteps
// [t0, t1, t1, ..., tn-1, tn-1], sigmas [s0, s1, s1, ..., sn-1, sn-1, 0]); a first-order call
// takes an Euler step and keeps its slope, the following call averages that slope with the
// slope at the step's end and redoes the step from the kept sample. The last call (to σ = 0)
// is a plain Euler step.
class HeunSampler final : public EulerFamilySampler {
 public:
  HeunSampler(const SchedulerConfig& c, bool karras)
      : EulerFamilySampler(karras ? SamplerKind::kHeunKarras : SamplerKind::kHeun, c, karras) {}

  int order() const override { return 2; }

  void set_timesteps(int num_steps) override {
    begin_index_ = 0;
    build_schedule(num_steps);
    std::vector<float> t = std::move(timesteps_), s = std::move(sigmas_);
    timesteps_.assign(1, t[0]);
    sigmas_.assign(1, s[0]);
    for (int i = 1; i < num_steps; ++i) {
      timesteps_.insert(timesteps_.end(), 2, t[static_cast<size_t>(i)]);
      sigmas_.insert(sigmas_.end(), 2, s[static_cast<size_t>(i)]);
    }
    sigmas_.push_back(0.0f);
    restart(0);
  }

  void step(std::span<const float> model_output, int step_index, std::span<float> sample,
            TorchCpuRng* /*rng*/) override {
    check_step_args(model_output, step_index, sample);
    if (step_index == begin_index_) restart(begin_index_);
    HYRT_CHECK(step_index == next_step_, kInvalidArgument, sampler_display_name(kind_),
               " keeps state between its two half-steps: step ", step_index, " called after step ",
               next_step_ - 1, " (steps must run in order)");
    const size_t n = sample.size();
    const bool first_order = !pending_;
    // diffusers: sigma_hat = σ·(γ + 1) with γ = 0; the second call reads the step's ends.
    const float sigma = first_order ? sigmas_[step_index] : sigmas_[step_index - 1];
    const float sigma_next = first_order ? sigmas_[step_index + 1] : sigmas_[step_index];
    const float sigma_input = first_order ? sigma : sigma_next;
    const float clip = static_cast<float>(config_.clip_sample_range);
    if (first_order) {
      dt_ = sigma_next - sigma;
      derivative_.resize(n);
      kept_sample_.assign(sample.begin(), sample.end());
    }
    for (size_t i = 0; i < n; ++i) {
      const float x = sample[i];
      float x0 = predicted_x0_sigma(config_.prediction_type, x, model_output[i], sigma_input);
      if (config_.clip_sample) x0 = std::clamp(x0, -clip, clip);
      if (first_order) {
        const float derivative = (x - x0) / sigma;
        derivative_[i] = derivative;
        sample[i] = x + derivative * dt_;
      } else {
        const float derivative = (derivative_[i] + (x - x0) / sigma_next) / 2.0f;
        sample[i] = kept_sample_[i] + derivative * dt_;
      }
    }
    pending_ = first_order;
    next_step_ = step_index + 1;
  }

 private:
  void restart(int step_index) {
    pending_ = false;
    next_step_ = step_index;
  }

  bool pending_ = false;  // a first-order call ran and its second call is due
  float dt_ = 0.0f;
  std::vector<float> derivative_;   // the first-order call's slope
  std::vector<float> kept_sample_;  // the sample the first-order call started from
  int next_step_ = 0;
};

// ---------------------------------------------------------------------------------------------
// LCMScheduler: the consistency function's boundary-condition scalings c_skip, c_out on the
// x0 prediction, then (but at the last step) x0 noised afresh to the next timestep. Timesteps
// are `steps` evenly spaced indices into the distillation schedule of original_inference_steps
// timesteps (train_steps / original_inference_steps apart, ending at train_steps − 1); the
// spacing and offset settings do not apply, as in diffusers.
class LcmSampler final : public Sampler {
 public:
  explicit LcmSampler(const SchedulerConfig& c) : Sampler(SamplerKind::kLcm, c) {}

  bool needs_noise() const override { return true; }

  void set_timesteps(int num_steps) override {
    begin_index_ = 0;
    check_step_count(num_steps, config_);
    const int original = config_.original_inference_steps;
    HYRT_CHECK(original >= 1 && original <= config_.num_train_timesteps, kInvalidArgument,
               "LCM: original_inference_steps ", original, " must be in [1, ",
               config_.num_train_timesteps, "]");
    HYRT_CHECK(num_steps <= original, kInvalidArgument, "LCM takes at most ", original,
               " steps (its distillation schedule's length, original_inference_steps), got ",
               num_steps);
    const int spacing = config_.num_train_timesteps / original;
    // lcm_origin_timesteps, descending: original·k − 1, ..., k − 1.
    timesteps_.resize(num_steps);
    const double stride = static_cast<double>(original) / num_steps;  // np.linspace, no endpoint
    for (int i = 0; i < num_steps; ++i) {
      const int index = static_cast<int>(std::floor(static_cast<double>(i) * stride));
      timesteps_[i] = static_cast<float>((original - index) * spacing - 1);
    }
    sigmas_.clear();
    init_noise_sigma_ = 1.0f;
  }

  void step(std::span<const float> model_output, int step_index, std::span<float> sample,
            TorchCpuRng* rng) override {
    check_step_args(model_output, step_index, sample);
    const bool last = step_index == num_steps() - 1;
    HYRT_CHECK(last || rng != nullptr, kInvalidArgument,
               "LCM needs a random generator for its step noise");
    const int t = static_cast<int>(timesteps_[step_index]);
    const int prev_t = last ? t : static_cast<int>(timesteps_[step_index + 1]);
    const float alpha_prod_t = alphas_cumprod_[static_cast<size_t>(t)];
    const float alpha_prod_prev = alphas_cumprod_[static_cast<size_t>(prev_t)];
    const float sqrt_alpha_t = std::sqrt(alpha_prod_t);
    const float sqrt_beta_t = std::sqrt(1.0f - alpha_prod_t);
    // get_scalings_for_boundary_condition_discrete, as the float32 tensor arithmetic it is.
    const float sigma_data_sq = 0.25f;  // σ_data = 0.5
    const float scaled = static_cast<float>(t) * static_cast<float>(config_.timestep_scaling);
    const float scaled_sq = scaled * scaled;
    const float c_skip = sigma_data_sq / (scaled_sq + sigma_data_sq);
    const float c_out = scaled / std::sqrt(scaled_sq + sigma_data_sq);
    const float clip = static_cast<float>(config_.clip_sample_range);
    const size_t n = sample.size();
    if (!last) {
      noise_.resize(n);
      rng->randn(noise_);  // drawn after the model ran, one randn over the whole batch
    }
    const float sqrt_alpha_prev = std::sqrt(alpha_prod_prev);
    const float sqrt_beta_prev = std::sqrt(1.0f - alpha_prod_prev);
    for (size_t i = 0; i < n; ++i) {
      const float x = sample[i];
      const float out = model_output[i];
      float x0;
      switch (config_.prediction_type) {
        case PredictionType::kEpsilon:
          x0 = (x - sqrt_beta_t * out) / sqrt_alpha_t;
          break;
        case PredictionType::kVPrediction:
          x0 = sqrt_alpha_t * x - sqrt_beta_t * out;
          break;
        case PredictionType::kSample:
        default:
          x0 = out;
          break;
      }
      if (config_.clip_sample) x0 = std::clamp(x0, -clip, clip);
      const float denoised = c_out * x0 + c_skip * x;
      sample[i] = last ? denoised : sqrt_alpha_prev * denoised + sqrt_beta_prev * noise_[i];
    }
  }

 private:
  std::vector<float> noise_;
};

// ---------------------------------------------------------------------------------------------
// DPMSolverMultistepScheduler: solver_order 2, algorithm "dpmsolver++", solver_type "midpoint",
// lower_order_final, final_sigmas_type "zero", lambda_min_clipped -inf. The model works in the
// VP form x = α·x0 + σ_vp·ε with α = 1/sqrt(σ²+1), σ_vp = σ·α; the UNet input is not scaled.
class DpmppSampler final : public Sampler {
 public:
  // sde: algorithm_type "sde-dpmsolver++" (DPM++ 2M SDE): the update keeps exp(−h) of the
  // sample and adds fresh noise σ_t·sqrt(1 − exp(−2h))·n, drawn at every step.
  DpmppSampler(const SchedulerConfig& c, SamplerKind kind)
      : Sampler(kind, c),
        karras_(kind == SamplerKind::kDpmpp2mKarras || kind == SamplerKind::kDpmpp2mSdeKarras),
        sde_(kind == SamplerKind::kDpmpp2mSde || kind == SamplerKind::kDpmpp2mSdeKarras) {}

  bool needs_noise() const override { return sde_; }

  void set_timesteps(int num_steps) override {
    begin_index_ = 0;
    check_step_count(num_steps, config_);
    const int train = config_.num_train_timesteps;
    // lambda_min_clipped = -inf clips nothing: the last usable timestep is train_steps.
    const int last_timestep = train;
    std::vector<double> t(num_steps);
    switch (spacing_or(TimestepSpacing::kLinspace)) {
      case TimestepSpacing::kLinspace: {
        const auto grid = numpy_linspace(0.0, last_timestep - 1, num_steps + 1);
        for (int i = 0; i < num_steps; ++i)
          t[i] = std::nearbyint(grid[num_steps - i]);
        break;
      }
      case TimestepSpacing::kLeading: {
        const int ratio = last_timestep / (num_steps + 1);
        for (int i = 0; i < num_steps; ++i) {
          t[i] = static_cast<double>(num_steps - i) * ratio + config_.steps_offset;
        }
        break;
      }
      case TimestepSpacing::kTrailing: {
        const double ratio = static_cast<double>(train) / num_steps;
        for (int i = 0; i < num_steps; ++i)
          t[i] = std::nearbyint(last_timestep - i * ratio) - 1.0;
        break;
      }
    }
    const auto train_sigmas = make_train_sigmas(alphas_cumprod_);
    timesteps_.resize(num_steps);
    sigmas_.resize(num_steps + 1);
    if (karras_) {
      // Karras spacing between the extreme training sigmas; each σ maps back to a (rounded)
      // training timestep for the UNet.
      const std::vector<float> log_sigmas = logs_of(train_sigmas);
      const auto sigmas = karras_sigmas(train_sigmas.front(), train_sigmas.back(), num_steps);
      for (int i = 0; i < num_steps; ++i) {
        const double sigma = sigmas[static_cast<size_t>(i)];
        sigmas_[i] = static_cast<float>(sigma);
        timesteps_[i] = static_cast<float>(std::nearbyint(sigma_to_t(sigma, log_sigmas)));
      }
    } else {
      for (int i = 0; i < num_steps; ++i) {
        timesteps_[i] = static_cast<float>(t[i]);
        sigmas_[i] = static_cast<float>(interp_table(t[i], train_sigmas));
      }
    }
    sigmas_[num_steps] = 0.0f;
    init_noise_sigma_ = 1.0f;
    previous_x0_.clear();
    next_step_ = 0;
  }

  void step(std::span<const float> model_output, int step_index, std::span<float> sample,
            TorchCpuRng* rng) override {
    check_step_args(model_output, step_index, sample);
    HYRT_CHECK(!sde_ || rng != nullptr, kInvalidArgument, sampler_display_name(kind_),
               " needs a random generator for its step noise");
    if (step_index == begin_index_) {
      previous_x0_.clear();
      next_step_ = begin_index_;
    }
    HYRT_CHECK(step_index == next_step_, kInvalidArgument, sampler_display_name(kind_),
               " is a multistep sampler: step ", step_index, " called after step ", next_step_ - 1,
               " (steps must run in order 0, 1, ...)");
    const size_t n = sample.size();

    // convert_model_output: the data prediction x0 at σ_s.
    const Vp s0 = vp(sigmas_[step_index]);
    current_x0_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const float x = sample[i];
      const float out = model_output[i];
      switch (config_.prediction_type) {
        case PredictionType::kEpsilon:
          current_x0_[i] = (x - s0.sigma * out) / s0.alpha;
          break;
        case PredictionType::kVPrediction:
          current_x0_[i] = s0.alpha * x - s0.sigma * out;
          break;
        case PredictionType::kSample:
          current_x0_[i] = out;
          break;
      }
    }

    const float sigma_next = sigmas_[step_index + 1];
    const bool first_order = previous_x0_.empty() || step_index == num_steps() - 1;
    if (sde_) {
      noise_.resize(n);
      rng->randn(noise_);  // after convert_model_output, before the update, every step
    }
    if (sigma_next == 0.0f) {
      // The final step to σ = 0: the update reduces to x0 exactly (diffusers gets the same
      // through exp(-inf) = 0; stating it keeps the result independent of inf arithmetic).
      std::copy(current_x0_.begin(), current_x0_.end(), sample.begin());
    } else {
      const Vp t = vp(sigma_next);
      const float lambda_t = std::log(t.alpha) - std::log(t.sigma);
      const float lambda_s0 = std::log(s0.alpha) - std::log(s0.sigma);
      const float h = lambda_t - lambda_s0;
      // Coefficients of sample, D0 and (midpoint) D1 = (x0 − previous x0) / r0, and of the
      // noise: dpmsolver++ x_t = (σ_t/σ_s)·x − α_t(e^−h − 1)·D0 − ½α_t(e^−h − 1)·D1;
      // sde-dpmsolver++ x_t = (σ_t/σ_s·e^−h)·x + α_t(1 − e^−2h)·(D0 + ½D1) + σ_t·sqrt(1 − e^−2h)·n.
      float sample_coef, d0_coef, noise_coef = 0.0f;
      if (sde_) {
        sample_coef = t.sigma / s0.sigma * std::exp(-h);
        d0_coef = -(t.alpha * (1.0f - std::exp(-2.0f * h)));
        noise_coef = t.sigma * std::sqrt(1.0f - std::exp(-2.0f * h));
      } else {
        sample_coef = t.sigma / s0.sigma;
        d0_coef = t.alpha * (std::exp(-h) - 1.0f);
      }
      if (first_order) {
        for (size_t i = 0; i < n; ++i) {
          const float x = sample_coef * sample[i] - d0_coef * current_x0_[i];
          sample[i] = sde_ ? x + noise_coef * noise_[i] : x;
        }
      } else {
        const Vp s1 = vp(sigmas_[step_index - 1]);
        const float lambda_s1 = std::log(s1.alpha) - std::log(s1.sigma);
        const float h_0 = lambda_s0 - lambda_s1;
        const float r0 = h_0 / h;
        const float d1_scale = 1.0f / r0;
        const float d1_coef = 0.5f * d0_coef;
        for (size_t i = 0; i < n; ++i) {
          const float d1 = d1_scale * (current_x0_[i] - previous_x0_[i]);
          const float x = sample_coef * sample[i] - d0_coef * current_x0_[i] - d1_coef * d1;
          sample[i] = sde_ ? x + noise_coef * noise_[i] : x;
        }
      }
    }
    previous_x0_.swap(current_x0_);
    next_step_ = step_index + 1;
  }

 private:
  struct Vp {
    float alpha;
    float sigma;
  };
  // diffusers' _sigma_to_alpha_sigma_t, in float32.
  static Vp vp(float sigma) {
    const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
    return {alpha, sigma * alpha};
  }

  bool karras_;
  bool sde_;
  std::vector<float> noise_;
  std::vector<float> previous_x0_;  // x0 prediction of the previous step (empty at the start)
  std::vector<float> current_x0_;
  int next_step_ = 0;
};

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& ch : out)
    ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

Sampler::Sampler(SamplerKind kind, const SchedulerConfig& config) : kind_(kind), config_(config) {
  HYRT_CHECK(config.num_train_timesteps >= 2 && config.num_train_timesteps <= kMaxTrainTimesteps,
             kInvalidArgument, "num_train_timesteps must be in [2, ", kMaxTrainTimesteps, "], got ",
             config.num_train_timesteps);
  HYRT_CHECK(config.beta_start > 0 && config.beta_end > 0 && config.beta_end < 1, kInvalidArgument,
             "beta_start/beta_end must be in (0, 1), got ", config.beta_start, ", ",
             config.beta_end);
  alphas_cumprod_ = make_alphas_cumprod(config);
}

void Sampler::check_step_args(std::span<const float> model_output, int step_index,
                              std::span<float> sample) const {
  HYRT_CHECK(!timesteps_.empty(), kInvalidArgument, sampler_display_name(kind_),
             ": set_timesteps() must be called before step()");
  HYRT_CHECK(step_index >= 0 && step_index < num_steps(), kInvalidArgument,
             sampler_display_name(kind_), ": step index ", step_index, " outside [0, ", num_steps(),
             ")");
  HYRT_CHECK(model_output.size() == sample.size(), kInvalidArgument, sampler_display_name(kind_),
             ": model output has ", model_output.size(), " elements but the sample has ",
             sample.size());
}

void Sampler::set_begin_index(int step_index) {
  HYRT_CHECK(step_index >= 0 && step_index < num_steps(), kInvalidArgument,
             sampler_display_name(kind_), ": begin index ", step_index, " outside [0, ",
             num_steps(), ")");
  begin_index_ = step_index;
}

void Sampler::add_noise(std::span<const float> original, std::span<const float> noise,
                        int step_index, std::span<float> out) const {
  HYRT_CHECK(original.size() == noise.size() && original.size() == out.size(), kInvalidArgument,
             "add_noise: sizes differ (", original.size(), ", ", noise.size(), ", ", out.size(),
             ")");
  HYRT_CHECK(step_index >= 0 && step_index < num_steps(), kInvalidArgument,
             "add_noise: step index ", step_index, " outside [0, ", num_steps(), ")");
  float a, b;
  if (kind_ == SamplerKind::kDdim || kind_ == SamplerKind::kLcm) {
    const float alpha_prod = alphas_cumprod_[static_cast<size_t>(timesteps_[step_index])];
    a = std::sqrt(alpha_prod);
    b = std::sqrt(1.0f - alpha_prod);
  } else if (kind_ != SamplerKind::kDpmpp2m && kind_ != SamplerKind::kDpmpp2mKarras &&
             kind_ != SamplerKind::kDpmpp2mSde && kind_ != SamplerKind::kDpmpp2mSdeKarras) {
    a = 1.0f;  // the Euler family and Heun: x + σ·n
    b = sigmas_[step_index];
  } else {  // DPM++: _sigma_to_alpha_sigma_t
    const float sigma = sigmas_[step_index];
    a = 1.0f / std::sqrt(sigma * sigma + 1.0f);
    b = sigma * a;
  }
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = a * original[i] + b * noise[i];
}

void Sampler::predicted_original(std::span<const float> model_input,
                                 std::span<const float> model_output, int step_index,
                                 std::span<float> out) const {
  HYRT_CHECK(model_input.size() == model_output.size() && model_input.size() == out.size(),
             kInvalidArgument, "predicted_original: sizes differ (", model_input.size(), ", ",
             model_output.size(), ", ", out.size(), ")");
  HYRT_CHECK(step_index >= 0 && step_index < num_steps(), kInvalidArgument,
             "predicted_original: step index ", step_index, " outside [0, ", num_steps(), ")");
  float alpha_prod;
  if (kind_ == SamplerKind::kDdim || kind_ == SamplerKind::kLcm) {
    alpha_prod = alphas_cumprod_[static_cast<size_t>(timesteps_[step_index])];
  } else {
    const float sigma = sigmas_[step_index];
    alpha_prod = 1.0f / (sigma * sigma + 1.0f);
  }
  const float a = std::sqrt(alpha_prod), b = std::sqrt(1.0f - alpha_prod);
  switch (config_.prediction_type) {
    case PredictionType::kEpsilon:
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = (model_input[i] - b * model_output[i]) / a;
      break;
    case PredictionType::kVPrediction:
      for (size_t i = 0; i < out.size(); ++i)
        out[i] = a * model_input[i] - b * model_output[i];
      break;
    case PredictionType::kSample:
      if (out.data() != model_output.data())
        std::copy(model_output.begin(), model_output.end(), out.begin());
      break;
  }
}

int first_img2img_step(int steps, double strength) {
  HYRT_CHECK(strength > 0 && strength <= 1, kInvalidArgument, "strength must be in (0, 1] (got ",
             strength, ")");
  // Python's int(): truncation of the float64 product, as diffusers computes it.
  const int init = std::min(static_cast<int>(steps * strength), steps);
  HYRT_CHECK(init >= 1, kInvalidArgument, "strength ", strength, " with ", steps,
             " steps leaves no step to run (need steps * strength >= 1)");
  return steps - init;
}

void Sampler::scale_model_input(std::span<const float> sample, std::span<float> out,
                                int step_index) const {
  HYRT_CHECK(sample.size() == out.size(), kInvalidArgument, "scale_model_input: input has ",
             sample.size(), " elements, output ", out.size());
  HYRT_CHECK(step_index >= 0 && step_index < num_steps(), kInvalidArgument,
             "scale_model_input: step index ", step_index, " outside [0, ", num_steps(), ")");
  if (!scales_model_input_) {
    if (out.data() != sample.data()) std::copy(sample.begin(), sample.end(), out.begin());
    return;
  }
  const float sigma = sigmas_[step_index];
  const float divisor = std::sqrt(sigma * sigma + 1.0f);
  for (size_t i = 0; i < sample.size(); ++i)
    out[i] = sample[i] / divisor;
}

float Sampler::model_input_scale(int step_index) const {
  HYRT_CHECK(step_index >= 0 && step_index < num_steps(), kInvalidArgument,
             "model_input_scale: step index ", step_index, " outside [0, ", num_steps(), ")");
  if (!scales_model_input_) return 1.0f;
  const float sigma = sigmas_[step_index];
  return 1.0f / std::sqrt(sigma * sigma + 1.0f);
}

std::unique_ptr<Sampler> make_sampler(SamplerKind kind, const SchedulerConfig& config) {
  switch (kind) {
    case SamplerKind::kDdim:
      return std::make_unique<DdimSampler>(config);
    case SamplerKind::kEuler:
    case SamplerKind::kEulerKarras:
      return std::make_unique<EulerSampler>(config, kind == SamplerKind::kEulerKarras);
    case SamplerKind::kEulerAncestral:
    case SamplerKind::kEulerAncestralKarras:
      return std::make_unique<EulerAncestralSampler>(config,
                                                     kind == SamplerKind::kEulerAncestralKarras);
    case SamplerKind::kHeun:
    case SamplerKind::kHeunKarras:
      return std::make_unique<HeunSampler>(config, kind == SamplerKind::kHeunKarras);
    case SamplerKind::kLcm:
      return std::make_unique<LcmSampler>(config);
    case SamplerKind::kDpmpp2m:
    case SamplerKind::kDpmpp2mKarras:
    case SamplerKind::kDpmpp2mSde:
    case SamplerKind::kDpmpp2mSdeKarras:
      return std::make_unique<DpmppSampler>(config, kind);
  }
  fail(ErrorCode::kInternal, "unknown sampler kind");
}

namespace {
struct SamplerName {
  SamplerKind kind;
  std::string_view id;
  std::string_view display;
  std::optional<SamplerKind> karras;  // the kind with the Karras schedule, where there is one
};
constexpr SamplerName kSamplerNames[] = {
    {SamplerKind::kEulerAncestral, "euler_a", "Euler a", SamplerKind::kEulerAncestralKarras},
    {SamplerKind::kEuler, "euler", "Euler", SamplerKind::kEulerKarras},
    {SamplerKind::kHeun, "heun", "Heun", SamplerKind::kHeunKarras},
    {SamplerKind::kDdim, "ddim", "DDIM", std::nullopt},
    {SamplerKind::kDpmpp2m, "dpmpp_2m", "DPM++ 2M", SamplerKind::kDpmpp2mKarras},
    {SamplerKind::kDpmpp2mSde, "dpmpp_2m_sde", "DPM++ 2M SDE", SamplerKind::kDpmpp2mSdeKarras},
    {SamplerKind::kLcm, "lcm", "LCM", std::nullopt},
    {SamplerKind::kEulerAncestralKarras, "euler_a_karras", "Euler a Karras",
     SamplerKind::kEulerAncestralKarras},
    {SamplerKind::kEulerKarras, "euler_karras", "Euler Karras", SamplerKind::kEulerKarras},
    {SamplerKind::kHeunKarras, "heun_karras", "Heun Karras", SamplerKind::kHeunKarras},
    {SamplerKind::kDpmpp2mKarras, "dpmpp_2m_karras", "DPM++ 2M Karras",
     SamplerKind::kDpmpp2mKarras},
    {SamplerKind::kDpmpp2mSdeKarras, "dpmpp_2m_sde_karras", "DPM++ 2M SDE Karras",
     SamplerKind::kDpmpp2mSdeKarras},
};
constexpr auto kAllSamplerKinds = [] {
  std::array<SamplerKind, std::size(kSamplerNames)> kinds{};
  for (size_t i = 0; i < kinds.size(); ++i)
    kinds[i] = kSamplerNames[i].kind;
  return kinds;
}();
}  // namespace

std::span<const SamplerKind> all_sampler_kinds() {
  return kAllSamplerKinds;
}

std::optional<SamplerKind> karras_variant(SamplerKind kind) {
  for (const auto& entry : kSamplerNames)
    if (entry.kind == kind) return entry.karras;
  return std::nullopt;
}

SamplerKind parse_sampler_kind(std::string_view name) {
  const std::string wanted = lower_ascii(name);
  for (const auto& entry : kSamplerNames) {
    if (wanted == entry.id || wanted == lower_ascii(entry.display)) return entry.kind;
  }
  std::string accepted;
  for (const auto& entry : kSamplerNames) {
    if (!accepted.empty()) accepted += ", ";
    accepted += entry.id;
  }
  fail(ErrorCode::kInvalidArgument, "unknown sampler '", name, "' (expected one of ", accepted,
       ")");
}

std::string_view sampler_id(SamplerKind kind) {
  for (const auto& entry : kSamplerNames) {
    if (entry.kind == kind) return entry.id;
  }
  return "unknown";
}

std::string_view sampler_display_name(SamplerKind kind) {
  for (const auto& entry : kSamplerNames) {
    if (entry.kind == kind) return entry.display;
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------

SchedulerConfig SchedulerConfig::from_json(std::string_view json_text, std::string_view origin) {
  const nlohmann::json j = weights::parse_json_bounded(json_text, origin);
  HYRT_CHECK(j.is_object(), kInvalidModel, origin, ": expected a JSON object");
  SchedulerConfig c;
  c.timestep_spacing.reset();
  try {
    // Numbers are range-checked as read, before any conversion can wrap (2^32 + 1000 read as
    // an int is 1000) and before anything is sized from them (one entry per train step).
    auto integer = [&](const char* key, int& field, int64_t lo, int64_t hi) {
      if (!j.contains(key) || j[key].is_null()) return;
      const auto& v = j[key];
      HYRT_CHECK(v.is_number_integer(), kInvalidModel, origin, ": field `", key,
                 "` must be an integer, found ", weights::json_excerpt(v));
      const bool in_range = v.is_number_unsigned()
                                ? v.get<uint64_t>() <= static_cast<uint64_t>(hi)
                                : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi;
      HYRT_CHECK(in_range && v.get<int64_t>() >= lo, kInvalidModel, origin, ": field `", key,
                 "` = ", weights::json_excerpt(v), " is out of range [", lo, ", ", hi, "]");
      field = static_cast<int>(v.get<int64_t>());
    };
    // (lo, hi) open interval.
    auto real = [&](const char* key, double& field, double lo, double hi) {
      if (!j.contains(key) || j[key].is_null()) return;
      const auto& v = j[key];
      HYRT_CHECK(v.is_number(), kInvalidModel, origin, ": field `", key,
                 "` must be a number, found ", weights::json_excerpt(v));
      const double d = v.get<double>();
      HYRT_CHECK(std::isfinite(d) && d > lo && d < hi, kInvalidModel, origin, ": field `", key,
                 "` = ", d, " is out of range (", lo, ", ", hi, ")");
      field = d;
    };
    auto flag = [&](const char* key, bool& field) {
      if (j.contains(key) && !j[key].is_null()) field = j[key].get<bool>();
    };
    integer("num_train_timesteps", c.num_train_timesteps, 2, kMaxTrainTimesteps);
    real("beta_start", c.beta_start, 0, 1);
    real("beta_end", c.beta_end, 0, 1);
    HYRT_CHECK(c.beta_start <= c.beta_end, kInvalidModel, origin, ": `beta_start` ", c.beta_start,
               " is larger than `beta_end` ", c.beta_end);
    integer("steps_offset", c.steps_offset, 0, c.num_train_timesteps - 1);
    flag("set_alpha_to_one", c.set_alpha_to_one);
    flag("clip_sample", c.clip_sample);
    real("clip_sample_range", c.clip_sample_range, 0, 1e6);
    integer("original_inference_steps", c.original_inference_steps, 1, c.num_train_timesteps);
    if (j.contains("_class_name") && j["_class_name"].is_string())
      c.class_name = weights::excerpt(j["_class_name"].get<std::string>(), 64);
    real("timestep_scaling", c.timestep_scaling, 0, 1e6);
    if (j.contains("beta_schedule")) {
      const auto s = j["beta_schedule"].get<std::string>();
      if (s == "scaled_linear") {
        c.beta_schedule = BetaSchedule::kScaledLinear;
      } else if (s == "linear") {
        c.beta_schedule = BetaSchedule::kLinear;
      } else {
        fail(ErrorCode::kUnsupported, origin, ": beta_schedule '", s,
             "' is not supported (linear, scaled_linear)");
      }
    }
    if (j.contains("trained_betas") && !j["trained_betas"].is_null()) {
      fail(ErrorCode::kUnsupported, origin, ": trained_betas is not supported");
    }
    if (j.contains("rescale_betas_zero_snr") && j["rescale_betas_zero_snr"].is_boolean() &&
        j["rescale_betas_zero_snr"].get<bool>()) {
      fail(ErrorCode::kUnsupported, origin, ": rescale_betas_zero_snr is not supported");
    }
    if (j.contains("timestep_spacing") && !j["timestep_spacing"].is_null()) {
      const auto s = j["timestep_spacing"].get<std::string>();
      if (s == "leading") {
        c.timestep_spacing = TimestepSpacing::kLeading;
      } else if (s == "trailing") {
        c.timestep_spacing = TimestepSpacing::kTrailing;
      } else if (s == "linspace") {
        c.timestep_spacing = TimestepSpacing::kLinspace;
      } else {
        fail(ErrorCode::kInvalidModel, origin, ": unknown timestep_spacing '", s, "'");
      }
    }
    if (j.contains("prediction_type") && !j["prediction_type"].is_null()) {
      const auto s = j["prediction_type"].get<std::string>();
      if (s == "epsilon") {
        c.prediction_type = PredictionType::kEpsilon;
      } else if (s == "v_prediction") {
        c.prediction_type = PredictionType::kVPrediction;
      } else if (s == "sample") {
        c.prediction_type = PredictionType::kSample;
      } else {
        fail(ErrorCode::kUnsupported, origin, ": prediction_type '", s, "' is not supported");
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::kInvalidModel, origin,
         ": a scheduler setting has the wrong type: ", weights::excerpt(e.what(), 200));
  }
  return c;
}

SchedulerConfig SchedulerConfig::load_or_default(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "scheduler" / "scheduler_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return sd15_defaults();
  return from_json(weights::read_small_file(path), path.string());
}

}  // namespace hyrt::pipeline

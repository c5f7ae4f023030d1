// Samplers (pipeline/scheduler.h) against diffusers' golden tables and trajectories, plus
// contract checks that need no golden data.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "pipeline/scheduler.h"
#include "test_util.h"
#include "weights/safetensors.h"

namespace hyrt::pipeline {
namespace {

// The config golden.json lists: diffusers' `XScheduler.from_config` of it leaves
// timestep_spacing at each class's default, which is what the golden tables used.
SchedulerConfig golden_config() {
  SchedulerConfig c = SchedulerConfig::sd15_defaults();
  c.timestep_spacing.reset();
  c.set_alpha_to_one = false;
  c.clip_sample = false;
  return c;
}

std::vector<float> read_f32(const weights::SafetensorsFile& file, const std::string& name) {
  const TensorView v = file.view(name);
  EXPECT_EQ(v.dtype, DType::kF32) << name;
  std::vector<float> out(static_cast<size_t>(v.numel()));
  std::memcpy(out.data(), v.data, out.size() * sizeof(float));  // views may be unaligned
  return out;
}

double max_relative_error(const std::vector<float>& got, const std::vector<float>& want) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double scale = std::max(std::abs(static_cast<double>(want[i])), 1e-12);
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - want[i]) / scale);
  }
  return worst;
}

// golden.json's stand-in for the UNet: eps(x, t) = 0.3·x·cos(t/300) + 0.1·sin(x), in float32.
void fake_eps(std::span<const float> x, float t, std::span<float> eps) {
  const float c = std::cos(t / 300.0f);
  for (size_t i = 0; i < x.size(); ++i)
    eps[i] = 0.3f * x[i] * c + 0.1f * std::sin(x[i]);
}

struct GoldenCase {
  const char* id;
  SamplerKind kind;
  bool has_trajectory;
};

class SchedulerGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(SchedulerGolden, MatchesDiffusers) {
  const auto dir = test::golden_dir();
  if (!dir) {
    GTEST_SKIP() << "golden data not found (HYRT_SHARED_DIR/golden/sd15-tiny)";
  }
  const auto golden = weights::SafetensorsFile::open(*dir / "golden.safetensors");
  const GoldenCase& gc = GetParam();
  for (int steps : {4, 20}) {
    SCOPED_TRACE(std::string(gc.id) + " steps=" + std::to_string(steps));
    const std::string prefix = std::string("sched.") + gc.id + "." + std::to_string(steps) + ".";
    auto sampler = make_sampler(gc.kind, golden_config());
    sampler->set_timesteps(steps);

    const auto want_t = read_f32(*golden, prefix + "timesteps");
    ASSERT_EQ(sampler->timesteps().size(), want_t.size());
    const double t_err = max_relative_error(sampler->timesteps(), want_t);
    EXPECT_LE(t_err, 1e-6);
    if (golden->find(prefix + "sigmas")) {
      const auto want_s = read_f32(*golden, prefix + "sigmas");
      ASSERT_EQ(sampler->sigmas().size(), want_s.size());
      const double s_err = max_relative_error(sampler->sigmas(), want_s);
      EXPECT_LE(s_err, 1e-6);
      std::printf("  %s.%d timesteps max rel err %.3g, sigmas %.3g\n", gc.id, steps, t_err, s_err);
    }
    if (!gc.has_trajectory) continue;

    // golden README: start from x0 · init_noise_sigma, feed the fake model the scaled input.
    std::vector<float> x = read_f32(*golden, prefix + "x0");
    for (float& v : x)
      v *= sampler->init_noise_sigma();
    std::vector<float> x_in(x.size()), eps(x.size());
    for (int i = 0; i < sampler->num_steps(); ++i) {
      sampler->scale_model_input(x, x_in, i);
      fake_eps(x_in, sampler->timesteps()[i], eps);
      sampler->step(eps, i, x, nullptr);
    }
    const auto want_final = read_f32(*golden, prefix + "final");
    const double err = test::relative_l2(x.data(), want_final.data(), x.size());
    std::printf("  %s.%d final relative L2 %.3g\n", gc.id, steps, err);
    EXPECT_LE(err, 1e-4);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllSamplers, SchedulerGolden,
    ::testing::Values(GoldenCase{"ddim", SamplerKind::kDdim, true},
                      GoldenCase{"euler", SamplerKind::kEuler, true},
                      GoldenCase{"euler_a", SamplerKind::kEulerAncestral, false},
                      GoldenCase{"dpmpp_2m", SamplerKind::kDpmpp2m, true},
                      GoldenCase{"dpmpp_2m_karras", SamplerKind::kDpmpp2mKarras, true}),
    [](const auto& info) { return std::string(info.param.id); });

// Cases outside golden.safetensors, computed at development time with diffusers 0.42 (torch
// 2.x CPU): x = torch.randn(16, generator=torch.Generator().manual_seed(seed)) ·
// init_noise_sigma, then the fake-eps loop above; Euler a passes the same generator to step().
struct TrajectoryCase {
  const char* name;
  SamplerKind kind;
  PredictionType prediction;
  std::optional<TimestepSpacing> spacing;
  int steps;
  uint64_t seed;
  std::vector<float> timesteps;
  std::vector<float> final_sample;
};

TEST(Scheduler, MatchesDiffusersBeyondGolden) {
  const std::vector<TrajectoryCase> cases = {
      // The ancestral noise comes from the generator that drew x: checks rng + Euler a together.
      {"euler_a epsilon linspace",
       SamplerKind::kEulerAncestral,
       PredictionType::kEpsilon,
       std::nullopt,
       10,
       42,
       {},
       {47.0716782f, 25.9001274f, 14.4765224f, -33.1157112f, 8.61410046f, -14.4908409f, 4.65296745f,
        -22.1291142f, -12.7019072f, 49.6813164f, -6.96956444f, -17.1289482f, -21.5197659f,
        0.880668163f, -25.7049561f, 22.7394943f}},
      {"ddim v leading",
       SamplerKind::kDdim,
       PredictionType::kVPrediction,
       TimestepSpacing::kLeading,
       8,
       7,
       {876, 751, 626, 501, 376, 251, 126, 1},
       {-0.56572932f, 0.269816905f, 0.621885478f, -0.983069241f, -0.113560736f, 0.194141462f,
        -0.439699829f, -0.618125916f, 0.641698897f, -0.366277814f, -0.811479986f, -0.314210981f,
        0.486934155f, 0.703913331f, 0.156763718f, 0.760323763f}},
      {"euler v leading",
       SamplerKind::kEuler,
       PredictionType::kVPrediction,
       TimestepSpacing::kLeading,
       8,
       7,
       {876, 751, 626, 501, 376, 251, 126, 1},
       {-0.558746338f, 0.266454071f, 0.614229262f, -0.971229613f, -0.112141997f, 0.191718474f,
        -0.434245646f, -0.610514641f, 0.633806288f, -0.36172381f, -0.801593423f, -0.310298771f,
        0.480904371f, 0.695283592f, 0.154806152f, 0.751031876f}},
      {"dpmpp_2m v leading",
       SamplerKind::kDpmpp2m,
       PredictionType::kVPrediction,
       TimestepSpacing::kLeading,
       8,
       7,
       {889, 778, 667, 556, 445, 334, 223, 112},
       {-0.582339168f, 0.277667522f, 0.640190899f, -1.01268542f, -0.116858169f, 0.19978337f,
        -0.452548683f, -0.636317492f, 0.660605788f, -0.376958281f, -0.835624278f, -0.323361576f,
        0.501186132f, 0.72472167f, 0.161317348f, 0.782873273f}},
      {"dpmpp_2m_karras v leading",
       SamplerKind::kDpmpp2mKarras,
       PredictionType::kVPrediction,
       TimestepSpacing::kLeading,
       8,
       7,
       {999, 890, 746, 549, 299, 90, 12, 0},
       {-0.665418148f, 0.317508429f, 0.731396258f, -1.15553594f, -0.133651301f, 0.22847493f,
        -0.517293572f, -0.726979375f, 0.754671752f, -0.430964112f, -0.954067349f, -0.369728953f,
        0.572817504f, 0.827748418f, 0.184492469f, 0.893996775f}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    SchedulerConfig config = SchedulerConfig::sd15_defaults();
    config.prediction_type = c.prediction;
    config.timestep_spacing = c.spacing;
    auto sampler = make_sampler(c.kind, config);
    sampler->set_timesteps(c.steps);
    if (!c.timesteps.empty()) {
      EXPECT_EQ(sampler->timesteps(), c.timesteps);
    }
    TorchCpuRng rng(c.seed);
    std::vector<float> x = rng.randn(16), x_in(16), eps(16);
    for (float& v : x)
      v *= sampler->init_noise_sigma();
    for (int i = 0; i < sampler->num_steps(); ++i) {
      sampler->scale_model_input(x, x_in, i);
      fake_eps(x_in, sampler->timesteps()[i], eps);
      sampler->step(eps, i, x, &rng);
    }
    const double err = test::relative_l2(x.data(), c.final_sample.data(), x.size());
    std::printf("  %s: relative L2 %.3g\n", c.name, err);
    EXPECT_LE(err, 1e-5);
  }
}

// SD 1.5 defaults (leading spacing, offset 1), e.g. what A1111-style runs use with DDIM.
TEST(Scheduler, Sd15DefaultsLeadingSpacing) {
  auto ddim = make_sampler(SamplerKind::kDdim, SchedulerConfig::sd15_defaults());
  ddim->set_timesteps(4);
  EXPECT_EQ(ddim->timesteps(), (std::vector<float>{751, 501, 251, 1}));
  EXPECT_TRUE(ddim->sigmas().empty());
  EXPECT_EQ(ddim->init_noise_sigma(), 1.0f);

  // Euler with leading spacing: init sigma is sqrt(σ_max² + 1) (diffusers' rule for it).
  auto euler = make_sampler(SamplerKind::kEuler, SchedulerConfig::sd15_defaults());
  euler->set_timesteps(4);
  EXPECT_EQ(euler->timesteps(), (std::vector<float>{751, 501, 251, 1}));
  const float s0 = euler->sigmas()[0];
  EXPECT_FLOAT_EQ(euler->init_noise_sigma(), std::sqrt(s0 * s0 + 1.0f));
  EXPECT_EQ(euler->sigmas().back(), 0.0f);
}

TEST(Scheduler, TrailingSpacing) {
  SchedulerConfig c = SchedulerConfig::sd15_defaults();
  c.timestep_spacing = TimestepSpacing::kTrailing;
  auto ddim = make_sampler(SamplerKind::kDdim, c);
  ddim->set_timesteps(4);
  EXPECT_EQ(ddim->timesteps(), (std::vector<float>{999, 749, 499, 249}));
}

TEST(Scheduler, ConfigFromJson) {
  const auto c = SchedulerConfig::from_json(R"({
    "_class_name": "PNDMScheduler", "beta_start": 0.0001, "beta_end": 0.02,
    "beta_schedule": "linear", "num_train_timesteps": 500, "steps_offset": 0,
    "prediction_type": "v_prediction", "timestep_spacing": "trailing", "trained_betas": null })");
  EXPECT_EQ(c.num_train_timesteps, 500);
  EXPECT_DOUBLE_EQ(c.beta_start, 0.0001);
  EXPECT_EQ(c.beta_schedule, BetaSchedule::kLinear);
  EXPECT_EQ(c.steps_offset, 0);
  EXPECT_EQ(c.prediction_type, PredictionType::kVPrediction);
  EXPECT_EQ(c.timestep_spacing, TimestepSpacing::kTrailing);

  const auto missing = SchedulerConfig::from_json("{}");
  EXPECT_FALSE(missing.timestep_spacing.has_value());
  EXPECT_EQ(missing.steps_offset, 1);

  try {
    SchedulerConfig::from_json(R"({"beta_schedule": "squaredcos_cap_v2"})", "x.json");
    FAIL() << "expected kUnsupported";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
    EXPECT_NE(std::string(e.what()).find("x.json"), std::string::npos);
  }
  EXPECT_THROW(SchedulerConfig::from_json("{not json"), Error);
}

TEST(Scheduler, LoadsModelConfigOrDefaults) {
  const auto none = SchedulerConfig::load_or_default("/nonexistent/model");
  EXPECT_EQ(none.timestep_spacing, TimestepSpacing::kLeading);
  const auto dir = test::golden_dir();
  if (!dir) {
    GTEST_SKIP() << "golden data not found";
  }
  const auto c = SchedulerConfig::load_or_default(*dir / "model");
  EXPECT_EQ(c.timestep_spacing, TimestepSpacing::kLeading);
  EXPECT_EQ(c.steps_offset, 1);
  EXPECT_DOUBLE_EQ(c.beta_end, 0.012);
}

TEST(Scheduler, Names) {
  EXPECT_EQ(parse_sampler_kind("euler_a"), SamplerKind::kEulerAncestral);
  EXPECT_EQ(parse_sampler_kind("Euler a"), SamplerKind::kEulerAncestral);
  EXPECT_EQ(parse_sampler_kind("DPM++ 2M Karras"), SamplerKind::kDpmpp2mKarras);
  EXPECT_EQ(sampler_display_name(SamplerKind::kDpmpp2m), "DPM++ 2M");
  EXPECT_EQ(sampler_id(SamplerKind::kDdim), "ddim");
  try {
    parse_sampler_kind("heun");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("dpmpp_2m_karras"), std::string::npos);
  }
}

TEST(Scheduler, RejectsMisuse) {
  auto dpm = make_sampler(SamplerKind::kDpmpp2m, SchedulerConfig::sd15_defaults());
  std::vector<float> x(8, 0.5f), eps(8, 0.1f), short_eps(4);
  EXPECT_THROW(dpm->step(eps, 0, x, nullptr), Error);  // before set_timesteps
  EXPECT_THROW(dpm->set_timesteps(0), Error);
  EXPECT_THROW(dpm->set_timesteps(1001), Error);
  dpm->set_timesteps(5);
  EXPECT_THROW(dpm->step(short_eps, 0, x, nullptr), Error);
  EXPECT_THROW(dpm->step(eps, 5, x, nullptr), Error);
  EXPECT_THROW(dpm->step(eps, 1, x, nullptr), Error);  // out of order: history missing
  dpm->step(eps, 0, x, nullptr);
  dpm->step(eps, 1, x, nullptr);
  dpm->step(eps, 0, x, nullptr);  // step 0 restarts the history

  auto ancestral = make_sampler(SamplerKind::kEulerAncestral, SchedulerConfig::sd15_defaults());
  ancestral->set_timesteps(5);
  EXPECT_TRUE(ancestral->needs_noise());
  EXPECT_THROW(ancestral->step(eps, 0, x, nullptr), Error);
}

// Euler a with a fixed seed is reproducible and differs from plain Euler only by its noise.
TEST(Scheduler, EulerAncestralIsSeeded) {
  auto run = [](uint64_t seed) {
    auto s = make_sampler(SamplerKind::kEulerAncestral, SchedulerConfig::sd15_defaults());
    s->set_timesteps(6);
    TorchCpuRng rng(seed);
    std::vector<float> x = rng.randn(64), x_in(64), eps(64);
    for (float& v : x)
      v *= s->init_noise_sigma();
    for (int i = 0; i < s->num_steps(); ++i) {
      s->scale_model_input(x, x_in, i);
      fake_eps(x_in, s->timesteps()[i], eps);
      s->step(eps, i, x, &rng);
    }
    return x;
  };
  const auto a = run(7), b = run(7), c = run(8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (float v : a)
    EXPECT_TRUE(std::isfinite(v));
}

TEST(Scheduler, ScaleModelInput) {
  auto euler = make_sampler(SamplerKind::kEuler, SchedulerConfig::sd15_defaults());
  euler->set_timesteps(10);
  std::vector<float> x{1.0f, -2.0f, 3.0f}, out(3);
  euler->scale_model_input(x, out, 0);
  const float sigma = euler->sigmas()[0];
  EXPECT_FLOAT_EQ(out[1], -2.0f / std::sqrt(sigma * sigma + 1.0f));
  EXPECT_FLOAT_EQ(euler->model_input_scale(0), 1.0f / std::sqrt(sigma * sigma + 1.0f));
  euler->scale_model_input(x, x, 0);  // in place
  EXPECT_EQ(x, out);

  auto ddim = make_sampler(SamplerKind::kDdim, SchedulerConfig::sd15_defaults());
  ddim->set_timesteps(10);
  std::vector<float> y{1.0f, 2.0f}, y_out(2);
  ddim->scale_model_input(y, y_out, 3);
  EXPECT_EQ(y, y_out);
  EXPECT_EQ(ddim->model_input_scale(3), 1.0f);
}

}  // namespace
}  // namespace hyrt::pipeline

// diffusers' get_timesteps: init = min(int(steps · strength), steps) in float64, start at
// steps - init; no step left is an error.
TEST(Scheduler, Img2ImgFirstStep) {
  using hyrt::pipeline::first_img2img_step;
  EXPECT_EQ(first_img2img_step(10, 0.6), 4);
  EXPECT_EQ(first_img2img_step(10, 0.7), 3);  // 0.7 · 10 = 7.000000000000001 in float64
  EXPECT_EQ(first_img2img_step(10, 1.0), 0);
  EXPECT_EQ(first_img2img_step(8, 0.75), 2);
  EXPECT_THROW(first_img2img_step(10, 0.05), hyrt::Error);
  EXPECT_THROW(first_img2img_step(10, 0.0), hyrt::Error);
  EXPECT_THROW(first_img2img_step(10, 1.5), hyrt::Error);
}

// add_noise: DDIM sqrt(ᾱ)x + sqrt(1-ᾱ)n at the step's timestep; Euler x + σn at the step's σ;
// a multistep sampler may begin part-way after set_begin_index.
TEST(Scheduler, AddNoiseAndBeginIndex) {
  using namespace hyrt::pipeline;
  const SchedulerConfig c = SchedulerConfig::sd15_defaults();
  const std::vector<float> x{1.0f, -2.0f}, n{0.5f, 3.0f};
  std::vector<float> out(2);
  auto euler = make_sampler(SamplerKind::kEuler, c);
  euler->set_timesteps(10);
  euler->add_noise(x, n, 4, out);
  EXPECT_FLOAT_EQ(out[1], x[1] + euler->sigmas()[4] * n[1]);
  auto ddim = make_sampler(SamplerKind::kDdim, c);
  ddim->set_timesteps(10);
  ddim->add_noise(x, n, 0, out);
  // Step 0 is t = 901: ᾱ_901 = 0.0140049 for SD 1.5's scaled-linear betas.
  const float a = 0.0140049f;
  EXPECT_NEAR(out[0], std::sqrt(a) * 1.0f + std::sqrt(1 - a) * 0.5f, 1e-5);
  EXPECT_THROW(ddim->add_noise(x, n, 10, out), hyrt::Error);
  auto dpm = make_sampler(SamplerKind::kDpmpp2m, c);
  dpm->set_timesteps(10);
  dpm->set_begin_index(4);
  std::vector<float> sample{0.1f, 0.2f}, eps{0.0f, 0.1f};
  EXPECT_NO_THROW(dpm->step(eps, 4, sample, nullptr));
  EXPECT_NO_THROW(dpm->step(eps, 5, sample, nullptr));
  EXPECT_THROW(dpm->step(eps, 7, sample, nullptr), hyrt::Error);
}

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

// x = randn(16, seed) · init_noise_sigma, then every step on fake_eps of the scaled input, the
// generator that drew x passed on to step() (as the beyond-golden cases were made).
std::vector<float> fake_trajectory(Sampler& sampler, uint64_t seed) {
  TorchCpuRng rng(seed);
  std::vector<float> x = rng.randn(16), x_in(16), eps(16);
  for (float& v : x)
    v *= sampler.init_noise_sigma();
  for (int i = 0; i < sampler.num_steps(); ++i) {
    sampler.scale_model_input(x, x_in, i);
    fake_eps(x_in, sampler.timesteps()[i], eps);
    sampler.step(eps, i, x, &rng);
  }
  return x;
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
    const std::vector<float> x = fake_trajectory(*sampler, c.seed);
    const double err = test::relative_l2(x.data(), c.final_sample.data(), x.size());
    std::printf("  %s: relative L2 %.3g\n", c.name, err);
    EXPECT_LE(err, 1e-5);
  }
}

// LCM, Heun and the Karras schedules of Euler and Heun against diffusers' own schedulers on the
// fake model (tests/data/sampler_cases.safetensors, made by tests/data/make_sampler_cases.py:
// x = randn(16, seed) · init_noise_sigma, the generator passed on to step()).
struct DataCase {
  const char* name;
  SamplerKind kind;
  int steps;
  uint64_t seed;
  void (*configure)(SchedulerConfig&);
};

TEST(Scheduler, NewSamplersMatchDiffusers) {
  const auto data = weights::SafetensorsFile::open(std::string(HYRT_SOURCE_DIR) +
                                                   "/tests/data/sampler_cases.safetensors");
  const DataCase cases[] = {
      {"lcm_eps_4", SamplerKind::kLcm, 4, 7, [](SchedulerConfig&) {}},
      {"lcm_v_6", SamplerKind::kLcm, 6, 3,
       [](SchedulerConfig& c) { c.prediction_type = PredictionType::kVPrediction; }},
      {"lcm_orig20_5", SamplerKind::kLcm, 5, 9,
       [](SchedulerConfig& c) {
         c.original_inference_steps = 20;
         c.timestep_scaling = 5.0;
       }},
      {"heun_eps_linspace_6", SamplerKind::kHeun, 6, 7,
       [](SchedulerConfig& c) { c.timestep_spacing = TimestepSpacing::kLinspace; }},
      {"heun_v_leading_5", SamplerKind::kHeun, 5, 11,
       [](SchedulerConfig& c) { c.prediction_type = PredictionType::kVPrediction; }},
      {"heun_karras_leading_7", SamplerKind::kHeunKarras, 7, 5, [](SchedulerConfig&) {}},
      {"euler_karras_linspace_8", SamplerKind::kEulerKarras, 8, 7,
       [](SchedulerConfig& c) { c.timestep_spacing = TimestepSpacing::kLinspace; }},
      {"euler_karras_leading_v_6", SamplerKind::kEulerKarras, 6, 13,
       [](SchedulerConfig& c) { c.prediction_type = PredictionType::kVPrediction; }},
      {"euler_karras_trailing_1", SamplerKind::kEulerKarras, 1, 2,
       [](SchedulerConfig& c) { c.timestep_spacing = TimestepSpacing::kTrailing; }},
      {"dpmpp_2m_sde_linspace_8", SamplerKind::kDpmpp2mSde, 8, 17,
       [](SchedulerConfig& c) { c.timestep_spacing = TimestepSpacing::kLinspace; }},
      {"dpmpp_2m_sde_karras_v_6", SamplerKind::kDpmpp2mSdeKarras, 6, 19,
       [](SchedulerConfig& c) { c.prediction_type = PredictionType::kVPrediction; }},
  };
  for (const DataCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string prefix = std::string("traj.") + c.name + ".";
    SchedulerConfig config = SchedulerConfig::sd15_defaults();  // leading, offset 1
    c.configure(config);
    auto sampler = make_sampler(c.kind, config);
    sampler->set_timesteps(c.steps);
    const auto want_t = read_f32(*data, prefix + "timesteps");
    ASSERT_EQ(sampler->timesteps().size(), want_t.size());
    EXPECT_LE(max_relative_error(sampler->timesteps(), want_t), 1e-6);
    if (data->find(prefix + "sigmas")) {
      const auto want_s = read_f32(*data, prefix + "sigmas");
      ASSERT_EQ(sampler->sigmas().size(), want_s.size());
      EXPECT_LE(max_relative_error(sampler->sigmas(), want_s), 1e-6);
    }
    const std::vector<float> x = fake_trajectory(*sampler, c.seed);
    const auto want = read_f32(*data, prefix + "final");
    const double err = test::relative_l2(x.data(), want.data(), x.size());
    std::printf("  %s: relative L2 %.3g\n", c.name, err);
    EXPECT_LE(err, 1e-5);
  }
}

// Euler a Karras has no diffusers class: its schedule is Euler Karras's, its step Euler a's.
TEST(Scheduler, EulerAncestralKarrasIsEulerAStepsOnTheKarrasSchedule) {
  const SchedulerConfig config = SchedulerConfig::sd15_defaults();
  auto karras = make_sampler(SamplerKind::kEulerAncestralKarras, config);
  auto euler_karras = make_sampler(SamplerKind::kEulerKarras, config);
  karras->set_timesteps(9);
  euler_karras->set_timesteps(9);
  EXPECT_EQ(karras->timesteps(), euler_karras->timesteps());
  EXPECT_EQ(karras->sigmas(), euler_karras->sigmas());
  EXPECT_TRUE(karras->needs_noise());
  // One step by hand: σ_up, σ_down from (σ_i, σ_i+1), noise drawn after the update.
  TorchCpuRng a(4), b(4);
  std::vector<float> x = {0.5f, -1.0f, 2.0f}, eps = {0.1f, 0.2f, -0.3f};
  std::vector<float> want = x;
  karras->step(eps, 0, x, &a);
  const float s0 = karras->sigmas()[0], s1 = karras->sigmas()[1];
  const float up = std::sqrt(s1 * s1 * (s0 * s0 - s1 * s1) / (s0 * s0));
  const float down = std::sqrt(s1 * s1 - up * up);
  const std::vector<float> noise = b.randn(3);
  for (size_t i = 0; i < want.size(); ++i)
    want[i] = want[i] + eps[i] * (down - s0) + noise[i] * up;
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(x[i], want[i], 1e-5f * std::max(1.0f, std::abs(want[i])));
  EXPECT_THROW(karras->step(eps, 1, x, nullptr), Error);
}

// Heun: img2img starts at first_img2img_step · order (diffusers' t_start · order), its two
// half-steps must run in order, and restarting at the begin index resets the kept half-step.
TEST(Scheduler, HeunOrderAndState) {
  auto heun = make_sampler(SamplerKind::kHeun, SchedulerConfig::sd15_defaults());
  heun->set_timesteps(5);
  EXPECT_EQ(heun->order(), 2);
  EXPECT_EQ(heun->num_steps(), 9);
  EXPECT_EQ(heun->sigmas().size(), 10u);
  EXPECT_EQ(heun->timesteps()[1], heun->timesteps()[2]);
  EXPECT_EQ(heun->sigmas().back(), 0.0f);
  std::vector<float> x = {1.0f, 2.0f}, eps = {0.5f, -0.5f};
  EXPECT_THROW(heun->step(eps, 1, x, nullptr), Error);  // not the begin index
  heun->step(eps, 0, x, nullptr);
  EXPECT_THROW(heun->step(eps, 2, x, nullptr), Error);  // the second half-step is due
  // Running step 0 again restarts from scratch: the same result as a fresh sampler.
  std::vector<float> again = {1.0f, 2.0f}, fresh = {1.0f, 2.0f};
  heun->step(eps, 0, again, nullptr);
  auto other = make_sampler(SamplerKind::kHeun, SchedulerConfig::sd15_defaults());
  other->set_timesteps(5);
  other->step(eps, 0, fresh, nullptr);
  EXPECT_EQ(again, fresh);
  // img2img at strength 0.6 of 5 steps: 3 steps run, from call index (5 − 3) · 2 = 4.
  heun->set_begin_index(first_img2img_step(5, 0.6) * heun->order());
  EXPECT_EQ(heun->begin_index(), 4);
  std::vector<float> y = {1.0f, 2.0f};
  for (int i = 4; i < heun->num_steps(); ++i)
    heun->step(eps, i, y, nullptr);
  EXPECT_TRUE(std::isfinite(y[0]) && std::isfinite(y[1]));
  EXPECT_EQ(make_sampler(SamplerKind::kLcm, SchedulerConfig::sd15_defaults())->order(), 1);
}

TEST(Scheduler, LcmStepCountsAndConfig) {
  SchedulerConfig config = SchedulerConfig::sd15_defaults();
  auto lcm = make_sampler(SamplerKind::kLcm, config);
  lcm->set_timesteps(4);
  EXPECT_EQ(lcm->timesteps(), (std::vector<float>{999, 759, 499, 259}));
  EXPECT_TRUE(lcm->sigmas().empty());
  EXPECT_EQ(lcm->init_noise_sigma(), 1.0f);
  lcm->set_timesteps(50);
  EXPECT_EQ(lcm->timesteps().back(), 19.0f);
  try {
    lcm->set_timesteps(51);
    ADD_FAILURE() << "51 LCM steps accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at most 50"), std::string::npos) << e.what();
  }
  // The last step returns the denoised sample and needs no generator; the others do.
  lcm->set_timesteps(2);
  std::vector<float> x = {0.3f}, eps = {0.1f};
  EXPECT_THROW(lcm->step(eps, 0, x, nullptr), Error);
  lcm->step(eps, 1, x, nullptr);
  const auto c = SchedulerConfig::from_json(
      R"({"_class_name": "LCMScheduler", "original_inference_steps": 25, "timestep_scaling": 2.5})");
  EXPECT_EQ(c.class_name, "LCMScheduler");
  EXPECT_EQ(SchedulerConfig::from_json("{}").class_name, "");
  EXPECT_EQ(c.original_inference_steps, 25);
  EXPECT_EQ(c.timestep_scaling, 2.5);
  EXPECT_THROW(SchedulerConfig::from_json(R"({"original_inference_steps": 0})"), Error);
  EXPECT_THROW(SchedulerConfig::from_json(R"({"original_inference_steps": 1001})"), Error);
  EXPECT_THROW(SchedulerConfig::from_json(R"({"timestep_scaling": -1})"), Error);
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
  EXPECT_EQ(parse_sampler_kind("heun"), SamplerKind::kHeun);
  EXPECT_EQ(parse_sampler_kind("LCM"), SamplerKind::kLcm);
  EXPECT_EQ(parse_sampler_kind("Euler a Karras"), SamplerKind::kEulerAncestralKarras);
  EXPECT_EQ(sampler_display_name(SamplerKind::kHeunKarras), "Heun Karras");
  EXPECT_EQ(karras_variant(SamplerKind::kEuler), SamplerKind::kEulerKarras);
  EXPECT_EQ(karras_variant(SamplerKind::kDpmpp2mKarras), SamplerKind::kDpmpp2mKarras);
  EXPECT_EQ(karras_variant(SamplerKind::kLcm), std::nullopt);
  EXPECT_EQ(karras_variant(SamplerKind::kDpmpp2mSde), SamplerKind::kDpmpp2mSdeKarras);
  EXPECT_EQ(parse_sampler_kind("DPM++ 2M SDE Karras"), SamplerKind::kDpmpp2mSdeKarras);
  EXPECT_TRUE(
      make_sampler(SamplerKind::kDpmpp2mSde, SchedulerConfig::sd15_defaults())->needs_noise());
  EXPECT_EQ(all_sampler_kinds().size(), 12u);
  for (SamplerKind k : all_sampler_kinds()) {  // ids and display names parse back
    EXPECT_EQ(parse_sampler_kind(sampler_id(k)), k);
    EXPECT_EQ(parse_sampler_kind(sampler_display_name(k)), k);
  }
  try {
    parse_sampler_kind("plms");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("dpmpp_2m_karras"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("lcm"), std::string::npos);
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

// predicted_original inverts the noising every sampler's UNet input carries: latents x0 noised
// to step i (add_noise) and scaled (scale_model_input) give back x0 from the noise (ε), from
// v = a·n − b·x0, or as the prediction itself, with a and b read off add_noise and the input
// scale rather than from the sampler's tables; for every kind, at the first, a middle and the
// last step.
TEST(Scheduler, PredictedOriginalInvertsTheNoising) {
  using namespace hyrt::pipeline;
  namespace test = hyrt::test;
  const std::vector<float> x0 = test::random_floats(64, 3), n = test::random_floats(64, 4, 2.0f);
  for (const PredictionType type :
       {PredictionType::kEpsilon, PredictionType::kVPrediction, PredictionType::kSample}) {
    SchedulerConfig c = SchedulerConfig::sd15_defaults();
    c.prediction_type = type;
    for (const SamplerKind kind : all_sampler_kinds()) {
      auto s = make_sampler(kind, c);
      s->set_timesteps(10);
      for (const int i : {0, s->num_steps() / 2, s->num_steps() - 1}) {
        SCOPED_TRACE(std::string(sampler_id(kind)) + " step " + std::to_string(i) + " type " +
                     std::to_string(static_cast<int>(type)));
        const std::vector<float> one{1.0f}, zero{0.0f};
        std::vector<float> coef(1);
        s->add_noise(one, zero, i, coef);
        const float a = coef[0] * s->model_input_scale(i);
        s->add_noise(zero, one, i, coef);
        const float b = coef[0] * s->model_input_scale(i);
        std::vector<float> x_in(64), out(64), got(64);
        s->add_noise(x0, n, i, x_in);
        s->scale_model_input(x_in, x_in, i);
        for (size_t k = 0; k < out.size(); ++k)
          out[k] = type == PredictionType::kEpsilon       ? n[k]
                   : type == PredictionType::kVPrediction ? a * n[k] - b * x0[k]
                                                          : x0[k];
        s->predicted_original(x_in, out, i, got);
        EXPECT_LT(test::relative_l2(got.data(), x0.data(), x0.size()), 1e-5);
      }
      std::vector<float> bad(3), ok(64);
      EXPECT_THROW(s->predicted_original(x0, n, 0, bad), hyrt::Error);
      EXPECT_THROW(s->predicted_original(x0, n, s->num_steps(), ok), hyrt::Error);
    }
  }
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

// The samplers beyond golden.json's (LCM, Heun, DPM++ 2M SDE, the Karras schedules) driving the
// whole txt2img and img2img pipelines of the tiny SD 1.5 golden model, against diffusers'
// StableDiffusionPipeline / StableDiffusionImg2ImgPipeline with the same scheduler, seed and
// prompt (tests/data/sampler_cases.safetensors, made by tests/data/make_sampler_cases.py):
// the final latents before the VAE. This checks what the scheduler unit tests cannot: the loop's
// use of Heun's doubled schedule (its img2img start at t_start · order), LCM's step noise drawn
// from the seed's generator between the pipeline's own draws, and guidance off at cfg 1.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "core/error.h"
#include "exec/engine.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/txt2img.h"
#include "plan/placement.h"
#include "test_util.h"
#include "weights/safetensors.h"

namespace hyrt {
namespace {

struct PipelineCase {
  const char* name;
  pipeline::SamplerKind sampler;
  int steps;
  float cfg;
  uint64_t seed;
  double strength;  // 0: txt2img
};

Tensor read_tensor(const weights::SafetensorsFile& file, const std::string& name) {
  const TensorView v = file.view(name);
  Tensor t(DType::kF32, v.shape, name.c_str());
  std::memcpy(t.data(), v.data, t.bytes());  // views may be unaligned
  return t;
}

class SamplerPipeline : public testing::TestWithParam<PipelineCase> {};

INSTANTIATE_TEST_SUITE_P(
    Diffusers, SamplerPipeline,
    testing::Values(PipelineCase{"lcm_nocfg", pipeline::SamplerKind::kLcm, 4, 1.0f, 5, 0},
                    PipelineCase{"lcm_cfg", pipeline::SamplerKind::kLcm, 6, 1.8f, 8, 0},
                    PipelineCase{"heun", pipeline::SamplerKind::kHeun, 5, 6.0f, 3, 0},
                    PipelineCase{"heun_karras", pipeline::SamplerKind::kHeunKarras, 5, 6.0f, 4, 0},
                    PipelineCase{"euler_karras", pipeline::SamplerKind::kEulerKarras, 6, 7.0f, 6,
                                 0},
                    PipelineCase{"dpmpp_2m_sde", pipeline::SamplerKind::kDpmpp2mSde, 6, 7.0f, 7, 0},
                    PipelineCase{"dpmpp_2m_sde_karras", pipeline::SamplerKind::kDpmpp2mSdeKarras, 7,
                                 6.0f, 9, 0},
                    PipelineCase{"i2i_heun", pipeline::SamplerKind::kHeun, 6, 5.0f, 21, 0.6},
                    PipelineCase{"i2i_lcm", pipeline::SamplerKind::kLcm, 4, 1.0f, 22, 0.5}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_P(SamplerPipeline, FinalLatentsMatchDiffusers) {
  const auto golden = test::golden_dir("sd15-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  const auto data = weights::SafetensorsFile::open(std::string(HYRT_SOURCE_DIR) +
                                                   "/tests/data/sampler_cases.safetensors");
  const PipelineCase& c = GetParam();
  // f32 on the host, the reference precision, also where a GPU is present.
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  pipeline::Txt2ImgParams p;
  p.prompt = "a red circle on a blue square";
  p.negative_prompt = "blurry";
  p.width = p.height = 64;
  p.steps = c.steps;
  p.cfg_scale = c.cfg;
  p.seed = c.seed;
  p.sampler = c.sampler;
  if (c.strength > 0) p.init = pipeline::InitImage{read_tensor(*data, "img.init"), c.strength, {}};
  std::optional<Tensor> last;
  int calls = 0, total = 0;
  p.on_latents = test::keep_last_latents(&last);
  p.on_step = [&](int done, int of) {
    ++calls;
    total = of;
    EXPECT_EQ(done, calls);
  };
  (void)pipeline::txt2img(*model, model->scheduler_config(), p);
  ASSERT_TRUE(last.has_value());
  // UNet calls: Heun makes two per step but the last; img2img runs int(steps · strength) steps.
  const int steps_run = c.strength > 0 ? static_cast<int>(c.steps * c.strength) : c.steps;
  const int order =
      c.sampler == pipeline::SamplerKind::kHeun || c.sampler == pipeline::SamplerKind::kHeunKarras
          ? 2
          : 1;
  const int expected_calls = order * steps_run - (order - 1);
  EXPECT_EQ(calls, expected_calls);
  EXPECT_EQ(total, expected_calls);
  const Tensor want = read_tensor(*data, std::string("pipe.") + c.name + ".latents");
  ASSERT_EQ(last->shape(), want.shape());
  const double err =
      test::relative_l2(last->as<float>(), want.as<float>(), static_cast<size_t>(want.numel()));
  std::printf("  %s: final latents relative L2 %.3g\n", c.name, err);
  EXPECT_LE(err, 2e-3) << "the pipeline's tolerance (golden README)";
}

// Live previews (Txt2ImgParams::on_denoised): the predicted clean latents after every step;
// Euler's last step lands on its prediction, so the last one is the result's latents, and the
// picture is decode_preview of them. The first prediction is far from the last.
TEST(LivePreview, TheLastPredictionIsTheResult) {
  const auto golden = test::golden_dir("sd15-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  pipeline::Txt2ImgParams p;
  p.prompt = "a red circle on a blue square";
  p.width = p.height = 64;
  p.steps = 5;
  p.cfg_scale = 6.0f;
  p.seed = 7;
  p.sampler = pipeline::SamplerKind::kEuler;
  std::optional<Tensor> last, first_x0, last_x0;
  int calls = 0;
  p.on_latents = test::keep_last_latents(&last);
  p.on_denoised = [&](int done, int of, const Tensor& x0) {
    ++calls;
    EXPECT_EQ(done, calls);
    EXPECT_EQ(of, 5);
    const int64_t side = 64 / model->vae_scale_factor();
    ASSERT_EQ(x0.shape(), Shape({1, 4, side, side}));
    if (!first_x0) test::keep_last_latents (&first_x0)(x0);
    test::keep_last_latents (&last_x0)(x0);
  };
  const pipeline::Txt2ImgResult r = pipeline::txt2img(*model, model->scheduler_config(), p);
  ASSERT_EQ(calls, 5);
  ASSERT_TRUE(last && last_x0 && first_x0);
  const size_t n = static_cast<size_t>(last->numel());
  EXPECT_LT(test::relative_l2(last_x0->as<float>(), last->as<float>(), n), 1e-5);
  EXPECT_GT(test::relative_l2(first_x0->as<float>(), last->as<float>(), n), 1e-2);
  const Tensor picture = pipeline::decode_preview(*model, *last, /*tiny_vae=*/false);
  ASSERT_EQ(picture.shape(), r.images.shape());
  EXPECT_LT(test::relative_l2(picture.as<float>(), r.images.as<float>(),
                              static_cast<size_t>(picture.numel())),
            1e-6);
  try {
    (void)pipeline::decode_preview(*model, *last, /*tiny_vae=*/true);
    ADD_FAILURE() << "decoded with a TAESD the model does not have";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
  }
}

}  // namespace
}  // namespace hyrt

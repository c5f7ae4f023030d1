// The run-invariant prefix on real models (exec/executable.h): SD 1.5's and SDXL's tiny golden
// models draw the same picture, bit for bit, with the text-only work kept across steps and
// computed in every step; the kept work is really skipped (the UNet's executable reports
// skipped runs); and a UNet called with one conditioning, another, then the first again gives
// what an engine that never keeps anything gives.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <iterator>
#include <string>
#include <vector>

#include "exec/engine.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/txt2img.h"
#include "test_util.h"

namespace hyrt {
namespace {

struct Drawn {
  Tensor image;
  int unet_kept_steps = 0;
  int unet_reused_runs = 0;
};

Drawn draw(const std::filesystem::path& model_dir, bool reuse) {
  exec::EngineOptions eo;
  eo.reuse_invariant = reuse;
  exec::Engine engine(eo);
  auto model = pipeline::DiffusionModel::open(model_dir, engine);
  pipeline::Txt2ImgParams p;
  p.prompt = "a red circle on a blue square";
  p.negative_prompt = "blurry";
  p.width = p.height = 64;
  p.steps = 4;
  p.cfg_scale = 6;
  p.seed = 11;
  p.sampler = pipeline::SamplerKind::kEulerAncestral;
  Drawn d;
  d.image = pipeline::txt2img(*model, model->scheduler_config(), p).images;
  for (const pipeline::MemoryReport& r : model->memory_report())
    if (r.component == "unet") {
      d.unet_kept_steps += r.invariant_steps;
      d.unet_reused_runs += r.reused_runs;
    }
  return d;
}

class RunInvariant : public testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Golden, RunInvariant, testing::Values("sd15-tiny", "sdxl-tiny"),
                         [](const auto& info) {
                           return info.param == "sd15-tiny" ? std::string("Sd15")
                                                            : std::string("Sdxl");
                         });

TEST_P(RunInvariant, PicturesAreBitIdenticalAndTheTextWorkIsSkipped) {
  auto golden = test::golden_dir(GetParam().c_str());
  if (!golden) GTEST_SKIP() << "../shared/golden/" << GetParam() << " not found: skipped";
  const Drawn kept = draw(*golden / "model", true);
  const Drawn every = draw(*golden / "model", false);
  ASSERT_EQ(kept.image.shape(), every.image.shape());
  EXPECT_EQ(std::memcmp(kept.image.data(), every.image.data(), kept.image.bytes()), 0)
      << "keeping the text-only work changed the picture";
  EXPECT_GT(kept.unet_kept_steps, 0) << "no step of the UNet reads only the text conditioning";
  EXPECT_GE(kept.unet_reused_runs, 3) << "4 steps with one prompt: the last 3 skip the prefix";
  EXPECT_EQ(every.unet_kept_steps, 0);
  EXPECT_EQ(every.unet_reused_runs, 0);
}

// One UNet executable fed conditioning A, B, A, A: each call must equal a fresh computation.
TEST(RunInvariant, ChangedConditioningIsComputedAgain) {
  auto golden = test::golden_dir("sd15-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  exec::EngineOptions never;
  never.reuse_invariant = false;
  exec::Engine keeping, computing(never);
  auto kept = pipeline::DiffusionModel::open(*golden / "model", keeping);
  auto fresh = pipeline::DiffusionModel::open(*golden / "model", computing);
  const auto& u = kept->unet_config();
  const Tensor x = test::random_tensor({1, 8, 8, u.in_channels}, 1);
  const Tensor a = test::random_tensor({1, 77, u.cross_attention_dim}, 2);
  const Tensor b = test::random_tensor({1, 77, u.cross_attention_dim}, 3);
  const std::vector<float> t{400.0f};
  const Tensor* order[] = {&a, &b, &a, &a};
  for (size_t i = 0; i < std::size(order); ++i) {
    const Tensor got = kept->predict_noise(x.view(), t, order[i]->view());
    const Tensor want = fresh->predict_noise(x.view(), t, order[i]->view());
    ASSERT_EQ(std::memcmp(got.data(), want.data(), got.bytes()), 0) << "call " << i;
  }
  int reused = 0;
  for (const pipeline::MemoryReport& r : kept->memory_report())
    if (r.component == "unet") reused += r.reused_runs;
  EXPECT_EQ(reused, 1) << "only the last call repeats the conditioning of the call before";
}

}  // namespace
}  // namespace hyrt

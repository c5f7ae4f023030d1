// A1111's "Clip skip" (Txt2ImgParams::clip_skip, DiffusionModel::encode_prompts) against
// diffusers' clip_skip (= ours − 1) on the tiny SD 1.5 and SDXL golden models
// (tests/data/clip_skip_cases.safetensors, made by tests/data/make_clip_skip_cases.py): the text
// conditioning (SD 1.x: the earlier state through final_layer_norm; SDXL: each encoder's state a
// layer before the penultimate, the pooled output unchanged) and whole pipelines' final latents.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "exec/engine.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/txt2img.h"
#include "plan/placement.h"
#include "test_util.h"
#include "weights/safetensors.h"

namespace hyrt {
namespace {

const std::string kPrompt = "a red circle on a blue square";

Tensor read_tensor(const weights::SafetensorsFile& file, const std::string& name) {
  const TensorView v = file.view(name);
  Tensor t(DType::kF32, v.shape, name.c_str());
  std::memcpy(t.data(), v.data, t.bytes());  // views may be unaligned
  return t;
}

double rel(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.shape(), want.shape());
  if (got.shape() != want.shape()) return 1.0;
  return test::relative_l2(got.as<float>(), want.as<float>(), static_cast<size_t>(want.numel()));
}

class ClipSkip : public testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    golden_ = test::golden_dir(GetParam());
    if (!golden_) GTEST_SKIP() << "../shared/golden/" << GetParam() << " not found: skipped";
    data_ = weights::SafetensorsFile::open(std::string(HYRT_SOURCE_DIR) +
                                           "/tests/data/clip_skip_cases.safetensors");
    model_ = pipeline::DiffusionModel::open(*golden_ / "model", engine_);
  }
  std::string key(const char* what) const {
    return std::string(GetParam() == std::string("sd15-tiny") ? "sd15" : "sdxl") + ".skip2." + what;
  }
  std::optional<std::filesystem::path> golden_;
  std::unique_ptr<weights::SafetensorsFile> data_;
  // f32 on the host, the precision the tolerances are stated for.
  exec::Engine engine_{exec::EngineOptions{.placement = plan::PlacementMode::kHost}};
  std::unique_ptr<pipeline::DiffusionModel> model_;
};

INSTANTIATE_TEST_SUITE_P(Golden, ClipSkip, testing::Values("sd15-tiny", "sdxl-tiny"),
                         [](const auto& info) {
                           return std::string(info.param) == "sd15-tiny" ? "sd15" : "sdxl";
                         });

// The conditioning with clip skip 2 is diffusers' with clip_skip=1 (the text encoders'
// tolerance), and differs from clip skip 1's; SDXL's pooled output is the last layer's.
TEST_P(ClipSkip, ConditioningMatchesDiffusers) {
  const std::vector<std::string> prompts{kPrompt};
  const pipeline::PromptConditioning skip2 = model_->encode_prompts(prompts, 2);
  const double err = rel(skip2.context, read_tensor(*data_, key("embeds")));
  std::printf("  %s clip skip 2: conditioning relative L2 %.3g\n", GetParam(), err);
  EXPECT_LE(err, 1e-4);
  const pipeline::PromptConditioning skip1 = model_->encode_prompts(prompts);
  EXPECT_GT(rel(skip1.context, skip2.context), 1e-2) << "clip skip changed nothing";
  if (skip2.pooled) {
    EXPECT_LE(rel(*skip2.pooled, read_tensor(*data_, key("pooled"))), 1e-4);
    EXPECT_LE(rel(*skip2.pooled, *skip1.pooled), 1e-6);
  }
}

// A whole txt2img with clip skip 2 ends on diffusers' final latents (the pipelines' tolerance).
TEST_P(ClipSkip, PipelineMatchesDiffusers) {
  const bool sd15 = GetParam() == std::string("sd15-tiny");
  pipeline::Txt2ImgParams p;
  p.prompt = kPrompt;
  if (sd15) p.negative_prompt = "blurry";  // SDXL: none, so zero negative conditioning
  p.width = p.height = 64;
  p.steps = sd15 ? 4 : 3;
  p.cfg_scale = 5.0f;
  p.seed = sd15 ? 11 : 12;
  p.sampler = pipeline::SamplerKind::kEuler;
  p.clip_skip = 2;
  std::optional<Tensor> last;
  p.on_latents = test::keep_last_latents(&last);
  (void)pipeline::txt2img(*model_, model_->scheduler_config(), p);
  ASSERT_TRUE(last.has_value());
  const double err = rel(*last, read_tensor(*data_, key("latents")));
  std::printf("  %s clip skip 2: final latents relative L2 %.3g\n", GetParam(), err);
  EXPECT_LE(err, 2e-3);
}

// Out of range: below 1, or more layers than the encoder has.
TEST_P(ClipSkip, OutOfRangeIsRefused) {
  const std::vector<std::string> prompts{kPrompt};
  for (const int bad : {0, 3}) {
    try {
      (void)model_->encode_prompts(prompts, bad);
      ADD_FAILURE() << "clip skip " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
      EXPECT_NE(std::string(e.what()).find("clip skip"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace hyrt

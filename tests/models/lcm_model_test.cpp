// LCM-distilled models (UNetConfig::time_cond_proj_dim): the tiny SD 1.5 golden model made into
// one — its UNet config with time_cond_proj_dim 32 and a cond_proj weight in a second shard
// (tests/data/lcm_cond_proj.safetensors) — drawing with LCM against diffusers'
// StableDiffusionPipeline with the same UNet (tests/data/make_lcm_model_cases.py): the guidance
// scale embedded in the UNet, no classifier-free guidance batch.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "exec/engine.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/txt2img.h"
#include "plan/placement.h"
#include "temp_dir_test.h"
#include "test_util.h"
#include "weights/safetensors.h"

namespace hyrt {
namespace {

namespace fs = std::filesystem;
const std::string kData = std::string(HYRT_SOURCE_DIR) + "/tests/data/";

class LcmModel : public test::TempDirTest {
 protected:
  // The golden model's folder with the UNet made an LCM model; nullopt without golden data.
  std::optional<fs::path> make_model() {
    const auto golden = test::golden_dir("sd15-tiny");
    if (!golden) return std::nullopt;
    const fs::path src = *golden / "model", dst = dir_ / "lcm";
    fs::create_directories(dst / "unet");
    for (const char* part : {"scheduler", "text_encoder", "tokenizer", "vae"})
      fs::create_directory_symlink(src / part, dst / part);
    fs::copy_file(src / "model_index.json", dst / "model_index.json");
    nlohmann::json config;
    std::ifstream(src / "unet" / "config.json") >> config;
    config["time_cond_proj_dim"] = 32;
    std::ofstream(dst / "unet" / "config.json") << config.dump(2);
    fs::create_symlink(src / "unet" / "diffusion_pytorch_model.safetensors",
                       dst / "unet" / "diffusion_pytorch_model-00001-of-00002.safetensors");
    fs::copy_file(kData + "lcm_cond_proj.safetensors",
                  dst / "unet" / "diffusion_pytorch_model-00002-of-00002.safetensors");
    const nlohmann::json index = {
        {"weight_map",
         {{"conv_in.weight", "diffusion_pytorch_model-00001-of-00002.safetensors"},
          {"time_embedding.cond_proj.weight",
           "diffusion_pytorch_model-00002-of-00002.safetensors"}}}};
    std::ofstream(dst / "unet" / "diffusion_pytorch_model.safetensors.index.json") << index.dump();
    return dst;
  }
};

TEST_F(LcmModel, DrawsAsDiffusersWithTheGuidanceEmbedded) {
  const auto model_dir = make_model();
  if (!model_dir) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  const auto data = weights::SafetensorsFile::open(kData + "lcm_model_cases.safetensors");
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(*model_dir, engine);
  ASSERT_EQ(model->unet_config().time_cond_proj_dim, 32);
  struct Case {
    const char* key;
    float guidance;
    int steps;
    uint64_t seed;
  };
  for (const Case& c : {Case{"pipe", 6.0f, 4, 4}, Case{"pipe2", 1.5f, 3, 9}}) {
    SCOPED_TRACE(c.key);
    pipeline::Txt2ImgParams p;
    p.prompt = "a red circle on a blue square";
    p.negative_prompt = "blurry";
    p.width = p.height = 64;
    p.steps = c.steps;
    p.cfg_scale = c.guidance;
    p.seed = c.seed;
    p.sampler = pipeline::SamplerKind::kLcm;
    std::optional<Tensor> last;
    p.on_latents = test::keep_last_latents(&last);
    (void)pipeline::txt2img(*model, model->scheduler_config(), p);
    ASSERT_TRUE(last.has_value());
    const TensorView want = data->view(std::string(c.key) + ".latents");
    ASSERT_EQ(last->shape(), want.shape);
    std::vector<float> w(static_cast<size_t>(want.numel()));
    std::memcpy(w.data(), want.data, w.size() * sizeof(float));
    const double err = test::relative_l2(last->as<float>(), w.data(), w.size());
    std::printf("  %s: final latents relative L2 %.3g\n", c.key, err);
    EXPECT_LE(err, 2e-3) << "the pipeline's tolerance (golden README)";
  }
  // One UNet row per picture: no guidance batch (the executable's batch is 1).
  bool batch_one = false;
  for (const auto& r : model->memory_report())
    batch_one |= r.component == "unet" && r.shape.rfind("b1 ", 0) == 0;
  EXPECT_TRUE(batch_one);
}

TEST_F(LcmModel, AConfigWithoutItsWeightIsRefused) {
  const auto model_dir = make_model();
  if (!model_dir) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  fs::remove(*model_dir / "unet" / "diffusion_pytorch_model-00002-of-00002.safetensors");
  std::ofstream(*model_dir / "unet" / "diffusion_pytorch_model.safetensors.index.json")
      << R"({"weight_map": {"conv_in.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}})";
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  try {
    auto model = pipeline::DiffusionModel::open(*model_dir, engine);
    pipeline::Txt2ImgParams p;
    p.prompt = "x";
    p.width = p.height = 64;
    p.steps = 1;
    p.sampler = pipeline::SamplerKind::kLcm;
    (void)pipeline::txt2img(*model, model->scheduler_config(), p);
    ADD_FAILURE() << "an LCM config without time_embedding.cond_proj was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cond_proj"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hyrt

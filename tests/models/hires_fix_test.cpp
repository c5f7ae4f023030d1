// The hires fix (Txt2ImgParams::hires, A1111's enable_hr with a pixel upscaler): a txt2img whose
// picture is resized by Lanczos in 8 bits and drawn again as img2img is exactly the two calls
// made by hand (txt2img, then img2img from its picture with the same seed), on the tiny SD 1.5
// golden model; the steps count on across the passes; bad settings are refused.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "exec/engine.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/image_io.h"
#include "pipeline/init_image.h"
#include "pipeline/txt2img.h"
#include "plan/placement.h"
#include "test_util.h"
#include "weights/safetensors.h"

namespace hyrt {
namespace {

pipeline::Txt2ImgParams base_params() {
  pipeline::Txt2ImgParams p;
  p.prompt = "a red circle on a blue square";
  p.negative_prompt = "blurry";
  p.width = 32;
  p.height = 24;
  p.steps = 4;
  p.cfg_scale = 6.0f;
  p.seed = 5;
  p.batch = 2;
  p.sampler = pipeline::SamplerKind::kDdim;
  return p;
}

TEST(HiresFix, IsTxt2ImgThenImg2ImgFromTheEightBitPicture) {
  const auto golden = test::golden_dir("sd15-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);

  pipeline::Txt2ImgParams p = base_params();
  p.hires = pipeline::HiresFix{.scale = 2.0, .steps = 5, .strength = 0.6};
  std::vector<std::pair<int, int>> steps;
  p.on_step = [&](int done, int total) { steps.emplace_back(done, total); };
  const pipeline::Txt2ImgResult hires = pipeline::txt2img(*model, model->scheduler_config(), p);
  ASSERT_EQ(hires.images.shape(), Shape({2, 48, 64, 3}));
  // 4 first-pass steps, then int(5 · 0.6) = 3: the total grows from 4 to 7.
  const std::vector<std::pair<int, int>> want{{1, 4}, {2, 4}, {3, 4}, {4, 4},
                                              {5, 7}, {6, 7}, {7, 7}};
  EXPECT_EQ(steps, want);

  // By hand: the first pass, its pictures in 8 bits resized by Lanczos, img2img from them.
  const pipeline::Txt2ImgResult first =
      pipeline::txt2img(*model, model->scheduler_config(), base_params());
  const int64_t pixels = 24 * 32 * 3;
  Tensor init(DType::kF32, {2, 48, 64, 3}, "the upscaled pictures");
  for (int i = 0; i < 2; ++i) {
    const pipeline::Image8 img = pipeline::float_to_image8(
        {first.images.as<float>() + i * pixels, static_cast<size_t>(pixels)}, 24, 32);
    const Tensor t = pipeline::picture_tensor(img, 64, 48);
    std::memcpy(init.as<float>() + i * t.numel(), t.data(), t.bytes());
  }
  pipeline::Txt2ImgParams second = base_params();
  second.width = 64;
  second.height = 48;
  second.steps = 5;
  second.init = pipeline::InitImage{std::move(init), 0.6, {}};
  const pipeline::Txt2ImgResult by_hand =
      pipeline::txt2img(*model, model->scheduler_config(), second);
  ASSERT_EQ(by_hand.images.shape(), hires.images.shape());
  EXPECT_EQ(std::memcmp(by_hand.images.data(), hires.images.data(), hires.images.bytes()), 0);
  // And the second pass changed the upscaled picture (strength 0.6 redraws most of it).
  EXPECT_GT(test::relative_l2(by_hand.images.as<float>(), second.init->image.as<float>(),
                              static_cast<size_t>(hires.images.numel())),
            1e-2);
}

// The latent upscalers (A1111's "Latent", "Latent (nearest)"): the first pass's latents resized
// as torch's interpolate does and given to img2img as latents, against diffusers
// (tests/data/hires_latent_cases.safetensors, made by tests/data/make_hires_latent_cases.py).
TEST(HiresFix, LatentUpscalersMatchDiffusers) {
  const auto golden = test::golden_dir("sd15-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  const auto data = weights::SafetensorsFile::open(std::string(HYRT_SOURCE_DIR) +
                                                   "/tests/data/hires_latent_cases.safetensors");
  const auto read = [&](const std::string& name) {
    const TensorView v = data->view(name);
    Tensor t(DType::kF32, v.shape, name.c_str());
    std::memcpy(t.data(), v.data, t.bytes());
    return t;
  };
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  for (const auto& [upscaler, mode] :
       {std::pair{pipeline::HiresFix::Upscaler::kLatent, "bilinear"},
        std::pair{pipeline::HiresFix::Upscaler::kLatentNearest, "nearest"}}) {
    SCOPED_TRACE(mode);
    pipeline::Txt2ImgParams p = base_params();
    p.batch = 1;
    p.seed = 9;
    p.cfg_scale = 5.0f;
    p.hires = pipeline::HiresFix{.upscaler = upscaler, .scale = 2.0, .steps = 5, .strength = 0.6};
    std::vector<Tensor> latents;  // after every step of both passes
    p.on_latents = [&](const Tensor& x) {
      latents.emplace_back(DType::kF32, x.shape(), "a step's latents");
      std::memcpy(latents.back().data(), x.data(), x.bytes());
    };
    const pipeline::Txt2ImgResult r = pipeline::txt2img(*model, model->scheduler_config(), p);
    ASSERT_EQ(latents.size(), 4u + 3u);  // int(5 · 0.6) = 3 second-pass steps
    const Tensor want_first = read("first.latents"), want = read(std::string(mode) + ".latents");
    const auto rel = [](const Tensor& a, const Tensor& b) {
      EXPECT_EQ(a.shape(), b.shape());
      return test::relative_l2(a.as<float>(), b.as<float>(), static_cast<size_t>(b.numel()));
    };
    EXPECT_LE(rel(latents[3], want_first), 2e-3);
    const double err = rel(latents.back(), want);
    std::printf("  hires %s: final latents relative L2 %.3g\n", mode, err);
    EXPECT_LE(err, 2e-3);
    EXPECT_EQ(r.images.shape(), Shape({1, 48, 64, 3}));
  }
  EXPECT_EQ(pipeline::parse_hires_upscaler("latent (Nearest)"),
            pipeline::HiresFix::Upscaler::kLatentNearest);
  EXPECT_THROW(pipeline::parse_hires_upscaler("R-ESRGAN 4x+"), Error);
}

TEST(HiresFix, SizesAndBadSettings) {
  using pipeline::hires_size;
  using pipeline::HiresFix;
  EXPECT_EQ(hires_size(HiresFix{.scale = 1.5}, 512, 768, 8), (std::array<int, 2>{768, 1152}));
  EXPECT_EQ(hires_size(HiresFix{.scale = 1.3}, 512, 512, 8), (std::array<int, 2>{664, 664}));
  EXPECT_EQ(hires_size(HiresFix{.width = 1000}, 512, 768, 8), (std::array<int, 2>{1000, 1496}));
  EXPECT_EQ(hires_size(HiresFix{.height = 1024}, 512, 768, 8), (std::array<int, 2>{680, 1024}));
  EXPECT_EQ(hires_size(HiresFix{.width = 640, .height = 960}, 512, 768, 8),
            (std::array<int, 2>{640, 960}));
  auto refused = [](pipeline::Txt2ImgParams p, const std::string& what) {
    try {
      pipeline::validate_txt2img_params(p, 8);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  pipeline::Txt2ImgParams p;
  p.hires = HiresFix{.strength = 0};
  refused(std::move(p), "hires denoising strength");
  pipeline::Txt2ImgParams q;
  q.hires = HiresFix{.scale = 20};
  refused(std::move(q), "hires scale");
  pipeline::Txt2ImgParams r;
  r.hires = HiresFix{.scale = 8};
  r.width = r.height = 4096;
  refused(std::move(r), "hires size");
  pipeline::Txt2ImgParams s;
  s.hires = HiresFix{};
  s.init = pipeline::InitImage{Tensor(DType::kF32, {1, 512, 512, 3}, "init"), 0.5, {}};
  refused(std::move(s), "not img2img");
}

}  // namespace
}  // namespace hyrt

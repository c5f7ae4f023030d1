// The UNet at latent sizes that are not multiples of its total downsampling (20x28 and
// 9x13 for the tiny model's 8x), batch 2 with two different timesteps, against diffusers
// (tests/data/unet_odd_latent.safetensors, made by tests/data/make_unet_odd_latent.py).
#include <gtest/gtest.h>

#include "pipeline/diffusion_model.h"
#include "pipeline/parity.h"
#include "test_util.h"
#include "weights/safetensors.h"

TEST(UNetOddLatent, MatchesDiffusersWhenUpsamplingToSkipSizes) {
  auto golden = hyrt::test::golden_dir();
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  using namespace hyrt;
  auto data = weights::SafetensorsFile::open(std::string(HYRT_SOURCE_DIR) +
                                             "/tests/data/unet_odd_latent.safetensors");
  exec::Engine engine;
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  for (int i = 0; i < 2; ++i) {
    const std::string p = "case" + std::to_string(i) + ".";
    const Tensor x = nchw_to_nhwc(data->view(p + "x"));
    const Tensor want = nchw_to_nhwc(data->view(p + "out"));
    const TensorView t = data->view(p + "t");
    const std::vector<float> ts(t.as<float>(), t.as<float>() + t.numel());
    const Tensor out = model->predict_noise(x.view(), ts, data->view(p + "context"));
    const double err = pipeline::relative_l2(out.view(), want.view());
    EXPECT_LE(err, 1e-3) << "latent " << x.shape().to_string();
    EXPECT_LE(err, 1e-5) << "f32 should be far tighter than the tolerance";
  }
}

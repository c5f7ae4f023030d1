// SDXL's conditioning can fail: the parity items above would pass vacuously if the UNet
// ignored text_embeds or time_ids, or if "no negative prompt" and -n "" were the same. These
// check on ../shared/golden/sdxl-tiny that each input changes the output, that the two
// negative-prompt cases differ, and that a UNet call without the added conditioning is refused.
#include <gtest/gtest.h>

#include <cstring>

#include "core/error.h"
#include "exec/engine.h"
#include "models/components.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/parity.h"
#include "pipeline/txt2img.h"
#include "test_util.h"
#include "weights/safetensors.h"

namespace hyrt {
namespace {

using pipeline::UNetConditioning;

TEST(SdxlConditioning, EveryInputMattersAndMissingOnesAreRefused) {
  auto golden = test::golden_dir("sdxl-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sdxl-tiny not found: skipped";
  exec::Engine engine;
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  ASSERT_EQ(model->family(), models::ModelFamily::kSdxl);
  const auto& u = model->unet_config();
  const Tensor x = test::random_tensor({1, 16, 16, u.in_channels}, 1);
  const Tensor ctx = test::random_tensor({1, 77, u.cross_attention_dim}, 2);
  const Tensor pooled = test::random_tensor({1, u.pooled_text_dim()}, 3);
  std::vector<float> ids{128, 128, 0, 0, 128, 128};
  const std::vector<float> t{500.0f};
  UNetConditioning c{.context = ctx.view(), .text_embeds = pooled.view(), .time_ids = ids};
  const Tensor base = model->predict_noise(x.view(), t, c);

  const Tensor pooled2 = test::random_tensor({1, u.pooled_text_dim()}, 4);
  c.text_embeds = pooled2.view();
  EXPECT_GT(pipeline::relative_l2(model->predict_noise(x.view(), t, c).view(), base.view()), 1e-4)
      << "the pooled text embedding does not reach the UNet";
  c.text_embeds = pooled.view();
  std::vector<float> ids2{1024, 1024, 0, 16, 128, 128};
  c.time_ids = ids2;
  EXPECT_GT(pipeline::relative_l2(model->predict_noise(x.view(), t, c).view(), base.view()), 1e-4)
      << "time_ids do not reach the UNet";

  EXPECT_THROW(model->predict_noise(x.view(), t, ctx.view()), Error);  // no text_embeds/time_ids

  // No negative prompt (zeros, force_zeros_for_empty_prompt) differs from the negative "".
  pipeline::Txt2ImgParams p;
  p.prompt = "a red circle";
  p.width = p.height = 64;
  p.steps = 2;
  p.cfg_scale = 5;
  p.seed = 3;
  p.sampler = pipeline::SamplerKind::kEuler;
  const Tensor none = pipeline::txt2img(*model, model->scheduler_config(), p).images;
  p.negative_prompt = "";
  const Tensor empty = pipeline::txt2img(*model, model->scheduler_config(), p).images;
  EXPECT_GT(pipeline::relative_l2(none.view(), empty.view()), 1e-4);
}

}  // namespace
}  // namespace hyrt

namespace hyrt {
namespace {

// SDXL's force_upcast makes the VAE decoder's graph wide-range (so no backend holds it in
// f16); SD 1.5's VAE, whose config also says force_upcast (diffusers' default), is not, as in
// diffusers, where only the SDXL pipeline upcasts.
TEST(SdxlConditioning, ForceUpcastMakesTheVaeWideRange) {
  auto sdxl = test::golden_dir("sdxl-tiny");
  auto sd15 = test::golden_dir("sd15-tiny");
  if (!sdxl || !sd15) GTEST_SKIP() << "../shared/golden not found: skipped";
  exec::Engine engine;
  auto xl = pipeline::DiffusionModel::open(*sdxl / "model", engine);
  auto v15 = pipeline::DiffusionModel::open(*sd15 / "model", engine);
  EXPECT_TRUE(xl->vae_config().force_upcast);
  EXPECT_TRUE(xl->vae_wide_range());
  EXPECT_FALSE(v15->vae_wide_range());
  const auto g = models::build_vae_decoder(xl->vae_config(), xl->weights(), 1, 8, 8, true,
                                           xl->vae_wide_range());
  for (const ir::Value& v : g.graph->values())
    EXPECT_EQ(v.wide_range, v.kind != ir::ValueKind::kWeight) << v.name;
}

}  // namespace
}  // namespace hyrt

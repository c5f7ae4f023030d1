// The UNet built as one chain of nodes per sample (UNetShape::independent_samples, what
// hybrid placement uses so host and accelerator can work on the two CFG halves at once)
// computes what the batched UNet computes: same weights, inputs sliced, outputs joined.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "pipeline/diffusion_model.h"
#include "pipeline/parity.h"
#include "test_util.h"

TEST(UNetPerSample, MatchesTheBatchedUNet) {
  auto golden = hyrt::test::golden_dir();
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  using namespace hyrt;
  exec::Engine engine;
  pipeline::ModelOptions batched_options, per_sample_options;
  batched_options.unet_per_sample = false;
  per_sample_options.unet_per_sample = true;
  auto batched = pipeline::DiffusionModel::open(*golden / "model", engine, batched_options);
  auto per_sample = pipeline::DiffusionModel::open(*golden / "model", engine, per_sample_options);
  const auto& cfg = batched->unet_config();
  std::mt19937 rng(7);
  std::normal_distribution<float> n01;
  Tensor x(DType::kF32, Shape{2, 12, 10, cfg.in_channels});
  Tensor ctx(DType::kF32, Shape{2, 77, cfg.cross_attention_dim});
  for (Tensor* t : {&x, &ctx})
    for (int64_t i = 0; i < t->numel(); ++i)
      t->as<float>()[i] = n01(rng);
  const std::vector<float> ts = {981.0f, 1.0f};
  const Tensor want = batched->predict_noise(x.view(), ts, ctx.view());
  const Tensor got = per_sample->predict_noise(x.view(), ts, ctx.view());
  EXPECT_LE(pipeline::relative_l2(got.view(), want.view()), 1e-5);
  // Each half on its own, too (a swapped or repeated half would not match).
  for (int64_t b = 0; b < 2; ++b) {
    const int64_t half = want.numel() / 2;
    double num = 0, den = 0;
    for (int64_t i = b * half; i < (b + 1) * half; ++i) {
      const double d = double(got.as<float>()[i]) - want.as<float>()[i];
      num += d * d;
      den += double(want.as<float>()[i]) * want.as<float>()[i];
    }
    EXPECT_LE(std::sqrt(num / den), 1e-5) << "sample " << b;
  }
  const auto reports = per_sample->memory_report();
  ASSERT_FALSE(reports.empty());
}

// `hyrt parity` on ../shared/golden/sd15-tiny, in process: every item of golden.safetensors
// (tokens, text encoder, UNet at each timestep, VAE, samplers, whole pipelines) from both
// the diffusers folder and the LDM single file must be within its tolerance.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "pipeline/parity.h"
#include "test_util.h"

TEST(GoldenParity, EveryItemWithinTolerance) {
  auto golden = hyrt::test::golden_dir();
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: parity skipped";
  hyrt::exec::Engine engine;
  hyrt::pipeline::ParityOptions o;
  o.golden_dir = *golden;
  const auto items = hyrt::pipeline::run_parity(o, engine);
  int counted = 0;
  bool saw_ldm = false, saw_pipeline = false, saw_tokens = false, saw_sched = false;
  for (const auto& it : items) {
    if (it.informational) continue;
    ++counted;
    EXPECT_TRUE(it.pass) << it.name << ": " << it.error << " > " << it.tolerance;
    saw_ldm |= it.name.find("[LDM single file]") != std::string::npos;
    saw_pipeline |= it.name.find("pipeline.") != std::string::npos;
    saw_tokens |= it.name.find("tokens.") != std::string::npos;
    saw_sched |= it.name.find("sched.") != std::string::npos;
  }
  EXPECT_GE(counted, 50);
  EXPECT_TRUE(saw_ldm && saw_pipeline && saw_tokens && saw_sched);
}

// The "Beyond txt2img" items of sd15-tiny/features.safetensors (README of the golden data):
// each must be reported, from the diffusers folder and the LDM file, and pass.
TEST(GoldenParity, FeatureItemsSeenAndPass) {
  auto golden = hyrt::test::golden_dir();
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: parity skipped";
  hyrt::exec::Engine engine;
  hyrt::pipeline::ParityOptions o;
  o.golden_dir = *golden;
  o.taps = false;
  const auto items = hyrt::pipeline::run_parity(o, engine);
  std::map<std::string, int> seen;
  for (const auto& it : items) {
    if (it.informational) continue;
    const size_t end = it.name.find("] ");
    if (end == std::string::npos) continue;
    const std::string bare = it.name.substr(end + 2);
    ++seen[bare];
    EXPECT_TRUE(it.pass) << it.name << ": " << it.error << " > " << it.tolerance;
  }
  for (const char* name : {"vae_encoder.mean", "vae_encoder.logvar", "vae_encoder.std",
                           "img2img.ddim.image", "img2img.euler.image", "inpaint4.image"})
    EXPECT_EQ(seen[name], 2) << name << " not checked from both the folder and the LDM file";
}

// ../shared/golden/sd15-tiny-inpaint: an inpainting model (9-channel UNet) recognised from
// the checkpoint in both layouts, its UNet forward and the inpainting pipeline at strengths
// 1.0 and 0.75.
TEST(GoldenParity, InpaintingModelFromBothLayouts) {
  const auto dir = hyrt::test::golden_dir("sd15-tiny-inpaint");
  if (!dir) GTEST_SKIP() << "../shared/golden/sd15-tiny-inpaint not found: parity skipped";
  hyrt::exec::Engine engine;
  hyrt::pipeline::ParityOptions o;
  o.golden_dir = *dir;
  const auto items = hyrt::pipeline::run_parity(o, engine);
  std::map<std::string, int> seen;
  for (const auto& it : items) {
    if (it.informational) continue;
    EXPECT_TRUE(it.pass) << it.name << ": " << it.error << " > " << it.tolerance;
    const size_t end = it.name.find("] ");
    if (end != std::string::npos) ++seen[it.name.substr(end + 2)];
  }
  for (const char* name : {"unet.out", "inpaint9.1.0.image", "inpaint9.0.75.image"})
    EXPECT_EQ(seen[name], 2) << name << " not checked from both the folder and the LDM file";
}

// The same for ../shared/golden/sdxl-tiny: both text encoders (penultimate states, pooled
// projection), encode_prompt, the UNet with the text_time embedding, the VAE, the "leading"
// samplers and the pipelines (with and without a negative prompt, with size conditioning),
// from the diffusers folder and the SGM single file.
TEST(GoldenParity, SdxlEveryItemWithinTolerance) {
  auto golden = hyrt::test::golden_dir("sdxl-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sdxl-tiny not found: parity skipped";
  hyrt::exec::Engine engine;
  hyrt::pipeline::ParityOptions o;
  o.golden_dir = *golden;
  const auto items = hyrt::pipeline::run_parity(o, engine);
  int counted = 0;
  bool saw_sgm = false, saw_noneg = false, saw_cond = false, saw_tokens2 = false,
       saw_pooled = false, saw_encode = false;
  for (const auto& it : items) {
    if (it.informational) continue;
    ++counted;
    EXPECT_TRUE(it.pass) << it.name << ": " << it.error << " > " << it.tolerance;
    saw_sgm |= it.name.find("[SGM single file]") != std::string::npos;
    saw_noneg |= it.name.find("pipeline.euler.noneg.image") != std::string::npos;
    saw_cond |= it.name.find("pipeline.euler.cond.image") != std::string::npos;
    saw_tokens2 |= it.name.find("tokens_2.") != std::string::npos;
    saw_pooled |= it.name.find("text_encoder_2.0.text_embeds") != std::string::npos;
    saw_encode |= it.name.find("encode_prompt.0.negative_pooled") != std::string::npos;
  }
  EXPECT_GE(counted, 80);
  EXPECT_TRUE(saw_sgm && saw_noneg && saw_cond && saw_tokens2 && saw_pooled && saw_encode);
}

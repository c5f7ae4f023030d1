// Txt2ImgParams::init (img2img / inpainting) validation: every malformed input is a clear
// kInvalidArgument before any model work (pipeline/txt2img.h).
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "pipeline/txt2img.h"

namespace {

using hyrt::DType;
using hyrt::Tensor;
using hyrt::pipeline::InitImage;
using hyrt::pipeline::Txt2ImgParams;
using hyrt::pipeline::validate_txt2img_params;

Txt2ImgParams params_with_init() {
  Txt2ImgParams p;
  p.width = 64;
  p.height = 32;
  p.steps = 10;
  InitImage init;
  init.image = Tensor::zeros(DType::kF32, {1, 32, 64, 3});
  init.strength = 0.6;
  p.init = std::move(init);
  return p;
}

std::string error_of(const Txt2ImgParams& p) {
  try {
    validate_txt2img_params(p, 8);
  } catch (const hyrt::Error& e) {
    EXPECT_EQ(e.code(), hyrt::ErrorCode::kInvalidArgument);
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Img2ImgParams, ValidOnesPass) {
  Txt2ImgParams p = params_with_init();
  EXPECT_EQ(error_of(p), "");
  p.init->mask = Tensor::zeros(DType::kF32, {1, 32, 64, 1});
  EXPECT_EQ(error_of(p), "");
  p.batch = 2;  // one picture for the whole batch
  EXPECT_EQ(error_of(p), "");
}

TEST(Img2ImgParams, BadOnesAreClear) {
  Txt2ImgParams p = params_with_init();
  p.init->image = Tensor::zeros(DType::kF32, {1, 64, 64, 3});  // not resized to the output
  EXPECT_NE(error_of(p).find("resized to the output size"), std::string::npos);
  p = params_with_init();
  p.init->mask = Tensor::zeros(DType::kF32, {1, 32, 64, 3});
  EXPECT_NE(error_of(p).find("mask must be"), std::string::npos);
  p = params_with_init();
  p.init->strength = 0;
  EXPECT_NE(error_of(p).find("strength"), std::string::npos);
  p.init->strength = 0.05;  // 10 · 0.05 = 0.5 -> no step left
  EXPECT_NE(error_of(p).find("no step to run"), std::string::npos);
  p = params_with_init();
  p.initial_latents = Tensor::zeros(DType::kF32, {1, 4, 4, 8});
  EXPECT_NE(error_of(p).find("exclude each other"), std::string::npos);
}

// A1111's prompt syntax through the text encoders (DiffusionModel::encode_prompts), on the
// golden tiny models: a plain prompt is encoded exactly as before, emphasis scales the weighted
// token's states with the chunk's mean restored, prompts longer than 75 tokens become chunks of
// 77 concatenated along the sequence (the shorter prompt padded with the encoding of ""), SDXL's
// pooled output is the first chunk's, and a 200-token prompt generates a picture.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "exec/engine.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/parity.h"
#include "pipeline/prompt_syntax.h"
#include "pipeline/txt2img.h"
#include "test_util.h"

namespace hyrt {
namespace {

using pipeline::DiffusionModel;

// Word i of the long prompts: each one token of CLIP's vocabulary, no commas.
std::string word(int i) {
  static const char* kWords[] = {"red", "circle", "blue", "square", "green", "triangle"};
  return kWords[i % 6];
}

// Words [first, last) joined by spaces.
std::string long_prompt(int last, int first = 0) {
  std::string s;
  for (int i = first; i < last; ++i)
    s += (i > first ? " " : "") + word(i);
  return s;
}

// Rows [first, first + count) of sequence `b` of a [N, T, C] tensor.
std::vector<float> rows(const Tensor& t, int64_t b, int64_t first, int64_t count) {
  const int64_t seq = t.shape()[1], c = t.shape()[2];
  const float* p = t.as<float>() + (b * seq + first) * c;
  return std::vector<float>(p, p + count * c);
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  return test::relative_l2(a.data(), b.data(), a.size());
}

class PromptConditioning : public ::testing::Test {
 protected:
  void SetUp() override {
    golden_ = test::golden_dir("sd15-tiny");
    if (!golden_) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
    model_ = DiffusionModel::open(*golden_ / "model", engine_);
  }
  std::optional<std::filesystem::path> golden_;
  exec::Engine engine_;
  std::unique_ptr<DiffusionModel> model_;
};

TEST_F(PromptConditioning, PlainPromptIsEncodedAsBefore) {
  const std::vector<std::string> prompts{"", "a red circle, on a blue background"};
  const auto c = model_->encode_prompts(prompts);
  ASSERT_EQ(c.context.shape(), Shape({2, 77, model_->text_config().hidden_size}));
  std::vector<int32_t> ids;
  for (const auto& p : prompts) {
    const auto r = model_->tokenizer().encode(p);
    ids.insert(ids.end(), r.ids.begin(), r.ids.end());
  }
  const Tensor want = model_->encode_text(ids, 2);
  ASSERT_EQ(std::memcmp(c.context.data(), want.data(), want.bytes()), 0);
  EXPECT_TRUE(c.warnings.empty());
}

TEST_F(PromptConditioning, EmphasisScalesTheTokenAndKeepsTheMean) {
  // "red" is token 2 (after <|startoftext|> and "a").
  const std::vector<std::string> prompts{"a red circle", "a (red:1.5) circle", "a [red] circle"};
  const auto c = model_->encode_prompts(prompts);
  ASSERT_EQ(c.context.shape()[1], 77);
  const int64_t width = c.context.shape()[2];
  const auto plain = rows(c.context, 0, 0, 77);
  for (int b : {1, 2}) {
    const double w = b == 1 ? 1.5 : 1 / 1.1;
    const auto got = rows(c.context, b, 0, 77);
    double sum_plain = 0, sum_got = 0, sum_abs = 0;
    for (size_t i = 0; i < got.size(); ++i)
      sum_plain += plain[i], sum_got += got[i], sum_abs += std::abs(plain[i]);
    EXPECT_NEAR(sum_got, sum_plain, 1e-6 * sum_abs) << "the mean is restored";
    // got = r · weight · plain, row by row: r from an unweighted row, then the weighted one.
    double num = 0, den = 0;
    for (int64_t k = 0; k < width; ++k)
      num += got[k] * plain[k], den += plain[k] * plain[k];
    const double r = num / den;
    EXPECT_GT(std::abs(r - 1), 1e-6) << "the rescale changed nothing";
    for (int t : {0, 1, 3, 10, 76}) {
      std::vector<float> want(plain.begin() + t * width, plain.begin() + (t + 1) * width);
      for (float& x : want)
        x = static_cast<float>(x * r);
      EXPECT_LT(rel(rows(c.context, b, t, 1), want), 1e-5) << "token " << t;
    }
    std::vector<float> want(plain.begin() + 2 * width, plain.begin() + 3 * width);
    for (float& x : want)
      x = static_cast<float>(x * r * w);
    EXPECT_LT(rel(rows(c.context, b, 2, 1), want), 1e-5) << "the weighted token, weight " << w;
  }
}

TEST_F(PromptConditioning, LongPromptsAreChunksOf77) {
  const std::string prompt = long_prompt(200);  // 3 chunks: 75 + 75 + 50 tokens
  const std::vector<std::string> prompts{"", prompt};
  const auto c = model_->encode_prompts(prompts);
  ASSERT_EQ(c.context.shape(), Shape({2, 3 * 77, model_->text_config().hidden_size}));
  EXPECT_TRUE(c.warnings.empty());
  // The negative "" is padded with the encoding of "": three equal chunks.
  const auto empty = rows(c.context, 0, 0, 77);
  EXPECT_EQ(rows(c.context, 0, 77, 77), empty);
  EXPECT_EQ(rows(c.context, 0, 154, 77), empty);
  // Each chunk of the long prompt is its 75 words encoded alone.
  for (int k = 0; k < 3; ++k) {
    const std::string part = long_prompt(std::min(200, 75 * (k + 1)), 75 * k);
    const std::vector<std::string> one{part};
    const auto alone = model_->encode_prompts(one);
    ASSERT_EQ(alone.context.shape()[1], 77);
    EXPECT_LT(rel(rows(c.context, 1, 77 * k, 77), rows(alone.context, 0, 0, 77)), 1e-5)
        << "chunk " << k;
  }
}

TEST_F(PromptConditioning, TooLongIsCutWithAWarningAndBadSyntaxIsRefused) {
  const std::vector<std::string> huge{long_prompt(2000)};
  const auto c = model_->encode_prompts(huge);
  EXPECT_EQ(c.context.shape()[1], 77 * pipeline::kMaxPromptChunks);
  ASSERT_EQ(c.warnings.size(), 1u);
  EXPECT_NE(c.warnings[0].find("ignored"), std::string::npos) << c.warnings[0];
  EXPECT_LT(c.warnings[0].size(), 500u);
  const std::vector<std::string> bad{"a (red:abc) circle"};
  try {
    model_->encode_prompts(bad);
    ADD_FAILURE() << "a malformed weight was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("(red:abc)"), std::string::npos) << e.what();
  }
}

TEST_F(PromptConditioning, TwoHundredTokenPromptGenerates) {
  pipeline::Txt2ImgParams p;
  p.prompt = "(a red circle:1.2), [blurry] " + long_prompt(200);
  p.negative_prompt = "ugly, BREAK (lowres)";
  p.width = p.height = 64;
  p.steps = 2;
  p.cfg_scale = 5;
  p.seed = 3;
  p.sampler = pipeline::SamplerKind::kEuler;
  const auto r = pipeline::txt2img(*model_, model_->scheduler_config(), p);
  ASSERT_EQ(r.images.shape(), Shape({1, 64, 64, 3}));
  for (int64_t i = 0; i < r.images.numel(); ++i)
    ASSERT_TRUE(std::isfinite(r.images.as<float>()[i]));
  for (const std::string& w : r.warnings)
    EXPECT_EQ(w.find("ignored"), std::string::npos) << w;
}

TEST(PromptConditioningSdxl, BothEncodersChunkAndPooledIsTheFirstChunks) {
  auto golden = test::golden_dir("sdxl-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sdxl-tiny not found: skipped";
  exec::Engine engine;
  auto model = DiffusionModel::open(*golden / "model", engine);
  const std::string first = long_prompt(75);
  const std::vector<std::string> prompts{first + " (blue:1.3) " + long_prompt(100)};
  const auto c = model->encode_prompts(prompts);
  const int64_t channels = model->text_config(0).hidden_size + model->text_config(1).hidden_size;
  ASSERT_EQ(c.context.shape(), Shape({1, 3 * 77, channels}));
  ASSERT_TRUE(c.pooled);
  const std::vector<std::string> alone{first};
  const auto a = model->encode_prompts(alone);
  ASSERT_TRUE(a.pooled);
  EXPECT_LT(pipeline::relative_l2(c.pooled->view(), a.pooled->view()), 1e-6);
  EXPECT_LT(rel(rows(c.context, 0, 0, 77), rows(a.context, 0, 0, 77)), 1e-6);

  pipeline::Txt2ImgParams p;
  p.prompt = prompts[0];
  p.width = p.height = 64;
  p.steps = 1;
  p.seed = 1;
  p.sampler = pipeline::SamplerKind::kEuler;
  const auto r = pipeline::txt2img(*model, model->scheduler_config(), p);
  ASSERT_EQ(r.images.shape(), Shape({1, 64, 64, 3}));
  for (int64_t i = 0; i < r.images.numel(); ++i)
    ASSERT_TRUE(std::isfinite(r.images.as<float>()[i]));
}

}  // namespace
}  // namespace hyrt

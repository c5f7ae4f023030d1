// "8-bit S" quantizer (weights/quantize.h): what is guaranteed — values in [-127, 127],
// |w − s·q| ≤ s/2 for every unclipped value, a refit never worse than absmax/127 —, the
// special rows (zeros, one outlier, NaN/Inf), determinism, source dtypes, and the policy
// with its per-layer error figures on the golden tiny model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/quantize.h"

namespace hyrt::weights {
namespace {

Tensor gaussian(Shape shape, uint64_t seed, float sigma = 1.0f) {
  Tensor t(DType::kF32, shape);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.as<float>()[i] = d(rng);
  return t;
}

// Σ (w − s·q)² per row, in double, from the stored q and scale.
std::vector<double> row_errors(const Tensor& w, const QuantizedTensor& qt) {
  const int64_t rows = w.shape()[0], cols = w.numel() / rows;
  std::vector<double> e(static_cast<size_t>(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const double s = qt.scale.as<float>()[r];
    for (int64_t k = 0; k < cols; ++k) {
      const double d = w.as<float>()[r * cols + k] - s * qt.q.as<int8_t>()[r * cols + k];
      e[r] += d * d;
    }
  }
  return e;
}

double rel_l2_of(const Tensor& w, const QuantizedTensor& qt) {
  const Tensor back = dequantize_per_row(qt.q.view(), qt.scale.view());
  return test::relative_l2(back.as<float>(), w.as<float>(), static_cast<size_t>(w.numel()));
}

TEST(Quantize, GaussianRowsRoundTrip) {
  const Tensor w = gaussian({64, 1024}, 1, 0.02f);
  const QuantizedTensor qt = quantize_per_row(w.view());
  ASSERT_EQ(qt.q.dtype(), DType::kS8);
  ASSERT_EQ(qt.q.shape(), w.shape());
  ASSERT_EQ(qt.scale.shape(), (Shape{64}));
  const int64_t cols = 1024;
  for (int64_t r = 0; r < 64; ++r) {
    const float s = qt.scale.as<float>()[r];
    ASSERT_GT(s, 0.0f);
    for (int64_t k = 0; k < cols; ++k) {
      const float x = w.as<float>()[r * cols + k];
      const int q = qt.q.as<int8_t>()[r * cols + k];
      ASSERT_GE(q, -127);
      ASSERT_LE(q, 127);
      // Rounding to the nearest grid point: within half a step wherever not clipped.
      if (std::fabs(x) <= 127.0f * s)
        ASSERT_LE(std::fabs(x - s * q), s * (0.5f + 1e-5f)) << "row " << r << " col " << k;
      else
        ASSERT_EQ(std::abs(q), 127);
    }
  }
  // The reported error is the measured one; int8 on Gaussian rows lands around 1e-2.
  EXPECT_NEAR(qt.rel_error, rel_l2_of(w, qt), 1e-6);
  EXPECT_GT(qt.rel_error, 1e-3);
  EXPECT_LT(qt.rel_error, 2e-2);
  EXPECT_GE(qt.worst_row_rel_error, qt.rel_error * 0.999);
}

// The refit starts from absmax/127 and keeps a step only if it lowers the row's error, so
// no row may end up worse than plain absmax/127 — for any data.
TEST(Quantize, RefitNeverWorseThanAbsmax) {
  std::vector<Tensor> cases;
  cases.push_back(gaussian({32, 777}, 2));
  cases.push_back(test::random_tensor({32, 300}, 3));  // uniform
  Tensor heavy = gaussian({32, 512}, 4);
  for (int64_t i = 0; i < heavy.numel(); i += 37)
    heavy.as<float>()[i] *= 20.0f;  // heavy tails
  cases.push_back(std::move(heavy));
  cases.push_back(gaussian({8, 5}, 5));  // shorter than one vector
  for (const Tensor& w : cases) {
    const QuantizedTensor plain = quantize_per_row(w.view(), 0);
    const QuantizedTensor refit = quantize_per_row(w.view(), 8);
    const auto e0 = row_errors(w, plain), e1 = row_errors(w, refit);
    double t0 = 0, t1 = 0;
    for (size_t r = 0; r < e0.size(); ++r) {
      EXPECT_LE(e1[r], e0[r] * (1 + 1e-9)) << "row " << r << " of " << w.shape().to_string();
      t0 += e0[r], t1 += e1[r];
    }
    EXPECT_LE(refit.rel_error, plain.rel_error * (1 + 1e-9));
    // Plain absmax/127 is exactly max|w| / 127 per row.
    const int64_t cols = w.numel() / w.shape()[0];
    for (int64_t r = 0; r < w.shape()[0]; ++r) {
      float m = 0;
      for (int64_t k = 0; k < cols; ++k)
        m = std::max(m, std::fabs(w.as<float>()[r * cols + k]));
      EXPECT_EQ(plain.scale.as<float>()[r], m / 127.0f);
    }
  }
  // A strict gain on Gaussian rows (small: for 8 bits, max|w| of a few thousand Gaussian
  // samples is already near the MSE-optimal clipping point; real weights' heavier tails
  // gain more — the figures are printed).
  const Tensor g = gaussian({64, 2048}, 6);
  const double plain = quantize_per_row(g.view(), 0).rel_error;
  const double refit = quantize_per_row(g.view(), 8).rel_error;
  EXPECT_LT(refit, plain);
  std::printf("  Gaussian rows [64, 2048]: rel.err absmax/127 %.5f, refit %.5f\n", plain, refit);
}

TEST(Quantize, RowsOfZerosGetScaleZero) {
  Tensor w = gaussian({4, 100}, 7);
  std::fill(w.as<float>() + 100, w.as<float>() + 200, 0.0f);   // row 1: zeros
  std::fill(w.as<float>() + 300, w.as<float>() + 400, -0.0f);  // row 3: negative zeros
  const QuantizedTensor qt = quantize_per_row(w.view());
  for (int r : {1, 3}) {
    EXPECT_EQ(qt.scale.as<float>()[r], 0.0f);
    for (int k = 0; k < 100; ++k)
      EXPECT_EQ(qt.q.as<int8_t>()[r * 100 + k], 0);
  }
  const Tensor back = dequantize_per_row(qt.q.view(), qt.scale.view());
  for (int64_t i = 0; i < back.numel(); ++i)
    ASSERT_TRUE(std::isfinite(back.as<float>()[i]));
  EXPECT_TRUE(std::isfinite(qt.rel_error));

  const Tensor zeros = Tensor::zeros(DType::kF32, {3, 16});
  const QuantizedTensor z = quantize_per_row(zeros.view());
  EXPECT_EQ(z.rel_error, 0.0);
  EXPECT_EQ(z.worst_row_rel_error, 0.0);
  for (int r = 0; r < 3; ++r)
    EXPECT_EQ(z.scale.as<float>()[r], 0.0f);
}

TEST(Quantize, RowWithOneHugeOutlier) {
  Tensor w = gaussian({2, 4096}, 8, 0.01f);
  w.as<float>()[123] = 1000.0f;
  const QuantizedTensor qt = quantize_per_row(w.view());
  const float s = qt.scale.as<float>()[0];
  ASSERT_TRUE(std::isfinite(s));
  ASSERT_GT(s, 0.0f);
  // The outlier holds nearly all the row's energy, so the fit keeps it (to half a step).
  EXPECT_LE(std::fabs(1000.0f - s * qt.q.as<int8_t>()[123]), s * 0.5f + 1e-3f);
  // Row 1 is unaffected by row 0's outlier: that is what per-row scales are for.
  const QuantizedTensor alone =
      quantize_per_row(TensorView{w.as<float>() + 4096, DType::kF32, Shape{1, 4096}});
  EXPECT_EQ(qt.scale.as<float>()[1], alone.scale.as<float>()[0]);
  EXPECT_TRUE(std::isfinite(qt.rel_error));
  EXPECT_LT(qt.rel_error, 1e-2);
}

TEST(Quantize, NonFiniteValuesAreRejected) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    Tensor w = gaussian({5, 40}, 9);
    w.as<float>()[3 * 40 + 17] = bad;
    try {
      quantize_per_row(w.view());
      FAIL() << "expected an error for " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("row 3, column 17"), std::string::npos) << e.what();
    }
  }
}

TEST(Quantize, BadArguments) {
  const Tensor w = gaussian({4, 4}, 10);
  const Tensor v = gaussian({4}, 10);
  const Tensor ints = Tensor::zeros(DType::kS32, {4, 4});
  for (const TensorView& bad : {v.view(), ints.view()})
    EXPECT_THROW(quantize_per_row(bad), Error);
  EXPECT_THROW(quantize_per_row(w.view(), -1), Error);
  const QuantizedTensor qt = quantize_per_row(w.view());
  EXPECT_THROW(dequantize_per_row(w.view(), qt.scale.view()), Error);  // q must be s8
  const Tensor short_scale = Tensor::zeros(DType::kF32, {3});
  EXPECT_THROW(dequantize_per_row(qt.q.view(), short_scale.view()), Error);
}

TEST(Quantize, DeterministicAcrossRunsAndThreadCounts) {
  const Tensor w = gaussian({300, 1000}, 11);
  const int saved = num_threads();
  set_num_threads(1);
  const QuantizedTensor a = quantize_per_row(w.view());
  set_num_threads(std::max(2, hardware_threads()));
  const QuantizedTensor b = quantize_per_row(w.view());
  const QuantizedTensor c = quantize_per_row(w.view());
  set_num_threads(saved);
  for (const QuantizedTensor* x : {&b, &c}) {
    EXPECT_EQ(std::memcmp(a.q.data(), x->q.data(), a.q.bytes()), 0);
    EXPECT_EQ(std::memcmp(a.scale.data(), x->scale.data(), a.scale.bytes()), 0);
    EXPECT_EQ(a.rel_error, x->rel_error);
  }
}

// f16/bf16 sources give exactly the result of their f32 values; unaligned views too.
TEST(Quantize, HalfSourcesAndUnalignedViews) {
  const Tensor w = gaussian({16, 200}, 12);
  for (DType t : {DType::kF16, DType::kBF16}) {
    Tensor half(t, w.shape());
    convert_from_f32(w.as<float>(), t, half.data(), static_cast<size_t>(w.numel()));
    Tensor back(DType::kF32, w.shape());
    convert_to_f32(t, half.data(), back.as<float>(), static_cast<size_t>(w.numel()));
    const QuantizedTensor a = quantize_per_row(half.view());
    const QuantizedTensor b = quantize_per_row(back.view());
    EXPECT_EQ(std::memcmp(a.q.data(), b.q.data(), a.q.bytes()), 0) << dtype_name(t);
    EXPECT_EQ(std::memcmp(a.scale.data(), b.scale.data(), a.scale.bytes()), 0) << dtype_name(t);

    std::vector<uint8_t> odd(half.bytes() + 1);
    std::memcpy(odd.data() + 1, half.data(), half.bytes());
    const QuantizedTensor c = quantize_per_row(TensorView{odd.data() + 1, t, w.shape()});
    EXPECT_EQ(std::memcmp(a.q.data(), c.q.data(), a.q.bytes()), 0) << dtype_name(t);
  }
  std::vector<uint8_t> odd(w.bytes() + 1);
  std::memcpy(odd.data() + 1, w.data(), w.bytes());
  const QuantizedTensor a = quantize_per_row(w.view());
  const QuantizedTensor c = quantize_per_row(TensorView{odd.data() + 1, DType::kF32, w.shape()});
  EXPECT_EQ(std::memcmp(a.q.data(), c.q.data(), a.q.bytes()), 0);
}

TEST(QuantizePolicy, WhatIsQuantized) {
  struct Case {
    const char* name;
    Shape shape;
    bool quantized;
  };
  const Case cases[] = {
      // quantized: linear and conv weights
      {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", {320, 320}, true},
      {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", {320, 768}, true},
      {"unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
       {2560, 320},
       true},
      {"unet.down_blocks.0.resnets.0.conv1.weight", {320, 320, 3, 3}, true},
      {"unet.down_blocks.0.resnets.0.conv2.weight", {320, 320, 3, 3}, true},
      {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight", {768, 768}, true},
      {"text_encoder.text_model.encoder.layers.0.mlp.fc1.weight", {3072, 768}, true},
      {"vae.decoder.mid_block.attentions.0.to_q.weight", {512, 512}, true},
      {"vae.decoder.up_blocks.0.upsamplers.0.conv.weight", {512, 512, 3, 3}, true},
      // kept: the time embedding and residual-stream 1x1 convs (measured)
      {"unet.down_blocks.0.attentions.0.proj_in.weight", {320, 320, 1, 1}, false},
      {"unet.up_blocks.1.attentions.2.proj_out.weight", {1280, 1280, 1, 1}, false},
      {"unet.down_blocks.1.resnets.0.conv_shortcut.weight", {640, 320, 1, 1}, false},
      {"vae.decoder.up_blocks.2.resnets.0.conv_shortcut.weight", {256, 512, 1, 1}, false},
      {"unet.time_embedding.linear_1.weight", {1280, 320}, false},
      {"unet.time_embedding.linear_2.weight", {1280, 1280}, false},
      {"unet.down_blocks.0.resnets.0.time_emb_proj.weight", {320, 1280}, false},
      // kept: biases, norms, embeddings, 1-D, pixel/latent boundary layers
      {"unet.down_blocks.0.resnets.0.conv1.bias", {320}, false},
      {"unet.down_blocks.0.resnets.0.norm1.weight", {320}, false},
      {"unet.conv_norm_out.weight", {320}, false},
      {"text_encoder.text_model.final_layer_norm.weight", {768}, false},
      {"text_encoder.text_model.encoder.layers.0.layer_norm1.weight", {768}, false},
      {"text_encoder.text_model.embeddings.token_embedding.weight", {49408, 768}, false},
      {"text_encoder.text_model.embeddings.position_embedding.weight", {77, 768}, false},
      {"unet.conv_in.weight", {320, 4, 3, 3}, false},
      {"unet.conv_out.weight", {4, 320, 3, 3}, false},
      {"vae.post_quant_conv.weight", {4, 4, 1, 1}, false},
      {"vae.quant_conv.weight", {8, 8, 1, 1}, false},
      {"vae.decoder.conv_in.weight", {512, 4, 3, 3}, false},
      {"vae.decoder.conv_out.weight", {3, 128, 3, 3}, false},
      {"vae.encoder.conv_in.weight", {128, 3, 3, 3}, false},
      {"vae.encoder.conv_out.weight", {8, 512, 3, 3}, false},
  };
  for (const Case& c : cases)
    EXPECT_EQ(should_quantize(c.name, c.shape), c.quantized) << c.name;
}

TEST(QuantizePolicy, KeepPatterns) {
  EXPECT_TRUE(name_matches_pattern(
      "attn2", "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_q.weight"));
  EXPECT_FALSE(name_matches_pattern(
      "attn2", "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"));
  EXPECT_TRUE(name_matches_pattern("unet.up_blocks.*", "unet.up_blocks.3.resnets.0.conv1.weight"));
  EXPECT_FALSE(
      name_matches_pattern("unet.up_blocks.*", "xunet.up_blocks.3.resnets.0.conv1.weight"));
  EXPECT_TRUE(
      name_matches_pattern("*.to_?.weight", "vae.decoder.mid_block.attentions.0.to_k.weight"));
  EXPECT_FALSE(
      name_matches_pattern("*.to_?.weight", "vae.decoder.mid_block.attentions.0.to_out.0.weight"));
  EXPECT_TRUE(name_matches_pattern("*", "anything"));
  EXPECT_TRUE(name_matches_pattern("a*b*c", "aXXbYYc"));
  EXPECT_FALSE(name_matches_pattern("a*b*c", "aXXbYYcd"));

  QuantizePolicy p;
  p.keep = {"attn2", "unet.up_blocks.3.*"};
  EXPECT_FALSE(
      p.quantize("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_q.weight", {320, 320}));
  EXPECT_FALSE(p.quantize("unet.up_blocks.3.resnets.0.conv1.weight", {320, 640, 3, 3}));
  EXPECT_TRUE(p.quantize("unet.up_blocks.2.resnets.0.conv1.weight", {320, 640, 3, 3}));
  EXPECT_FALSE(p.quantize("unet.up_blocks.2.resnets.0.conv1.bias", {320}));
}

// Per-layer relative errors on the golden tiny model, printed as the evidence behind the
// policy: every weight the policy quantizes stays within 2e-2, and the boundary layers it
// keeps are printed with the error they would have had.
TEST(QuantizePolicy, GoldenTinyModelErrors) {
  const auto dir = test::golden_dir();
  if (!dir) GTEST_SKIP() << "golden data not found (../shared/golden)";
  const auto ck = Checkpoint::open(*dir / "model");
  std::vector<double> errs;
  double worst = 0;
  std::string worst_name;
  std::printf("  boundary layers kept in 16-bit (error if they were quantized):\n");
  for (Component c : kAllComponents)
    for (const auto& name : ck->names(c)) {
      const WeightInfo& w = ck->info(name);
      const bool candidate = w.shape.rank() >= 2 && name.ends_with(".weight") &&
                             name.find(".embeddings.") == std::string::npos;
      if (!candidate) continue;
      const QuantizedTensor qt = quantize_per_row(ck->get(name));
      if (should_quantize(name, w.shape)) {
        errs.push_back(qt.rel_error);
        if (qt.rel_error > worst) worst = qt.rel_error, worst_name = name;
      } else {
        std::printf("    %-40s %-16s rel.err %.5f (worst row %.5f)\n", name.c_str(),
                    w.shape.to_string().c_str(), qt.rel_error, qt.worst_row_rel_error);
      }
    }
  ASSERT_FALSE(errs.empty());
  std::sort(errs.begin(), errs.end());
  std::printf("  quantized: %zu tensors, rel.err median %.5f, worst %.5f (%s)\n", errs.size(),
              errs[errs.size() / 2], worst, worst_name.c_str());
  EXPECT_LT(worst, 2e-2);
}

}  // namespace
}  // namespace hyrt::weights

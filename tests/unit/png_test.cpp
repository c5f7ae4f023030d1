// PNG output (pipeline/image_io.h): float -> 8-bit rounding as diffusers does it, PNG
// round trips through libspng with the A1111 "parameters" chunk, and error reporting.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "core/error.h"
#include "pipeline/image_io.h"

namespace hyrt::pipeline {
namespace {

std::filesystem::path temp_png(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("hyrt_png_test_" + name + ".png");
}

// Expected bytes from numpy: (np.clip(v, 0, 1) * 255).round().astype("uint8") in float32.
TEST(ImageIo, FloatToImage8RoundsLikeDiffusers) {
  const std::vector<float> v = {
      0.0f,   1.0f,         0.5f, 0.3f,       -0.1f,      1.2f,
      0.998f, 0.001960784f, 0.7f, 0.0980392f, 0.5019608f, std::numeric_limits<float>::quiet_NaN()};
  const Image8 img = float_to_image8(v, 1, 4, 3);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{0, 255, 128, 76, 0, 255, 254, 0, 178, 25, 128, 0}));

  // [-1, 1] input: ((x / 2 + 0.5).clip(0, 1) * 255).round().
  const std::vector<float> w = {-1.0f, 1.0f, 0.0f, -0.5f, 0.25f, 0.00392157f};
  const Image8 img2 = float_to_image8(w, 1, 2, 3, FloatRange::kMinusOneToOne);
  EXPECT_EQ(img2.pixels, (std::vector<uint8_t>{0, 255, 128, 64, 159, 128}));

  EXPECT_THROW(float_to_image8(w, 1, 3, 3), Error);  // 6 values for a 1x3 RGB image
  EXPECT_THROW(float_to_image8(w, 1, 3, 2), Error);  // 2 channels
}

TEST(ImageIo, A1111Parameters) {
  GenerationParameters p;
  p.prompt = "a red circle";
  p.negative_prompt = "blurry, low quality";
  p.steps = 20;
  p.sampler = "Euler a";
  p.cfg_scale = 7.0;
  p.seed = 42;
  p.width = 512;
  p.height = 768;
  p.model = "v1-5-pruned-emaonly";
  p.extra = {{"Version", "hyrt 0.1.0"}, {"Note", "a, b"}};
  EXPECT_EQ(format_a1111_parameters(p),
            "a red circle\nNegative prompt: blurry, low quality\n"
            "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x768, "
            "Model: v1-5-pruned-emaonly, Version: hyrt 0.1.0, Note: \"a, b\"");
  p.negative_prompt.clear();
  p.model.clear();
  p.extra.clear();
  p.cfg_scale = 7.5;
  p.seed = 18446744073709551615ull;
  EXPECT_EQ(format_a1111_parameters(p),
            "a red circle\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, "
            "Seed: 18446744073709551615, Size: 512x768");
}

Image8 test_pattern(int width, int height, int channels) {
  Image8 img{width, height, channels, {}};
  img.pixels.resize(static_cast<size_t>(width) * height * channels);
  for (size_t i = 0; i < img.pixels.size(); ++i)
    img.pixels[i] = static_cast<uint8_t>(i * 37 + 11);
  return img;
}

TEST(ImageIo, RgbRoundTripWithParameters) {
  const Image8 img = test_pattern(13, 7, 3);  // odd sizes catch stride mistakes
  GenerationParameters p;
  p.prompt = "a red circle on a blue background";
  p.steps = 6;
  p.sampler = "DPM++ 2M Karras";
  p.seed = 1;
  p.width = 13;
  p.height = 7;
  const std::string params = format_a1111_parameters(p);
  const auto path = temp_png("rgb");
  write_png(path, img, {{kParametersKeyword, params}, {"Software", "hyrt"}});

  const DecodedPng back = read_png(path);
  EXPECT_EQ(back.image.width, 13);
  EXPECT_EQ(back.image.height, 7);
  EXPECT_EQ(back.image.channels, 3);
  EXPECT_EQ(back.image.pixels, img.pixels);
  ASSERT_EQ(back.text.size(), 2u);
  EXPECT_EQ(back.text[0].first, "parameters");
  EXPECT_EQ(back.text[0].second, params);
  EXPECT_EQ(back.text[1], (PngText{"Software", "hyrt"}));
  std::filesystem::remove(path);
}

TEST(ImageIo, RgbaAndUnicodeText) {
  const Image8 img = test_pattern(5, 9, 4);
  const std::string text = "naïve café — 猫 🚀\nNegative prompt: ugly";
  const auto bytes = encode_png(img, {{"parameters", text}});
  ASSERT_GT(bytes.size(), 8u);
  EXPECT_EQ(bytes[1], 'P');
  const DecodedPng back = decode_png(bytes);
  EXPECT_EQ(back.image.channels, 4);
  EXPECT_EQ(back.image.pixels, img.pixels);
  ASSERT_EQ(back.text.size(), 1u);
  EXPECT_EQ(back.text[0].second, text);  // stored as iTXt (UTF-8)
}

TEST(ImageIo, Errors) {
  const Image8 img = test_pattern(2, 2, 3);
  const std::filesystem::path bad = "/nonexistent_dir_hyrt/sub/out.png";
  try {
    write_png(bad, img);
    FAIL() << "expected kIo";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
  }
  try {
    read_png("/nonexistent_dir_hyrt/in.png");
    FAIL() << "expected kNotFound";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
  const auto garbage = temp_png("garbage");
  std::ofstream(garbage, std::ios::binary) << "definitely not a png";
  try {
    read_png(garbage);
    FAIL() << "expected kIo";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find(garbage.string()), std::string::npos);
  }
  std::filesystem::remove(garbage);

  Image8 wrong = img;
  wrong.pixels.pop_back();
  EXPECT_THROW(encode_png(wrong), Error);
  EXPECT_THROW(encode_png(img, {{"", "empty keyword"}}), Error);
  EXPECT_THROW(encode_png(img, {{std::string(80, 'k'), "long keyword"}}), Error);
}

}  // namespace
}  // namespace hyrt::pipeline

// resize_lanczos / to_grayscale against Pillow 13's Image.resize(..., LANCZOS) and
// convert("L") on the same synthetic pictures (values printed by Pillow).
TEST(ImageResize, MatchesPillowLanczos) {
  using hyrt::pipeline::Image8;
  Image8 rgb{40, 48, 3, {}};
  Image8 mask{40, 48, 3, {}};
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 40; ++x) {
      rgb.pixels.insert(rgb.pixels.end(), {static_cast<uint8_t>(x * 6 % 256),
                                           static_cast<uint8_t>(y * 5 % 256), 128});
      const uint8_t m = (y >= 10 && y < 30 && x >= 5 && x < 25) ? 255 : 0;
      mask.pixels.insert(mask.pixels.end(), {m, m, m});
    }
  const Image8 down = hyrt::pipeline::resize_lanczos(rgb, 32, 32);
  const std::vector<int> first{1,  1, 128, 8,  1, 128, 16, 1, 128,
                               23, 1, 128, 31, 1, 128, 38, 1, 128};
  for (size_t i = 0; i < first.size(); ++i)
    EXPECT_EQ(down.pixels[i], first[i]) << i;
  const std::vector<int> at500{151, 114, 128, 158, 114, 128, 166, 114, 128};
  for (size_t i = 0; i < at500.size(); ++i)
    EXPECT_EQ(down.pixels[500 * 3 + i], at500[i]) << i;
  const Image8 up = hyrt::pipeline::resize_lanczos(rgb, 64, 80);
  const std::vector<int> at1000{149, 44, 128, 153, 44, 128, 156, 44, 128};
  for (size_t i = 0; i < at1000.size(); ++i)
    EXPECT_EQ(up.pixels[1000 * 3 + i], at1000[i]) << i;
  const Image8 m = hyrt::pipeline::resize_lanczos(hyrt::pipeline::to_grayscale(mask), 32, 32);
  ASSERT_EQ(m.channels, 1);
  const std::vector<int> row8{0,   0,   0,   7,   243, 250, 250, 250, 250, 250, 250,
                              250, 250, 250, 250, 250, 250, 250, 250, 243, 7,   0,
                              0,   0,   0,   0,   0,   0,   0,   0,   0,   0};
  for (int x = 0; x < 32; ++x)
    EXPECT_EQ(m.pixels[8 * 32 + x], row8[x]) << x;
  EXPECT_THROW(hyrt::pipeline::resize_lanczos(rgb, 0, 4), hyrt::Error);
}

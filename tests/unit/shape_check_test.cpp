// eval/shape_check.h against the data generator it judges: tests/data/shapes holds 24 images
// from train/shapes_data.py with their labels, made by
//   python3 train/shapes_data.py --out DIR --count 24 --seed 5000 --cover
// (then captions.jsonl gathered into one JSON list, labels.json). The checker must recover
// background, colour, shape and count of every clean image, and of >= 90% after the blur and
// noise a VAE round trip adds; the caption parser must read back every generated caption.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/shape_check.h"
#include "pipeline/image_io.h"

namespace hyrt::eval {
namespace {

const std::filesystem::path kSource = HYRT_SOURCE_DIR;

struct Sample {
  std::string file, caption;
  nlohmann::json labels;
  pipeline::Image8 image;
};

const Palette& palette() {
  static const Palette p = load_palette(kSource / "train" / "palette.json");
  return p;
}

const std::vector<Sample>& samples() {
  static const std::vector<Sample> s = [] {
    const auto dir = kSource / "tests" / "data" / "shapes";
    std::ifstream in(dir / "labels.json");
    const auto rows = nlohmann::json::parse(in);
    std::vector<Sample> out;
    for (const auto& r : rows)
      out.push_back({r["file"], r["caption"], r["labels"],
                     pipeline::read_png(dir / r["file"].get<std::string>()).image});
    return out;
  }();
  return s;
}

bool recovered(const ShapeVerdict& v, const nlohmann::json& labels) {
  return v.background == labels["background"].get<std::string>() &&
         v.colour == labels["colour"].get<std::string>() &&
         v.shape == labels["shape"].get<std::string>() && v.count == labels["count"].get<int>();
}

std::string describe(const ShapeVerdict& v) {
  std::string s = str_cat(v.count, " ", v.colour, " ", v.shape, " on ", v.background, " [");
  for (const auto& c : v.components)
    s += str_cat(" ", c.colour, "/", c.shape, " area ", c.area, " fill ", c.fill, " corner ",
                 c.corner_fill, " taper ", c.taper, ";");
  return s + " ]";
}

// Separable Gaussian blur (edges clamped) plus Gaussian noise, rounded back to 8 bits: the
// softening and grain a VAE decode leaves on flat synthetic images.
pipeline::Image8 degrade(const pipeline::Image8& in, double blur_sigma, double noise_sigma,
                         uint32_t seed) {
  const int w = in.width, h = in.height, c = in.channels;
  const int r = static_cast<int>(std::ceil(3 * blur_sigma));
  std::vector<double> k(2 * r + 1);
  double ks = 0;
  for (int i = -r; i <= r; ++i)
    ks += k[i + r] = std::exp(-0.5 * i * i / (blur_sigma * blur_sigma));
  for (auto& v : k)
    v /= ks;
  std::vector<double> a(in.pixels.begin(), in.pixels.end()), b(a.size());
  auto px = [&](int x, int y, int ch) { return (size_t(y) * w + x) * c + ch; };
  for (int pass = 0; pass < 2; ++pass) {
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int ch = 0; ch < c; ++ch) {
          double s = 0;
          for (int i = -r; i <= r; ++i) {
            const int xx = pass == 0 ? std::clamp(x + i, 0, w - 1) : x;
            const int yy = pass == 1 ? std::clamp(y + i, 0, h - 1) : y;
            s += k[i + r] * a[px(xx, yy, ch)];
          }
          b[px(x, y, ch)] = s;
        }
    std::swap(a, b);
  }
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, noise_sigma);
  pipeline::Image8 out = in;
  for (size_t i = 0; i < a.size(); ++i)
    out.pixels[i] = static_cast<uint8_t>(std::clamp(std::lround(a[i] + noise(rng)), 0L, 255L));
  return out;
}

TEST(ShapeCheck, PaletteIsWellSeparated) {
  ASSERT_GE(palette().size(), 8u);
  double min_de = 1e9;
  for (size_t i = 0; i < palette().size(); ++i)
    for (size_t j = i + 1; j < palette().size(); ++j)
      min_de = std::min(min_de, delta_e(palette()[i].rgb, palette()[j].rgb));
  // Far above what blur/noise moves an object's core colour, so naming stays unambiguous.
  EXPECT_GT(min_de, 40.0);
  EXPECT_THROW(parse_palette("{\"colours\": {\"red\": [300, 0, 0]}}"), Error);
  EXPECT_THROW(parse_palette("{\"colours\": {}}"), Error);
  EXPECT_THROW(parse_palette("not json"), Error);
}

TEST(ShapeCheck, TestSetCoversTheWorld) {
  std::set<std::string> shapes, colours, sizes;
  std::set<int> counts;
  for (const auto& s : samples()) {
    shapes.insert(s.labels["shape"]);
    colours.insert(s.labels["colour"]);
    sizes.insert(s.labels["size"]);
    counts.insert(s.labels["count"].get<int>());
  }
  EXPECT_EQ(shapes.size(), 3u);
  EXPECT_EQ(colours.size(), palette().size());
  EXPECT_EQ(sizes.size(), 2u);
  EXPECT_EQ(counts, (std::set<int>{1, 2, 3}));
}

TEST(ShapeCheck, RecoversEveryCleanImage) {
  ASSERT_EQ(samples().size(), 24u);
  for (const auto& s : samples()) {
    const auto v = check_shapes(s.image, palette());
    EXPECT_TRUE(recovered(v, s.labels)) << s.file << " \"" << s.caption << "\": " << describe(v);
    EXPECT_EQ(v.other_objects, 0) << s.file;
    EXPECT_GT(v.confidence, 0.5) << s.file << ": " << describe(v);
  }
}

TEST(ShapeCheck, SurvivesBlurAndNoise) {
  struct Level {
    double blur, noise, required;
  };
  // The first two bracket what a VAE decode does to these 64x64 images; the last is harsher
  // and only reported.
  const Level levels[] = {{0.8, 6, 0.9}, {1.2, 10, 0.9}, {1.6, 14, 0.0}};
  for (const auto& l : levels) {
    int ok = 0, total = 0;
    for (uint32_t seed = 1; seed <= 4; ++seed)
      for (const auto& s : samples()) {
        const auto v =
            check_shapes(degrade(s.image, l.blur, l.noise, seed * 1000 + total), palette());
        const bool good = recovered(v, s.labels);
        ok += good;
        ++total;
        if (!good && (l.required > 0 || std::getenv("HYRT_SHAPES_VERBOSE")))
          std::printf("  blur %.1f noise %.0f seed %u %s \"%s\": %s\n", l.blur, l.noise, seed,
                      s.file.c_str(), s.caption.c_str(), describe(v).c_str());
      }
    const double acc = double(ok) / total;
    std::printf("blur sigma %.1f px + noise sigma %.0f/255: %d of %d correct (%.1f%%)\n", l.blur,
                l.noise, ok, total, 100 * acc);
    RecordProperty(str_cat("accuracy_blur", l.blur, "_noise", l.noise), str_cat(acc));
    EXPECT_GE(acc, l.required) << "blur " << l.blur << " noise " << l.noise;
  }
}

TEST(ShapeCheck, RgbaAndBlankImages) {
  pipeline::Image8 blank{32, 32, 4, std::vector<uint8_t>(32 * 32 * 4, 0)};
  for (size_t i = 0; i < blank.pixels.size(); i += 4)
    blank.pixels[i] = 220, blank.pixels[i + 1] = 30, blank.pixels[i + 2] = 30;
  const auto v = check_shapes(blank, palette());
  EXPECT_EQ(v.background, "red");
  EXPECT_EQ(v.count, 0);
  EXPECT_TRUE(v.shape.empty());
  EXPECT_THROW(check_shapes(pipeline::Image8{}, palette()), Error);
}

TEST(ShapeCheck, ParsesEveryGeneratedCaption) {
  for (const auto& s : samples()) {
    const auto spec = parse_caption(s.caption, palette());
    EXPECT_EQ(spec.shape, s.labels["shape"].get<std::string>()) << s.caption;
    EXPECT_EQ(spec.colour, s.labels["colour"].get<std::string>()) << s.caption;
    EXPECT_EQ(spec.background, s.labels["background"].get<std::string>()) << s.caption;
    ASSERT_TRUE(spec.count) << s.caption;
    EXPECT_EQ(*spec.count, s.labels["count"].get<int>()) << s.caption;
    if (!spec.size.empty()) {
      EXPECT_EQ(spec.size, s.labels["size"].get<std::string>()) << s.caption;
    }
    if (!spec.position.empty()) {
      EXPECT_EQ(spec.position, s.labels["positions"][0].get<std::string>()) << s.caption;
    }
  }
}

TEST(ShapeCheck, CaptionGrammar) {
  auto p = parse_caption("An orange circle at the top left on a white background", palette());
  EXPECT_EQ(p.count, 1);
  EXPECT_EQ(p.colour, "orange");
  EXPECT_EQ(p.shape, "circle");
  EXPECT_EQ(p.background, "white");
  EXPECT_EQ(p.position, "top left");
  EXPECT_TRUE(p.size.empty());

  p = parse_caption("three large blue triangles on a black background", palette());
  EXPECT_EQ(p.count, 3);
  EXPECT_EQ(p.size, "large");
  EXPECT_EQ(p.shape, "triangle");
  EXPECT_EQ(p.background, "black");

  p = parse_caption("a small pink square in the centre", palette());
  EXPECT_EQ(p.count, 1);
  EXPECT_EQ(p.position, "center");
  EXPECT_TRUE(p.background.empty());

  p = parse_caption("green squares", palette());  // plural without a number: count open
  EXPECT_FALSE(p.count);

  EXPECT_THROW(parse_caption("a photo of a dog", palette()), Error);
  EXPECT_THROW(parse_caption("a small circle", palette()), Error);  // no colour

  ShapeVerdict v;
  v.background = "yellow", v.colour = "green", v.shape = "square", v.count = 2;
  EXPECT_TRUE(
      match_caption(v, parse_caption("two small green squares on a yellow background", palette()))
          .all());
  const auto m = match_caption(v, parse_caption("a green circle on a blue background", palette()));
  EXPECT_TRUE(m.colour);
  EXPECT_FALSE(m.shape);
  EXPECT_FALSE(m.count);
  EXPECT_FALSE(m.background);
  EXPECT_TRUE(match_caption(v, parse_caption("green squares", palette())).all());
}

}  // namespace
}  // namespace hyrt::eval

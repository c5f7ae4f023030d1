// The public API (include/hyrt/hyrt.h) on the golden tiny model.
#include <gtest/gtest.h>

#include "hyrt/hyrt.h"
#include "pipeline/image_io.h"
#include "test_util.h"

TEST(PublicApi, LoadsGeneratesAndSaves) {
  auto golden = hyrt::test::golden_dir();
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  hyrt::Runtime rt;
  hyrt::Model model = rt.load((*golden / "model").string());
  hyrt::GenerateOptions o;
  o.prompt = "a blue square";
  o.steps = 4;
  o.seed = 3;
  o.sampler = "DPM++ 2M Karras";
  int calls = 0;
  o.on_step = [&](int, int) { ++calls; };
  const auto images = model.generate(o);
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(images[0].width, 32);
  EXPECT_EQ(images[0].rgb.size(), 32u * 32 * 3);
  EXPECT_EQ(calls, 4);
  EXPECT_NE(images[0].parameters.find("Sampler: DPM++ 2M Karras"), std::string::npos);
  const auto path = std::filesystem::temp_directory_path() / "hyrt_api_test.png";
  hyrt::Model::save_png(images[0], path.string());
  EXPECT_EQ(hyrt::pipeline::read_png(path).image.pixels, images[0].rgb);
  std::filesystem::remove(path);
  EXPECT_THROW(rt.load("/nonexistent/model"), hyrt::Error);
}

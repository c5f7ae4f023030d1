// End-to-end tests of the hyrt CLI: the real binary, run as a user would, on the golden
// tiny model (skipped where ../shared is absent) and on bad input of every kind the
// issues list. Each failure must be a clear message and a non-zero exit, never a crash.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "pipeline/image_io.h"
#include "test_util.h"

#include "run_hyrt.h"

namespace fs = std::filesystem;

namespace {

using hyrt::test::run_hyrt;
using RunResult = hyrt::test::HyrtRun;

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tmp_ = fs::temp_directory_path() /
           ("hyrt_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(tmp_);
  }
  void TearDown() override { fs::remove_all(tmp_); }
  fs::path tmp_;
};

#define REQUIRE_GOLDEN(dir)                                                        \
  auto dir##_opt = hyrt::test::golden_dir();                                       \
  if (!dir##_opt) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped"; \
  const fs::path dir = *dir##_opt

}  // namespace

TEST_F(CliTest, GenerateWritesAPngWithItsParameters) {
  REQUIRE_GOLDEN(golden);
  const fs::path out = tmp_ / "x.png";
  const RunResult r =
      run_hyrt("generate -m " + (golden / "model").string() +
               " -p \"a red circle\" -s 7 --steps 8 --sampler dpmpp_2m -o " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto png = hyrt::pipeline::read_png(out);
  EXPECT_EQ(png.image.width, 32);  // the tiny model's native size
  EXPECT_EQ(png.image.height, 32);
  std::string params;
  for (const auto& [k, v] : png.text)
    if (k == "parameters") params = v;
  EXPECT_TRUE(contains(params, "a red circle")) << params;
  EXPECT_TRUE(contains(params, "Steps: 8, Sampler: DPM++ 2M, CFG scale: 7, Seed: 7, Size: 32x32"))
      << params;
  // Same seed, same image.
  const fs::path again = tmp_ / "y.png";
  ASSERT_EQ(run_hyrt("generate -m " + (golden / "model").string() +
                     " -p \"a red circle\" -s 7 --steps 8 --sampler dpmpp_2m -o " + again.string())
                .exit_code,
            0);
  EXPECT_EQ(hyrt::pipeline::read_png(again).image.pixels, png.image.pixels);
}

// --taesd decodes with a TAESD decoder (recorded as the PNG's VAE), with LCM at guidance 1 (no
// CFG); one made for another latent space (here the bundled model's 4x VAE) is refused, as is
// a path that does not exist.
TEST_F(CliTest, TaesdDecodesAndOneForAnotherModelIsRefused) {
  REQUIRE_GOLDEN(golden);
  const std::string taesd = std::string(HYRT_SOURCE_DIR) + "/tests/data/taesd-tiny";
  const fs::path out = tmp_ / "t.png";
  RunResult r =
      run_hyrt("generate -m " + (golden / "model").string() +
               " -p \"a red circle\" -s 2 --steps 4 --sampler lcm --cfg-scale 1 --taesd " + taesd +
               " -o " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string params;
  for (const auto& [k, v] : hyrt::pipeline::read_png(out).text)
    if (k == "parameters") params = v;
  EXPECT_TRUE(contains(params, "Sampler: LCM, CFG scale: 1,")) << params;
  EXPECT_TRUE(contains(params, "VAE: taesd-tiny")) << params;
  r = run_hyrt("generate -p x --taesd " + taesd + " -o " + (tmp_ / "u.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "taesd is for SD 1.x/2.x, taesdxl for SDXL")) << r.output;
  EXPECT_FALSE(fs::exists(tmp_ / "u.png"));
  r = run_hyrt("generate -p x --taesd " + (tmp_ / "none").string() + " -o " +
               (tmp_ / "v.png").string());
  EXPECT_NE(r.exit_code, 0);
}

// --preview vae / tae writes the predicted picture to --preview-path while sampling; Euler's last
// prediction is its result, so with the VAE the last preview is the picture (to 8-bit
// rounding). --taesd-preview-only keeps the VAE for the picture; tae without --taesd is refused.
TEST_F(CliTest, PreviewsWriteThePredictedPicture) {
  const fs::path out = tmp_ / "p.png", preview = tmp_ / "preview.png";
  const std::string base =
      "generate -p \"a red circle\" -s 4 --steps 5 -W 64 -H 64 --sampler "
      "euler --preview-interval 2 --preview-path " +
      preview.string() + " -o " + out.string();
  RunResult r = run_hyrt(base + " --preview vae");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto picture = hyrt::pipeline::read_png(out), last = hyrt::pipeline::read_png(preview);
  ASSERT_EQ(last.image.pixels.size(), picture.image.pixels.size());
  int worst = 0;
  for (size_t i = 0; i < last.image.pixels.size(); ++i)
    worst = std::max(worst, std::abs(int{last.image.pixels[i]} - int{picture.image.pixels[i]}));
  EXPECT_LE(worst, 2);
  fs::remove(preview);
  const std::string taesd = std::string(HYRT_SOURCE_DIR) + "/tests/data/taesd-tiny-4x";
  r = run_hyrt(base + " --preview tae --taesd-preview-only --taesd " + taesd);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(preview));
  EXPECT_EQ(hyrt::pipeline::read_png(out).image.pixels, picture.image.pixels)
      << "--taesd-preview-only changed the picture";
  r = run_hyrt(base + " --preview tae");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "--preview tae")) << r.output;
}

// --clip-skip N conditions on an earlier text-encoder state (checked against diffusers in
// tests/models/clip_skip_test.cpp): another picture, "Clip skip: N" in the parameters, 1 and
// stable-diffusion.cpp's unset -1 the default; more layers than the encoder has is refused.
TEST_F(CliTest, ClipSkipIsRecordedAndChecked) {
  const std::string base =
      "generate -p \"a red circle\" -s 4 --steps 3 -W 64 -H 64 --sampler "
      "ddim -o ";
  auto picture = [&](const std::string& flags, const std::string& name) {
    const fs::path out = tmp_ / name;
    const RunResult r = run_hyrt(base + out.string() + " " + flags);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return hyrt::pipeline::read_png(out);
  };
  const auto plain = picture("", "a.png"), one = picture("--clip-skip -1", "b.png"),
             two = picture("--clip-skip 2", "c.png");
  EXPECT_EQ(plain.image.pixels, one.image.pixels);
  EXPECT_NE(plain.image.pixels, two.image.pixels);
  std::string params;
  for (const auto& [k, v] : two.text)
    if (k == "parameters") params = v;
  EXPECT_TRUE(contains(params, "Clip skip: 2")) << params;
  const RunResult r = run_hyrt(base + (tmp_ / "d.png").string() + " --clip-skip 40");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "clip skip 40")) << r.output;
}

// --hires-scale (A1111's hires fix): the picture is what generating and then running img2img on
// the saved picture at the larger size gives, with the same seed; the PNG records the first
// pass's size and the hires settings as A1111 does.
TEST_F(CliTest, HiresFixIsGenerateThenImg2Img) {
  const std::string base = "generate -p \"a red circle\" -s 3 --steps 4 --sampler ddim ";
  const fs::path hires = tmp_ / "hires.png", first = tmp_ / "first.png",
                 second = tmp_ / "second.png";
  RunResult r =
      run_hyrt(base + "-W 64 -H 64 --hires-scale 1.5 --hires-strength 0.5 -o " + hires.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(run_hyrt(base + "-W 64 -H 64 -o " + first.string()).exit_code, 0);
  r = run_hyrt(base + "-W 96 -H 96 --strength 0.5 --init-image " + first.string() + " -o " +
               second.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto got = hyrt::pipeline::read_png(hires), want = hyrt::pipeline::read_png(second);
  EXPECT_EQ(got.image.width, 96);
  EXPECT_EQ(got.image.pixels, want.image.pixels);
  std::string params;
  for (const auto& [k, v] : got.text)
    if (k == "parameters") params = v;
  EXPECT_TRUE(contains(params, "Size: 64x64")) << params;
  EXPECT_TRUE(contains(params,
                       "Denoising strength: 0.5, Hires upscale: 1.5, Hires upscaler: "
                       "Lanczos"))
      << params;
  r = run_hyrt(base + "-W 64 -H 64 --hires-strength 0.1 -o " + (tmp_ / "x.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "no step to run")) << r.output;
}

// A model whose scheduler config is LCMScheduler samples with lcm unless --sampler says otherwise.
TEST_F(CliTest, AnLcmSchedulerConfigPicksTheLcmSampler) {
  REQUIRE_GOLDEN(golden);
  const fs::path model = tmp_ / "lcm-model";
  fs::create_directories(model / "scheduler");
  for (const char* part : {"text_encoder", "tokenizer", "unet", "vae"})
    fs::create_directory_symlink(golden / "model" / part, model / part);
  fs::copy_file(golden / "model" / "model_index.json", model / "model_index.json");
  std::ofstream(model / "scheduler" / "scheduler_config.json")
      << R"({"_class_name": "LCMScheduler", "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "beta_end": 0.012, "original_inference_steps": 50})";
  auto sampler_of = [&](const std::string& extra) {
    const fs::path out = tmp_ / "l.png";
    const RunResult r = run_hyrt("generate -m " + model.string() + " -p x -s 1 --steps 2 " + extra +
                                 " -o " + out.string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::string params;
    for (const auto& [k, v] : hyrt::pipeline::read_png(out).text)
      if (k == "parameters") params = v;
    return params;
  };
  EXPECT_TRUE(contains(sampler_of(""), "Sampler: LCM,"));
  EXPECT_TRUE(contains(sampler_of("--sampler ddim"), "Sampler: DDIM,"));
}

// --precision picks the host's arithmetic: bf16 (where the CPU multiplies bf16) draws nearly
// the f32 picture but not bit for bit, -v says which ran, and an unknown name is refused.
TEST_F(CliTest, PrecisionPicksTheArithmetic) {
  REQUIRE_GOLDEN(golden);
  const std::string base = "generate -v -m " + (golden / "model").string() +
                           " -p \"a red circle\" -s 3 --steps 4 --placement host";
  std::map<std::string, std::vector<uint8_t>> pixels;
  for (const char* precision : {"f32", "bf16"}) {
    const fs::path out = tmp_ / (std::string(precision) + ".png");
    const RunResult r = run_hyrt(base + " --precision " + precision + " -o " + out.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const bool bf16 = std::string(precision) == "bf16" && hyrt::backend::cpu_has_bf16_dot_product();
    EXPECT_TRUE(contains(r.output, std::string("host products ") + (bf16 ? "bf16" : "f32")))
        << r.output;
    pixels[precision] = hyrt::pipeline::read_png(out).image.pixels;
  }
  ASSERT_EQ(pixels["f32"].size(), pixels["bf16"].size());
  double diff = 0;
  for (size_t i = 0; i < pixels["f32"].size(); ++i)
    diff += std::abs(int{pixels["f32"][i]} - int{pixels["bf16"][i]});
  diff /= static_cast<double>(pixels["f32"].size());
  EXPECT_LT(diff, 3.0) << "bf16 drew another picture (mean |difference| " << diff << " levels)";
  if (hyrt::backend::cpu_has_bf16_dot_product()) EXPECT_GT(diff, 0.0) << "bf16 did not run";
  const RunResult bad = run_hyrt(base + " --precision fp64 -o " + (tmp_ / "bad.png").string());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(contains(bad.output, "--precision")) << bad.output;
}

TEST_F(CliTest, GenerateVerboseReportsArenasAndPeakRss) {
  REQUIRE_GOLDEN(golden);
  const RunResult r =
      run_hyrt("generate --verbose -m " + (golden / "model").string() +
               " -p cat -W 48 -H 32 --steps 2 -b 2 -o " + (tmp_ / "v.png").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "unet")) << r.output;
  EXPECT_TRUE(contains(r.output, "scratch arena")) << r.output;
  EXPECT_TRUE(contains(r.output, "peak RSS")) << r.output;
  EXPECT_TRUE(fs::exists(tmp_ / "v.png"));
  EXPECT_TRUE(fs::exists(tmp_ / "v_2.png"));  // batch of two
  EXPECT_EQ(hyrt::pipeline::read_png(tmp_ / "v.png").image.width, 48);
}

// Without a usable GPU, `auto` runs on the host and says so under --verbose, while asking
// for `device` or `hybrid` is a clear error naming why (not a crash, not a silent host run).
// Where a GPU is present, both requests succeed and the test only checks the verbose line.
TEST_F(CliTest, PlacementWithoutAnAcceleratorIsClear) {
  REQUIRE_GOLDEN(golden);
  const std::string base = "generate -m " + (golden / "model").string() +
                           " -p cat -W 32 -H 32 --steps 1 -o " + (tmp_ / "p.png").string();
  RunResult r = run_hyrt(base + " --verbose --placement auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "accelerator: ")) << r.output;
  if (contains(r.output, "accelerator: cuda")) GTEST_SKIP() << "a GPU is present";
  for (const char* mode : {"device", "hybrid"}) {
    r = run_hyrt(base + " --placement " + mode);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, "needs an accelerator")) << r.output;
  }
  r = run_hyrt(base + " --placement gpu");
  EXPECT_NE(r.exit_code, 0) << r.output;
}

TEST_F(CliTest, BadSizesStepsAndSamplersAreClearErrors) {
  REQUIRE_GOLDEN(golden);
  const std::string m =
      "generate -m " + (golden / "model").string() + " -p x -o " + (tmp_ / "o.png").string();
  RunResult r = run_hyrt(m + " -W 100 -H 64");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "multiples of 8")) << r.output;
  r = run_hyrt(m + " -W 100000 -H 64");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "larger than")) << r.output;
  r = run_hyrt(m + " --steps 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "steps must be")) << r.output;
  r = run_hyrt(m + " --steps -3");
  EXPECT_NE(r.exit_code, 0);
  r = run_hyrt(m + " --sampler plms");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "euler_a") && contains(r.output, "dpmpp_2m_karras")) << r.output;
  r = run_hyrt(m + " --sampler lcm --steps 51");  // past its distillation schedule
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "LCM takes at most 50 steps")) << r.output;
  r = run_hyrt(m + " -W abc");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(tmp_ / "o.png"));
}

TEST_F(CliTest, MissingTokenizerSaysWhereItLooked) {
  REQUIRE_GOLDEN(golden);
  // A single file alone in a folder: no tokenizer beside it, no --config-dir.
  fs::create_symlink(golden / "model-ldm.safetensors", tmp_ / "model.safetensors");
  const RunResult r = run_hyrt("generate -m " + (tmp_ / "model.safetensors").string() +
                               " -p x -o " + (tmp_ / "o.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "tokenizer")) << r.output;
  EXPECT_TRUE(contains(r.output, (tmp_ / "tokenizer" / "vocab.json").string())) << r.output;
}

TEST_F(CliTest, ModelFolderMissingAComponent) {
  REQUIRE_GOLDEN(golden);
  const fs::path m = tmp_ / "model";
  fs::create_directories(m);
  for (const char* part : {"model_index.json", "text_encoder", "vae", "tokenizer", "scheduler"})
    fs::create_symlink(golden / "model" / part, m / part);
  const RunResult r =
      run_hyrt("generate -m " + m.string() + " -p x -o " + (tmp_ / "o.png").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "UNet")) << r.output;
}

TEST_F(CliTest, UnwritableOutputFailsBeforeWork) {
  REQUIRE_GOLDEN(golden);
  const RunResult r = run_hyrt("generate -m " + (golden / "model").string() +
                               " -p x -o /nonexistent-hyrt-dir/o.png");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "/nonexistent-hyrt-dir")) << r.output;
  EXPECT_FALSE(contains(r.output, "timings")) << r.output;
}

TEST_F(CliTest, InfoReportsBothGoldenLayoutsWithNoMissingKeys) {
  REQUIRE_GOLDEN(golden);
  for (const fs::path& p : {golden / "model", golden / "model-ldm.safetensors"}) {
    const RunResult r = run_hyrt("info " + p.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "text encoder")) << r.output;
    EXPECT_TRUE(contains(r.output, "UNet")) << r.output;
    EXPECT_TRUE(contains(r.output, "VAE")) << r.output;
    EXPECT_TRUE(contains(r.output, "0 missing")) << r.output;
  }
}

TEST_F(CliTest, InfoOnATruncatedFileNamesTheFile) {
  REQUIRE_GOLDEN(golden);
  const fs::path cut = tmp_ / "cut.safetensors";
  {
    std::ifstream in(golden / "model-ldm.safetensors", std::ios::binary);
    std::string head(100000, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    std::ofstream(cut, std::ios::binary).write(head.data(), in.gcount());
  }
  const RunResult r = run_hyrt("info " + cut.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.exit_code, 1) << "an error exit, not a crash: " << r.output;
  EXPECT_TRUE(contains(r.output, cut.string())) << r.output;
}

TEST_F(CliTest, SelfCheckPasses) {
  const RunResult r = run_hyrt("selfcheck");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "self-check passed")) << r.output;
}

TEST_F(CliTest, QuantizeWritesASelfContainedInt8File) {
  REQUIRE_GOLDEN(golden);
  const fs::path q = tmp_ / "tiny-int8.safetensors";
  RunResult r = run_hyrt("quantize " + (golden / "model").string() + " " + q.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run_hyrt("info " + q.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "s8")) << r.output;
  EXPECT_TRUE(contains(r.output, "0 missing")) << r.output;
  // The file alone (configs, tokenizer and scheduler inside) is all generate needs, in
  // both int8 modes.
  for (const char* mode : {"w8a8", "w8", "w8a8-all"}) {
    const fs::path png = tmp_ / (std::string("q_") + mode + ".png");
    r = run_hyrt("generate -m " + q.string() + " -p \"a red circle\" --steps 2 --int8-mode " +
                 mode + " -o " + png.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_GT(fs::file_size(png), 100u) << r.output;
  }
  r = run_hyrt("generate -m " + q.string() + " -p x --int8-mode w4 -o " +
               (tmp_ / "bad.png").string());
  EXPECT_NE(r.exit_code, 0) << r.output;
  // Quantizing something that is not a model is a clear error.
  r = run_hyrt("quantize " + (golden / "golden.safetensors").string() + " " +
               (tmp_ / "x.safetensors").string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
}

// `hyrt bench --compare` times f32, W8 and W8A8 side by side at each size, as JSON.
TEST_F(CliTest, BenchComparesWeightVariantsSideBySide) {
  const fs::path json = tmp_ / "bench.json";
  RunResult r = run_hyrt("bench -m random:tiny --only unet --runs 1 --compare f32,w8,w8a8 " +
                         std::string("--sizes 32,48 -t 1 --json ") + json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream f(json);
  const nlohmann::json j = nlohmann::json::parse(f);
  ASSERT_EQ(j.at("comparison").size(), 6u) << j.dump(1);
  for (const auto& row : j["comparison"])
    EXPECT_GT(row.at("stages").at("unet_step").at("median_ms").get<double>(), 0.0);
  for (const char* size : {"32x32", "48x48"})
    for (const char* v : {"w8", "w8a8"})
      EXPECT_GT(j.at("unet_step_speedup").at(size).at(std::string(v) + " vs f32").get<double>(),
                0.0);
  EXPECT_EQ(j["comparison"][2]["config"]["int8_mode"], "w8a8");
  EXPECT_EQ(j["comparison"][1]["config"]["int8_mode"], "w8");
  EXPECT_EQ(j.at("machine").at("load_average_start").size(), 3u);
  r = run_hyrt("bench -m random:tiny --compare f32,w4 --only unet");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "w4")) << r.output;
}

// `--placements` runs each mode side by side (here without a GPU: auto lands on the host);
// `--resize` reports what each new size cost before its first step; a bad mode is refused.
TEST_F(CliTest, BenchPlacementsAndResize) {
  const fs::path json = tmp_ / "bench.json";
  RunResult r = run_hyrt(
      "bench -m random:tiny --only unet --runs 1 --placements host,auto "
      "--sizes 32 -t 1 --json " +
      json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream f(json);
  nlohmann::json j = nlohmann::json::parse(f);
  ASSERT_EQ(j.at("comparison").size(), 2u) << j.dump(1);
  EXPECT_EQ(j["comparison"][1]["placement"], "auto");
  EXPECT_GT(j.at("unet_step_speedup").at("32x32").at("auto vs host").get<double>(), 0.0);
  r = run_hyrt("bench -m random:tiny --only unet --runs 1 --resize --sizes 32,48 -t 1 --json " +
               json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream f2(json);
  j = nlohmann::json::parse(f2);
  ASSERT_EQ(j.at("stages").at("unet_step_resize").size(), 2u) << j.dump(1);
  EXPECT_EQ(j["stages"]["unet_step_resize"][1]["size"], "48x48");
  EXPECT_TRUE(j["stages"]["unet_step_resize"][1].contains("shape_change_ms"));
  r = run_hyrt("bench -m random:tiny --only unet --placements host,gpu");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "gpu")) << r.output;
}

// The int8 issue's targets, held by the suite: UNet output vs the f32 reference within
// 2e-2 (W8) and 5e-2 (W8A8) relative L2, from both checkpoint layouts.
TEST_F(CliTest, Int8ParityMeetsTheTargetsInBothModes) {
  REQUIRE_GOLDEN(golden);
  for (const char* mode : {"w8", "w8a8"}) {
    const RunResult r =
        run_hyrt("parity " + golden.string() + " --no-taps --int8 --int8-mode " + mode);
    EXPECT_EQ(r.exit_code, 0) << mode << "\n" << r.output;
    EXPECT_TRUE(contains(r.output, "[LDM single file, int8] unet.0.out")) << r.output;
    EXPECT_FALSE(contains(r.output, "FAIL")) << r.output;
  }
}

// --verbose says where each op kind ran and what was copied; placements the executor cannot
// run yet are refused with a reason, not silently run on the host.
TEST_F(CliTest, GenerateReportsPlacementAndRefusesWhatItCannotPlace) {
  REQUIRE_GOLDEN(golden);
  const std::string base = "generate -m " + (golden / "model").string() + " -p x --steps 1 -o " +
                           (tmp_ / "p.png").string();
  RunResult r = run_hyrt(base + " --verbose --placement host");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "placement: unet")) << r.output;
  EXPECT_TRUE(contains(r.output, "copies per run: 0")) << r.output;
  for (const char* mode : {"hybrid", "device"}) {
    r = run_hyrt(base + " --placement " + mode);
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, "accelerator")) << r.output;
  }
  r = run_hyrt(base + " --placement gpu");
  EXPECT_NE(r.exit_code, 0) << r.output;
}

// img2img and inpainting from the CLI: pictures of another size are resized (to -W/-H, or
// the picture's own size rounded down to the VAE factor), the strength is recorded, bad files are
// clear errors that name the flag and the file.
TEST_F(CliTest, Img2ImgAndInpaintingFromPngs) {
  REQUIRE_GOLDEN(golden);
  hyrt::pipeline::Image8 pic{45, 37, 3, {}};
  hyrt::pipeline::Image8 mask{20, 20, 3, {}};
  for (int i = 0; i < 45 * 37; ++i)
    pic.pixels.insert(pic.pixels.end(), {static_cast<uint8_t>(i % 251), 40, 200});
  for (int i = 0; i < 400; ++i)
    mask.pixels.insert(mask.pixels.end(), 3, static_cast<uint8_t>(i % 20 < 10 ? 255 : 0));
  hyrt::pipeline::write_png(tmp_ / "pic.png", pic);
  hyrt::pipeline::write_png(tmp_ / "mask.png", mask);
  std::ofstream(tmp_ / "bad.png") << "not a png";
  const std::string base = "generate -m " + (golden / "model").string() +
                           " -p \"a red circle\" -s 7 --steps 4 --sampler ddim ";
  const fs::path out = tmp_ / "i2i.png";
  RunResult r = run_hyrt(base + "--init-image " + (tmp_ / "pic.png").string() +
                         " --strength 0.5 -o " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto png = hyrt::pipeline::read_png(out);
  // Rounded down to a multiple of the VAE factor (2 for the tiny model's two-level VAE).
  EXPECT_EQ(png.image.width, 44);
  EXPECT_EQ(png.image.height, 36);
  std::string params;
  for (const auto& [k, v] : png.text)
    if (k == "parameters") params = v;
  EXPECT_TRUE(contains(params, "Denoising strength: 0.5")) << params;
  const fs::path inp = tmp_ / "inp.png";
  r = run_hyrt(base + "-W 32 -H 32 --init-image " + (tmp_ / "pic.png").string() + " --mask " +
               (tmp_ / "mask.png").string() + " --strength 1 -o " + inp.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(hyrt::pipeline::read_png(inp).image.width, 32);

  r = run_hyrt(base + "--init-image " + (tmp_ / "bad.png").string() + " -o " + out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "--init-image") && contains(r.output, "bad.png")) << r.output;
  r = run_hyrt(base + "--init-image " + (tmp_ / "none.png").string() + " -o " + out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "none.png")) << r.output;
  r = run_hyrt(base + "--init-image " + (tmp_ / "pic.png").string() + " --mask " +
               (tmp_ / "bad.png").string() + " -o " + out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "--mask")) << r.output;
  r = run_hyrt(base + "--mask " + (tmp_ / "mask.png").string() + " -o " + out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "--mask needs --init-image")) << r.output;
  r = run_hyrt(base + "--init-image " + (tmp_ / "pic.png").string() + " --strength 1.5 -o " +
               out.string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "strength")) << r.output;
}

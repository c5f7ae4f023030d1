// models::sdxl::write_random_sgm_checkpoint at tiny size: the file opens as an SGM checkpoint
// of exactly the SDXL architecture, holds the values RandomWeightStream documents for each
// component (through the q/k/v stacking and the transposed projection), and is
// deterministic; and base_configs() counts what diffusers counts. Never writes the real size.
#include "models/sdxl/random_checkpoint.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/config.h"
#include "models/keys.h"
#include "models/sd15/random_weights.h"
#include "models/sdxl/configs.h"
#include "temp_dir_test.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/memory_weights.h"
#include "weights/safetensors.h"

namespace hyrt::models::sdxl {
namespace {
namespace fs = std::filesystem;
using weights::Checkpoint;
using weights::Component;

class SdxlRandomCheckpointTest : public test::TempDirTest {
 protected:
};

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

TEST_F(SdxlRandomCheckpointTest, TinyRoundTripsAsCompleteSgmCheckpoint) {
  const fs::path path = dir_ / "xl.safetensors";
  const ModelConfigs tiny = tiny_configs();
  const RandomCheckpointSummary s = write_random_sgm_checkpoint(path, tiny, 21);
  EXPECT_FALSE(fs::exists(dir_ / "xl.safetensors.tmp"));
  EXPECT_EQ(s.file_bytes, fs::file_size(path));
  const ParameterCounts want = parameter_counts(tiny);
  EXPECT_EQ(s.text_encoder_parameters, want.text_encoder);
  EXPECT_EQ(s.text_encoder_2_parameters, want.text_encoder_2);
  EXPECT_EQ(s.unet_parameters, want.unet);
  EXPECT_EQ(s.vae_parameters, want.vae);
  EXPECT_EQ(s.total_parameters(), want.total());

  auto ck = Checkpoint::open(path);
  EXPECT_EQ(ck->format(), weights::CheckpointFormat::kSgmSingleFile);
  for (Component c : weights::kAllComponents)
    EXPECT_TRUE(ck->has(c)) << weights::component_name(c);
  EXPECT_TRUE(ck->unexpected_keys().empty());
  ASSERT_EQ(ck->ignored_keys().size(), 1u);
  EXPECT_EQ(ck->ignored_keys()[0],
            "conditioner.embedders.0.transformer.text_model.embeddings.position_ids");

  // Every canonical weight, in canonical layout, is add_random_weights' tensor with the
  // documented per-component seed.
  weights::MemoryWeights mem;
  sd15::add_random_weights(expected_text_encoder_tensors(*tiny.text_encoder), 21, DType::kF16, mem);
  sd15::add_random_weights(expected_unet_tensors(*tiny.unet), 22, DType::kF16, mem);
  sd15::add_random_weights(expected_vae_tensors(*tiny.vae), 23, DType::kF16, mem);
  sd15::add_random_weights(
      expected_text_encoder_tensors(*tiny.text_encoder_2, Component::kTextEncoder2), 24,
      DType::kF16, mem);
  size_t compared = 0;
  for (const auto& [name, t] : mem.tensors()) {
    const TensorView v = ck->get(name);
    ASSERT_EQ(v.dtype, DType::kF16) << name;
    ASSERT_EQ(v.shape, t.shape()) << name;
    ASSERT_EQ(v.bytes(), t.bytes()) << name;
    EXPECT_EQ(std::memcmp(v.data, t.data(), t.bytes()), 0) << name;
    ++compared;
  }
  size_t in_file = 0;
  for (Component c : weights::kAllComponents)
    in_file += ck->names(c).size();
  EXPECT_EQ(compared, in_file);

  // The SGM storage quirks really are in the file (not just undone by the reader).
  auto file = weights::SafetensorsFile::open(path);
  const int64_t w2 = tiny.text_encoder_2->hidden_size;
  EXPECT_EQ(
      file->view("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight").shape,
      (Shape{3 * w2, w2}));
  EXPECT_EQ(file->view("conditioner.embedders.1.model.text_projection").shape,
            (Shape{w2, tiny.text_encoder_2->projection_dim}));
  EXPECT_EQ(file->view("first_stage_model.decoder.mid.attn_1.q.weight").shape.rank(), 4);
  const TensorView ids =
      file->view("conditioner.embedders.0.transformer.text_model.embeddings.position_ids");
  ASSERT_EQ(ids.dtype, DType::kS64);
  ASSERT_EQ(ids.shape, (Shape{1, 77}));
  for (int i = 0; i < 77; ++i) {
    int64_t v = -1;
    std::memcpy(&v, static_cast<const char*>(ids.data) + 8 * i, 8);
    EXPECT_EQ(v, i);
  }
  EXPECT_EQ(file->metadata().at("random"), "true");
  EXPECT_EQ(file->metadata().at("seed"), "21");
  EXPECT_NE(file->metadata().at("generator").find("write_random_sgm_checkpoint"),
            std::string::npos);

  // Configs: from the shapes alone the family is SDXL; with the golden tiny folder's
  // config.json files (head counts are invisible in weights) exactly tiny_configs().
  const ModelConfigs from_shapes = load_configs(*ck);
  EXPECT_EQ(model_family(from_shapes), ModelFamily::kSdxl);
  KeyReport report = check_checkpoint_keys(*ck, from_shapes);
  EXPECT_TRUE(report.ok()) << report.missing.size() << " missing, " << report.unexpected.size()
                           << " unexpected, " << report.shape_mismatch.size() << " mismatched";
  const auto golden = test::golden_dir("sdxl-tiny");
  if (!golden || !fs::is_directory(*golden / "model")) {
    GTEST_SKIP() << "golden data not found (../shared/golden/sdxl-tiny): configs from the "
                    "folder not compared";
  }
  const ModelConfigs cfg = load_configs(*ck, *golden / "model");
  EXPECT_EQ(configs_to_json_texts(cfg), configs_to_json_texts(tiny));
  report = check_checkpoint_keys(*ck, cfg);
  EXPECT_EQ(report.missing.size(), 0u);
  EXPECT_EQ(report.shape_mismatch.size(), 0u);
  EXPECT_EQ(report.unexpected.size(), 0u);
}

TEST_F(SdxlRandomCheckpointTest, SameSeedSameBytesOtherSeedOtherBytes) {
  write_random_sgm_checkpoint(dir_ / "a.safetensors", tiny_configs(), 3, DType::kBF16);
  write_random_sgm_checkpoint(dir_ / "b.safetensors", tiny_configs(), 3, DType::kBF16);
  write_random_sgm_checkpoint(dir_ / "c.safetensors", tiny_configs(), 4, DType::kBF16);
  const auto a = read_bytes(dir_ / "a.safetensors");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, read_bytes(dir_ / "b.safetensors"));
  EXPECT_NE(a, read_bytes(dir_ / "c.safetensors"));
}

TEST_F(SdxlRandomCheckpointTest, RejectsIncompleteConfigs) {
  ModelConfigs c = tiny_configs();
  c.text_encoder_2.reset();
  EXPECT_THROW(write_random_sgm_checkpoint(dir_ / "x.safetensors", c, 1), Error);
  c = tiny_configs();
  c.text_encoder_2->projection_dim = 0;
  EXPECT_THROW(write_random_sgm_checkpoint(dir_ / "x.safetensors", c, 1), Error);
  EXPECT_THROW(write_random_sgm_checkpoint(dir_ / "x.safetensors", tiny_configs(), 1, DType::kS8),
               Error);
  EXPECT_FALSE(fs::exists(dir_ / "x.safetensors"));
}

// diffusers' counts for SDXL base (kDiffusersBaseParameterCounts) from the key lists alone:
// no file is written.
TEST(SdxlParameterCounts, BaseMatchesDiffusers) {
  const ParameterCounts n = parameter_counts(base_configs());
  EXPECT_EQ(n.text_encoder, 123'060'480);
  EXPECT_EQ(n.text_encoder_2, 694'659'840);
  EXPECT_EQ(n.unet, 2'567'463'684);
  EXPECT_EQ(n.vae, 83'653'863);
  EXPECT_EQ(n, kDiffusersBaseParameterCounts);
  EXPECT_NO_THROW(check_base_parameter_counts());
}

// ---- the shared writer's placement checks ----

TEST(RandomCheckpointPlacement, InconsistentStacksAreRejected) {
  const fs::path out = fs::temp_directory_path() / "hyrt_randck_placement.safetensors";
  const ExpectedTensor q{"text_encoder_2.q", {4, 4}};
  RandomTensorPlacement p{q, Component::kTextEncoder2, "in_proj", {12, 4}, 0, 3};
  // Parts 1 and 2 never listed.
  EXPECT_THROW(write_random_checkpoint(out, {p}, {}, 1, DType::kF16, "t"), Error);
  // Part listed twice.
  EXPECT_THROW(write_random_checkpoint(out, {p, p}, {}, 1, DType::kF16, "t"), Error);
  // Stored shape that cannot hold the parts.
  RandomTensorPlacement bad = p;
  bad.stored_shape = {8, 4};
  EXPECT_THROW(write_random_checkpoint(out, {bad}, {}, 1, DType::kF16, "t"), Error);
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace hyrt::models::sdxl

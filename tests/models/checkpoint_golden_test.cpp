// The golden tiny SD 1.5 model in both layouts: the LDM single file must map onto exactly
// the diffusers folder's canonical names with identical values, and both must match the
// architecture's expected keys and shapes.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "models/config.h"
#include "models/keys.h"
#include "test_util.h"
#include "weights/checkpoint.h"

namespace hyrt {
namespace {

using models::check_checkpoint_keys;
using models::load_configs;
using weights::Checkpoint;
using weights::Component;

std::set<std::string> all_names(const Checkpoint& ck) {
  std::set<std::string> s;
  for (Component c : weights::kAllComponents)
    for (const auto& n : ck.names(c))
      s.insert(n);
  return s;
}

std::string join(const std::vector<std::string>& v, size_t limit = 20) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < limit; ++i)
    s += "\n  " + v[i];
  if (v.size() > limit) s += "\n  ...";
  return s;
}

class CheckpointGoldenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto g = test::golden_dir();
    if (!g) GTEST_SKIP() << "golden data not found (set HYRT_SHARED_DIR); skipping";
    golden_ = *g;
  }
  std::filesystem::path golden_;
};

TEST_F(CheckpointGoldenTest, LdmAndDiffusersAgree) {
  auto ldm = Checkpoint::open(golden_ / "model-ldm.safetensors");
  auto dif = Checkpoint::open(golden_ / "model");
  EXPECT_EQ(ldm->format(), weights::CheckpointFormat::kLdmSingleFile);
  EXPECT_EQ(dif->format(), weights::CheckpointFormat::kDiffusersFolder);

  // Every LDM tensor maps; the only non-weight is the position_ids buffer.
  EXPECT_TRUE(ldm->unexpected_keys().empty()) << join(ldm->unexpected_keys());
  EXPECT_EQ(
      ldm->ignored_keys(),
      std::vector<std::string>{"cond_stage_model.transformer.text_model.embeddings.position_ids"});
  EXPECT_TRUE(dif->unexpected_keys().empty()) << join(dif->unexpected_keys());

  const auto ldm_names = all_names(*ldm);
  const auto dif_names = all_names(*dif);
  std::vector<std::string> only_ldm, only_dif;
  for (const auto& n : ldm_names)
    if (!dif_names.count(n)) only_ldm.push_back(n);
  for (const auto& n : dif_names)
    if (!ldm_names.count(n)) only_dif.push_back(n);
  EXPECT_TRUE(only_ldm.empty()) << "only in the LDM file:" << join(only_ldm);
  EXPECT_TRUE(only_dif.empty()) << "only in the diffusers folder:" << join(only_dif);
  EXPECT_GT(dif_names.size(), 800u);

  int compared = 0;
  for (const auto& name : dif_names) {
    if (!ldm_names.count(name)) continue;
    TensorView a = ldm->get(name), b = dif->get(name);
    ASSERT_EQ(a.shape, b.shape) << name;
    ASSERT_TRUE(dtype_is_float(a.dtype) && dtype_is_float(b.dtype)) << name;
    Tensor fa = to_f32(a), fb = to_f32(b);
    ASSERT_EQ(std::memcmp(fa.data(), fb.data(), fa.bytes()), 0) << name << " differs";
    ++compared;
  }
  EXPECT_EQ(compared, static_cast<int>(dif_names.size()));
}

TEST_F(CheckpointGoldenTest, DiffusersFolderMatchesArchitecture) {
  auto ck = Checkpoint::open(golden_ / "model");
  for (Component c : weights::kAllComponents)
    EXPECT_EQ(ck->has(c), c != Component::kTextEncoder2) << weights::component_name(c);
  ASSERT_TRUE(ck->tokenizer_dir());
  auto cfg = load_configs(*ck);
  ASSERT_TRUE(cfg.text_encoder && cfg.unet && cfg.vae);
  EXPECT_EQ(cfg.text_encoder->num_attention_heads, 4);
  EXPECT_EQ(cfg.unet->block_out_channels, (std::vector<int>{32, 64, 64, 64}));
  EXPECT_EQ(cfg.unet->num_attention_heads, (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(cfg.vae->block_out_channels, (std::vector<int>{32, 64}));
  auto report = check_checkpoint_keys(*ck, cfg);
  EXPECT_TRUE(report.missing.empty()) << join(report.missing);
  EXPECT_TRUE(report.shape_mismatch.empty()) << join(report.shape_mismatch);
  EXPECT_TRUE(report.unexpected.empty()) << join(report.unexpected);
}

TEST_F(CheckpointGoldenTest, LdmFileMatchesArchitectureAndInfersSizes) {
  auto ck = Checkpoint::open(golden_ / "model-ldm.safetensors");
  auto dif = Checkpoint::open(golden_ / "model");
  const auto from_shapes = load_configs(*ck);
  const auto from_json = load_configs(*dif);
  ASSERT_TRUE(from_shapes.text_encoder && from_shapes.unet && from_shapes.vae);

  // Sizes read off the shapes agree with the folder's config.json files.
  const auto& u = *from_shapes.unet;
  const auto& uj = *from_json.unet;
  EXPECT_EQ(u.block_out_channels, uj.block_out_channels);
  EXPECT_EQ(u.down_block_types, uj.down_block_types);
  EXPECT_EQ(u.up_block_types, uj.up_block_types);
  EXPECT_EQ(u.layers_per_block, uj.layers_per_block);
  EXPECT_EQ(u.in_channels, uj.in_channels);
  EXPECT_EQ(u.out_channels, uj.out_channels);
  EXPECT_EQ(u.cross_attention_dim, uj.cross_attention_dim);
  EXPECT_EQ(u.num_attention_heads, uj.num_attention_heads);
  EXPECT_EQ(u.use_linear_projection, uj.use_linear_projection);
  EXPECT_EQ(u.transformer_layers_per_block, uj.transformer_layers_per_block);
  const auto& t = *from_shapes.text_encoder;
  const auto& tj = *from_json.text_encoder;
  EXPECT_EQ(t.hidden_size, tj.hidden_size);
  EXPECT_EQ(t.num_hidden_layers, tj.num_hidden_layers);
  EXPECT_EQ(t.intermediate_size, tj.intermediate_size);
  EXPECT_EQ(t.vocab_size, tj.vocab_size);
  EXPECT_EQ(t.max_position_embeddings, tj.max_position_embeddings);
  const auto& v = *from_shapes.vae;
  const auto& vj = *from_json.vae;
  EXPECT_EQ(v.block_out_channels, vj.block_out_channels);
  EXPECT_EQ(v.layers_per_block, vj.layers_per_block);
  EXPECT_EQ(v.latent_channels, vj.latent_channels);
  EXPECT_EQ(v.in_channels, vj.in_channels);
  EXPECT_EQ(v.out_channels, vj.out_channels);

  // The 4 text-encoder heads are invisible in the shapes: the config folder supplies them.
  auto with_dir = load_configs(*ck, golden_ / "model");
  EXPECT_EQ(with_dir.text_encoder->num_attention_heads, 4);

  auto report = check_checkpoint_keys(*ck, from_shapes);
  EXPECT_TRUE(report.missing.empty()) << join(report.missing);
  EXPECT_TRUE(report.shape_mismatch.empty()) << join(report.shape_mismatch);
  EXPECT_TRUE(report.unexpected.empty()) << join(report.unexpected);
}

}  // namespace
}  // namespace hyrt

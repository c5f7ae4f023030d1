// Checkpoint layout detection, key mapping variations and config parsing on small
// synthetic models written to a temporary folder.
#include "weights/checkpoint.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/config.h"
#include "models/keys.h"
#include "temp_dir_test.h"
#include "test_util.h"
#include "weights/ldm_names.h"

namespace hyrt::weights {
namespace {
namespace fs = std::filesystem;

class CheckpointTest : public test::TempDirTest {
 protected:
  // Writes tensors of the given shapes (f16 zeros) to `path`.
  void write(const fs::path& path, const std::vector<std::pair<std::string, Shape>>& specs,
             DType dtype = DType::kF16) {
    fs::create_directories(path.parent_path());
    std::vector<Tensor> keep;
    keep.reserve(specs.size());
    std::vector<std::pair<std::string, TensorView>> views;
    for (const auto& [name, shape] : specs) {
      keep.push_back(Tensor::zeros(dtype, shape));
      views.emplace_back(name, keep.back().view());
    }
    write_safetensors(path, views);
  }
  void write_text(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
};

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST_F(CheckpointTest, DiffusersFolderMissingUNetIsReported) {
  write_text(dir_ / "model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
  // Recent transformers: no `text_model.` prefix. Old diffusers VAE attention names.
  write(dir_ / "text_encoder" / "model.safetensors",
        {{"embeddings.token_embedding.weight", {10, 8}}, {"final_layer_norm.weight", {8}}});
  write_text(dir_ / "text_encoder" / "config.json",
             R"({"hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10,
                  "bos_token_id": 0, "eos_token_id": 1})");
  write(dir_ / "vae" / "diffusion_pytorch_model.fp16.safetensors",
        {{"decoder.mid_block.attentions.0.query.weight", {4, 4}},
         {"decoder.mid_block.attentions.0.proj_attn.weight", {4, 4, 1, 1}},
         {"decoder.mid_block.attentions.0.key.bias", {4}}});
  write_text(dir_ / "vae" / "config.json", R"({"block_out_channels": [4], "norm_num_groups": 4})");
  fs::create_directories(dir_ / "tokenizer");

  auto ck = Checkpoint::open(dir_);
  EXPECT_EQ(ck->format(), CheckpointFormat::kDiffusersFolder);
  EXPECT_TRUE(ck->has(Component::kTextEncoder));
  EXPECT_TRUE(ck->has(Component::kVae));
  EXPECT_FALSE(ck->has(Component::kUNet));
  EXPECT_TRUE(ck->names(Component::kUNet).empty());
  EXPECT_TRUE(contains(ck->notes(), "unet/: missing"));
  EXPECT_TRUE(ck->contains("text_encoder.text_model.embeddings.token_embedding.weight"));
  EXPECT_TRUE(ck->contains("text_encoder.text_model.final_layer_norm.weight"));
  EXPECT_TRUE(ck->contains("vae.decoder.mid_block.attentions.0.to_q.weight"));
  EXPECT_TRUE(ck->contains("vae.decoder.mid_block.attentions.0.to_k.bias"));
  EXPECT_EQ(ck->get("vae.decoder.mid_block.attentions.0.to_out.0.weight").shape, (Shape{4, 4}));
  EXPECT_EQ(ck->info("vae.decoder.mid_block.attentions.0.to_out.0.weight").tensor->shape,
            (Shape{4, 4, 1, 1}));
  ASSERT_TRUE(ck->tokenizer_dir());
  EXPECT_EQ(*ck->tokenizer_dir(), dir_ / "tokenizer");
  ASSERT_TRUE(ck->config_json(Component::kTextEncoder));
  ASSERT_TRUE(ck->config_json(Component::kVae));
  EXPECT_FALSE(ck->config_json(Component::kUNet));
  EXPECT_EQ(models::clip_text_config_from_checkpoint(*ck).num_attention_heads, 2);
  try {
    models::unet_config_from_checkpoint(*ck);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
  auto cfgs = models::load_configs(*ck);
  EXPECT_TRUE(cfgs.text_encoder);
  EXPECT_FALSE(cfgs.unet);
  ASSERT_TRUE(cfgs.vae);
  EXPECT_EQ(cfgs.vae->block_out_channels, std::vector<int>{4});
  try {
    ck->get("unet.conv_in.weight");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("unet.conv_in.weight"), std::string::npos);
  }
}

// A file whose data starts one byte later (its header padded by one more space: legal JSON,
// and safetensors does not require aligned data) loads the same weights, each served at an
// address aligned for its type (a copy where the file's is not).
TEST_F(CheckpointTest, MisalignedTensorsAreServedAligned) {
  const auto golden = test::golden_dir();
  if (!golden) GTEST_SKIP() << "no ../shared/golden/sd15-tiny";
  const fs::path original = *golden / "model-ldm.safetensors";
  std::ifstream in(original, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 8u);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  bytes.insert(bytes.begin() + 8 + static_cast<int64_t>(n), ' ');
  ++n;
  std::memcpy(bytes.data(), &n, 8);
  const fs::path shifted = dir_ / "shifted.safetensors";
  std::ofstream(shifted, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));

  const auto a = Checkpoint::open(original);
  const auto b = Checkpoint::open(shifted);
  size_t compared = 0, were_misaligned = 0;
  for (Component c : kAllComponents) {
    ASSERT_EQ(a->names(c), b->names(c));
    for (const std::string& name : a->names(c)) {
      const TensorView x = a->get(name), y = b->get(name);
      ASSERT_EQ(x.dtype, y.dtype) << name;
      ASSERT_EQ(x.shape, y.shape) << name;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(y.data) % dtype_size(y.dtype), 0u) << name;
      EXPECT_EQ(std::memcmp(x.data, y.data, x.bytes()), 0) << name;
      if (reinterpret_cast<uintptr_t>(x.data) % 2 == 0 && dtype_size(x.dtype) > 1) {
        ++were_misaligned;        // one byte later in the file: the shifted one needed a copy
        b->release_stored(name);  // a copy has no file pages: a no-op, and the view stays
        EXPECT_EQ(std::memcmp(x.data, b->get(name).data, x.bytes()), 0) << name;
      }
      ++compared;
    }
  }
  EXPECT_GT(compared, 100u);
  EXPECT_GT(were_misaligned, 100u);
}

TEST_F(CheckpointTest, FolderThatIsNeitherIsAClearError) {
  write_text(dir_ / "readme.txt", "hello");
  try {
    Checkpoint::open(dir_);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find(dir_.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("not a model"), std::string::npos);
  }
}

TEST_F(CheckpointTest, MissingPathIsNotFound) {
  try {
    Checkpoint::open(dir_ / "nope");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
}

TEST_F(CheckpointTest, PickleIsUnsupported) {
  write_text(dir_ / "model.ckpt", "PK...");
  try {
    Checkpoint::open(dir_ / "model.ckpt");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported);
  }
}

TEST_F(CheckpointTest, SafetensorsThatIsNotSdIsAClearError) {
  write(dir_ / "other.safetensors", {{"encoder.weight", {2}}});
  try {
    Checkpoint::open(dir_ / "other.safetensors");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("not a Stable Diffusion checkpoint"), std::string::npos);
  }
}

TEST_F(CheckpointTest, BadConfigJsonNamesTheFile) {
  write(dir_ / "unet" / "diffusion_pytorch_model.safetensors", {{"conv_in.weight", {4, 4, 3, 3}}});
  write_text(dir_ / "unet" / "config.json", "{ not json");
  try {
    Checkpoint::open(dir_);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos);
  }
}

TEST_F(CheckpointTest, LdmExtrasAreIgnoredOrUnexpected) {
  write(dir_ / "m.safetensors",
        {{"betas", {1000}},
         {"alphas_cumprod", {1000}},
         {"model_ema.decay", {}},
         {"model_ema.diffusion_modelinput_blocks00weight", {2}},
         {"cond_stage_model.transformer.embeddings.position_ids", {1, 77}},
         {"cond_stage_model.transformer.embeddings.token_embedding.weight", {10, 8}},
         {"first_stage_model.decoder.mid.attn_1.q.weight", {4, 4, 1, 1}},
         {"first_stage_model.decoder.up.0.block.0.conv1.weight", {4, 4, 3, 3}},
         {"first_stage_model.decoder.up.1.upsample.conv.weight", {4, 4, 3, 3}},
         {"model.diffusion_model.input_blocks.0.0.weight", {4, 4, 3, 3}},
         {"model.diffusion_model.something_new.weight", {3}}},
        DType::kF32);
  auto ck = Checkpoint::open(dir_ / "m.safetensors");
  EXPECT_EQ(ck->format(), CheckpointFormat::kLdmSingleFile);
  EXPECT_EQ(ck->ignored_keys().size(), 5u);
  EXPECT_TRUE(contains(ck->ignored_keys(), "cond_stage_model.transformer.embeddings.position_ids"));
  EXPECT_EQ(ck->unexpected_keys(),
            std::vector<std::string>{"model.diffusion_model.something_new.weight"});
  EXPECT_TRUE(ck->contains("text_encoder.text_model.embeddings.token_embedding.weight"));
  EXPECT_EQ(ck->get("vae.decoder.mid_block.attentions.0.to_q.weight").shape, (Shape{4, 4}));
  // Two decoder levels: LDM up.1 is diffusers up_blocks.0.
  EXPECT_TRUE(ck->contains("vae.decoder.up_blocks.1.resnets.0.conv1.weight"));
  EXPECT_TRUE(ck->contains("vae.decoder.up_blocks.0.upsamplers.0.conv.weight"));
  EXPECT_TRUE(ck->contains("unet.conv_in.weight"));
  EXPECT_EQ(ck->info("unet.conv_in.weight").dtype, DType::kF32);
  EXPECT_FALSE(ck->tokenizer_dir());
}

TEST(LdmKeyMapTest, DerivesLayersPerBlock) {
  // One layer per level: input_blocks 1 (res), 2 (op), 3 (res+attn), no op after the last.
  std::vector<std::string> keys = {
      "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
      "model.diffusion_model.input_blocks.2.0.op.weight",
      "model.diffusion_model.input_blocks.3.0.in_layers.2.weight",
      "model.diffusion_model.input_blocks.3.1.proj_in.weight",
      "model.diffusion_model.output_blocks.1.0.skip_connection.weight",
      "model.diffusion_model.output_blocks.1.1.conv.weight",
      "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.attn1.to_q.weight",
      "model.diffusion_model.middle_block.2.emb_layers.1.bias",
  };
  LdmKeyMap map(keys);
  EXPECT_EQ(map.unet_layers_per_block(), 1);
  auto canon = [&](const std::string& k) { return map.map(k).canonical; };
  EXPECT_EQ(canon(keys[0]), "unet.down_blocks.0.resnets.0.norm1.weight");
  EXPECT_EQ(canon(keys[1]), "unet.down_blocks.0.downsamplers.0.conv.weight");
  EXPECT_EQ(canon(keys[2]), "unet.down_blocks.1.resnets.0.conv1.weight");
  EXPECT_EQ(canon(keys[3]), "unet.down_blocks.1.attentions.0.proj_in.weight");
  EXPECT_EQ(canon(keys[4]), "unet.up_blocks.0.resnets.1.conv_shortcut.weight");
  EXPECT_EQ(canon(keys[5]), "unet.up_blocks.0.upsamplers.0.conv.weight");
  EXPECT_EQ(canon(keys[6]), "unet.up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_q.weight");
  EXPECT_EQ(canon(keys[7]), "unet.mid_block.resnets.1.time_emb_proj.bias");
  EXPECT_EQ(map.map("model.diffusion_model.input_blocks.x.0.op.weight").kind,
            KeyMapping::Kind::kUnexpected);
}

}  // namespace
}  // namespace hyrt::weights

namespace hyrt::models::sd15 {
namespace {

TEST(Sd15ConfigTest, AttentionHeadDimIsTheHeadCount) {
  auto c = parse_unet_config(nlohmann::json::parse(
      R"({"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
          "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 8,
          "num_attention_heads": null, "cross_attention_dim": 64})"));
  EXPECT_EQ(c.num_attention_heads, (std::vector<int>{8, 8}));
  EXPECT_EQ(c.cross_attention_dim, 64);
  auto l = parse_unet_config(nlohmann::json::parse(
      R"({"block_out_channels": [32, 64], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
          "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": [2, 4],
          "num_attention_heads": [4, 8]})"));
  EXPECT_EQ(l.num_attention_heads, (std::vector<int>{4, 8}));  // num_attention_heads wins
}

TEST(Sd15ConfigTest, WrongTypeNamesFileAndField) {
  try {
    parse_vae_config(nlohmann::json::parse(R"({"block_out_channels": "big"})"),
                     "x/vae/config.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("x/vae/config.json"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("block_out_channels"), std::string::npos);
  }
  try {
    parse_unet_config(nlohmann::json::parse(R"({"attention_head_dim": [8, 8]})"), "u.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("attention_head_dim"), std::string::npos);
  }
  EXPECT_THROW(parse_clip_text_config(nlohmann::json::parse(R"({"hidden_size": 1.5})")), Error);
  EXPECT_THROW(parse_clip_text_config(nlohmann::json::parse(R"([1])")), Error);
}

}  // namespace
}  // namespace hyrt::models::sd15

namespace hyrt::models::sd15 {
namespace {

int64_t count_params(const std::vector<ExpectedTensor>& v) {
  int64_t n = 0;
  for (const auto& t : v)
    n += t.shape.numel();
  return n;
}

// The full-size SD 1.5 defaults reproduce the real checkpoint's tensor and parameter counts
// (diffusers runwayml/stable-diffusion-v1-5: UNet 686 tensors / 859,520,964 parameters,
// VAE 248 / 83,653,863, CLIP text model 196 / 123,060,480).
TEST(Sd15KeysTest, DefaultsMatchRealSd15) {
  auto unet = expected_unet_tensors(UNetConfig{});
  auto vae = expected_vae_tensors(VaeConfig{});
  auto clip = expected_text_encoder_tensors(ClipTextConfig{});
  EXPECT_EQ(unet.size(), 686u);
  EXPECT_EQ(count_params(unet), 859520964);
  EXPECT_EQ(vae.size(), 248u);
  EXPECT_EQ(count_params(vae), 83653863);
  EXPECT_EQ(clip.size(), 196u);
  EXPECT_EQ(count_params(clip), 123060480);
  auto dec = expected_vae_tensors(VaeConfig{}, /*decoder_only=*/true);
  EXPECT_LT(dec.size(), vae.size());
  for (const auto& t : dec)
    EXPECT_EQ(t.name.rfind("vae.encoder.", 0), std::string::npos) << t.name;
}

}  // namespace
}  // namespace hyrt::models::sd15

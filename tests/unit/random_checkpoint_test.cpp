// models::sd15::write_random_ldm_checkpoint at tiny size: the file opens as an LDM
// checkpoint of exactly the SD 1.5 architecture, is deterministic per seed and holds the
// values RandomWeightStream documents; and weights::SafetensorsWriter's streaming contract.
#include "models/sd15/random_checkpoint.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "models/config.h"
#include "models/keys.h"
#include "models/sd15/random_weights.h"
#include "temp_dir_test.h"
#include "weights/checkpoint.h"
#include "weights/memory_weights.h"
#include "weights/safetensors.h"

namespace hyrt::models::sd15 {
namespace {
namespace fs = std::filesystem;
using weights::Checkpoint;
using weights::Component;

class RandomCheckpointTest : public test::TempDirTest {
 protected:
  RandomCheckpointSummary write_tiny(const fs::path& path, uint64_t seed,
                                     DType dtype = DType::kF16) {
    return write_random_ldm_checkpoint(path, tiny_clip_text_config(), tiny_unet_config(),
                                       tiny_vae_config(), seed, dtype);
  }
};

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

int64_t numel_sum(const std::vector<ExpectedTensor>& v) {
  int64_t n = 0;
  for (const auto& e : v)
    n += e.shape.numel();
  return n;
}

TEST_F(RandomCheckpointTest, TinyOpensAsCompleteLdmCheckpoint) {
  const fs::path path = dir_ / "tiny.safetensors";
  const ClipTextConfig clip = tiny_clip_text_config();
  const UNetConfig unet = tiny_unet_config();
  const VaeConfig vae = tiny_vae_config();
  const auto summary = write_tiny(path, 7);
  EXPECT_FALSE(fs::exists(dir_ / "tiny.safetensors.tmp"));
  EXPECT_EQ(summary.file_bytes, fs::file_size(path));
  EXPECT_EQ(summary.text_encoder_parameters, numel_sum(expected_text_encoder_tensors(clip)));
  EXPECT_EQ(summary.unet_parameters, numel_sum(expected_unet_tensors(unet)));
  EXPECT_EQ(summary.vae_parameters, numel_sum(expected_vae_tensors(vae)));

  auto ck = Checkpoint::open(path);
  EXPECT_EQ(ck->format(), weights::CheckpointFormat::kLdmSingleFile);
  for (Component c : weights::kAllComponents)
    EXPECT_EQ(ck->has(c), c != Component::kTextEncoder2) << weights::component_name(c);
  EXPECT_TRUE(ck->unexpected_keys().empty());
  ASSERT_EQ(ck->ignored_keys().size(), 1u);
  EXPECT_EQ(ck->ignored_keys()[0],
            "cond_stage_model.transformer.text_model.embeddings.position_ids");
  EXPECT_EQ(ck->names(Component::kTextEncoder).size() + ck->names(Component::kUNet).size() +
                ck->names(Component::kVae).size() + 1,
            summary.tensors);

  const ModelConfigs cfg = load_configs(*ck);
  ASSERT_TRUE(cfg.text_encoder && cfg.unet && cfg.vae);
  // Sizes come back from the shapes (head counts are invisible in an LDM file).
  EXPECT_EQ(cfg.text_encoder->vocab_size, clip.vocab_size);
  EXPECT_EQ(cfg.text_encoder->hidden_size, clip.hidden_size);
  EXPECT_EQ(cfg.text_encoder->intermediate_size, clip.intermediate_size);
  EXPECT_EQ(cfg.text_encoder->num_hidden_layers, clip.num_hidden_layers);
  EXPECT_EQ(cfg.text_encoder->max_position_embeddings, clip.max_position_embeddings);
  EXPECT_EQ(cfg.unet->block_out_channels, unet.block_out_channels);
  EXPECT_EQ(cfg.unet->down_block_types, unet.down_block_types);
  EXPECT_EQ(cfg.unet->up_block_types, unet.up_block_types);
  EXPECT_EQ(cfg.unet->layers_per_block, unet.layers_per_block);
  EXPECT_EQ(cfg.unet->cross_attention_dim, unet.cross_attention_dim);
  EXPECT_EQ(cfg.unet->in_channels, unet.in_channels);
  EXPECT_EQ(cfg.unet->out_channels, unet.out_channels);
  EXPECT_EQ(cfg.vae->block_out_channels, vae.block_out_channels);
  EXPECT_EQ(cfg.vae->layers_per_block, vae.layers_per_block);
  EXPECT_EQ(cfg.vae->latent_channels, vae.latent_channels);

  const KeyReport report = check_checkpoint_keys(*ck, cfg);
  EXPECT_EQ(report.missing.size(), 0u);
  EXPECT_EQ(report.shape_mismatch.size(), 0u);
  EXPECT_EQ(report.unexpected.size(), 0u);

  // LDM storage quirks and the metadata.
  const auto& q = ck->info("vae.decoder.mid_block.attentions.0.to_q.weight");
  EXPECT_EQ(q.shape, (Shape{64, 64}));
  EXPECT_EQ(q.tensor->shape, (Shape{64, 64, 1, 1}));
  EXPECT_EQ(q.tensor->name, "first_stage_model.decoder.mid.attn_1.q.weight");
  auto file = weights::SafetensorsFile::open(path);
  TensorView ids = file->view("cond_stage_model.transformer.text_model.embeddings.position_ids");
  ASSERT_EQ(ids.dtype, DType::kS64);
  ASSERT_EQ(ids.shape, (Shape{1, 77}));
  for (int i = 0; i < 77; ++i) {
    int64_t v = -1;
    std::memcpy(&v, static_cast<const char*>(ids.data) + 8 * i, 8);
    EXPECT_EQ(v, i);
  }
  EXPECT_EQ(file->metadata().at("random"), "true");
  EXPECT_EQ(file->metadata().at("seed"), "7");
  EXPECT_EQ(file->metadata().at("dtype"), "f16");
  EXPECT_NE(file->metadata().at("generator").find("write_random_ldm_checkpoint"),
            std::string::npos);
}

TEST_F(RandomCheckpointTest, ValuesAreThoseOfAddRandomWeights) {
  const fs::path path = dir_ / "v.safetensors";
  write_tiny(path, 11);
  auto ck = Checkpoint::open(path);
  // Documented seeds: text encoder `seed`, UNet `seed + 1`, VAE `seed + 2`.
  weights::MemoryWeights mem;
  add_random_weights(expected_text_encoder_tensors(tiny_clip_text_config()), 11, DType::kF16, mem);
  add_random_weights(expected_unet_tensors(tiny_unet_config()), 12, DType::kF16, mem);
  add_random_weights(expected_vae_tensors(tiny_vae_config()), 13, DType::kF16, mem);
  size_t compared = 0;
  for (const auto& [name, t] : mem.tensors()) {
    const TensorView v = ck->get(name);
    ASSERT_EQ(v.shape, t.shape()) << name;
    ASSERT_EQ(v.bytes(), t.bytes()) << name;
    EXPECT_EQ(std::memcmp(v.data, t.data(), t.bytes()), 0) << name;
    ++compared;
  }
  EXPECT_EQ(compared, ck->names(Component::kTextEncoder).size() +
                          ck->names(Component::kUNet).size() + ck->names(Component::kVae).size());
}

TEST_F(RandomCheckpointTest, SameSeedSameBytesOtherSeedOtherBytes) {
  write_tiny(dir_ / "a.safetensors", 3);
  write_tiny(dir_ / "b.safetensors", 3);
  write_tiny(dir_ / "c.safetensors", 4);
  const auto a = read_bytes(dir_ / "a.safetensors");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, read_bytes(dir_ / "b.safetensors"));
  const auto c = read_bytes(dir_ / "c.safetensors");
  EXPECT_EQ(a.size(), c.size());  // "seed": "3" vs "4": same header length
  EXPECT_NE(a, c);
  // Not only the metadata differs: the weights do.
  auto ca = Checkpoint::open(dir_ / "a.safetensors");
  auto cc = Checkpoint::open(dir_ / "c.safetensors");
  const char* name = "unet.conv_in.weight";
  EXPECT_NE(std::memcmp(ca->get(name).data, cc->get(name).data, ca->get(name).bytes()), 0);
}

TEST_F(RandomCheckpointTest, DTypeAsAskedAndValuesFinite) {
  for (DType dtype : {DType::kF16, DType::kF32, DType::kBF16}) {
    const fs::path path = dir_ / (std::string(dtype_name(dtype)) + ".safetensors");
    write_tiny(path, 5, dtype);
    auto ck = Checkpoint::open(path);
    std::vector<float> f;
    for (Component c : weights::kAllComponents)
      for (const auto& name : ck->names(c)) {
        const TensorView v = ck->get(name);
        ASSERT_EQ(v.dtype, dtype) << name;
        f.resize(static_cast<size_t>(v.shape.numel()));
        convert_to_f32(dtype, v.data, f.data(), f.size());
        bool finite = true, nonzero = false;
        for (float x : f) {
          finite = finite && std::isfinite(x);
          nonzero = nonzero || x != 0.0f;
        }
        EXPECT_TRUE(finite) << dtype_name(dtype) << " " << name;
        EXPECT_TRUE(nonzero) << dtype_name(dtype) << " " << name;
      }
  }
}

TEST_F(RandomCheckpointTest, RejectsNonFloatDTypeAndUnwritablePath) {
  EXPECT_THROW(write_tiny(dir_ / "x.safetensors", 1, DType::kS8), Error);
  const fs::path bad = dir_ / "no" / "such" / "x.safetensors";
  try {
    write_tiny(bad, 1);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(bad));
}

TEST_F(RandomCheckpointTest, CopiesTokenizerBesideTheFile) {
  const fs::path src = dir_ / "tok";
  fs::create_directories(src);
  std::ofstream(src / "vocab.json") << "{\"a</w>\": 0}";
  std::ofstream(src / "merges.txt") << "#version: 0.2\n";
  const fs::path out = dir_ / "models" / "m.safetensors";
  fs::create_directories(out.parent_path());
  const fs::path dest = copy_tokenizer_beside(src, out);
  EXPECT_EQ(dest, dir_ / "models" / "tokenizer");
  EXPECT_TRUE(fs::is_regular_file(dest / "vocab.json"));
  EXPECT_TRUE(fs::is_regular_file(dest / "merges.txt"));
  EXPECT_FALSE(fs::exists(dest / "tokenizer_config.json"));  // optional, absent at the source
  std::ofstream(src / "tokenizer_config.json") << "{}";
  copy_tokenizer_beside(src, out);  // again: replaces
  EXPECT_TRUE(fs::is_regular_file(dest / "tokenizer_config.json"));

  fs::remove(src / "merges.txt");
  try {
    copy_tokenizer_beside(src, out);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("merges.txt"), std::string::npos);
  }
}

// ---- SafetensorsWriter ----

class SafetensorsWriterTest : public RandomCheckpointTest {};

TEST_F(SafetensorsWriterTest, AnyOrderMatchesWriteSafetensors) {
  Tensor a(DType::kF32, {3});
  Tensor b(DType::kF16, {1, 5});
  Tensor e(DType::kS64, {0});
  for (int i = 0; i < 3; ++i)
    a.as<float>()[i] = 1.5f * i;
  for (int i = 0; i < 5; ++i)
    b.as<uint16_t>()[i] = static_cast<uint16_t>(0x3c00 + i);
  const std::map<std::string, std::string> meta = {{"k", "v"}};
  weights::write_safetensors(dir_ / "ref.safetensors",
                             {{"a", a.view()}, {"b", b.view()}, {"e", e.view()}}, meta);
  {
    weights::SafetensorsWriter w(
        dir_ / "w.safetensors",
        {{"a", DType::kF32, {3}}, {"b", DType::kF16, {1, 5}}, {"e", DType::kS64, {0}}}, meta);
    EXPECT_EQ(w.file_size(), fs::file_size(dir_ / "ref.safetensors"));
    w.write("b", b.data());
    w.write("e", nullptr);
    EXPECT_FALSE(fs::exists(dir_ / "w.safetensors"));  // only the temporary so far
    w.write("a", a.data());
    EXPECT_EQ(w.bytes_written(), 12u + 10u);
    w.finish();
  }
  EXPECT_EQ(read_bytes(dir_ / "w.safetensors"), read_bytes(dir_ / "ref.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "w.safetensors.tmp"));
}

TEST_F(SafetensorsWriterTest, MisuseIsRejectedAndUnfinishedLeavesNothing) {
  const fs::path path = dir_ / "m.safetensors";
  float x[2] = {1, 2};
  {
    weights::SafetensorsWriter w(path, {{"x", DType::kF32, {2}}, {"y", DType::kF32, {2}}});
    EXPECT_TRUE(fs::exists(dir_ / "m.safetensors.tmp"));
    w.write("x", x);
    EXPECT_THROW(w.write("x", x), Error);  // twice
    EXPECT_THROW(w.write("z", x), Error);  // undeclared
    try {
      w.finish();
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("'y'"), std::string::npos) << e.what();
    }
  }  // destroyed unfinished
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(dir_ / "m.safetensors.tmp"));
  auto duplicate = [&] {
    weights::SafetensorsWriter w(path, {{"x", DType::kF32, {2}}, {"x", DType::kF32, {1}}});
  };
  EXPECT_THROW(duplicate(), Error);
  EXPECT_FALSE(fs::exists(dir_ / "m.safetensors.tmp"));
}

}  // namespace
}  // namespace hyrt::models::sd15

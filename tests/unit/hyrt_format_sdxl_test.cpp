// hyrt files of four components (weights/hyrt_format.h, format "hyrt-sdxl"): a small
// synthetic SDXL-shaped folder written and read back (weights, configs, both tokenizers,
// model_index), three-component files still read as before, the new malformed-file rules,
// and — where ../shared/golden exists — the golden sdxl-tiny SGM file quantized.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "temp_dir_test.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/hyrt_format.h"

namespace hyrt::weights {
namespace {
namespace fs = std::filesystem;

class HyrtSdxlTest : public test::TempDirTest {
 protected:
  void write(const fs::path& path, const std::vector<std::pair<std::string, Shape>>& specs,
             uint64_t seed) {
    fs::create_directories(path.parent_path());
    std::vector<Tensor> keep;
    keep.reserve(specs.size());
    std::vector<std::pair<std::string, TensorView>> views;
    for (const auto& [name, shape] : specs) {
      keep.push_back(test::random_tensor(shape, seed++));
      views.emplace_back(name, keep.back().view());
    }
    write_safetensors(path, views);
  }
  void write_text(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  // An SDXL-shaped diffusers folder with a handful of weights per component.
  fs::path write_folder() {
    const fs::path m = dir_ / "model";
    write_text(
        m / "model_index.json",
        R"({"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true})");
    write(m / "text_encoder" / "model.safetensors",
          {{"text_model.embeddings.token_embedding.weight", {16, 8}},
           {"text_model.encoder.layers.0.self_attn.q_proj.weight", {8, 8}}},
          1);
    write(m / "text_encoder_2" / "model.safetensors",
          {{"text_model.embeddings.token_embedding.weight", {16, 12}},
           {"text_model.encoder.layers.0.self_attn.k_proj.weight", {12, 12}},
           {"text_model.final_layer_norm.weight", {12}},
           {"text_projection.weight", {6, 12}}},
          10);
    write(m / "unet" / "diffusion_pytorch_model.safetensors",
          {{"add_embedding.linear_1.weight", {16, 18}},
           {"down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight", {8, 20}},
           {"conv_in.bias", {8}}},
          20);
    write(m / "vae" / "diffusion_pytorch_model.safetensors",
          {{"decoder.conv_in.weight", {8, 4, 3, 3}}}, 30);
    for (const char* c : {"text_encoder", "text_encoder_2", "unet", "vae"})
      write_text(m / c / "config.json", std::string(R"({"which": ")") + c + "\"}");
    write_text(m / "tokenizer" / "vocab.json", R"({"a</w>": 0})");
    write_text(m / "tokenizer" / "merges.txt", "#version: 0.2\n");
    write_text(m / "tokenizer_2" / "vocab.json", R"({"!": 0})");
    write_text(m / "tokenizer_2" / "merges.txt", "#version: 0.2\na b\n");
    write_text(m / "tokenizer_2" / "tokenizer_config.json", R"({"pad_token": "!"})");
    write_text(m / "scheduler" / "scheduler_config.json",
               R"({"_class_name": "EulerDiscreteScheduler"})");
    return m;
  }
  static HyrtWriteOptions options_for(const Checkpoint& ck) {
    HyrtWriteOptions o;
    for (Component c : kAllComponents)
      if (auto j = ck.config_json(c)) o.configs[static_cast<size_t>(c)] = j->dump();
    o.scheduler_config = ck.scheduler_config_text();
    o.tokenizer = ck.tokenizer_files();
    o.tokenizer_2 = ck.tokenizer_files(Component::kTextEncoder2);
    if (auto mi = ck.model_index()) o.model_index = mi->dump();
    return o;
  }
};

TEST_F(HyrtSdxlTest, FourComponentsRoundTrip) {
  const auto src = Checkpoint::open(write_folder());
  ASSERT_TRUE(src->has(Component::kTextEncoder2));
  HyrtWriteOptions o = options_for(*src);
  o.policy.keep = {"*"};  // every weight kept as stored: exact comparisons
  const fs::path out = dir_ / "sdxl.hyrt.safetensors";
  const HyrtWriteReport report = write_hyrt_file(*src, out, o);
  EXPECT_EQ(report.components[static_cast<size_t>(Component::kTextEncoder2)].kept, 4);

  const auto q = Checkpoint::open(out);
  EXPECT_EQ(q->format(), CheckpointFormat::kHyrtFile);
  EXPECT_EQ(q->metadata().at("format"), kHyrtFormatSdxl);
  EXPECT_EQ(q->metadata().at("format_version"), kHyrtFormatVersion);
  EXPECT_TRUE(q->unexpected_keys().empty());
  for (Component c : kAllComponents) {
    SCOPED_TRACE(component_name(c));
    EXPECT_TRUE(q->has(c));
    EXPECT_EQ(q->names(c), src->names(c));
    for (const auto& n : q->names(c)) {
      const TensorView a = src->get(n), b = q->get(n);
      ASSERT_EQ(a.dtype, b.dtype) << n;
      ASSERT_EQ(a.shape, b.shape) << n;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.bytes()), 0) << n;
    }
    ASSERT_TRUE(q->config_json(c));
    EXPECT_EQ(*q->config_json(c), *src->config_json(c));
    EXPECT_EQ(q->config_path(c), out);
  }
  for (Component c : {Component::kTextEncoder, Component::kTextEncoder2}) {
    const auto a = src->tokenizer_files(c), b = q->tokenizer_files(c);
    ASSERT_TRUE(a && b) << component_name(c);
    EXPECT_EQ(a->vocab_json, b->vocab_json);
    EXPECT_EQ(a->merges_txt, b->merges_txt);
    EXPECT_EQ(a->tokenizer_config_json, b->tokenizer_config_json);
  }
  EXPECT_NE(q->tokenizer_files()->vocab_json,
            q->tokenizer_files(Component::kTextEncoder2)->vocab_json);
  EXPECT_FALSE(q->tokenizer_dir(Component::kTextEncoder2));  // embedded, not a folder
  ASSERT_TRUE(q->model_index());
  EXPECT_EQ(*q->model_index(), *src->model_index());
  EXPECT_EQ(q->scheduler_config_text(), src->scheduler_config_text());
  for (const auto& n : q->notes())
    EXPECT_EQ(n.find("tokenizer"), std::string::npos) << n;
}

TEST_F(HyrtSdxlTest, QuantizedFourComponentsAndRequantizing) {
  const auto src = Checkpoint::open(write_folder());
  const fs::path out = dir_ / "q.hyrt.safetensors";
  write_hyrt_file(*src, out, options_for(*src));
  const auto q = Checkpoint::open(out);
  int quantized = 0;
  for (Component c : kAllComponents)
    for (const auto& n : q->names(c))
      quantized += q->info(n).dtype == DType::kS8;
  EXPECT_GT(quantized, 0);
  // A hyrt-sdxl source copies through (int8 with its scales), keeping all four parts.
  const fs::path again = dir_ / "q2.hyrt.safetensors";
  write_hyrt_file(*q, again, options_for(*q));
  const auto q2 = Checkpoint::open(again);
  for (Component c : kAllComponents)
    EXPECT_EQ(q2->names(c), q->names(c));
  EXPECT_TRUE(q2->tokenizer_files(Component::kTextEncoder2));
  EXPECT_TRUE(q2->model_index());
}

TEST_F(HyrtSdxlTest, WriterRefusals) {
  const auto src = Checkpoint::open(write_folder());
  {
    HyrtWriteOptions o = options_for(*src);
    o.configs[static_cast<size_t>(Component::kTextEncoder2)].reset();
    try {
      write_hyrt_file(*src, dir_ / "a.safetensors", o);
      ADD_FAILURE();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("second text encoder"), std::string::npos) << e.what();
    }
  }
  {
    HyrtWriteOptions o = options_for(*src);
    o.model_index = "[1]";
    EXPECT_THROW(write_hyrt_file(*src, dir_ / "b.safetensors", o), Error);
  }
  EXPECT_FALSE(fs::exists(dir_ / "a.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "b.safetensors"));
}

TEST_F(HyrtSdxlTest, Sd15SourceStaysAThreeComponentHyrtSd15File) {
  const fs::path m = dir_ / "sd15";
  write(m / "unet" / "diffusion_pytorch_model.safetensors", {{"conv_in.weight", {8, 4, 3, 3}}}, 1);
  write_text(m / "unet" / "config.json", "{}");
  write_text(m / "model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
  const auto src = Checkpoint::open(m);
  HyrtWriteOptions o = options_for(*src);
  const fs::path out = dir_ / "sd15.hyrt.safetensors";
  write_hyrt_file(*src, out, o);
  const auto q = Checkpoint::open(out);
  EXPECT_EQ(q->metadata().at("format"), kHyrtFormat);
  EXPECT_EQ(q->metadata().at("format_version"), "1");
  EXPECT_FALSE(q->has(Component::kTextEncoder2));
  EXPECT_FALSE(q->tokenizer_files(Component::kTextEncoder2));
  ASSERT_TRUE(q->model_index());  // an extra metadata entry, which older readers ignore
  EXPECT_EQ(q->model_index()->at("_class_name"), "StableDiffusionPipeline");

  o.tokenizer_2 = TokenizerFiles{"{}", "#", ""};
  try {
    write_hyrt_file(*src, dir_ / "bad.safetensors", o);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

// ---- malformed four-component files ----

struct Spec {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> meta = {
      {"format", "hyrt-sdxl"},
      {"format_version", "1"},
      {"quantization", std::string(kHyrtQuantization)},
      {"config.unet", "{}"},
      {"config.text_encoder_2", "{}"},
  };
  Spec() {
    tensors.emplace_back("unet.a.bias", Tensor::zeros(DType::kF16, {4}));
    tensors.emplace_back("text_encoder_2.text_projection.weight",
                         Tensor::zeros(DType::kF16, {2, 4}));
  }
  void add(std::string name, std::string_view bytes) {
    Tensor t(DType::kU8, {static_cast<int64_t>(bytes.size())});
    std::memcpy(t.data(), bytes.data(), bytes.size());
    tensors.emplace_back(std::move(name), std::move(t));
  }
  fs::path write(const std::string& name) const {
    std::vector<std::pair<std::string, TensorView>> views;
    for (const auto& [n, t] : tensors)
      views.emplace_back(n, t.view());
    const fs::path p = fs::temp_directory_path() / ("hyrt_sdxl_spec_" + std::to_string(::getpid()) +
                                                    "_" + name + ".safetensors");
    write_safetensors(p, views, meta);
    return p;
  }
};

void expect_open_error(const Spec& spec, const std::string& name, ErrorCode code,
                       const std::vector<std::string>& needles) {
  const fs::path p = spec.write(name);
  try {
    Checkpoint::open(p);
    ADD_FAILURE() << name << ": opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "'" << n << "' not in: " << e.what();
  }
  fs::remove(p);
}

TEST(HyrtSdxlMalformed, MinimalFileOpens) {
  Spec spec;
  spec.add("__tokenizer_2__.vocab.json", "{}");
  spec.add("__tokenizer_2__.merges.txt", "#");
  spec.meta["model_index"] = R"({"force_zeros_for_empty_prompt": false})";
  const fs::path p = spec.write("ok");
  const auto ck = Checkpoint::open(p);
  EXPECT_TRUE(ck->has(Component::kTextEncoder2));
  EXPECT_FALSE(ck->tokenizer_files());
  ASSERT_TRUE(ck->tokenizer_files(Component::kTextEncoder2));
  EXPECT_EQ(ck->tokenizer_files(Component::kTextEncoder2)->merges_txt, "#");
  EXPECT_EQ(ck->model_index()->at("force_zeros_for_empty_prompt"), false);
  EXPECT_TRUE(ck->unexpected_keys().empty());
  fs::remove(p);
}

TEST(HyrtSdxlMalformed, Sd15FormatWithSecondEncoder) {
  Spec spec;
  spec.meta["format"] = "hyrt-sd15";
  expect_open_error(spec, "sd15_with_te2", ErrorCode::kInvalidModel,
                    {"'hyrt-sd15'", "text_encoder_2"});
}

TEST(HyrtSdxlMalformed, SdxlFormatWithoutSecondEncoder) {
  Spec spec;
  spec.tensors.pop_back();
  spec.meta.erase("config.text_encoder_2");
  expect_open_error(spec, "sdxl_without_te2", ErrorCode::kInvalidModel, {"'hyrt-sdxl'", "without"});
}

TEST(HyrtSdxlMalformed, SecondEncoderConfigMissing) {
  Spec spec;
  spec.meta.erase("config.text_encoder_2");
  expect_open_error(spec, "no_te2_config", ErrorCode::kInvalidModel,
                    {"'config.text_encoder_2'", "second text encoder"});
}

TEST(HyrtSdxlMalformed, HalfASecondTokenizer) {
  Spec spec;
  spec.add("__tokenizer_2__.merges.txt", "#");
  expect_open_error(spec, "half_tok2", ErrorCode::kInvalidModel,
                    {"__tokenizer_2__.", "vocab.json"});
}

TEST(HyrtSdxlMalformed, SecondTokenizerTensorNotBytes) {
  Spec spec;
  spec.tensors.emplace_back("__tokenizer_2__.vocab.json", Tensor::zeros(DType::kF32, {2}));
  spec.add("__tokenizer_2__.merges.txt", "#");
  expect_open_error(spec, "tok2_f32", ErrorCode::kInvalidModel,
                    {"'__tokenizer_2__.vocab.json'", "U8"});
}

TEST(HyrtSdxlMalformed, ModelIndexNotAnObject) {
  Spec spec;
  spec.meta["model_index"] = "[true]";
  expect_open_error(spec, "mi_array", ErrorCode::kInvalidModel, {"'model_index'", "JSON object"});
  spec.meta["model_index"] = "{oops";
  expect_open_error(spec, "mi_bad", ErrorCode::kInvalidModel, {"'model_index'", "not valid JSON"});
}

TEST(HyrtSdxlMalformed, UnknownTokenizerFileIsUnexpected) {
  Spec spec;
  spec.add("__tokenizer_2__.special_tokens_map.json", "{}");
  const fs::path p = spec.write("tok2_extra");
  const auto ck = Checkpoint::open(p);
  EXPECT_EQ(ck->unexpected_keys(),
            std::vector<std::string>{"__tokenizer_2__.special_tokens_map.json"});
  fs::remove(p);
}

// ---- golden ----

TEST_F(HyrtSdxlTest, GoldenSgmFileQuantized) {
  const auto dir = test::golden_dir("sdxl-tiny");
  if (!dir || !fs::exists(*dir / "model-sgm.safetensors"))
    GTEST_SKIP() << "golden data not found (../shared/golden/sdxl-tiny)";
  const auto sgm = Checkpoint::open(*dir / "model-sgm.safetensors");
  const auto folder = Checkpoint::open(*dir / "model");
  // Configs, tokenizers and model_index from the folder, as `hyrt quantize --config-dir`.
  HyrtWriteOptions o = options_for(*folder);
  const fs::path out = dir_ / "golden-sgm.hyrt.safetensors";
  write_hyrt_file(*sgm, out, o);
  const auto q = Checkpoint::open(out);
  EXPECT_EQ(q->metadata().at("format"), kHyrtFormatSdxl);
  for (Component c : kAllComponents) {
    EXPECT_EQ(q->names(c), sgm->names(c)) << component_name(c);
    for (const auto& n : q->names(c)) {
      EXPECT_EQ(q->info(n).shape, sgm->info(n).shape) << n;
      if (q->info(n).dtype != DType::kS8) {
        const TensorView a = sgm->get(n), b = q->get(n);
        EXPECT_EQ(std::memcmp(a.data, b.data, a.bytes()), 0) << n;
      }
    }
  }
  EXPECT_EQ(q->model_index()->at("force_zeros_for_empty_prompt"), true);
  EXPECT_EQ(q->tokenizer_files(Component::kTextEncoder2)->tokenizer_config_json,
            folder->tokenizer_files(Component::kTextEncoder2)->tokenizer_config_json);
}

}  // namespace
}  // namespace hyrt::weights

// The hyrt model file (weights/hyrt_format.h): the golden tiny model quantized from its
// diffusers folder and from its LDM file, read back through Checkpoint (names, keys,
// configs, tokenizer, weights within the quantization error, the UNet refused by the CPU
// backend until int8 kernels exist), and every malformed-file rule, one test each.
#include "weights/hyrt_format.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "exec/engine.h"
#include "models/components.h"
#include "models/config.h"
#include "models/keys.h"
#include "pipeline/clip_tokenizer.h"
#include "pipeline/diffusion_model.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/quantize.h"

namespace hyrt::weights {
namespace {
namespace fs = std::filesystem;
using models::ModelConfigs;

// One folder per test process, removed at exit.
fs::path temp_dir() {
  struct Dir {
    fs::path path = fs::temp_directory_path() / ("hyrt_format_test_" + std::to_string(::getpid()));
    Dir() { fs::create_directories(path); }
    ~Dir() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

HyrtWriteOptions options_for(const Checkpoint& ck, const ModelConfigs& configs,
                             std::optional<TokenizerFiles> tokenizer) {
  HyrtWriteOptions o;
  const auto texts = models::configs_to_json_texts(configs);
  for (size_t i = 0; i < texts.size(); ++i)
    o.configs[i] = texts[i];
  o.scheduler_config = ck.scheduler_config_text();
  o.tokenizer = std::move(tokenizer);
  return o;
}

// The golden model quantized twice — from the folder and from the LDM file (with the folder
// as config dir, as `hyrt quantize --config-dir` does) — once for the whole suite.
struct Golden {
  fs::path dir;
  std::unique_ptr<Checkpoint> source;  // the folder
  ModelConfigs source_configs;
  fs::path from_folder, from_ldm;
  HyrtWriteReport report;
};

const Golden* golden() {
  static const std::unique_ptr<Golden> g = []() -> std::unique_ptr<Golden> {
    const auto dir = test::golden_dir();
    if (!dir) return nullptr;
    auto g = std::make_unique<Golden>();
    g->dir = *dir;
    g->source = Checkpoint::open(*dir / "model");
    g->source_configs = models::load_configs(*g->source);
    g->from_folder = temp_dir() / "golden-folder.hyrt.safetensors";
    g->report =
        write_hyrt_file(*g->source, g->from_folder,
                        options_for(*g->source, g->source_configs, g->source->tokenizer_files()));
    const auto ldm = Checkpoint::open(*dir / "model-ldm.safetensors");
    const auto ldm_configs = models::load_configs(*ldm, *dir / "model");
    g->from_ldm = temp_dir() / "golden-ldm.hyrt.safetensors";
    HyrtWriteOptions o =
        options_for(*ldm, ldm_configs, read_tokenizer_files(*dir / "model" / "tokenizer"));
    o.scheduler_config = g->source->scheduler_config_text();
    write_hyrt_file(*ldm, g->from_ldm, o);
    return g;
  }();
  return g.get();
}

#define REQUIRE_GOLDEN()                                              \
  const Golden* g = golden();                                         \
  if (!g) GTEST_SKIP() << "golden data not found (../shared/golden)"; \
  (void)g

TEST(HyrtFormat, GoldenSameNamesAndKeysAsSource) {
  REQUIRE_GOLDEN();
  for (const fs::path& file : {g->from_folder, g->from_ldm}) {
    const auto q = Checkpoint::open(file);
    EXPECT_EQ(q->format(), CheckpointFormat::kHyrtFile);
    for (Component c : kAllComponents) {
      const auto& want = g->source->names(c);
      const auto& got = q->names(c);
      EXPECT_EQ(std::set<std::string>(got.begin(), got.end()),
                std::set<std::string>(want.begin(), want.end()))
          << file << " " << component_name(c);
    }
    EXPECT_TRUE(q->unexpected_keys().empty());
    EXPECT_TRUE(q->ignored_keys().empty());
    const auto configs = models::load_configs(*q);
    const auto report = models::check_checkpoint_keys(*q, configs);
    EXPECT_TRUE(report.ok()) << report.missing.size() << " missing, "
                             << report.shape_mismatch.size() << " mismatched, "
                             << report.unexpected.size() << " unexpected";
    // The scales and the tokenizer are not weights.
    for (Component c : kAllComponents)
      for (const auto& name : q->names(c))
        EXPECT_FALSE(name.ends_with(kScaleSuffix)) << name;
    EXPECT_FALSE(q->contains("unet.conv_in.weight.scale"));
    EXPECT_FALSE(q->contains("unet.down_blocks.0.resnets.0.conv1.weight.scale"));
    EXPECT_EQ(q->metadata().at("format"), "hyrt-sd15");
    EXPECT_EQ(q->metadata().at("format_version"), "1");
    EXPECT_EQ(q->metadata().at("quantization"), kHyrtQuantization);
  }
}

TEST(HyrtFormat, GoldenConfigsRoundTrip) {
  REQUIRE_GOLDEN();
  using namespace models;
  const ModelConfigs& want = g->source_configs;
  for (const fs::path& file : {g->from_folder, g->from_ldm}) {
    const auto q = Checkpoint::open(file);
    for (Component c : kAllComponents)
      ASSERT_EQ(q->config_json(c).has_value(), q->has(c)) << component_name(c);
    const ModelConfigs got = load_configs(*q);
    EXPECT_EQ(clip_text_config_to_json(*got.text_encoder),
              clip_text_config_to_json(*want.text_encoder));
    EXPECT_EQ(unet_config_to_json(*got.unet), unet_config_to_json(*want.unet));
    EXPECT_EQ(vae_config_to_json(*got.vae), vae_config_to_json(*want.vae));
    EXPECT_EQ(got.text_encoder->num_attention_heads, 4);  // not the LDM default (width / 64)
    ASSERT_TRUE(q->scheduler_config_text());
    EXPECT_EQ(nlohmann::json::parse(*q->scheduler_config_text()),
              nlohmann::json::parse(*g->source->scheduler_config_text()));
  }
}

TEST(HyrtFormat, GoldenEmbeddedTokenizerEncodesLikeTheFolder) {
  REQUIRE_GOLDEN();
  std::ifstream in(g->dir / "tokenizer_cases.json");
  ASSERT_TRUE(in);
  const auto cases = nlohmann::json::parse(in);
  const auto q = Checkpoint::open(g->from_folder);
  const auto files = q->tokenizer_files();
  ASSERT_TRUE(files);
  const auto tok = pipeline::ClipTokenizer::from_strings(
      files->vocab_json, files->merges_txt, files->tokenizer_config_json, q->root().string());
  EXPECT_EQ(tok.model_max_length(), 77);
  for (const auto& c : cases) {
    const auto prompt = c["prompt"].get<std::string>();
    EXPECT_EQ(tok.encode(prompt).ids, c["ids"].get<std::vector<int32_t>>()) << prompt;
  }
}

// Quantized weights dequantize to within the per-tensor error the writer reported (and
// that is small); kept weights are the source's bytes, in the source's dtype.
TEST(HyrtFormat, GoldenWeightsWithinQuantizationError) {
  REQUIRE_GOLDEN();
  const auto q = Checkpoint::open(g->from_folder);
  int quantized = 0;
  for (const HyrtTensorReport& r : g->report.tensors) {
    const TensorView src = g->source->get(r.name);
    const TensorView got = q->get(r.name);
    ASSERT_EQ(got.shape, src.shape) << r.name;
    if (!r.quantized) {
      EXPECT_FALSE(q->scale(r.name)) << r.name;
      ASSERT_EQ(got.dtype, src.dtype) << r.name;
      EXPECT_EQ(std::memcmp(got.data, src.data, src.bytes()), 0) << r.name;
      continue;
    }
    ++quantized;
    ASSERT_EQ(got.dtype, DType::kS8) << r.name;
    const auto scale = q->scale(r.name);
    ASSERT_TRUE(scale) << r.name;
    EXPECT_EQ(scale->shape, Shape{src.shape[0]});
    const Tensor back = dequantize_per_row(got, *scale);
    const Tensor ref = to_f32(src);
    const double err =
        test::relative_l2(back.as<float>(), ref.as<float>(), static_cast<size_t>(ref.numel()));
    EXPECT_NEAR(err, r.rel_error, 1e-6) << r.name;
    EXPECT_LT(err, 2e-2) << r.name;
  }
  EXPECT_GT(quantized, 240);  // of 844 tensors: the rest are biases, norms and kept layers
  const auto& unet = g->report.components[static_cast<size_t>(Component::kUNet)];
  EXPECT_LT(unet.bytes_after, unet.bytes_before * 0.6);  // f16 -> ~1 byte/param
}

// Folder and LDM sources hold the same weights, so their hyrt files hold the same tensors.
TEST(HyrtFormat, GoldenFolderAndLdmGiveIdenticalTensors) {
  REQUIRE_GOLDEN();
  const auto a = SafetensorsFile::open(g->from_folder);
  const auto b = SafetensorsFile::open(g->from_ldm);
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const TensorInfo& t : a->tensors()) {
    const TensorInfo* u = b->find(t.name);
    ASSERT_TRUE(u) << t.name;
    ASSERT_EQ(u->dtype, t.dtype) << t.name;
    ASSERT_EQ(u->shape, t.shape) << t.name;
    EXPECT_EQ(std::memcmp(a->view(t).data, b->view(*u).data, t.bytes), 0) << t.name;
  }
}

// A hyrt file as the source: quantized weights are copied with their scales, not redone.
TEST(HyrtFormat, RequantizingAHyrtFileCopiesIt) {
  REQUIRE_GOLDEN();
  const auto q = Checkpoint::open(g->from_folder);
  const fs::path again = temp_dir() / "again.safetensors";
  write_hyrt_file(*q, again, options_for(*q, models::load_configs(*q), q->tokenizer_files()));
  const auto a = SafetensorsFile::open(g->from_folder);
  const auto b = SafetensorsFile::open(again);
  ASSERT_EQ(a->tensors().size(), b->tensors().size());
  for (const TensorInfo& t : a->tensors()) {
    const TensorInfo* u = b->find(t.name);
    ASSERT_TRUE(u) << t.name;
    EXPECT_EQ(std::memcmp(a->view(t).data, b->view(*u).data, t.bytes), 0) << t.name;
  }
}

// DiffusionModel reads everything from the one file: configs, scheduler, embedded tokenizer,
// and its UNet runs on the int8 kernels close to the f32 model it was quantized from.
TEST(HyrtFormat, Sd15ModelOpensTheFileAloneAndRunsInt8) {
  REQUIRE_GOLDEN();
  const fs::path alone = temp_dir() / "alone";
  fs::create_directories(alone);  // no tokenizer/ or scheduler/ beside the file
  fs::copy_file(g->from_folder, alone / "model.safetensors", fs::copy_options::overwrite_existing);
  exec::Engine engine;
  auto m = pipeline::DiffusionModel::open(alone / "model.safetensors", engine);
  EXPECT_EQ(m->text_config().num_attention_heads, 4);
  EXPECT_EQ(m->tokenizer().encode("a red circle on a blue background").ids.at(2), 736);
  const auto folder = pipeline::SchedulerConfig::load_or_default(g->dir / "model");
  EXPECT_EQ(m->scheduler_config().steps_offset, folder.steps_offset);
  EXPECT_EQ(m->scheduler_config().beta_end, folder.beta_end);
  EXPECT_LT(m->weight_bytes(), 12'500'000);  // vs 14.4 MB of f16

  auto reference = pipeline::DiffusionModel::open(g->dir / "model", engine);
  const Tensor sample = test::random_tensor({1, 8, 8, 4}, 11);
  const Tensor context = test::random_tensor({1, 77, 64}, 12);
  const float t = 500;
  const Tensor got = m->predict_noise(sample.view(), std::span<const float>(&t, 1), context.view());
  const Tensor want =
      reference->predict_noise(sample.view(), std::span<const float>(&t, 1), context.view());
  ASSERT_EQ(got.shape(), want.shape());
  const double err =
      test::relative_l2(got.as<float>(), want.as<float>(), static_cast<size_t>(got.numel()));
  std::printf("  int8 UNet vs f32: relative L2 %.3g\n", err);
  EXPECT_LT(err, 0.1);  // 8-bit weights: a few per cent; garbage or zeros would be ~1
}

// ---- malformed files: each rule of hyrt_format.h, built with write_safetensors ----

// A minimal valid hyrt file: one quantized UNet weight with its scales, one f16 bias.
struct FileSpec {
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> meta = {
      {"format", "hyrt-sd15"},
      {"format_version", "1"},
      {"quantization", std::string(kHyrtQuantization)},
      {"config.unet", "{}"},
  };

  FileSpec() {
    Tensor q = Tensor::zeros(DType::kS8, {4, 8});
    for (int i = 0; i < 32; ++i)
      q.as<int8_t>()[i] = static_cast<int8_t>(i - 16);
    Tensor s(DType::kF32, {4});
    for (int i = 0; i < 4; ++i)
      s.as<float>()[i] = 0.01f * (i + 1);
    add("unet.a.weight", std::move(q));
    add("unet.a.weight.scale", std::move(s));
    add("unet.a.bias", Tensor::zeros(DType::kF16, {4}));
  }
  void add(std::string name, Tensor t) {
    remove(name);
    tensors.emplace_back(std::move(name), std::move(t));
  }
  void remove(const std::string& name) {
    std::erase_if(tensors, [&](const auto& p) { return p.first == name; });
  }
  Tensor& at(const std::string& name) {
    for (auto& [n, t] : tensors)
      if (n == name) return t;
    throw std::runtime_error("no tensor " + name);
  }
  fs::path write(const std::string& file) const {
    std::vector<std::pair<std::string, TensorView>> views;
    for (const auto& [n, t] : tensors)
      views.emplace_back(n, t.view());
    const fs::path p = temp_dir() / (file + ".safetensors");
    write_safetensors(p, views, meta);
    return p;
  }
};

// Opens `spec` and expects `code` with every `needle` in the message (the file is always
// one of them).
void expect_open_error(const FileSpec& spec, ErrorCode code, std::vector<std::string> needles) {
  const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  const fs::path p = spec.write(name);
  needles.push_back(p.string());
  try {
    Checkpoint::open(p);
    ADD_FAILURE() << "opened " << p;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "'" << n << "' not in: " << e.what();
  }
}

TEST(HyrtFormatMalformed, MinimalValidFileOpens) {
  FileSpec spec;
  const auto ck = Checkpoint::open(spec.write("valid"));
  EXPECT_EQ(ck->format(), CheckpointFormat::kHyrtFile);
  EXPECT_EQ(ck->names(Component::kUNet).size(), 2u);
  EXPECT_EQ(ck->get("unet.a.weight").dtype, DType::kS8);
  ASSERT_TRUE(ck->scale("unet.a.weight"));
  EXPECT_EQ(ck->scale("unet.a.weight")->shape, Shape{4});
  EXPECT_FALSE(ck->scale("unet.a.bias"));
  EXPECT_THROW(ck->scale("unet.nothing"), Error);
  EXPECT_FALSE(ck->contains("unet.a.weight.scale"));
  EXPECT_TRUE(ck->unexpected_keys().empty());
  EXPECT_FALSE(ck->tokenizer_files());
}

TEST(HyrtFormatMalformed, I8WithoutScale) {
  FileSpec spec;
  spec.remove("unet.a.weight.scale");
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight'", "unet.a.weight.scale"});
}

TEST(HyrtFormatMalformed, ScaleWithoutTensor) {
  FileSpec spec;
  spec.remove("unet.a.weight");
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight.scale'", "no tensor"});
}

TEST(HyrtFormatMalformed, ScaleForANonI8Tensor) {
  FileSpec spec;
  spec.add("unet.a.bias.scale", Tensor::zeros(DType::kF32, {4}));
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.bias.scale'", "not I8"});
}

TEST(HyrtFormatMalformed, ScaleOfWrongLength) {
  FileSpec spec;
  spec.add("unet.a.weight.scale", Tensor::zeros(DType::kF32, {3}));
  expect_open_error(spec, ErrorCode::kInvalidModel,
                    {"'unet.a.weight.scale'", "3 entries", "4 rows"});
}

TEST(HyrtFormatMalformed, ScaleOfWrongDtype) {
  FileSpec spec;
  spec.add("unet.a.weight.scale", Tensor::zeros(DType::kF16, {4}));
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight.scale'", "F32"});
}

TEST(HyrtFormatMalformed, ScaleOfWrongRank) {
  FileSpec spec;
  spec.add("unet.a.weight.scale", Tensor::zeros(DType::kF32, {4, 1}));
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight.scale'", "rank 1"});
}

TEST(HyrtFormatMalformed, NanScale) {
  FileSpec spec;
  spec.at("unet.a.weight.scale").as<float>()[2] = std::numeric_limits<float>::quiet_NaN();
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight.scale'", "row 2"});
}

TEST(HyrtFormatMalformed, InfScale) {
  FileSpec spec;
  spec.at("unet.a.weight.scale").as<float>()[1] = std::numeric_limits<float>::infinity();
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight.scale'", "row 1"});
}

TEST(HyrtFormatMalformed, NegativeScale) {
  FileSpec spec;
  spec.at("unet.a.weight.scale").as<float>()[3] = -0.5f;
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight.scale'", "-0.5", "row 3"});
}

TEST(HyrtFormatMalformed, I8OfRankOne) {
  FileSpec spec;
  spec.add("unet.a.weight", Tensor::zeros(DType::kS8, {4}));
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'unet.a.weight'", "rank >= 2"});
}

TEST(HyrtFormatMalformed, UnknownFormatVersionIsUnsupported) {
  FileSpec spec;
  spec.meta["format_version"] = "2";
  expect_open_error(spec, ErrorCode::kUnsupported, {"format_version '2'"});
}

TEST(HyrtFormatMalformed, MissingFormatVersion) {
  FileSpec spec;
  spec.meta.erase("format_version");
  expect_open_error(spec, ErrorCode::kInvalidModel, {"format_version"});
}

TEST(HyrtFormatMalformed, OtherArchitectureIsUnsupported) {
  FileSpec spec;
  spec.meta["format"] = "hyrt-flux";
  expect_open_error(spec, ErrorCode::kUnsupported, {"'hyrt-flux'", "hyrt-sd15", "hyrt-sdxl"});
}

TEST(HyrtFormatMalformed, ConfigMissingFromMetadata) {
  FileSpec spec;
  spec.meta.erase("config.unet");
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'config.unet'"});
}

TEST(HyrtFormatMalformed, ConfigNotJson) {
  FileSpec spec;
  spec.meta["config.unet"] = "{not json";
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'config.unet'", "not valid JSON"});
}

TEST(HyrtFormatMalformed, ConfigNotAnObject) {
  FileSpec spec;
  spec.meta["config.unet"] = "[1, 2]";
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'config.unet'", "JSON object"});
}

TEST(HyrtFormatMalformed, HalfATokenizer) {
  FileSpec spec;
  Tensor vocab(DType::kU8, {2});
  std::memcpy(vocab.data(), "{}", 2);
  spec.add("__tokenizer__.vocab.json", std::move(vocab));
  expect_open_error(spec, ErrorCode::kInvalidModel, {"merges.txt"});
}

TEST(HyrtFormatMalformed, TokenizerTensorNotBytes) {
  FileSpec spec;
  spec.add("__tokenizer__.vocab.json", Tensor::zeros(DType::kF32, {2}));
  spec.add("__tokenizer__.merges.txt", Tensor::zeros(DType::kU8, {2}));
  expect_open_error(spec, ErrorCode::kInvalidModel, {"'__tokenizer__.vocab.json'", "U8"});
}

// Only the exact "hyrt-" prefix makes a file a hyrt file: `"format": "pt"` (what many
// safetensors writers put there) is still read as an LDM file.
TEST(HyrtFormatMalformed, ForeignFormatMetadataIsNotHyrt) {
  FileSpec spec;
  spec.meta = {{"format", "pt"}};
  const fs::path p = spec.write("foreign");
  try {
    const auto ck = Checkpoint::open(p);
    EXPECT_EQ(ck->format(), CheckpointFormat::kLdmSingleFile);
  } catch (const Error& e) {
    // No LDM keys in it: refused as "not a Stable Diffusion checkpoint", never as hyrt.
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_EQ(std::string(e.what()).find("hyrt-sd15"), std::string::npos) << e.what();
  }
}

TEST(HyrtFormatWriter, RefusesMissingConfigAndOverwritingTheSource) {
  FileSpec spec;
  const fs::path p = spec.write("writer_source");
  const auto ck = Checkpoint::open(p);
  HyrtWriteOptions o;  // no config for the UNet
  EXPECT_THROW(write_hyrt_file(*ck, temp_dir() / "writer_out.safetensors", o), Error);
  o.configs[static_cast<size_t>(Component::kUNet)] = "{}";
  EXPECT_THROW(write_hyrt_file(*ck, p, o), Error);
  const auto r = write_hyrt_file(*ck, temp_dir() / "writer_out.safetensors", o);
  EXPECT_EQ(r.components[static_cast<size_t>(Component::kUNet)].quantized, 1);  // copied through
  EXPECT_EQ(r.components[static_cast<size_t>(Component::kUNet)].kept, 1);
}

}  // namespace
}  // namespace hyrt::weights

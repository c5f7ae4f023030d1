// SDXL in the weights layer: SGM single files (`conditioner.embedders.*`, OpenCLIP names,
// stacked q/k/v, transposed text_projection), diffusers folders with text_encoder_2/ and
// tokenizer_2/, model_index, the SGM reverse map (sgm_key_for), hostile SGM shapes — and,
// where ../shared/golden exists, the golden sdxl-tiny SGM file against its diffusers folder.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "temp_dir_test.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/ldm_names.h"
#include "weights/safetensors.h"

namespace hyrt::weights {
namespace {
namespace fs = std::filesystem;

constexpr std::string_view kClip = "conditioner.embedders.0.transformer.";
constexpr std::string_view kOpenClip = "conditioner.embedders.1.model.";

std::string s(std::string_view a, std::string_view b) {
  return std::string(a) + std::string(b);
}

class SgmTest : public test::TempDirTest {
 protected:
  // f32 tensors whose element i holds `base + i`.
  static Tensor iota(const Shape& shape, float base = 0) {
    Tensor t(DType::kF32, shape);
    for (int64_t i = 0; i < t.numel(); ++i)
      t.as<float>()[i] = base + static_cast<float>(i);
    return t;
  }
  void write(const fs::path& path, const std::vector<std::pair<std::string, Tensor>>& tensors) {
    fs::create_directories(path.parent_path());
    std::vector<std::pair<std::string, TensorView>> views;
    for (const auto& [n, t] : tensors)
      views.emplace_back(n, t.view());
    write_safetensors(path, views);
  }
  void write_text(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  // A minimal SGM file: one UNet weight, one CLIP-L weight and the OpenCLIP tensors that
  // need a transform, plus `extra`.
  fs::path write_sgm(std::vector<std::pair<std::string, Tensor>> extra = {}) {
    std::vector<std::pair<std::string, Tensor>> t;
    t.emplace_back("model.diffusion_model.label_emb.0.0.weight", iota({4, 6}));
    t.emplace_back(s(kClip, "encoder.layers.0.mlp.fc1.weight"), iota({8, 4}));
    t.emplace_back(s(kClip, "text_model.embeddings.position_ids"),
                   Tensor::zeros(DType::kS64, {1, 77}));
    t.emplace_back(s(kOpenClip, "transformer.resblocks.0.attn.in_proj_weight"), iota({6, 2}, 100));
    t.emplace_back(s(kOpenClip, "transformer.resblocks.0.attn.in_proj_bias"), iota({6}, 200));
    t.emplace_back(s(kOpenClip, "text_projection"), iota({2, 3}, 300));
    t.emplace_back(s(kOpenClip, "logit_scale"), iota({}));
    for (auto& e : extra) {
      std::erase_if(t, [&](const auto& p) { return p.first == e.first; });
      t.push_back(std::move(e));
    }
    const fs::path p = dir_ / "sgm.safetensors";
    write(p, t);
    return p;
  }
};

// ---- key map ----

TEST(SgmKeyMap, OpenClipAndClipNames) {
  const std::vector<std::string> keys = {
      s(kOpenClip, "token_embedding.weight"),
      s(kOpenClip, "positional_embedding"),
      s(kOpenClip, "ln_final.bias"),
      s(kOpenClip, "transformer.resblocks.3.ln_1.weight"),
      s(kOpenClip, "transformer.resblocks.3.ln_2.bias"),
      s(kOpenClip, "transformer.resblocks.3.attn.out_proj.weight"),
      s(kOpenClip, "transformer.resblocks.3.mlp.c_fc.weight"),
      s(kOpenClip, "transformer.resblocks.3.mlp.c_proj.bias"),
      s(kClip, "encoder.layers.0.self_attn.q_proj.weight"),
      s(kClip, "text_model.final_layer_norm.weight"),
      "conditioner.embedders.0.model.ln_final.weight",  // the refiner: OpenCLIP only, index 0
      "model.diffusion_model.label_emb.0.0.weight",
      "model.diffusion_model.label_emb.0.2.bias",
  };
  const std::vector<std::pair<std::string, Component>> want = {
      {"text_encoder_2.text_model.embeddings.token_embedding.weight", Component::kTextEncoder2},
      {"text_encoder_2.text_model.embeddings.position_embedding.weight", Component::kTextEncoder2},
      {"text_encoder_2.text_model.final_layer_norm.bias", Component::kTextEncoder2},
      {"text_encoder_2.text_model.encoder.layers.3.layer_norm1.weight", Component::kTextEncoder2},
      {"text_encoder_2.text_model.encoder.layers.3.layer_norm2.bias", Component::kTextEncoder2},
      {"text_encoder_2.text_model.encoder.layers.3.self_attn.out_proj.weight",
       Component::kTextEncoder2},
      {"text_encoder_2.text_model.encoder.layers.3.mlp.fc1.weight", Component::kTextEncoder2},
      {"text_encoder_2.text_model.encoder.layers.3.mlp.fc2.bias", Component::kTextEncoder2},
      {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight", Component::kTextEncoder},
      {"text_encoder.text_model.final_layer_norm.weight", Component::kTextEncoder},
      {"text_encoder_2.text_model.final_layer_norm.weight", Component::kTextEncoder2},
      {"unet.add_embedding.linear_1.weight", Component::kUNet},
      {"unet.add_embedding.linear_2.bias", Component::kUNet},
  };
  const LdmKeyMap map(keys);
  EXPECT_TRUE(map.is_sgm());
  for (size_t i = 0; i < keys.size(); ++i) {
    const KeyMapping m = map.map(keys[i]);
    ASSERT_EQ(m.kind, KeyMapping::Kind::kMapped) << keys[i];
    EXPECT_EQ(m.canonical, want[i].first) << keys[i];
    EXPECT_EQ(m.component, want[i].second) << keys[i];
    EXPECT_TRUE(m.split_rows.empty()) << keys[i];
    EXPECT_FALSE(m.transpose) << keys[i];
  }
  EXPECT_FALSE(LdmKeyMap({"model.diffusion_model.out.2.weight"}).is_sgm());
}

TEST(SgmKeyMap, StackedAndTransposed) {
  const LdmKeyMap map({});
  const KeyMapping w = map.map(s(kOpenClip, "transformer.resblocks.11.attn.in_proj_weight"));
  ASSERT_EQ(w.kind, KeyMapping::Kind::kMapped);
  EXPECT_EQ(w.component, Component::kTextEncoder2);
  EXPECT_TRUE(w.canonical.empty());
  const std::string layer = "text_encoder_2.text_model.encoder.layers.11.self_attn.";
  EXPECT_EQ(w.split_rows,
            (std::vector<std::string>{layer + "q_proj.weight", layer + "k_proj.weight",
                                      layer + "v_proj.weight"}));
  const KeyMapping b = map.map(s(kOpenClip, "transformer.resblocks.11.attn.in_proj_bias"));
  EXPECT_EQ(b.split_rows, (std::vector<std::string>{layer + "q_proj.bias", layer + "k_proj.bias",
                                                    layer + "v_proj.bias"}));
  const KeyMapping p = map.map(s(kOpenClip, "text_projection"));
  ASSERT_EQ(p.kind, KeyMapping::Kind::kMapped);
  EXPECT_EQ(p.canonical, "text_encoder_2.text_projection.weight");
  EXPECT_TRUE(p.transpose);
}

TEST(SgmKeyMap, IgnoredAndUnexpected) {
  const LdmKeyMap map({});
  for (const std::string& k :
       {s(kOpenClip, "logit_scale"), s(kOpenClip, "attn_mask"),
        s(kClip, "text_model.embeddings.position_ids"), s(kClip, "embeddings.position_ids")})
    EXPECT_EQ(map.map(k).kind, KeyMapping::Kind::kIgnored) << k;
  for (const std::string& k :
       {s(kOpenClip, "transformer.resblocks.0.attn.in_proj"),
        s(kOpenClip, "transformer.resblocks.0.ln_1."),
        s(kOpenClip, "transformer.resblocks.x.ln_1.weight"),
        s(kOpenClip, "transformer.resblocks.0"), s(kOpenClip, "token_embedding."),
        s(kOpenClip, "visual.proj"), std::string(kOpenClip),
        std::string("conditioner.embedders.x.model.ln_final.weight"),
        std::string("conditioner.embedders.0.transformer."), std::string("conditioner.embedders."),
        std::string("conditioner.embedders.1.other.weight")}) {
    const KeyMapping m = map.map(k);
    EXPECT_EQ(m.kind, KeyMapping::Kind::kUnexpected) << k << " -> " << m.canonical;
    EXPECT_TRUE(m.split_rows.empty()) << k;
  }
}

TEST(SgmKeyMap, DiffusersTextEncoder2Names) {
  // text_model. is added as for text_encoder, but text_projection sits outside it.
  EXPECT_EQ(map_diffusers_key(Component::kTextEncoder2, "encoder.layers.0.mlp.fc1.weight", 2, false)
                .canonical,
            "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.weight");
  EXPECT_EQ(
      map_diffusers_key(Component::kTextEncoder2, "text_model.final_layer_norm.weight", 1, false)
          .canonical,
      "text_encoder_2.text_model.final_layer_norm.weight");
  EXPECT_EQ(
      map_diffusers_key(Component::kTextEncoder2, "text_projection.weight", 2, false).canonical,
      "text_encoder_2.text_projection.weight");
  EXPECT_EQ(component_name(Component::kTextEncoder2), "text_encoder_2");
  EXPECT_EQ(component_title(Component::kTextEncoder2), "second text encoder");
  EXPECT_EQ(tokenizer_folder_name(Component::kTextEncoder2), "tokenizer_2");
  EXPECT_EQ(tokenizer_folder_name(Component::kTextEncoder), "tokenizer");
  EXPECT_EQ(tokenizer_folder_name(Component::kUNet), "");
  std::set<Component> all(std::begin(kAllComponents), std::end(kAllComponents));
  EXPECT_EQ(all.size(), kNumComponents);
  for (Component c : kAllComponents)
    EXPECT_LT(static_cast<size_t>(c), kNumComponents);
}

// ---- reverse map ----

// canonical -> SGM -> canonical: stacked keys collect their three parts, every other key
// maps back to its one name with the transform sgm_key_for announced.
void expect_sgm_round_trip(const std::vector<std::string>& names, const LdmStructure& structure) {
  std::vector<std::string> keys;
  std::map<std::string, std::vector<std::string>> stacked;  // key -> names by part
  std::map<std::string, std::string> single;
  for (const auto& n : names) {
    const SgmKey k = sgm_key_for(n, structure);
    if (k.stacked_part >= 0) {
      auto& parts = stacked[k.key];
      if (parts.empty()) keys.push_back(k.key);
      parts.resize(3);
      EXPECT_TRUE(parts[static_cast<size_t>(k.stacked_part)].empty()) << n << " -> " << k.key;
      parts[static_cast<size_t>(k.stacked_part)] = n;
      continue;
    }
    EXPECT_TRUE(single.emplace(k.key, n).second) << n << " -> " << k.key << " twice";
    EXPECT_EQ(k.transposed, n == "text_encoder_2.text_projection.weight") << n;
    keys.push_back(k.key);
  }
  const LdmKeyMap map(keys);
  EXPECT_TRUE(map.is_sgm());
  EXPECT_EQ(map.unet_layers_per_block(), structure.unet_layers_per_block);
  for (const auto& key : keys) {
    const KeyMapping m = map.map(key);
    ASSERT_EQ(m.kind, KeyMapping::Kind::kMapped) << key;
    if (auto it = stacked.find(key); it != stacked.end()) {
      EXPECT_EQ(m.split_rows, it->second) << key;
    } else {
      EXPECT_EQ(m.canonical, single.at(key)) << key;
      EXPECT_EQ(m.transpose, sgm_key_for(m.canonical, structure).transposed) << key;
      EXPECT_EQ(m.squeeze_1x1, sgm_key_for(m.canonical, structure).as_1x1_conv) << key;
    }
  }
}

TEST(SgmReverseMap, SdxlShapedNamesRoundTrip) {
  std::vector<std::string> names = {
      "text_encoder.text_model.embeddings.token_embedding.weight",
      "text_encoder.text_model.encoder.layers.1.self_attn.k_proj.bias",
      "text_encoder.text_model.final_layer_norm.weight",
      "text_encoder_2.text_model.embeddings.token_embedding.weight",
      "text_encoder_2.text_model.embeddings.position_embedding.weight",
      "text_encoder_2.text_model.final_layer_norm.weight",
      "text_encoder_2.text_model.final_layer_norm.bias",
      "text_encoder_2.text_projection.weight",
      "unet.add_embedding.linear_1.weight",
      "unet.add_embedding.linear_2.bias",
      "unet.time_embedding.linear_1.weight",
      "unet.conv_in.weight",
      "unet.down_blocks.0.resnets.1.conv1.weight",
      "unet.down_blocks.0.downsamplers.0.conv.weight",
      "unet.down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k.weight",
      "unet.down_blocks.2.attentions.0.proj_in.weight",
      "unet.mid_block.attentions.0.transformer_blocks.1.ff.net.0.proj.weight",
      "unet.up_blocks.0.attentions.2.proj_out.bias",
      "unet.up_blocks.0.upsamplers.0.conv.weight",
      "unet.up_blocks.1.upsamplers.0.conv.weight",
      "unet.up_blocks.2.resnets.2.conv_shortcut.weight",
      "vae.decoder.up_blocks.0.resnets.0.conv1.weight",
      "vae.decoder.mid_block.attentions.0.to_q.weight",
  };
  for (int layer = 0; layer < 2; ++layer) {
    const std::string l = "text_encoder_2.text_model.encoder.layers." + std::to_string(layer) + ".";
    for (std::string_view p : {"q_proj.", "k_proj.", "v_proj.", "out_proj."})
      for (std::string_view wb : {"weight", "bias"})
        names.push_back(l + "self_attn." + std::string(p) + std::string(wb));
    for (std::string_view m : {"layer_norm1.", "layer_norm2.", "mlp.fc1.", "mlp.fc2."})
      for (std::string_view wb : {"weight", "bias"})
        names.push_back(l + std::string(m) + std::string(wb));
  }
  LdmStructure sdxl;
  sdxl.unet_layers_per_block = 2;
  sdxl.unet_up_attention = {true, true, false};
  expect_sgm_round_trip(names, sdxl);

  EXPECT_EQ(sgm_key_for("unet.up_blocks.1.upsamplers.0.conv.weight", sdxl).key,
            "model.diffusion_model.output_blocks.5.2.conv.weight");
  EXPECT_EQ(sgm_key_for("unet.add_embedding.linear_2.weight", sdxl).key,
            "model.diffusion_model.label_emb.0.2.weight");
  EXPECT_EQ(ldm_key_for("unet.add_embedding.linear_1.bias", sdxl),
            "model.diffusion_model.label_emb.0.0.bias");
  const SgmKey v =
      sgm_key_for("text_encoder_2.text_model.encoder.layers.1.self_attn.v_proj.bias", sdxl);
  EXPECT_EQ(v.key, s(kOpenClip, "transformer.resblocks.1.attn.in_proj_bias"));
  EXPECT_EQ(v.stacked_part, 2);
  EXPECT_EQ(sgm_key_for("text_encoder.text_model.final_layer_norm.weight", sdxl).key,
            s(kClip, "text_model.final_layer_norm.weight"));
  EXPECT_TRUE(sgm_key_for("vae.encoder.mid_block.attentions.0.to_out.0.weight", sdxl).as_1x1_conv);
}

TEST(SgmReverseMap, UnknownNamesAreInvalidArgument) {
  for (const char* bad :
       {"text_encoder_2.foo.weight",
        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.scale",
        "text_encoder_2.text_model.encoder.layers.0.layer_norm1.",
        "text_encoder_2.text_model.encoder.layers.x.mlp.fc1.weight",
        "text_encoder_2.text_model.final_layer_norm.", "text_encoder.embeddings.x",
        "text_encoder.text_model.", "other.weight", "unet.nothing.weight"}) {
    try {
      sgm_key_for(bad, LdmStructure{});
      ADD_FAILURE() << bad << " has an SGM key";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << bad;
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

// ---- Checkpoint on SGM files ----

TEST_F(SgmTest, SplitRowsAreZeroCopyViewsAndProjectionIsTransposed) {
  const auto ck = Checkpoint::open(write_sgm());
  EXPECT_EQ(ck->format(), CheckpointFormat::kSgmSingleFile);
  EXPECT_EQ(checkpoint_format_name(ck->format()), "SGM single file");
  EXPECT_TRUE(ck->has(Component::kTextEncoder));
  EXPECT_TRUE(ck->has(Component::kTextEncoder2));
  EXPECT_TRUE(ck->has(Component::kUNet));
  EXPECT_FALSE(ck->has(Component::kVae));
  EXPECT_TRUE(ck->unexpected_keys().empty());
  EXPECT_EQ(ck->ignored_keys().size(), 2u);  // position_ids, logit_scale

  const std::string layer = "text_encoder_2.text_model.encoder.layers.0.self_attn.";
  const char* parts[] = {"q_proj.", "k_proj.", "v_proj."};
  for (int p = 0; p < 3; ++p) {
    const WeightInfo& w = ck->info(layer + parts[p] + "weight");
    EXPECT_EQ(w.shape, (Shape{2, 2}));
    EXPECT_EQ(w.tensor->shape, (Shape{6, 2}));
    EXPECT_EQ(w.byte_offset, static_cast<uint64_t>(p) * 16);
    EXPECT_EQ(w.bytes(), 16u);
    EXPECT_EQ(w.materialized, nullptr);
    const TensorView v = ck->get(w.name);
    EXPECT_EQ(v.shape, (Shape{2, 2}));
    // Zero-copy: the view points into the stacked tensor's mapped bytes.
    EXPECT_EQ(static_cast<const uint8_t*>(v.data),
              static_cast<const uint8_t*>(w.file->view(*w.tensor).data) + p * 16);
    for (int i = 0; i < 4; ++i) {
      float x;
      std::memcpy(&x, static_cast<const uint8_t*>(v.data) + 4 * i, 4);
      EXPECT_EQ(x, 100.0f + 4 * p + i) << w.name;
    }
    const TensorView b = ck->get(layer + parts[p] + "bias");
    EXPECT_EQ(b.shape, (Shape{2}));
    for (int i = 0; i < 2; ++i) {
      float x;
      std::memcpy(&x, static_cast<const uint8_t*>(b.data) + 4 * i, 4);
      EXPECT_EQ(x, 200.0f + 2 * p + i);
    }
  }
  // Stored [2, 3] = [width, proj]; exposed [3, 2], element (c, r) = stored (r, c).
  const WeightInfo& pw = ck->info("text_encoder_2.text_projection.weight");
  ASSERT_NE(pw.materialized, nullptr);
  EXPECT_EQ(pw.shape, (Shape{3, 2}));
  EXPECT_EQ(pw.tensor->name, s(kOpenClip, "text_projection"));
  const TensorView p = ck->get(pw.name);
  EXPECT_EQ(p.shape, (Shape{3, 2}));
  EXPECT_EQ(p.dtype, DType::kF32);
  for (int c = 0; c < 3; ++c)
    for (int r = 0; r < 2; ++r)
      EXPECT_EQ(p.as<const float>()[c * 2 + r], 300.0f + r * 3 + c);

  EXPECT_EQ(ck->info("text_encoder.text_model.encoder.layers.0.mlp.fc1.weight").shape,
            (Shape{8, 4}));
  EXPECT_TRUE(ck->contains("unet.add_embedding.linear_1.weight"));
  // Releasing pages is always safe: split views drop only their own rows' pages (none
  // wholly inside 16 bytes), the materialised copy has none; values stay readable.
  for (Component c : kAllComponents)
    for (const auto& n : ck->names(c))
      ck->release_stored(n);
  EXPECT_EQ(ck->get(layer + "k_proj.weight").as<const float>() == nullptr, false);
  float x;
  std::memcpy(&x, ck->get(layer + "v_proj.weight").data, 4);
  EXPECT_EQ(x, 108.0f);
  EXPECT_FALSE(ck->model_index());
  EXPECT_FALSE(ck->tokenizer_files(Component::kTextEncoder2));
}

TEST_F(SgmTest, F16ProjectionKeepsItsDtype) {
  Tensor p(DType::kF16, {2, 3});
  for (int i = 0; i < 6; ++i)
    p.as<uint16_t>()[i] = static_cast<uint16_t>(0x3c00 + i);
  std::vector<std::pair<std::string, Tensor>> extra;
  extra.emplace_back(s(kOpenClip, "text_projection"), std::move(p));
  const auto ck = Checkpoint::open(write_sgm(std::move(extra)));
  const TensorView v = ck->get("text_encoder_2.text_projection.weight");
  EXPECT_EQ(v.dtype, DType::kF16);
  ASSERT_EQ(v.shape, (Shape{3, 2}));
  for (int c = 0; c < 3; ++c)
    for (int r = 0; r < 2; ++r)
      EXPECT_EQ(v.as<const uint16_t>()[c * 2 + r], 0x3c00 + r * 3 + c);
}

// Hostile shapes: a clear kInvalidModel naming the tensor, never a crash.
TEST_F(SgmTest, ImpossibleShapesNameTheKey) {
  struct Case {
    std::string key;
    Shape shape;
    const char* why;
  };
  const Case cases[] = {
      {s(kOpenClip, "transformer.resblocks.0.attn.in_proj_weight"), {7, 2}, "multiple of 3"},
      {s(kOpenClip, "transformer.resblocks.0.attn.in_proj_weight"), {6}, "multiple of 3"},
      {s(kOpenClip, "transformer.resblocks.0.attn.in_proj_weight"), {6, 2, 1}, "multiple of 3"},
      {s(kOpenClip, "transformer.resblocks.0.attn.in_proj_weight"), {}, "multiple of 3"},
      {s(kOpenClip, "transformer.resblocks.0.attn.in_proj_bias"), {5}, "multiple of 3"},
      {s(kOpenClip, "transformer.resblocks.0.attn.in_proj_bias"), {6, 2}, "multiple of 3"},
      {s(kOpenClip, "text_projection"), {6}, "rank 2"},
      {s(kOpenClip, "text_projection"), {2, 3, 1}, "rank 2"},
      {s(kOpenClip, "text_projection"), {}, "rank 2"},
  };
  for (const Case& c : cases) {
    std::vector<std::pair<std::string, Tensor>> extra;
    extra.emplace_back(c.key, Tensor::zeros(DType::kF32, c.shape));
    const fs::path p = write_sgm(std::move(extra));
    try {
      Checkpoint::open(p);
      ADD_FAILURE() << c.key << " " << c.shape.to_string() << " opened";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidModel) << e.what();
      EXPECT_NE(std::string(e.what()).find("'" + c.key + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.why), std::string::npos) << e.what();
    }
  }
}

TEST_F(SgmTest, EmptyStackedTensorGivesEmptyViews) {
  std::vector<std::pair<std::string, Tensor>> extra;
  extra.emplace_back(s(kOpenClip, "transformer.resblocks.0.attn.in_proj_weight"),
                     Tensor::zeros(DType::kF32, {0, 4}));
  const auto ck = Checkpoint::open(write_sgm(std::move(extra)));
  EXPECT_EQ(ck->get("text_encoder_2.text_model.encoder.layers.0.self_attn.v_proj.weight").shape,
            (Shape{0, 4}));
}

TEST_F(SgmTest, TwoSourcesOfOneWeightAreAnError) {
  // The CLIP-L tower with and without `text_model.`: both give the same canonical name.
  std::vector<std::pair<std::string, Tensor>> extra;
  extra.emplace_back(s(kClip, "text_model.encoder.layers.0.mlp.fc1.weight"), iota({8, 4}));
  try {
    Checkpoint::open(write_sgm(std::move(extra)));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("text_encoder.text_model.encoder.layers.0.mlp.fc1.weight"),
              std::string::npos)
        << e.what();
  }
}

TEST_F(SgmTest, TruncatedFileIsInvalidModel) {
  const fs::path p = write_sgm();
  const auto size = fs::file_size(p);
  for (uintmax_t cut : {size - 1, size / 2, uintmax_t{12}}) {
    fs::resize_file(p, cut);
    try {
      Checkpoint::open(p);
      ADD_FAILURE() << "opened at " << cut << " bytes";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidModel) << e.what();
    }
  }
}

// ---- diffusers folders with a second text encoder ----

TEST_F(SgmTest, DiffusersFolderWithTextEncoder2AndTokenizer2) {
  write_text(
      dir_ / "model_index.json",
      R"({"_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": true})");
  write(dir_ / "text_encoder" / "model.safetensors", [] {
    std::vector<std::pair<std::string, Tensor>> t;
    t.emplace_back("embeddings.token_embedding.weight", Tensor::zeros(DType::kF16, {10, 4}));
    return t;
  }());
  write(dir_ / "text_encoder_2" / "model.fp16.safetensors", [] {
    std::vector<std::pair<std::string, Tensor>> t;
    t.emplace_back("text_model.encoder.layers.0.mlp.fc1.weight",
                   Tensor::zeros(DType::kF16, {8, 4}));
    t.emplace_back("encoder.layers.0.layer_norm1.weight", Tensor::zeros(DType::kF16, {4}));
    t.emplace_back("text_projection.weight", Tensor::zeros(DType::kF16, {3, 4}));
    t.emplace_back("text_model.embeddings.position_ids", Tensor::zeros(DType::kS64, {1, 77}));
    return t;
  }());
  write_text(dir_ / "text_encoder_2" / "config.json", R"({"hidden_size": 4, "projection_dim": 3})");
  write_text(dir_ / "tokenizer" / "vocab.json", "{\"a\": 0}");
  write_text(dir_ / "tokenizer" / "merges.txt", "#version\n");
  write_text(dir_ / "tokenizer_2" / "vocab.json", "{\"b\": 1}");
  write_text(dir_ / "tokenizer_2" / "merges.txt", "#version 2\n");
  write_text(dir_ / "tokenizer_2" / "tokenizer_config.json", R"({"pad_token": "!"})");

  const auto ck = Checkpoint::open(dir_);
  EXPECT_EQ(ck->format(), CheckpointFormat::kDiffusersFolder);
  EXPECT_TRUE(ck->has(Component::kTextEncoder2));
  const auto& names = ck->names(Component::kTextEncoder2);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
            (std::set<std::string>{"text_encoder_2.text_model.encoder.layers.0.mlp.fc1.weight",
                                   "text_encoder_2.text_model.encoder.layers.0.layer_norm1.weight",
                                   "text_encoder_2.text_projection.weight"}));
  EXPECT_EQ(ck->weight_files(Component::kTextEncoder2),
            std::vector<fs::path>{dir_ / "text_encoder_2" / "model.fp16.safetensors"});
  ASSERT_TRUE(ck->config_json(Component::kTextEncoder2));
  EXPECT_EQ(ck->config_json(Component::kTextEncoder2)->at("projection_dim"), 3);

  EXPECT_EQ(ck->tokenizer_dir(), dir_ / "tokenizer");
  EXPECT_EQ(ck->tokenizer_dir(Component::kTextEncoder2), dir_ / "tokenizer_2");
  EXPECT_FALSE(ck->tokenizer_dir(Component::kUNet));
  EXPECT_FALSE(ck->tokenizer_files(Component::kVae));
  ASSERT_TRUE(ck->tokenizer_files());
  EXPECT_EQ(ck->tokenizer_files()->vocab_json, "{\"a\": 0}");
  EXPECT_TRUE(ck->tokenizer_files()->tokenizer_config_json.empty());
  const auto t2 = ck->tokenizer_files(Component::kTextEncoder2);
  ASSERT_TRUE(t2);
  EXPECT_EQ(t2->vocab_json, "{\"b\": 1}");
  EXPECT_EQ(t2->merges_txt, "#version 2\n");
  EXPECT_EQ(t2->tokenizer_config_json, R"({"pad_token": "!"})");

  const auto mi = ck->model_index();
  ASSERT_TRUE(mi);
  EXPECT_EQ(mi->at("_class_name"), "StableDiffusionXLPipeline");
  EXPECT_EQ(mi->at("force_zeros_for_empty_prompt"), true);
}

TEST_F(SgmTest, Sd15FolderHasNoSecondEncoderAndNoNoteAboutIt) {
  write_text(dir_ / "model_index.json", R"({"_class_name": "StableDiffusionPipeline"})");
  write(dir_ / "unet" / "diffusion_pytorch_model.safetensors", [] {
    std::vector<std::pair<std::string, Tensor>> t;
    t.emplace_back("conv_in.weight", Tensor::zeros(DType::kF16, {4, 4, 3, 3}));
    return t;
  }());
  const auto ck = Checkpoint::open(dir_);
  EXPECT_FALSE(ck->has(Component::kTextEncoder2));
  EXPECT_FALSE(ck->tokenizer_dir(Component::kTextEncoder2));
  EXPECT_FALSE(ck->tokenizer_files(Component::kTextEncoder2));
  for (const auto& n : ck->notes())
    EXPECT_EQ(n.find("text_encoder_2"), std::string::npos) << n;
  EXPECT_EQ(ck->model_index()->at("_class_name"), "StableDiffusionPipeline");
}

TEST_F(SgmTest, ModelIndexNotAnObjectIsInvalidModel) {
  write_text(dir_ / "model_index.json", "[1, 2]");
  write(dir_ / "unet" / "diffusion_pytorch_model.safetensors", [] {
    std::vector<std::pair<std::string, Tensor>> t;
    t.emplace_back("conv_in.weight", Tensor::zeros(DType::kF16, {4}));
    return t;
  }());
  try {
    Checkpoint::open(dir_);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("model_index.json"), std::string::npos) << e.what();
  }
}

// ---- the golden sdxl-tiny model ----

#define REQUIRE_SDXL_GOLDEN(dir)                           \
  const auto dir = test::golden_dir("sdxl-tiny");          \
  if (!dir || !fs::exists(*dir / "model-sgm.safetensors")) \
    GTEST_SKIP() << "golden data not found (../shared/golden/sdxl-tiny)";

// Every key of the SGM file maps to exactly the canonical name of the same tensor in the
// diffusers folder, with the same dtype, shape and bytes (after the split/transposition).
TEST(SgmGolden, SameWeightsAsDiffusersFolder) {
  REQUIRE_SDXL_GOLDEN(dir);
  const auto folder = Checkpoint::open(*dir / "model");
  const auto sgm = Checkpoint::open(*dir / "model-sgm.safetensors");
  EXPECT_EQ(folder->format(), CheckpointFormat::kDiffusersFolder);
  EXPECT_EQ(sgm->format(), CheckpointFormat::kSgmSingleFile);
  EXPECT_TRUE(sgm->unexpected_keys().empty()) << sgm->unexpected_keys().front();
  EXPECT_TRUE(folder->unexpected_keys().empty());
  for (const auto& k : sgm->ignored_keys())
    EXPECT_TRUE(k.ends_with("position_ids") || k.ends_with("logit_scale")) << k;
  int compared = 0;
  for (Component c : kAllComponents) {
    SCOPED_TRACE(component_name(c));
    EXPECT_TRUE(folder->has(c));
    const auto& fn = folder->names(c);
    const auto& sn = sgm->names(c);
    const std::set<std::string> fs_(fn.begin(), fn.end()), ss(sn.begin(), sn.end());
    EXPECT_EQ(fs_.size(), fn.size());
    EXPECT_EQ(ss.size(), sn.size());
    std::vector<std::string> only_folder, only_sgm;
    std::set_difference(fs_.begin(), fs_.end(), ss.begin(), ss.end(),
                        std::back_inserter(only_folder));
    std::set_difference(ss.begin(), ss.end(), fs_.begin(), fs_.end(), std::back_inserter(only_sgm));
    EXPECT_TRUE(only_folder.empty())
        << only_folder.size() << " only in the folder, e.g. " << only_folder.front();
    EXPECT_TRUE(only_sgm.empty()) << only_sgm.size() << " only in the SGM file, e.g. "
                                  << only_sgm.front();
    for (const auto& n : sn) {
      if (!fs_.count(n)) continue;
      const TensorView a = folder->get(n), b = sgm->get(n);
      ASSERT_EQ(a.dtype, b.dtype) << n;
      ASSERT_EQ(a.shape, b.shape) << n;
      ASSERT_EQ(std::memcmp(a.data, b.data, a.bytes()), 0) << n;
      ++compared;
    }
  }
  EXPECT_GT(compared, 500);
  // Three views per stacked tensor, one transposed copy.
  const WeightInfo& k =
      sgm->info("text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(k.tensor->name,
            "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight");
  EXPECT_EQ(k.byte_offset, k.bytes());
  EXPECT_NE(sgm->info("text_encoder_2.text_projection.weight").materialized, nullptr);
}

// sgm_key_for, for every weight of the folder, names a key of the golden SGM file (written
// by diffusers' own conversion) with the shape and bytes the announced transform implies,
// and together they cover every key of the file but the ignored ones.
TEST(SgmGolden, ReverseMapGivesTheFilesKeys) {
  REQUIRE_SDXL_GOLDEN(dir);
  const auto folder = Checkpoint::open(*dir / "model");
  const auto file = SafetensorsFile::open(*dir / "model-sgm.safetensors");
  std::vector<std::string> file_keys;
  for (const auto& t : file->tensors())
    file_keys.push_back(t.name);
  const LdmKeyMap forward(file_keys);
  LdmStructure structure;
  structure.unet_layers_per_block = forward.unet_layers_per_block();
  structure.vae_decoder_top_up_index = forward.vae_decoder_max_up_index();
  const auto unet = folder->config_json(Component::kUNet);
  const auto vae = folder->config_json(Component::kVae);
  ASSERT_TRUE(unet && vae);
  structure.unet_up_attention.clear();
  for (const auto& t : unet->at("up_block_types"))
    structure.unet_up_attention.push_back(t.get<std::string>().find("CrossAttn") !=
                                          std::string::npos);
  structure.vae_levels = static_cast<int>(vae->at("block_out_channels").size());

  std::set<std::string> produced;
  for (Component c : kAllComponents)
    for (const auto& name : folder->names(c)) {
      SgmKey k = sgm_key_for(name, structure);
      // sgm_key_for writes the CLIP-L tower with `text_model.`, as SDXL base does; the golden
      // file (diffusers' conversion) has it without — both forms read the same.
      const std::string with = s(kClip, "text_model.");
      if (!file->find(k.key) && k.key.starts_with(with))
        k.key = s(kClip, std::string_view(k.key).substr(with.size()));
      produced.insert(k.key);
      const TensorInfo* t = file->find(k.key);
      if (!t) {
        ADD_FAILURE() << name << " -> " << k.key << ": not in the SGM file";
        continue;
      }
      const TensorView w = folder->get(name);
      const auto* stored = static_cast<const uint8_t*>(file->view(*t).data);
      ASSERT_EQ(t->dtype, w.dtype) << name;
      if (k.stacked_part >= 0) {
        Shape want = w.shape;
        want[0] *= 3;
        EXPECT_EQ(t->shape, want) << name;
        EXPECT_EQ(std::memcmp(stored + k.stacked_part * w.bytes(), w.data, w.bytes()), 0) << name;
      } else if (k.transposed) {
        ASSERT_EQ(t->shape, (Shape{w.shape[1], w.shape[0]})) << name;
        const size_t es = dtype_size(w.dtype);
        for (int64_t r = 0; r < w.shape[0]; ++r)
          for (int64_t c2 = 0; c2 < w.shape[1]; ++c2)
            ASSERT_EQ(
                std::memcmp(stored + (c2 * w.shape[0] + r) * es,
                            static_cast<const uint8_t*>(w.data) + (r * w.shape[1] + c2) * es, es),
                0)
                << name;
      } else {
        const Shape want = k.as_1x1_conv ? Shape{w.shape[0], w.shape[1], 1, 1} : w.shape;
        EXPECT_EQ(t->shape, want) << name;
        EXPECT_EQ(std::memcmp(stored, w.data, w.bytes()), 0) << name;
      }
    }
  for (const auto& k : file_keys) {
    if (forward.map(k).kind != KeyMapping::Kind::kIgnored) {
      EXPECT_TRUE(produced.count(k)) << k << ": no canonical weight maps to it";
    }
  }
}

TEST(SgmGolden, FolderModelIndexAndTokenizers) {
  REQUIRE_SDXL_GOLDEN(dir);
  const auto ck = Checkpoint::open(*dir / "model");
  const auto mi = ck->model_index();
  ASSERT_TRUE(mi);
  EXPECT_EQ(mi->at("_class_name"), "StableDiffusionXLPipeline");
  EXPECT_EQ(mi->at("force_zeros_for_empty_prompt"), true);
  EXPECT_EQ(ck->tokenizer_dir(Component::kTextEncoder2), *dir / "model" / "tokenizer_2");
  const auto t1 = ck->tokenizer_files(), t2 = ck->tokenizer_files(Component::kTextEncoder2);
  ASSERT_TRUE(t1 && t2);
  EXPECT_FALSE(t2->vocab_json.empty());
  EXPECT_NE(t1->tokenizer_config_json, t2->tokenizer_config_json);  // tokenizer_2 pads with "!"
}

}  // namespace
}  // namespace hyrt::weights

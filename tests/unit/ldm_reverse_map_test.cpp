// weights::ldm_key_for (canonical -> LDM key) against weights::LdmKeyMap (LDM ->
// canonical): an exact inverse for every weight of SD 1.5 at full and tiny size and of an
// odd-shaped variant, and — where ../shared/golden exists — the key set of the golden tiny
// model's LDM file.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "models/config.h"
#include "models/keys.h"
#include "models/sd15/random_checkpoint.h"
#include "models/sd15/random_weights.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/ldm_names.h"
#include "weights/safetensors.h"

namespace hyrt::models::sd15 {
namespace {

using weights::Component;
using weights::KeyMapping;
using weights::ldm_key_for;
using weights::ldm_stores_as_1x1_conv;

std::vector<ExpectedTensor> all_tensors(const ClipTextConfig& clip, const UNetConfig& unet,
                                        const VaeConfig& vae) {
  std::vector<ExpectedTensor> all = expected_text_encoder_tensors(clip);
  for (auto& e : expected_unet_tensors(unet))
    all.push_back(std::move(e));
  for (auto& e : expected_vae_tensors(vae, /*decoder_only=*/false))
    all.push_back(std::move(e));
  return all;
}

Component component_of(const std::string& canonical) {
  if (canonical.rfind("unet.", 0) == 0) return Component::kUNet;
  if (canonical.rfind("vae.", 0) == 0) return Component::kVae;
  return Component::kTextEncoder;
}

// canonical -> LDM -> canonical is the identity, LDM keys are distinct, and the forward
// map infers the structure the reverse map was given.
void expect_round_trip(const ClipTextConfig& clip, const UNetConfig& unet, const VaeConfig& vae,
                       int vae_top_up_index = -1) {
  SCOPED_TRACE(testing::Message() << "VAE decoder top up index " << vae_top_up_index);
  const auto all = all_tensors(clip, unet, vae);
  auto structure = ldm_structure(unet, vae);
  structure.vae_decoder_top_up_index = vae_top_up_index;
  std::vector<std::string> keys;
  std::unordered_map<std::string, std::string> owner;  // LDM key -> canonical name
  for (const auto& e : all) {
    std::string key = ldm_key_for(e.name, structure);
    auto [it, fresh] = owner.emplace(key, e.name);
    EXPECT_TRUE(fresh) << e.name << " and " << it->second << " both map to " << key;
    keys.push_back(std::move(key));
  }
  const weights::LdmKeyMap map(keys);
  EXPECT_EQ(map.unet_layers_per_block(), unet.layers_per_block);
  EXPECT_EQ(map.vae_decoder_max_up_index(),
            vae_top_up_index < 0 ? static_cast<int>(vae.block_out_channels.size()) - 1
                                 : vae_top_up_index);
  int squeezed = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const KeyMapping m = map.map(keys[i]);
    ASSERT_EQ(m.kind, KeyMapping::Kind::kMapped) << keys[i];
    EXPECT_EQ(m.canonical, all[i].name) << "via " << keys[i];
    EXPECT_EQ(m.component, component_of(all[i].name)) << all[i].name;
    EXPECT_EQ(m.squeeze_1x1, ldm_stores_as_1x1_conv(all[i].name)) << all[i].name;
    squeezed += m.squeeze_1x1;
  }
  // q, k, v, proj_out of the encoder's and the decoder's mid-block attention.
  EXPECT_EQ(squeezed, vae.mid_block_add_attention ? 8 : 0);
}

TEST(LdmReverseMap, FullSizeSd15IsExactInverse) {
  expect_round_trip(ClipTextConfig{}, UNetConfig{}, VaeConfig{});
}

TEST(LdmReverseMap, TinyConfigsAreExactInverse) {
  expect_round_trip(tiny_clip_text_config(), tiny_unet_config(), tiny_vae_config());
  // As diffusers' converter numbers a two-level VAE decoder: up.3, up.2.
  expect_round_trip(tiny_clip_text_config(), tiny_unet_config(), tiny_vae_config(), 3);
}

TEST(LdmReverseMap, OddStructureIsExactInverse) {
  // Three UNet levels, one layer per block, and a VAE of three levels: the numbering
  // must follow the structure, not SD 1.5's constants.
  UNetConfig unet = tiny_unet_config();
  unet.block_out_channels = {32, 64, 64};
  unet.down_block_types = {"CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"};
  unet.up_block_types = {"UpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"};
  unet.num_attention_heads = {8, 8, 8};
  unet.transformer_layers_per_block = {1, 1, 1};
  unet.layers_per_block = 1;
  VaeConfig vae = tiny_vae_config();
  vae.block_out_channels = {32, 32, 64};
  expect_round_trip(tiny_clip_text_config(), unet, vae);
  const auto s = ldm_structure(unet, vae);
  EXPECT_EQ(ldm_key_for("unet.up_blocks.0.upsamplers.0.conv.weight", s),
            "model.diffusion_model.output_blocks.1.1.conv.weight");
  EXPECT_EQ(ldm_key_for("unet.down_blocks.1.downsamplers.0.conv.bias", s),
            "model.diffusion_model.input_blocks.4.0.op.bias");
  EXPECT_EQ(ldm_key_for("vae.decoder.up_blocks.0.upsamplers.0.conv.weight", s),
            "first_stage_model.decoder.up.2.upsample.conv.weight");
}

TEST(LdmReverseMap, KnownSd15Keys) {
  // Keys as the original v1-5-pruned-emaonly.safetensors names them.
  const std::pair<const char*, const char*> cases[] = {
      {"unet.time_embedding.linear_2.weight", "model.diffusion_model.time_embed.2.weight"},
      {"unet.conv_in.weight", "model.diffusion_model.input_blocks.0.0.weight"},
      {"unet.down_blocks.0.resnets.0.conv1.weight",
       "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"},
      {"unet.down_blocks.1.resnets.0.conv_shortcut.weight",
       "model.diffusion_model.input_blocks.4.0.skip_connection.weight"},
      {"unet.down_blocks.1.attentions.0.proj_in.weight",
       "model.diffusion_model.input_blocks.4.1.proj_in.weight"},
      {"unet.down_blocks.0.downsamplers.0.conv.weight",
       "model.diffusion_model.input_blocks.3.0.op.weight"},
      {"unet.down_blocks.3.resnets.1.time_emb_proj.bias",
       "model.diffusion_model.input_blocks.11.0.emb_layers.1.bias"},
      {"unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
       "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight"},
      {"unet.mid_block.resnets.1.norm2.weight",
       "model.diffusion_model.middle_block.2.out_layers.0.weight"},
      {"unet.up_blocks.0.upsamplers.0.conv.weight",
       "model.diffusion_model.output_blocks.2.1.conv.weight"},
      {"unet.up_blocks.1.upsamplers.0.conv.weight",
       "model.diffusion_model.output_blocks.5.2.conv.weight"},
      {"unet.up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight",
       "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.weight"},
      {"unet.conv_norm_out.bias", "model.diffusion_model.out.0.bias"},
      {"unet.conv_out.weight", "model.diffusion_model.out.2.weight"},
      {"vae.encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
       "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight"},
      {"vae.encoder.down_blocks.0.downsamplers.0.conv.weight",
       "first_stage_model.encoder.down.0.downsample.conv.weight"},
      {"vae.encoder.mid_block.attentions.0.to_out.0.weight",
       "first_stage_model.encoder.mid.attn_1.proj_out.weight"},
      {"vae.decoder.mid_block.attentions.0.group_norm.bias",
       "first_stage_model.decoder.mid.attn_1.norm.bias"},
      {"vae.decoder.mid_block.resnets.1.conv2.weight",
       "first_stage_model.decoder.mid.block_2.conv2.weight"},
      {"vae.decoder.up_blocks.0.resnets.2.conv1.weight",
       "first_stage_model.decoder.up.3.block.2.conv1.weight"},
      {"vae.decoder.up_blocks.2.upsamplers.0.conv.bias",
       "first_stage_model.decoder.up.1.upsample.conv.bias"},
      {"vae.decoder.conv_norm_out.weight", "first_stage_model.decoder.norm_out.weight"},
      {"vae.quant_conv.weight", "first_stage_model.quant_conv.weight"},
      {"vae.post_quant_conv.bias", "first_stage_model.post_quant_conv.bias"},
      {"text_encoder.text_model.encoder.layers.11.mlp.fc2.weight",
       "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight"},
      {"text_encoder.text_model.final_layer_norm.bias",
       "cond_stage_model.transformer.text_model.final_layer_norm.bias"},
  };
  for (const auto& [canonical, ldm] : cases)
    EXPECT_EQ(ldm_key_for(canonical), ldm) << canonical;
  EXPECT_TRUE(ldm_stores_as_1x1_conv("vae.decoder.mid_block.attentions.0.to_q.weight"));
  EXPECT_FALSE(ldm_stores_as_1x1_conv("vae.decoder.mid_block.attentions.0.to_q.bias"));
  EXPECT_FALSE(ldm_stores_as_1x1_conv("vae.decoder.mid_block.attentions.0.group_norm.weight"));
  EXPECT_FALSE(ldm_stores_as_1x1_conv("unet.mid_block.attentions.0.proj_in.weight"));
}

TEST(LdmReverseMap, NamesWithoutLdmKeyThrow) {
  for (const char* bad : {
           "unet.down_blocks.4.resnets.0.conv1.weight",        // only 4 levels
           "unet.down_blocks.0.resnets.2.conv1.weight",        // 2 resnets per down level
           "unet.up_blocks.0.resnets.3.conv1.weight",          // 3 per up level
           "unet.down_blocks.0.resnets.0.bogus.weight",        // unknown resnet part
           "unet.mid_block.resnets.2.conv1.weight",            //
           "vae.decoder.up_blocks.4.resnets.0.conv1.weight",   // only 4 levels
           "vae.encoder.mid_block.attentions.0.query.weight",  // old name: not canonical
           "text_encoder.embeddings.token_embedding.weight",   // canonical has text_model.
           "controlnet.conv_in.weight",
           "unet.",
       }) {
    try {
      ldm_key_for(bad);
      ADD_FAILURE() << bad << " mapped";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << bad;
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(LdmReverseMap, InvalidStructureThrows) {
  weights::LdmStructure s;
  s.vae_decoder_top_up_index = 2;  // below vae_levels - 1 = 3: up indices would go negative
  EXPECT_THROW(ldm_key_for("vae.decoder.conv_in.weight", s), Error);
  s = {};
  s.unet_layers_per_block = 0;
  EXPECT_THROW(ldm_key_for("unet.conv_in.weight", s), Error);
  s = {};
  s.unet_up_attention.clear();
  EXPECT_THROW(ldm_key_for("unet.conv_in.weight", s), Error);
}

TEST(LdmReverseMap, GoldenTinyLdmFileHasExactlyTheseKeys) {
  const auto golden = test::golden_dir();
  if (!golden || !std::filesystem::exists(*golden / "model-ldm.safetensors") ||
      !std::filesystem::is_directory(*golden / "model"))
    GTEST_SKIP() << "golden sd15-tiny (model/ and model-ldm.safetensors) not found";
  const auto folder = weights::Checkpoint::open(*golden / "model");
  const ModelConfigs cfg = load_configs(*folder);
  ASSERT_TRUE(cfg.unet && cfg.vae && cfg.text_encoder);
  auto structure = ldm_structure(*cfg.unet, *cfg.vae);
  // The file was made by diffusers' convert_diffusers_to_original_stable_diffusion.py,
  // which numbers the decoder's levels up.3, up.2, ... whatever their count.
  structure.vae_decoder_top_up_index = 3;

  const auto ldm = weights::SafetensorsFile::open(*golden / "model-ldm.safetensors");
  std::vector<std::string> file_keys;
  for (const auto& t : ldm->tensors())
    file_keys.push_back(t.name);
  const weights::LdmKeyMap forward(file_keys);
  std::set<std::string> in_file;
  for (const auto& k : file_keys)
    if (forward.map(k).kind != KeyMapping::Kind::kIgnored) in_file.insert(k);

  std::set<std::string> produced;
  for (Component c : weights::kAllComponents)
    for (const auto& name : folder->names(c)) {
      const std::string key = ldm_key_for(name, structure);
      EXPECT_TRUE(produced.insert(key).second) << key;
      const auto* t = ldm->find(key);
      if (!t) {
        ADD_FAILURE() << name << " -> " << key << ": not in the LDM file";
        continue;
      }
      Shape shape = folder->info(name).shape;
      if (ldm_stores_as_1x1_conv(name)) {
        shape.push_back(1);
        shape.push_back(1);
      }
      EXPECT_EQ(t->shape, shape) << key;
    }
  EXPECT_EQ(produced, in_file);
  EXPECT_EQ(produced.size(), in_file.size());
}

}  // namespace
}  // namespace hyrt::models::sd15

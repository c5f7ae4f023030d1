// LoRA layer names on the golden SDXL model: the same adapters written in kohya's SDXL naming
// (SGM UNet modules `lora_unet_input_blocks_4_1_...`, `lora_te1_`, `lora_te2_`) and in the
// diffusers / PEFT naming (`unet.down_blocks.1.attentions.0...lora_A.weight`) must adapt the same
// layers: identical UNet outputs and text states, different from the model without them.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "models/random_checkpoint.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/parity.h"
#include "test_util.h"
#include "weights/ldm_names.h"
#include "weights/safetensors.h"

namespace hyrt {
namespace {

using weights::Component;

std::string without_suffix(const std::string& s, const std::string& suffix) {
  return s.substr(0, s.size() - suffix.size());
}

std::string underscored(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

// A LoRA file in memory from (key, tensor) pairs.
std::shared_ptr<const weights::LoraFile> lora_of(
    const std::vector<std::pair<std::string, Tensor>>& tensors, const char* label) {
  std::vector<std::pair<std::string, TensorView>> views;
  for (const auto& [n, t] : tensors)
    views.emplace_back(n, t.view());
  return weights::LoraFile::from_file(
      weights::SafetensorsFile::from_bytes(weights::serialize_safetensors(views), label), label);
}

TEST(LoraNaming, KohyaSdxlNamesAdaptTheLayersPeftNamesDo) {
  auto golden = test::golden_dir("sdxl-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sdxl-tiny not found: skipped";
  exec::Engine engine;
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  auto ck = weights::Checkpoint::open(*golden / "model");
  // Adapters on every UNet to_q / to_k / proj_in and every q_proj of both text encoders.
  std::vector<std::pair<std::string, Tensor>> kohya, peft;
  uint64_t seed = 7;
  // How the model is numbered in SGM files (what kohya names SDXL UNet modules after).
  const weights::LdmStructure sgm =
      models::ldm_structure(model->unet_config(), model->vae_config());
  for (Component c : {Component::kUNet, Component::kTextEncoder, Component::kTextEncoder2}) {
    for (const std::string& n : ck->names(c)) {
      const bool pick = n.find(".to_q.weight") != std::string::npos ||
                        n.find(".to_k.weight") != std::string::npos ||
                        n.find(".proj_in.weight") != std::string::npos ||
                        n.find(".q_proj.weight") != std::string::npos;
      if (!pick) continue;
      const Shape s = ck->info(n).shape;
      const std::string module = without_suffix(n, ".weight");
      const std::string comp(weights::component_name(c));
      std::string k;
      if (c == Component::kUNet) {
        const std::string ldm = weights::ldm_key_for(n, sgm);  // model.diffusion_model.X.weight
        k = "lora_unet_" +
            underscored(without_suffix(ldm.substr(std::string("model.diffusion_model.").size()),
                                       ".weight"));
      } else {
        k = (c == Component::kTextEncoder ? "lora_te1_" : "lora_te2_") +
            underscored(module.substr(comp.size() + 1));
      }
      const Shape down_shape = s.rank() == 4 ? Shape{2, s[1], 1, 1} : Shape{2, s[1]};
      const Shape up_shape = s.rank() == 4 ? Shape{s[0], 2, 1, 1} : Shape{s[0], 2};
      const Tensor down = test::random_tensor(down_shape, seed++, 0.5f);
      const Tensor up = test::random_tensor(up_shape, seed++, 0.5f);
      auto copy = [](const Tensor& t) {
        Tensor c(t.dtype(), t.shape());
        std::copy_n(t.as<float>(), t.numel(), c.as<float>());
        return c;
      };
      kohya.emplace_back(k + ".lora_down.weight", copy(down));
      kohya.emplace_back(k + ".lora_up.weight", copy(up));
      peft.emplace_back(module + ".lora_A.weight", copy(down));
      peft.emplace_back(module + ".lora_B.weight", copy(up));
    }
  }
  ASSERT_GT(kohya.size(), 8u);
  // kohya's SGM names are not the diffusers ones (else this test would prove nothing).
  EXPECT_NE(kohya.front().first.find("input_blocks"), std::string::npos) << kohya.front().first;
  const auto a = lora_of(kohya, "kohya");
  const auto b = lora_of(peft, "peft");

  const auto& uc = model->unet_config();
  const Tensor x = test::random_tensor({1, 8, 8, uc.in_channels}, 1);
  const Tensor ctx = test::random_tensor({1, 77, uc.cross_attention_dim}, 2);
  const Tensor pooled = test::random_tensor({1, uc.pooled_text_dim()}, 3);
  const std::vector<float> time_ids{64, 64, 0, 0, 64, 64};
  const std::vector<float> t{500.0f};
  const pipeline::UNetConditioning cond{
      .context = ctx.view(), .text_embeds = pooled.view(), .time_ids = time_ids};
  std::vector<int32_t> ids(77, 0);
  ids[0] = model->text_config(0).bos_token_id;
  ids[1] = 320;
  ids[2] = model->text_config(0).eos_token_id;

  auto run = [&](const std::shared_ptr<const weights::LoraFile>& f) {
    const weights::LoraUse use{f, 0.9f};
    model->set_loras(f ? std::span<const weights::LoraUse>(&use, 1)
                       : std::span<const weights::LoraUse>{});
    std::vector<Tensor> out;
    out.push_back(model->predict_noise(x.view(), t, cond));
    out.push_back(model->encode_tokens(0, ids, 1).hidden);
    out.push_back(model->encode_tokens(1, ids, 1).hidden);
    return out;
  };
  const std::vector<Tensor> none = run(nullptr), by_kohya = run(a), by_peft = run(b);
  const char* what[] = {"UNet", "text encoder 1", "text encoder 2"};
  for (size_t i = 0; i < none.size(); ++i) {
    EXPECT_LT(pipeline::relative_l2(by_kohya[i].view(), by_peft[i].view()), 1e-6) << what[i];
    EXPECT_GT(pipeline::relative_l2(by_kohya[i].view(), none[i].view()), 1e-3)
        << what[i] << ": the LoRA changed nothing";
  }
}

}  // namespace
}  // namespace hyrt

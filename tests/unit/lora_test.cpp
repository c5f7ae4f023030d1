// LoRA files (weights/lora.h): the formats read, how layers are named, how LoRAs on one layer
// stack and scale, and the errors for LoRAs that do not fit the model.
#include "weights/lora.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "test_util.h"
#include "weights/memory_weights.h"

namespace hyrt::weights {
namespace {

Tensor filled(Shape s, uint64_t seed) {
  return test::random_tensor(s, seed);
}

Tensor scalar(float v) {
  Tensor t(DType::kF32, Shape{});
  *t.as<float>() = v;
  return t;
}

std::shared_ptr<const LoraFile> lora_of(
    const std::vector<std::pair<std::string, TensorView>>& views) {
  return LoraFile::from_file(SafetensorsFile::from_bytes(serialize_safetensors(views), "test"),
                             "test.safetensors");
}

// A model with one attention projection (linear [8, 6]) and one 3x3 convolution [5, 3, 3, 3].
struct Model {
  MemoryWeights w;
  std::unique_ptr<LoraTargetIndex> index;
  Model() {
    w.add("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
          filled({8, 6}, 1));
    w.add("unet.down_blocks.0.resnets.0.conv1.weight", filled({5, 3, 3, 3}, 2));
    w.add("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight", filled({4, 4}, 3));
    std::vector<LoraTarget> t{
        {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", Component::kUNet,
         Shape{8, 6}},
        {"unet.down_blocks.0.resnets.0.conv1", Component::kUNet, Shape{5, 3, 3, 3}},
        {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj", Component::kTextEncoder,
         Shape{4, 4}}};
    index = std::make_unique<LoraTargetIndex>(std::move(t), LdmStructure{}, false);
  }
};

const char* kToQ = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q";

TEST(Lora, NamesEveryFormatUses) {
  Model m;
  // kohya with diffusers names, kohya with LDM names (SD 1.5: down level 1's first attention
  // is input_blocks.4.1), PEFT, the text encoder.
  EXPECT_NE(m.index->find("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"),
            nullptr);
  const LoraTarget* ldm =
      m.index->find("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q");
  ASSERT_NE(ldm, nullptr);
  EXPECT_EQ(ldm->module, kToQ);
  EXPECT_NE(m.index->find("lora_unet_input_blocks_1_0_in_layers_2"), nullptr);  // resnet conv1
  EXPECT_NE(m.index->find(kToQ), nullptr);
  EXPECT_NE(m.index->find("lora_te_text_model_encoder_layers_0_self_attn_q_proj"), nullptr);
  EXPECT_EQ(m.index->find("lora_te1_text_model_encoder_layers_0_self_attn_q_proj"), nullptr);
  EXPECT_EQ(m.index->find("lora_unet_mid_block_attentions_0_proj_in"), nullptr);
}

// A switch writes into the last overlay's tensors when the shapes agree (no fresh pages), and
// every value is checked before any is written: a multiplier that would overflow the adapters'
// f16, or a NaN in the file, is refused with the reused tensors as they were.
TEST(Lora, ReusesTheLastTensorsAndChecksBeforeWriting) {
  Model m;
  const Tensor kd = filled({2, 6}, 10), ku = filled({8, 2}, 11);
  auto kohya = lora_of(
      {{"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", kd.view()},
       {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight", ku.view()}});
  const LoraUse one[] = {{kohya, 1.0f}};
  LoraWeights first(m.w, one, *m.index, DType::kF16);
  const TensorView up1 = first.get(lora_up_name(kToQ));
  const std::vector<uint16_t> before(up1.as<uint16_t>(), up1.as<uint16_t>() + up1.numel());

  const LoraUse half[] = {{kohya, 0.5f}};
  LoraWeights second(m.w, half, *m.index, DType::kF16, first.storage());
  EXPECT_EQ(second.storage(), first.storage());
  const TensorView up2 = second.get(lora_up_name(kToQ));
  EXPECT_EQ(up2.data, up1.data);
  for (int64_t i = 0; i < up2.numel(); ++i)
    EXPECT_EQ(f16_to_f32(up2.as<uint16_t>()[i]), 0.5f * f16_to_f32(before[static_cast<size_t>(i)]));
  const std::vector<uint16_t> kept(up2.as<uint16_t>(), up2.as<uint16_t>() + up2.numel());

  // Refused before writing: the tensors hold the second set's values still.
  const LoraUse huge[] = {{kohya, 1e9f}};
  EXPECT_THROW(
      {
        try {
          LoraWeights(m.w, huge, *m.index, DType::kF16, second.storage());
        } catch (const Error& e) {
          EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
          EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos) << e.what();
          throw;
        }
      },
      Error);
  Tensor nan_up = filled({8, 2}, 11);
  nan_up.as<float>()[5] = std::nanf("");
  auto nan_lora = lora_of(
      {{"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", kd.view()},
       {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight",
        nan_up.view()}});
  const LoraUse with_nan[] = {{nan_lora, 1.0f}};
  EXPECT_THROW(LoraWeights(m.w, with_nan, *m.index, DType::kF16, second.storage()), Error);
  EXPECT_EQ(std::vector<uint16_t>(up2.as<uint16_t>(), up2.as<uint16_t>() + up2.numel()), kept);

  // Other shapes (f32 adapters, another rank): tensors of their own.
  EXPECT_NE(LoraWeights(m.w, one, *m.index, DType::kF32, second.storage()).storage(),
            second.storage());
  const Tensor pd = filled({1, 6}, 14), pu = filled({8, 1}, 15);
  auto peft = lora_of({{std::string(kToQ) + ".lora_A.weight", pd.view()},
                       {std::string(kToQ) + ".lora_B.weight", pu.view()}});
  const LoraUse both[] = {{kohya, 1.0f}, {peft, 1.0f}};
  EXPECT_NE(LoraWeights(m.w, both, *m.index, DType::kF16, second.storage()).storage(),
            second.storage());
}

TEST(Lora, StacksAndScalesAsTheRuleSays) {
  Model m;
  // kohya rank 2, alpha 1, on to_q and (3x3 down) conv1; PEFT rank 1 without alpha on to_q.
  const Tensor kd = filled({2, 6}, 10), ku = filled({8, 2}, 11);
  const Tensor cd = filled({2, 3, 3, 3}, 12), cu = filled({5, 2, 1, 1}, 13);
  const Tensor one = scalar(1.0f);
  auto kohya = lora_of({
      {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", kd.view()},
      {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight", ku.view()},
      {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha", one.view()},
      {"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight", cd.view()},
      {"lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight", cu.view()},
  });
  EXPECT_EQ(kohya->format(), "kohya");
  const Tensor pd = filled({1, 6}, 14), pu = filled({8, 1}, 15);
  auto peft = lora_of({{std::string(kToQ) + ".lora_A.weight", pd.view()},
                       {std::string(kToQ) + ".lora_B.weight", pu.view()}});
  EXPECT_EQ(peft->format(), "peft");

  const LoraUse uses[] = {{kohya, 0.5f}, {peft, 2.0f}};
  LoraWeights lw(m.w, uses, *m.index);
  EXPECT_EQ(lw.adapted_modules(), 2u);
  const TensorView down = lw.get(lora_down_name(kToQ)), up = lw.get(lora_up_name(kToQ));
  ASSERT_EQ(down.shape, (Shape{3, 6}));
  ASSERT_EQ(up.shape, (Shape{8, 3}));
  for (int i = 0; i < 12; ++i)
    EXPECT_EQ(down.as<float>()[i], kd.as<float>()[i]);
  for (int i = 0; i < 6; ++i)
    EXPECT_EQ(down.as<float>()[12 + i], pd.as<float>()[i]);
  for (int o = 0; o < 8; ++o) {
    // kohya: 0.5 · (1 / 2); PEFT without alpha: 2 · (1 / 1).
    EXPECT_FLOAT_EQ(up.as<float>()[o * 3 + 0], ku.as<float>()[o * 2 + 0] * 0.25f);
    EXPECT_FLOAT_EQ(up.as<float>()[o * 3 + 1], ku.as<float>()[o * 2 + 1] * 0.25f);
    EXPECT_FLOAT_EQ(up.as<float>()[o * 3 + 2], pu.as<float>()[o] * 2.0f);
  }
  const std::string conv = "unet.down_blocks.0.resnets.0.conv1";
  EXPECT_EQ(lw.get(lora_down_name(conv)).shape, (Shape{2, 3, 3, 3}));
  EXPECT_EQ(lw.get(lora_up_name(conv)).shape, (Shape{5, 2, 1, 1}));
  // Base weights pass through with the base's identity (shared packs), adapters are its own.
  const std::string base = std::string(kToQ) + ".weight";
  EXPECT_EQ(lw.get(base).data, m.w.get(base).data);
  EXPECT_EQ(lw.generation_of(base), m.w.generation());
  EXPECT_EQ(lw.generation_of(lora_up_name(kToQ)), lw.generation());
  EXPECT_NE(lw.generation(), m.w.generation());
  EXPECT_FALSE(lw.signature().empty());

  // f16 adapters (a 16-bit or int8 model): the same values, rounded.
  LoraWeights half_precision(m.w, uses, *m.index, DType::kF16);
  const TensorView up16 = half_precision.get(lora_up_name(kToQ));
  ASSERT_EQ(up16.dtype, DType::kF16);
  for (int64_t i = 0; i < up16.numel(); ++i)
    EXPECT_NEAR(f16_to_f32(up16.as<uint16_t>()[i]), up.as<float>()[i],
                1e-3f * std::abs(up.as<float>()[i]) + 1e-7f);

  // Multiplier 0 leaves a module out; another multiplier keeps the signature.
  const LoraUse half[] = {{kohya, 0.25f}, {peft, 1.0f}};
  EXPECT_EQ(LoraWeights(m.w, half, *m.index).signature(), lw.signature());
  const LoraUse off[] = {{kohya, 0.0f}};
  EXPECT_EQ(LoraWeights(m.w, off, *m.index).adapted_modules(), 0u);
}

// A file whose tensors sit at odd addresses (its header one byte longer, as a hostile or
// careless writer may make it: safetensors does not require aligned data) reads the same
// values, and its adapters are aligned for their types (the file serves aligned copies).
TEST(Lora, MisalignedTensorsReadTheSame) {
  Model m;
  const Tensor kd = filled({2, 6}, 20), ku = filled({8, 2}, 21), alpha = scalar(1.5f);
  Tensor kd16(DType::kF16, Shape{2, 6});
  convert_from_f32(kd.as<float>(), DType::kF16, kd16.data(), 12);
  const std::vector<std::pair<std::string, TensorView>> views{
      {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight", kd16.view()},
      {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight", ku.view()},
      {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha", alpha.view()}};
  const std::vector<uint8_t> bytes = serialize_safetensors(views);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  ASSERT_EQ(n % 2, 0u);
  std::vector<uint8_t> odd(bytes.begin(), bytes.begin() + 8 + static_cast<int64_t>(n));
  odd.push_back(' ');  // JSON allows trailing spaces: the data now starts one byte later
  odd.insert(odd.end(), bytes.begin() + 8 + static_cast<int64_t>(n), bytes.end());
  const uint64_t n1 = n + 1;
  std::memcpy(odd.data(), &n1, 8);
  auto aligned = lora_of(views);
  auto shifted = LoraFile::from_file(SafetensorsFile::from_bytes(odd, "odd"), "odd.safetensors");
  const LoraUse a{aligned, 1.0f}, s{shifted, 1.0f};
  const LoraWeights la(m.w, std::span<const LoraUse>(&a, 1), *m.index);
  const LoraWeights ls(m.w, std::span<const LoraUse>(&s, 1), *m.index);
  for (const std::string& name : {lora_down_name(kToQ), lora_up_name(kToQ)}) {
    SCOPED_TRACE(name);
    const TensorView x = la.get(name), y = ls.get(name);
    ASSERT_EQ(x.shape, y.shape);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(y.data) % dtype_size(y.dtype), 0u);
    // Compared as values: however each is held, they must agree.
    std::vector<float> fx(static_cast<size_t>(x.numel())), fy(fx.size());
    convert_to_f32(x.dtype, x.data, fx.data(), fx.size());
    convert_to_f32(y.dtype, y.data, fy.data(), fy.size());
    EXPECT_EQ(fx, fy);
  }
}

void expect_error(const std::function<void()>& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << part << "\"";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

TEST(Lora, RefusesWhatDoesNotFit) {
  Model m;
  // Another architecture's keys: named in the message.
  auto other =
      lora_of({{"lora_unet_input_blocks_7_1_proj_in.lora_down.weight", filled({2, 6}, 1).view()},
               {"lora_unet_input_blocks_7_1_proj_in.lora_up.weight", filled({8, 2}, 2).view()}});
  const LoraUse o[] = {{other, 1.0f}};
  expect_error([&] { LoraWeights(m.w, o, *m.index); }, "lora_unet_input_blocks_7_1_proj_in");
  expect_error([&] { LoraWeights(m.w, o, *m.index); }, "matches no layer");
  // Matched, but shaped for a wider layer.
  auto wide = lora_of({{std::string(kToQ) + ".lora_A.weight", filled({2, 7}, 1).view()},
                       {std::string(kToQ) + ".lora_B.weight", filled({8, 2}, 2).view()}});
  const LoraUse w[] = {{wide, 1.0f}};
  expect_error([&] { LoraWeights(m.w, w, *m.index); }, "do not fit the layer's weight [8, 6]");
  // Adapter kinds hyrt does not run, a module without its up, not a LoRA at all.
  expect_error([&] { lora_of({{"lora_unet_x.hada_w1_a", filled({2, 2}, 1).view()}}); }, "LoHa");
  expect_error(
      [&] {
        lora_of({{"lora_unet_x.lora_down.weight", filled({2, 2}, 1).view()}});
      },
      "a down but no up");
  expect_error(
      [&] {
        lora_of({{"model.diffusion_model.conv_in.weight", filled({2, 2}, 1).view()}});
      },
      "is not a LoRA file");
  expect_error([&] { LoraFile::open("/nonexistent/x.safetensors"); }, "no such file");
}

}  // namespace
}  // namespace hyrt::weights

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/half.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/quantizing_source.h"

using namespace hyrt;

TEST(QuantizingWeights, QuantizesWhatThePolicySaysOnFirstUse) {
  weights::MemoryWeights src;
  auto f16 = [](Shape s, uint64_t seed) {
    Tensor f = test::random_tensor(s, seed);
    Tensor h(DType::kF16, s);
    convert_from_f32(f.as<float>(), DType::kF16, h.data(), static_cast<size_t>(f.numel()));
    return h;
  };
  src.add("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
          f16({32, 48}, 1));
  src.add("unet.down_blocks.0.attentions.0.norm.weight", f16({32}, 2));
  src.add("unet.down_blocks.0.resnets.0.conv1.bias", f16({32}, 3));
  weights::QuantizingWeights q(src);

  const TensorView w =
      q.get("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight");
  EXPECT_EQ(w.dtype, DType::kS8);
  EXPECT_EQ(w.shape, (Shape{32, 48}));
  const auto s = q.scale("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->shape, Shape{32});
  EXPECT_EQ(q.get("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight").data,
            w.data);  // cached
  // Dequantized weights are close to the source.
  const Tensor deq = weights::dequantize_per_row(w, *s);
  const Tensor ref =
      to_f32(src.get("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"));
  EXPECT_LT(test::relative_l2(deq.as<float>(), ref.as<float>(), 32 * 48), 1e-2);

  EXPECT_EQ(q.get("unet.down_blocks.0.attentions.0.norm.weight").dtype, DType::kF16);
  EXPECT_FALSE(q.scale("unet.down_blocks.0.attentions.0.norm.weight").has_value());
  EXPECT_EQ(q.get("unet.down_blocks.0.resnets.0.conv1.bias").dtype, DType::kF16);
  EXPECT_EQ(q.quantized_bytes(), 32u * 48 + 32 * 4);
  EXPECT_THROW(q.get("nope"), Error);
}

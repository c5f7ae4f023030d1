#include <gtest/gtest.h>

#include "core/error.h"
#include "core/tensor.h"
#include "ir/graph.h"

using namespace hyrt;
using namespace hyrt::ir;

TEST(Graph, InfersShapesThroughAResnetLikeChain) {
  Graph g;
  ValueId x = g.add_input("x", DType::kF32, {2, 16, 16, 32});
  ValueId gamma = g.add_weight("gn.weight", DType::kF16, {32});
  ValueId beta = g.add_weight("gn.bias", DType::kF16, {32});
  ValueId w = g.add_weight("conv.weight", DType::kF16, {64, 32, 3, 3});
  ValueId b = g.add_weight("conv.bias", DType::kF16, {64});
  ValueId h = g.add_node(OpKind::kGroupNorm, {x, gamma, beta}, NormAttrs{8, 1e-5f, true}, "gn");
  ValueId c = g.add_node(OpKind::kConv2d, {h, w, b}, Conv2dAttrs{2, 1}, "conv");
  EXPECT_EQ(g.value(c).shape, (Shape{2, 8, 8, 64}));
  ValueId r = g.add_node(OpKind::kReshape, {c}, ReshapeAttrs{Shape{2, -1, 64}}, "tokens");
  EXPECT_EQ(g.value(r).shape, (Shape{2, 64, 64}));
  ValueId p = g.add_node(OpKind::kPermute, {r}, PermuteAttrs{Shape{0, 2, 1}}, "perm");
  EXPECT_EQ(g.value(p).shape, (Shape{2, 64, 64}));
  ValueId q = g.add_node(OpKind::kAttention, {p, p, p}, AttentionAttrs{4}, "attn");
  ValueId gg = g.add_node(OpKind::kGeglu, {q}, {}, "geglu");
  EXPECT_EQ(g.value(gg).shape, (Shape{2, 64, 32}));
  g.mark_output(gg);
  EXPECT_NO_THROW(g.verify());
  EXPECT_NE(g.dump().find("conv2d(%5, %3, %4) stride=2 pad=1"), std::string::npos) << g.dump();
  EXPECT_EQ(g.weight_params(), 32 + 32 + 64 * 32 * 9 + 64);
}

TEST(Graph, RejectsInconsistentShapesWithTheNodeName) {
  Graph g;
  ValueId x = g.add_input("x", DType::kF32, {2, 77, 64});
  ValueId w = g.add_weight("w", DType::kF32, {128, 65});
  try {
    g.add_node(OpKind::kLinear, {x, w}, {}, "text.fc1");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("text.fc1"), std::string::npos) << e.what();
  }
  ValueId y = g.add_input("y", DType::kF32, {2, 1, 5});
  EXPECT_THROW(g.add_node(OpKind::kAdd, {y, x}), Error);  // x does not broadcast onto y
  EXPECT_THROW(g.add_node(OpKind::kGroupNorm, {x, x, x}, NormAttrs{5}), Error);
  EXPECT_THROW(g.add_node(OpKind::kReshape, {x}, ReshapeAttrs{Shape{-1, -1}}), Error);
  EXPECT_THROW(g.add_node(OpKind::kPermute, {x}, PermuteAttrs{Shape{0, 0, 1}}), Error);
  EXPECT_THROW(g.add_node(OpKind::kConv2d, {x, w}, Conv2dAttrs{}), Error);
  EXPECT_THROW(g.add_node(OpKind::kAttention, {x, x, x}, AttentionAttrs{3}), Error);
}

TEST(Graph, VerifyReportsDanglingValuesAndUnusedWeights) {
  Graph g;
  ValueId x = g.add_input("x", DType::kF32, {4, 8});
  g.add_weight("unused.weight", DType::kF32, {8});
  ValueId a = g.add_node(OpKind::kSilu, {x}, {}, "dangling");
  (void)a;
  ValueId b = g.add_node(OpKind::kGelu, {x}, {}, "out");
  g.mark_output(b);
  try {
    g.verify();
    FAIL() << "expected verification to fail";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("dangling"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unused.weight"), std::string::npos) << msg;
  }
}

TEST(Graph, BroadcastsAndConcat) {
  Graph g;
  ValueId x = g.add_input("x", DType::kF32, {2, 8, 8, 32});
  ValueId t = g.add_input("t", DType::kF32, {2, 1, 1, 32});
  ValueId s = g.add_node(OpKind::kAdd, {x, t});
  ValueId c = g.add_node(OpKind::kConcat, {s, x}, ConcatAttrs{-1});
  EXPECT_EQ(g.value(c).shape, (Shape{2, 8, 8, 64}));
  ValueId u = g.add_node(OpKind::kUpsampleNearest, {c});
  EXPECT_EQ(g.value(u).shape, (Shape{2, 16, 16, 64}));
  ValueId ts = g.add_input("timestep", DType::kF32, {2});
  ValueId e = g.add_node(OpKind::kTimestepEmbedding, {ts}, TimestepAttrs{32});
  EXPECT_EQ(g.value(e).shape, (Shape{2, 32}));
  ValueId ids = g.add_input("ids", DType::kS32, {1, 77});
  ValueId table = g.add_weight("tok", DType::kF16, {100, 16});
  ValueId emb = g.add_node(OpKind::kEmbedding, {ids, table});
  EXPECT_EQ(g.value(emb).shape, (Shape{1, 77, 16}));
  EXPECT_EQ(g.value(emb).dtype, DType::kF32);
}

// s8rows (a quantized activation, core/dtype.h): its bytes hold the row scales after the values;
// a quantizing layer norm makes one, only a linear's x reads it, and that linear writes the
// graph's float activation dtype.
TEST(Graph, QuantizedActivationsFlowFromALayerNormIntoLinearsOnly) {
  EXPECT_EQ(storage_bytes(DType::kS8Rows, Shape{2, 3, 20}), 128u + 6u * 4u);  // 120 -> 128
  EXPECT_EQ(storage_bytes(DType::kS8Rows, Shape{4, 16}), 64u + 16u);
  EXPECT_EQ(storage_bytes(DType::kF16, Shape{4, 16}), 128u);
  EXPECT_EQ(s8rows_scales_offset(1), 16);
  EXPECT_THROW(storage_bytes(DType::kS8Rows, Shape{}), Error);
  EXPECT_EQ(dtype_name(DType::kS8Rows), "s8rows");
  EXPECT_FALSE(parse_dtype("s8rows").has_value());  // no file or flag may ask for it
  EXPECT_FALSE(dtype_is_float(DType::kS8Rows));
  EXPECT_EQ(Tensor(DType::kS8Rows, Shape{4, 16}).bytes(), 80u);

  Graph g(DType::kF32);
  const ValueId x = g.add_input("x", DType::kF32, {2, 8, 32});
  const ValueId gamma = g.add_weight("g", DType::kF32, {32});
  const ValueId beta = g.add_weight("b", DType::kF32, {32});
  NormAttrs quantize;
  quantize.quantize_output = true;
  const ValueId q = g.add_node(OpKind::kLayerNorm, {x, gamma, beta}, quantize, "ln");
  EXPECT_EQ(g.value(q).dtype, DType::kS8Rows);
  EXPECT_EQ(g.value(q).shape, (Shape{2, 8, 32}));
  EXPECT_EQ(g.value(q).bytes(), 512u + 16u * 4u);
  const ValueId w = g.add_weight("w", DType::kS8, {16, 32});
  const ValueId y = g.add_node(OpKind::kLinear, {q, w}, {}, "o");
  EXPECT_EQ(g.value(y).dtype, DType::kF32);
  EXPECT_EQ(g.value(y).shape, (Shape{2, 8, 16}));
  // A fused residual has the float output's dtype.
  const ValueId r = g.add_input("r", DType::kF32, {2, 8, 16});
  const ValueId yr = g.add_node(OpKind::kLinear, {q, w, r}, LinearAttrs{{.residual = true}}, "o2");
  EXPECT_EQ(g.value(yr).dtype, DType::kF32);
  EXPECT_NE(g.dump().find("->s8rows"), std::string::npos) << g.dump();
  g.mark_output(y);
  g.mark_output(yr);
  EXPECT_NO_THROW(g.verify()) << g.dump();

  // Nothing else reads it: not an elementwise op, a reshape (its rows would change), a
  // linear's weight or residual; no low-rank term (which reads x in float).
  EXPECT_THROW(g.add_node(OpKind::kSilu, {q}, {}, "silu"), Error);
  EXPECT_THROW(g.add_node(OpKind::kReshape, {q}, ReshapeAttrs{Shape{16, 32}}, "view"), Error);
  EXPECT_THROW(g.add_node(OpKind::kAttention, {q, q, q}, AttentionAttrs{2}, "attn"), Error);
  const ValueId down = g.add_weight("down", DType::kF32, {4, 32});
  const ValueId up = g.add_weight("up", DType::kF32, {16, 4});
  EXPECT_THROW(
      g.add_node(OpKind::kLinear, {q, w, down, up}, LinearAttrs{{.low_rank = true}}, "lora"),
      Error);
  // Only a float input quantizes.
  EXPECT_THROW(g.add_node(OpKind::kLayerNorm, {q, gamma, beta}, quantize, "ln2"), Error);
}

// A group norm writes s8rows too (one scale per sample, on each of its rows), and a conv reads
// it as x: the conv writes the graph's float activation dtype, its residual included; nothing
// reads it as a conv's weight, bias or residual.
TEST(Graph, QuantizedGroupNormFeedsConvolutions) {
  Graph g(DType::kF16);
  const ValueId x = g.add_input("x", DType::kF16, {2, 8, 8, 32});
  const ValueId gamma = g.add_weight("g", DType::kF32, {32});
  const ValueId beta = g.add_weight("b", DType::kF32, {32});
  NormAttrs gn;
  gn.groups = 4;
  gn.fuse_silu = true;
  gn.quantize_output = true;
  const ValueId q = g.add_node(OpKind::kGroupNorm, {x, gamma, beta}, gn, "gn");
  EXPECT_EQ(g.value(q).dtype, DType::kS8Rows);
  EXPECT_EQ(g.value(q).shape, (Shape{2, 8, 8, 32}));
  EXPECT_EQ(g.value(q).bytes(), 2u * 8 * 8 * 32 + 2u * 8 * 8 * 4);
  const ValueId w = g.add_weight("w", DType::kS8, {16, 32, 3, 3});
  const ValueId bias = g.add_weight("bias", DType::kF32, {16});
  const ValueId r = g.add_input("r", DType::kF16, {2, 8, 8, 16});
  ir::Conv2dAttrs c{1, 1, {.residual = true}};
  const ValueId y = g.add_node(OpKind::kConv2d, {q, w, bias, r}, c, "conv");
  EXPECT_EQ(g.value(y).dtype, DType::kF16);
  EXPECT_EQ(g.value(y).shape, (Shape{2, 8, 8, 16}));
  g.mark_output(y);
  EXPECT_NO_THROW(g.verify()) << g.dump();
  // A residual must be float; an s8rows value is not a residual.
  const ValueId q16 =
      g.add_node(OpKind::kGroupNorm,
                 {r, g.add_weight("g2", DType::kF32, {16}), g.add_weight("b2", DType::kF32, {16})},
                 NormAttrs{4, 1e-5f, false, true}, "gn2");
  EXPECT_THROW(g.add_node(OpKind::kConv2d, {q, w, bias, q16}, c, "conv2"), Error);
  EXPECT_THROW(g.add_node(OpKind::kGroupNorm, {q, gamma, beta}, gn, "gn3"), Error);
}

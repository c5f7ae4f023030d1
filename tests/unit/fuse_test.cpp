// plan::fuse_epilogues with fake backends: which chains fold into a GEMM (activation, residual
// add, both, through a reshape), which do not (across backends, shared or output values,
// broadcasting adds, a backend that refuses the fused node), that the rewritten graph keeps
// its inputs and outputs and verifies, and — on random graphs — that the result's placement
// keeps every placement invariant and every surviving node's backend.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>

#include "fake_backend.h"
#include "ir/graph.h"
#include "plan/fuse.h"
#include "plan/memory.h"
#include "plan/placement.h"
#include "test_util.h"

namespace hyrt::test {
namespace {

using ir::Activation;
using ir::Graph;
using ir::Node;
using ir::OpKind;
using ir::ValueId;
using plan::PlacementMode;

struct Fused {
  plan::EpilogueFusion result;
  const Graph& graph() const { return *result.graph; }
  // The node named `name` in the rewritten graph (fails the test when there is none).
  const Node& node(const std::string& name) const {
    for (const Node& n : graph().nodes())
      if (n.name == name) return n;
    ADD_FAILURE() << "no node '" << name << "'";
    return graph().nodes().front();
  }
  int count(OpKind op) const {
    int c = 0;
    for (const Node& n : graph().nodes())
      c += n.op == op;
    return c;
  }
};

Fused fuse(std::shared_ptr<const Graph> g, std::vector<const backend::Backend*> backends,
           PlacementMode mode) {
  const plan::Placement p =
      plan::place(*g, plan::default_order(*g), backends, {mode, plan::CopyCostModel{}});
  return {plan::fuse_epilogues(std::move(g), p, backends)};
}

// x [2, 8, 16] -> ln -> linear "o" (+bias) -> [silu] -> add(·, x) -> output
std::shared_ptr<Graph> residual_block(bool activation, bool residual_first = false) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 8, 16});
  const ValueId h =
      g->add_node(OpKind::kLayerNorm,
                  {x, g->add_weight("g", DType::kF32, {16}), g->add_weight("b", DType::kF32, {16})},
                  ir::NormAttrs{}, "ln");
  ValueId o = g->add_node(
      OpKind::kLinear,
      {h, g->add_weight("o.w", DType::kS8, {16, 16}), g->add_weight("o.b", DType::kF32, {16})}, {},
      "o");
  if (activation) o = g->add_node(OpKind::kSilu, {o}, {}, "act");
  g->mark_output(g->add_node(OpKind::kAdd, residual_first ? std::vector{x, o} : std::vector{o, x},
                             {}, "residual"));
  g->verify();
  return g;
}

TEST(EpilogueFusion, ResidualAddFoldsIntoTheLinear) {
  for (bool residual_first : {false, true}) {
    const auto h = host();
    const auto d = device();
    const auto g = residual_block(false, residual_first);
    const Fused f = fuse(g, {&h, &d}, PlacementMode::kDevice);
    EXPECT_EQ(f.result.residual_adds, 1);
    EXPECT_EQ(f.result.activations, 0);
    EXPECT_EQ(f.count(OpKind::kAdd), 0);
    const Node& o = f.node("o");
    EXPECT_TRUE(o.epilogue().residual);
    EXPECT_EQ(o.epilogue().activation, Activation::kNone);
    EXPECT_EQ(o.inputs.size(), 4u);  // x, w, bias, residual
    EXPECT_EQ(f.graph().value(o.gemm_residual()).name, "x");
    EXPECT_EQ(f.graph().value(o.gemm_bias()).name, "o.b");
    // Inputs and outputs keep their order and names; the output is the fused node's.
    ASSERT_EQ(f.graph().outputs().size(), 1u);
    EXPECT_EQ(f.graph().value(f.graph().outputs()[0]).producer, o.id);
    EXPECT_EQ(f.graph().value(f.graph().inputs()[0]).name, "x");
    EXPECT_EQ(f.result.placement.backend_of.size(), f.graph().nodes().size());
    EXPECT_EQ(f.result.placement.backend_of[o.id], 1);
    EXPECT_EQ(f.result.placement.mode, PlacementMode::kDevice);
  }
}

TEST(EpilogueFusion, ActivationThenResidual) {
  const auto h = host();
  const auto d = device();
  const Fused f = fuse(residual_block(true), {&h, &d}, PlacementMode::kDevice);
  EXPECT_EQ(f.result.activations, 1);
  EXPECT_EQ(f.result.residual_adds, 1);
  EXPECT_EQ(f.graph().nodes().size(), 2u);  // ln, o
  EXPECT_EQ(f.node("o").epilogue().activation, Activation::kSilu);
  EXPECT_TRUE(f.node("o").epilogue().residual);
  EXPECT_NE(f.graph().dump().find("+silu +residual"), std::string::npos) << f.graph().dump();
}

// TAESD's conv -> relu: the ReLU folds into the convolution like the other activations.
TEST(EpilogueFusion, ReluFoldsIntoTheConvolution) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {1, 8, 8, 4});
  const ValueId c = g->add_node(
      OpKind::kConv2d,
      {x, g->add_weight("c.w", DType::kF32, {4, 4, 3, 3}), g->add_weight("c.b", DType::kF32, {4})},
      ir::Conv2dAttrs{1, 1}, "c");
  g->mark_output(g->add_node(OpKind::kRelu, {c}, {}, "relu"));
  g->verify();
  const auto h = host();
  const Fused f = fuse(g, {&h}, PlacementMode::kHost);
  EXPECT_EQ(f.result.activations, 1);
  EXPECT_EQ(f.graph().nodes().size(), 1u);
  EXPECT_EQ(f.node("c").epilogue().activation, Activation::kRelu);
  EXPECT_NE(f.graph().dump().find("+relu"), std::string::npos) << f.graph().dump();
}

TEST(EpilogueFusion, OnTheHostToo) {  // fusion follows the backend, whichever it is
  const auto h = host();
  const Fused f = fuse(residual_block(true), {&h}, PlacementMode::kHost);
  EXPECT_EQ(f.result.fused(), 2);
  EXPECT_EQ(f.result.placement.backend_of, (std::vector<int>{0, 0}));
}

TEST(EpilogueFusion, NeverAcrossBackends) {
  // Hybrid: the GEMM on the device, the activation and add on the host — nothing to fold.
  const auto h = host();
  const auto d = device();
  const auto g = residual_block(true);
  const Fused f = fuse(g, {&h, &d}, PlacementMode::kHybrid);
  EXPECT_EQ(f.result.fused(), 0);
  EXPECT_EQ(f.result.graph.get(), g.get());  // the same graph, untouched
}

TEST(EpilogueFusion, RefusedFusedNodesStaySeparate) {
  const auto h = host();
  // A device without fused kernels: nothing is folded.
  const auto plain = device([](const Graph&, const Node& n) { return n.epilogue().empty(); });
  EXPECT_EQ(fuse(residual_block(true), {&h, &plain}, PlacementMode::kDevice).result.fused(), 0);
  // Residuals but no activations: the chain with an activation is refused whole, the other
  // block's is taken.
  const auto residual_only = device(
      [](const Graph&, const Node& n) { return n.epilogue().activation == Activation::kNone; });
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {4, 8});
  ValueId a = g->add_node(OpKind::kLinear, {x, g->add_weight("w1", DType::kF32, {8, 8})}, {}, "a");
  a = g->add_node(OpKind::kGelu, {a}, {}, "gelu");
  a = g->add_node(OpKind::kAdd, {a, x}, {}, "add_a");
  ValueId b = g->add_node(OpKind::kLinear, {a, g->add_weight("w2", DType::kF32, {8, 8})}, {}, "b");
  g->mark_output(g->add_node(OpKind::kAdd, {b, a}, {}, "add_b"));
  const Fused f = fuse(g, {&h, &residual_only}, PlacementMode::kDevice);
  EXPECT_EQ(f.result.residual_adds, 1);
  EXPECT_EQ(f.result.activations, 0);
  EXPECT_TRUE(f.node("a").epilogue().empty());
  EXPECT_TRUE(f.node("b").epilogue().residual);
  EXPECT_EQ(f.count(OpKind::kGelu), 1);
}

TEST(EpilogueFusion, SharedOutputAndBroadcastValuesAreLeftAlone) {
  const auto h = host();
  const auto d = device();
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {4, 8});
  const ValueId w = g->add_weight("w", DType::kF32, {8, 8});
  // A GEMM output that is also a graph output (a parity tap).
  const ValueId tapped = g->add_node(OpKind::kLinear, {x, w}, {}, "tapped");
  g->mark_output(tapped);
  const ValueId t2 = g->add_node(OpKind::kSilu, {tapped}, {}, "t_act");
  // A GEMM output read twice.
  const ValueId shared = g->add_node(OpKind::kLinear, {t2, w}, {}, "shared");
  const ValueId s2 = g->add_node(OpKind::kAdd, {shared, shared}, {}, "doubled");
  // A broadcasting add (a per-channel vector, as the resnet's time embedding).
  const ValueId row = g->add_node(OpKind::kLinear, {s2, w}, {}, "row");
  const ValueId vec = g->add_input("v", DType::kF32, {8});
  g->mark_output(g->add_node(OpKind::kAdd, {row, vec}, {}, "broadcast"));
  g->verify();
  const Fused f = fuse(g, {&h, &d}, PlacementMode::kDevice);
  EXPECT_EQ(f.result.fused(), 0) << f.graph().dump();
}

TEST(EpilogueFusion, TwoGemmsIntoOneAdd) {  // a resnet's conv2 + conv_shortcut
  const auto h = host();
  const auto d = device();
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {1, 6, 6, 8});
  const ValueId c2 =
      g->add_node(OpKind::kConv2d, {x, g->add_weight("c2", DType::kS8, {4, 8, 3, 3})},
                  ir::Conv2dAttrs{1, 1, {}}, "conv2");
  const ValueId sc =
      g->add_node(OpKind::kConv2d, {x, g->add_weight("sc", DType::kS8, {4, 8, 1, 1})},
                  ir::Conv2dAttrs{}, "conv_shortcut");
  g->mark_output(g->add_node(OpKind::kAdd, {sc, c2}, {}, "out"));
  const Fused f = fuse(g, {&h, &d}, PlacementMode::kDevice);
  EXPECT_EQ(f.result.residual_adds, 1);
  ASSERT_EQ(f.graph().nodes().size(), 2u);
  // The first GEMM takes the add; the other's output is its residual; the fused node runs
  // after both (the add's place).
  EXPECT_EQ(f.graph().nodes()[0].name, "conv_shortcut");
  EXPECT_EQ(f.graph().nodes()[1].name, "conv2");
  EXPECT_TRUE(f.node("conv2").epilogue().residual);
  EXPECT_EQ(f.node("conv2").gemm_residual(), f.node("conv_shortcut").output);
  EXPECT_EQ(f.node("conv2").attr<ir::Conv2dAttrs>().padding, 1);
}

TEST(EpilogueFusion, ThroughAReshape) {  // Transformer2D's linear proj_out, the VAE's to_out
  const auto h = host();
  const auto d = device();
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 4, 4, 8});
  const ValueId t = g->add_node(OpKind::kReshape, {x}, ir::ReshapeAttrs{{2, 16, 8}}, "tokens");
  ValueId p =
      g->add_node(OpKind::kLinear, {t, g->add_weight("p", DType::kF32, {8, 8})}, {}, "proj_out");
  p = g->add_node(OpKind::kReshape, {p}, ir::ReshapeAttrs{{2, 4, 4, 8}}, "back");
  g->mark_output(g->add_node(OpKind::kAdd, {p, x}, {}, "out"));
  const Fused f = fuse(g, {&h, &d}, PlacementMode::kDevice);
  EXPECT_EQ(f.result.residual_adds, 1);
  EXPECT_EQ(f.count(OpKind::kAdd), 0);
  const Node& proj = f.node("proj_out");
  ASSERT_TRUE(proj.epilogue().residual);
  // The residual viewed in the GEMM's shape, the result viewed back in the add's.
  EXPECT_EQ(f.graph().value(proj.gemm_residual()).shape, (Shape{2, 16, 8}));
  const ValueId out = f.graph().outputs()[0];
  EXPECT_EQ(f.graph().value(out).shape, (Shape{2, 4, 4, 8}));
  EXPECT_EQ(f.graph().node(f.graph().value(out).producer).op, OpKind::kReshape);
}

// Random chains of linear, activations, reshapes and adds on [1, 8, 8] values, nodes placed
// by random per-name costs: fusion keeps each surviving node's backend, the graph's outputs
// (count, shapes) and every placement invariant the executor relies on.
// A LoRA's side path as graph_builder writes it: x [2, 8, 16] -> up(down(x)) (rank 4), then the
// layer "layer" (+bias), their sum, then the block's residual add of x.
std::shared_ptr<Graph> lora_block() {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 8, 16});
  const ValueId h =
      g->add_node(OpKind::kLinear, {x, g->add_weight("d", DType::kF32, {4, 16})}, {}, "down");
  const ValueId side =
      g->add_node(OpKind::kLinear, {h, g->add_weight("u", DType::kF32, {16, 4})}, {}, "up");
  const ValueId y = g->add_node(
      OpKind::kLinear,
      {x, g->add_weight("w", DType::kS8, {16, 16}), g->add_weight("b", DType::kF32, {16})}, {},
      "layer");
  const ValueId sum = g->add_node(OpKind::kAdd, {y, side}, {}, "sum");
  g->mark_output(g->add_node(OpKind::kAdd, {sum, x}, {}, "residual"));
  g->verify();
  return g;
}

// A feed-forward's input projection and GEGLU (ir::GemmEpilogue::geglu) fold into one linear of
// half the width where the backend takes it; nothing else joins that chain, and a backend that
// refuses gated linears keeps the GEGLU node.
TEST(EpilogueFusion, GegluFoldsIntoTheProjection) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 8, 16});
  ValueId y = g->add_node(OpKind::kLinear,
                          {x, g->add_weight("proj.w", DType::kS8, {64, 16}),
                           g->add_weight("proj.b", DType::kF32, {64})},
                          {}, "proj");
  y = g->add_node(OpKind::kGeglu, {y}, {}, "geglu");
  y = g->add_node(OpKind::kLinear, {y, g->add_weight("out.w", DType::kS8, {16, 32})}, {}, "out");
  g->mark_output(g->add_node(OpKind::kAdd, {y, x}, {}, "residual"));
  g->verify();
  const auto h = host();
  const Fused f = fuse(g, {&h}, PlacementMode::kHost);
  EXPECT_EQ(f.result.geglus, 1);
  EXPECT_EQ(f.result.residual_adds, 1);
  EXPECT_EQ(f.count(OpKind::kGeglu), 0);
  EXPECT_TRUE(f.node("proj").epilogue().geglu);
  EXPECT_EQ(f.graph().value(f.node("proj").output).shape, (Shape{2, 8, 32}));
  EXPECT_TRUE(f.node("out").epilogue().residual);
  const auto no_geglu = device([](const Graph&, const Node& n) { return !n.epilogue().geglu; });
  const Fused d = fuse(g, {&h, &no_geglu}, PlacementMode::kDevice);
  EXPECT_EQ(d.result.geglus, 0);
  EXPECT_EQ(d.count(OpKind::kGeglu), 1);
  EXPECT_EQ(d.result.residual_adds, 1);
}

TEST(EpilogueFusion, LowRankTermFoldsIntoTheLayer) {
  const auto h = host();
  const auto d = device();
  const Fused f = fuse(lora_block(), {&h, &d}, PlacementMode::kDevice);
  EXPECT_EQ(f.result.low_rank_terms, 1);
  EXPECT_EQ(f.result.residual_adds, 1);
  const Node& layer = f.node("layer");
  EXPECT_TRUE(layer.epilogue().low_rank);
  EXPECT_TRUE(layer.epilogue().residual);
  // x, w, bias, down, up, residual
  ASSERT_EQ(layer.inputs.size(), 6u);
  EXPECT_EQ(f.graph().value(layer.gemm_bias()).name, "b");
  EXPECT_EQ(f.graph().value(layer.gemm_low_rank_down()).name, "d");
  EXPECT_EQ(f.graph().value(layer.gemm_low_rank_up()).name, "u");
  EXPECT_EQ(f.graph().value(layer.gemm_residual()).name, "x");
  EXPECT_EQ(f.count(OpKind::kLinear), 1);  // the down and the up are absorbed
  EXPECT_EQ(f.count(OpKind::kAdd), 0);
  EXPECT_NE(f.graph().dump().find("+low_rank"), std::string::npos);
}

// A LoRA on a feed-forward's input projection: the term and the GEGLU after it fold into the
// projection (one node: +low_rank +geglu); a backend that refuses gated linears (CUDA) still
// gets the term folded, with the GEGLU its own node.
TEST(EpilogueFusion, LowRankTermAndGegluFoldIntoTheProjection) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 8, 16});
  const ValueId h =
      g->add_node(OpKind::kLinear, {x, g->add_weight("d", DType::kF32, {4, 16})}, {}, "down");
  const ValueId side =
      g->add_node(OpKind::kLinear, {h, g->add_weight("u", DType::kF32, {64, 4})}, {}, "up");
  const ValueId y = g->add_node(OpKind::kLinear,
                                {x, g->add_weight("proj.w", DType::kS8, {64, 16}),
                                 g->add_weight("proj.b", DType::kF32, {64})},
                                {}, "proj");
  const ValueId sum = g->add_node(OpKind::kAdd, {y, side}, {}, "sum");
  g->mark_output(g->add_node(OpKind::kGeglu, {sum}, {}, "geglu"));
  g->verify();
  const auto h_backend = host();
  const Fused f = fuse(g, {&h_backend}, PlacementMode::kHost);
  EXPECT_EQ(f.result.low_rank_terms, 1);
  EXPECT_EQ(f.result.geglus, 1);
  ASSERT_EQ(f.graph().nodes().size(), 1u);
  const Node& proj = f.node("proj");
  EXPECT_TRUE(proj.epilogue().low_rank);
  EXPECT_TRUE(proj.epilogue().geglu);
  EXPECT_EQ(f.graph().value(proj.gemm_low_rank_up()).name, "u");
  EXPECT_EQ(f.graph().value(proj.output).shape, (Shape{2, 8, 32}));
  const auto no_geglu = device([](const Graph&, const Node& n) { return !n.epilogue().geglu; });
  const Fused d = fuse(g, {&h_backend, &no_geglu}, PlacementMode::kDevice);
  EXPECT_EQ(d.result.low_rank_terms, 1);
  EXPECT_EQ(d.result.geglus, 0);
  EXPECT_EQ(d.count(OpKind::kGeglu), 1);
  EXPECT_EQ(d.count(OpKind::kLinear), 1);
  EXPECT_TRUE(d.node("proj").epilogue().low_rank);
  EXPECT_FALSE(d.node("proj").epilogue().geglu);
}

TEST(EpilogueFusion, RefusedLowRankKeepsTheUpWithTheResidual) {
  // A backend without a low-rank epilogue (CUDA): the up projection takes the layer's output
  // as its residual, as before the rule existed.
  const auto h = host();
  const auto no_low_rank =
      device([](const Graph&, const Node& n) { return !n.epilogue().low_rank; });
  const Fused f = fuse(lora_block(), {&h, &no_low_rank}, PlacementMode::kDevice);
  EXPECT_EQ(f.result.low_rank_terms, 0);
  EXPECT_EQ(f.count(OpKind::kLinear), 3);
  EXPECT_TRUE(f.node("up").epilogue().residual);
  EXPECT_FALSE(f.node("layer").epilogue().low_rank);
  // A down that reads another value than the layer's x is no LoRA of that layer.
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {4, 16});
  const ValueId other = g->add_input("other", DType::kF32, {4, 16});
  const ValueId hh =
      g->add_node(OpKind::kLinear, {other, g->add_weight("d", DType::kF32, {4, 16})}, {}, "down");
  const ValueId side =
      g->add_node(OpKind::kLinear, {hh, g->add_weight("u", DType::kF32, {16, 4})}, {}, "up");
  const ValueId y =
      g->add_node(OpKind::kLinear, {x, g->add_weight("w", DType::kF32, {16, 16})}, {}, "layer");
  g->mark_output(g->add_node(OpKind::kAdd, {y, side}, {}, "sum"));
  g->verify();
  const auto d = device();
  EXPECT_EQ(fuse(g, {&h, &d}, PlacementMode::kDevice).result.low_rank_terms, 0);
}

TEST(EpilogueFusion, RandomGraphs) {
  std::mt19937_64 rng(77);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  int total_fused = 0;
  for (int trial = 0; trial < 200; ++trial) {
    auto g = std::make_shared<Graph>();
    std::vector<ValueId> pool{g->add_input("in", DType::kF32, {1, 8, 8})};
    ValueId w = ir::kNone;  // added with the first linear (every weight must be used)
    const int nodes = 2 + pick(25);
    for (int i = 0; i < nodes; ++i) {
      const ValueId v =
          pool[pool.size() - 1 - pick(std::min<int>(3, static_cast<int>(pool.size())))];
      const std::string name = "n" + std::to_string(i);
      const Shape s = g->value(v).shape;
      switch (pick(5)) {
        case 0:
        case 1:
          if (w == ir::kNone) w = g->add_weight("w", DType::kF32, {8, 8});
          pool.push_back(g->add_node(OpKind::kLinear, {v, w}, {}, name));
          break;
        case 2:
          pool.push_back(g->add_node(pick(2) ? OpKind::kSilu : OpKind::kQuickGelu, {v}, {}, name));
          break;
        case 3:
          pool.push_back(g->add_node(OpKind::kReshape, {v},
                                     ir::ReshapeAttrs{s.rank() == 3 ? Shape{8, 8} : Shape{1, 8, 8}},
                                     name));
          break;
        default: {
          std::vector<ValueId> same;
          for (ValueId u : pool)
            if (g->value(u).shape == s) same.push_back(u);
          pool.push_back(
              g->add_node(OpKind::kAdd, {v, same[pick(static_cast<int>(same.size()))]}, {}, name));
        }
      }
    }
    mark_random_outputs(*g, pick, 3);
    g->verify();
    std::map<std::string, int> on_device;
    for (const Node& n : g->nodes())
      on_device[n.name] = pick(4) != 0;
    const auto h = host();
    const auto d = device([&](const Graph&, const Node& n) {
      auto it = on_device.find(n.name);
      return it == on_device.end() || it->second;  // new nodes (views) anywhere
    });
    const std::vector<const backend::Backend*> bs{&h, &d};
    for (PlacementMode mode : {PlacementMode::kDevice, PlacementMode::kAuto}) {
      SCOPED_TRACE(testing::Message() << "trial " << trial << " " << g->dump());
      const plan::Placement p =
          plan::place(*g, plan::default_order(*g), bs, {mode, plan::CopyCostModel{}});
      const plan::EpilogueFusion f = plan::fuse_epilogues(g, p, bs);
      total_fused += f.fused();
      const Graph& fg = *f.graph;
      fg.verify();
      ASSERT_EQ(fg.outputs().size(), g->outputs().size());
      for (size_t i = 0; i < fg.outputs().size(); ++i)
        EXPECT_EQ(fg.value(fg.outputs()[i]).shape, g->value(g->outputs()[i]).shape);
      const auto views = static_cast<size_t>(std::count_if(
          fg.nodes().begin(), fg.nodes().end(),
          [](const Node& n) { return n.op == OpKind::kReshape && n.name.ends_with(".residual"); }));
      EXPECT_EQ(fg.nodes().size() + static_cast<size_t>(f.fused()), g->nodes().size() + views)
          << "a fold removes the node it absorbs; through a reshape it also replaces that "
             "reshape with two views (the residual's and the result's)";
      // Surviving nodes keep their backend (names are unique in these graphs).
      std::map<std::string, int> before;
      for (const Node& n : g->nodes())
        before[n.name] = p.backend_of[n.id];
      for (const Node& n : fg.nodes()) {
        const int b = f.placement.backend_of[n.id];
        if (auto it = before.find(n.name); it != before.end()) {
          EXPECT_EQ(b, it->second) << n.name;
        }
        EXPECT_TRUE(bs[b]->supports(fg, n)) << n.name;
        if (!n.epilogue().empty()) {
          EXPECT_TRUE(n.op == OpKind::kLinear);
        }
      }
      // The placement is the evaluation of that assignment on the new graph.
      const plan::Placement again =
          plan::evaluate_assignment(fg, plan::default_order(fg), bs, f.placement.backend_of, {});
      EXPECT_EQ(again.copies.size(), f.placement.copies.size());
      EXPECT_DOUBLE_EQ(again.total_us(), f.placement.total_us());
    }
  }
  EXPECT_GT(total_fused, 100) << "the random graphs should exercise fusion";
}

}  // namespace
}  // namespace hyrt::test

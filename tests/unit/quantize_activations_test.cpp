// plan::quantize_activations with fake backends: a layer norm read only by linears on its
// backend writes its output quantized (s8rows) and the linears read it; not when another op
// reads it too, a reader runs elsewhere or has a low-rank term, the value is a graph output, or
// the backend refuses the quantizing layer norm or a reader on s8rows. The rewritten graph keeps
// its nodes, names, inputs and outputs and verifies; the placement keeps every backend.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "fake_backend.h"
#include "ir/graph.h"
#include "plan/fuse.h"
#include "plan/memory.h"
#include "plan/placement.h"
#include "plan/quantize.h"
#include "test_util.h"

namespace hyrt::test {
namespace {

using ir::Graph;
using ir::Node;
using ir::OpKind;
using ir::ValueId;
using plan::PlacementMode;

// A plain layer norm "ln" over x's 32 channels.
ValueId add_layer_norm(Graph& g, ValueId x) {
  return g.add_node(OpKind::kLayerNorm,
                    {x, g.add_weight("g", DType::kF32, {32}), g.add_weight("b", DType::kF32, {32})},
                    ir::NormAttrs{}, "ln");
}

// x [2, 16, 32] -> ln -> q, k, v linears (8-bit S weights, k with a bias) -> attention -> out
// (+ residual x). `extra`: also read ln's output with a silu (a non-linear reader).
std::shared_ptr<Graph> attention_block(bool extra = false, bool ln_output = false) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 16, 32});
  const ValueId h = add_layer_norm(*g, x);
  auto linear = [&](const std::string& name, ValueId in, bool bias = false) {
    std::vector<ValueId> inputs{in, g->add_weight(name + ".w", DType::kS8, {32, 32})};
    if (bias) inputs.push_back(g->add_weight(name + ".b", DType::kF32, {32}));
    return g->add_node(OpKind::kLinear, inputs, {}, name);
  };
  const ValueId q = linear("q", h), k = linear("k", h, true), v = linear("v", h);
  const ValueId a = g->add_node(OpKind::kAttention, {q, k, v}, ir::AttentionAttrs{4}, "attn");
  g->mark_output(g->add_node(OpKind::kAdd, {linear("out", a), x}, {}, "residual"));
  if (extra) g->mark_output(g->add_node(OpKind::kSilu, {h}, {}, "side"));
  if (ln_output) g->mark_output(h);
  g->verify();
  return g;
}

struct Quantized {
  plan::ActivationQuantization result;
  const Graph& graph() const { return *result.graph; }
  const Node& node(const std::string& name) const {
    for (const Node& n : graph().nodes())
      if (n.name == name) return n;
    ADD_FAILURE() << "no node '" << name << "'";
    return graph().nodes().front();
  }
  bool ln_quantized() const { return node("ln").attr<ir::NormAttrs>().quantize_output; }
};

Quantized run(std::shared_ptr<const Graph> g, std::vector<const backend::Backend*> backends,
              PlacementMode mode = PlacementMode::kDevice) {
  const plan::Placement p =
      plan::place(*g, plan::default_order(*g), backends, {mode, plan::CopyCostModel{}});
  const plan::EpilogueFusion f = plan::fuse_epilogues(std::move(g), p, backends);
  return {plan::quantize_activations(f.graph, f.placement, backends)};
}

bool reads_s8rows(const Graph& g, const Node& n) {
  return !n.inputs.empty() && g.value(n.inputs[0]).dtype == DType::kS8Rows;
}

TEST(QuantizeActivations, LayerNormQuantizesOnceForItsLinears) {
  const auto h = host();
  const auto d = device();
  const Quantized r = run(attention_block(), {&h, &d});
  EXPECT_EQ(r.result.layer_norms, 1);
  EXPECT_EQ(r.result.linears, 3);
  ASSERT_TRUE(r.ln_quantized());
  const Graph& g = r.graph();
  EXPECT_EQ(g.value(r.node("ln").output).dtype, DType::kS8Rows);
  for (const char* name : {"q", "k", "v"}) {
    const Node& l = r.node(name);
    EXPECT_EQ(g.value(l.inputs[0]).dtype, DType::kS8Rows) << name;
    EXPECT_EQ(g.value(l.output).dtype, DType::kF32) << name;
  }
  // The output projection reads the attention's float output, as before.
  EXPECT_EQ(g.value(r.node("out").inputs[0]).dtype, DType::kF32);
  EXPECT_NO_THROW(g.verify());
  // Same nodes, inputs, outputs and backends.
  const std::vector<const backend::Backend*> backends{&h, &d};
  const auto original = attention_block();
  const plan::Placement p0 = plan::place(*original, plan::default_order(*original), backends,
                                         {PlacementMode::kDevice, plan::CopyCostModel{}});
  const plan::EpilogueFusion f = plan::fuse_epilogues(original, p0, backends);
  ASSERT_EQ(g.nodes().size(), f.graph->nodes().size());
  for (size_t i = 0; i < g.nodes().size(); ++i) {
    EXPECT_EQ(g.nodes()[i].name, f.graph->nodes()[i].name);
    EXPECT_EQ(r.result.placement.backend_of[i], f.placement.backend_of[i]);
  }
  EXPECT_EQ(g.inputs().size(), 1u);
  EXPECT_EQ(g.outputs().size(), 1u);
  EXPECT_EQ(r.result.placement.mode, PlacementMode::kDevice);
}

TEST(QuantizeActivations, LeavesLayerNormsOtherOpsOrOtherBackendsRead) {
  const auto h = host();
  const auto d = device();
  // A silu reads it too.
  EXPECT_FALSE(run(attention_block(true), {&h, &d}).ln_quantized());
  // It is a graph output.
  EXPECT_FALSE(run(attention_block(false, true), {&h, &d}).ln_quantized());
  // A reader runs on the host: the device does not run "v".
  const auto no_v = device_refusing([](const Graph&, const Node& n) { return n.name == "v"; });
  const Quantized split = run(attention_block(), {&h, &no_v}, PlacementMode::kAuto);
  EXPECT_FALSE(split.ln_quantized());
  EXPECT_EQ(split.result.layer_norms, 0);
  // Nothing changed: the same graph comes back.
  const std::vector<const backend::Backend*> backends{&h, &d};
  const auto g = attention_block(true);
  const plan::Placement p = plan::place(*g, plan::default_order(*g), backends,
                                        {PlacementMode::kDevice, plan::CopyCostModel{}});
  const plan::ActivationQuantization same = plan::quantize_activations(g, p, backends);
  EXPECT_EQ(same.graph.get(), g.get());
}

TEST(QuantizeActivations, AsksTheBackendForTheLayerNormAndEveryReader) {
  const auto h = host();
  // Refuses the quantizing layer norm.
  const auto no_ln = device_refusing([](const Graph&, const Node& n) {
    return n.op == OpKind::kLayerNorm && n.attr<ir::NormAttrs>().quantize_output;
  });
  EXPECT_FALSE(run(attention_block(), {&h, &no_ln}).ln_quantized());
  // Refuses one reader on s8rows (say, k's bias): the layer norm stays float for all three.
  const auto no_k = device_refusing(
      [](const Graph& g, const Node& n) { return n.name == "k" && reads_s8rows(g, n); });
  const Quantized r = run(attention_block(), {&h, &no_k});
  EXPECT_FALSE(r.ln_quantized());
  EXPECT_EQ(r.graph().value(r.node("q").inputs[0]).dtype, DType::kF32);
  // A host that refuses s8rows (as the CPU backend does outside W8A8) never gets one either.
  const auto host_no_s8rows = FakeBackend(
      "cpu", backend::DeviceType::kHost,
      [](const Graph& g, const Node& n) {
        return g.value(n.output).dtype == DType::kF32 && !reads_s8rows(g, n);
      },
      by_class(100, 10));
  EXPECT_FALSE(run(attention_block(), {&host_no_s8rows}, PlacementMode::kHost).ln_quantized());
}

// A feed-forward: ln -> proj (2N) -> GEGLU -> out. On a device that keeps GEGLU apart (as the
// CUDA backend does), both the layer norm and the GEGLU quantize for the linear after them.
TEST(QuantizeActivations, GegluQuantizesForTheOutputProjection) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 16, 32});
  const ValueId hn = add_layer_norm(*g, x);
  const ValueId p = g->add_node(OpKind::kLinear,
                                {hn, g->add_weight("proj.w", DType::kS8, {128, 32})}, {}, "proj");
  const ValueId gated = g->add_node(OpKind::kGeglu, {p}, {}, "geglu");
  g->mark_output(g->add_node(OpKind::kLinear, {gated, g->add_weight("out.w", DType::kS8, {32, 64})},
                             {}, "out"));
  g->verify();
  const auto h = host();
  const auto d = device_refusing([](const Graph&, const Node& n) { return n.epilogue().geglu; });
  const Quantized r = run(g, {&h, &d});
  EXPECT_EQ(r.result.layer_norms, 1);
  EXPECT_EQ(r.result.geglus, 1);
  EXPECT_EQ(r.result.linears, 2);
  const Node& gq = r.node("geglu");
  EXPECT_TRUE(ir::quantizes_output(gq.attrs));
  EXPECT_EQ(r.graph().value(gq.output).dtype, DType::kS8Rows);
  EXPECT_EQ(r.graph().value(gq.output).shape, (Shape{2, 16, 64}));
  EXPECT_EQ(r.graph().value(r.node("out").output).dtype, DType::kF32);
  EXPECT_NE(r.graph().dump().find("geglu(%"), std::string::npos);
  // Where the device folds GEGLU into the projection there is no GEGLU node left to quantize.
  const auto folds = device();
  const Quantized f = run(g, {&h, &folds});
  EXPECT_EQ(f.result.geglus, 0);
  EXPECT_TRUE(f.node("proj").epilogue().geglu);
}

TEST(QuantizeActivations, LeavesLayerNormsWithALowRankReader) {
  // ln -> linear with a LoRA side path (the fuser folds it into a low-rank term).
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 16, 32});
  const ValueId hn = add_layer_norm(*g, x);
  const ValueId base =
      g->add_node(OpKind::kLinear, {hn, g->add_weight("q.w", DType::kS8, {32, 32})}, {}, "q");
  const ValueId dn =
      g->add_node(OpKind::kLinear, {hn, g->add_weight("q.down", DType::kF32, {4, 32})}, {}, "dn");
  const ValueId up =
      g->add_node(OpKind::kLinear, {dn, g->add_weight("q.up", DType::kF32, {32, 4})}, {}, "up");
  g->mark_output(g->add_node(OpKind::kAdd, {base, up}, {}, "lora"));
  g->verify();
  const auto h = host();
  const auto d = device();
  const Quantized r = run(g, {&h, &d});
  EXPECT_TRUE(r.node("q").epilogue().low_rank);
  EXPECT_FALSE(r.ln_quantized());
}

// A resnet block: x -> gn1 (SiLU) -> conv1 -> gn2 (SiLU) -> conv2 (+ x). Its group norms write
// their outputs quantized (one scale per sample) for the convolutions; `linear_reader`: gn2's
// output also goes through a linear (as a transformer's proj_in would), `output`: gn1's output
// is a graph output.
std::shared_ptr<Graph> resnet_block(bool linear_reader = false, bool output = false) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 8, 8, 32});
  auto norm = [&](const std::string& name, ValueId in) {
    return g->add_node(OpKind::kGroupNorm,
                       {in, g->add_weight(name + ".g", DType::kF32, {32}),
                        g->add_weight(name + ".b", DType::kF32, {32})},
                       ir::NormAttrs{8, 1e-5f, true}, name);
  };
  auto conv = [&](const std::string& name, ValueId in, std::optional<ValueId> residual) {
    std::vector<ValueId> inputs{in, g->add_weight(name + ".w", DType::kS8, {32, 32, 3, 3}),
                                g->add_weight(name + ".bias", DType::kF32, {32})};
    ir::Conv2dAttrs a{1, 1};
    if (residual) inputs.push_back(*residual), a.epilogue.residual = true;
    return g->add_node(OpKind::kConv2d, inputs, a, name);
  };
  const ValueId h1 = norm("gn1", x);
  const ValueId c1 = conv("conv1", h1, std::nullopt);
  const ValueId h2 = norm("gn2", c1);
  g->mark_output(conv("conv2", h2, x));
  if (linear_reader)
    g->mark_output(
        g->add_node(OpKind::kLinear, {h2, g->add_weight("proj.w", DType::kS8, {32, 32})}, {}, "p"));
  if (output) g->mark_output(h1);
  g->verify();
  return g;
}

TEST(QuantizeActivations, GroupNormsQuantizeForTheirConvolutions) {
  const auto h = host();
  const auto d = device();
  const Quantized r = run(resnet_block(), {&h, &d});
  EXPECT_EQ(r.result.group_norms, 2);
  EXPECT_EQ(r.result.convs, 2);
  EXPECT_EQ(r.result.layer_norms + r.result.geglus + r.result.linears, 0);
  const Graph& g = r.graph();
  for (const char* name : {"gn1", "gn2"}) {
    const Node& n = r.node(name);
    EXPECT_TRUE(n.attr<ir::NormAttrs>().quantize_output) << name;
    EXPECT_TRUE(n.attr<ir::NormAttrs>().fuse_silu) << name;
    EXPECT_EQ(g.value(n.output).dtype, DType::kS8Rows) << name;
  }
  for (const char* name : {"conv1", "conv2"}) {
    EXPECT_TRUE(reads_s8rows(g, r.node(name))) << name;
    EXPECT_EQ(g.value(r.node(name).output).dtype, DType::kF32) << name;
  }
  EXPECT_TRUE(r.node("conv2").epilogue().residual);
  EXPECT_NO_THROW(g.verify());

  // A linear reads gn2's output too, or gn1's is a graph output: those stay float.
  const Quantized mixed = run(resnet_block(true), {&h, &d});
  EXPECT_TRUE(mixed.node("gn1").attr<ir::NormAttrs>().quantize_output);
  EXPECT_FALSE(mixed.node("gn2").attr<ir::NormAttrs>().quantize_output);
  EXPECT_EQ(mixed.result.group_norms, 1);
  const Quantized shown = run(resnet_block(false, true), {&h, &d});
  EXPECT_FALSE(shown.node("gn1").attr<ir::NormAttrs>().quantize_output);
  EXPECT_TRUE(shown.node("gn2").attr<ir::NormAttrs>().quantize_output);

  // The backend is asked for the quantizing group norm and for each conv on s8rows: a conv it
  // would not run on a quantized input (say, its shape is below the implicit conv's wave)
  // keeps its producer float.
  const auto no_conv1 = device_refusing(
      [](const Graph& g, const Node& n) { return n.name == "conv1" && reads_s8rows(g, n); });
  const Quantized refused = run(resnet_block(), {&h, &no_conv1});
  EXPECT_FALSE(refused.node("gn1").attr<ir::NormAttrs>().quantize_output);
  EXPECT_TRUE(refused.node("gn2").attr<ir::NormAttrs>().quantize_output);
  const auto no_gn = device_refusing([](const Graph&, const Node& n) {
    return n.op == OpKind::kGroupNorm && n.attr<ir::NormAttrs>().quantize_output;
  });
  EXPECT_EQ(run(resnet_block(), {&h, &no_gn}).result.group_norms, 0);
}

}  // namespace
}  // namespace hyrt::test

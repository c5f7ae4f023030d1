// plan::stack_projections with fake backends: a self-attention's q, k and v linears become one
// stacked linear read packed by the attention where the backend takes both forms; not where a
// projection has a bias or a low-rank term, another node reads one, one runs elsewhere, the
// attention is a cross-attention or causal, or the backend refuses a form. The IR's checks of the
// two forms; the pass composes with quantize_activations (one reader for the layer norm).
#include <gtest/gtest.h>

#include <string>

#include "backend/cpu/cpu_backend.h"
#include "fake_backend.h"
#include "ir/graph.h"
#include "plan/fuse.h"
#include "plan/memory.h"
#include "plan/placement.h"
#include "plan/quantize.h"
#include "plan/stack.h"
#include "test_util.h"

namespace hyrt::test {
namespace {

using ir::Graph;
using ir::Node;
using ir::OpKind;
using ir::ValueId;
using plan::PlacementMode;

struct BlockForm {
  bool k_bias = false;     // k has a bias
  bool cross = false;      // k and v read a context instead of the normalised x
  bool causal = false;     // the attention masks
  bool q_read = false;     // q's output is also a graph output
  bool lora_on_q = false;  // a LoRA side path on q (folded by fuse_epilogues)
  DType v_dtype = DType::kS8;
};

// x [2, 16, 32] -> ln -> to_q, to_k, to_v (8-bit S weights) -> attention (4 heads) -> to_out
// (+ x) under "blk.attn1".
std::shared_ptr<Graph> attention_block(const BlockForm& f = {}) {
  auto g = std::make_shared<Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, 16, 32});
  const ValueId ctx = g->add_input("ctx", DType::kF32, {2, 7, 32});
  const ValueId h = g->add_node(
      OpKind::kLayerNorm,
      {x, g->add_weight("ln.g", DType::kF32, {32}), g->add_weight("ln.b", DType::kF32, {32})},
      ir::NormAttrs{}, "blk.norm1");
  auto linear = [&](const std::string& leaf, ValueId in, bool bias = false,
                    DType dtype = DType::kS8) {
    const std::string name = "blk.attn1." + leaf;
    std::vector<ValueId> inputs{in, g->add_weight(name + ".weight", dtype, {32, 32})};
    if (bias) inputs.push_back(g->add_weight(name + ".bias", DType::kF32, {32}));
    return g->add_node(OpKind::kLinear, inputs, {}, name);
  };
  ValueId q = linear("to_q", h);
  if (f.lora_on_q) {
    const ValueId down = g->add_node(
        OpKind::kLinear, {h, g->add_weight("lora.down", DType::kF32, {4, 32})}, {}, "lora.down");
    const ValueId up = g->add_node(
        OpKind::kLinear, {down, g->add_weight("lora.up", DType::kF32, {32, 4})}, {}, "lora.up");
    q = g->add_node(OpKind::kAdd, {q, up}, {}, "lora.add");
  }
  const ValueId kv_src = f.cross ? ctx : h;
  const ValueId k = linear("to_k", kv_src, f.k_bias);
  const ValueId v = linear("to_v", kv_src, false, f.v_dtype);
  ir::AttentionAttrs a{4};
  a.causal = f.causal;
  const ValueId att = g->add_node(OpKind::kAttention, {q, k, v}, a, "blk.attn1.attn");
  g->mark_output(g->add_node(OpKind::kAdd, {linear("to_out.0", att), x}, {}, "blk.residual"));
  if (f.q_read) g->mark_output(q);
  if (!f.cross) g->mark_output(g->add_node(OpKind::kSilu, {ctx}, {}, "ctx_user"));
  g->verify();
  return g;
}

struct Stacked {
  plan::StackedProjections result;
  const Graph& graph() const { return *result.graph; }
  const Node* find(const std::string& name) const {
    for (const Node& n : graph().nodes())
      if (n.name == name) return &n;
    return nullptr;
  }
};

Stacked run(std::shared_ptr<const Graph> g, std::vector<const backend::Backend*> backends,
            PlacementMode mode = PlacementMode::kDevice) {
  const plan::Placement p =
      plan::place(*g, plan::default_order(*g), backends, {mode, plan::CopyCostModel{}});
  const plan::EpilogueFusion f = plan::fuse_epilogues(std::move(g), p, backends);
  return {plan::stack_projections(f.graph, f.placement, backends)};
}

TEST(StackProjections, SelfAttentionReadsOneStackedLinear) {
  const auto h = host();
  const auto d = device();
  const Stacked r = run(attention_block(), {&h, &d});
  EXPECT_EQ(r.result.attentions, 1);
  const Graph& g = r.graph();
  EXPECT_NO_THROW(g.verify());
  for (const char* gone : {"blk.attn1.to_q", "blk.attn1.to_k", "blk.attn1.to_v"})
    EXPECT_EQ(r.find(gone), nullptr) << gone;
  const Node* qkv = r.find("blk.attn1.to_qkv");
  ASSERT_NE(qkv, nullptr);
  EXPECT_EQ(qkv->op, OpKind::kLinear);
  EXPECT_EQ(qkv->gemm_weights(), 3);
  EXPECT_EQ(qkv->gemm_bias(), ir::kNone);
  ASSERT_EQ(qkv->inputs.size(), 4u);
  const char* weights[3] = {"blk.attn1.to_q.weight", "blk.attn1.to_k.weight",
                            "blk.attn1.to_v.weight"};
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(g.value(qkv->inputs[static_cast<size_t>(i) + 1]).name, weights[i]);
  EXPECT_EQ(g.value(qkv->output).shape, (Shape{2, 16, 96}));
  EXPECT_EQ(g.node(g.value(qkv->inputs[0]).producer).name, "blk.norm1");
  const Node* att = r.find("blk.attn1.attn");
  ASSERT_NE(att, nullptr);
  EXPECT_TRUE(att->attr<ir::AttentionAttrs>().packed_qkv);
  EXPECT_EQ(att->attr<ir::AttentionAttrs>().heads, 4);
  ASSERT_EQ(att->inputs.size(), 1u);
  EXPECT_EQ(att->inputs[0], qkv->output);
  EXPECT_EQ(g.value(att->output).shape, (Shape{2, 16, 32}));
  // Two nodes fewer than the fused graph it was given; every node on the device; inputs and
  // outputs as they were.
  const auto original = attention_block();
  const std::vector<const backend::Backend*> backends{&h, &d};
  const plan::Placement p = plan::place(*original, plan::default_order(*original), backends,
                                        {PlacementMode::kDevice, plan::CopyCostModel{}});
  EXPECT_EQ(g.nodes().size() + 2,
            plan::fuse_epilogues(original, p, backends).graph->nodes().size());
  for (int b : r.result.placement.backend_of)
    EXPECT_EQ(b, 1);
  EXPECT_EQ(g.inputs().size(), original->inputs().size());
  EXPECT_EQ(g.outputs().size(), original->outputs().size());
  EXPECT_EQ(r.result.placement.mode, PlacementMode::kDevice);
  // The weights stay separate graph values, so the model's counts do not change.
  EXPECT_EQ(g.weight_params(), original->weight_params());
}

TEST(StackProjections, LeavesWhatIsNotAPlainSelfAttention) {
  const auto h = host();
  const auto d = device();
  auto untouched = [&](const BlockForm& f, const char* why) {
    const Stacked r = run(attention_block(f), {&h, &d});
    EXPECT_EQ(r.result.attentions, 0) << why;
    EXPECT_EQ(r.find("blk.attn1.to_qkv"), nullptr) << why;
    EXPECT_NE(r.find("blk.attn1.to_k"), nullptr) << why;
  };
  untouched({.k_bias = true}, "a bias");
  untouched({.cross = true}, "cross-attention: k and v read another x");
  untouched({.causal = true}, "a causal mask");
  untouched({.q_read = true}, "q read by another node");
  untouched({.lora_on_q = true}, "a low-rank term on q");
  untouched({.v_dtype = DType::kF16}, "weights of two dtypes");
}

TEST(StackProjections, AsksTheBackendAndStaysOnOne) {
  const auto h = host();
  // The host (every fake node placed there) is asked too: a host that refuses the forms.
  const auto plain_host = FakeBackend(
      "cpu", backend::DeviceType::kHost,
      [](const Graph&, const Node& n) { return n.gemm_weights() == 1 && !ir::packed_qkv(n.attrs); },
      by_class(100, 10));
  const Stacked on_host = run(attention_block(), {&plain_host}, PlacementMode::kHost);
  EXPECT_EQ(on_host.result.attentions, 0);
  // A device that refuses the stacked linear, or the packed attention.
  const auto no_stack =
      device_refusing([](const Graph&, const Node& n) { return n.gemm_weights() != 1; });
  EXPECT_EQ(run(attention_block(), {&h, &no_stack}).result.attentions, 0);
  const auto no_packed =
      device_refusing([](const Graph&, const Node& n) { return ir::packed_qkv(n.attrs); });
  EXPECT_EQ(run(attention_block(), {&h, &no_packed}).result.attentions, 0);
  // A projection on another backend (the device refuses v).
  const auto no_v =
      device_refusing([](const Graph&, const Node& n) { return n.name == "blk.attn1.to_v"; });
  EXPECT_EQ(run(attention_block(), {&h, &no_v}, PlacementMode::kAuto).result.attentions, 0);
}

// The real host backend refuses both forms, so a host-only plan keeps its graph as it was.
TEST(StackProjections, TheCpuBackendKeepsItsGraph) {
  const std::unique_ptr<backend::Backend> cpu = backend::make_cpu_backend();
  const std::vector<const backend::Backend*> backends{cpu.get()};
  const auto g = attention_block();
  const plan::Placement p = plan::place(*g, plan::default_order(*g), backends,
                                        {PlacementMode::kHost, plan::CopyCostModel{}});
  const plan::StackedProjections r = plan::stack_projections(g, p, backends);
  EXPECT_EQ(r.attentions, 0);
  EXPECT_EQ(r.graph.get(), g.get());
  // Asked directly: the stacked linear and the packed attention of a device's rewrite.
  const auto d = device();
  const std::vector<const backend::Backend*> with_device{cpu.get(), &d};
  const Stacked on_device = run(attention_block(), with_device);
  ASSERT_EQ(on_device.result.attentions, 1);
  const Graph& sg = on_device.graph();
  EXPECT_FALSE(cpu->supports(sg, *on_device.find("blk.attn1.to_qkv")));
  EXPECT_FALSE(cpu->supports(sg, *on_device.find("blk.attn1.attn")));
}

TEST(StackProjections, LayerNormThenQuantizesForTheOneStackedReader) {
  const auto h = host();
  const auto d = device();
  const std::vector<const backend::Backend*> backends{&h, &d};
  const Stacked r = run(attention_block(), backends);
  const plan::ActivationQuantization q =
      plan::quantize_activations(r.result.graph, r.result.placement, backends);
  EXPECT_EQ(q.layer_norms, 1);
  EXPECT_EQ(q.linears, 1);
  for (const Node& n : q.graph->nodes())
    if (n.name == "blk.attn1.to_qkv") {
      EXPECT_EQ(q.graph->value(n.inputs[0]).dtype, DType::kS8Rows);
      EXPECT_EQ(q.graph->value(n.output).dtype, DType::kF32);
    }
  EXPECT_NO_THROW(q.graph->verify());
}

TEST(StackProjections, IrChecksTheStackedForms) {
  Graph g;
  const ValueId x = g.add_input("x", DType::kF32, {2, 5, 8});
  const ValueId a = g.add_weight("a", DType::kS8, {8, 8});
  const ValueId b = g.add_weight("b", DType::kS8, {4, 8});
  const ValueId c = g.add_weight("c", DType::kS8, {8, 8});
  ir::LinearAttrs two;
  two.weights = 2;
  // Widths add up; rows follow in input order; no bias is read from the second weight.
  const ValueId y = g.add_node(OpKind::kLinear, {x, a, b}, two, "ab");
  EXPECT_EQ(g.value(y).shape, (Shape{2, 5, 12}));
  EXPECT_EQ(g.node(g.value(y).producer).gemm_bias(), ir::kNone);
  // Wrong input count, other K, other dtype, an intermediate as a weight, an epilogue.
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, a}, two, "one"), Error);
  const ValueId wide = g.add_weight("wide", DType::kS8, {8, 9});
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, a, wide}, two, "k"), Error);
  const ValueId f16 = g.add_weight("f16", DType::kF16, {8, 8});
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, a, f16}, two, "dtype"), Error);
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, a, x}, two, "act"), Error);
  ir::LinearAttrs with_act = two;
  with_act.epilogue.activation = ir::Activation::kSilu;
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, a, c}, with_act, "epilogue"), Error);
  ir::LinearAttrs none;
  none.weights = 0;
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, a}, none, "zero"), Error);
  // Packed attention: [B, T, 3·W] -> [B, T, W]; the width must split into 3 x heads.
  ir::AttentionAttrs packed{2};
  packed.packed_qkv = true;
  const ValueId qkv = g.add_input("qkv", DType::kF32, {2, 5, 24});
  EXPECT_EQ(g.value(g.add_node(OpKind::kAttention, {qkv}, packed, "att")).shape, (Shape{2, 5, 8}));
  const ValueId odd = g.add_input("odd", DType::kF32, {2, 5, 21});
  EXPECT_THROW(g.add_node(OpKind::kAttention, {odd}, packed, "odd"), Error);
  EXPECT_THROW(g.add_node(OpKind::kAttention, {qkv, qkv, qkv}, packed, "three"), Error);
  ir::AttentionAttrs causal = packed;
  causal.causal = true;
  EXPECT_THROW(g.add_node(OpKind::kAttention, {qkv}, causal, "causal"), Error);
}

}  // namespace
}  // namespace hyrt::test

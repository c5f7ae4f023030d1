// Quantized activations on the host (plan::quantize_activations with the CPU backend): under
// W8A8 a layer norm feeding linears writes s8rows and the linears read it, through the engine,
// the executor and its arena — the same bits in every output as with the pass off (the layer
// norm's f32 rows quantized by the W8A8 linear's own rule), with a bias, a fused residual and a
// GEGLU epilogue among the readers; under W8 nothing is rewritten. Skips the rewrite's checks on
// a CPU without int8 dot products (W8A8 runs as W8 there).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "exec/engine.h"
#include "exec/executable.h"
#include "ir/graph.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/quantize.h"

namespace hyrt::test {
namespace {

using ir::OpKind;
using ir::ValueId;

constexpr int64_t kC = 64, kTokens = 40;

// x [2, 40, 64] -> ln -> q (bias), k (+ residual r), g (GEGLU epilogue after fusion: linear to
// 2·64, then geglu) -> outputs.
std::shared_ptr<ir::Graph> block() {
  auto g = std::make_shared<ir::Graph>();
  const ValueId x = g->add_input("x", DType::kF32, {2, kTokens, kC});
  const ValueId r = g->add_input("r", DType::kF32, {2, kTokens, kC});
  const ValueId h = g->add_node(
      OpKind::kLayerNorm,
      {x, g->add_weight("ln.g", DType::kF32, {kC}), g->add_weight("ln.b", DType::kF32, {kC})},
      ir::NormAttrs{}, "ln");
  g->mark_output(g->add_node(
      OpKind::kLinear,
      {h, g->add_weight("q.w", DType::kS8, {kC, kC}), g->add_weight("q.b", DType::kF32, {kC})}, {},
      "q"));
  const ValueId k =
      g->add_node(OpKind::kLinear, {h, g->add_weight("k.w", DType::kS8, {kC, kC})}, {}, "k");
  g->mark_output(g->add_node(OpKind::kAdd, {k, r}, {}, "k_res"));
  const ValueId p =
      g->add_node(OpKind::kLinear, {h, g->add_weight("g.w", DType::kS8, {2 * kC, kC})}, {}, "g");
  g->mark_output(g->add_node(OpKind::kGeglu, {p}, {}, "geglu"));
  g->verify();
  return g;
}

weights::MemoryWeights block_weights() {
  weights::MemoryWeights w;
  w.add("ln.g", random_tensor(Shape{kC}, 1, 1.0f));
  w.add("ln.b", random_tensor(Shape{kC}, 2, 0.3f));
  w.add("q.b", random_tensor(Shape{kC}, 3, 0.1f));
  uint64_t seed = 10;
  for (auto [name, rows] : {std::pair{"q.w", kC}, {"k.w", kC}, {"g.w", 2 * kC}}) {
    weights::QuantizedTensor qt =
        weights::quantize_per_row(random_tensor(Shape{rows, kC}, seed++, 0.1f).view());
    w.add_quantized(name, std::move(qt.q), std::move(qt.scale));
  }
  return w;
}

struct Result {
  std::vector<std::vector<float>> outputs;
  bool ln_quantized = false;
};

Result run_block(bool quantize, backend::Int8Mode mode) {
  exec::EngineOptions o;
  o.placement = plan::PlacementMode::kHost;
  o.int8_mode = mode;
  o.quantize_activations = quantize;
  exec::Engine engine(o);
  const weights::MemoryWeights w = block_weights();
  auto e = engine.compile(block(), w);
  const Tensor x = random_tensor(Shape{2, kTokens, kC}, 20, 2.0f);
  const Tensor r = random_tensor(Shape{2, kTokens, kC}, 21, 1.0f);
  Result out;
  for (const ir::Node& n : e->graph().nodes())
    if (n.op == OpKind::kLayerNorm) out.ln_quantized = ir::quantizes_output(n.attrs);
  for (int run = 0; run < 2; ++run) {  // the second run reuses the arena as the first left it
    std::memcpy(e->input("x").data, x.data(), x.bytes());
    std::memcpy(e->input("r").data, r.data(), r.bytes());
    e->run();
  }
  for (size_t i = 0; i < e->num_outputs(); ++i) {
    const TensorView y = e->output(i);
    const float* p = y.as<const float>();
    out.outputs.emplace_back(p, p + y.numel());
  }
  return out;
}

TEST(QuantizedActivationsHost, LayerNormQuantizesForW8a8LinearsWithTheSameBits) {
  const Result plain = run_block(false, backend::Int8Mode::kW8A8);
  const Result quantized = run_block(true, backend::Int8Mode::kW8A8);
  EXPECT_FALSE(plain.ln_quantized);
  if (!backend::cpu_has_int8_dot_product())
    GTEST_SKIP() << "no int8 dot products on this CPU: W8A8 runs as W8, nothing is quantized";
  EXPECT_TRUE(quantized.ln_quantized);
  ASSERT_EQ(plain.outputs.size(), 3u);
  ASSERT_EQ(quantized.outputs.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(std::memcmp(plain.outputs[i].data(), quantized.outputs[i].data(),
                          plain.outputs[i].size() * sizeof(float)),
              0)
        << "output " << i << " differs";
    double sum = 0;
    for (float v : quantized.outputs[i])
      sum += std::abs(v);
    EXPECT_GT(sum, 0.0) << "output " << i << " is all zeros";
  }
  // Under W8 the linears read f32: nothing to quantize for.
  EXPECT_FALSE(run_block(true, backend::Int8Mode::kW8).ln_quantized);
}

}  // namespace
}  // namespace hyrt::test

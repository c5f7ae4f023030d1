// Fused GEMM epilogues (ir::GemmEpilogue: y = act(x·wᵀ + bias) + residual) on the CPU backend:
// every linear/conv2d kernel — f32 (oneDNN, then our pass), 8-bit S weights in W8A8 and in W8
// (folded into the dequantizing epilogue), the few-row GEMV, the per-sample-scaled 3x3 conv and
// the 1x1 conv that runs as a linear — against the same computation as separate nodes
// (GEMM, activation, add) run by the same backend. They do the same f32 arithmetic in the same
// order, so the two agree to rounding (≤ 1e-6 relative L2); a fused node whose residual or
// activation were dropped misses by orders of magnitude more, which the test also checks.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "core/half.h"
#include "exec/executable.h"
#include "op_case.h"
#include "weights/quantize.h"

namespace hyrt::test {
namespace {

using ir::Activation;
using ir::OpKind;

struct GemmShape {
  bool conv = false;
  Shape x;                     // linear: [..., K]; conv: [B, H, W, Cin]
  int64_t n = 0;               // output features / channels
  int kernel = 1;              // conv only
  int stride = 1;              // conv only
  int padding = 0;             // conv only
  DType weight = DType::kF32;  // kF32 or kS8 (8-bit S)
  bool bias = true;
};

std::string describe(const GemmShape& s) {
  return str_cat(s.conv ? "conv " : "linear ", s.x.to_string(), " -> ", s.n, " ",
                 dtype_name(s.weight), s.conv ? str_cat(" k", s.kernel, " s", s.stride) : "",
                 s.bias ? " +bias" : "");
}

// The GEMM's weights, shared by the fused and the unfused graph.
MapWeights make_weights(const GemmShape& s) {
  MapWeights w;
  const int64_t cin = s.x.dim(-1);
  const Shape ws = s.conv ? Shape{s.n, cin, s.kernel, s.kernel} : Shape{s.n, cin};
  Tensor f = random_tensor(ws, 11, 0.2f);
  if (s.weight == DType::kS8) {
    weights::QuantizedTensor qt = weights::quantize_per_row(f.view());
    w.add("w", std::move(qt.q));
    w.add_scale("w", std::move(qt.scale));
  } else {
    w.add("w", std::move(f));
  }
  if (s.bias) w.add("b", random_tensor(Shape{s.n}, 12, 1.0f));
  return w;
}

// y -> [activation] -> [+ r]: the epilogue `e` as separate nodes.
ir::ValueId append_epilogue(ir::Graph& g, ir::ValueId y, const ir::GemmEpilogue& e, ir::ValueId r) {
  const OpKind act[] = {OpKind::kAdd, OpKind::kSilu, OpKind::kGelu, OpKind::kQuickGelu,
                        OpKind::kRelu};
  if (e.activation != Activation::kNone)
    y = g.add_node(act[static_cast<int>(e.activation)], {y}, {}, "act");
  if (e.residual) y = g.add_node(OpKind::kAdd, {y, r}, {}, "add");
  return y;
}

// x -> GEMM -> [activation] -> [+ residual], as separate nodes or as one fused node.
std::shared_ptr<ir::Graph> make_graph(const GemmShape& s, ir::GemmEpilogue e, bool fused) {
  auto g = std::make_shared<ir::Graph>();
  const int64_t cin = s.x.dim(-1);
  const ir::ValueId x = g->add_input("x", DType::kF32, s.x);
  const Shape ws = s.conv ? Shape{s.n, cin, s.kernel, s.kernel} : Shape{s.n, cin};
  std::vector<ir::ValueId> ins{x, g->add_weight("w", s.weight, ws)};
  if (s.bias) ins.push_back(g->add_weight("b", DType::kF32, {s.n}));
  ir::Conv2dAttrs conv{s.stride, s.padding, {}};
  const Shape out = ir::infer_output(*g, s.conv ? OpKind::kConv2d : OpKind::kLinear, ins,
                                     s.conv ? ir::Attrs(conv) : ir::Attrs(), "probe")
                        .shape;
  const ir::ValueId r = e.residual ? g->add_input("r", DType::kF32, out) : ir::kNone;
  ir::ValueId y;
  if (fused) {
    if (e.residual) ins.push_back(r);
    conv.epilogue = e;
    y = g->add_node(s.conv ? OpKind::kConv2d : OpKind::kLinear, ins,
                    s.conv ? ir::Attrs(conv) : ir::Attrs(ir::LinearAttrs{e}), "gemm");
  } else {
    y = g->add_node(s.conv ? OpKind::kConv2d : OpKind::kLinear, ins,
                    s.conv ? ir::Attrs(conv) : ir::Attrs(), "gemm");
    y = append_epilogue(*g, y, e, r);
  }
  g->mark_output(y);
  g->verify();
  return g;
}

// Runs a graph on `backend` with x and r from fixed seeds; returns the output.
std::vector<float> run(const std::shared_ptr<ir::Graph>& g, const MapWeights& w,
                       backend::Backend& backend) {
  backend::ProgramCache cache;
  auto exe = exec::Executable::create(g, backend, w, cache);
  for (size_t i = 0; i < exe->num_inputs(); ++i) {
    const TensorView in = exe->input(i);
    const Tensor data = random_tensor(in.shape, 100 + i, 1.0f);
    std::memcpy(in.data, data.data(), in.bytes());
  }
  exe->run();
  const TensorView y = exe->output(0);
  return std::vector<float>(y.as<const float>(), y.as<const float>() + y.numel());
}

backend::Backend& backend_for(backend::Int8Mode mode) {
  static std::unique_ptr<backend::Backend> w8a8 =
      backend::make_cpu_backend({.num_threads = 0, .int8_mode = backend::Int8Mode::kW8A8});
  static std::unique_ptr<backend::Backend> w8 =
      backend::make_cpu_backend({.num_threads = 0, .int8_mode = backend::Int8Mode::kW8});
  return mode == backend::Int8Mode::kW8A8 ? *w8a8 : *w8;
}

void check_fusion(const GemmShape& s) {
  SCOPED_TRACE(describe(s));
  const MapWeights w = make_weights(s);
  for (backend::Int8Mode mode : {backend::Int8Mode::kW8A8, backend::Int8Mode::kW8}) {
    if (s.weight != DType::kS8 && mode == backend::Int8Mode::kW8) continue;
    backend::Backend& b = backend_for(mode);
    for (Activation act : {Activation::kNone, Activation::kSilu, Activation::kGelu,
                           Activation::kQuickGelu, Activation::kRelu})
      for (bool residual : {false, true}) {
        const ir::GemmEpilogue e{act, residual};
        if (e.empty()) continue;
        SCOPED_TRACE(str_cat(backend::int8_mode_name(mode), " ", ir::activation_name(act),
                             residual ? " +residual" : ""));
        const auto fused_graph = make_graph(s, e, true);
        EXPECT_TRUE(b.supports(*fused_graph, fused_graph->nodes().back()));
        const std::vector<float> fused = run(fused_graph, w, b);
        const std::vector<float> separate = run(make_graph(s, e, false), w, b);
        ASSERT_EQ(fused.size(), separate.size());
        EXPECT_LE(relative_l2(fused.data(), separate.data(), fused.size()), 1e-6);
        // The comparison can fail: the same graph without its epilogue is far off.
        const std::vector<float> plain = run(make_graph(s, {}, false), w, b);
        EXPECT_GT(relative_l2(fused.data(), plain.data(), fused.size()), 1e-2);
      }
  }
}

TEST(FusedEpilogue, LinearF32) {
  check_fusion({.x = {2, 13, 77}, .n = 35});
}
TEST(FusedEpilogue, LinearF32NoBias) {
  check_fusion({.x = {9, 40}, .n = 24, .bias = false});
}
TEST(FusedEpilogue, LinearInt8) {  // W8A8 and W8 through the dequantizing epilogue
  check_fusion({.x = {2, 64, 96}, .n = 40, .weight = DType::kS8});
}
TEST(FusedEpilogue, LinearInt8FewRows) {  // the GEMV kernel (time embedding: a row per sample)
  check_fusion({.x = {2, 320}, .n = 72, .weight = DType::kS8});
}
TEST(FusedEpilogue, Conv3x3F32) {
  check_fusion({.conv = true, .x = {2, 9, 7, 16}, .n = 24, .kernel = 3, .padding = 1});
}
TEST(FusedEpilogue, Conv3x3Int8PerSample) {
  check_fusion({.conv = true,
                .x = {2, 8, 8, 16},
                .n = 32,
                .kernel = 3,
                .stride = 2,
                .padding = 1,
                .weight = DType::kS8});
}
TEST(FusedEpilogue, Conv1x1Int8RunsAsLinear) {
  check_fusion({.conv = true, .x = {2, 6, 5, 24}, .n = 16, .weight = DType::kS8, .bias = false});
}

// The low-rank term (a LoRA folded into its layer): linear(x, w, [b], down, up), against
// up(down(x)) + layer(x) as separate nodes, with every
// activation and residual; ragged rows (not a multiple of the 8-row group) and columns (not of
// the 16-lane vector), on each linear kernel.
std::shared_ptr<ir::Graph> make_low_rank_graph(const GemmShape& s, int64_t rank, ir::GemmEpilogue e,
                                               bool fused) {
  auto g = std::make_shared<ir::Graph>();
  const int64_t k = s.x.dim(-1);
  const ir::ValueId x = g->add_input("x", DType::kF32, s.x);
  std::vector<ir::ValueId> ins{x, g->add_weight("w", s.weight, {s.n, k})};
  if (s.bias) ins.push_back(g->add_weight("b", DType::kF32, {s.n}));
  Shape out = s.x;
  out[out.rank() - 1] = s.n;
  const ir::ValueId r = e.residual ? g->add_input("r", DType::kF32, out) : ir::kNone;
  const ir::ValueId down = g->add_weight("d", DType::kF32, {rank, k});
  const ir::ValueId up = g->add_weight("u", DType::kF32, {s.n, rank});
  ir::ValueId y;
  if (fused) {
    ins.push_back(down);
    ins.push_back(up);
    if (e.residual) ins.push_back(r);
    e.low_rank = true;
    y = g->add_node(OpKind::kLinear, ins, ir::LinearAttrs{e}, "gemm");
  } else {
    const ir::ValueId h = g->add_node(OpKind::kLinear, {x, down}, {}, "down");
    y = g->add_node(OpKind::kAdd,
                    {g->add_node(OpKind::kLinear, ins, {}, "gemm"),
                     g->add_node(OpKind::kLinear, {h, up}, {}, "up")},
                    {}, "sum");
    y = append_epilogue(*g, y, e, r);
  }
  g->mark_output(y);
  g->verify();
  return g;
}

// bf16_term: the kernel takes bf16 products under bf16 (all but the f32 GEMV's).
void check_low_rank(const GemmShape& s, int64_t rank, bool bf16_term = true) {
  SCOPED_TRACE(str_cat(describe(s), " rank ", rank));
  MapWeights w = make_weights(s);
  w.add("d", random_tensor(Shape{rank, s.x.dim(-1)}, 13, 0.3f));
  w.add("u", random_tensor(Shape{s.n, rank}, 14, 0.5f));
  for (backend::Int8Mode mode : {backend::Int8Mode::kW8A8, backend::Int8Mode::kW8}) {
    if (s.weight != DType::kS8 && mode == backend::Int8Mode::kW8) continue;
    backend::Backend& b = backend_for(mode);
    for (Activation act : {Activation::kNone, Activation::kGelu})
      for (bool residual : {false, true}) {
        const ir::GemmEpilogue e{act, residual};
        SCOPED_TRACE(str_cat(backend::int8_mode_name(mode), " ", ir::activation_name(act),
                             residual ? " +residual" : ""));
        const auto fused_graph = make_low_rank_graph(s, rank, e, true);
        EXPECT_TRUE(b.supports(*fused_graph, fused_graph->nodes().back()));
        const std::vector<float> fused = run(fused_graph, w, b);
        const std::vector<float> separate = run(make_low_rank_graph(s, rank, e, false), w, b);
        ASSERT_EQ(fused.size(), separate.size());
        // W8A8 (but its GEMV; where the CPU has int8 dot products, else it runs W8) computes h
        // from its quantized x with the down quantized per row (an s8 product): int8's
        // rounding of the term; every other kernel the same f32 products as the separate down.
        const bool s8_down = s.weight == DType::kS8 && mode == backend::Int8Mode::kW8A8 &&
                             bf16_term && backend::cpu_has_int8_dot_product();
        const double tolerance = s8_down ? 2e-2 : 1e-6;
        const double err0 = relative_l2(fused.data(), separate.data(), fused.size());
        EXPECT_LE(err0, tolerance);
        if (s8_down) EXPECT_GT(err0, 1e-7) << "the s8 down did not run";
        // The comparison can fail: without the term the result is far off.
        const std::vector<float> plain = run(make_graph(s, e, !e.empty()), w, b);
        EXPECT_GT(relative_l2(fused.data(), plain.data(), fused.size()), 10 * tolerance);
        // Under bf16 the term's products are bf16 (AVX512_BF16 pairs), the separate up
        // projection's f32 (rank-sized weights stay f32): within bf16's rounding, not equal.
        if (mode != backend::Int8Mode::kW8A8) continue;
        const std::vector<float> fused_bf16 = run(fused_graph, w, bf16_backend());
        const std::vector<float> separate_bf16 =
            run(make_low_rank_graph(s, rank, e, false), w, bf16_backend());
        const double err = relative_l2(fused_bf16.data(), separate_bf16.data(), fused.size());
        if (bf16_term && backend::cpu_has_bf16_dot_product()) {
          EXPECT_LE(err, s8_down ? 3e-2 : 1e-2);
          EXPECT_GT(err, 1e-7) << "the bf16 term did not run";
        } else {
          EXPECT_LE(err, tolerance);
        }
      }
  }
}

TEST(FusedEpilogue, LowRankLinearF32) {
  check_low_rank({.x = {2, 13, 77}, .n = 35}, 5);
  check_low_rank({.x = {3, 40}, .n = 48, .bias = false}, 16);
}
TEST(FusedEpilogue, LowRankLinearInt8) {  // W8A8 and W8: inside the dequantizing epilogue
  check_low_rank({.x = {2, 21, 96}, .n = 40, .weight = DType::kS8}, 32);
  check_low_rank({.x = {1, 19, 64}, .n = 50, .weight = DType::kS8}, 7);  // an odd rank
}
TEST(FusedEpilogue, LowRankLinearInt8FewRows) {  // the GEMV kernel, then the epilogue pass
  check_low_rank({.x = {2, 320}, .n = 72, .weight = DType::kS8}, 8, /*bf16_term=*/false);
}
// Request batching: a sample's rows through a LoRA-carrying linear give the same bits alone (2
// samples: guidance) or beside others (6) — the term's down GEMM as well as the layer's
// (chunked_matmul: AVX2's GEMMs would not keep it on their own).
TEST(FusedEpilogue, LowRankSampleSameBitsAloneOrBatched) {
  for (const DType weight : {DType::kF32, DType::kS8}) {
    for (backend::Int8Mode mode : {backend::Int8Mode::kW8A8, backend::Int8Mode::kW8}) {
      const auto run_samples = [&](int64_t samples, const Tensor& x) {
        const GemmShape s{.x = {samples, 16, 64}, .n = 48, .weight = weight};
        MapWeights w = make_weights(s);
        w.add("d", random_tensor(Shape{8, 64}, 13, 0.3f));
        w.add("u", random_tensor(Shape{48, 8}, 14, 0.5f));
        backend::ProgramCache cache;
        auto exe = exec::Executable::create(make_low_rank_graph(s, 8, ir::GemmEpilogue{}, true),
                                            backend_for(mode), w, cache);
        const TensorView in = exe->input(0);
        std::memcpy(in.data, x.data(), in.bytes());
        exe->run();
        const TensorView y = exe->output(0);
        return std::vector<float>(y.as<const float>(), y.as<const float>() + y.numel());
      };
      const Tensor x = random_tensor(Shape{6, 16, 64}, 15);
      const std::vector<float> batched = run_samples(6, x), alone = run_samples(2, x);
      ASSERT_EQ(alone.size() * 3, batched.size());
      EXPECT_EQ(0, std::memcmp(alone.data(), batched.data(), alone.size() * sizeof(float)))
          << dtype_name(weight) << " " << backend::int8_mode_name(mode)
          << ": the first two samples differ batched";
    }
  }
}
// Whole 16-row groups and 16-column tiles: the bf16 term on AMX tiles where the CPU has them
// (ctest cpu_low_rank_vector runs these with HYRT_CPU_LOW_RANK=vector).
TEST(FusedEpilogue, LowRankLinearTileShapes) {
  check_low_rank({.x = {2, 37, 96}, .n = 80, .weight = DType::kS8}, 40);
  check_low_rank({.x = {2, 24, 64}, .n = 64}, 33);
}

// The term's bf16 pass itself (finish_low_rank_rows / apply_gemm_epilogue_rows: AMX tiles, or
// the AVX512_BF16 loops) against an f64 sum of the same bf16-rounded products: 53 rows (three
// tile groups and 5 rows for the vector loops), 80 columns (a 64-column block and a 16), ranks
// of one full group of 16 pairs plus 4, an odd rank, and one of 16 pairs exactly.
TEST(FusedEpilogue, LowRankBf16TermAgainstF64) {
  if (!backend::cpu_has_bf16_dot_product()) GTEST_SKIP() << "no bf16 dot products here";
  const int64_t rows = 53, cols = 80;
  for (int64_t rank : {40, 33, 32}) {
    SCOPED_TRACE(str_cat("rank ", rank));
    const int64_t pairs = (rank + 1) / 2;
    const Tensor h = random_tensor(Shape{rows, rank}, 21, 1.0f);
    const Tensor up = random_tensor(Shape{cols, rank}, 22, 0.5f);
    const Tensor y0 = random_tensor(Shape{rows, cols}, 23, 1.0f);
    const auto bf = [](float v) { return bf16_to_f32(f32_to_bf16(v)); };
    std::vector<uint32_t> up_pairs(static_cast<size_t>(pairs * cols));
    for (int64_t p = 0; p < pairs; ++p)
      for (int64_t c = 0; c < cols; ++c) {
        const float lo = up.as<float>()[c * rank + 2 * p];
        const float hi = 2 * p + 1 < rank ? up.as<float>()[c * rank + 2 * p + 1] : 0.0f;
        up_pairs[static_cast<size_t>(p * cols + c)] =
            f32_to_bf16(lo) | static_cast<uint32_t>(f32_to_bf16(hi)) << 16;
      }
    std::vector<double> want(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        double sum = y0.as<float>()[r * cols + c];
        for (int64_t k = 0; k < rank; ++k)
          sum += static_cast<double>(bf(h.as<float>()[r * rank + k])) *
                 bf(up.as<float>()[c * rank + k]);
        want[static_cast<size_t>(r * cols + c)] = sum;
      }
    backend::cpu::GemmEpilogueArgs args;
    args.low_rank = {h.as<float>(), nullptr, up_pairs.data(), rank};
    for (bool threaded : {false, true}) {
      std::vector<float> y(y0.as<float>(), y0.as<float>() + rows * cols);
      if (threaded)
        backend::cpu::apply_gemm_epilogue_rows(y.data(), rows, cols, args);
      else
        backend::cpu::finish_low_rank_rows(y.data(), 0, rows, cols, args);
      double err = 0.0, norm = 0.0;
      for (size_t i = 0; i < y.size(); ++i) {
        err += (y[i] - want[i]) * (y[i] - want[i]);
        norm += want[i] * want[i];
      }
      EXPECT_LE(std::sqrt(err / norm), 1e-6) << (threaded ? "threaded" : "one thread");
    }
  }
}

TEST(FusedEpilogue, ResidualMustMatchTheOutput) {
  ir::Graph g;
  const ir::ValueId x = g.add_input("x", DType::kF32, {4, 8});
  const ir::ValueId w = g.add_weight("w", DType::kF32, {6, 8});
  const ir::ValueId wrong = g.add_input("r", DType::kF32, {4, 8});
  const ir::ValueId good = g.add_input("r2", DType::kF32, {4, 6});
  const ir::LinearAttrs fused{{Activation::kNone, true}};
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, w, wrong}, fused), Error);
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, w}, fused), Error);  // residual missing
  const ir::ValueId y = g.add_node(OpKind::kLinear, {x, w, good}, fused);
  const ir::Node& n = g.nodes().back();
  EXPECT_EQ(n.gemm_residual(), good);
  EXPECT_EQ(n.gemm_bias(), ir::kNone);
  EXPECT_EQ(g.value(y).shape, (Shape{4, 6}));
  EXPECT_NE(g.dump().find("+residual"), std::string::npos);
  // The CPU backend takes a residual activation, never a weight in its place.
  const ir::ValueId rw = g.add_weight("rw", DType::kF32, {4, 6});
  g.add_node(OpKind::kLinear, {x, w, rw}, fused);
  EXPECT_FALSE(cpu_backend().supports(g, g.nodes().back()));
  EXPECT_TRUE(cpu_backend().supports(g, g.node(0)));
}

// A GEGLU folded into the linear before it (ir::GemmEpilogue::geglu: x · wᵀ + b [..., 2N] gated
// into [..., N]) against the linear and a kGeglu node: every CPU linear kernel (f32 and bf16
// oneDNN, W8A8 and W8 through the dequantizing epilogue, the GEMV) computes the same values in
// the same order, so the two agree exactly; a gate dropped or its halves swapped would not.
std::shared_ptr<ir::Graph> make_geglu_graph(const GemmShape& s, bool fused) {
  auto g = std::make_shared<ir::Graph>();
  const ir::ValueId x = g->add_input("x", DType::kF32, s.x);
  std::vector<ir::ValueId> ins{x, g->add_weight("w", s.weight, {s.n, s.x.dim(-1)})};
  if (s.bias) ins.push_back(g->add_weight("b", DType::kF32, {s.n}));
  ir::GemmEpilogue e;
  e.geglu = true;
  const ir::ValueId y =
      fused ? g->add_node(OpKind::kLinear, ins, ir::LinearAttrs{e}, "gemm")
            : g->add_node(OpKind::kGeglu, {g->add_node(OpKind::kLinear, ins, {}, "gemm")}, {},
                          "geglu");
  g->mark_output(y);
  g->verify();
  return g;
}

void check_geglu(const GemmShape& s) {
  SCOPED_TRACE(describe(s));
  const MapWeights w = make_weights(s);
  std::vector<std::pair<std::string, backend::Backend*>> backends{
      {"w8a8", &backend_for(backend::Int8Mode::kW8A8)}, {"bf16", &bf16_backend()}};
  if (s.weight == DType::kS8) {
    backends.emplace_back("w8", &backend_for(backend::Int8Mode::kW8));
    backends.emplace_back("w8 bf16", &bf16_backend(backend::Int8Mode::kW8));
  }
  for (const auto& [name, b] : backends) {
    SCOPED_TRACE(name);
    const auto fused_graph = make_geglu_graph(s, true);
    ASSERT_TRUE(b->supports(*fused_graph, fused_graph->nodes().back()));
    const std::vector<float> fused = run(fused_graph, w, *b);
    const std::vector<float> separate = run(make_geglu_graph(s, false), w, *b);
    ASSERT_EQ(fused.size(), static_cast<size_t>(s.x.numel() / s.x.dim(-1) * s.n / 2));
    EXPECT_EQ(fused, separate);
    // A result over 8 MiB runs in chunks: the kernel's workspace holds less than all of it.
    const int64_t result_bytes = s.x.numel() / s.x.dim(-1) * s.n * 4;
    if (result_bytes > (8 << 20)) {
      backend::ProgramCache cache;
      const auto kernel = b->prepare(*fused_graph, fused_graph->nodes().back(), w, cache);
      EXPECT_LT(kernel->workspace_bytes(), static_cast<size_t>(result_bytes) / 2);
    }
    // The comparison can fail: the linear's first half alone (no gate) is far off.
    auto g = std::make_shared<ir::Graph>();
    const ir::ValueId x = g->add_input("x", DType::kF32, s.x);
    std::vector<ir::ValueId> ins{x, g->add_weight("w", s.weight, {s.n, s.x.dim(-1)})};
    if (s.bias) ins.push_back(g->add_weight("b", DType::kF32, {s.n}));
    Shape half = s.x;
    half[half.rank() - 1] = s.n / 2;
    g->mark_output(g->add_node(OpKind::kSlice, {g->add_node(OpKind::kLinear, ins, {}, "gemm")},
                               ir::SliceAttrs{static_cast<int>(s.x.rank()) - 1, 0, s.n / 2},
                               "hidden"));
    const std::vector<float> hidden = run(g, w, *b);
    EXPECT_GT(relative_l2(fused.data(), hidden.data(), fused.size()), 1e-2);
  }
}

TEST(FusedEpilogue, GegluLinearF32) {  // oneDNN f32 and bf16 products, then the gate
  check_geglu({.x = {2, 40, 64}, .n = 96});
  check_geglu({.x = {3, 24}, .n = 20, .bias = false});  // 10 columns: a scalar tail
  // A result over the 8 MiB chunk (gemm.cpp): three chunks of rows, the last one shorter.
  check_geglu({.x = {2, 1100, 32}, .n = 2048});
}
TEST(FusedEpilogue, GegluLinearInt8) {  // W8A8 and W8: gated in the dequantizing epilogue
  check_geglu({.x = {2, 64, 96}, .n = 80, .weight = DType::kS8});
  check_geglu({.x = {2, 33, 40}, .n = 36, .weight = DType::kS8, .bias = false});
  // A result over the 8 MiB chunk (gemm.cpp): three chunks of rows, the last one shorter.
  check_geglu({.x = {2, 1100, 32}, .n = 2048, .weight = DType::kS8});
}
TEST(FusedEpilogue, GegluLinearInt8FewRows) {  // the GEMV kernel, then the gate
  check_geglu({.x = {2, 320}, .n = 64, .weight = DType::kS8});
}

// A LoRA on a feed-forward's input projection: the low-rank term and the GEGLU in one node
// (linear(x, w, [b], down, up) +low_rank +geglu) against down, up, layer, add and kGeglu as
// separate nodes, on every linear kernel; rows in chunks (a result over 8 MiB) read their own
// rows of the term. The term is computed as the low-rank tests above say (exactly, or with
// bf16 products or an s8 down), and leaving it out is far off.
std::shared_ptr<ir::Graph> make_low_rank_geglu_graph(const GemmShape& s, int64_t rank, bool fused,
                                                     bool term = true) {
  auto g = std::make_shared<ir::Graph>();
  const int64_t k = s.x.dim(-1);
  const ir::ValueId x = g->add_input("x", DType::kF32, s.x);
  std::vector<ir::ValueId> ins{x, g->add_weight("w", s.weight, {s.n, k})};
  if (s.bias) ins.push_back(g->add_weight("b", DType::kF32, {s.n}));
  const auto down = [&] { return g->add_weight("d", DType::kF32, {rank, k}); };
  const auto up = [&] { return g->add_weight("u", DType::kF32, {s.n, rank}); };
  ir::ValueId y;
  if (fused) {
    ir::GemmEpilogue e;
    e.geglu = true;
    e.low_rank = term;
    if (term) {
      ins.push_back(down());
      ins.push_back(up());
    }
    y = g->add_node(OpKind::kLinear, ins, ir::LinearAttrs{e}, "gemm");
  } else {
    const ir::ValueId h = g->add_node(OpKind::kLinear, {x, down()}, {}, "down");
    y = g->add_node(OpKind::kAdd,
                    {g->add_node(OpKind::kLinear, ins, {}, "gemm"),
                     g->add_node(OpKind::kLinear, {h, up()}, {}, "up")},
                    {}, "sum");
    y = g->add_node(OpKind::kGeglu, {y}, {}, "geglu");
  }
  g->mark_output(y);
  g->verify();
  return g;
}

void check_low_rank_geglu(const GemmShape& s, int64_t rank) {
  SCOPED_TRACE(str_cat(describe(s), " rank ", rank));
  MapWeights w = make_weights(s);
  w.add("d", random_tensor(Shape{rank, s.x.dim(-1)}, 13, 0.3f));
  w.add("u", random_tensor(Shape{s.n, rank}, 14, 0.5f));
  // The few-row GEMV (8-bit S weights; gemm_int8.cpp) takes its term in f32 everywhere.
  const int64_t rows = s.x.numel() / s.x.dim(-1);
  const bool gemv = s.weight == DType::kS8 && (s.x.rank() <= 2 ? rows <= 256 : rows / s.x[0] <= 4);
  struct Case {
    std::string name;
    backend::Backend* b;
    bool exact;  // the term's products in f32, as the separate nodes compute them
  };
  const bool s8 = s.weight == DType::kS8;
  std::vector<Case> cases{{"w8a8", &backend_for(backend::Int8Mode::kW8A8),
                           !s8 || gemv || !backend::cpu_has_int8_dot_product()},
                          {"bf16", &bf16_backend(), gemv || !backend::cpu_has_bf16_dot_product()}};
  if (s8) {
    cases.push_back({"w8", &backend_for(backend::Int8Mode::kW8), true});
    cases.push_back({"w8 bf16", &bf16_backend(backend::Int8Mode::kW8),
                     gemv || !backend::cpu_has_bf16_dot_product()});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const auto fused_graph = make_low_rank_geglu_graph(s, rank, true);
    ASSERT_TRUE(c.b->supports(*fused_graph, fused_graph->nodes().back()));
    const std::vector<float> fused = run(fused_graph, w, *c.b);
    const std::vector<float> separate = run(make_low_rank_geglu_graph(s, rank, false), w, *c.b);
    ASSERT_EQ(fused.size(), static_cast<size_t>(s.x.numel() / s.x.dim(-1) * s.n / 2));
    ASSERT_EQ(fused.size(), separate.size());
    const double tolerance = c.exact ? 1e-6 : 3e-2;
    const double err = relative_l2(fused.data(), separate.data(), fused.size());
    EXPECT_LE(err, tolerance);
    if (!c.exact) EXPECT_GT(err, 1e-7) << "the bf16 or s8 term did not run";
    // The comparison can fail: the gated projection without its term is far off.
    const std::vector<float> plain = run(make_low_rank_geglu_graph(s, rank, true, false), w, *c.b);
    EXPECT_GT(relative_l2(fused.data(), plain.data(), fused.size()), 5 * tolerance);
  }
}

TEST(FusedEpilogue, LowRankGegluLinear) {
  check_low_rank_geglu({.x = {2, 13, 64}, .n = 96}, 8);                         // f32
  check_low_rank_geglu({.x = {2, 21, 96}, .n = 80, .weight = DType::kS8}, 32);  // W8A8, W8
  check_low_rank_geglu({.x = {2, 37, 64}, .n = 64, .weight = DType::kS8}, 7);   // tiles, odd
  check_low_rank_geglu({.x = {2, 320}, .n = 64, .weight = DType::kS8}, 8);      // the GEMV
  // A result over the 8 MiB chunk (gemm.cpp): three chunks of rows, each with its own h rows.
  check_low_rank_geglu({.x = {2, 1100, 32}, .n = 2048, .weight = DType::kS8}, 16);
  check_low_rank_geglu({.x = {2, 1100, 32}, .n = 2048}, 16);
}

// A GEGLU epilogue takes nothing beside it, and an even width; the output is half the GEMM's.
TEST(FusedEpilogue, GegluShapesAndExclusions) {
  ir::Graph g;
  const ir::ValueId x = g.add_input("x", DType::kF32, {4, 8});
  const ir::ValueId w = g.add_weight("w", DType::kF32, {6, 8});
  ir::GemmEpilogue e;
  e.geglu = true;
  EXPECT_EQ(g.value(g.add_node(OpKind::kLinear, {x, w}, ir::LinearAttrs{e}, "ok")).shape,
            (Shape{4, 3}));
  ir::GemmEpilogue with_act = e;
  with_act.activation = Activation::kSilu;
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, w}, ir::LinearAttrs{with_act}, "act"), Error);
  const ir::ValueId odd = g.add_weight("odd", DType::kF32, {5, 8});
  EXPECT_THROW(g.add_node(OpKind::kLinear, {x, odd}, ir::LinearAttrs{e}, "odd"), Error);
  const ir::ValueId img = g.add_input("img", DType::kF32, {1, 4, 4, 8});
  const ir::ValueId cw = g.add_weight("cw", DType::kF32, {6, 8, 1, 1});
  EXPECT_THROW(g.add_node(OpKind::kConv2d, {img, cw}, ir::Conv2dAttrs{1, 0, e}, "conv"), Error);
}

}  // namespace
}  // namespace hyrt::test

// The CUDA backend's low-rank epilogue (a LoRA adapter folded into its linear: the term
// up · down merged into the layer's widened f16 weights at each run, cuda_gemm.h,
// gemm_inputs_supported) on a GPU, against the CPU backend's f32 run of the same fused node and
// of the separate down, up and add: ranks 8–80, a 77-token context, odd sizes (K 72, N 40), with
// and without bias and residual, f32, f16 and 8-bit S layer weights, outputs poisoned by the
// executor's NaN-filled arena; each run twice more (captured, replayed) with the same result.
// Each case also checks that leaving the term out is far off, so the comparison can fail.
// Without a usable GPU these skip.
#include <gtest/gtest.h>

#ifdef HYRT_HAVE_CUDA

#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"
#include "core/half.h"
#include "exec/executable.h"
#include "ir/graph.h"
#include "plan/placement.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/quantize.h"

namespace hyrt::test {
namespace {

using ir::OpKind;
using ir::ValueId;

struct LowRankCase {
  Shape x;  // [..., K]
  int64_t n = 0, rank = 0;
  bool bias = true, residual = false, s8 = false, f16 = false;
  std::string describe() const {
    return str_cat(x.to_string(), " -> ", n, " rank ", rank, bias ? " +bias" : "",
                   residual ? " +residual" : "",
                   s8    ? " s8"
                   : f16 ? " f16"
                         : " f32");
  }
};

// fused: one linear with the low-rank epilogue; else the layer, down, up and adds as nodes;
// `term` false: the layer (and residual) alone.
std::shared_ptr<ir::Graph> low_rank_graph(const LowRankCase& c, bool fused, bool term = true) {
  auto g = std::make_shared<ir::Graph>();
  const int64_t k = c.x[c.x.rank() - 1];
  const ValueId x = g->add_input("x", DType::kF32, c.x);
  Shape ys = c.x;
  ys[ys.rank() - 1] = c.n;
  const ValueId res = c.residual ? g->add_input("res", DType::kF32, ys) : ir::kNone;
  const ValueId w = g->add_weight("w",
                                  c.s8    ? DType::kS8
                                  : c.f16 ? DType::kF16
                                          : DType::kF32,
                                  {c.n, k});
  std::vector<ValueId> ins = {x, w};
  if (c.bias) ins.push_back(g->add_weight("b", DType::kF32, {c.n}));
  const ValueId down = term ? g->add_weight("down", DType::kF32, {c.rank, k}) : ir::kNone;
  const ValueId up = term ? g->add_weight("up", DType::kF32, {c.n, c.rank}) : ir::kNone;
  ValueId y;
  if (fused && term) {
    ins.push_back(down);
    ins.push_back(up);
    if (c.residual) ins.push_back(res);
    ir::GemmEpilogue e;
    e.low_rank = true;
    e.residual = c.residual;
    y = g->add_node(OpKind::kLinear, ins, ir::LinearAttrs{e}, "layer");
  } else {
    y = g->add_node(OpKind::kLinear, ins, {}, "layer");
    if (term)
      y = g->add_node(
          OpKind::kAdd,
          {y, g->add_node(OpKind::kLinear, {g->add_node(OpKind::kLinear, {x, down}), up})});
    if (c.residual) y = g->add_node(OpKind::kAdd, {y, res});
  }
  g->mark_output(y);
  g->verify();
  return g;
}

weights::MemoryWeights low_rank_weights(const LowRankCase& c) {
  weights::MemoryWeights w;
  const int64_t k = c.x[c.x.rank() - 1];
  Tensor lw = random_tensor(Shape{c.n, k}, 11, 0.05f);
  if (c.s8) {
    weights::QuantizedTensor q = weights::quantize_per_row(lw.view());
    w.add_quantized("w", std::move(q.q), std::move(q.scale));
  } else if (c.f16) {
    Tensor h(DType::kF16, Shape{c.n, k});
    convert_from_f32(lw.as<float>(), DType::kF16, h.data(), static_cast<size_t>(lw.numel()));
    w.add("w", std::move(h));
  } else {
    w.add("w", std::move(lw));
  }
  if (c.bias) w.add("b", random_tensor(Shape{c.n}, 12, 0.5f));
  w.add("down", random_tensor(Shape{c.rank, k}, 13, 0.1f));
  w.add("up", random_tensor(Shape{c.n, c.rank}, 14, 0.2f));
  return w;
}

struct Backends {
  std::unique_ptr<backend::Backend> cpu;
  std::unique_ptr<backend::cuda::CudaBackend> gpu;
  std::string why;
  Backends() {
    backend::CpuBackendOptions co;
    co.num_threads = 2;
    cpu = backend::make_cpu_backend(co);
    gpu = backend::cuda::try_make_cuda_backend({}, &why);
  }
};

std::vector<float> run_graph(std::shared_ptr<ir::Graph> g, const weights::MemoryWeights& w,
                             Backends& b, bool device) {
  backend::ProgramCache cache;
  std::unique_ptr<exec::Executable> e;
  if (!device) {
    e = exec::Executable::create(g, *b.cpu, w, cache);
  } else {
    backend::Backend* const backends[] = {b.cpu.get(), b.gpu.get()};
    const backend::Backend* const const_backends[] = {b.cpu.get(), b.gpu.get()};
    plan::PlacementOptions po;
    po.mode = plan::PlacementMode::kDevice;
    plan::Placement p = plan::place(*g, plan::default_order(*g), const_backends, po);
    for (const ir::Node& n : g->nodes())
      EXPECT_EQ(p.backend_of[n.id], 1) << n.name << " is not on the GPU: " << p.reason[n.id];
    e = exec::Executable::create(g, backends, std::move(p), w, cache);
  }
  std::vector<float> out;
  for (int run = 0; run < 3; ++run) {               // eager, captured, replayed: the same result
    for (size_t i = 0; i < e->num_inputs(); ++i) {  // a run may consume its inputs
      const TensorView in = e->input(i);
      const Tensor data = random_tensor(in.shape, 100 + i, 1.0f);
      std::copy_n(data.as<float>(), data.numel(), static_cast<float*>(in.data));
    }
    e->run();
    const TensorView y = e->output(0);
    const float* p = static_cast<const float*>(y.data);
    std::vector<float> now(p, p + y.shape.numel());
    if (run > 0) {
      EXPECT_EQ(now, out) << "run " << run << " differs from the first";
    }
    out = std::move(now);
  }
  return out;
}

void check(const LowRankCase& c) {
  SCOPED_TRACE(c.describe());
  Backends b;
  if (!b.gpu) GTEST_SKIP() << "no usable CUDA device: " << b.why;
  const weights::MemoryWeights w = low_rank_weights(c);
  const auto fused = low_rank_graph(c, true);
  ASSERT_TRUE(b.gpu->supports(*fused, fused->nodes().back()));
  const std::vector<float> gpu = run_graph(fused, w, b, true);
  const std::vector<float> cpu_fused = run_graph(fused, w, b, false);
  const std::vector<float> cpu_separate = run_graph(low_rank_graph(c, false), w, b, false);
  const std::vector<float> without = run_graph(low_rank_graph(c, false, false), w, b, false);
  ASSERT_EQ(gpu.size(), cpu_separate.size());
  // f16 activations and h (and, for s8 weights, the GPU's W8A8 against the CPU's): ~1e-3.
  const double tol = c.s8 ? 2e-2 : 4e-3;
  EXPECT_LT(relative_l2(gpu.data(), cpu_separate.data(), gpu.size()), tol);
  EXPECT_LT(relative_l2(gpu.data(), cpu_fused.data(), gpu.size()), tol);
  EXPECT_GT(relative_l2(without.data(), cpu_separate.data(), gpu.size()), 10 * tol)
      << "the term is too small for the comparison to see it";
}

TEST(CudaLowRank, ContextRowsAndRanks) {
  check({.x = {2, 77, 768}, .n = 320, .rank = 32});
  check({.x = {2, 77, 768}, .n = 640, .rank = 16, .bias = false});
  check({.x = {154, 1024}, .n = 1280, .rank = 64, .residual = true});
}

TEST(CudaLowRank, LatentRowsAndResidual) {
  check({.x = {2, 1024, 320}, .n = 320, .rank = 32, .residual = true, .f16 = true});
  check({.x = {2, 256, 640}, .n = 2560, .rank = 48});
  check({.x = {2, 4096, 320}, .n = 320, .rank = 32, .s8 = true});
  check({.x = {2, 64, 1280}, .n = 1280, .rank = 32, .residual = true, .s8 = true});
}

// Any sizes: the merge is a GEMM of the layer's weight shape, whatever K, N and the rank.
TEST(CudaLowRank, OddSizesAndSmallRanks) {
  check({.x = {2, 8, 72}, .n = 32, .rank = 8});
  check({.x = {2, 8, 64}, .n = 40, .rank = 16, .f16 = true});
  check({.x = {3, 5, 64}, .n = 32, .rank = 80, .bias = false, .residual = true, .s8 = true});
}

}  // namespace
}  // namespace hyrt::test

#endif  // HYRT_HAVE_CUDA

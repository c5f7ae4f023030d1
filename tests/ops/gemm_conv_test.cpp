// kLinear and kConv2d on the CPU backend vs naive double references.
#include "backend/cpu/cpu_kernels.h"
#include "op_case.h"

namespace hyrt::test {
namespace {

using ir::OpKind;

// y [M, N] = x [M, K] · w [N, K]ᵀ + bias
std::vector<double> linear_reference(const std::vector<float>& x, const std::vector<float>& w,
                                     const std::vector<float>* bias, int64_t m, int64_t n,
                                     int64_t k) {
  std::vector<double> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = bias ? (*bias)[j] : 0.0;
      for (int64_t p = 0; p < k; ++p)
        acc += static_cast<double>(x[i * k + p]) * w[j * k + p];
      y[i * n + j] = acc;
    }
  return y;
}

struct LinearParams {
  Shape x;
  int64_t n;
  DType w_type;
  bool bias;
};

// Builds the linear node of `p` in `c` (random x, weights and bias); returns the reference.
std::vector<double> build_linear(OpCase& c, const LinearParams& p) {
  const int64_t k = p.x.dim(-1);
  const ir::ValueId x = c.input(p.x, 1);
  const ir::ValueId w = c.weight({p.n, k}, p.w_type, 2, 0.2f);
  std::vector<ir::ValueId> ins{x, w};
  if (p.bias) ins.push_back(c.weight({p.n}, p.w_type, 3));
  c.node(OpKind::kLinear, ins);
  const auto bias = p.bias ? c.values(ins[2]) : std::vector<float>{};
  return linear_reference(c.values(x), c.values(w), p.bias ? &bias : nullptr, p.x.numel() / k, p.n,
                          k);
}

class LinearTest : public ::testing::TestWithParam<LinearParams> {};

TEST_P(LinearTest, MatchesReference) {
  OpCase c;
  const auto want = build_linear(c, GetParam());
  EXPECT_OP_CLOSE("linear", c.run(), want);
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearParams{{2, 13, 77}, 35, DType::kF32, true},
                                           LinearParams{{5, 77}, 64, DType::kF16, false},
                                           LinearParams{{1, 3, 7, 35}, 19, DType::kBF16, true},
                                           LinearParams{{77, 768}, 320, DType::kF16, false},
                                           LinearParams{{3, 1280}, 13, DType::kF32, true},
                                           // A LoRA's rank-32 down and up projections.
                                           LinearParams{{2, 64, 1280}, 32, DType::kF16, false},
                                           LinearParams{{2, 64, 32}, 1280, DType::kF16, false},
                                           LinearParams{{2, 64, 32}, 1280, DType::kF32, false}),
                         [](const auto& info) { return "case" + std::to_string(info.index); });

// A weight with a rank-sized side (gemm.cpp: a LoRA's projections) is read from the bound view
// at every run, not packed at prepare: an f32 one in place (no workspace), a 16-bit one widened
// into the workspace the executor binds. Changing the bound weight's bytes changes the next
// result; the kernel's own scratch serves when nothing is bound.
TEST(Linear, RankSizedWeightsAreReadAtRun) {
  for (DType w_type : {DType::kF32, DType::kF16}) {
    SCOPED_TRACE(dtype_name(w_type));
    OpCase c;
    const ir::ValueId x = c.input({96, 320}, 1);
    const ir::ValueId w = c.weight({32, 320}, w_type, 2, 0.2f);
    c.node(OpKind::kLinear, {x, w});
    const ir::Node& n = c.graph.nodes().back();
    auto kernel = cpu_backend().prepare(c.graph, n, c.weights, c.cache);
    EXPECT_EQ(kernel->workspace_bytes(), w_type == DType::kF32 ? 0u : 32u * 320u * 4u);
    AlignedBuffer ws(32 * 320 * 4 + 64, "test workspace");
    std::memset(ws.data(), 0xff, ws.size());
    kernel->bind_workspace(ws.data());
    std::vector<float> xv = c.values(x);
    Tensor xt(DType::kF32, Shape{96, 320});
    std::memcpy(xt.data(), xv.data(), xt.bytes());
    // The bound weight: a copy the test may change between runs.
    const TensorView stored = c.weights.get(c.graph.value(w).name);
    Tensor wt(w_type, stored.shape);
    std::memcpy(wt.data(), stored.data, wt.bytes());
    Tensor y(DType::kF32, Shape{96, 32});
    auto run = [&] {
      poison(y.data(), y.bytes());
      const std::vector<TensorView> views{xt.view(), wt.view()};
      kernel->run(views, y.view());
      return std::vector<float>(y.as<float>(), y.as<float>() + y.numel());
    };
    auto weights_now = [&] {
      std::vector<float> f(static_cast<size_t>(wt.numel()));
      convert_to_f32(w_type, wt.data(), f.data(), f.size());
      return f;
    };
    EXPECT_OP_CLOSE("linear", run(), linear_reference(xv, weights_now(), nullptr, 96, 32, 320));
    // Halve every weight (a LoRA multiplier change in the bytes bound): the result follows.
    std::vector<float> half = weights_now();
    for (float& v : half)
      v *= 0.5f;
    convert_from_f32(half.data(), w_type, wt.data(), half.size());
    EXPECT_OP_CLOSE("linear", run(), linear_reference(xv, weights_now(), nullptr, 96, 32, 320));
    // Unbound: the kernel's own scratch.
    kernel->bind_workspace(nullptr);
    EXPECT_OP_CLOSE("linear", run(), linear_reference(xv, weights_now(), nullptr, 96, 32, 320));
  }
}

TEST(Linear, SameShapeNodesShareOneProgram) {
  OpCase c;
  const ir::ValueId x = c.input({13, 77}, 1);
  const ir::ValueId h = c.graph.add_node(OpKind::kLinear, {x, c.weight({35, 77}, DType::kF32, 2)});
  const ir::ValueId y = c.graph.add_node(OpKind::kLinear, {x, c.weight({35, 77}, DType::kF16, 3)});
  const ir::ValueId s = c.graph.add_node(OpKind::kAdd, {h, y});
  c.graph.mark_output(s);
  // The first node makes its programs (one; on CPUs whose GEMMs are not brgemm also the
  // per-sample one, chunked_matmul), the second finds every one of them.
  cpu_backend().prepare(c.graph, c.graph.nodes()[0], c.weights, c.cache);
  const size_t made = c.cache.size();
  EXPECT_GE(made, 1u);
  EXPECT_EQ(c.cache.hits(), 0u);
  cpu_backend().prepare(c.graph, c.graph.nodes()[1], c.weights, c.cache);
  EXPECT_EQ(c.cache.size(), made);
  EXPECT_EQ(c.cache.hits(), made);
}

// FloatPrecision::kBF16 (gemm.cpp): layers with 16 rows per sample or more whose weights have
// no rank-sized side multiply bf16 operands — weights packed as bf16, x rounded at each run —
// within bf16's tolerance of the reference; the others (a LoRA's projections, the time
// embedding's one row per sample) stay f32.
TEST(LinearBf16, WithinBf16OfTheReference) {
  const LinearParams cases[] = {
      {{2, 77, 768}, 320, DType::kF16, true},    {{1, 300, 96}, 72, DType::kF32, false},
      {{2, 40, 1280}, 1280, DType::kBF16, true}, {{2, 64, 320}, 1280, DType::kF16, true},
      {{2, 1280}, 1280, DType::kF16, true},      // [samples, K]: f32
      {{8, 8, 1280}, 1280, DType::kF16, true},   // 8 rows per sample: f32
      {{2, 64, 1280}, 32, DType::kF16, false}};  // rank-sized: f32
  for (const LinearParams& p : cases) {
    SCOPED_TRACE(str_cat(p.x.to_string(), " n=", p.n, " ", dtype_name(p.w_type)));
    OpCase c;
    const int64_t k = p.x.dim(-1);
    const auto want = build_linear(c, p);
    const std::vector<float> f32 = c.run();
    EXPECT_OP_CLOSE("linear", f32, want);
    const bool bf16 = p.x.rank() > 2 && p.x.numel() / k / p.x[0] >= 16 && std::min(p.n, k) > 64;
    EXPECT_BF16_CLOSE("linear bf16", bf16, c.run_on(bf16_backend()), want, f32);
  }
}

// Layers kept f32 under bf16 (a 1x1 convolution, a linear with one row per sample) whose weights
// are stored 16-bit hold their f32 pack in those 16 bits and widen it at each run (cpu_kernels.h):
// the backend holds 2 bytes per weight instead of 4, and the result is bit-identical to the f32
// backend's. (Without bf16 dot products the bf16 backend is the f32 one: 4 bytes.)
TEST(F32UnderBf16, SixteenBitWeightsStaySixteenBitAndExact) {
  for (int which = 0; which < 2; ++which) {
    SCOPED_TRACE(which == 0 ? "conv2d 1x1" : "linear, one row per sample");
    OpCase c;
    if (which == 0) {
      const ir::ValueId x = c.input({2, 8, 8, 128}, 1);
      c.node(OpKind::kConv2d, {x, c.weight({128, 128, 1, 1}, DType::kF16, 2, 0.2f)},
             ir::Conv2dAttrs{1, 0});
    } else {
      const ir::ValueId x = c.input({2, 128}, 1);
      c.node(OpKind::kLinear, {x, c.weight({128, 128}, DType::kF16, 2, 0.2f)});
    }
    const std::vector<float> f32 = c.run();
    backend::Backend& b = bf16_backend();
    const size_t before = b.resident_weight_bytes();
    auto kernel = b.prepare(c.graph, c.graph.nodes().back(), c.weights, c.cache);
    const size_t per_weight = backend::cpu_has_bf16_dot_product() ? 2 : 4;
    EXPECT_EQ(b.resident_weight_bytes() - before, 128u * 128u * per_weight);
    kernel.reset();
    EXPECT_EQ(c.run_on(b), f32);
    // The widened pack is the kernel's workspace (the executor plans it into the arena), not
    // scratch of its own kept after the run: the same bits in a bound (poisoned) workspace.
    size_t workspace = 0;
    EXPECT_EQ(c.run_bound(b, &workspace), f32);
    if (per_weight == 2) {
      EXPECT_GE(workspace, 128u * 128u * sizeof(float));
    }
  }
}

// Packing converts a weight to f32 in a staging buffer reused across prepare() calls
// (stage_weight_f32); the backend keeps it until end_prepare() (backend.h), then holds none.
// (Every executable's kernels run after it: Executable::create calls it.)
TEST(WeightStaging, KeptThroughPreparingReleasedAtItsEnd) {
  OpCase c;
  const ir::ValueId x = c.input({4, 128}, 1);
  c.node(OpKind::kLinear, {x, c.weight({96, 128}, DType::kF16, 2, 0.2f)});
  backend::Backend& b = cpu_backend();
  b.end_prepare();
  ASSERT_EQ(backend::cpu::weight_staging_bytes(), 0u);
  auto kernel = b.prepare(c.graph, c.graph.nodes().back(), c.weights, c.cache);
  EXPECT_GE(backend::cpu::weight_staging_bytes(), 96u * 128u * sizeof(float));
  b.end_prepare();
  EXPECT_EQ(backend::cpu::weight_staging_bytes(), 0u);
}

// x [B, H, W, Ci] (NHWC), w [Co, Ci, kh, kw] (OIHW) -> [B, Ho, Wo, Co]
std::vector<double> conv_reference(const std::vector<float>& x, const std::vector<float>& w,
                                   const std::vector<float>* bias, const Shape& xs, const Shape& ws,
                                   int stride, int pad, const Shape& ys) {
  const int64_t B = xs[0], H = xs[1], W = xs[2], Ci = xs[3];
  const int64_t Co = ws[0], KH = ws[2], KW = ws[3], Ho = ys[1], Wo = ys[2];
  std::vector<double> y(static_cast<size_t>(ys.numel()));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow)
        for (int64_t co = 0; co < Co; ++co) {
          double acc = bias ? (*bias)[co] : 0.0;
          for (int64_t kh = 0; kh < KH; ++kh)
            for (int64_t kw = 0; kw < KW; ++kw) {
              const int64_t ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              for (int64_t ci = 0; ci < Ci; ++ci)
                acc += static_cast<double>(x[((b * H + ih) * W + iw) * Ci + ci]) *
                       w[((co * Ci + ci) * KH + kh) * KW + kw];
            }
          y[((b * Ho + oh) * Wo + ow) * Co + co] = acc;
        }
  return y;
}

struct ConvParams {
  Shape x;
  int64_t out_channels, kernel;
  int stride, padding;
  DType w_type;
  bool bias;
};

class Conv2dTest : public ::testing::TestWithParam<ConvParams> {};

TEST_P(Conv2dTest, MatchesReference) {
  const ConvParams& p = GetParam();
  OpCase c;
  const Shape ws{p.out_channels, p.x[3], p.kernel, p.kernel};
  const ir::ValueId x = c.input(p.x, 1);
  const ir::ValueId w = c.weight(ws, p.w_type, 2, 0.2f);
  std::vector<ir::ValueId> ins{x, w};
  if (p.bias) ins.push_back(c.weight({p.out_channels}, p.w_type, 3));
  c.node(OpKind::kConv2d, ins, ir::Conv2dAttrs{p.stride, p.padding});
  const auto bias = p.bias ? c.values(ins[2]) : std::vector<float>{};
  const auto want = conv_reference(c.values(x), c.values(w), p.bias ? &bias : nullptr, p.x, ws,
                                   p.stride, p.padding, c.out_shape());
  const std::vector<float> f32 = c.run();
  EXPECT_OP_CLOSE("conv2d", f32, want);
  // FloatPrecision::kBF16 (conv.cpp): bf16 operands where the kernel is wider than 1x1 and both
  // channel counts are 16 or more; f32 otherwise.
  const bool bf16 = p.kernel > 1 && p.x[3] >= 16 && p.out_channels >= 16;
  EXPECT_BF16_CLOSE("conv2d bf16", bf16, c.run_on(bf16_backend()), want, f32);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Conv2dTest,
    ::testing::Values(ConvParams{{2, 7, 7, 35}, 19, 3, 1, 1, DType::kF32, true},
                      ConvParams{{1, 9, 9, 35}, 21, 3, 2, 1, DType::kF16, true},   // downsample
                      ConvParams{{2, 7, 5, 35}, 48, 1, 1, 0, DType::kF16, false},  // 1x1
                      ConvParams{{1, 8, 8, 4}, 13, 3, 1, 1, DType::kF32, true},    // conv_in-like
                      ConvParams{{1, 11, 7, 13}, 3, 3, 2, 0, DType::kBF16, true},
                      ConvParams{{2, 9, 9, 80}, 96, 3, 1, 1, DType::kF16, true},    // wider
                      ConvParams{{1, 16, 16, 128}, 3, 3, 1, 1, DType::kF32, true},  // conv_out
                      ConvParams{{1, 6, 6, 64}, 96, 1, 1, 0, DType::kF16, true}),   // 1x1
    [](const auto& info) { return "case" + std::to_string(info.index); });

// Under W8A8 on a quantized model's graph (8-bit S weights in it) the 16-bit 1x1 convolutions of
// the residual stream multiply in bf16 too (cpu_backend.cpp, w8a8_on_quantized): within bf16 of
// the reference and not the f32 result; under W8 on the same graph, and under W8A8 on a float
// graph (F32UnderBf16 above), they stay f32, bit for bit.
TEST(F32UnderBf16, ResidualStreamConvRoundsUnderW8A8OnQuantizedGraphs) {
  OpCase c;
  // A linear node on an 8-bit S weight in the graph (not run): what makes it a quantized model's.
  c.weights.add("quantized", Tensor(DType::kS8, Shape{4, 4}));
  c.node(OpKind::kLinear,
         {c.input({1, 4}, 14), c.graph.add_weight("quantized", DType::kS8, Shape{4, 4})});
  const Shape xs{2, 8, 8, 64}, ws{96, 64, 1, 1};
  const ir::ValueId x = c.input(xs, 1);
  const ir::ValueId w = c.weight(ws, DType::kF16, 2, 0.2f);
  c.node(OpKind::kConv2d, {x, w}, ir::Conv2dAttrs{1, 0});
  const auto want = conv_reference(c.values(x), c.values(w), nullptr, xs, ws, 1, 0, c.out_shape());
  const std::vector<float> f32 = c.run();
  EXPECT_OP_CLOSE("conv2d", f32, want);
  EXPECT_BF16_CLOSE("conv2d bf16", true, c.run_on(bf16_backend()), want, f32);
  EXPECT_EQ(c.run_on(bf16_backend(backend::Int8Mode::kW8)), f32);
}

}  // namespace
}  // namespace hyrt::test

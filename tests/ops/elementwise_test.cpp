// Activations, add/mul broadcasting, scale and softmax on the CPU backend vs double
// references; in place where the op's traits allow it.
#include "op_case.h"

namespace hyrt::test {
namespace {

using ir::OpKind;

double gelu(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

struct UnaryParams {
  OpKind op;
  const char* family;
  bool in_place;
};

class UnaryTest : public ::testing::TestWithParam<UnaryParams> {};

TEST_P(UnaryTest, MatchesReference) {
  const UnaryParams& p = GetParam();
  OpCase c;
  const ir::ValueId x = c.input({3, 13, 35}, 1, 6.0f);
  c.node(p.op, {x});
  const auto xs = c.values(x);
  std::vector<double> want(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    const double v = xs[i];
    want[i] = p.op == OpKind::kGelu   ? gelu(v)
              : p.op == OpKind::kSilu ? v * sigmoid(v)
              : p.op == OpKind::kRelu ? std::max(v, 0.0)
              : p.op == OpKind::kTanh ? std::tanh(v)
                                      : v * sigmoid(1.702 * v);
  }
  EXPECT_OP_CLOSE(p.family, c.run(p.in_place), want);
}

INSTANTIATE_TEST_SUITE_P(Ops, UnaryTest,
                         ::testing::Values(UnaryParams{OpKind::kGelu, "gelu", false},
                                           UnaryParams{OpKind::kGelu, "gelu", true},
                                           UnaryParams{OpKind::kSilu, "silu", false},
                                           UnaryParams{OpKind::kSilu, "silu", true},
                                           UnaryParams{OpKind::kQuickGelu, "quick_gelu", false},
                                           UnaryParams{OpKind::kQuickGelu, "quick_gelu", true},
                                           UnaryParams{OpKind::kRelu, "relu", false},
                                           UnaryParams{OpKind::kRelu, "relu", true},
                                           UnaryParams{OpKind::kTanh, "tanh", false},
                                           UnaryParams{OpKind::kTanh, "tanh", true}),
                         [](const auto& info) { return "case" + std::to_string(info.index); });

// tanh elementwise against std::tanh to a few float ulps, across the polynomial/exp switch at
// |x| = 0.3, tiny and saturating values and both signs (the vector path and the scalar tail).
TEST(Tanh, EveryElementIsAccurate) {
  OpCase c;
  Tensor in(DType::kF32, {1, 1, 4099});
  float* xs = in.as<float>();
  for (int64_t i = 0; i < in.numel(); ++i) {
    const double t = static_cast<double>(i) / 4098.0;  // 0..1
    const double mag = i % 3 == 0 ? 1e-6 * (1 + i) : i % 3 == 1 ? 0.6 * t : 12.0 * t;
    xs[i] = static_cast<float>(i % 2 ? -mag : mag);
  }
  const ir::ValueId x = c.input_tensor(std::move(in));
  c.node(OpKind::kTanh, {x});
  const auto want_x = c.values(x);
  const auto got = c.run();
  for (size_t i = 0; i < want_x.size(); ++i) {
    const double want = std::tanh(static_cast<double>(want_x[i]));
    ASSERT_NEAR(got[i], want, 4e-7 * std::abs(want) + 1e-30) << "x = " << want_x[i];
  }
}

TEST(Geglu, MatchesReference) {
  OpCase c;
  const ir::ValueId x = c.input({2, 13, 70}, 1, 4.0f);  // N = 35
  c.node(OpKind::kGeglu, {x});
  const auto xs = c.values(x);
  std::vector<double> want;
  for (size_t r = 0; r < xs.size() / 70; ++r)
    for (size_t i = 0; i < 35; ++i)
      want.push_back(xs[r * 70 + i] * gelu(xs[r * 70 + 35 + i]));
  EXPECT_OP_CLOSE("geglu", c.run(), want);
}

TEST(Scale, MatchesReferenceInPlace) {
  for (bool in_place : {false, true}) {
    OpCase c;
    const ir::ValueId x = c.input({5, 77}, 1);
    c.node(OpKind::kScale, {x}, ir::ScaleAttrs{0.18215f, -0.5f});
    std::vector<double> want;
    for (float v : c.values(x))
      want.push_back(v * static_cast<double>(0.18215f) - 0.5);
    EXPECT_OP_CLOSE("scale", c.run(in_place), want);
  }
}

TEST(Softmax, MatchesReferenceInPlace) {
  for (bool in_place : {false, true}) {
    OpCase c;
    const ir::ValueId x = c.input({3, 13, 77}, 1, 20.0f);
    c.node(OpKind::kSoftmax, {x});
    const auto xs = c.values(x);
    std::vector<double> want(xs.size());
    for (size_t r = 0; r < xs.size() / 77; ++r) {
      double m = -1e300, s = 0;
      for (size_t i = 0; i < 77; ++i)
        m = std::max(m, static_cast<double>(xs[r * 77 + i]));
      for (size_t i = 0; i < 77; ++i)
        s += want[r * 77 + i] = std::exp(xs[r * 77 + i] - m);
      for (size_t i = 0; i < 77; ++i)
        want[r * 77 + i] /= s;
    }
    EXPECT_OP_CLOSE("softmax", c.run(in_place), want);
  }
}

// numpy broadcasting of b onto a, in double.
std::vector<double> broadcast_reference(const std::vector<float>& a, const Shape& as,
                                        const std::vector<float>& b, const Shape& bs, bool mul) {
  std::vector<double> y(a.size());
  const int r = as.rank();
  for (int64_t i = 0; i < as.numel(); ++i) {
    int64_t rem = i, bi = 0, bstride = 1;
    for (int d = r - 1; d >= 0; --d) {
      const int64_t idx = rem % as[d];
      rem /= as[d];
      const int bd = d - (r - bs.rank());
      if (bd >= 0) {
        if (bs[bd] != 1) bi += idx * bstride;
        bstride *= bs[bd];
      }
    }
    y[i] = mul ? static_cast<double>(a[i]) * b[bi] : static_cast<double>(a[i]) + b[bi];
  }
  return y;
}

struct BinaryParams {
  Shape a, b;
  bool b_is_weight;  // a graph weight (f32: add/mul inputs share a dtype)
  bool in_place;
};

class BinaryTest : public ::testing::TestWithParam<BinaryParams> {};

TEST_P(BinaryTest, AddAndMulMatchReference) {
  const BinaryParams& p = GetParam();
  for (OpKind op : {OpKind::kAdd, OpKind::kMul}) {
    OpCase c;
    const ir::ValueId a = c.input(p.a, 1);
    const ir::ValueId b = p.b_is_weight ? c.weight(p.b, DType::kF32, 2) : c.input(p.b, 2);
    c.node(op, {a, b});
    const auto want = broadcast_reference(c.values(a), p.a, c.values(b), p.b, op == OpKind::kMul);
    EXPECT_OP_CLOSE(op == OpKind::kAdd ? "add" : "mul", c.run(p.in_place), want);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, BinaryTest,
    ::testing::Values(BinaryParams{{2, 13, 35}, {2, 13, 35}, false, false},  // same shape
                      BinaryParams{{2, 13, 35}, {2, 13, 35}, false, true},   // residual, in place
                      BinaryParams{{2, 13, 35}, {35}, true, false},          // bias [C]
                      BinaryParams{{2, 7, 7, 35}, {2, 1, 1, 35}, false, true},  // time emb
                      BinaryParams{{2, 7, 7, 35}, {7, 1, 35}, false, false},    // middle broadcast
                      BinaryParams{{2, 7, 5, 3}, {2, 7, 1, 1}, false, false},   // inner scalar
                      BinaryParams{{2, 13, 35}, {1}, true, true},               // scalar
                      BinaryParams{{1, 5, 1, 35}, {5, 1, 35}, false, false}),
    [](const auto& info) { return "case" + std::to_string(info.index); });  // size-1 dims in a

}  // namespace
}  // namespace hyrt::test

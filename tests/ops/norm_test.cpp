// kGroupNorm and kLayerNorm on the CPU backend vs naive double references.
#include "op_case.h"

namespace hyrt::test {
namespace {

using ir::OpKind;

// x [B, P, C]: statistics per (b, group) over P · C/G values.
std::vector<double> group_norm_reference(const std::vector<float>& x, const std::vector<float>& g,
                                         const std::vector<float>& beta, int64_t B, int64_t P,
                                         int64_t C, int64_t G, double eps, bool silu) {
  std::vector<double> y(x.size());
  const int64_t cg = C / G;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t grp = 0; grp < G; ++grp) {
      double s = 0;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = grp * cg; c < (grp + 1) * cg; ++c)
          s += x[(b * P + p) * C + c];
      const double mean = s / static_cast<double>(P * cg);
      double s2 = 0;
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = grp * cg; c < (grp + 1) * cg; ++c) {
          const double d = x[(b * P + p) * C + c] - mean;
          s2 += d * d;
        }
      const double rstd = 1.0 / std::sqrt(s2 / static_cast<double>(P * cg) + eps);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = grp * cg; c < (grp + 1) * cg; ++c) {
          const size_t i = static_cast<size_t>((b * P + p) * C + c);
          double v = (x[i] - mean) * rstd * g[c] + beta[c];
          if (silu) v = v / (1.0 + std::exp(-v));
          y[i] = v;
        }
    }
  return y;
}

struct GroupNormParams {
  Shape x;
  int groups;
  bool silu;
  DType w_type;
  bool in_place;
  float offset;  // added to x: a non-zero mean stresses the variance computation
};

class GroupNormTest : public ::testing::TestWithParam<GroupNormParams> {};

TEST_P(GroupNormTest, MatchesReference) {
  const GroupNormParams& p = GetParam();
  OpCase c;
  Tensor xt = random_tensor(p.x, 1, 2.0f);
  for (int64_t i = 0; i < xt.numel(); ++i)
    xt.as<float>()[i] += p.offset;
  const ir::ValueId x = c.input_tensor(std::move(xt));
  const int64_t C = p.x.dim(-1);
  const ir::ValueId gamma = c.weight({C}, p.w_type, 2);
  const ir::ValueId beta = c.weight({C}, p.w_type, 3);
  c.node(OpKind::kGroupNorm, {x, gamma, beta}, ir::NormAttrs{p.groups, 1e-5f, p.silu});
  const auto want = group_norm_reference(c.values(x), c.values(gamma), c.values(beta), p.x[0],
                                         p.x.numel() / (p.x[0] * C), C, p.groups, 1e-5, p.silu);
  EXPECT_OP_CLOSE("group_norm", c.run(p.in_place), want);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GroupNormTest,
    ::testing::Values(GroupNormParams{{2, 7, 7, 35}, 5, false, DType::kF32, false, 0},
                      GroupNormParams{{2, 7, 7, 35}, 7, true, DType::kF16, false, 0},
                      GroupNormParams{{1, 13, 9, 64}, 32, true, DType::kF32, true, 3},
                      GroupNormParams{{2, 13, 35}, 35, false, DType::kBF16, true, -5},
                      GroupNormParams{{1, 64, 64, 320}, 32, true, DType::kF16, false, 1},
                      // mean 50 std: the shifted f32 runs (norm.cpp) must keep the variance
                      GroupNormParams{{2, 40, 40, 48}, 16, true, DType::kF32, false, 100}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

// x [R, C], normalised over C.
std::vector<double> layer_norm_reference(const std::vector<float>& x, const std::vector<float>& g,
                                         const std::vector<float>& beta, int64_t C, double eps) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / C; ++r) {
    const float* row = &x[r * C];
    double s = 0;
    for (int64_t i = 0; i < C; ++i)
      s += row[i];
    const double mean = s / C;
    double s2 = 0;
    for (int64_t i = 0; i < C; ++i)
      s2 += (row[i] - mean) * (row[i] - mean);
    const double rstd = 1.0 / std::sqrt(s2 / C + eps);
    for (int64_t i = 0; i < C; ++i)
      y[r * C + i] = (row[i] - mean) * rstd * g[i] + beta[i];
  }
  return y;
}

TEST(LayerNorm, MatchesReferenceOutOfPlaceAndInPlace) {
  for (bool in_place : {false, true})
    for (DType w_type : {DType::kF32, DType::kF16}) {
      OpCase c;
      const ir::ValueId x = c.input({2, 13, 35}, 1, 3.0f);
      const ir::ValueId gamma = c.weight({35}, w_type, 2);
      const ir::ValueId beta = c.weight({35}, w_type, 3);
      c.node(OpKind::kLayerNorm, {x, gamma, beta}, ir::NormAttrs{1, 1e-5f, false});
      const auto want =
          layer_norm_reference(c.values(x), c.values(gamma), c.values(beta), 35, 1e-5);
      EXPECT_OP_CLOSE("layer_norm", c.run(in_place), want);
    }
  OpCase c;  // CLIP width
  const ir::ValueId x = c.input({77, 768}, 4);
  const ir::ValueId gamma = c.weight({768}, DType::kF16, 5);
  const ir::ValueId beta = c.weight({768}, DType::kF16, 6);
  c.node(OpKind::kLayerNorm, {x, gamma, beta}, ir::NormAttrs{1, 1e-5f, false});
  EXPECT_OP_CLOSE("layer_norm", c.run(),
                  layer_norm_reference(c.values(x), c.values(gamma), c.values(beta), 768, 1e-5));
}

// Rows whose mean is 50 standard deviations (norm.cpp sums f32 lanes shifted by the row's first
// value), at SD's width 320 and a width that leaves a tail after the 16 lanes.
TEST(LayerNorm, LargeMeanRows) {
  for (int64_t width : {320, 77}) {
    OpCase c;
    Tensor xt = random_tensor({64, width}, 7);
    for (int64_t i = 0; i < xt.numel(); ++i)
      xt.as<float>()[i] += 50.0f;
    const ir::ValueId x = c.input_tensor(std::move(xt));
    const ir::ValueId gamma = c.weight({width}, DType::kF32, 8);
    const ir::ValueId beta = c.weight({width}, DType::kF32, 9);
    c.node(OpKind::kLayerNorm, {x, gamma, beta}, ir::NormAttrs{1, 1e-5f, false});
    EXPECT_OP_CLOSE(
        "layer_norm", c.run(),
        layer_norm_reference(c.values(x), c.values(gamma), c.values(beta), width, 1e-5));
  }
}

}  // namespace
}  // namespace hyrt::test

// Concat, slice, upsample, permute, reshape, embeddings on the CPU backend, plus the backend's
// error paths.
#include <cmath>
#include "op_case.h"

namespace hyrt::test {
namespace {

using ir::OpKind;

std::vector<double> as_double(const std::vector<float>& v) {
  return {v.begin(), v.end()};
}

TEST(Concat, AlongEveryAxis) {
  const Shape base{2, 3, 5, 7};
  for (int axis = -4; axis < 4; ++axis) {
    OpCase c;
    const int ax = axis < 0 ? axis + 4 : axis;
    std::vector<ir::ValueId> ins;
    std::vector<Shape> shapes;
    for (int i = 0; i < 3; ++i) {
      Shape s = base;
      s[ax] = i + 1;
      shapes.push_back(s);
      ins.push_back(i == 1 ? c.weight(s, DType::kF32, 10 + i) : c.input(s, 10 + i));
    }
    c.node(OpKind::kConcat, ins, ir::ConcatAttrs{axis});
    const Shape& out = c.out_shape();
    std::vector<double> want(static_cast<size_t>(out.numel()));
    const int64_t outer = base.numel(0, ax), inner = base.numel(ax + 1, 4);
    int64_t offset = 0;
    for (int i = 0; i < 3; ++i) {
      const auto v = c.values(ins[i]);
      const int64_t chunk = shapes[i][ax] * inner;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < chunk; ++j)
          want[o * out.numel(ax, 4) + offset + j] = v[o * chunk + j];
      offset += chunk;
    }
    EXPECT_OP_CLOSE("concat", c.run(), want);
  }
}

TEST(Slice, AlongEveryAxis) {
  const Shape base{3, 4, 5, 6};
  for (int axis = -4; axis < 4; ++axis) {
    const int ax = axis < 0 ? axis + 4 : axis;
    for (auto [start, length] : {std::pair<int64_t, int64_t>{0, 1}, {1, 2}, {2, base[ax] - 2}}) {
      OpCase c;
      const ir::ValueId x = c.input(base, 7);
      c.node(OpKind::kSlice, {x}, ir::SliceAttrs{axis, start, length});
      const auto xs = c.values(x);
      const int64_t outer = base.numel(0, ax), inner = base.numel(ax + 1, 4);
      std::vector<double> want;
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = start * inner; j < (start + length) * inner; ++j)
          want.push_back(xs[o * base[ax] * inner + j]);
      EXPECT_OP_CLOSE("slice", c.run(), want);
    }
  }
}

TEST(Slice, RejectsRangesOutsideTheAxis) {
  for (auto [start, length] : {std::pair<int64_t, int64_t>{-1, 1}, {0, 0}, {2, 2}, {3, 1}}) {
    ir::Graph g;
    const ir::ValueId x = g.add_input("x", DType::kF32, {3, 2});
    EXPECT_THROW(g.add_node(OpKind::kSlice, {x}, ir::SliceAttrs{0, start, length}), Error)
        << start << "+" << length;
  }
  ir::Graph g;
  const ir::ValueId x = g.add_input("x", DType::kF32, {3, 2});
  EXPECT_THROW(g.add_node(OpKind::kSlice, {x}, ir::SliceAttrs{2, 0, 1}), Error);
}

// Output sizes that are not 2x (what the UNet asks for when the latent is not a multiple
// of 8): PyTorch's nearest rule, src = floor(dst · in/out) computed in float.
TEST(UpsampleNearest, ToAnySize) {
  for (auto [oh, ow] : {std::pair<int64_t, int64_t>{13, 9}, {17, 11}, {7, 5}, {21, 6}}) {
    OpCase c;
    const ir::ValueId x = c.input({2, 7, 5, 3}, 2);
    c.node(OpKind::kUpsampleNearest, {x}, ir::UpsampleAttrs{oh, ow});
    const auto xs = c.values(x);
    std::vector<double> want;
    auto src = [](int64_t dst, int64_t in, int64_t out) {
      const float scale = static_cast<float>(in) / static_cast<float>(out);
      return std::min<int64_t>(static_cast<int64_t>(std::floor(dst * scale)), in - 1);
    };
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j)
          for (int64_t ch = 0; ch < 3; ++ch)
            want.push_back(xs[((b * 7 + src(i, 7, oh)) * 5 + src(j, 5, ow)) * 3 + ch]);
    EXPECT_OP_CLOSE("upsample_nearest", c.run(), want);
  }
}

TEST(Upsample2x, NearestNeighbour) {
  OpCase c;
  const ir::ValueId x = c.input({2, 7, 5, 35}, 1);
  c.node(OpKind::kUpsampleNearest, {x});
  const auto xs = c.values(x);
  std::vector<double> want;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t i = 0; i < 14; ++i)
      for (int64_t j = 0; j < 10; ++j)
        for (int64_t ch = 0; ch < 35; ++ch)
          want.push_back(xs[((b * 7 + i / 2) * 5 + j / 2) * 35 + ch]);
  EXPECT_OP_CLOSE("upsample2x", c.run(), want);
}

TEST(Permute, GeneralPermutations) {
  const Shape xs{2, 3, 5, 7, 4};
  for (const Shape& perm :
       {Shape{0, 2, 1, 3, 4}, Shape{4, 1, 0, 3, 2}, Shape{0, 1, 2, 4, 3}, Shape{0, 1, 2, 3, 4}}) {
    OpCase c;
    const ir::ValueId x = c.input(xs, 1);
    c.node(OpKind::kPermute, {x}, ir::PermuteAttrs{perm});
    const auto v = c.values(x);
    const Shape& out = c.out_shape();
    std::vector<double> want(v.size());
    int64_t in_stride[5];
    in_stride[4] = 1;
    for (int d = 3; d >= 0; --d)
      in_stride[d] = in_stride[d + 1] * xs[d + 1];
    for (int64_t i = 0; i < out.numel(); ++i) {
      int64_t rem = i, src = 0;
      for (int d = 4; d >= 0; --d) {
        src += rem % out[d] * in_stride[perm[d]];
        rem /= out[d];
      }
      want[i] = v[src];
    }
    EXPECT_OP_CLOSE("permute", c.run(), want);
  }
}

TEST(Reshape, CopiesOrDoesNothingInPlace) {
  for (bool in_place : {false, true}) {
    OpCase c;
    const ir::ValueId x = c.input({2, 7, 7, 35}, 1);
    c.node(OpKind::kReshape, {x}, ir::ReshapeAttrs{Shape{2, -1, 35}});
    EXPECT_OP_CLOSE("reshape", c.run(in_place), as_double(c.values(x)));
  }
}

Tensor ids_tensor(const std::vector<int32_t>& ids, Shape shape) {
  Tensor t(DType::kS32, shape);
  std::memcpy(t.data(), ids.data(), ids.size() * sizeof(int32_t));
  return t;
}

TEST(Embedding, LooksUpRowsAndRejectsBadIds) {
  std::vector<int32_t> ids(26);
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] = static_cast<int32_t>((i * 37) % 100);
  ids[3] = 99;
  ids[4] = 0;
  OpCase c;
  const ir::ValueId x = c.input_tensor(ids_tensor(ids, {2, 13}));
  const ir::ValueId table = c.weight({100, 35}, DType::kF16, 2);
  c.node(OpKind::kEmbedding, {x, table});
  const auto t = c.values(table);
  std::vector<double> want;
  for (int32_t id : ids)
    for (int64_t ch = 0; ch < 35; ++ch)
      want.push_back(t[id * 35 + ch]);
  EXPECT_OP_CLOSE("embedding", c.run(), want);

  for (int32_t bad : {100, -1}) {
    OpCase e;
    ids[7] = bad;
    const ir::ValueId bx = e.input_tensor(ids_tensor(ids, {2, 13}));
    e.node(OpKind::kEmbedding, {bx, e.weight({100, 35}, DType::kF32, 2)});
    try {
      e.run();
      FAIL() << "id " << bad << " was accepted";
    } catch (const Error& err) {
      EXPECT_EQ(err.code(), ErrorCode::kInvalidArgument) << err.what();
    }
  }
}

// diffusers get_timestep_embedding, computed as torch does: frequencies and arguments in
// f32, sin/cos of the f32 argument.
std::vector<double> timestep_reference(const std::vector<float>& t, const ir::TimestepAttrs& a) {
  const int half = a.dim / 2;
  std::vector<double> y;
  for (float tb : t) {
    std::vector<double> s, co;
    for (int i = 0; i < half; ++i) {
      const float exponent = -static_cast<float>(std::log(static_cast<double>(a.max_period))) *
                             static_cast<float>(i) /
                             (static_cast<float>(half) - a.downscale_freq_shift);
      const float arg = tb * static_cast<float>(std::exp(static_cast<double>(exponent)));
      s.push_back(std::sin(static_cast<double>(arg)));
      co.push_back(std::cos(static_cast<double>(arg)));
    }
    const auto& first = a.flip_sin_to_cos ? co : s;
    const auto& second = a.flip_sin_to_cos ? s : co;
    y.insert(y.end(), first.begin(), first.end());
    y.insert(y.end(), second.begin(), second.end());
  }
  return y;
}

TEST(TimestepEmbedding, MatchesDiffusers) {
  for (const ir::TimestepAttrs& a :
       {ir::TimestepAttrs{320, true, 0.0f, 10000.0f},  // SD 1.5 UNet
        ir::TimestepAttrs{32, false, 1.0f, 10000.0f}, ir::TimestepAttrs{14, true, 1.0f, 1000.0f}}) {
    OpCase c;
    Tensor t(DType::kF32, {4});
    const float ts[] = {0.0f, 1.5f, 999.0f, 501.0f};
    std::memcpy(t.data(), ts, sizeof(ts));
    const ir::ValueId x = c.input_tensor(std::move(t));
    c.node(OpKind::kTimestepEmbedding, {x}, a);
    EXPECT_OP_CLOSE("timestep_embedding", c.run(), timestep_reference(c.values(x), a));
  }
}

TEST(CpuBackend, SupportsEveryOpWithF32Activations) {
  OpCase c;
  const ir::ValueId x = c.input({1, 4, 4, 8}, 1);
  const ir::ValueId w = c.weight({8, 8}, DType::kBF16, 2);
  c.node(OpKind::kLinear, {x, w});
  EXPECT_TRUE(cpu_backend().supports(c.graph, c.graph.nodes()[0]));
  EXPECT_GT(cpu_backend().estimate_us(c.graph, c.graph.nodes()[0]), 2.0);
  EXPECT_EQ(cpu_backend().name(), "cpu");
  auto mem = cpu_backend().allocate(1000, "test");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(mem->data()) % 64, 0u);
  EXPECT_GE(mem->size(), 1000u);
}

}  // namespace
}  // namespace hyrt::test

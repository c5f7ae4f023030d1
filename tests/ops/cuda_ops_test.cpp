// The CUDA backend's non-GEMM op kernels (src/backend/cuda/cuda_ops.h) on a GPU, every op vs the
// CPU backend (f32) or a host reference on random data, SD 1.5 sizes and odd ones, in place
// where the op's traits allow, outputs poisoned with NaN before each run.
//
// Inputs are made in the precision the device stores them (f16 for rank ≥ 2 activations and
// weights, f32 for rank ≤ 1 — cuda_backend.h, device_storage_dtype), and the reference gets the
// same values, so only the op's own rounding counts: ≤ 2e-3 relative L2 (an f16 output alone
// is ~3e-4). Without a usable GPU these tests skip with the reason.
#include <gtest/gtest.h>

#ifdef HYRT_HAVE_CUDA

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_device.h"
#include "backend/cuda/cuda_ops.h"
#include "core/half.h"
#include "cuda_test_gpu.h"
#include "op_case.h"
#include "weights/memory_weights.h"

namespace hyrt::test {
namespace {

using backend::cuda::CudaContext;
using backend::cuda::device_storage_dtype;
using backend::cuda::DeviceBuffer;
using ir::OpKind;

constexpr double kF16Tolerance = 2e-3;

std::vector<float> round_to(DType storage, std::vector<float> v) {
  if (storage == DType::kF16)
    for (float& x : v)
      x = f16_to_f32(f32_to_f16(x));
  return v;
}

// Host values -> device bytes in `storage` (f16, f32 or s32).
DeviceBuffer to_device(const void* host, size_t bytes) {
  DeviceBuffer buf(std::max<size_t>(bytes, 16), "test input");
  cudaStream_t s = gpu().ctx->stream();
  HYRT_CUDA_CHECK(cudaMemcpyAsync(buf.data(), host, bytes, cudaMemcpyHostToDevice, s));
  HYRT_CUDA_CHECK(cudaStreamSynchronize(s));
  return buf;
}

// A one-node graph (f32 dtypes, as a model graph is built) with its inputs and weights.
class DeviceOpCase {
 public:
  ir::Graph graph{DType::kF32};
  weights::MemoryWeights weights;

  // A random activation, rounded to the precision the device stores it in.
  ir::ValueId input(Shape shape, uint64_t seed, float scale = 1.0f, float offset = 0.0f) {
    std::vector<float> v = random_floats(static_cast<size_t>(shape.numel()), seed, scale);
    for (float& x : v)
      x += offset;
    return input_values(shape, std::move(v));
  }
  ir::ValueId input_values(Shape shape, std::vector<float> values) {
    const ir::ValueId id = graph.add_input(str_cat("in", next_++), DType::kF32, shape);
    values_[id] = round_to(device_storage_dtype(graph.value(id)), std::move(values));
    return id;
  }
  ir::ValueId ids(Shape shape, std::vector<int32_t> ids) {
    const ir::ValueId id = graph.add_input(str_cat("ids", next_++), DType::kS32, shape);
    ids_[id] = std::move(ids);
    return id;
  }
  // A random weight stored as `stored`, its values first rounded to `device` (what the kernel
  // will hold: f16 for rank ≥ 2, f32 for vectors) so that the CPU reads the same numbers.
  ir::ValueId weight(Shape shape, DType stored, uint64_t seed, float scale = 1.0f) {
    const std::string name = str_cat("w", next_++);
    const ir::ValueId id = graph.add_weight(name, stored, shape);
    std::vector<float> v = round_to(device_storage_dtype(graph.value(id)),
                                    random_floats(static_cast<size_t>(shape.numel()), seed, scale));
    Tensor t(stored, shape);
    convert_from_f32(v.data(), stored, t.data(), v.size());
    weights.add(name, std::move(t));
    return id;
  }
  ir::ValueId node(OpKind op, std::vector<ir::ValueId> inputs, ir::Attrs attrs = {}) {
    out_ = graph.add_node(op, std::move(inputs), std::move(attrs), "node");
    graph.mark_output(out_);
    return out_;
  }
  const ir::Node& the_node() const { return graph.nodes().back(); }
  const std::vector<float>& values(ir::ValueId id) const { return values_.at(id); }
  std::vector<float> weight_values(ir::ValueId id) const {
    const TensorView w = weights.get(graph.value(id).name);
    std::vector<float> out(static_cast<size_t>(w.numel()));
    convert_to_f32(w.dtype, w.data, out.data(), out.size());
    return out;
  }

  // The CPU backend on the same values (f32).
  std::vector<float> cpu_reference() {
    graph.verify();
    backend::ProgramCache cache;
    auto kernel = cpu_backend().prepare(graph, the_node(), weights, cache);
    std::vector<Tensor> owned;
    std::vector<TensorView> views;
    for (ir::ValueId id : the_node().inputs) {
      const ir::Value& v = graph.value(id);
      if (v.kind == ir::ValueKind::kWeight) {
        views.push_back(weights.get(v.name));
        continue;
      }
      Tensor t(v.dtype, v.shape);
      if (v.dtype == DType::kS32)
        std::memcpy(t.data(), ids_.at(id).data(), t.bytes());
      else
        std::memcpy(t.data(), values_.at(id).data(), t.bytes());
      views.push_back(t.view());
      owned.push_back(std::move(t));
    }
    const ir::Value& out = graph.value(out_);
    Tensor y(DType::kF32, out.shape);
    poison(y.data(), y.bytes());
    kernel->run(views, y.view());
    return std::vector<float>(y.as<float>(), y.as<float>() + y.numel());
  }

  // The device kernel: inputs uploaded in their storage dtype, the output poisoned (or, in
  // place, input 0's buffer), run, downloaded as f32. Weight views passed are host memory:
  // the kernel must use its own uploads.
  std::vector<float> run_device(bool in_place = false, int repeats = 1) {
    graph.verify();
    EXPECT_TRUE(backend::cuda::supports_device_op(graph, the_node()))
        << backend::cuda::device_op_unsupported_reason(graph, the_node());
    CudaContext& ctx = *gpu().ctx;
    auto kernel = backend::cuda::make_device_op_kernel(ctx, graph, the_node(), weights);
    std::vector<DeviceBuffer> bufs;
    std::vector<TensorView> views;
    for (ir::ValueId id : the_node().inputs) {
      const ir::Value& v = graph.value(id);
      if (v.kind == ir::ValueKind::kWeight) {
        views.push_back(weights.get(v.name));
        bufs.emplace_back();
        continue;
      }
      const DType storage = device_storage_dtype(v);
      const size_t bytes = static_cast<size_t>(v.shape.numel()) * dtype_size(storage);
      std::vector<uint8_t> host(bytes);
      if (storage == DType::kS32)
        std::memcpy(host.data(), ids_.at(id).data(), bytes);
      else
        convert_from_f32(values_.at(id).data(), storage, host.data(), values_.at(id).size());
      bufs.push_back(to_device(host.data(), bytes));
      views.push_back({bufs.back().data(), storage, v.shape});
    }
    const ir::Value& out = graph.value(out_);
    const DType out_storage = device_storage_dtype(out);
    const size_t out_bytes = static_cast<size_t>(out.shape.numel()) * dtype_size(out_storage);
    DeviceBuffer out_buf;
    TensorView y{nullptr, out_storage, out.shape};
    if (in_place) {
      EXPECT_EQ(views[0].dtype, out_storage);
      y.data = views[0].data;
    } else {
      out_buf = DeviceBuffer(std::max<size_t>(out_bytes, 16), "test output");
      y.data = out_buf.data();
    }
    for (int r = 0; r < repeats; ++r) {
      if (!in_place) HYRT_CUDA_CHECK(cudaMemsetAsync(y.data, 0xff, out_bytes, ctx.stream()));
      kernel->run(views, y);
    }
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
    HYRT_CUDA_CHECK(cudaGetLastError());
    std::vector<uint8_t> raw(out_bytes);
    HYRT_CUDA_CHECK(cudaMemcpy(raw.data(), y.data, out_bytes, cudaMemcpyDeviceToHost));
    std::vector<float> result(static_cast<size_t>(out.shape.numel()));
    convert_to_f32(out_storage, raw.data(), result.data(), result.size());
    return result;
  }

 private:
  std::map<ir::ValueId, std::vector<float>> values_;
  std::map<ir::ValueId, std::vector<int32_t>> ids_;
  ir::ValueId out_ = ir::kNone;
  int next_ = 0;
};

double rel(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  return relative_l2(got.data(), want.data(), std::min(got.size(), want.size()));
}

// Records the error under "cuda <family>" (printed when the binary ends) and checks it.
#define EXPECT_DEVICE_CLOSE(family, got, want)                                      \
  do {                                                                              \
    const double err_ = rel(got, want);                                             \
    double& worst_ = ::hyrt::test::worst_errors()[std::string("cuda ") + (family)]; \
    worst_ = std::max(worst_, err_);                                                \
    EXPECT_LE(err_, kF16Tolerance) << "cuda " << (family) << " rel L2 " << err_;    \
  } while (0)

// Device (out of place, and in place when asked) vs the CPU backend.
void check_vs_cpu(DeviceOpCase& c, const std::string& family, bool also_in_place = false) {
  const std::vector<float> want = c.cpu_reference();
  EXPECT_DEVICE_CLOSE(family, c.run_device(false), want);
  if (also_in_place) {
    ASSERT_TRUE(ir::op_traits(c.the_node().op).in_place_input0) << family;
    EXPECT_DEVICE_CLOSE(family + " in place", c.run_device(true), want);
  }
}

// --- norms ---------------------------------------------------------------------------------------

struct GroupNormParams {
  Shape x;
  int groups;
  bool silu;
  float offset;  // a mean far from 0 stresses the variance computation
  bool in_place;
};

class CudaOpsGroupNorm : public ::testing::TestWithParam<GroupNormParams> {};

TEST_P(CudaOpsGroupNorm, MatchesCpu) {
  REQUIRE_GPU();
  const GroupNormParams& p = GetParam();
  SCOPED_TRACE(p.x.to_string());
  DeviceOpCase c;
  const ir::ValueId x = c.input(p.x, 1, 2.0f, p.offset);
  const int64_t C = p.x.dim(-1);
  const ir::ValueId g = c.weight({C}, DType::kF16, 2, 1.5f);
  const ir::ValueId b = c.weight({C}, DType::kF32, 3);
  c.node(OpKind::kGroupNorm, {x, g, b}, ir::NormAttrs{p.groups, 1e-5f, p.silu});
  check_vs_cpu(c, p.silu ? "group_norm+silu" : "group_norm", p.in_place);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaOpsGroupNorm,
    ::testing::Values(
        // SD 1.5 UNet and VAE sizes (10, 20, 40, 4 channels per group)
        GroupNormParams{{2, 64, 64, 320}, 32, true, 0, false},
        GroupNormParams{{2, 32, 32, 640}, 32, false, 0.5f, true},
        GroupNormParams{{2, 8, 8, 1280}, 32, true, 0, false},
        GroupNormParams{{2, 128, 128, 128}, 32, true, 0, true},
        GroupNormParams{{1, 512, 512, 128}, 32, true, 1, false},  // 512² VAE decode
        GroupNormParams{{1, 64, 64, 512}, 32, false, 0, false},
        // odd sizes: vector widths 1, 2, 4; one position; a group per channel
        GroupNormParams{{2, 7, 7, 35}, 5, false, 0, false},
        GroupNormParams{{3, 13, 9, 6}, 3, true, -2, true},
        GroupNormParams{{1, 13, 9, 36}, 4, true, 3, false},
        GroupNormParams{{2, 13, 35}, 35, false, -5, true},
        GroupNormParams{{4, 64}, 8, false, 0, false},
        GroupNormParams{{2, 3, 1000}, 10, true, 0, false},
        // |mean| 100x the spread (f16 storage still resolves it)
        GroupNormParams{{2, 16, 16, 64}, 32, false, 200, false},
        // large enough for the last-block finalize (the others fold in the apply pass)
        GroupNormParams{{1, 1000, 1000, 6}, 3, true, 1, true},
        GroupNormParams{{1, 128, 128, 256}, 32, false, 0, false},
        // the widest rows the kernel takes
        GroupNormParams{{1, 9, 4096}, 32, false, 0, false},
        GroupNormParams{{1, 5, 1023}, 1, true, 0, false}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(CudaOpsGroupNormRepeat, WorkspaceIsReusable) {
  REQUIRE_GPU();  // the per-sample tickets of the finalizing path are reset by each run
  for (const Shape& shape : {Shape{2, 32, 32, 320}, Shape{2, 128, 128, 256}}) {
    SCOPED_TRACE(shape.to_string());
    DeviceOpCase c;
    const ir::ValueId x = c.input(shape, 4, 1.0f);
    const ir::ValueId g = c.weight({shape.dim(-1)}, DType::kF32, 5);
    const ir::ValueId b = c.weight({shape.dim(-1)}, DType::kF32, 6);
    c.node(OpKind::kGroupNorm, {x, g, b}, ir::NormAttrs{32, 1e-6f, true});
    EXPECT_DEVICE_CLOSE("group_norm+silu", c.run_device(false, 5), c.cpu_reference());
  }
}

TEST(CudaOpsLayerNorm, MatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    Shape x;
    bool in_place;
  };
  for (const Case& k :
       {Case{{2, 4096, 320}, false}, Case{{2, 77, 768}, true}, Case{{2, 256, 1280}, false},
        Case{{2, 64, 640}, true}, Case{{3, 5, 35}, true}, Case{{7, 3000}, false},
        Case{{3, 4104}, false}, Case{{2, 700}, false}, Case{{35}, true}, Case{{4, 1}, false}}) {
    SCOPED_TRACE(k.x.to_string());
    DeviceOpCase c;
    const ir::ValueId x = c.input(k.x, 7, 3.0f, 1.0f);
    const int64_t C = k.x.dim(-1);
    const ir::ValueId g = c.weight({C}, DType::kF16, 8);
    const ir::ValueId b = c.weight({C}, DType::kBF16, 9);
    c.node(OpKind::kLayerNorm, {x, g, b}, ir::NormAttrs{1, 1e-5f, false});
    check_vs_cpu(c, "layer_norm", k.in_place);
  }
}

TEST(CudaOpsLayerNorm, GammaBetaAsActivations) {
  REQUIRE_GPU();  // rank-1 activations: f32 storage, read where they are bound
  DeviceOpCase c;
  const ir::ValueId x = c.input({2, 77, 768}, 10, 2.0f);
  const ir::ValueId g = c.input({768}, 11);
  const ir::ValueId b = c.input({768}, 12);
  c.node(OpKind::kLayerNorm, {x, g, b}, ir::NormAttrs{1, 1e-5f, false});
  check_vs_cpu(c, "layer_norm");
}

TEST(CudaOpsSoftmax, MatchesCpu) {
  REQUIRE_GPU();
  for (const Shape& s : {Shape{2, 8, 77, 77}, Shape{4, 1000}, Shape{16, 4096}, Shape{3, 5000},
                         Shape{64, 64}, Shape{5, 3}, Shape{10}}) {
    SCOPED_TRACE(s.to_string());
    DeviceOpCase c;
    const ir::ValueId x = c.input(s, 13, 8.0f);
    c.node(OpKind::kSoftmax, {x});
    check_vs_cpu(c, "softmax", true);
  }
}

// --- elementwise ---------------------------------------------------------------------------------

TEST(CudaOpsUnary, MatchesCpu) {
  REQUIRE_GPU();
  struct Op {
    OpKind op;
    const char* family;
    ir::Attrs attrs;
  };
  for (const Op& op :
       {Op{OpKind::kGelu, "gelu", {}}, Op{OpKind::kQuickGelu, "quick_gelu", {}},
        Op{OpKind::kSilu, "silu", {}}, Op{OpKind::kScale, "scale", ir::ScaleAttrs{0.18215f, 0.5f}},
        Op{OpKind::kRelu, "relu", {}}, Op{OpKind::kTanh, "tanh", {}}})
    for (const Shape& s : {Shape{2, 4096, 320}, Shape{2, 77, 3072}, Shape{3, 7, 5}, Shape{1, 1, 9},
                           Shape{13}, Shape{2, 1280}}) {
      SCOPED_TRACE(str_cat(op.family, " ", s.to_string()));
      DeviceOpCase c;
      const ir::ValueId x = c.input(s, 14, 4.0f);
      c.node(op.op, {x}, op.attrs);
      check_vs_cpu(c, op.family, true);
    }
}

TEST(CudaOpsGeglu, MatchesCpu) {
  REQUIRE_GPU();
  for (const Shape& s :
       {Shape{2, 4096, 2560}, Shape{2, 256, 10240}, Shape{3, 5, 14}, Shape{1, 2}, Shape{4, 12}}) {
    SCOPED_TRACE(s.to_string());
    DeviceOpCase c;
    const ir::ValueId x = c.input(s, 15, 3.0f);
    c.node(OpKind::kGeglu, {x});
    check_vs_cpu(c, "geglu");
  }
}

struct BinaryParams {
  Shape a, b;
  bool b_weight;
  DType b_stored;  // weights only (the IR wants a's dtype: f32 here)
  bool in_place;
};

class CudaOpsBinary : public ::testing::TestWithParam<BinaryParams> {};

TEST_P(CudaOpsBinary, AddAndMulMatchCpu) {
  REQUIRE_GPU();
  const BinaryParams& p = GetParam();
  for (OpKind op : {OpKind::kAdd, OpKind::kMul}) {
    SCOPED_TRACE(str_cat(ir::op_name(op), " ", p.a.to_string(), " ", p.b.to_string()));
    DeviceOpCase c;
    const ir::ValueId a = c.input(p.a, 16, 2.0f);
    const ir::ValueId b = p.b_weight ? c.weight(p.b, p.b_stored, 17) : c.input(p.b, 17);
    c.node(op, {a, b});
    check_vs_cpu(c, op == OpKind::kAdd ? "add" : "mul", p.in_place);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Broadcasts, CudaOpsBinary,
    ::testing::Values(
        BinaryParams{{2, 64, 64, 320}, {2, 64, 64, 320}, false, DType::kF32, true},  // residual
        BinaryParams{{2, 64, 64, 320}, {2, 1, 1, 320}, false, DType::kF32, true},    // temb
        BinaryParams{{2, 4096, 320}, {2, 1, 320}, false, DType::kF32, false},
        BinaryParams{{2, 4096, 320}, {320}, true, DType::kF32, true},     // bias weight
        BinaryParams{{2, 77, 768}, {77, 768}, true, DType::kF32, false},  // positions
        BinaryParams{{2, 4096, 320}, {320}, false, DType::kF32, false},   // f32 [C] act
        BinaryParams{{2, 8, 8, 40}, {1}, false, DType::kF32, true},       // scalar
        BinaryParams{{3, 4, 5}, {3, 1, 5}, false, DType::kF32, false},
        BinaryParams{{3, 4, 5}, {4, 1}, false, DType::kF32, true},  // inner broadcast
        BinaryParams{{2, 3, 4, 5, 6}, {3, 1, 5, 1}, false, DType::kF32, false},
        BinaryParams{{6, 1, 7}, {1, 7}, true, DType::kF32, false},
        BinaryParams{{13}, {13}, false, DType::kF32, true},  // all f32
        BinaryParams{{13}, {1}, true, DType::kF32, false},
        BinaryParams{{5, 9}, {9}, false, DType::kF32, true}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

// --- data movement -------------------------------------------------------------------------------

TEST(CudaOpsConcat, MatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    std::vector<Shape> inputs;
    int axis;
    int weight_at;  // index of an input given as a weight, -1 for none
  };
  std::vector<Case> cases = {
      {{{2, 32, 32, 320}, {2, 32, 32, 640}}, -1, -1},  // UNet skip connection
      {{{2, 8, 8, 1280}, {2, 8, 8, 1280}}, 3, -1},
      {{{1, 77, 768}, {1, 77, 768}}, 0, -1},  // CFG batch
      {{{2, 3, 5}, {2, 4, 5}, {2, 1, 5}}, 1, 1},
      {{{3, 7}, {3, 1}, {3, 2}}, 1, -1},
      {{{4}, {5}}, 0, 0},  // f32 storage
  };
  Case many{{}, -1, 3};  // more inputs than one launch takes
  for (int i = 0; i < 11; ++i)
    many.inputs.push_back(Shape{2, 3, 1 + i % 4});
  cases.push_back(many);
  for (const Case& k : cases) {
    SCOPED_TRACE(
        str_cat(k.inputs.size(), " inputs, axis ", k.axis, ", first ", k.inputs[0].to_string()));
    DeviceOpCase c;
    std::vector<ir::ValueId> ins;
    for (size_t i = 0; i < k.inputs.size(); ++i)
      ins.push_back(static_cast<int>(i) == k.weight_at ? c.weight(k.inputs[i], DType::kF32, 20 + i)
                                                       : c.input(k.inputs[i], 20 + i));
    c.node(OpKind::kConcat, ins, ir::ConcatAttrs{k.axis});
    check_vs_cpu(c, "concat");
  }
}

TEST(CudaOpsSlice, MatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    Shape x;
    ir::SliceAttrs a;
  };
  for (const Case& k : {
           Case{{2, 64, 64, 4}, {0, 1, 1}},  // one CFG half of the latents
           Case{{2, 77, 768}, {0, 0, 1}},    // of the text embeddings
           Case{{2}, {0, 1, 1}},             // of the timesteps (f32 storage)
           Case{{3, 5, 7}, {1, 1, 3}},       // strided rows
           Case{{3, 5, 7}, {-1, 2, 5}},
           Case{{2, 3, 9, 4}, {2, 4, 5}},
       }) {
    SCOPED_TRACE(
        str_cat(k.x.to_string(), " axis ", k.a.axis, " [", k.a.start, ", +", k.a.length, ")"));
    DeviceOpCase c;
    const ir::ValueId x = c.input(k.x, 31);
    c.node(OpKind::kSlice, {x}, k.a);
    check_vs_cpu(c, "slice");
  }
}

TEST(CudaOpsUpsample, MatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    Shape x;
    int64_t oh, ow;  // 0: twice
  };
  for (const Case& k :
       {Case{{2, 32, 32, 640}, 0, 0}, Case{{2, 8, 8, 1280}, 0, 0}, Case{{1, 64, 64, 512}, 0, 0},
        Case{{1, 5, 7, 3}, 11, 9}, Case{{2, 8, 8, 4}, 3, 5}, Case{{1, 3, 3, 2}, 10, 7},
        Case{{1, 6, 10, 36}, 7, 23}}) {
    SCOPED_TRACE(str_cat(k.x.to_string(), " -> ", k.oh, "x", k.ow));
    DeviceOpCase c;
    const ir::ValueId x = c.input(k.x, 30);
    c.node(OpKind::kUpsampleNearest, {x}, ir::UpsampleAttrs{k.oh, k.ow});
    check_vs_cpu(c, "upsample_nearest");
  }
}

TEST(CudaOpsPermute, MatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    Shape x, perm;
  };
  for (const Case& k : {
           Case{{2, 64, 64, 4}, {0, 3, 1, 2}},  // NHWC -> NCHW (4 channels: a gather)
           Case{{1, 40, 50, 3}, {0, 3, 1, 2}},
           Case{{2, 100, 48}, {0, 2, 1}},       // 32x32 tiles, partial ones at the edges
           Case{{2, 40, 3, 50}, {0, 3, 2, 1}},  // tiles with two batch dims
           Case{{2, 4, 64, 64}, {0, 2, 3, 1}},  // NCHW -> NHWC
           Case{{2, 77, 8, 40}, {0, 2, 1, 3}},  // heads, inner dim kept
           Case{{3, 5, 7}, {2, 0, 1}},
           Case{{3, 5, 7}, {1, 0, 2}},
           Case{{2, 3, 4, 5, 6, 7}, {5, 3, 1, 0, 4, 2}},
           Case{{2, 1, 3, 1, 5, 2}, {3, 5, 0, 4, 1, 2}},
           Case{{33, 65}, {1, 0}},
           Case{{2, 3, 4}, {0, 1, 2}},
           Case{{9}, {0}},
       }) {
    SCOPED_TRACE(str_cat(k.x.to_string(), " perm ", k.perm.to_string()));
    DeviceOpCase c;
    const ir::ValueId x = c.input(k.x, 31);
    c.node(OpKind::kPermute, {x}, ir::PermuteAttrs{k.perm});
    check_vs_cpu(c, "permute");
  }
}

TEST(CudaOpsTimestepEmbedding, MatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    std::vector<float> t;
    ir::TimestepAttrs attrs;
  };
  for (const Case& k : {Case{{999.0f, 1.0f}, {320, true, 0.0f, 10000.0f}},
                        Case{{981.0f, 981.0f, 0.0f, 500.5f}, {320, true, 0.0f, 10000.0f}},
                        Case{{3.5f}, {14, false, 1.0f, 10000.0f}},
                        Case{{1000.0f, 20.0f, 7.0f}, {256, false, 0.0f, 1000.0f}}}) {
    SCOPED_TRACE(str_cat(k.t.size(), " timesteps, dim ", k.attrs.dim));
    DeviceOpCase c;
    const ir::ValueId t = c.input_values({static_cast<int64_t>(k.t.size())}, k.t);
    c.node(OpKind::kTimestepEmbedding, {t}, k.attrs);
    check_vs_cpu(c, "timestep_embedding");
  }
}

TEST(CudaOpsEmbedding, MatchesCpu) {
  REQUIRE_GPU();
  struct Case {
    Shape ids;
    int64_t vocab, width;
  };
  for (const Case& k :
       {Case{{2, 77}, 1000, 768}, Case{{1, 77}, 77, 768}, Case{{5}, 9, 7}, Case{{2, 3}, 4, 3}}) {
    SCOPED_TRACE(str_cat(k.ids.to_string(), " of [", k.vocab, ", ", k.width, "]"));
    DeviceOpCase c;
    std::vector<int32_t> ids(static_cast<size_t>(k.ids.numel()));
    for (size_t i = 0; i < ids.size(); ++i)
      ids[i] = static_cast<int32_t>((i * 7919 + 3) % static_cast<size_t>(k.vocab));
    const ir::ValueId id = c.ids(k.ids, ids);
    const ir::ValueId table = c.weight({k.vocab, k.width}, DType::kF32, 40);
    c.node(OpKind::kEmbedding, {id, table});
    check_vs_cpu(c, "embedding");
  }
}

TEST(CudaOpsEmbedding, OutOfRangeIdsGiveNaNRows) {
  REQUIRE_GPU();  // the CPU backend throws; the device writes NaN and reads nothing outside
  DeviceOpCase c;
  const std::vector<int32_t> ids = {0, -1, 5, 6, 1 << 30, 2};
  const ir::ValueId id = c.ids({6}, ids);
  const ir::ValueId table = c.weight({6, 16}, DType::kF16, 41);
  c.node(OpKind::kEmbedding, {id, table});
  const std::vector<float> t = c.weight_values(table);
  const std::vector<float> y = c.run_device();
  for (size_t r = 0; r < ids.size(); ++r)
    for (size_t j = 0; j < 16; ++j) {
      const float got = y[r * 16 + j];
      if (ids[r] >= 0 && ids[r] < 6)
        EXPECT_EQ(got, t[static_cast<size_t>(ids[r]) * 16 + j]) << "row " << r;
      else
        EXPECT_TRUE(std::isnan(got)) << "row " << r << " (id " << ids[r] << ") col " << j;
    }
}

TEST(CudaOpsReshape, ViewCopyAndStorageChange) {
  REQUIRE_GPU();
  {  // same storage, bound apart: a copy; aliased: nothing to do
    DeviceOpCase c;
    const ir::ValueId x = c.input({2, 8, 8, 320}, 50);
    c.node(OpKind::kReshape, {x}, ir::ReshapeAttrs{Shape{2, 64, 320}});
    const std::vector<float> want = c.values(x);
    EXPECT_DEVICE_CLOSE("reshape", c.run_device(false), want);
    EXPECT_DEVICE_CLOSE("reshape", c.run_device(true), want);
    EXPECT_DOUBLE_EQ(backend::cuda::estimate_device_op_us(c.graph, c.the_node()), 0.0);
  }
  for (auto [from, to] : {std::pair{Shape{2, 5}, Shape{10}}, std::pair{Shape{10}, Shape{2, 5}},
                          std::pair{Shape{3}, Shape{3, 1}}}) {  // f16 <-> f32 storage
    SCOPED_TRACE(str_cat(from.to_string(), " -> ", to.to_string()));
    DeviceOpCase c;
    const ir::ValueId x = c.input(from, 51);
    c.node(OpKind::kReshape, {x}, ir::ReshapeAttrs{to});
    EXPECT_DEVICE_CLOSE("reshape", c.run_device(false), c.cpu_reference());
    EXPECT_GT(backend::cuda::estimate_device_op_us(c.graph, c.the_node()), 0.0);
  }
}

// --- what the placement sees ---------------------------------------------------------------------

TEST(CudaOpsSupport, GemmClassOpsAndInt8WeightsAreRefused) {
  ir::Graph g(DType::kF32);  // runs without a GPU: metadata only
  const ir::ValueId x = g.add_input("x", DType::kF32, Shape{2, 16, 32});
  const ir::ValueId w = g.add_weight("w", DType::kF32, Shape{8, 32});
  const ir::ValueId y = g.add_node(OpKind::kLinear, {x, w}, {}, "linear");
  const ir::ValueId s = g.add_node(OpKind::kSilu, {y}, {}, "silu");
  const ir::ValueId gn = g.add_weight("gn", DType::kF32, Shape{8});
  const ir::ValueId n = g.add_node(OpKind::kGroupNorm, {s, gn, gn}, ir::NormAttrs{4}, "norm");
  const ir::ValueId q = g.add_weight("q", DType::kS8, Shape{8});  // an s8 gamma
  g.mark_output(g.add_node(OpKind::kGroupNorm, {n, q, gn}, ir::NormAttrs{4}, "norm_s8"));
  const auto& nodes = g.nodes();
  EXPECT_FALSE(backend::cuda::supports_device_op(g, nodes[0]));
  EXPECT_NE(backend::cuda::device_op_unsupported_reason(g, nodes[0]).find("GEMM"),
            std::string::npos);
  EXPECT_TRUE(std::isinf(backend::cuda::estimate_device_op_us(g, nodes[0])));
  EXPECT_TRUE(backend::cuda::supports_device_op(g, nodes[1]));
  EXPECT_TRUE(backend::cuda::supports_device_op(g, nodes[2]));
  EXPECT_FALSE(backend::cuda::supports_device_op(g, nodes[3]));
  EXPECT_NE(backend::cuda::device_op_unsupported_reason(g, nodes[3]).find("8-bit S"),
            std::string::npos);
  // silu [2, 16, 8] f16: 512 B in + 512 B out at 2.5 TB/s, plus 3 µs.
  EXPECT_NEAR(backend::cuda::estimate_device_op_us(g, nodes[1]), 3.0 + 1024 / 2.5e6, 1e-9);
  // group norm reads x twice and its f32 gamma/beta, and launches twice.
  EXPECT_NEAR(backend::cuda::estimate_device_op_us(g, nodes[2]), 6.0 + (3 * 512 + 2 * 32) / 2.5e6,
              1e-9);
}

TEST(CudaOpsSupport, WideOddGroupNormIsRefusedWithAReason) {
  ir::Graph g(DType::kF32);
  const ir::ValueId x = g.add_input("x", DType::kF32, Shape{1, 4, 1025});
  const ir::ValueId w = g.add_weight("w", DType::kF32, Shape{1025});
  g.mark_output(g.add_node(OpKind::kGroupNorm, {x, w, w}, ir::NormAttrs{1}, "norm"));
  EXPECT_FALSE(backend::cuda::supports_device_op(g, g.nodes()[0]));
  EXPECT_NE(backend::cuda::device_op_unsupported_reason(g, g.nodes()[0]).find("1025"),
            std::string::npos);
  if (!gpu().ctx) return;
  weights::MemoryWeights none;
  try {
    backend::cuda::make_device_op_kernel(*gpu().ctx, g, g.nodes()[0], none);
    ADD_FAILURE() << "made a kernel for an unsupported node";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find("'norm'"), std::string::npos) << e.what();
  }
}

TEST(CudaOpsRun, WrongStorageDtypeIsRejected) {
  REQUIRE_GPU();
  DeviceOpCase c;
  const ir::ValueId x = c.input({2, 8, 16}, 60);
  c.node(OpKind::kSilu, {x});
  auto kernel = backend::cuda::make_device_op_kernel(*gpu().ctx, c.graph, c.the_node(), c.weights);
  DeviceBuffer buf(2 * 8 * 16 * 4, "test");
  const TensorView as_f32{buf.data(), DType::kF32, Shape{2, 8, 16}};  // the graph's dtype
  const TensorView as_f16{buf.data(), DType::kF16, Shape{2, 8, 16}};
  EXPECT_THROW(kernel->run(std::vector<TensorView>{as_f32}, as_f32), Error);
  const TensorView misaligned{static_cast<char*>(buf.data()) + 2, DType::kF16, Shape{2, 8, 16}};
  EXPECT_THROW(kernel->run(std::vector<TensorView>{misaligned}, as_f16), Error);
  HYRT_CUDA_CHECK(cudaStreamSynchronize(gpu().ctx->stream()));
}

}  // namespace
}  // namespace hyrt::test

#endif  // HYRT_HAVE_CUDA

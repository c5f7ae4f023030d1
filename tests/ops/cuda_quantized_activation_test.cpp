// Quantized activations on the CUDA backend (ir::NormAttrs::quantize_output, s8rows values,
// plan::quantize_activations): the quantizing layer norm (op_kernels.h,
// launch_layer_norm_quantize) against the layer norm's f16 output quantized by
// launch_quantize_rows_s8, bit for bit (values and row scales, outputs poisoned first); and a
// layer norm -> linears chain run node by node through the backend, once with the layer norm
// writing s8rows and the linears reading it, once as plain f16 with the linears forced to W8A8:
// the same bits in every output (a bias, a fused residual, two row counts, several widths);
// the same for the quantizing group norm (one scale per image) and the implicit-GEMM convs that
// read it. Skips without a GPU that runs the fused W8A8 kernel (sm_90).
#ifdef HYRT_HAVE_CUDA

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/gemm_s8_fused.h"
#include "backend/cuda/op_kernels.h"
#include "core/half.h"
#include "cuda_test_gpu.h"
#include "ir/graph.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/quantize.h"

namespace hyrt::test {
namespace {

using backend::cuda::DeviceBuffer;
using backend::cuda::FloatType;

std::vector<uint16_t> f16_values(const Tensor& f32) {
  std::vector<uint16_t> h(static_cast<size_t>(f32.numel()));
  for (size_t i = 0; i < h.size(); ++i)
    h[i] = f32_to_f16(f32.as<float>()[i]);
  return h;
}

DeviceBuffer upload_bytes(const void* data, size_t bytes, const char* what) {
  DeviceBuffer d(std::max<size_t>(bytes, 16), what);
  HYRT_CUDA_CHECK(cudaMemcpy(d.data(), data, bytes, cudaMemcpyHostToDevice));
  return d;
}

std::vector<uint8_t> download(const DeviceBuffer& d, size_t bytes) {
  std::vector<uint8_t> h(bytes);
  HYRT_CUDA_CHECK(cudaDeviceSynchronize());
  HYRT_CUDA_CHECK(cudaMemcpy(h.data(), d.data(), bytes, cudaMemcpyDeviceToHost));
  return h;
}

// q and s (s8 values and f32 scales written by a quantizing kernel) against the reference's
// q_ref and s_ref, byte for byte (s_ref may be longer: its first s.size() bytes are compared);
// returns what q and s hold.
struct QuantizedBytes {
  std::vector<uint8_t> q, s;
};
QuantizedBytes expect_equal_quantized(const DeviceBuffer& q_ref, const DeviceBuffer& s_ref,
                                      const DeviceBuffer& q, const DeviceBuffer& s) {
  QuantizedBytes got{download(q, q.size()), download(s, s.size())};
  const auto want_q = download(q_ref, q.size()), want_s = download(s_ref, s.size());
  size_t bad_q = 0;
  for (size_t i = 0; i < want_q.size(); ++i)
    bad_q += want_q[i] != got.q[i];
  EXPECT_EQ(bad_q, 0u) << "s8 values differ";
  EXPECT_EQ(std::memcmp(want_s.data(), got.s.data(), want_s.size()), 0) << "row scales differ";
  return got;
}

TEST(CudaQuantizedActivation, LayerNormQuantizeMatchesLayerNormThenQuantize) {
  REQUIRE_GPU();
  struct Case {
    int64_t rows, channels;
    bool zero = false;  // gamma = beta = 0: every row all zeros, every scale 0
  };
  // Every row-dispatch form: 4..16 lanes a row (8..128 channels), a warp with 1, 2, 4 and 8
  // vectors a lane (up to 2048 channels); row counts that leave a block part-empty.
  const Case cases[] = {{37, 8},    {5, 64},    {300, 128}, {37, 320}, {129, 640},
                        {64, 1280}, {33, 1288}, {7, 2048},  {1, 1024}, {37, 320, true}};
  uint64_t seed = 500;
  for (const Case& c : cases) {
    SCOPED_TRACE(str_cat(c.rows, "x", c.channels, c.zero ? " zero" : ""));
    Tensor x = random_tensor(Shape{c.rows, c.channels}, seed++, 3.0f);
    // Row 2 constant: its normalised values are (nearly) beta's.
    if (c.rows > 2)
      for (int64_t k = 0; k < c.channels; ++k)
        x.as<float>()[2 * c.channels + k] = 1.5f;
    Tensor gamma = random_tensor(Shape{c.channels}, seed++, 1.0f);
    Tensor beta = random_tensor(Shape{c.channels}, seed++, 0.5f);
    if (c.zero) {
      std::memset(gamma.data(), 0, gamma.bytes());
      std::memset(beta.data(), 0, beta.bytes());
    }
    const std::vector<uint16_t> xh = f16_values(x);
    DeviceBuffer dx = upload_bytes(xh.data(), xh.size() * 2, "x");
    DeviceBuffer dg = upload_bytes(gamma.data(), gamma.bytes(), "gamma");
    DeviceBuffer db = upload_bytes(beta.data(), beta.bytes(), "beta");
    const int64_t n = c.rows * c.channels;
    // Reference: the f16 layer norm, then the W8A8 quantizer.
    DeviceBuffer y(static_cast<size_t>(n) * 2, "y"), q_ref(static_cast<size_t>(n), "q ref"),
        s_ref(static_cast<size_t>(c.rows) * 4, "scales ref");
    HYRT_CUDA_CHECK(backend::cuda::launch_layer_norm(dx.data(), y.data(), FloatType::kF16, c.rows,
                                                     c.channels, 1e-5f, dg.as<float>(),
                                                     db.as<float>(), nullptr));
    HYRT_CUDA_CHECK(backend::cuda::launch_quantize_rows_s8(
        y.data(), FloatType::kF16, c.rows, c.channels, c.channels, q_ref.as<int8_t>(),
        s_ref.as<float>(), nullptr));
    // The fused form, into poisoned outputs.
    DeviceBuffer q(static_cast<size_t>(n), "q"), s(static_cast<size_t>(c.rows) * 4, "scales");
    HYRT_CUDA_CHECK(cudaMemset(q.data(), 0x7f, q.size()));
    HYRT_CUDA_CHECK(cudaMemset(s.data(), 0xff, s.size()));
    HYRT_CUDA_CHECK(backend::cuda::launch_layer_norm_quantize(
        dx.data(), FloatType::kF16, c.rows, c.channels, 1e-5f, dg.as<float>(), db.as<float>(),
        q.as<int8_t>(), s.as<float>(), nullptr));
    const auto [got_q, got_s] = expect_equal_quantized(q_ref, s_ref, q, s);
    if (c.zero) {
      EXPECT_TRUE(std::all_of(got_s.begin(), got_s.end(), [](uint8_t b) { return b == 0; }))
          << "all-zero rows have scale 0";
      EXPECT_TRUE(std::all_of(got_q.begin(), got_q.end(), [](uint8_t b) { return b == 0; }));
    }
  }
  // Rows the register cache does not hold, or not of 8-wide vectors: refused, nothing written.
  EXPECT_FALSE(backend::cuda::layer_norm_quantize_supported(2056));
  EXPECT_FALSE(backend::cuda::layer_norm_quantize_supported(12));
  DeviceBuffer dummy(4096, "dummy");
  EXPECT_EQ(backend::cuda::launch_layer_norm_quantize(
                dummy.data(), FloatType::kF16, 1, 2056, 1e-5f, dummy.as<float>(), dummy.as<float>(),
                dummy.as<int8_t>(), dummy.as<float>(), nullptr),
            cudaErrorInvalidValue);
}

TEST(CudaQuantizedActivation, GegluQuantizeMatchesGegluThenQuantize) {
  REQUIRE_GPU();
  struct Case {
    int64_t rows, n;  // n gated values a row (x is [rows, 2n])
  };
  // One warp to 32 warps a row, 1, 2 and 4 vectors a thread, the widest row; part-empty warps.
  const Case cases[] = {{37, 8},   {300, 1280}, {5, 2560},  {33, 5120},
                        {3, 8192}, {17, 1288},  {2, 16392}, {2, 32768}};
  uint64_t seed = 600;
  for (const Case& c : cases) {
    SCOPED_TRACE(str_cat(c.rows, "x", c.n));
    const std::vector<uint16_t> xh =
        f16_values(random_tensor(Shape{c.rows, 2 * c.n}, seed++, 3.0f));
    DeviceBuffer dx = upload_bytes(xh.data(), xh.size() * 2, "x");
    const int64_t n = c.rows * c.n;
    DeviceBuffer y(static_cast<size_t>(n) * 2, "y"), q_ref(static_cast<size_t>(n), "q ref"),
        s_ref(static_cast<size_t>(c.rows) * 4, "scales ref");
    HYRT_CUDA_CHECK(
        backend::cuda::launch_geglu(dx.data(), y.data(), FloatType::kF16, c.rows, c.n, nullptr));
    HYRT_CUDA_CHECK(backend::cuda::launch_quantize_rows_s8(y.data(), FloatType::kF16, c.rows, c.n,
                                                           c.n, q_ref.as<int8_t>(),
                                                           s_ref.as<float>(), nullptr));
    DeviceBuffer q(static_cast<size_t>(n), "q"), s(static_cast<size_t>(c.rows) * 4, "scales");
    HYRT_CUDA_CHECK(cudaMemset(q.data(), 0x7f, q.size()));
    HYRT_CUDA_CHECK(cudaMemset(s.data(), 0xff, s.size()));
    HYRT_CUDA_CHECK(backend::cuda::launch_geglu_quantize(dx.data(), FloatType::kF16, c.rows, c.n,
                                                         q.as<int8_t>(), s.as<float>(), nullptr));
    EXPECT_EQ(download(q_ref, q.size()), download(q, q.size())) << "s8 values differ";
    EXPECT_EQ(download(s_ref, s.size()), download(s, s.size())) << "row scales differ";
  }
  EXPECT_FALSE(backend::cuda::geglu_quantize_supported(32776));
  EXPECT_FALSE(backend::cuda::geglu_quantize_supported(12));
}

// x [b, t, c] -> layer norm -> linear "a" (bias), linear "r" (+ residual input); with `convs`
// x [b, h, w, c] -> group norm (SiLU) -> 3x3 convs "a" and "r" the same way. As a graph, with the
// norm quantizing or not.
std::shared_ptr<ir::Graph> norm_gemms(const Shape& x_shape, int64_t n, bool convs, bool quantize) {
  auto g = std::make_shared<ir::Graph>(DType::kF32);
  const int64_t c = x_shape.dim(-1);
  const ir::ValueId x = g->add_input("x", DType::kF32, x_shape);
  const ir::NormAttrs norm =
      convs ? ir::NormAttrs{32, 1e-5f, true, quantize} : ir::NormAttrs{1, 1e-5f, false, quantize};
  const ir::ValueId h =
      g->add_node(convs ? ir::OpKind::kGroupNorm : ir::OpKind::kLayerNorm,
                  {x, g->add_weight("g", DType::kF32, {c}), g->add_weight("b", DType::kF32, {c})},
                  norm, "norm");
  Shape out = x_shape;
  out[out.rank() - 1] = n;
  const ir::ValueId r = g->add_input("res", DType::kF32, out);
  const Shape w = convs ? Shape{n, c, 3, 3} : Shape{n, c};
  const ir::OpKind op = convs ? ir::OpKind::kConv2d : ir::OpKind::kLinear;
  auto attrs = [&](bool residual) -> ir::Attrs {
    const ir::GemmEpilogue e{.residual = residual};
    if (convs) return ir::Conv2dAttrs{1, 1, e};
    return ir::LinearAttrs{e};
  };
  g->mark_output(g->add_node(
      op, {h, g->add_weight("a.w", DType::kS8, w), g->add_weight("a.b", DType::kF32, {n})},
      attrs(false), "a"));
  g->mark_output(g->add_node(op, {h, g->add_weight("r.w", DType::kS8, w), r}, attrs(true), "r"));
  g->verify();
  return g;
}

// Weights for a norm over k channels ("g", "b") and two GEMM readers "a.w" (with bias "a.b")
// and "r.w" of 8-bit S weights [n, w_tail...] (a linear's [n, k], a 3x3 conv's [n, k, 3, 3]).
weights::MemoryWeights chain_weights(int64_t k, int64_t n, const std::vector<int64_t>& w_tail,
                                     uint64_t& seed) {
  weights::MemoryWeights w;
  w.add("g", random_tensor(Shape{k}, seed++, 1.0f));
  w.add("b", random_tensor(Shape{k}, seed++, 0.3f));
  std::vector<int64_t> dims{n};
  dims.insert(dims.end(), w_tail.begin(), w_tail.end());
  for (const char* name : {"a.w", "r.w"}) {
    weights::QuantizedTensor qt =
        weights::quantize_per_row(random_tensor(Shape(dims), seed++, 0.05f).view());
    w.add_quantized(name, std::move(qt.q), std::move(qt.scale));
  }
  w.add("a.b", random_tensor(Shape{n}, seed++, 0.1f));
  return w;
}

// Runs g — a norm (node 0) read by "a" (node 1, bias) and "r" (node 2, + the residual input) —
// node by node through b on x (f16 [x_shape]) and res (f16 [out]), the norm's output poisoned
// first; returns a's and r's output bytes (checked finite). `quantize`: the norm writes s8rows.
std::vector<std::vector<uint8_t>> run_chain(backend::Backend& b, const ir::Graph& g,
                                            const weights::WeightSource& w, const DeviceBuffer& dx,
                                            const Shape& x_shape, const DeviceBuffer& dr,
                                            const Shape& out, bool quantize) {
  for (const ir::Node& node : g.nodes())
    EXPECT_TRUE(b.supports(g, node)) << node.name << (quantize ? " (quantized)" : "");
  backend::ProgramCache cache;
  const ir::Node &norm = g.nodes()[0], &na = g.nodes()[1], &nr = g.nodes()[2];
  auto kn = b.prepare(g, norm, w, cache);
  auto ka = b.prepare(g, na, w, cache);
  auto kr = b.prepare(g, nr, w, cache);
  const ir::Value& h = g.value(norm.output);
  const DType h_dtype = quantize ? DType::kS8Rows : DType::kF16;
  EXPECT_EQ(b.storage_dtype(h), h_dtype);
  DeviceBuffer dh(storage_bytes(h_dtype, h.shape), "h");
  HYRT_CUDA_CHECK(cudaMemset(dh.data(), 0x7f, dh.size()));  // poisoned
  const size_t out_bytes = static_cast<size_t>(out.numel()) * 2;
  DeviceBuffer da(out_bytes, "a"), dres(out_bytes, "r");
  HYRT_CUDA_CHECK(cudaMemset(da.data(), 0xff, out_bytes));
  HYRT_CUDA_CHECK(cudaMemset(dres.data(), 0xff, out_bytes));
  const TensorView x_view{dx.data(), DType::kF16, x_shape}, h_view{dh.data(), h_dtype, h.shape};
  const TensorView none{};
  kn->run(std::vector<TensorView>{x_view, none, none}, h_view);
  ka->run(std::vector<TensorView>{h_view, none, none}, {da.data(), DType::kF16, out});
  kr->run(std::vector<TensorView>{h_view, none, {dr.data(), DType::kF16, out}},
          {dres.data(), DType::kF16, out});
  std::vector<std::vector<uint8_t>> results{download(da, out_bytes), download(dres, out_bytes)};
  // Sanity: the outputs are finite and not the poison.
  for (const auto& bytes : results)
    for (size_t i = 0; i < bytes.size() / 2; ++i) {
      uint16_t v;
      std::memcpy(&v, bytes.data() + 2 * i, 2);
      if (!std::isfinite(f16_to_f32(v))) {
        ADD_FAILURE() << "output element " << i << " is not finite";
        break;
      }
    }
  return results;
}

// Random weights (chain_weights), x [x_shape] and a residual for the chain graph_of(quantize)
// makes (a norm over x's last axis, then "a" and "r" with n outputs), run with the norm writing
// float and writing s8rows: every output the same bits.
template <class GraphOf>
void expect_the_same_bits_either_way(backend::Backend& b, const GraphOf& graph_of,
                                     const Shape& x_shape, int64_t n,
                                     const std::vector<int64_t>& w_tail, uint64_t& seed) {
  SCOPED_TRACE(str_cat(x_shape.to_string(), " -> ", n));
  const weights::MemoryWeights w = chain_weights(x_shape.dim(-1), n, w_tail, seed);
  const std::vector<uint16_t> xh = f16_values(random_tensor(x_shape, seed++, 2.0f));
  Shape out = x_shape;
  out[out.rank() - 1] = n;
  const std::vector<uint16_t> rh = f16_values(random_tensor(out, seed++, 1.0f));
  DeviceBuffer dx = upload_bytes(xh.data(), xh.size() * 2, "x");
  DeviceBuffer dr = upload_bytes(rh.data(), rh.size() * 2, "res");
  std::vector<std::vector<uint8_t>> results[2];
  for (bool quantize : {false, true})
    results[quantize] = run_chain(b, *graph_of(quantize), w, dx, x_shape, dr, out, quantize);
  EXPECT_EQ(results[0][0], results[1][0]) << "a (bias) differs";
  EXPECT_EQ(results[0][1], results[1][1]) << "r (residual) differs";
}

TEST(CudaQuantizedActivation, LinearsOnAQuantizedLayerNormGiveTheW8a8Bits) {
  REQUIRE_GPU();
  const backend::cuda::CudaDeviceInfo& dev = gpu().ctx->device();
  if (!backend::cuda::fused_s8_gemm_available(dev.compute_major, dev.compute_minor))
    GTEST_SKIP() << "the fused W8A8 kernel is not built for " << dev.name;
  // W8A8 forced for the float-input form, so that both forms quantize.
  std::unique_ptr<backend::cuda::CudaBackend> b = backend::cuda::make_cuda_backend(
      {.gemm = backend::cuda::GemmPolicy::kW8A8, .fuse_residual = true});
  struct Case {
    Shape x;
    int64_t n;
  };
  const Case cases[] = {{Shape{2, 37, 320}, 320},
                        {Shape{2, 64, 640}, 1280},
                        {Shape{1, 300, 1280}, 640},
                        {Shape{2, 9, 2048}, 16}};
  uint64_t seed = 700;
  for (const Case& c : cases)
    expect_the_same_bits_either_way(
        *b, [&](bool quantize) { return norm_gemms(c.x, c.n, false, quantize); }, c.x, c.n,
        {c.x.dim(-1)}, seed);
}

// The quantizing group norm (launch_group_norm_quantize) against launch_group_norm's f16
// output quantized per image by launch_quantize_images_s8 — the implicit conv's own quantizer:
// the same bits (values and every row's scale), outputs poisoned first; launched twice on one
// workspace, the second time on a smaller input (the channels' extremes must have been reset,
// or the first launch's would widen the second's bound).
TEST(CudaQuantizedActivation, GroupNormQuantizeMatchesGroupNormThenImageQuantize) {
  REQUIRE_GPU();
  const int sms = gpu().ctx->device().multiprocessors;
  struct Case {
    int64_t batch, positions, channels, groups;
    bool silu = true;
    bool zero = false;  // gamma = beta = 0: every value 0, every scale 0
  };
  // SD's resnet shapes (320..2560 channels: 8 channels a thread, up to 320 threads a row: the
  // wide form), one position, a part-empty block, no SiLU, three samples.
  const Case cases[] = {{2, 4096, 320, 32},       {2, 256, 1280, 32},
                        {2, 64, 2560, 32},        {1, 1024, 1920, 32},
                        {3, 37, 96, 32},          {1, 1, 64, 8},
                        {2, 300, 640, 32, false}, {2, 64, 320, 32, true, true}};
  uint64_t seed = 800;
  for (const Case& c : cases) {
    SCOPED_TRACE(str_cat(c.batch, "x", c.positions, "x", c.channels, " groups ", c.groups,
                         c.silu ? " silu" : "", c.zero ? " zero" : ""));
    backend::cuda::GroupNormShape shape;
    shape.batch = c.batch, shape.positions = c.positions, shape.channels = c.channels;
    shape.groups = c.groups, shape.silu = c.silu;
    ASSERT_TRUE(backend::cuda::group_norm_quantize_supported(c.channels, c.groups));
    Tensor gamma = random_tensor(Shape{c.channels}, seed++, 1.0f);
    Tensor beta = random_tensor(Shape{c.channels}, seed++, 0.5f);
    if (c.zero) {
      std::memset(gamma.data(), 0, gamma.bytes());
      std::memset(beta.data(), 0, beta.bytes());
    }
    DeviceBuffer dg = upload_bytes(gamma.data(), gamma.bytes(), "gamma");
    DeviceBuffer db = upload_bytes(beta.data(), beta.bytes(), "beta");
    const int64_t n = c.batch * c.positions * c.channels, rows = c.batch * c.positions;
    const size_t ws_bytes = backend::cuda::group_norm_quantize_workspace_bytes(shape, sms);
    ASSERT_GE(ws_bytes, backend::cuda::group_norm_workspace_bytes(shape, sms));
    DeviceBuffer ws(ws_bytes, "workspace"), ref_ws(ws_bytes, "reference workspace");
    HYRT_CUDA_CHECK(cudaMemset(ws.data(), 0, ws_bytes));
    HYRT_CUDA_CHECK(cudaMemset(ref_ws.data(), 0, ws_bytes));
    Tensor x = random_tensor(Shape{c.batch, c.positions, c.channels}, seed++, 3.0f);
    for (float scale : {1.0f, 0.25f}) {
      SCOPED_TRACE(str_cat("input x ", scale));
      Tensor xs(DType::kF32, x.shape());
      for (int64_t i = 0; i < n; ++i)
        xs.as<float>()[i] = x.as<float>()[i] * scale;
      // Channel 0 of sample 0 a constant: its normalised values sit at beta's.
      for (int64_t p = 0; p < c.positions; ++p)
        xs.as<float>()[p * c.channels] = 0.75f;
      const std::vector<uint16_t> xh = f16_values(xs);
      DeviceBuffer dx = upload_bytes(xh.data(), xh.size() * 2, "x");
      DeviceBuffer y(static_cast<size_t>(n) * 2, "y"), q_ref(static_cast<size_t>(n), "q ref"),
          s_ref(static_cast<size_t>(rows + c.batch) * 4, "scales ref");
      HYRT_CUDA_CHECK(backend::cuda::launch_group_norm(dx.data(), y.data(), FloatType::kF16, shape,
                                                       dg.as<float>(), db.as<float>(),
                                                       ref_ws.data(), sms, nullptr));
      HYRT_CUDA_CHECK(backend::cuda::launch_quantize_images_s8(
          y.data(), FloatType::kF16, c.batch, c.positions * c.channels, q_ref.as<int8_t>(),
          s_ref.as<float>() + rows, c.positions, s_ref.as<float>(), sms, nullptr));
      DeviceBuffer q(static_cast<size_t>(n), "q"), s(static_cast<size_t>(rows) * 4, "scales");
      HYRT_CUDA_CHECK(cudaMemset(q.data(), 0x7f, q.size()));
      HYRT_CUDA_CHECK(cudaMemset(s.data(), 0xff, s.size()));
      HYRT_CUDA_CHECK(backend::cuda::launch_group_norm_quantize(
          dx.data(), shape, dg.as<float>(), db.as<float>(), q.as<int8_t>(), s.as<float>(),
          ws.data(), sms, nullptr));
      const auto [got_q, got_s] = expect_equal_quantized(q_ref, s_ref, q, s);
      if (c.zero)
        EXPECT_TRUE(std::all_of(got_s.begin(), got_s.end(), [](uint8_t b) { return b == 0; }));
      else
        EXPECT_TRUE(std::any_of(got_q.begin(), got_q.end(), [](uint8_t b) {
          return b == 127 || b == 0x81;
        })) << "some value reaches the bound (±127)";
    }
  }
  // Where SiLU's minimum lies inside every channel's range and nothing larger is there, the
  // bound is SiLU's minimum's magnitude, a little above the true largest: a coarser scale by
  // under 0.1 %, nothing clipped, each value within one step of the exact quantizer's.
  {
    backend::cuda::GroupNormShape shape;
    shape.batch = 1, shape.positions = 256, shape.channels = 64, shape.groups = 8;
    shape.silu = true;
    std::vector<float> gamma(64, 0.05f), beta(64, -1.2784645f);
    DeviceBuffer dg = upload_bytes(gamma.data(), 256, "gamma"),
                 db = upload_bytes(beta.data(), 256, "beta");
    const std::vector<uint16_t> xh = f16_values(random_tensor(Shape{1, 256, 64}, 900, 1.0f));
    DeviceBuffer dx = upload_bytes(xh.data(), xh.size() * 2, "x");
    const size_t ws_bytes = backend::cuda::group_norm_quantize_workspace_bytes(shape, sms);
    DeviceBuffer ws(ws_bytes, "workspace");
    HYRT_CUDA_CHECK(cudaMemset(ws.data(), 0, ws_bytes));
    DeviceBuffer y(256 * 64 * 2, "y"), q_ref(256 * 64, "q ref"), s_ref(257 * 4, "s ref"),
        q(256 * 64, "q"), s(256 * 4, "s");
    HYRT_CUDA_CHECK(backend::cuda::launch_group_norm(dx.data(), y.data(), FloatType::kF16, shape,
                                                     dg.as<float>(), db.as<float>(), ws.data(), sms,
                                                     nullptr));
    HYRT_CUDA_CHECK(backend::cuda::launch_quantize_images_s8(
        y.data(), FloatType::kF16, 1, 256 * 64, q_ref.as<int8_t>(), s_ref.as<float>() + 256, 256,
        s_ref.as<float>(), sms, nullptr));
    HYRT_CUDA_CHECK(cudaMemset(ws.data(), 0, ws_bytes));
    HYRT_CUDA_CHECK(backend::cuda::launch_group_norm_quantize(
        dx.data(), shape, dg.as<float>(), db.as<float>(), q.as<int8_t>(), s.as<float>(), ws.data(),
        sms, nullptr));
    const auto wq = download(q_ref, 256 * 64), gq = download(q, 256 * 64);
    float ws0 = 0, gs0 = 0;
    std::memcpy(&ws0, download(s_ref, 4).data(), 4);
    std::memcpy(&gs0, download(s, 4).data(), 4);
    EXPECT_GE(gs0, ws0);
    EXPECT_LE(gs0, ws0 * 1.001f);
    for (size_t i = 0; i < wq.size(); ++i)
      ASSERT_LE(std::abs(static_cast<int8_t>(wq[i]) - static_cast<int8_t>(gq[i])), 1) << i;
  }
  // Channels not in 8-wide vectors: refused, nothing written.
  EXPECT_FALSE(backend::cuda::group_norm_quantize_supported(12, 4));
  EXPECT_FALSE(backend::cuda::group_norm_quantize_supported(8200, 8));
  backend::cuda::GroupNormShape bad;
  bad.batch = 1, bad.positions = 4, bad.channels = 12, bad.groups = 4;
  DeviceBuffer dummy(4096, "dummy");
  EXPECT_EQ(backend::cuda::launch_group_norm_quantize(
                dummy.data(), bad, dummy.as<float>(), dummy.as<float>(), dummy.as<int8_t>(),
                dummy.as<float>(), dummy.data(), sms, nullptr),
            cudaErrorInvalidValue);
}

// A group norm -> convs chain through the backend (HYRT_CUDA_GN_QUANTIZE=1, every conv the
// implicit kernel takes as implicit: HYRT_CUDA_CONV_IMPLICIT=2): once with the group norm
// writing s8rows (one scale per image) and the convs reading it, once as plain f16 with the
// convs quantizing per image themselves: the same bits in every output (a bias, a fused
// residual). A stride-2 conv (whose rows are not the input's) is refused on s8rows.
TEST(CudaQuantizedActivation, ConvsOnAQuantizedGroupNormGiveTheImplicitBits) {
  REQUIRE_GPU();
  const backend::cuda::CudaDeviceInfo& dev = gpu().ctx->device();
  if (!backend::cuda::fused_s8_gemm_available(dev.compute_major, dev.compute_minor))
    GTEST_SKIP() << "the fused W8A8 kernel is not built for " << dev.name;
  const ScopedEnv quantize("HYRT_CUDA_GN_QUANTIZE", "1");
  const ScopedEnv implicit("HYRT_CUDA_CONV_IMPLICIT", "2");
  std::unique_ptr<backend::cuda::CudaBackend> b = backend::cuda::make_cuda_backend(
      {.gemm = backend::cuda::GemmPolicy::kW8A8, .fuse_residual = true});
  const struct {
    Shape x;
    int64_t n;
  } cases[] = {
      {Shape{2, 16, 16, 320}, 320}, {Shape{1, 9, 13, 128}, 64}, {Shape{2, 8, 8, 640}, 1280}};
  uint64_t seed = 900;
  // The float form's convs quantize in their own staging (the context's slots).
  for (const auto& c : cases)
    expect_the_same_bits_either_way(
        *b, [&](bool quantize) { return norm_gemms(c.x, c.n, true, quantize); }, c.x, c.n,
        {c.x.dim(-1), 3, 3}, seed);
  // A stride-2 conv's rows are not its input's: not on s8rows.
  auto g = std::make_shared<ir::Graph>(DType::kF32);
  const ir::ValueId x = g->add_input("x", DType::kF32, {2, 16, 16, 320});
  const ir::ValueId h = g->add_node(
      ir::OpKind::kGroupNorm,
      {x, g->add_weight("g", DType::kF32, {320}), g->add_weight("b", DType::kF32, {320})},
      ir::NormAttrs{32, 1e-5f, true, true}, "gn");
  g->mark_output(g->add_node(ir::OpKind::kConv2d,
                             {h, g->add_weight("s.w", DType::kS8, {320, 320, 3, 3})},
                             ir::Conv2dAttrs{2, 1}, "s"));
  EXPECT_TRUE(b->supports(*g, g->nodes()[0]));
  EXPECT_FALSE(b->supports(*g, g->nodes()[1]));
}

}  // namespace
}  // namespace hyrt::test

#endif  // HYRT_HAVE_CUDA

// The CUDA backend's linear GEMM programs (src/backend/cuda) on a GPU, both candidates, vs
// double-precision references on random data, outputs poisoned with NaN before each run:
//   f16  — against x · (s·q)ᵀ + b with x as the kernel reads it (f16 or f32) and the same
//          8-bit S weights dequantized exactly: ≤ 2e-3 relative L2 (f16 rounding of the
//          operands and of the output);
//   W8A8 — against the same reference, ≤ 2e-2 (what per-row activation quantization costs),
//          and against a reference that quantizes x by the kernel's own rule (cuda_kernels.h)
//          and accumulates q·q exactly: ≤ 2e-3 (only the output's rounding may differ).
// Row chunks (cuda_gemm.h, gemm_chunking): with a small staging budget the same checks hold
// for programs that run M in several chunks and a shorter last one, and W8A8 in chunks equals
// W8A8 in one piece bit for bit (integer GEMM, per-row quantization and epilogue).
// Workspace (Kernel::workspace_bytes/bind_workspace): preparing reserves no scratch; the chosen
// candidate (f16 or W8A8, on f16 or f32 activations, whole or in row chunks) stages in a bound
// workspace of the documented size (cuda_gemm.h) at 64-byte (not 256-byte) aligned addresses,
// rebinding works, and a bound run grows none of the backend's scratch; an unbound run then
// grows it. StagingLayout's arithmetic is checked on the host.
// Fused epilogues (ir::GemmEpilogue, y = act(x · wᵀ + bias) + residual with the residual an
// activation bound as the node's last input): the references apply the activation in double
// and add the residual as the kernel reads it; both candidates must match them (SiLU, GELU,
// QuickGELU, each alone and before a residual; residuals with and without a bias, on f16 and f32
// activations, odd N), each part of the epilogue must show (references without it, and the
// same node unfused, are missed by 10x the tolerance), W8A8 in row chunks must add each chunk's
// own residual rows (bit for bit what one piece computes), and a residual bound wrongly (not
// bound, wrong size, dtype or alignment) is refused with kInvalidArgument. On the host: the
// epilogue's GemmKey bits (a fused program is a cache entry of its own) and which residuals
// gemm_inputs_supported accepts (an activation of exactly the output's shape and dtype).
// Without a usable GPU these tests skip with the reason; the factory's error for a missing
// device is itself tested wherever there is none.
#include <gtest/gtest.h>

#ifdef HYRT_HAVE_CUDA

#include <unistd.h>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/gemm_s8_fused.h"
#include "core/env.h"
#include "core/error.h"
#include "core/half.h"
#include "cuda_gemm_check.h"
#include "ir/graph.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/quantize.h"

namespace hyrt::test {
namespace {

using backend::cuda::CudaBackend;
using backend::cuda::CudaGemmKernel;
using backend::cuda::GemmCandidate;
using backend::cuda::GemmChunking;
using backend::cuda::GemmPolicy;

struct Gpu {
  std::unique_ptr<CudaBackend> backend;
  std::string why_not;
};

Gpu& gpu() {
  static Gpu g = [] {
    Gpu out;
    out.backend = backend::cuda::try_make_cuda_backend({.autotune = true, .fuse_residual = true},
                                                       &out.why_not);
    return out;
  }();
  return g;
}

#define REQUIRE_GPU() \
  if (!gpu().backend) GTEST_SKIP() << "no usable CUDA device: " << gpu().why_not

struct LinearSpec {
  Shape x_shape;  // [..., K]
  int64_t n = 0;
  bool bias = true;
  DType act = DType::kF16;
  DType weight = DType::kS8;    // s8 ("8-bit S") or a float type
  ir::GemmEpilogue epilogue{};  // fused activation / residual (none by default)
  uint64_t seed = 1;
  // Wide range (ir::Value::wide_range on x, the residual and y: held as f32, TF32 operands),
  // and a factor on x, the bias and the residual (values beyond f16's range when large).
  bool wide = false;
  float scale = 1.0f;
};

// Random values (seed, scale) for an activation of the graph's dtype `dtype` and `shape`, in
// the dtype the device holds it in (device_storage_dtype: f16 for rank >= 2, whatever the
// graph says, f32 when `wide`): the stored tensor, and its values as f32 (what a kernel reads).
Tensor stored_activation(DType dtype, const Shape& shape, uint64_t seed, float scale,
                         std::vector<float>& values, bool wide = false) {
  Tensor f = random_tensor(shape, seed, scale);
  ir::Value v;
  v.dtype = dtype;
  v.shape = shape;
  v.wide_range = wide;
  const DType store = backend::cuda::device_storage_dtype(v);
  Tensor stored(store, shape);
  convert_from_f32(f.as<float>(), store, stored.data(), static_cast<size_t>(f.numel()));
  values.resize(static_cast<size_t>(f.numel()));
  convert_to_f32(store, stored.data(), values.data(), values.size());
  return stored;
}

// A one-node graph, its weights and the host-side values the references need. With a fused
// epilogue the node is linear(x, w[, b], r) with LinearAttrs, r a graph input "r" of the
// output's shape and x's dtype.
struct LinearCase {
  ir::Graph graph;
  weights::MemoryWeights weights;
  int64_t m = 0, k = 0, n = 0;
  ir::GemmEpilogue epilogue;
  std::vector<float> x;         // as the kernel reads it (rounded to the activation dtype)
  std::vector<float> w;         // the weights' values: s·q (8-bit S) or as stored
  std::vector<float> q;         // 8-bit S only: q as floats
  std::vector<float> w_scale;   // 8-bit S only: [N]
  std::vector<float> bias;      // [N] or empty
  std::vector<float> residual;  // [M, N] as the kernel reads it, or empty
  Tensor x_stored;              // x in the activation dtype
  Tensor r_stored;              // the residual in the activation dtype (fused residual only)

  explicit LinearCase(const LinearSpec& s) : graph(s.act), epilogue(s.epilogue) {
    k = s.x_shape.dim(-1);
    m = s.x_shape.numel() / k;
    n = s.n;
    x_stored = stored_activation(s.act, s.x_shape, s.seed, s.scale, x, s.wide);

    Tensor wf = random_tensor(Shape{n, k}, s.seed + 1, 0.2f);
    if (s.weight == DType::kS8) {
      weights::QuantizedTensor qt = weights::quantize_per_row(wf.view());
      const auto* qp = qt.q.as<int8_t>();
      q.assign(qp, qp + qt.q.numel());
      w_scale.assign(qt.scale.as<float>(), qt.scale.as<float>() + n);
      w.resize(q.size());
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c)
          w[r * k + c] = w_scale[r] * q[r * k + c];
      weights.add_quantized("w", std::move(qt.q), std::move(qt.scale));
    } else {
      Tensor stored(s.weight, Shape{n, k});
      convert_from_f32(wf.as<float>(), s.weight, stored.data(), static_cast<size_t>(wf.numel()));
      w.resize(static_cast<size_t>(wf.numel()));
      convert_to_f32(s.weight, stored.data(), w.data(), w.size());
      weights.add("w", std::move(stored));
    }
    const ir::ValueId xi = graph.add_input("x", s.act, s.x_shape);
    const ir::ValueId wi = graph.add_weight("w", s.weight, Shape{n, k});
    std::vector<ir::ValueId> ins{xi, wi};
    if (s.bias) {
      Tensor b = random_tensor(Shape{n}, s.seed + 2, s.scale);
      bias.assign(b.as<float>(), b.as<float>() + n);
      weights.add("b", std::move(b));
      ins.push_back(graph.add_weight("b", DType::kF32, Shape{n}));
    }
    if (epilogue.residual) {
      Shape ys = s.x_shape;
      ys[ys.rank() - 1] = n;
      r_stored = stored_activation(s.act, ys, s.seed + 3, s.scale, residual, s.wide);
      ins.push_back(graph.add_input("r", s.act, ys));
      if (s.wide) graph.set_wide_range(ins.back());
    }
    if (s.wide) graph.set_wide_range(xi);
    const ir::Attrs attrs = epilogue.empty() ? ir::Attrs{} : ir::Attrs{ir::LinearAttrs{epilogue}};
    const ir::ValueId y = graph.add_node(ir::OpKind::kLinear, ins, attrs, "linear");
    if (s.wide) graph.set_wide_range(y);
    graph.mark_output(y);
    graph.verify();
  }

  const ir::Node& node() const { return graph.nodes().back(); }

  // Output element (i, j) from its GEMM result acc (bias not yet added), in double: + bias,
  // the activation, + the residual — each unless `omit` names it.
  float finish(double acc, int64_t i, int64_t j, Omit omit) const {
    if (omit != Omit::kBias && !bias.empty()) acc += bias[j];
    if (omit != Omit::kActivation) acc = activation_ref(acc, epilogue.activation);
    if (omit != Omit::kResidual && epilogue.residual) acc += residual[i * n + j];
    return static_cast<float>(acc);
  }

  // y = act(x · wᵀ + bias) + residual in double (without the part `omit` names).
  std::vector<float> reference(Omit omit = Omit::kNothing) const {
    std::vector<float> y(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p)
          acc += static_cast<double>(x[i * k + p]) * w[j * k + p];
        y[i * n + j] = finish(acc, i, j, omit);
      }
    return y;
  }

  // W8A8 as specified: x quantized per row by the kernels' rule, q·q accumulated exactly,
  // scaled by row scale · weight row scale, then bias and the epilogue as reference().
  std::vector<float> reference_w8a8(Omit omit = Omit::kNothing) const {
    std::vector<float> qx(x.size()), row_scale(static_cast<size_t>(m));
    for (int64_t i = 0; i < m; ++i) {
      float amax = 0.0f;
      for (int64_t p = 0; p < k; ++p)
        amax = std::max(amax, std::fabs(x[i * k + p]));
      const float inv = amax > 0 ? 127.0f / amax : 0.0f;
      row_scale[i] = amax > 0 ? amax / 127.0f : 0.0f;
      for (int64_t p = 0; p < k; ++p)
        qx[i * k + p] = std::nearbyint(std::clamp(x[i * k + p] * inv, -127.0f, 127.0f));
    }
    std::vector<float> y(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t p = 0; p < k; ++p)
          acc += static_cast<double>(qx[i * k + p]) * q[j * k + p];
        acc *= static_cast<double>(row_scale[i]) * w_scale[j];
        y[i * n + j] = finish(acc, i, j, omit);
      }
    return y;
  }
};

// Device copies of a case's input, fused residual and output, run through the Kernel
// interface.
class DeviceRun {
 public:
  DeviceRun(CudaBackend& b, const LinearCase& c) : b_(b), c_(c) {
    const ir::Value& xv = c.graph.value(c.node().inputs[0]);
    const ir::Value& yv = c.graph.value(c.node().output);
    x_ = {nullptr, b.storage_dtype(xv), xv.shape};
    y_ = {nullptr, b.storage_dtype(yv), yv.shape};
    x_mem_ = b.allocate(x_.bytes(), "test x");
    y_mem_ = b.allocate(y_.bytes(), "test y");
    x_.data = x_mem_->data();
    y_.data = y_mem_->data();
    b.copy_to_device(x_mem_->data(), c.x_stored.data(), x_.bytes());
    if (const ir::ValueId r = c.node().gemm_residual(); r != ir::kNone) {
      const ir::Value& rv = c.graph.value(r);
      r_ = {nullptr, b.storage_dtype(rv), rv.shape};
      EXPECT_EQ(r_.dtype, c.r_stored.dtype());
      r_mem_ = b.allocate(r_.bytes(), "test residual");
      r_.data = r_mem_->data();
      b.copy_to_device(r_mem_->data(), c.r_stored.data(), r_.bytes());
    }
  }

  // The node's inputs bound as the executor binds them: x and the residual (activations) from
  // device memory, the weights as the source's views (the kernel uses its uploaded copies).
  std::vector<TensorView> inputs() const {
    const ir::Node& node = c_.node();
    std::vector<TensorView> ins{x_};
    for (size_t i = 1; i < node.inputs.size(); ++i)
      ins.push_back(node.inputs[i] == node.gemm_residual()
                        ? r_
                        : c_.weights.get(c_.graph.value(node.inputs[i]).name));
    return ins;
  }
  const TensorView& residual() const { return r_; }  // data null without a fused residual

  // Poisons the output, runs candidate `cand` (or the kernel's own choice), returns y as f32.
  std::vector<float> run(CudaGemmKernel& kernel, std::optional<GemmCandidate> cand = {}) {
    return run_with(kernel, inputs(), cand);
  }

  // The same with the inputs bound as given.
  std::vector<float> run_with(CudaGemmKernel& kernel, const std::vector<TensorView>& ins,
                              std::optional<GemmCandidate> cand = {}) {
    b_.fill_bytes(y_.data, 0xff, y_.bytes());  // NaN in f16 and f32
    if (cand)
      kernel.run_candidate(*cand, ins, y_);
    else
      kernel.run(ins, y_);
    b_.synchronize();
    std::vector<uint8_t> raw(y_.bytes());
    b_.copy_to_host(raw.data(), y_.data, raw.size());
    std::vector<float> y(static_cast<size_t>(y_.numel()));
    convert_to_f32(y_.dtype, raw.data(), y.data(), y.size());
    return y;
  }

 private:
  CudaBackend& b_;
  const LinearCase& c_;
  std::unique_ptr<backend::DeviceMemory> x_mem_, y_mem_, r_mem_;
  TensorView x_, y_, r_;
};

std::unique_ptr<CudaGemmKernel> prepare(CudaBackend& b, const LinearCase& c,
                                        backend::ProgramCache& cache) {
  EXPECT_TRUE(b.supports(c.graph, c.node()));
  std::unique_ptr<backend::Kernel> k = b.prepare(c.graph, c.node(), c.weights, cache);
  auto* gk = dynamic_cast<CudaGemmKernel*>(k.get());
  EXPECT_NE(gk, nullptr);
  k.release();
  return std::unique_ptr<CudaGemmKernel>(gk);
}

std::string describe(const LinearSpec& s) {
  return str_cat("x ", dtype_name(s.act), s.x_shape.to_string(), s.wide ? " wide-range" : "",
                 s.scale != 1.0f ? str_cat(" x", s.scale) : std::string(), " w ",
                 dtype_name(s.weight), "[", s.n, ", ", s.x_shape.dim(-1), "]",
                 s.bias ? " +bias" : "", epilogue_note(s.epilogue));
}

// Runs every available candidate of one case against the references, on backend `on`
// (default: the tuning one).
void check_linear(const LinearSpec& spec, CudaBackend* on = nullptr) {
  SCOPED_TRACE(describe(spec));
  CudaBackend& b = on ? *on : *gpu().backend;
  const LinearCase c(spec);
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> kernel = prepare(b, c, cache);
  ASSERT_NE(kernel, nullptr);
  DeviceRun run(b, c);
  check_gemm_candidates(*kernel, run, c, spec.weight == DType::kS8);
}

// The row chunks of candidate `cand` for a linear of this spec under the budget now.
GemmChunking chunks_of(const LinearSpec& spec, GemmCandidate cand) {
  ir::Graph g(spec.act);
  const ir::ValueId x = g.add_input("x", spec.act, spec.x_shape);
  const ir::ValueId w = g.add_weight("w", spec.weight, Shape{spec.n, spec.x_shape.dim(-1)});
  g.add_node(ir::OpKind::kLinear, {x, w}, {}, "linear");
  const backend::GemmKey key = backend::cuda::linear_gemm_key(g, g.nodes()[0]);
  return backend::cuda::gemm_chunking(key, cand, backend::cuda::gemm_staging_budget(),
                                      fused_s8_here(key));
}

// The same for the case's own node (its epilogue included).
GemmChunking chunks_of(const LinearCase& c, GemmCandidate cand) {
  const backend::GemmKey key = backend::cuda::linear_gemm_key(c.graph, c.node());
  return backend::cuda::gemm_chunking(key, cand, backend::cuda::gemm_staging_budget(),
                                      fused_s8_here(key));
}

// W8A8 staging bytes of `rows` rows of a linear of this spec (without the s32 result where the
// fused kernel runs it).
size_t w8a8_staging_bytes(const LinearSpec& spec, int64_t rows) {
  const int64_t k4 = (spec.x_shape.dim(-1) + 3) / 4 * 4, n4 = (spec.n + 3) / 4 * 4;
  const LinearCase c(spec);  // its node with the spec's epilogue (which decides the fusion)
  const bool fused = fused_s8_here(backend::cuda::linear_gemm_key(c.graph, c.node()));
  return static_cast<size_t>(rows * (k4 + 4 + (fused ? 0 : n4 * 4)));
}

void expect_chunks(const GemmChunking& ch, int64_t rows, int64_t count, int64_t tail_rows) {
  EXPECT_EQ(ch.rows, rows);
  EXPECT_EQ(ch.count, count);
  EXPECT_EQ(ch.tail_rows, tail_rows);
}

TEST(CudaGemm, ClipTokensToUnetWidth) {  // M=77, K=320, N=768
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{77, 320}, .n = 768, .seed = 11});
}

TEST(CudaGemm, Latent64x64Projection) {  // M=4096, K=320, N=320
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{4096, 320}, .n = 320, .seed = 12});
}

// SDXL's widths (fewer rows than a 1024² picture has: the reference is a host loop): the
// 1280-wide transformer projections, GEGLU's 1280 -> 10240 and the feed-forward's 5120 -> 1280,
// cross-attention keys/values from the 2048-wide context, and the added embedding's 2816 inputs
// (pooled text + six size embeddings).
TEST(CudaGemm, SdxlWidths) {
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{256, 1280}, .n = 1280, .seed = 21});
  check_linear({.x_shape = Shape{128, 1280}, .n = 10240, .seed = 22});
  check_linear({.x_shape = Shape{128, 5120}, .n = 1280, .seed = 23});
  check_linear({.x_shape = Shape{2, 77, 2048}, .n = 1280, .bias = false, .seed = 24});
  check_linear({.x_shape = Shape{2, 2816}, .n = 1280, .seed = 25});
}

// `c` rewritten as one stacked linear (ir::LinearAttrs::weights: plan::stack_projections' q, k
// and v) over its weight rows split into graph weights "w0", "w1", ... of `rows` each (as stored:
// the 8-bit S rows with their scales), x and the references unchanged. No bias or epilogue.
void make_stacked(LinearCase& c, const std::vector<int64_t>& rows) {
  ASSERT_TRUE(c.bias.empty() && c.epilogue.empty());
  const ir::Value x = c.graph.value(c.node().inputs[0]);
  const ir::Value w = c.graph.value(c.node().inputs[1]);
  ir::Graph g(c.graph.activation_dtype());
  std::vector<ir::ValueId> ins{g.add_input("x", x.dtype, x.shape)};
  const TensorView whole = c.weights.get("w");
  const std::optional<TensorView> scale = c.weights.scale("w");
  const size_t row_bytes = static_cast<size_t>(c.k) * dtype_size(w.dtype);
  int64_t row0 = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string name = str_cat("w", i);
    Tensor part(w.dtype, Shape{rows[i], c.k});
    std::memcpy(part.data(), static_cast<const uint8_t*>(whole.data) + row0 * row_bytes,
                rows[i] * row_bytes);
    if (scale) {
      Tensor sc(DType::kF32, Shape{rows[i]});
      std::memcpy(sc.data(), scale->as<const float>() + row0, rows[i] * 4);
      c.weights.add_quantized(name, std::move(part), std::move(sc));
    } else {
      c.weights.add(name, std::move(part));
    }
    ins.push_back(g.add_weight(name, w.dtype, Shape{rows[i], c.k}));
    row0 += rows[i];
  }
  ASSERT_EQ(row0, c.n);
  ir::LinearAttrs stacked;
  stacked.weights = static_cast<int>(rows.size());
  g.mark_output(g.add_node(ir::OpKind::kLinear, ins, stacked, "qkv"));
  g.verify();
  c.graph = std::move(g);
}

// A stacked linear is one GEMM over its weights' rows in order: every candidate meets the
// whole matrix's references, and W8A8 gives the unstacked node's bits (SDXL's 1280-wide q, k, v
// at 256 rows; odd parts that pad; f16 weights; an f32 graph).
TEST(CudaGemm, StackedWeightsAreOneGemm) {
  REQUIRE_GPU();
  CudaBackend& b = *gpu().backend;
  struct Case {
    LinearSpec spec;
    std::vector<int64_t> rows;
  };
  for (const Case& t :
       {Case{{.x_shape = Shape{2, 128, 1280}, .n = 3840, .bias = false, .seed = 61},
             {1280, 1280, 1280}},
        Case{{.x_shape = Shape{2, 33, 320}, .n = 963, .bias = false, .seed = 62}, {320, 321, 322}},
        Case{
            {.x_shape = Shape{64, 320}, .n = 960, .bias = false, .weight = DType::kF16, .seed = 63},
            {320, 320, 320}},
        Case{
            {.x_shape = Shape{2, 40, 160}, .n = 480, .bias = false, .act = DType::kF32, .seed = 64},
            {160, 160, 160}}}) {
    SCOPED_TRACE(describe(t.spec));
    backend::ProgramCache cache;
    const LinearCase whole(t.spec);
    LinearCase stacked(t.spec);
    make_stacked(stacked, t.rows);
    std::unique_ptr<CudaGemmKernel> kernel = prepare(b, stacked, cache);
    ASSERT_NE(kernel, nullptr);
    DeviceRun run(b, stacked);
    check_gemm_candidates(*kernel, run, stacked, t.spec.weight == DType::kS8);
    if (t.spec.weight == DType::kS8) {
      std::unique_ptr<CudaGemmKernel> one = prepare(b, whole, cache);
      DeviceRun run_one(b, whole);
      EXPECT_EQ(run.run(*kernel, GemmCandidate::kW8A8), run_one.run(*one, GemmCandidate::kW8A8));
    }
  }
}

TEST(CudaGemm, SingleRowOddN) {  // M=1, N=333
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{1, 320}, .n = 333, .seed = 13});
}

TEST(CudaGemm, OddKAndNPadded) {  // K=77 and N=9: the int8 path's zero padding, no bias
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{5, 77}, .n = 9, .bias = false, .seed = 14});
}

TEST(CudaGemm, Rank3CrossAttentionKV) {  // x [2, 77, 768] -> [2, 77, 320]
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{2, 77, 768}, .n = 320, .seed = 15});
}

TEST(CudaGemm, F32GraphRunsInF16) {  // an f32 graph's activations are f16 on the device
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{33, 320}, .n = 640, .act = DType::kF32, .seed = 16});
  check_linear({.x_shape = Shape{3, 75}, .n = 17, .act = DType::kF32, .seed = 17});
}

// Wide-range activations (the SDXL VAE's under force_upcast) are f32 on the device and run on
// TF32 operands: values far beyond f16's ±65504 come out right in both candidates (W8A8
// quantizes from f32), with 8-bit S and float weights, a fused residual and activation too.
TEST(CudaGemm, WideRangeActivationsRunInF32) {
  REQUIRE_GPU();
  constexpr float kBeyondF16 = 4e5f;
  check_linear({.x_shape = Shape{2, 64, 64},
                .n = 96,
                .act = DType::kF32,
                .seed = 19,
                .wide = true,
                .scale = kBeyondF16});
  check_linear({.x_shape = Shape{33, 40},
                .n = 24,
                .act = DType::kF32,
                .weight = DType::kF16,
                .seed = 20,
                .wide = true,
                .scale = kBeyondF16});
  check_linear({.x_shape = Shape{2, 16, 64},
                .n = 64,
                .act = DType::kF32,
                .epilogue = {ir::Activation::kSilu, true},
                .seed = 21,
                .wide = true,
                .scale = kBeyondF16});
}

TEST(CudaGemm, FloatWeightsRunAsF16) {  // f32/f16-stored weights: uploaded as f16, f16 only
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{64, 320}, .n = 320, .weight = DType::kF32, .seed = 18});
  check_linear(
      {.x_shape = Shape{7, 40}, .n = 24, .bias = false, .weight = DType::kF16, .seed = 19});
}

// W8A8 stages the quantized rows, their scales and the s32 result, so a small budget runs it in
// row chunks: several full ones and a shorter last one (its own cuBLASLt layouts). The f16
// candidate on f16 activations stages nothing that grows with M: one piece whatever the budget.
TEST(CudaGemm, W8A8InRowChunks) {
  REQUIRE_GPU();
  {  // M = 1000 in 256-row chunks: 3 full ones and 232 rows
    const LinearSpec spec{.x_shape = Shape{1000, 320}, .n = 768, .seed = 51};
    const ScopedGemmStagingBudget budget(w8a8_staging_bytes(spec, 256));
    expect_chunks(chunks_of(spec, GemmCandidate::kW8A8), 256, 4, 232);
    expect_chunks(chunks_of(spec, GemmCandidate::kF16), 1000, 1, 1000);
    check_linear(spec);
    // Untimed (heuristic algorithms, the last chunk's derived the same way).
    std::unique_ptr<CudaBackend> quick = backend::cuda::make_cuda_backend({});
    check_linear(spec, quick.get());
  }
  {  // K = 77, N = 9 (zero-padded to 80 and 12), no bias; the one-block minimum of 64 rows
    const LinearSpec spec{.x_shape = Shape{300, 77}, .n = 9, .bias = false, .seed = 52};
    const ScopedGemmStagingBudget budget(1);
    expect_chunks(chunks_of(spec, GemmCandidate::kW8A8), 64, 5, 44);
    check_linear(spec);
  }
  {  // rank 3: M = 2·333 = 666 rows, chunks across the batch boundary, 26 rows last
    const LinearSpec spec{.x_shape = Shape{2, 333, 320}, .n = 320, .seed = 53};
    const ScopedGemmStagingBudget budget(1);
    expect_chunks(chunks_of(spec, GemmCandidate::kW8A8), 64, 11, 26);
    check_linear(spec);
  }
}

// A chunked program is its own cache entry (its algorithms are a chunk's), and W8A8 in chunks
// computes exactly what W8A8 in one piece does.
TEST(CudaGemm, ChunkedProgramIsItsOwnEntryAndExact) {
  REQUIRE_GPU();
  CudaBackend& b = *gpu().backend;
  backend::ProgramCache cache;
  const LinearSpec spec{.x_shape = Shape{600, 320}, .n = 640, .seed = 54};
  const LinearCase c(spec);
  std::unique_ptr<CudaGemmKernel> whole = prepare(b, c, cache);
  ASSERT_NE(whole, nullptr);
  std::unique_ptr<CudaGemmKernel> chunked;
  {
    const ScopedGemmStagingBudget budget(w8a8_staging_bytes(spec, 200));  // 3 x 192 + 24
    expect_chunks(chunks_of(spec, GemmCandidate::kW8A8), 192, 4, 24);
    chunked = prepare(b, c, cache);
  }
  ASSERT_NE(chunked, nullptr);
  EXPECT_EQ(cache.misses(), 2u);
  EXPECT_NE(&whole->tuning(), &chunked->tuning());
  EXPECT_EQ(whole->tuning().key, chunked->tuning().key);
  DeviceRun run(b, c);
  const std::vector<float> y_whole = run.run(*whole, GemmCandidate::kW8A8);
  const std::vector<float> y_chunked = run.run(*chunked, GemmCandidate::kW8A8);
  EXPECT_LE(rel(y_chunked, c.reference()), kW8A8Tolerance);
  EXPECT_EQ(y_chunked, y_whole) << "W8A8 in chunks differs from W8A8 in one piece";
  std::printf("[ cuda     ] chunked: %s\n", chunked->tuning().to_string().c_str());
}

// The fused W8A8 kernel (gemm_s8_fused.h: an sm_90 device and a build with CUTLASS). Where it
// applies, the W8A8 candidate runs it; it must compute what cuBLASLt's s8 GEMM and the rescale
// pass compute — the same integer sums, scales, bias and f16 rounding (up to the order of the
// float operations) — and pass the references. Cases: SDXL's widths; M not a multiple of the
// 64/128-row tiles; both tile shapes (a problem large enough for the 128 x 128 tile is compared
// with the unfused path only: its host reference would take minutes); no bias; row chunks
// (each chunk its own launch at a row offset).
TEST(CudaGemm, FusedS8MatchesCublasltAndRescale) {
  REQUIRE_GPU();
  const std::vector<backend::cuda::CudaDeviceInfo> devices = backend::cuda::list_devices();
  ASSERT_FALSE(devices.empty());
  const backend::cuda::CudaDeviceInfo& dev = devices[0];
  if (!backend::cuda::fused_s8_gemm_available(dev.compute_major, dev.compute_minor))
    GTEST_SKIP() << "the fused W8A8 kernel is not built or " << dev.name << " (sm_"
                 << dev.compute_major << dev.compute_minor << ") cannot run it";
  CudaBackend& fused = *gpu().backend;
  // The unfused path takes a fused residual too (in its rescale pass), as asked.
  std::unique_ptr<CudaBackend> plain = backend::cuda::make_cuda_backend(
      {.autotune = true, .fuse_residual = true, .fused_s8_gemm = false});
  auto compare = [&](const LinearSpec& spec, bool with_reference) {
    SCOPED_TRACE(describe(spec));
    const LinearCase c(spec);
    backend::ProgramCache cache_f, cache_p;
    std::unique_ptr<CudaGemmKernel> kf = prepare(fused, c, cache_f);
    std::unique_ptr<CudaGemmKernel> kp = prepare(*plain, c, cache_p);
    ASSERT_TRUE(kf && kp);
    EXPECT_TRUE(kf->fused_s8());
    EXPECT_FALSE(kp->fused_s8());
    DeviceRun run_f(fused, c), run_p(*plain, c);
    const std::vector<float> yf = run_f.run(*kf, GemmCandidate::kW8A8);
    const std::vector<float> yp = run_p.run(*kp, GemmCandidate::kW8A8);
    EXPECT_LE(rel(yf, yp), 1e-3) << "fused W8A8 differs from cuBLASLt s8 + rescale";
    EXPECT_TRUE(std::all_of(yf.begin(), yf.end(), [](float v) { return std::isfinite(v); }));
    if (with_reference) check_gemm_candidates(*kf, run_f, c, true);
    std::printf("[ cuda     ] fused %s: %s\n", describe(spec).c_str(),
                kf->tuning().to_string().c_str());
  };
  compare({.x_shape = Shape{300, 1280}, .n = 1280, .seed = 61}, true);
  compare({.x_shape = Shape{2, 77, 2048}, .n = 1280, .bias = false, .seed = 62}, true);
  compare({.x_shape = Shape{130, 1280}, .n = 10240, .seed = 63}, true);
  compare({.x_shape = Shape{1000, 640}, .n = 5120, .seed = 64}, false);  // 128 x 128 tiles
  {
    const LinearSpec spec{.x_shape = Shape{333, 640}, .n = 320, .seed = 65};
    const ScopedGemmStagingBudget budget(1);  // 64-row chunks: 5 full ones and 13 rows
    compare(spec, true);
  }
  // A fused residual, added in the kernel's epilogue (its C operand): both tiles, row chunks
  // (the residual read at each chunk's row offset), and no bias.
  const ir::GemmEpilogue residual{.residual = true};
  compare({.x_shape = Shape{300, 1280}, .n = 1280, .epilogue = residual, .seed = 66}, true);
  compare({.x_shape = Shape{2, 77, 640}, .n = 640, .bias = false, .epilogue = residual, .seed = 67},
          true);
  compare({.x_shape = Shape{1000, 640}, .n = 5120, .epilogue = residual, .seed = 68}, false);
  {
    const LinearSpec spec{.x_shape = Shape{333, 640}, .n = 320, .epilogue = residual, .seed = 69};
    const ScopedGemmStagingBudget budget(1);
    compare(spec, true);
  }
}

TEST(CudaGemm, CacheRecordsChoiceAndMicroseconds) {
  REQUIRE_GPU();
  CudaBackend& b = *gpu().backend;
  backend::ProgramCache cache;
  const LinearCase c1({.x_shape = Shape{256, 320}, .n = 640, .seed = 21});
  const LinearCase c2({.x_shape = Shape{256, 320}, .n = 640, .seed = 22});  // same GemmKey
  std::unique_ptr<CudaGemmKernel> k1 = prepare(b, c1, cache);
  ASSERT_NE(k1, nullptr);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_EQ(cache.misses(), 1u);
  const auto& t = k1->tuning();
  for (const auto* s : {&t.f16, &t.w8a8}) {
    EXPECT_TRUE(s->available);
    EXPECT_TRUE(std::isfinite(s->total_us) && s->total_us > 0) << t.to_string();
    EXPECT_TRUE(std::isfinite(s->gemm_us) && s->gemm_us > 0) << t.to_string();
    // The fused W8A8 kernel has no cuBLASLt algorithms to time (the candidate is timed whole).
    if (s != &t.w8a8 || !k1->fused_s8()) {
      EXPECT_GE(s->algos_timed, 1);
    }
  }
  const GemmCandidate faster =
      t.w8a8.total_us < t.f16.total_us ? GemmCandidate::kW8A8 : GemmCandidate::kF16;
  EXPECT_EQ(t.chosen, faster) << t.to_string();
  EXPECT_EQ(t.key.m, 256);
  EXPECT_EQ(t.key.w_type, DType::kS8);
  EXPECT_DOUBLE_EQ(b.estimate_us(c1.graph, c1.node()), t.stats(t.chosen).total_us);

  // A second node of the same key reuses the program: no second tuning, same record.
  std::unique_ptr<CudaGemmKernel> k2 = prepare(b, c2, cache);
  ASSERT_NE(k2, nullptr);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(&k2->tuning(), &k1->tuning());
  DeviceRun run(b, c2);
  EXPECT_LE(rel(run.run(*k2, GemmCandidate::kF16), c2.reference()), kF16Tolerance);
  std::printf("[ cuda     ] %s on %s\n", t.to_string().c_str(), b.device_info().name.c_str());
}

// Untimed (the default): no GPU time, the heuristic's algorithm, the roofline's choice — and
// the result is still right. Tuned records reach the disk store; a later untimed backend with
// a fresh cache reads them back (measured, same choice) instead of estimating.
TEST(CudaGemm, UntimedChoiceAndTunedRecordsOnDisk) {
  REQUIRE_GPU();
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("hyrt_cuda_records_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const LinearCase c({.x_shape = Shape{512, 320}, .n = 1280, .seed = 41});
  std::unique_ptr<CudaBackend> quick = backend::cuda::make_cuda_backend({});
  {
    backend::ProgramCache cache;
    std::unique_ptr<CudaGemmKernel> k = prepare(*quick, c, cache);
    ASSERT_NE(k, nullptr);
    const auto& t = k->tuning();
    EXPECT_FALSE(t.f16.measured);
    EXPECT_EQ(t.f16.algos_timed, 0);
    EXPECT_EQ(cache.record_count(), 0u) << "estimates are not records";
    DeviceRun run(*quick, c);
    EXPECT_LE(rel(run.run(*k), c.reference()),
              k->candidate() == GemmCandidate::kF16 ? kF16Tolerance : kW8A8Tolerance);
  }
  backend::DiskStoreOptions store{dir, quick->cache_signature(), "programs"};
  GemmCandidate tuned_choice;
  {
    backend::ProgramCache cache;
    cache.open_disk_store(store);
    std::unique_ptr<CudaGemmKernel> k = prepare(*gpu().backend, c, cache);  // autotunes
    ASSERT_NE(k, nullptr);
    EXPECT_TRUE(k->tuning().f16.measured);
    tuned_choice = k->tuning().chosen;
    EXPECT_EQ(cache.record_count(), 1u);
    EXPECT_TRUE(cache.flush());
  }
  {
    backend::ProgramCache cache;
    EXPECT_EQ(cache.open_disk_store(store), 1u);
    std::unique_ptr<CudaGemmKernel> k = prepare(*quick, c, cache);
    ASSERT_NE(k, nullptr);
    EXPECT_TRUE(k->tuning().f16.measured) << "the record was not used";
    EXPECT_EQ(k->tuning().chosen, tuned_choice);
    DeviceRun run(*quick, c);
    EXPECT_LE(rel(run.run(*k), c.reference()),
              k->candidate() == GemmCandidate::kF16 ? kF16Tolerance : kW8A8Tolerance);
  }
  fs::remove_all(dir);
}

TEST(CudaGemm, PolicyForcesCandidate) {
  REQUIRE_GPU();
  std::unique_ptr<CudaBackend> b =
      backend::cuda::make_cuda_backend({.gemm = backend::cuda::GemmPolicy::kW8A8,
                                        .tune_algos = 2,
                                        .tune_reps = 3,
                                        .autotune = true});
  backend::ProgramCache cache;
  const LinearCase c({.x_shape = Shape{16, 64}, .n = 32, .seed = 31});
  std::unique_ptr<CudaGemmKernel> k = prepare(*b, c, cache);
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->candidate(), GemmCandidate::kW8A8);
  DeviceRun run(*b, c);
  EXPECT_LE(rel(run.run(*k), c.reference()), kW8A8Tolerance);
}

// The backend runs every op within its kernels' limits and refuses beyond them: a causal
// attention with a 512-wide head fits neither the fused kernel (≤ 256) nor the wide path
// (non-causal only).
TEST(CudaGemm, SupportsOpsWithinKernelLimits) {
  REQUIRE_GPU();
  CudaBackend& b = *gpu().backend;
  ir::Graph g(DType::kF16);
  const ir::ValueId x = g.add_input("x", DType::kF16, Shape{1, 4, 512});
  const ir::ValueId w = g.add_weight("w", DType::kS8, Shape{512, 512});
  const ir::ValueId y = g.add_node(ir::OpKind::kLinear, {x, w}, {}, "linear");
  const ir::ValueId z = g.add_node(ir::OpKind::kSilu, {y}, {}, "silu");
  const ir::ValueId a =
      g.add_node(ir::OpKind::kAttention, {z, z, z}, ir::AttentionAttrs{1, 0.0f, true}, "attn");
  g.mark_output(a);
  EXPECT_TRUE(b.supports(g, g.nodes()[0]));
  EXPECT_TRUE(b.supports(g, g.nodes()[1]));
  EXPECT_FALSE(b.supports(g, g.nodes()[2]));
  EXPECT_TRUE(std::isinf(b.estimate_us(g, g.nodes()[2])));
  EXPECT_GT(b.estimate_us(g, g.nodes()[0]), 0.0);
  weights::MemoryWeights none;
  backend::ProgramCache cache;
  EXPECT_THROW(b.prepare(g, g.nodes()[2], none, cache), Error);
}

TEST(CudaGemm, MissingScaleIsAnInvalidModel) {
  REQUIRE_GPU();
  ir::Graph g(DType::kF16);
  const ir::ValueId x = g.add_input("x", DType::kF16, Shape{4, 8});
  const ir::ValueId w = g.add_weight("w", DType::kS8, Shape{16, 8});
  g.mark_output(g.add_node(ir::OpKind::kLinear, {x, w}, {}, "linear"));
  weights::MemoryWeights ws;
  ws.add("w", Tensor::zeros(DType::kS8, Shape{16, 8}));  // no .scale
  backend::ProgramCache cache;
  try {
    gpu().backend->prepare(g, g.nodes()[0], ws, cache);
    ADD_FAILURE() << "prepare accepted an 8-bit S weight without scales";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
}

// --- a bound workspace (Kernel::bind_workspace) ---

// A backend's device memory for check_bound_workspace (cuda_gemm_check.h).
class BackendMemory {
 public:
  explicit BackendMemory(CudaBackend& b) : b_(b) {}
  void* allocate(size_t bytes) {
    held_.push_back(b_.allocate(bytes, "test workspace"));
    return held_.back()->data();
  }
  void fill(void* p, int value, size_t bytes) { b_.fill_bytes(p, value, bytes); }
  std::vector<uint8_t> download(const void* p, size_t bytes) {
    std::vector<uint8_t> out(bytes);
    b_.copy_to_host(out.data(), p, bytes);
    return out;
  }
  size_t held() const { return b_.scratch_bytes(); }

 private:
  CudaBackend& b_;
  std::vector<std::unique_ptr<backend::DeviceMemory>> held_;
};

// The linear of `spec` prepared with candidate `cand` forced (under staging budget `budget`
// when given: row chunks) on a backend of its own, so that its scratch_bytes() is exactly the
// cuBLASLt workspace until a run without a workspace grows it: preparing (tuning included)
// must reserve nothing, workspace_bytes() must be the documented layout's,
// check_bound_workspace must hold, and then an unbound run falls back to (and grows) the
// backend's scratch with the same result.
void check_linear_workspace(const LinearSpec& spec, GemmCandidate cand,
                            std::optional<size_t> budget = {}) {
  SCOPED_TRACE(describe(spec) + " " + backend::cuda::candidate_name(cand) +
               (budget ? str_cat(" budget ", *budget) : std::string()));
  const LinearCase c(spec);
  std::unique_ptr<CudaBackend> b = backend::cuda::make_cuda_backend(
      {.gemm = cand == GemmCandidate::kF16 ? GemmPolicy::kF16 : GemmPolicy::kW8A8,
       .tune_algos = 2,
       .tune_reps = 3,
       .autotune = true,
       .fuse_residual = true});
  const size_t lt_workspace = backend::cuda::CudaBackendOptions{}.workspace_bytes;
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> kernel;
  GemmChunking ch;
  {
    std::optional<ScopedGemmStagingBudget> scoped;
    if (budget) scoped.emplace(*budget);
    kernel = prepare(*b, c, cache);
    ch = chunks_of(spec, cand);
  }
  ASSERT_NE(kernel, nullptr);
  ASSERT_EQ(kernel->candidate(), cand);
  if (budget) {
    EXPECT_TRUE(ch.chunked());
  }
  EXPECT_EQ(b->scratch_bytes(), lt_workspace) << "preparing reserved scratch";
  EXPECT_EQ(
      kernel->workspace_bytes(),
      documented_workspace_bytes(backend::cuda::linear_gemm_key(c.graph, c.node()), cand, ch));

  DeviceRun run(*b, c);
  BackendMemory mem(*b);
  check_bound_workspace(*kernel, run, c, mem);
  EXPECT_EQ(b->scratch_bytes(), lt_workspace);

  // Unbound (tests, benchmarks): the first run grows the backend's scratch.
  EXPECT_LE(rel(run.run(*kernel), c.reference()),
            cand == GemmCandidate::kF16 ? kF16Tolerance : kW8A8Tolerance);
  EXPECT_GT(b->scratch_bytes(), lt_workspace);
}

// f16 activations, 8-bit S weights: f16 stages the widened weights, W8A8 its three buffers
// (77 rows: not whole 256-byte blocks, so offsets are rounded up). f32 activations (a rank-1
// input keeps f32 on the device): f16 also stages them converted.
TEST(CudaGemm, BoundWorkspace) {
  REQUIRE_GPU();
  const LinearSpec f16_act{.x_shape = Shape{77, 320}, .n = 768, .seed = 71};
  check_linear_workspace(f16_act, GemmCandidate::kF16);
  check_linear_workspace(f16_act, GemmCandidate::kW8A8);
  const LinearSpec f32_act{.x_shape = Shape{320}, .n = 640, .act = DType::kF32, .seed = 72};
  check_linear_workspace(f32_act, GemmCandidate::kF16);
  check_linear_workspace(f32_act, GemmCandidate::kW8A8);
}

// W8A8 in row chunks (every chunk reuses the one chunk's buffers in the workspace): M = 1000
// in 3 x 256 rows + 232, and rank 3, M = 666 in 10 x 64 rows + 26 (K = 77, N = 9 padded).
TEST(CudaGemm, BoundWorkspaceInRowChunks) {
  REQUIRE_GPU();
  const LinearSpec spec{.x_shape = Shape{1000, 320}, .n = 768, .seed = 73};
  check_linear_workspace(spec, GemmCandidate::kW8A8, w8a8_staging_bytes(spec, 256));
  check_linear_workspace({.x_shape = Shape{2, 333, 77}, .n = 9, .bias = false, .seed = 74},
                         GemmCandidate::kW8A8, 1);
}

// f16 on f16 activations with float weights stages nothing: no workspace; binding one (or
// none) changes nothing.
TEST(CudaGemm, NothingStagedNoWorkspace) {
  REQUIRE_GPU();
  CudaBackend& b = *gpu().backend;
  const LinearCase c({.x_shape = Shape{7, 40}, .n = 24, .weight = DType::kF16, .seed = 75});
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> kernel = prepare(b, c, cache);
  ASSERT_NE(kernel, nullptr);
  EXPECT_EQ(kernel->workspace_bytes(), 0u);
  DeviceRun run(b, c);
  kernel->bind_workspace(nullptr);
  EXPECT_LE(rel(run.run(*kernel), c.reference()), kF16Tolerance);
}

// --- fused epilogues (ir::GemmEpilogue: y = act(x · wᵀ + bias) + residual) ---

constexpr ir::GemmEpilogue kResidual{.residual = true};
constexpr ir::Activation kSilu = ir::Activation::kSilu;
constexpr ir::Activation kGelu = ir::Activation::kGelu;
constexpr ir::Activation kQuickGelu = ir::Activation::kQuickGelu;
constexpr ir::Activation kRelu = ir::Activation::kRelu;

// The SD attention out-projection (to_out.0: 320 -> 320 with bias) + the block's residual; a
// residual without a bias at K = 77, N = 9 (W8A8's padded, unvectorised epilogue; cuBLASLt's
// beta·C on an odd N); float weights (the f16 candidate only).
TEST(CudaGemm, FusedResidualAdd) {
  REQUIRE_GPU();
  check_linear({.x_shape = Shape{2, 256, 320}, .n = 320, .epilogue = kResidual, .seed = 91});
  check_linear({.x_shape = Shape{5, 77}, .n = 9, .bias = false, .epilogue = kResidual, .seed = 92});
  check_linear({.x_shape = Shape{64, 320},
                .n = 320,
                .weight = DType::kF16,
                .epilogue = kResidual,
                .seed = 93});
}

// Each activation, alone and then + a residual, at x [2, 77, 320] -> 1280 (W8A8 applies them in
// its rescale pass, f16 in a pass after the GEMM). f32 graph activations: rank 3 is held as
// f16 on the device like the rest; rank 1 keeps f32 there (an f32 epilogue and residual, with
// and without an activation). K = 77, N = 9: the f16 epilogue pass's unvectorised tail.
TEST(CudaGemm, FusedActivations) {
  REQUIRE_GPU();
  uint64_t seed = 100;
  for (ir::Activation a : {kSilu, kGelu, kQuickGelu, kRelu})
    for (bool residual : {false, true})
      check_linear({.x_shape = Shape{2, 77, 320},
                    .n = 1280,
                    .epilogue = {.activation = a, .residual = residual},
                    .seed = ++seed});
  check_linear({.x_shape = Shape{2, 77, 320},
                .n = 320,
                .act = DType::kF32,
                .epilogue = {.activation = kGelu, .residual = true},
                .seed = 111});
  check_linear({.x_shape = Shape{320},
                .n = 640,
                .act = DType::kF32,
                .epilogue = {.activation = kSilu, .residual = true},
                .seed = 112});
  check_linear(
      {.x_shape = Shape{320}, .n = 640, .act = DType::kF32, .epilogue = kResidual, .seed = 113});
  check_linear({.x_shape = Shape{5, 77},
                .n = 9,
                .bias = false,
                .epilogue = {.activation = kQuickGelu, .residual = true},
                .seed = 114});
}

// A fused epilogue in row chunks: each chunk must add its own rows of the residual. Only W8A8
// chunks a linear here (on f16 activations the f16 candidate stages nothing per row and runs
// in one piece; the conv tests chunk both candidates). M = 2·333 = 666 in 10 x 64 rows + 26
// (budget 1 byte, chunks across the batch boundary); M = 1000 in 3 x 256 + 232 with SiLU
// before the residual. W8A8 in chunks must equal W8A8 in one piece bit for bit (a residual
// read at another chunk's rows would not), and a chunked fused program stages in a bound
// workspace like any other.
TEST(CudaGemm, FusedResidualInRowChunks) {
  REQUIRE_GPU();
  CudaBackend& b = *gpu().backend;
  struct Chunked {
    LinearSpec spec;
    size_t budget;
    int64_t rows, count, tail;
  };
  const LinearSpec batched{
      .x_shape = Shape{2, 333, 320}, .n = 320, .epilogue = kResidual, .seed = 121};
  const LinearSpec silu{.x_shape = Shape{1000, 320},
                        .n = 768,
                        .epilogue = {.activation = kSilu, .residual = true},
                        .seed = 122};
  for (const Chunked& t : {Chunked{batched, 1, 64, 11, 26},
                           Chunked{silu, w8a8_staging_bytes(silu, 256), 256, 4, 232}}) {
    SCOPED_TRACE(describe(t.spec));
    const LinearCase c(t.spec);
    backend::ProgramCache cache;
    std::unique_ptr<CudaGemmKernel> whole = prepare(b, c, cache);
    ASSERT_NE(whole, nullptr);
    EXPECT_FALSE(chunks_of(c, GemmCandidate::kW8A8).chunked());
    std::unique_ptr<CudaGemmKernel> chunked;
    {
      const ScopedGemmStagingBudget budget(t.budget);
      expect_chunks(chunks_of(c, GemmCandidate::kW8A8), t.rows, t.count, t.tail);
      expect_chunks(chunks_of(c, GemmCandidate::kF16), c.m, 1, c.m);
      chunked = prepare(b, c, cache);
    }
    ASSERT_NE(chunked, nullptr);
    EXPECT_EQ(cache.misses(), 2u) << "a chunked program is an entry of its own";
    DeviceRun run(b, c);
    check_gemm_candidates(*chunked, run, c, true);
    EXPECT_EQ(run.run(*chunked, GemmCandidate::kW8A8), run.run(*whole, GemmCandidate::kW8A8))
        << "fused W8A8 in chunks differs from fused W8A8 in one piece";
  }
  check_linear_workspace(batched, GemmCandidate::kW8A8, 1);
}

// The fused checks can fail. A kernel that dropped its epilogue would compute what the same
// node without one computes (same x, w, bias): that misses the fused references by more than
// 10x the tolerance, for either candidate, as do the references without the residual or
// without the activation. A residual bound wrongly is refused before anything runs
// (kInvalidArgument): not bound, one row short, f32 instead of the f16 the device holds, not
// 16-byte aligned; a right binding then still gives the right result.
TEST(CudaGemm, FusedEpilogueIsChecked) {
  REQUIRE_GPU();
  CudaBackend& b = *gpu().backend;
  const LinearSpec spec{.x_shape = Shape{64, 320},
                        .n = 320,
                        .epilogue = {.activation = kGelu, .residual = true},
                        .seed = 131};
  LinearSpec plain_spec = spec;
  plain_spec.epilogue = {};
  const LinearCase c(spec), plain(plain_spec);
  ASSERT_EQ(c.x, plain.x);
  ASSERT_EQ(c.w, plain.w);
  ASSERT_EQ(c.bias, plain.bias);
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> fused = prepare(b, c, cache);
  std::unique_ptr<CudaGemmKernel> unfused = prepare(b, plain, cache);
  ASSERT_NE(fused, nullptr);
  ASSERT_NE(unfused, nullptr);
  EXPECT_EQ(cache.misses(), 1u) << "a fused node shares the plain GEMM's program "
                                   "(gemm_program_key)";
  DeviceRun run(b, c), plain_run(b, plain);
  for (GemmCandidate cand : {GemmCandidate::kF16, GemmCandidate::kW8A8})
    check_epilogue_shows(*fused, run, c, *unfused, plain_run, plain, cand, c.n);
}

// --- host-only: the chunking rule, the roofline, the staging layout (no GPU needed) ---

// StagingLayout (cuda_context.h) lays its buffers out in Scratch order, each at a 256-byte
// aligned address inside [workspace, workspace + workspace_bytes()) whatever 64-byte aligned
// address the workspace starts at. Only addresses are computed: host memory stands in.
TEST(CudaStagingLayout, CarvesAlignedBuffersWithinTheWorkspace) {
  using backend::cuda::Scratch;
  using backend::cuda::Staging;
  using backend::cuda::StagingLayout;
  StagingLayout none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.workspace_bytes(), 0u);

  StagingLayout l;
  l.add(Scratch::kAccS32, 1000);
  l.add(Scratch::kActS8, 300);
  l.add(Scratch::kRowScales, 4);
  EXPECT_FALSE(l.empty());
  EXPECT_EQ(l.bytes(Scratch::kActS8), 300u);
  const size_t ws = l.workspace_bytes();
  EXPECT_EQ(ws, 512u + 256u + 1024u + 192u);
  alignas(256) static uint8_t arena[4096];
  for (size_t offset : {0, 64, 128, 192, 256}) {
    SCOPED_TRACE(offset);
    uint8_t* w = arena + offset;
    const Staging st = l.carve(w);
    const auto* q = static_cast<uint8_t*>(st[Scratch::kActS8]);
    const auto* scales = static_cast<uint8_t*>(st[Scratch::kRowScales]);
    const auto* acc = static_cast<uint8_t*>(st[Scratch::kAccS32]);
    for (const uint8_t* p : {q, scales, acc})
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
    EXPECT_GE(q, w);
    EXPECT_LT(q, w + 256);  // the base aligned up: never beyond the slack
    EXPECT_EQ(scales, q + 512);
    EXPECT_EQ(acc, scales + 256);
    EXPECT_LE(acc + 1000, w + ws);
    EXPECT_EQ(st[Scratch::kWeightWide], nullptr);
    EXPECT_EQ(st[Scratch::kIm2col], nullptr);
  }
  EXPECT_THROW(l.carve(arena + 32), Error);  // not 64-byte aligned
}

backend::GemmKey gemm_key(int64_t m, int64_t n, int64_t k, bool im2col) {
  backend::GemmKey key;
  key.m = m, key.n = n, key.k = k;
  key.a_type = key.out_type = DType::kF16;
  key.w_type = DType::kS8;
  key.epilogue = static_cast<uint8_t>(backend::Epilogue::kBias);
  if (im2col) key.epilogue |= backend::cuda::kIm2colOperand;
  return key;
}

// Which GEMMs the fused kernel takes (none where it is not built or the device is not sm_90).
TEST(CudaGemmFused, S8AppliesRule) {
  backend::cuda::CudaDeviceInfo hopper, ada;
  hopper.compute_major = 9, hopper.compute_minor = 0;
  ada.compute_major = 8, ada.compute_minor = 9;
  const bool built = backend::cuda::fused_s8_gemm_available(9, 0);
  const backend::GemmKey plain = gemm_key(4096, 1280, 1280, false);
  EXPECT_EQ(backend::cuda::fused_s8_applies(plain, hopper, true), built);
  EXPECT_FALSE(backend::cuda::fused_s8_applies(plain, hopper, false));  // turned off
  EXPECT_FALSE(backend::cuda::fused_s8_applies(plain, ada, true));
  EXPECT_EQ(backend::cuda::fused_s8_applies(gemm_key(77, 2880, 2880, true), hopper, true), built);
  EXPECT_FALSE(backend::cuda::fused_s8_applies(gemm_key(77, 1280, 36, true), hopper, true));   // K
  EXPECT_FALSE(backend::cuda::fused_s8_applies(gemm_key(77, 333, 640, false), hopper, true));  // N
  EXPECT_EQ(backend::cuda::fused_s8_applies(gemm_key(8192, 320, 320, false), hopper, true), built);
  backend::GemmKey wide = plain;
  wide.a_type = wide.out_type = DType::kF32;
  EXPECT_FALSE(backend::cuda::fused_s8_applies(wide, hopper, true));
  backend::GemmKey f16w = plain;
  f16w.w_type = DType::kF16;
  EXPECT_FALSE(backend::cuda::fused_s8_applies(f16w, hopper, true));
  backend::GemmKey residual = plain;  // added in the kernel's epilogue
  residual.epilogue |= static_cast<uint8_t>(backend::Epilogue::kResidualAdd);
  EXPECT_EQ(backend::cuda::fused_s8_applies(residual, hopper, true), built);
  backend::GemmKey act = residual;  // an activation keeps the separate pass
  act.epilogue |= static_cast<uint8_t>(backend::Epilogue::kGelu);
  EXPECT_FALSE(backend::cuda::fused_s8_applies(act, hopper, true));
  if (built) {  // the measured tile rule (gemm_s8_fused.h)
    using backend::cuda::fused_s8_auto_tile;
    using backend::cuda::FusedS8Tile;
    EXPECT_EQ(fused_s8_auto_tile(2048, 1280, 17280, 132), FusedS8Tile::kLarge);  // 3x3 conv
    // Shallow K with a tile per SM and more: the ping-pong tile (GEGLU, q/k/v projections).
    EXPECT_EQ(fused_s8_auto_tile(8192, 5120, 640, 132), FusedS8Tile::kPingpong);
    EXPECT_EQ(fused_s8_auto_tile(2048, 1280, 1280, 132), FusedS8Tile::kPingpong);
    EXPECT_EQ(fused_s8_auto_tile(32768, 320, 320, 132), FusedS8Tile::kPingpong);
    EXPECT_EQ(fused_s8_auto_tile(512, 1280, 1280, 132), FusedS8Tile::kSmall);  // 40 tiles
    EXPECT_EQ(fused_s8_auto_tile(154, 640, 2048, 132), FusedS8Tile::kSmall);
    // Deep K but too few 128 x 128 tiles to fill the device (SD 1.5's 16x16 level at 512²).
    EXPECT_EQ(fused_s8_auto_tile(512, 1280, 11520, 132), FusedS8Tile::kSmall);
    // Deeper K: four tiles per SM and more take 128 x 128 (768 tiles); 320 tiles stay small.
    EXPECT_EQ(fused_s8_auto_tile(32768, 320, 2560, 132), FusedS8Tile::kLarge);
    EXPECT_EQ(fused_s8_auto_tile(8192, 640, 2560, 132), FusedS8Tile::kSmall);
  }
  // Without the s32 result the W8A8 staging per row is K4 + 4, and the roofline drops its bytes.
  EXPECT_EQ(backend::cuda::gemm_staging_bytes_per_row(plain, GemmCandidate::kW8A8, true),
            1280u + 4u);
  EXPECT_LT(backend::cuda::gemm_roofline_us(plain, GemmCandidate::kW8A8, true),
            backend::cuda::gemm_roofline_us(plain, GemmCandidate::kW8A8, false));
}

TEST(CudaGemmChunking, Rule) {
  using backend::cuda::gemm_chunking;
  // The rule under a 32 MiB budget (the default was that until measurements moved it).
  constexpr size_t kGemmStagingBudget = size_t{32} << 20;
  // What fits the budget runs in one piece: a 64x64-latent projection (M=4096, K=N=320).
  const backend::GemmKey small = gemm_key(4096, 320, 320, false);
  expect_chunks(gemm_chunking(small, GemmCandidate::kF16, kGemmStagingBudget), 4096, 1, 4096);
  expect_chunks(gemm_chunking(small, GemmCandidate::kW8A8, kGemmStagingBudget), 4096, 1, 4096);
  EXPECT_EQ(gemm_chunking(small, GemmCandidate::kF16, kGemmStagingBudget).staging_bytes, 0u);

  // A 960-channel 3x3 conv at a 64x64 latent, batch 2: M = 8192, K = 8640, N = 320.
  const backend::GemmKey conv = gemm_key(8192, 320, 8640, true);
  // f16: im2col rows of 17280 bytes; at most 1920 rows, balanced over 5 chunks: 4 x 1664 + 1536.
  const GemmChunking f16 = gemm_chunking(conv, GemmCandidate::kF16, kGemmStagingBudget);
  expect_chunks(f16, 1664, 5, 1536);
  EXPECT_EQ(f16.staging_bytes, 1664u * 17280u);
  EXPECT_LE(f16.staging_bytes, kGemmStagingBudget);
  // W8A8: 8640 + 4 + 1280 = 9924 bytes a row; at most 3328 rows: 2 x 2752 + 2688.
  const GemmChunking w8 = gemm_chunking(conv, GemmCandidate::kW8A8, kGemmStagingBudget);
  expect_chunks(w8, 2752, 3, 2688);
  EXPECT_EQ(w8.staging_bytes, 2752u * 9924u);
  EXPECT_LE(w8.staging_bytes, kGemmStagingBudget);

  // Whatever the budget, one block of 64 rows at least; M within one block stays whole.
  expect_chunks(gemm_chunking(conv, GemmCandidate::kF16, 1), 64, 128, 64);
  expect_chunks(gemm_chunking(gemm_key(50, 320, 8640, true), GemmCandidate::kF16, 1), 50, 1, 50);
  // A budget of 200 im2col rows (K = 2880): up to 200 rows in one piece; beyond, chunks of at
  // most 192 rows, every one but the last full, covering M.
  const size_t budget = size_t{200} * 2880 * 2;
  for (int64_t m : {1, 65, 200})
    EXPECT_EQ(gemm_chunking(gemm_key(m, 320, 2880, true), GemmCandidate::kF16, budget).count, 1);
  for (int64_t m : {201, 250, 385, 1000, 4097, 8191}) {
    const GemmChunking ch =
        gemm_chunking(gemm_key(m, 320, 2880, true), GemmCandidate::kF16, budget);
    EXPECT_GE(ch.count, 2) << m;
    EXPECT_EQ(ch.rows % backend::cuda::kGemmChunkRowAlign, 0) << m;
    EXPECT_LE(ch.rows, 192) << m;
    EXPECT_EQ((ch.count - 1) * ch.rows + ch.tail_rows, m) << m;
    EXPECT_GE(ch.tail_rows, 1) << m;
    EXPECT_LE(ch.tail_rows, ch.rows) << m;
  }
}

// The untimed choice at SD 1.5's 1024² shapes, as measured on an H100
// (bench/results/gemm_breakdown_h100.json): a 3x3 conv's W8A8 (the im2col quantizer gathers
// from an input ~9x smaller than the matrix and writes no f16 matrix) beats the f16 candidate
// (which writes the f16 matrix and reads it back) — 202 against 222 µs at 32768·320·2880 — while
// the dense 32768·320·320 projection stays f16 (44 against 26.5 µs). Under
// $HYRT_CUDA_ROOFLINE=matrix (the estimate before) the conv would be f16 too; not tested here.
TEST(CudaGemmChunking, RooflinePicksW8a8ForGatheredConvs) {
  if (env_is("HYRT_CUDA_ROOFLINE", "matrix")) GTEST_SKIP() << "HYRT_CUDA_ROOFLINE=matrix";
  using backend::cuda::gemm_roofline_us;
  for (const auto& [m, n, k] :
       {std::array<int64_t, 3>{32768, 320, 2880}, std::array<int64_t, 3>{32768, 320, 5760},
        std::array<int64_t, 3>{8192, 640, 5760}, std::array<int64_t, 3>{2048, 1280, 11520}}) {
    const backend::GemmKey conv = gemm_key(m, n, k, true);
    EXPECT_LT(gemm_roofline_us(conv, GemmCandidate::kW8A8, true),
              gemm_roofline_us(conv, GemmCandidate::kF16))
        << m << "x" << n << "x" << k;
  }
  const backend::GemmKey dense = gemm_key(32768, 320, 320, false);
  EXPECT_LT(gemm_roofline_us(dense, GemmCandidate::kF16),
            gemm_roofline_us(dense, GemmCandidate::kW8A8, true));
}

// A chunked run's estimate counts the launches its further chunks add.
TEST(CudaGemmChunking, RooflineCountsChunkLaunches) {
  const backend::GemmKey key = gemm_key(1000, 768, 320, false);
  const double f16_whole = backend::cuda::gemm_roofline_us(key, GemmCandidate::kF16);
  const double w8_whole = backend::cuda::gemm_roofline_us(key, GemmCandidate::kW8A8);
  const ScopedGemmStagingBudget budget(1);  // W8A8 in 16 chunks of 64 rows (or fewer)
  EXPECT_GT(backend::cuda::gemm_roofline_us(key, GemmCandidate::kW8A8), w8_whole);
  // f16 on f16 activations stages nothing per row: one piece, the same estimate.
  EXPECT_DOUBLE_EQ(backend::cuda::gemm_roofline_us(key, GemmCandidate::kF16), f16_whole);
}

// --- host-only: fused epilogues' keys and support (no GPU needed) ---

// linear(x [4, 8], w [16, 8] (8-bit S)[, b], [r]) with `epilogue` in a graph of `dtype`, the
// residual r [4, 16] a graph input of that dtype — or a graph weight (residual_weight).
ir::Graph fused_linear(ir::GemmEpilogue epilogue, bool bias = true, DType dtype = DType::kF16,
                       bool residual_weight = false) {
  ir::Graph g(dtype);
  const ir::ValueId x = g.add_input("x", dtype, Shape{4, 8});
  std::vector<ir::ValueId> ins{x, g.add_weight("w", DType::kS8, Shape{16, 8})};
  if (bias) ins.push_back(g.add_weight("b", DType::kF32, Shape{16}));
  if (epilogue.residual)
    ins.push_back(residual_weight ? g.add_weight("r", dtype, Shape{4, 16})
                                  : g.add_input("r", dtype, Shape{4, 16}));
  const ir::Attrs attrs = epilogue.empty() ? ir::Attrs{} : ir::Attrs{ir::LinearAttrs{epilogue}};
  g.mark_output(g.add_node(ir::OpKind::kLinear, ins, attrs, "linear"));
  return g;
}

// GemmKey::epilogue (and so the key's text) carries the activation and residual bits next to
// the bias bit; the shape and types stay the plain node's, and the program key
// (gemm_program_key, what the ProgramCache entry is named by) drops them again.
TEST(CudaGemmFused, KeyCarriesEpilogueBits) {
  using backend::Epilogue;
  const auto bit = [](Epilogue e) { return static_cast<uint8_t>(e); };
  const ir::Graph plain = fused_linear({});
  const backend::GemmKey plain_key = backend::cuda::linear_gemm_key(plain, plain.nodes()[0]);
  EXPECT_EQ(plain_key.epilogue, bit(Epilogue::kBias));
  struct Case {
    ir::GemmEpilogue epilogue;
    bool bias;
    uint8_t bits;
  };
  const std::vector<Case> cases{
      {{.activation = kSilu}, true, uint8_t(bit(Epilogue::kBias) | bit(Epilogue::kSilu))},
      {{.activation = kGelu}, true, uint8_t(bit(Epilogue::kBias) | bit(Epilogue::kGelu))},
      {{.activation = kQuickGelu}, true, uint8_t(bit(Epilogue::kBias) | bit(Epilogue::kQuickGelu))},
      {kResidual, true, uint8_t(bit(Epilogue::kBias) | bit(Epilogue::kResidualAdd))},
      {kResidual, false, bit(Epilogue::kResidualAdd)},
      {{.activation = kSilu, .residual = true},
       true,
       uint8_t(bit(Epilogue::kBias) | bit(Epilogue::kSilu) | bit(Epilogue::kResidualAdd))},
      {{.activation = kQuickGelu, .residual = true},
       false,
       uint8_t(bit(Epilogue::kQuickGelu) | bit(Epilogue::kResidualAdd))},
  };
  std::vector<std::string> texts{plain_key.to_string()};
  for (const Case& t : cases) {
    const ir::Graph g = fused_linear(t.epilogue, t.bias);
    const backend::GemmKey key = backend::cuda::linear_gemm_key(g, g.nodes()[0]);
    SCOPED_TRACE(key.to_string());
    EXPECT_EQ(key.epilogue, t.bits);
    EXPECT_NE(key, plain_key);
    backend::GemmKey shape_only = key;
    shape_only.epilogue = plain_key.epilogue;
    EXPECT_EQ(shape_only, plain_key) << "the epilogue changed more than the key's epilogue bits";
    // The program (cuBLASLt algorithms, candidate choice) is the plain GEMM's of the shape,
    // with or without the bias.
    backend::GemmKey program = plain_key;
    program.epilogue = t.bias ? bit(Epilogue::kBias) : 0;
    EXPECT_EQ(backend::cuda::gemm_program_key(key), program);
    texts.push_back(key.to_string());
  }
  std::sort(texts.begin(), texts.end());
  EXPECT_EQ(std::unique(texts.begin(), texts.end()), texts.end()) << "two epilogues, one entry";
}

// Residual fusion on the GPU is opt-in (CudaBackendOptions::fuse_residual) except where the
// fused W8A8 kernel runs the GEMM and adds the residual in its epilogue: a default backend
// refuses a linear with a fused residual that kernel cannot take (K = 8; or it is not built, or
// no sm_90 device, or int8 weights run as f16) (plan::fuse_epilogues then leaves the add alone),
// takes one the kernel runs, and takes one with only an activation.
TEST(CudaGemm, ResidualFusionIsOptIn) {
  REQUIRE_GPU();
  std::string why;
  auto plain = backend::cuda::try_make_cuda_backend({}, &why);
  ASSERT_NE(plain, nullptr) << why;
  const ir::Graph residual = fused_linear(kResidual);
  const ir::Graph activation = fused_linear({.activation = kSilu});
  EXPECT_FALSE(plain->supports(residual, residual.nodes().back()));
  EXPECT_TRUE(plain->supports(activation, activation.nodes().back()));
  EXPECT_TRUE(gpu().backend->supports(residual, residual.nodes().back()));
  const LinearCase wide_k({.x_shape = Shape{64, 320}, .n = 640, .epilogue = kResidual});
  const bool fused_kernel =
      fused_s8_here(backend::cuda::linear_gemm_key(wide_k.graph, wide_k.node()));
  EXPECT_EQ(plain->supports(wide_k.graph, wide_k.node()), fused_kernel);
  plain->set_int8_mode(backend::Int8Mode::kW8);  // f16 operands: no fused kernel, no residual
  EXPECT_FALSE(plain->supports(wide_k.graph, wide_k.node()));
}

// gemm_inputs_supported: a residual is an activation (a graph input or a node's output) of
// exactly the output's shape and dtype, the last input; a weight, another shape or another
// dtype, or an input list that does not fit {x, w[, b], r}, is not. The graph itself refuses
// to build a residual of another shape or dtype, so those nodes are edited copies. With a GPU
// the backend's supports() says the same.
TEST(CudaGemmFused, InputsSupported) {
  using backend::cuda::gemm_inputs_supported;
  CudaBackend* b = gpu().backend.get();
  const auto expect_supported = [&](const ir::Graph& g, const ir::Node& n, bool yes) {
    EXPECT_EQ(gemm_inputs_supported(g, n), yes);
    if (b) {
      EXPECT_EQ(b->supports(g, n), yes);
    }
  };
  for (bool bias : {false, true})
    for (ir::GemmEpilogue e : {kResidual, ir::GemmEpilogue{.activation = kGelu},
                               ir::GemmEpilogue{.activation = kSilu, .residual = true}}) {
      SCOPED_TRACE(str_cat(bias ? "bias" : "no bias", epilogue_note(e)));
      const ir::Graph g = fused_linear(e, bias);
      expect_supported(g, g.nodes()[0], true);
    }
  {  // f32 graph activations (held as f16, the residual too)
    const ir::Graph g = fused_linear(kResidual, true, DType::kF32);
    expect_supported(g, g.nodes()[0], true);
  }
  {  // the residual a node's output (the residual stream)
    ir::Graph g(DType::kF16);
    const ir::ValueId x = g.add_input("x", DType::kF16, Shape{4, 8});
    const ir::ValueId w = g.add_weight("w", DType::kS8, Shape{16, 8});
    const ir::ValueId h = g.add_input("h", DType::kF16, Shape{4, 16});
    const ir::ValueId r = g.add_node(ir::OpKind::kSilu, {h}, {}, "silu");
    g.mark_output(g.add_node(ir::OpKind::kLinear, {x, w, r}, ir::LinearAttrs{kResidual}, "linear"));
    expect_supported(g, g.nodes()[1], true);
  }
  {  // a weight of the right shape and dtype is no residual
    const ir::Graph g = fused_linear(kResidual, true, DType::kF16, true);
    expect_supported(g, g.nodes()[0], false);
  }

  // Edited copies of a supported node, in a graph that holds the values they refer to.
  ir::Graph g(DType::kF16);
  const ir::ValueId x = g.add_input("x", DType::kF16, Shape{4, 8});
  const ir::ValueId w = g.add_weight("w", DType::kS8, Shape{16, 8});
  const ir::ValueId bias = g.add_weight("b", DType::kF32, Shape{16});
  const ir::ValueId r = g.add_input("r", DType::kF16, Shape{4, 16});
  const ir::ValueId transposed = g.add_input("r_t", DType::kF16, Shape{16, 4});
  const ir::ValueId wide = g.add_input("r_f32", DType::kF32, Shape{4, 16});
  const ir::ValueId row = g.add_input("r_row", DType::kF16, Shape{16});
  g.mark_output(
      g.add_node(ir::OpKind::kLinear, {x, w, bias, r}, ir::LinearAttrs{kResidual}, "linear"));
  const ir::Node& ok = g.nodes()[0];
  expect_supported(g, ok, true);
  const auto edited = [&](std::vector<ir::ValueId> inputs) {
    ir::Node n = ok;
    n.inputs = std::move(inputs);
    return n;
  };
  EXPECT_FALSE(gemm_inputs_supported(g, edited({x, w, bias, transposed})))
      << "same numel, another shape";
  EXPECT_FALSE(gemm_inputs_supported(g, edited({x, w, bias, wide}))) << "f32, the output f16";
  EXPECT_FALSE(gemm_inputs_supported(g, edited({x, w, bias, row}))) << "a row to broadcast";
  EXPECT_FALSE(gemm_inputs_supported(g, edited({x, w}))) << "no residual input";
  EXPECT_FALSE(gemm_inputs_supported(g, edited({x, w, bias, r, r}))) << "an input too many";
  EXPECT_THROW(
      g.add_node(ir::OpKind::kLinear, {x, w, bias, transposed}, ir::LinearAttrs{kResidual}, "l"),
      Error);
  EXPECT_THROW(g.add_node(ir::OpKind::kLinear, {x, w, bias, wide}, ir::LinearAttrs{kResidual}, "l"),
               Error);
}

// Runs everywhere: with no device the factory says so clearly; with one it rejects a bad index.
TEST(CudaBackendFactory, ClearErrorWithoutDevice) {
  std::string why;
  auto b = backend::cuda::try_make_cuda_backend({.device = 99}, &why);
  EXPECT_EQ(b, nullptr);
  EXPECT_FALSE(why.empty());
  try {
    backend::cuda::make_cuda_backend({.device = 99});
    ADD_FAILURE() << "made a backend on CUDA device 99";
  } catch (const Error& e) {
    if (gpu().backend) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    } else {
      EXPECT_EQ(e.code(), ErrorCode::kUnsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find("CUDA device"), std::string::npos) << e.what();
      std::printf("[ cuda     ] no GPU here: %s\n", e.what());
    }
  }
}

}  // namespace
}  // namespace hyrt::test

#else  // !HYRT_HAVE_CUDA

TEST(CudaGemm, NotBuilt) {
  GTEST_SKIP() << "built without the CUDA toolkit (HYRT_HAVE_CUDA off)";
}

#endif

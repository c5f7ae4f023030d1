// The CUDA backend's conv2d GEMM programs (src/backend/cuda/cuda_gemm.h) on a GPU: im2col +
// GEMM (and the 1x1 linear path), both candidates, vs a double-precision direct convolution
// on random inputs rounded through f16, outputs poisoned with NaN before each run:
//   f16  — ≤ 2e-3 relative L2 (f16 rounding of the operands and of the output);
//   W8A8 — ≤ 2e-2 (per-row quantization of the im2col rows), and ≤ 2e-3 against a reference
//          that quantizes the im2col rows by the kernels' rule and accumulates q·q exactly.
// The kernels are made with make_conv2d_kernel on a CudaContext of the test's own (the
// backend dispatches conv2d nodes to that factory). Without a usable GPU the GPU tests skip
// with the reason; the key and support checks run everywhere the CUDA toolkit was found.
// Row chunks (cuda_gemm.h, gemm_chunking): under a small staging budget the same checks hold
// with M in several chunks and a shorter last one (chunks crossing image boundaries), W8A8 in
// chunks equals W8A8 in one piece bit for bit, and a large conv's workspace stays within the
// default budget.
// Workspace (Kernel::workspace_bytes/bind_workspace): preparing reserves no scratch; each
// candidate, chunked or not, stages in a bound workspace of the documented size (cuda_gemm.h)
// at 64-byte (not 256-byte) aligned addresses, rebinding works, and a bound run grows no
// scratch of the context; an unbound run then grows the context's slots instead.
// Fused epilogues (ir::GemmEpilogue: y = act(conv + bias) + residual, the residual
// [B, Ho, Wo, Cout] an activation bound as the last input): the references apply the
// activation in double and add the residual as the kernel reads it (rounded through f16); both
// candidates must match them for a 3x3 conv + residual (the resnet conv2 pattern), a 1x1 conv
// + residual (proj_out), activations with and without a residual, and in row chunks (both
// candidates chunked: each chunk adds its own residual rows, W8A8 bit for bit as in one piece,
// also in a bound workspace). Each part must show (references without it, and the same conv
// unfused, are missed by 10x the tolerance); a residual bound wrongly is refused with
// kInvalidArgument. On the host: the epilogue's key bits (a fused 1x1 conv keeps the fused
// linear's key) and which residuals supports_conv2d accepts.
#include <gtest/gtest.h>

#ifdef HYRT_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/gemm_s8_fused.h"
#include "core/error.h"
#include "core/half.h"
#include "cuda_gemm_check.h"
#include "cuda_test_gpu.h"
#include "ir/graph.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/quantize.h"

namespace hyrt::test {
namespace {

// The GEMM programs under test are tuned (few algorithms, few reps: speed of the test).
const backend::cuda::CudaBackendOptions kConvOptions{
    .tune_algos = 4, .tune_reps = 3, .autotune = true};

using backend::cuda::CudaContext;
using backend::cuda::CudaGemmKernel;
using backend::cuda::DeviceBuffer;
using backend::cuda::GemmCandidate;
using backend::cuda::GemmChunking;
using backend::cuda::GemmPolicy;

struct ConvSpec {
  int64_t batch = 2, height = 8, width = 8, cin = 8, cout = 8;
  int kernel = 3, stride = 1, padding = 1;
  bool bias = true;
  DType weight = DType::kS8;        // s8 ("8-bit S") or a float type
  DType graph_dtype = DType::kF32;  // the graph's activation dtype (held as f16 either way)
  ir::GemmEpilogue epilogue{};      // fused activation / residual (none by default)
  uint64_t seed = 1;
  // Wide range (ir::Value::wide_range on x, the residual and y: held as f32 on the device, run
  // on TF32 operands), and a factor on x, the bias and the residual.
  bool wide = false;
  float scale = 1.0f;
};

std::string describe(const ConvSpec& s) {
  return str_cat("x [", s.batch, ", ", s.height, ", ", s.width, ", ", s.cin, "]",
                 s.wide ? str_cat(" wide-range x", s.scale) : std::string(), " w ",
                 dtype_name(s.weight), "[", s.cout, ", ", s.cin, ", ", s.kernel, ", ", s.kernel,
                 "] s=", s.stride, " p=", s.padding, s.bias ? " +bias" : "",
                 epilogue_note(s.epilogue));
}

// A one-node graph, its weights and the host-side values the reference needs. With a fused
// epilogue the node is conv2d(x, w[, b], r), r a graph input "r" [B, Ho, Wo, Cout] of the
// graph's dtype (held as f16 on the device, like x).
struct ConvCase {
  ConvSpec s;
  ir::Graph graph;
  weights::MemoryWeights weights;
  ir::GemmEpilogue epilogue;
  int64_t out_h = 0, out_w = 0;
  DType held = DType::kF16;  // x, the residual and y on the device: f16, or f32 when wide
  std::vector<float> x;      // NHWC, rounded through f16 unless wide (what the kernel reads)
  std::vector<uint16_t> x16;
  std::vector<float> w;           // OIHW values: s·q (8-bit S) or as stored
  std::vector<float> bias;        // [Cout] or empty
  std::vector<float> q, w_scale;  // 8-bit S only: q (OIHW) as floats, scales [Cout]
  std::vector<float> residual;    // [B, Ho, Wo, Cout] rounded through f16, or empty
  std::vector<uint16_t> r16;

  explicit ConvCase(const ConvSpec& spec)
      : s(spec), graph(spec.graph_dtype), epilogue(spec.epilogue) {
    out_h = (s.height + 2 * s.padding - s.kernel) / s.stride + 1;
    out_w = (s.width + 2 * s.padding - s.kernel) / s.stride + 1;
    const Shape xs{s.batch, s.height, s.width, s.cin};
    const Shape ws{s.cout, s.cin, s.kernel, s.kernel};
    held = s.wide ? DType::kF32 : DType::kF16;
    Tensor xf = random_tensor(xs, s.seed, s.scale);
    const size_t nx = static_cast<size_t>(xs.numel());
    x.resize(nx);
    if (s.wide) {
      x.assign(xf.as<float>(), xf.as<float>() + nx);
    } else {
      x16.resize(nx);
      convert_from_f32(xf.as<float>(), DType::kF16, x16.data(), nx);
      convert_to_f32(DType::kF16, x16.data(), x.data(), nx);
    }

    // Weights scaled so that outputs are O(1) whatever K is.
    const float wscale = 1.0f / std::sqrt(static_cast<float>(s.cin * s.kernel * s.kernel));
    Tensor wf = random_tensor(ws, s.seed + 1, wscale);
    w.resize(static_cast<size_t>(ws.numel()));
    if (s.weight == DType::kS8) {
      // One scale per output channel: rows of OIHW are [Cin·kh·kw].
      weights::QuantizedTensor qt = weights::quantize_per_row(wf.view());
      const int64_t per = ws.numel() / s.cout;
      for (int64_t o = 0; o < s.cout; ++o)
        for (int64_t i = 0; i < per; ++i)
          w[o * per + i] = qt.scale.as<float>()[o] * qt.q.as<int8_t>()[o * per + i];
      q.assign(qt.q.as<int8_t>(), qt.q.as<int8_t>() + ws.numel());
      w_scale.assign(qt.scale.as<float>(), qt.scale.as<float>() + s.cout);
      weights.add_quantized("w", std::move(qt.q), std::move(qt.scale));
    } else {
      Tensor stored(s.weight, ws);
      convert_from_f32(wf.as<float>(), s.weight, stored.data(), w.size());
      convert_to_f32(s.weight, stored.data(), w.data(), w.size());
      weights.add("w", std::move(stored));
    }
    const ir::ValueId xi = graph.add_input("x", s.graph_dtype, xs);
    const ir::ValueId wi = graph.add_weight("w", s.weight, ws);
    std::vector<ir::ValueId> ins{xi, wi};
    if (s.bias) {
      Tensor b = random_tensor(Shape{s.cout}, s.seed + 2, s.scale);
      bias.assign(b.as<float>(), b.as<float>() + s.cout);
      weights.add("b", std::move(b));
      ins.push_back(graph.add_weight("b", DType::kF32, Shape{s.cout}));
    }
    if (epilogue.residual) {
      const Shape rs{s.batch, out_h, out_w, s.cout};
      Tensor rf = random_tensor(rs, s.seed + 3, s.scale);
      const size_t nr = static_cast<size_t>(rs.numel());
      residual.resize(nr);
      if (s.wide) {
        residual.assign(rf.as<float>(), rf.as<float>() + nr);
      } else {
        r16.resize(nr);
        convert_from_f32(rf.as<float>(), DType::kF16, r16.data(), nr);
        convert_to_f32(DType::kF16, r16.data(), residual.data(), nr);
      }
      ins.push_back(graph.add_input("r", s.graph_dtype, rs));
      if (s.wide) graph.set_wide_range(ins.back());
    }
    if (s.wide) graph.set_wide_range(xi);
    const ir::ValueId y = graph.add_node(ir::OpKind::kConv2d, ins,
                                         ir::Conv2dAttrs{s.stride, s.padding, epilogue}, "conv");
    if (s.wide) graph.set_wide_range(y);
    graph.mark_output(y);
    graph.verify();
  }

  const ir::Node& node() const { return graph.nodes().back(); }
  int64_t out_elems() const { return s.batch * out_h * out_w * s.cout; }

  // Output element e (channel o) from its GEMM result acc (bias not yet added), in double:
  // + bias, the activation, + the residual — each unless `omit` names it.
  float finish(double acc, int64_t e, int64_t o, Omit omit) const {
    if (omit != Omit::kBias && !bias.empty()) acc += bias[static_cast<size_t>(o)];
    if (omit != Omit::kActivation) acc = activation_ref(acc, epilogue.activation);
    if (omit != Omit::kResidual && epilogue.residual) acc += residual[static_cast<size_t>(e)];
    return static_cast<float>(acc);
  }

  // Direct convolution in double, symmetric zero padding (PyTorch / oneDNN), then bias and the
  // fused epilogue (without the part `omit` names).
  std::vector<float> reference(Omit omit = Omit::kNothing) const {
    std::vector<float> y(static_cast<size_t>(out_elems()));
    const int64_t kk = s.kernel;
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t oh = 0; oh < out_h; ++oh)
        for (int64_t ow = 0; ow < out_w; ++ow)
          for (int64_t o = 0; o < s.cout; ++o) {
            double acc = 0.0;
            for (int64_t i = 0; i < kk; ++i) {
              const int64_t ih = oh * s.stride - s.padding + i;
              if (ih < 0 || ih >= s.height) continue;
              for (int64_t j = 0; j < kk; ++j) {
                const int64_t iw = ow * s.stride - s.padding + j;
                if (iw < 0 || iw >= s.width) continue;
                const float* xp = &x[((b * s.height + ih) * s.width + iw) * s.cin];
                for (int64_t c = 0; c < s.cin; ++c)
                  acc += static_cast<double>(xp[c]) * w[((o * s.cin + c) * kk + i) * kk + j];
              }
            }
            const int64_t e = ((b * out_h + oh) * out_w + ow) * s.cout + o;
            y[static_cast<size_t>(e)] = finish(acc, e, o, omit);
          }
    return y;
  }

  // W8A8 as specified: each im2col row (zero padding included) quantized by the kernels' rule
  // (cuda_kernels.h, launch_quantize_rows_s8), q·q accumulated exactly, scaled by row scale ·
  // weight scale, then bias and the epilogue as reference().
  std::vector<float> reference_w8a8(Omit omit = Omit::kNothing) const {
    std::vector<float> y(static_cast<size_t>(out_elems()));
    const int64_t kk = s.kernel, k = kk * kk * s.cin;
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t oh = 0; oh < out_h; ++oh)
        for (int64_t ow = 0; ow < out_w; ++ow) {
          float amax = 0.0f;
          for (int64_t i = 0; i < kk; ++i)
            for (int64_t j = 0; j < kk; ++j)
              for (int64_t c = 0; c < s.cin; ++c) {
                const int64_t ih = oh * s.stride - s.padding + i;
                const int64_t iw = ow * s.stride - s.padding + j;
                const bool in = ih >= 0 && ih < s.height && iw >= 0 && iw < s.width;
                const float v = in ? x[((b * s.height + ih) * s.width + iw) * s.cin + c] : 0.0f;
                row[static_cast<size_t>((i * kk + j) * s.cin + c)] = v;
                amax = std::max(amax, std::fabs(v));
              }
          const float inv = amax > 0 ? 127.0f / amax : 0.0f;
          const float row_scale = amax > 0 ? amax / 127.0f : 0.0f;
          for (float& v : row)
            v = std::nearbyint(std::clamp(v * inv, -127.0f, 127.0f));
          for (int64_t o = 0; o < s.cout; ++o) {
            double acc = 0;
            for (int64_t i = 0; i < kk; ++i)
              for (int64_t j = 0; j < kk; ++j)
                for (int64_t c = 0; c < s.cin; ++c)
                  acc += static_cast<double>(row[static_cast<size_t>((i * kk + j) * s.cin + c)]) *
                         q[static_cast<size_t>(((o * s.cin + c) * kk + i) * kk + j)];
            acc *= static_cast<double>(row_scale) * w_scale[static_cast<size_t>(o)];
            const int64_t e = ((b * out_h + oh) * out_w + ow) * s.cout + o;
            y[static_cast<size_t>(e)] = finish(acc, e, o, omit);
          }
        }
    return y;
  }
};

// Device copies of a case's input, fused residual and output; runs a candidate on the stream
// of `ctx`, the context the kernel was made on.
class DeviceRun {
 public:
  explicit DeviceRun(const ConvCase& c, CudaContext& ctx = *gpu().ctx)
      : c_(c),
        ctx_(ctx),
        x_(c.x.size() * dtype_size(c.held), "test x"),
        y_(static_cast<size_t>(c.out_elems()) * dtype_size(c.held), "test y") {
    const bool f32 = c.held == DType::kF32;
    const void* x_host = f32 ? static_cast<const void*>(c.x.data()) : c.x16.data();
    HYRT_CUDA_CHECK(
        cudaMemcpyAsync(x_.data(), x_host, x_.size(), cudaMemcpyHostToDevice, ctx.stream()));
    if (!c.residual.empty()) {
      const void* r_host = f32 ? static_cast<const void*>(c.residual.data()) : c.r16.data();
      r_ = DeviceBuffer(c.residual.size() * dtype_size(c.held), "test residual");
      HYRT_CUDA_CHECK(
          cudaMemcpyAsync(r_.data(), r_host, r_.size(), cudaMemcpyHostToDevice, ctx.stream()));
    }
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  }

  // The node's inputs bound as the executor binds them: x and the residual (activations,
  // f16) from device memory, the weights as the source's views (the kernel uses its uploaded
  // copies).
  std::vector<TensorView> inputs() const {
    const ConvCase& c = c_;
    const ir::Node& node = c.node();
    std::vector<TensorView> ins{
        TensorView{x_.data(), c.held, Shape{c.s.batch, c.s.height, c.s.width, c.s.cin}}};
    for (size_t i = 1; i < node.inputs.size(); ++i)
      ins.push_back(node.inputs[i] == node.gemm_residual()
                        ? residual()
                        : c.weights.get(c.graph.value(node.inputs[i]).name));
    return ins;
  }
  // The residual's device copy (data null without a fused residual).
  TensorView residual() const {
    return TensorView{r_.data(), c_.held, Shape{c_.s.batch, c_.out_h, c_.out_w, c_.s.cout}};
  }

  std::vector<float> run(CudaGemmKernel& kernel, std::optional<GemmCandidate> cand = {}) {
    return run_with(kernel, inputs(), cand);
  }

  // Poisons the output, runs candidate `cand` (or the kernel's own choice) with the inputs
  // bound as given, returns y as f32.
  std::vector<float> run_with(CudaGemmKernel& kernel, const std::vector<TensorView>& ins,
                              std::optional<GemmCandidate> cand = {}) {
    CudaContext& ctx = ctx_;
    HYRT_CUDA_CHECK(cudaMemsetAsync(y_.data(), 0xff, y_.size(), ctx.stream()));  // NaN
    const ConvCase& c = c_;
    const TensorView y{y_.data(), c.held, Shape{c.s.batch, c.out_h, c.out_w, c.s.cout}};
    if (cand)
      kernel.run_candidate(*cand, ins, y);
    else
      kernel.run(ins, y);
    std::vector<uint8_t> raw(y_.size());
    HYRT_CUDA_CHECK(
        cudaMemcpyAsync(raw.data(), y_.data(), y_.size(), cudaMemcpyDeviceToHost, ctx.stream()));
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
    std::vector<float> out(static_cast<size_t>(c.out_elems()));
    convert_to_f32(c.held, raw.data(), out.data(), out.size());
    return out;
  }

 private:
  const ConvCase& c_;
  CudaContext& ctx_;
  DeviceBuffer x_, y_, r_;
};

// Device memory of a context for check_bound_workspace (cuda_gemm_check.h), on its stream.
class ContextMemory {
 public:
  explicit ContextMemory(CudaContext& ctx) : ctx_(ctx) {}
  void* allocate(size_t bytes) {
    held_.emplace_back(bytes, "test workspace");
    return held_.back().data();
  }
  void fill(void* p, int value, size_t bytes) {
    HYRT_CUDA_CHECK(cudaMemsetAsync(p, value, bytes, ctx_.stream()));
  }
  std::vector<uint8_t> download(const void* p, size_t bytes) {
    std::vector<uint8_t> out(bytes);
    HYRT_CUDA_CHECK(cudaMemcpyAsync(out.data(), p, bytes, cudaMemcpyDeviceToHost, ctx_.stream()));
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
    return out;
  }
  size_t held() const { return ctx_.bytes_held(); }

 private:
  CudaContext& ctx_;
  std::vector<DeviceBuffer> held_;
};

// `options` must outlive the kernel (it keeps a reference).
std::unique_ptr<CudaGemmKernel> make(
    const ConvCase& c, backend::ProgramCache& cache, CudaContext& ctx = *gpu().ctx,
    const backend::cuda::CudaBackendOptions& options = kConvOptions) {
  EXPECT_TRUE(backend::cuda::supports_conv2d(c.graph, c.node()));
  return backend::cuda::make_conv2d_kernel(ctx, options, c.graph, c.node(), c.weights, cache);
}

void check_conv(const ConvSpec& spec) {
  SCOPED_TRACE(describe(spec));
  const ConvCase c(spec);
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> kernel = make(c, cache);
  ASSERT_NE(kernel, nullptr);
  DeviceRun run(c);
  check_gemm_candidates(*kernel, run, c, spec.weight == DType::kS8);
}

// --- SD 1.5 shapes (smaller latents: the reference is a direct convolution on the host) ---

TEST(CudaConv,
     Sd3x3Stride1) {  // resnet conv, 320 ch, 16x16, B=2: M=512 N=320 K=2880
  REQUIRE_GPU();
  check_conv({.height = 16, .width = 16, .cin = 320, .cout = 320, .seed = 11});
}

// SDXL's deepest resnet conv: 1280 channels, 3x3 (K = 11520), at 8x8, B=2.
TEST(CudaConv, Sdxl3x3At1280Channels) {
  REQUIRE_GPU();
  check_conv({.height = 8, .width = 8, .cin = 1280, .cout = 1280, .seed = 13});
}

TEST(CudaConv, Sd3x3Stride2Downsampler) {  // 32x32x320 -> 16x16x320
  REQUIRE_GPU();
  check_conv({.height = 32, .width = 32, .cin = 320, .cout = 320, .stride = 2, .seed = 12});
}

TEST(CudaConv, Sd1x1ShortcutIsALinear) {  // 640 -> 320, 8x8
  REQUIRE_GPU();
  check_conv({.cin = 640, .cout = 320, .kernel = 1, .padding = 0, .seed = 13});
}

TEST(CudaConv,
     ConvInFourChannels) {  // conv_in: 4 -> 320, K = 36 (scalar im2col)
  REQUIRE_GPU();
  check_conv({.height = 16, .width = 16, .cin = 4, .cout = 320, .seed = 14});
}

TEST(CudaConv,
     VaeQuantConv1x1F16) {  // post_quant_conv: 4 -> 4, f16-stored weights
  REQUIRE_GPU();
  check_conv({.batch = 1,
              .cin = 4,
              .cout = 4,
              .kernel = 1,
              .padding = 0,
              .weight = DType::kF16,
              .graph_dtype = DType::kF16,
              .seed = 15});
}

// --- odd sizes ---

TEST(CudaConv,
     ThreeChannelsOddSizes) {  // Cin=3 (K=27 -> K4=28), Cout=13 (N4=16), 7x9
  REQUIRE_GPU();
  check_conv(
      {.batch = 1, .height = 7, .width = 9, .cin = 3, .cout = 13, .bias = false, .seed = 16});
  check_conv({.batch = 3,
              .height = 9,
              .width = 7,
              .cin = 3,
              .cout = 5,
              .weight = DType::kF16,
              .seed = 17});
}

TEST(CudaConv,
     Stride2OddInput) {  // 9x7, Cin=8 (vector im2col), pad 1 -> 5x4; f32 weights
  REQUIRE_GPU();
  check_conv({.height = 9,
              .width = 7,
              .cin = 8,
              .cout = 16,
              .stride = 2,
              .weight = DType::kF32,
              .seed = 18});
  check_conv({.height = 9, .width = 7, .cin = 16, .cout = 24, .stride = 2, .seed = 19});
}

TEST(CudaConv,
     NoPaddingAndStridedPointwise) {  // 3x3 p0, and a 1x1 s2 (im2col, not linear)
  REQUIRE_GPU();
  check_conv({.height = 6, .width = 5, .cin = 24, .cout = 8, .padding = 0, .seed = 20});
  check_conv({.height = 7,
              .width = 7,
              .cin = 16,
              .cout = 8,
              .kernel = 1,
              .stride = 2,
              .padding = 0,
              .weight = DType::kBF16,
              .seed = 21});
}

// The implicit-GEMM W8A8 conv (gemm_s8_fused.h, launch_implicit_s8_conv), which a kernel made
// under $HYRT_CUDA_CONV_IMPLICIT=2 runs wherever the kernel takes the shape (the default, 1,
// only after a group norm and from about a wave of tiles; these convs read a graph input): it
// quantizes the input per image (coarser than the im2col form's per-row scales), so it is held to
// W8A8's tolerance against the double reference, with its fused residual and bias each showing (the
// references without them missed by 10x). That the implicit form ran, not the im2col one: the
// W8A8 staging is the documented implicit layout — the quantized input and the row scales plus
// one absmax per image — rather than im2col rows; bound to a workspace it gives the same bits
// and writes nothing outside it.
TEST(CudaConv, ImplicitW8A8UnderTheKnob) {
  REQUIRE_GPU();
  const backend::cuda::CudaDeviceInfo& dev = gpu().ctx->device();
  if (!backend::cuda::fused_s8_gemm_available(dev.compute_major, dev.compute_minor))
    GTEST_SKIP() << "the fused W8A8 kernels are not built or " << dev.name << " cannot run them";
  const ScopedEnv knob("HYRT_CUDA_CONV_IMPLICIT", "2");
  const backend::cuda::CudaBackendOptions options{
      .gemm = GemmPolicy::kW8A8, .tune_algos = 4, .tune_reps = 3, .autotune = true};
  ir::GemmEpilogue residual;
  residual.residual = true;
  const ConvSpec specs[] = {
      {.height = 16, .width = 16, .cin = 320, .cout = 320, .epilogue = residual, .seed = 31},
      {.height = 13, .width = 11, .cin = 128, .cout = 136, .bias = false, .seed = 32},
      {.batch = 3, .height = 17, .width = 17, .cin = 64, .cout = 64, .stride = 2, .seed = 33},
  };
  const auto a256 = [](int64_t bytes) { return (static_cast<size_t>(bytes) + 255) / 256 * 256; };
  for (const ConvSpec& spec : specs) {
    SCOPED_TRACE(describe(spec));
    const ConvCase c(spec);
    backend::ProgramCache cache;
    std::unique_ptr<CudaGemmKernel> kernel = make(c, cache, *gpu().ctx, options);
    ASSERT_NE(kernel, nullptr);
    ASSERT_EQ(kernel->candidate(), GemmCandidate::kW8A8);
    const int64_t rows = spec.batch * c.out_h * c.out_w;
    EXPECT_EQ(kernel->workspace_bytes(), a256(spec.batch * spec.height * spec.width * spec.cin) +
                                             a256((rows + spec.batch) * 4) + 192)
        << "not the implicit form's staging";
    DeviceRun run(c);
    const std::vector<float> y = run.run(*kernel);
    const double err = rel(y, c.reference());
    EXPECT_LE(err, kW8A8Tolerance);
    if (spec.bias) EXPECT_GT(rel(y, c.reference(Omit::kBias)), 10 * err) << "bias left out";
    if (spec.epilogue.residual)
      EXPECT_GT(rel(y, c.reference(Omit::kResidual)), 10 * err) << "residual left out";
    // In a workspace bound the executor's way (64-byte aligned, poisoned, guarded): the same
    // bits, nothing written outside it.
    ContextMemory mem(*gpu().ctx);
    const size_t ws = kernel->workspace_bytes(), total = 64 + ws + 256;
    auto* base = static_cast<uint8_t*>(mem.allocate(total));
    mem.fill(base, 0xff, total);
    kernel->bind_workspace(base + 64);
    EXPECT_EQ(run.run(*kernel), y) << "a bound workspace changed the result";
    kernel->bind_workspace(nullptr);
    expect_only_range_written(mem.download(base, total), 64, ws);
    std::printf("[ cuda     ] implicit conv %s: rel L2 %.2e (per-row form's bound %.0e)\n",
                describe(spec).c_str(), err, kW8A8Tolerance);
  }
}

TEST(CudaConv, ProgramsSharedPerKeyAndGeometry) {
  REQUIRE_GPU();
  backend::ProgramCache cache;
  const ConvCase a({.height = 8, .width = 8, .cin = 16, .cout = 32, .seed = 31});
  const ConvCase b({.height = 8, .width = 8, .cin = 16, .cout = 32, .seed = 32});  // same key
  // Same M (2·4·4 = 2·8·8 / 4), N and K, another geometry: its own program.
  const ConvCase d(
      {.batch = 8, .height = 8, .width = 8, .cin = 16, .cout = 32, .stride = 2, .seed = 33});
  auto ka = make(a, cache);
  auto kb = make(b, cache);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(&ka->tuning(), &kb->tuning());
  auto kd = make(d, cache);
  EXPECT_EQ(cache.misses(), 2u);
  EXPECT_EQ(kd->tuning().key, ka->tuning().key);
  DeviceRun run(d);
  EXPECT_LE(rel(run.run(*kd, GemmCandidate::kF16), d.reference()), kF16Tolerance);
  std::printf("[ cuda     ] %s\n", ka->tuning().to_string().c_str());
}

TEST(CudaConv, BadBindingIsRejected) {
  REQUIRE_GPU();
  backend::ProgramCache cache;
  const ConvCase c({.cin = 8, .cout = 8, .seed = 41});
  auto k = make(c, cache);
  DeviceBuffer x(c.x16.size() * 2, "x"), y(static_cast<size_t>(c.out_elems()) * 4, "y");
  const std::vector<TensorView> ins{TensorView{x.data(), DType::kF32, Shape{2, 8, 8, 8}}};
  EXPECT_THROW(k->run(ins, TensorView{y.data(), DType::kF32, Shape{2, 8, 8, 8}}), Error);
}

// --- row chunks ---

GemmChunking chunks_of(const ConvCase& c, GemmCandidate cand) {
  const backend::GemmKey key = backend::cuda::conv2d_gemm_key(c.graph, c.node());
  return backend::cuda::gemm_chunking(key, cand, backend::cuda::gemm_staging_budget(),
                                      fused_s8_here(key));
}

// check_conv on a kernel made under `budget`, which must split M into at least
// `min_full_chunks` full chunks and a shorter last one for each candidate that stages rows;
// with 8-bit S weights, W8A8 in chunks must also equal W8A8 in one piece (a kernel made under
// the default budget, which these sizes fit) bit for bit: integer GEMM, per-row quantization.
void check_conv_in_chunks(const ConvSpec& spec, size_t budget, int64_t min_full_chunks) {
  SCOPED_TRACE(describe(spec));
  const ConvCase c(spec);
  const bool s8 = spec.weight == DType::kS8;
  const backend::GemmKey key = backend::cuda::conv2d_gemm_key(c.graph, c.node());
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> whole = make(c, cache);
  ASSERT_NE(whole, nullptr);
  EXPECT_FALSE(chunks_of(c, GemmCandidate::kF16).chunked());
  EXPECT_FALSE(chunks_of(c, GemmCandidate::kW8A8).chunked());
  std::unique_ptr<CudaGemmKernel> chunked;
  {
    const ScopedGemmStagingBudget scoped(budget);
    int chunked_candidates = 0;
    for (GemmCandidate cand : {GemmCandidate::kF16, GemmCandidate::kW8A8}) {
      if (backend::cuda::gemm_staging_bytes_per_row(key, cand) == 0) continue;
      const GemmChunking ch = chunks_of(c, cand);
      EXPECT_GE(ch.count - 1, min_full_chunks) << backend::cuda::candidate_name(cand);
      EXPECT_LT(ch.tail_rows, ch.rows) << backend::cuda::candidate_name(cand);
      ++chunked_candidates;
    }
    EXPECT_GE(chunked_candidates, 1);
    chunked = make(c, cache);
  }
  ASSERT_NE(chunked, nullptr);
  EXPECT_EQ(cache.misses(), 2u) << "a chunked program is an entry of its own";
  DeviceRun run(c);
  check_gemm_candidates(*chunked, run, c, s8);
  if (s8) {
    EXPECT_EQ(run.run(*chunked, GemmCandidate::kW8A8), run.run(*whole, GemmCandidate::kW8A8))
        << "W8A8 in chunks differs from W8A8 in one piece";
  }
}

// 3x3 stride 1, 320 channels, 15x15, B=2: M = 450 (K = 2880). A budget of 128 im2col rows:
// f16 (5760 bytes a row) and W8A8 (4164) both run 3 x 128 rows + 66.
TEST(CudaConv, RowChunks3x3Stride1) {
  REQUIRE_GPU();
  // M = 450, K = 2880: the f16 im2col (5760 bytes a row) and W8A8 unfused (4164) run in 64-row
  // chunks, W8A8 fused (2884: no s32 result) in 128-row ones — each at least 3 full chunks.
  check_conv_in_chunks({.height = 15, .width = 15, .cin = 320, .cout = 320, .seed = 61},
                       size_t{500000}, 3);
}

// Stride 2 with padding 1, one-block chunks (64 rows: the budget is 1 byte).
TEST(CudaConv, RowChunksStride2Padded) {
  REQUIRE_GPU();
  // 29x29x64 -> 15x15x96, B=2: M = 450 = 7 x 64 + 2.
  check_conv_in_chunks({.height = 29, .width = 29, .cin = 64, .cout = 96, .stride = 2, .seed = 62},
                       1, 7);
  // Cin = 3 (scalar im2col, K = 27 -> K4 = 28), Cout = 13 (N4 = 16), 21x19 -> 11x10, B=3:
  // M = 330 = 5 x 64 + 10, chunks crossing the images' boundaries (110 rows each).
  check_conv_in_chunks(
      {.batch = 3, .height = 21, .width = 19, .cin = 3, .cout = 13, .stride = 2, .seed = 63}, 1, 5);
  // f32-stored weights (f16 candidate only): 17x17x8 -> 9x9x16, B=4: M = 324 = 5 x 64 + 4.
  check_conv_in_chunks({.batch = 4,
                        .height = 17,
                        .width = 17,
                        .cin = 8,
                        .cout = 16,
                        .stride = 2,
                        .weight = DType::kF32,
                        .seed = 64},
                       1, 5);
}

// A 1x1 conv is the linear: W8A8 chunks its quantized rows (f16 reads x in place).
TEST(CudaConv, RowChunksPointwiseW8A8) {
  REQUIRE_GPU();
  // 10x10x640 -> 320, B=3: M = 300 = 4 x 64 + 44.
  check_conv_in_chunks({.batch = 3,
                        .height = 10,
                        .width = 10,
                        .cin = 640,
                        .cout = 320,
                        .kernel = 1,
                        .padding = 0,
                        .seed = 65},
                       1, 4);
}

// The workspace a large conv asks for (Kernel::workspace_bytes: its chosen candidate's staging
// of one chunk) is bounded by the default staging budget, not by M: a 960-channel 3x3 conv at a
// 64x64 latent, batch 2 (M = 8192, K = 8640, N = 320), prepared for each candidate on a backend
// of its own. Preparing reserves nothing: the backend's scratch is its cuBLASLt workspace
// alone. Untimed: preparing needs shapes and weights only; nothing runs.
TEST(CudaConv, LargeConvScratchStaysWithinBudget) {
  REQUIRE_GPU();
  ASSERT_EQ(backend::cuda::gemm_staging_budget(), backend::cuda::kGemmStagingBudget);
  const ConvCase c({.height = 64, .width = 64, .cin = 960, .cout = 320, .seed = 71});
  const backend::GemmKey key = backend::cuda::conv2d_gemm_key(c.graph, c.node());
  ASSERT_EQ(key.m, 8192);
  ASSERT_EQ(key.k, 8640);
  const size_t lt_workspace = backend::cuda::CudaBackendOptions{}.workspace_bytes;
  const size_t weight_f16 = static_cast<size_t>(key.n * key.k * 2);  // kWeightWide
  const size_t slack = backend::cuda::kWorkspaceSlack;               // 192
  for (GemmPolicy policy : {GemmPolicy::kF16, GemmPolicy::kW8A8}) {
    const GemmCandidate cand =
        policy == GemmPolicy::kF16 ? GemmCandidate::kF16 : GemmCandidate::kW8A8;
    SCOPED_TRACE(backend::cuda::candidate_name(cand));
    std::unique_ptr<backend::cuda::CudaBackend> b =
        backend::cuda::make_cuda_backend({.gemm = policy});
    backend::ProgramCache cache;
    ASSERT_TRUE(b->supports(c.graph, c.node()));
    std::unique_ptr<backend::Kernel> k = b->prepare(c.graph, c.node(), c.weights, cache);
    ASSERT_NE(k, nullptr);
    EXPECT_EQ(b->scratch_bytes(), lt_workspace) << "preparing reserved scratch";
    const size_t ws = k->workspace_bytes();
    const size_t per_row = backend::cuda::gemm_staging_bytes_per_row(key, cand, fused_s8_here(key));
    const size_t whole = static_cast<size_t>(key.m) * per_row;  // M rows staged at once
    const size_t weights = cand == GemmCandidate::kF16 ? weight_f16 : 0;
    EXPECT_LE(ws, backend::cuda::kGemmStagingBudget + weights + slack);
    EXPECT_LT(ws, whole + weights);
    const GemmChunking ch = chunks_of(c, cand);
    EXPECT_GT(ch.count, 1);
    // Rows per chunk are a multiple of 64 and K, N multiples of 4 here, so every buffer is a
    // whole number of 256-byte blocks: no rounding between them, only the slack.
    EXPECT_EQ(ws, ch.staging_bytes + weights + slack);
    EXPECT_EQ(ws, documented_workspace_bytes(key, cand, ch));
    std::printf(
        "[ cuda     ] %s: workspace %.1f MiB (%lld chunks of %lld rows) vs %.1f MiB in one "
        "piece\n",
        backend::cuda::candidate_name(cand), static_cast<double>(ws) / (1 << 20),
        static_cast<long long>(ch.count), static_cast<long long>(ch.rows),
        static_cast<double>(whole + weights) / (1 << 20));
  }
}

// --- a bound workspace (Kernel::bind_workspace) ---

// The conv of `spec` prepared with candidate `cand` forced (under staging budget `budget` when
// given: row chunks) on a context of its own, so that its scratch is exactly the cuBLASLt
// workspace until a run without a workspace grows it: preparing must reserve nothing,
// workspace_bytes() must be the documented layout's, check_bound_workspace must hold, and
// then an unbound run falls back to (and grows) the context's slots with the same result.
void check_conv_workspace(const ConvSpec& spec, GemmCandidate cand,
                          std::optional<size_t> budget = {}) {
  SCOPED_TRACE(describe(spec) + " " + backend::cuda::candidate_name(cand) +
               (budget ? str_cat(" budget ", *budget) : std::string()));
  const ConvCase c(spec);
  const backend::GemmKey key = backend::cuda::conv2d_gemm_key(c.graph, c.node());
  CudaContext ctx(gpu().ctx->device(), backend::cuda::CudaBackendOptions{}.workspace_bytes);
  backend::cuda::CudaBackendOptions options = kConvOptions;
  options.gemm = cand == GemmCandidate::kF16 ? GemmPolicy::kF16 : GemmPolicy::kW8A8;
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> kernel;
  GemmChunking ch;
  {
    std::optional<ScopedGemmStagingBudget> scoped;
    if (budget) scoped.emplace(*budget);
    kernel = make(c, cache, ctx, options);  // tuned: both candidates run at prepare
    ch = chunks_of(c, cand);
  }
  ASSERT_NE(kernel, nullptr);
  ASSERT_EQ(kernel->candidate(), cand);
  if (budget) {
    EXPECT_TRUE(ch.chunked());
    EXPECT_LT(ch.tail_rows, ch.rows);
  }
  EXPECT_EQ(ctx.bytes_held(), ctx.workspace_bytes()) << "preparing reserved scratch";
  EXPECT_EQ(kernel->workspace_bytes(), documented_workspace_bytes(key, cand, ch));

  DeviceRun run(c, ctx);
  ContextMemory mem(ctx);
  check_bound_workspace(*kernel, run, c, mem);
  EXPECT_EQ(ctx.bytes_held(), ctx.workspace_bytes());

  // Unbound (tests, benchmarks): the first run grows the context's slots.
  EXPECT_LE(rel(run.run(*kernel), c.reference()),
            cand == GemmCandidate::kF16 ? kF16Tolerance : kW8A8Tolerance);
  EXPECT_GT(ctx.bytes_held(), ctx.workspace_bytes());
}

// 3x3, M = 512 in one chunk: f16 stages the widened weights and the im2col matrix, W8A8 its
// three buffers.
TEST(CudaConv, BoundWorkspace3x3) {
  REQUIRE_GPU();
  const ConvSpec spec{.height = 16, .width = 16, .cin = 64, .cout = 96, .seed = 81};
  check_conv_workspace(spec, GemmCandidate::kF16);
  check_conv_workspace(spec, GemmCandidate::kW8A8);
}

// Buffers that are not whole 256-byte blocks (M = 63, K = 27 -> K4 = 28, N = 13 -> N4 = 16):
// every offset after the first is rounded up. f32-stored weights: f16 stages the im2col
// matrix alone.
TEST(CudaConv, BoundWorkspaceOddSizes) {
  REQUIRE_GPU();
  const ConvSpec spec{.batch = 1, .height = 7, .width = 9, .cin = 3, .cout = 13, .seed = 82};
  check_conv_workspace(spec, GemmCandidate::kF16);
  check_conv_workspace(spec, GemmCandidate::kW8A8);
  check_conv_workspace(
      {.height = 9, .width = 7, .cin = 8, .cout = 16, .weight = DType::kF32, .seed = 83},
      GemmCandidate::kF16);
}

// Row chunks: 15x15x32 -> 48, B = 2, M = 450 = 7 x 64 + 2 under a 1-byte budget; every chunk
// reuses the one chunk's buffers in the workspace.
TEST(CudaConv, BoundWorkspaceInRowChunks) {
  REQUIRE_GPU();
  const ConvSpec spec{.height = 15, .width = 15, .cin = 32, .cout = 48, .seed = 84};
  check_conv_workspace(spec, GemmCandidate::kF16, 1);
  check_conv_workspace(spec, GemmCandidate::kW8A8, 1);
}

// --- wide-range activations: f32 on the device, TF32 operands (the SDXL VAE's) ---

// Values far beyond f16's ±65504 (x, bias and residual scaled by 4e5): both candidates right,
// the vector and scalar im2col paths (Cin 64 / 3), stride 2, f16-stored weights, row chunks,
// a bound workspace and a fused residual with SiLU.
constexpr float kBeyondF16 = 4e5f;

TEST(CudaConv, WideRangeRunsInF32) {
  REQUIRE_GPU();
  check_conv({.height = 16,
              .width = 16,
              .cin = 64,
              .cout = 32,
              .seed = 91,
              .wide = true,
              .scale = kBeyondF16});
  check_conv({.batch = 1,
              .height = 9,
              .width = 7,
              .cin = 3,
              .cout = 13,
              .stride = 2,
              .seed = 92,
              .wide = true,
              .scale = kBeyondF16});
  check_conv({.height = 8,
              .width = 8,
              .cin = 32,
              .cout = 16,
              .kernel = 1,
              .padding = 0,
              .weight = DType::kF16,
              .seed = 93,
              .wide = true,
              .scale = kBeyondF16});
  check_conv({.height = 8,
              .width = 8,
              .cin = 16,
              .cout = 16,
              .weight = DType::kF32,
              .epilogue = {ir::Activation::kSilu, true},
              .seed = 94,
              .wide = true,
              .scale = kBeyondF16});
}

// Convs with few output channels computed directly (launch_conv_narrow: conv_out, 320 -> 4),
// which a kernel runs for its float candidate by default: held to the
// f16 candidate's tolerance against the double reference, with bias, a fused residual and an
// activation each showing where present (references without them missed by 10x), on the vector
// path (C a multiple of 8 f16 / 4 f32) and the scalar one, f16 and wide-range f32 activations,
// stride 2 and odd sizes; that the narrow form ran: nothing staged (no im2col rows), and that
// $HYRT_CUDA_CONV_NARROW=0 stages them again.
TEST(CudaConv, NarrowConvByDefault) {
  REQUIRE_GPU();
  {
    const ScopedEnv off("HYRT_CUDA_CONV_NARROW", "0");
    const ConvCase c({.height = 16, .width = 16, .cin = 320, .cout = 4, .weight = DType::kF16});
    backend::ProgramCache cache;
    std::unique_ptr<CudaGemmKernel> kernel = make(c, cache);
    ASSERT_NE(kernel, nullptr);
    EXPECT_GT(kernel->workspace_bytes(), 0u) << "HYRT_CUDA_CONV_NARROW=0: im2col rows staged";
  }
  const ScopedEnv knob("HYRT_CUDA_CONV_NARROW", nullptr);
  ir::GemmEpilogue residual;
  residual.residual = true;
  const ConvSpec specs[] = {
      {.height = 16, .width = 16, .cin = 320, .cout = 4, .weight = DType::kF16, .seed = 101},
      {.batch = 1,
       .height = 13,
       .width = 11,
       .cin = 64,
       .cout = 3,
       .stride = 2,
       .weight = DType::kF16,
       .epilogue = residual,
       .seed = 102},
      {.height = 9,
       .width = 7,
       .cin = 12,
       .cout = 8,
       .bias = false,
       .weight = DType::kF16,
       .epilogue = {ir::Activation::kSilu, true},
       .seed = 103},
      {.batch = 1,
       .height = 8,
       .width = 8,
       .cin = 32,
       .cout = 3,
       .weight = DType::kF32,
       .seed = 104,
       .wide = true,
       .scale = kBeyondF16},
  };
  for (const ConvSpec& spec : specs) {
    SCOPED_TRACE(describe(spec));
    const ConvCase c(spec);
    backend::ProgramCache cache;
    std::unique_ptr<CudaGemmKernel> kernel = make(c, cache);
    ASSERT_NE(kernel, nullptr);
    ASSERT_EQ(kernel->candidate(), GemmCandidate::kF16);
    EXPECT_EQ(kernel->workspace_bytes(), 0u) << "staged: not the narrow form";
    DeviceRun run(c);
    const std::vector<float> y = run.run(*kernel);
    const double err = rel(y, c.reference());
    EXPECT_LE(err, kF16Tolerance);
    const double floor = std::max(err, 1e-4);
    if (spec.bias) EXPECT_GT(rel(y, c.reference(Omit::kBias)), 10 * floor) << "bias left out";
    for (Omit part : epilogue_parts(spec.epilogue))
      EXPECT_GT(rel(y, c.reference(part)), 10 * floor) << omit_name(part) << " left out";
    std::printf("[ cuda     ] narrow conv %s: rel L2 %.2e\n", describe(spec).c_str(), err);
  }
}

TEST(CudaConv, WideRangeInRowChunksAndBoundWorkspace) {
  REQUIRE_GPU();
  const ConvSpec spec{.height = 15,
                      .width = 15,
                      .cin = 32,
                      .cout = 48,
                      .seed = 95,
                      .wide = true,
                      .scale = kBeyondF16};
  check_conv_in_chunks(spec, 1, 7);
  check_conv_workspace(spec, GemmCandidate::kF16);
  check_conv_workspace(spec, GemmCandidate::kW8A8, 1);
}

// --- fused epilogues (ir::GemmEpilogue: y = act(conv(x, w) + bias) + residual) ---

constexpr ir::GemmEpilogue kResidual{.residual = true};
constexpr ir::Activation kSilu = ir::Activation::kSilu;
constexpr ir::Activation kGelu = ir::Activation::kGelu;
constexpr ir::Activation kQuickGelu = ir::Activation::kQuickGelu;

// A resnet block's conv2 + its skip connection: 3x3, 64 -> 64 channels, 16x16, B = 2 (M = 512,
// K = 576), bias and residual; the same with f16-stored weights (the f16 candidate only) in an
// f16 graph.
TEST(CudaConv, FusedResidual3x3) {
  REQUIRE_GPU();
  check_conv({.height = 16, .width = 16, .cin = 64, .cout = 64, .epilogue = kResidual, .seed = 91});
  check_conv({.height = 16,
              .width = 16,
              .cin = 64,
              .cout = 64,
              .weight = DType::kF16,
              .graph_dtype = DType::kF16,
              .epilogue = kResidual,
              .seed = 92});
}

// Transformer2D's proj_out as a 1x1 conv (the linear path, no im2col) + the block's input:
// 320 -> 320, 16x16, B = 2; and Cout = 13 without a bias (W8A8's unvectorised epilogue,
// cuBLASLt's beta·C on an odd N).
TEST(CudaConv, FusedResidualPointwise) {
  REQUIRE_GPU();
  check_conv({.height = 16,
              .width = 16,
              .cin = 320,
              .cout = 320,
              .kernel = 1,
              .padding = 0,
              .epilogue = kResidual,
              .seed = 93});
  check_conv({.batch = 1,
              .height = 7,
              .width = 9,
              .cin = 24,
              .cout = 13,
              .kernel = 1,
              .padding = 0,
              .bias = false,
              .epilogue = kResidual,
              .seed = 94});
}

// Activations: SiLU after a 3x3 conv (the im2col path), GELU + residual after a stride-2 conv,
// QuickGELU + residual after a 1x1 conv with Cout = 13 (the f16 epilogue pass's tail).
TEST(CudaConv, FusedActivation) {
  REQUIRE_GPU();
  check_conv({.height = 8,
              .width = 8,
              .cin = 32,
              .cout = 48,
              .epilogue = {.activation = kSilu},
              .seed = 95});
  check_conv({.height = 9,
              .width = 7,
              .cin = 16,
              .cout = 24,
              .stride = 2,
              .epilogue = {.activation = kGelu, .residual = true},
              .seed = 96});
  check_conv({.batch = 1,
              .height = 7,
              .width = 9,
              .cin = 24,
              .cout = 13,
              .kernel = 1,
              .padding = 0,
              .epilogue = {.activation = kQuickGelu, .residual = true},
              .seed = 97});
}

// Row chunks with a fused epilogue, each chunk adding its own rows of the residual: a 3x3 conv
// chunks both candidates (f16 its im2col rows, W8A8 its quantized rows). 15x15x32 -> 48,
// B = 2: M = 450 = 7 x 64 + 2 under a 1-byte budget, the residual alone (cuBLASLt's beta·C per
// chunk) and after SiLU (the f16 candidate's epilogue pass per chunk); Cin = 3 -> Cout = 13
// stride 2 with GELU + residual, B = 3: M = 330 = 5 x 64 + 10, chunks crossing the images;
// a 1x1 conv, where only W8A8 chunks. W8A8 in chunks equals W8A8 in one piece bit for bit
// (check_conv_in_chunks), and both candidates, chunked, stage in a bound workspace.
TEST(CudaConv, RowChunksFusedResidual) {
  REQUIRE_GPU();
  check_conv_in_chunks(
      {.height = 15, .width = 15, .cin = 32, .cout = 48, .epilogue = kResidual, .seed = 98}, 1, 7);
  const ConvSpec silu{.height = 15,
                      .width = 15,
                      .cin = 32,
                      .cout = 48,
                      .epilogue = {.activation = kSilu, .residual = true},
                      .seed = 99};
  check_conv_in_chunks(silu, 1, 7);
  check_conv_in_chunks({.batch = 3,
                        .height = 21,
                        .width = 19,
                        .cin = 3,
                        .cout = 13,
                        .stride = 2,
                        .epilogue = {.activation = kGelu, .residual = true},
                        .seed = 100},
                       1, 5);
  check_conv_in_chunks({.batch = 3,
                        .height = 10,
                        .width = 10,
                        .cin = 64,
                        .cout = 32,
                        .kernel = 1,
                        .padding = 0,
                        .epilogue = kResidual,
                        .seed = 101},
                       1, 4);
  check_conv_workspace(silu, GemmCandidate::kF16, 1);
  check_conv_workspace(silu, GemmCandidate::kW8A8, 1);
}

// The fused checks can fail: the same conv unfused (what a kernel that dropped its epilogue
// computes) misses the fused references by more than 10x the tolerance, for either candidate,
// as do the references without the residual or the activation. A residual bound wrongly is
// refused before anything runs (kInvalidArgument): not bound, one pixel short, f32.
TEST(CudaConv, FusedEpilogueIsChecked) {
  REQUIRE_GPU();
  const ConvSpec spec{
      .cin = 16, .cout = 16, .epilogue = {.activation = kSilu, .residual = true}, .seed = 102};
  ConvSpec plain_spec = spec;
  plain_spec.epilogue = {};
  const ConvCase c(spec), plain(plain_spec);
  ASSERT_EQ(c.x, plain.x);
  ASSERT_EQ(c.w, plain.w);
  ASSERT_EQ(c.bias, plain.bias);
  backend::ProgramCache cache;
  std::unique_ptr<CudaGemmKernel> fused = make(c, cache);
  std::unique_ptr<CudaGemmKernel> unfused = make(plain, cache);
  ASSERT_NE(fused, nullptr);
  ASSERT_NE(unfused, nullptr);
  EXPECT_EQ(cache.misses(), 1u) << "a fused node shares the plain GEMM's program "
                                   "(gemm_program_key)";
  DeviceRun run(c), plain_run(plain);
  for (GemmCandidate cand : {GemmCandidate::kF16, GemmCandidate::kW8A8})
    check_epilogue_shows(*fused, run, c, *unfused, plain_run, plain, cand, c.s.cout);
}

// --- host-only: keys and support (no GPU needed) ---

ir::Graph one_conv(Shape xs, Shape ws, int stride, int padding, DType x_dtype = DType::kF32,
                   DType w_dtype = DType::kS8) {
  ir::Graph g(x_dtype);
  const ir::ValueId x = g.add_input("x", x_dtype, xs);
  const ir::ValueId w = g.add_weight("w", w_dtype, ws);
  g.mark_output(g.add_node(ir::OpKind::kConv2d, {x, w}, ir::Conv2dAttrs{stride, padding, {}}, "c"));
  return g;
}

TEST(CudaConvKey, PointwiseEqualsLinearIm2colDoesNot) {
  // 1x1 s1 p0 over [2, 8, 8, 640] is the linear [128, 640] -> 320 with f16 activations.
  const ir::Graph c1 = one_conv(Shape{2, 8, 8, 640}, Shape{320, 640, 1, 1}, 1, 0);
  ir::Graph lin(DType::kF16);
  const ir::ValueId x = lin.add_input("x", DType::kF16, Shape{128, 640});
  const ir::ValueId w = lin.add_weight("w", DType::kS8, Shape{320, 640});
  lin.mark_output(lin.add_node(ir::OpKind::kLinear, {x, w}, {}, "l"));
  const backend::GemmKey k1 = backend::cuda::conv2d_gemm_key(c1, c1.nodes()[0]);
  EXPECT_EQ(k1, backend::cuda::linear_gemm_key(lin, lin.nodes()[0])) << k1.to_string();
  EXPECT_EQ(k1.a_type, DType::kF16);  // the graph says f32; the device holds f16

  // 3x3 s1 p1 over [2, 16, 16, 320]: M = 512, N = 320, K = 2880, not the linear's key.
  const ir::Graph c3 = one_conv(Shape{2, 16, 16, 320}, Shape{320, 320, 3, 3}, 1, 1);
  const backend::GemmKey k3 = backend::cuda::conv2d_gemm_key(c3, c3.nodes()[0]);
  EXPECT_EQ(k3.m, 512);
  EXPECT_EQ(k3.n, 320);
  EXPECT_EQ(k3.k, 2880);
  backend::GemmKey as_linear = k3;
  as_linear.epilogue = 0;
  EXPECT_NE(k3, as_linear);
  // Stride 2 downsampler: 64x64 -> 32x32.
  const ir::Graph c2 = one_conv(Shape{2, 64, 64, 320}, Shape{320, 320, 3, 3}, 2, 1);
  EXPECT_EQ(backend::cuda::conv2d_gemm_key(c2, c2.nodes()[0]).m, 2 * 32 * 32);
}

TEST(CudaConvKey, Supports) {
  const ir::Graph ok =
      one_conv(Shape{1, 5, 5, 3}, Shape{4, 3, 3, 3}, 2, 1, DType::kF32, DType::kBF16);
  EXPECT_TRUE(backend::cuda::supports_conv2d(ok, ok.nodes()[0]));
  const ir::Graph s32 =
      one_conv(Shape{1, 5, 5, 3}, Shape{4, 3, 3, 3}, 1, 1, DType::kF32, DType::kS32);
  EXPECT_FALSE(backend::cuda::supports_conv2d(s32, s32.nodes()[0]));
  // A weight computed at run time (not a graph weight) is not a GEMM program's operand.
  ir::Graph g(DType::kF32);
  const ir::ValueId x = g.add_input("x", DType::kF32, Shape{1, 4, 4, 2});
  const ir::ValueId w = g.add_input("w", DType::kF32, Shape{2, 2, 1, 1});
  g.mark_output(g.add_node(ir::OpKind::kConv2d, {x, w}, ir::Conv2dAttrs{1, 0, {}}, "c"));
  EXPECT_FALSE(backend::cuda::supports_conv2d(g, g.nodes()[0]));
}

// conv2d(x [2, 8, 8, Cin], w [Cout, Cin, k, k] (8-bit S)[, b], r) with `epilogue` in an f32
// graph, stride 1 and "same" padding; the residual [2, 8, 8, Cout] a graph input — or a graph
// weight (residual_weight).
ir::Graph fused_conv(int64_t cin, int64_t cout, int k, ir::GemmEpilogue epilogue, bool bias,
                     bool residual_weight = false) {
  ir::Graph g(DType::kF32);
  const ir::ValueId x = g.add_input("x", DType::kF32, Shape{2, 8, 8, cin});
  std::vector<ir::ValueId> ins{x, g.add_weight("w", DType::kS8, Shape{cout, cin, k, k})};
  if (bias) ins.push_back(g.add_weight("b", DType::kF32, Shape{cout}));
  const Shape rs{2, 8, 8, cout};
  if (epilogue.residual)
    ins.push_back(residual_weight ? g.add_weight("r", DType::kF32, rs)
                                  : g.add_input("r", DType::kF32, rs));
  g.mark_output(g.add_node(ir::OpKind::kConv2d, ins, ir::Conv2dAttrs{1, k / 2, epilogue}, "conv"));
  return g;
}

// A fused conv's key carries the epilogue bits next to kBias and kIm2colOperand (its own
// cache entry); a fused 1x1 conv still equals the linear of the same epilogue (one program).
TEST(CudaConvKey, FusedEpilogueBits) {
  using backend::Epilogue;
  const auto bit = [](Epilogue e) { return static_cast<uint8_t>(e); };
  const ir::GemmEpilogue silu_residual{.activation = kSilu, .residual = true};
  const ir::Graph plain3 = fused_conv(64, 64, 3, {}, true);
  const ir::Graph fused3 = fused_conv(64, 64, 3, silu_residual, true);
  const backend::GemmKey k_plain = backend::cuda::conv2d_gemm_key(plain3, plain3.nodes()[0]);
  const backend::GemmKey k_fused = backend::cuda::conv2d_gemm_key(fused3, fused3.nodes()[0]);
  EXPECT_EQ(k_fused.epilogue, bit(Epilogue::kBias) | bit(Epilogue::kSilu) |
                                  bit(Epilogue::kResidualAdd) | backend::cuda::kIm2colOperand);
  EXPECT_NE(k_fused, k_plain);
  EXPECT_NE(k_fused.to_string(), k_plain.to_string());
  // One program for both: the im2col bit stays, the epilogue bits go.
  EXPECT_EQ(backend::cuda::gemm_program_key(k_fused), k_plain);
  const ir::Graph gelu3 = fused_conv(64, 64, 3, {.activation = kGelu}, false);
  EXPECT_EQ(backend::cuda::conv2d_gemm_key(gelu3, gelu3.nodes()[0]).epilogue,
            bit(Epilogue::kGelu) | backend::cuda::kIm2colOperand);
  const ir::Graph quick3 = fused_conv(64, 64, 3, {.activation = kQuickGelu}, false);
  EXPECT_EQ(backend::cuda::conv2d_gemm_key(quick3, quick3.nodes()[0]).epilogue,
            bit(Epilogue::kQuickGelu) | backend::cuda::kIm2colOperand);

  // 1x1 over [2, 8, 8, 640] -> 320 + residual = the linear [128, 640] -> 320 + residual.
  const ir::Graph c1 = fused_conv(640, 320, 1, silu_residual, false);
  ir::Graph lin(DType::kF16);
  const ir::ValueId x = lin.add_input("x", DType::kF16, Shape{128, 640});
  const ir::ValueId w = lin.add_weight("w", DType::kS8, Shape{320, 640});
  const ir::ValueId r = lin.add_input("r", DType::kF16, Shape{128, 320});
  lin.mark_output(
      lin.add_node(ir::OpKind::kLinear, {x, w, r}, ir::LinearAttrs{silu_residual}, "l"));
  const backend::GemmKey k1 = backend::cuda::conv2d_gemm_key(c1, c1.nodes()[0]);
  EXPECT_EQ(k1, backend::cuda::linear_gemm_key(lin, lin.nodes()[0])) << k1.to_string();
  EXPECT_EQ(k1.epilogue, bit(Epilogue::kSilu) | bit(Epilogue::kResidualAdd));
}

// supports_conv2d with a fused epilogue: a residual graph input of the output's shape and
// dtype (with or without bias, with an activation) is supported; a residual that is a weight,
// or (an edited copy of the node: the graph refuses to build one) of another shape or dtype,
// or a residual flag without a residual input, is not.
TEST(CudaConvKey, SupportsFusedResidual) {
  for (bool bias : {false, true})
    for (int k : {1, 3}) {
      SCOPED_TRACE(str_cat(k, "x", k, bias ? " bias" : ""));
      const ir::Graph g = fused_conv(16, 32, k, kResidual, bias);
      EXPECT_TRUE(backend::cuda::supports_conv2d(g, g.nodes()[0]));
      const ir::Graph a = fused_conv(16, 32, k, {.activation = kGelu, .residual = true}, bias);
      EXPECT_TRUE(backend::cuda::supports_conv2d(a, a.nodes()[0]));
    }
  const ir::Graph weight = fused_conv(16, 32, 3, kResidual, true, true);
  EXPECT_FALSE(backend::cuda::supports_conv2d(weight, weight.nodes()[0]));

  ir::Graph g(DType::kF32);
  const ir::ValueId x = g.add_input("x", DType::kF32, Shape{2, 8, 8, 16});
  const ir::ValueId w = g.add_weight("w", DType::kS8, Shape{32, 16, 3, 3});
  const ir::ValueId r = g.add_input("r", DType::kF32, Shape{2, 8, 8, 32});
  const ir::ValueId other_shape = g.add_input("r_t", DType::kF32, Shape{2, 8, 32, 8});
  const ir::ValueId f16 = g.add_input("r_f16", DType::kF16, Shape{2, 8, 8, 32});
  g.mark_output(
      g.add_node(ir::OpKind::kConv2d, {x, w, r}, ir::Conv2dAttrs{1, 1, kResidual}, "conv"));
  const ir::Node& ok = g.nodes()[0];
  EXPECT_TRUE(backend::cuda::supports_conv2d(g, ok));
  const auto edited = [&](std::vector<ir::ValueId> inputs) {
    ir::Node n = ok;
    n.inputs = std::move(inputs);
    return n;
  };
  EXPECT_FALSE(backend::cuda::supports_conv2d(g, edited({x, w, other_shape})));
  EXPECT_FALSE(backend::cuda::supports_conv2d(g, edited({x, w, f16})))
      << "an f16 residual for an f32 output (both held as f16 on the device)";
  EXPECT_FALSE(backend::cuda::supports_conv2d(g, edited({x, w}))) << "no residual input";
  EXPECT_THROW(
      g.add_node(ir::OpKind::kConv2d, {x, w, other_shape}, ir::Conv2dAttrs{1, 1, kResidual}, "c"),
      Error);
}

}  // namespace
}  // namespace hyrt::test

#else  // !HYRT_HAVE_CUDA

TEST(CudaConv, NotBuilt) {
  GTEST_SKIP() << "built without the CUDA toolkit (HYRT_HAVE_CUDA off)";
}

#endif

// The CUDA backend's fused attention (cuda_attention.h, attention_kernels.h) on a GPU vs a
// double-precision host reference, ≤ 2e-3 relative L2: q, k, v are random and rounded to f16
// first, so the reference sees exactly what the kernel reads, and what remains is the f16
// rounding of the probabilities and of the output. Outputs are poisoned with NaN before each
// run (an unwritten element fails the comparison). Shapes: SD 1.5's (scaled down to 1024
// tokens), cross attention over 77 keys, CLIP's causal 77 tokens, the tiny test model's small
// heads, odd sizes, D != Dv, q/k/v as column views of one packed tensor, and head dims that
// take the element-wise load path. Heads wider than 256 take the chunked cuBLAS path, also with
// its workspace bound the executor's way (Kernel::bind_workspace). Without a usable GPU these
// tests skip with the reason.
#include <gtest/gtest.h>

#ifdef HYRT_HAVE_CUDA

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cudnn_attention.h"
#include "core/error.h"
#include "core/half.h"
#include "cuda_test_gpu.h"
#include "ir/graph.h"
#include "test_util.h"

namespace hyrt::test {
namespace {

using backend::cuda::CudaContext;
using backend::cuda::DeviceBuffer;
using backend::cuda::FlashAttentionParams;

constexpr double kTolerance = 2e-3;

struct Spec {
  int64_t batch, tq, tk;
  int heads = 0, d = 0, dv = 0;
  bool causal = false;
  float scale = 0.0f;        // 0: 1/sqrt(D)
  float input_scale = 1.0f;  // of q and k: larger makes the softmax peakier
  uint64_t seed = 1;
  // Direct launches only: q/k/v as column views of one [B, T, H·(2D + Dv)] tensor (tq == tk).
  bool packed = false;
  int rows_per_warp = 0;
  // Direct launches only: FlashAttentionParams' rescale_slack and uncapped_registers.
  float rescale_slack = -1.0f;
  bool uncapped_registers = false;
  // Key j's values grow by 1 + key_ramp·j/tk: each row's maximum keeps rising across the key
  // tiles, so the running softmax must rescale again and again.
  float key_ramp = 0.0f;
  // Direct launches only: 2 or 3 runs Hopper's kernel (launch_flash_attention_sm90) with that
  // many consumer warp groups per block.
  int sm90_groups = 0;
  int sm90_key_tile = 0;             // ... with FlashAttentionParams::sm90_key_tile,
  int sm90_poly_exp_every = 0;       // ::sm90_poly_exp_every
  int sm90_turns = 0;                // ::sm90_turns
  bool sm90_no_proxy_fence = false;  // ::sm90_no_proxy_fence
  bool sm90_no_fold = false;         // ::sm90_no_fold
  int sm90_deep = 0;                 // and ::sm90_deep
};

std::string describe(const Spec& s) {
  return str_cat("B=", s.batch, " Tq=", s.tq, " Tk=", s.tk, " H=", s.heads, " D=", s.d,
                 " Dv=", s.dv, s.causal ? " causal" : "", s.packed ? " packed" : "",
                 s.rows_per_warp ? str_cat(" rows/warp=", s.rows_per_warp) : std::string(),
                 " slack=", s.rescale_slack, s.uncapped_registers ? " uncapped" : "",
                 s.key_ramp != 0 ? str_cat(" ramp=", s.key_ramp) : "",
                 s.sm90_groups ? str_cat(" sm90 groups=", s.sm90_groups) : std::string(),
                 s.sm90_key_tile ? str_cat(" key tile ", s.sm90_key_tile) : std::string(),
                 s.sm90_poly_exp_every ? str_cat(" poly exp 1/", s.sm90_poly_exp_every) : "",
                 s.sm90_turns ? str_cat(" turns ", s.sm90_turns) : "",
                 s.sm90_no_proxy_fence ? " no proxy fence" : "", s.sm90_no_fold ? " no fold" : "",
                 s.sm90_deep ? str_cat(" deep ", s.sm90_deep) : std::string());
}

// Random floats rounded to f16: the f16 bits and the values they hold.
struct F16Data {
  std::vector<uint16_t> bits;
  std::vector<float> values;
  F16Data(size_t n, uint64_t seed, float scale) : bits(n), values(random_floats(n, seed, scale)) {
    convert_from_f32(values.data(), DType::kF16, bits.data(), n);
    convert_to_f32(DType::kF16, bits.data(), values.data(), n);
  }
};

// q [B, Tq, H·D], k [B, Tk, H·D], v [B, Tk, H·Dv] dense -> [B, Tq, H·Dv], in double.
std::vector<float> reference(const Spec& s, const std::vector<float>& q,
                             const std::vector<float>& k, const std::vector<float>& v,
                             bool causal) {
  const double scale = s.scale != 0 ? s.scale : 1.0 / std::sqrt(static_cast<double>(s.d));
  const int64_t H = s.heads, D = s.d, Dv = s.dv;
  std::vector<float> out(static_cast<size_t>(s.batch * s.tq * H * Dv));
  std::vector<double> p(static_cast<size_t>(s.tk)), acc(static_cast<size_t>(Dv));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < s.tq; ++i) {
        const float* qi = &q[((b * s.tq + i) * H + h) * D];
        const int64_t valid = causal ? std::min(i + 1, s.tk) : s.tk;
        double m = -1e300;
        for (int64_t j = 0; j < valid; ++j) {
          const float* kj = &k[((b * s.tk + j) * H + h) * D];
          double dot = 0;
          for (int64_t c = 0; c < D; ++c)
            dot += static_cast<double>(qi[c]) * kj[c];
          p[j] = dot * scale;
          m = std::max(m, p[j]);
        }
        double sum = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < valid; ++j) {
          const double e = std::exp(p[j] - m);
          sum += e;
          const float* vj = &v[((b * s.tk + j) * H + h) * Dv];
          for (int64_t c = 0; c < Dv; ++c)
            acc[c] += e * vj[c];
        }
        float* o = &out[((b * s.tq + i) * H + h) * Dv];
        for (int64_t c = 0; c < Dv; ++c)
          o[c] = static_cast<float>(acc[c] / sum);
      }
  return out;
}

// Host <-> device on a stream (by default the test context's), complete on return.
void to_device(void* dst, const void* src, size_t bytes,
               cudaStream_t stream = gpu().ctx->stream()) {
  HYRT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
  HYRT_CUDA_CHECK(cudaStreamSynchronize(stream));
}
std::vector<uint8_t> bytes_from_device(const void* src, size_t bytes,
                                       cudaStream_t stream = gpu().ctx->stream()) {
  std::vector<uint8_t> out(bytes);
  HYRT_CUDA_CHECK(cudaMemcpyAsync(out.data(), src, bytes, cudaMemcpyDeviceToHost, stream));
  HYRT_CUDA_CHECK(cudaStreamSynchronize(stream));
  return out;
}
std::vector<float> f16_from_device(const void* src, size_t n,
                                   cudaStream_t stream = gpu().ctx->stream()) {
  const std::vector<uint8_t> bits = bytes_from_device(src, n * 2, stream);
  std::vector<float> out(n);
  convert_to_f32(DType::kF16, bits.data(), out.data(), n);
  return out;
}

struct Inputs {
  F16Data q, k, v;
  explicit Inputs(const Spec& s)
      : q(static_cast<size_t>(s.batch * s.tq * s.heads * s.d), s.seed, s.input_scale),
        k(static_cast<size_t>(s.batch * s.tk * s.heads * s.d), s.seed + 1, s.input_scale),
        v(static_cast<size_t>(s.batch * s.tk * s.heads * s.dv), s.seed + 2, 1.0f) {
    if (s.key_ramp == 0) return;
    const int64_t row = int64_t{s.heads} * s.d;
    for (int64_t r = 0; r < s.batch * s.tk; ++r)
      for (int64_t c = 0; c < row; ++c)
        k.values[r * row + c] *= 1.0f + s.key_ramp * static_cast<float>(r % s.tk) / s.tk;
    convert_from_f32(k.values.data(), DType::kF16, k.bits.data(), k.values.size());
    convert_to_f32(DType::kF16, k.bits.data(), k.values.data(), k.values.size());
  }
};

// A one-node attention graph for `s`: the graph says f32; the device holds f16 (cuda_backend.h).
struct AttentionGraph {
  ir::Graph g{DType::kF32};
  ir::ValueId q = 0, k = 0, v = 0;
  Shape out_shape;
  explicit AttentionGraph(const Spec& s) : out_shape{s.batch, s.tq, s.heads * s.dv} {
    q = g.add_input("q", DType::kF32, Shape{s.batch, s.tq, s.heads * s.d});
    k = g.add_input("k", DType::kF32, Shape{s.batch, s.tk, s.heads * s.d});
    v = g.add_input("v", DType::kF32, Shape{s.batch, s.tk, s.heads * s.dv});
    g.mark_output(g.add_node(ir::OpKind::kAttention, {q, k, v},
                             ir::AttentionAttrs{s.heads, s.scale, s.causal}, "attn"));
    g.verify();
  }
  const ir::Node& node() const { return g.nodes().back(); }
};

// Dense f16 device copies of q, k, v and an output, on the stream of `ctx` (the context the
// kernel was made on). run() poisons the output with NaN, runs the kernel, returns the output.
class AttentionRun {
 public:
  AttentionRun(const AttentionGraph& ag, const Inputs& in, CudaContext& ctx)
      : ag_(ag),
        stream_(ctx.stream()),
        dq_(in.q.bits.size() * 2, "q"),
        dk_(in.k.bits.size() * 2, "k"),
        dv_(in.v.bits.size() * 2, "v"),
        dout_(static_cast<size_t>(ag.out_shape.numel()) * 2, "out") {
    to_device(dq_.data(), in.q.bits.data(), dq_.size(), stream_);
    to_device(dk_.data(), in.k.bits.data(), dk_.size(), stream_);
    to_device(dv_.data(), in.v.bits.data(), dv_.size(), stream_);
  }

  std::vector<float> run(backend::Kernel& kernel) {
    HYRT_CUDA_CHECK(cudaMemsetAsync(dout_.data(), 0xff, dout_.size(), stream_));  // NaN
    const std::vector<TensorView> views{{dq_.data(), DType::kF16, ag_.g.value(ag_.q).shape},
                                        {dk_.data(), DType::kF16, ag_.g.value(ag_.k).shape},
                                        {dv_.data(), DType::kF16, ag_.g.value(ag_.v).shape}};
    kernel.run(views, {dout_.data(), DType::kF16, ag_.out_shape});
    return f16_from_device(dout_.data(), static_cast<size_t>(ag_.out_shape.numel()), stream_);
  }

 private:
  const AttentionGraph& ag_;
  cudaStream_t stream_;
  DeviceBuffer dq_, dk_, dv_, dout_;
};

// Through the Kernel interface: a one-node graph, dense f16 device tensors.
std::vector<float> run_kernel(const Spec& s, const Inputs& in) {
  const AttentionGraph ag(s);
  EXPECT_TRUE(backend::cuda::supports_attention(ag.g, ag.node()));
  const double est = backend::cuda::estimate_attention_us(ag.g, ag.node());
  EXPECT_TRUE(std::isfinite(est) && est > 0) << est;
  std::unique_ptr<backend::Kernel> kernel =
      backend::cuda::make_attention_kernel(*gpu().ctx, ag.g, ag.node());
  std::printf("[ cuda     ] attention %s runs %s\n", describe(s).c_str(),
              backend::cuda::attention_program(*kernel));
  AttentionRun run(ag, in, *gpu().ctx);
  return run.run(*kernel);
}

// q, k, v rows side by side: [B, T, H·D | H·D | H·Dv] (tq == tk).
std::vector<uint16_t> pack_qkv(const Spec& s, const Inputs& in) {
  const int64_t H = s.heads, D = s.d, Dv = s.dv;
  const int64_t ld = H * (2 * D + Dv), rows = s.batch * s.tq;
  std::vector<uint16_t> packed(static_cast<size_t>(rows * ld));
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(&packed[r * ld], &in.q.bits[r * H * D], H * D * 2);
    std::memcpy(&packed[r * ld + H * D], &in.k.bits[r * H * D], H * D * 2);
    std::memcpy(&packed[r * ld + 2 * H * D], &in.v.bits[r * H * Dv], H * Dv * 2);
  }
  return packed;
}

// Through the Kernel interface as a packed node (ir::AttentionAttrs::packed_qkv: one input
// qkv [B, T, 3·H·D], plan::stack_projections' form), run once at once and once settled (where
// cuDNN is used, its plan over the strided rows). Returns both outputs.
std::vector<std::vector<float>> run_packed_node(const Spec& s, const Inputs& in) {
  ir::Graph g{DType::kF32};
  const ir::ValueId qkv = g.add_input("qkv", DType::kF32, Shape{s.batch, s.tq, 3 * s.heads * s.d});
  ir::AttentionAttrs attrs{s.heads, s.scale, false};
  attrs.packed_qkv = true;
  g.mark_output(g.add_node(ir::OpKind::kAttention, {qkv}, attrs, "attn"));
  g.verify();
  const ir::Node& node = g.nodes().back();
  EXPECT_TRUE(backend::cuda::supports_attention(g, node));
  std::unique_ptr<backend::Kernel> kernel =
      backend::cuda::make_attention_kernel(*gpu().ctx, g, node);
  const std::vector<uint16_t> packed = pack_qkv(s, in);
  DeviceBuffer dqkv(packed.size() * 2, "qkv"),
      dout(static_cast<size_t>(s.batch * s.tq * s.heads * s.dv) * 2, "out");
  to_device(dqkv.data(), packed.data(), dqkv.size());
  const Shape out_shape{s.batch, s.tq, s.heads * s.dv};
  std::vector<std::vector<float>> outs;
  for (int i = 0; i < 2; ++i) {
    if (i == 1) kernel->settle();
    HYRT_CUDA_CHECK(cudaMemsetAsync(dout.data(), 0xff, dout.size(), gpu().ctx->stream()));
    const std::vector<TensorView> views{{dqkv.data(), DType::kF16, g.value(qkv).shape}};
    kernel->run(views, {dout.data(), DType::kF16, out_shape});
    outs.push_back(
        f16_from_device(dout.data(), static_cast<size_t>(out_shape.numel()), gpu().ctx->stream()));
    std::printf("[ cuda     ] packed attention %s runs %s\n", describe(s).c_str(),
                backend::cuda::attention_program(*kernel));
  }
  return outs;
}

// launch_flash_attention itself, optionally on column views of one packed qkv tensor.
std::vector<float> run_direct(const Spec& s, const Inputs& in) {
  const int64_t H = s.heads, D = s.d, Dv = s.dv;
  const int64_t out_n = s.batch * s.tq * H * Dv;
  FlashAttentionParams p;
  p.batch = s.batch, p.tq = s.tq, p.tk = s.tk;
  p.heads = s.heads, p.d = s.d, p.dv = s.dv;
  p.scale = s.scale != 0 ? s.scale : 1.0f / std::sqrt(static_cast<float>(s.d));
  p.causal = s.causal;
  p.rows_per_warp = s.rows_per_warp;
  p.rescale_slack = s.rescale_slack, p.uncapped_registers = s.uncapped_registers;
  p.ld_out = H * Dv;
  DeviceBuffer dout(static_cast<size_t>(out_n) * 2, "out"), dq, dk, dv, dqkv;
  if (s.packed) {
    const int64_t ld = H * (2 * D + Dv);
    const std::vector<uint16_t> packed = pack_qkv(s, in);
    dqkv = DeviceBuffer(packed.size() * 2, "qkv");
    to_device(dqkv.data(), packed.data(), dqkv.size());
    p.q = dqkv.as<uint16_t>();
    p.k = p.q + H * D;
    p.v = p.q + 2 * H * D;
    p.ld_q = p.ld_k = p.ld_v = ld;
  } else {
    dq = DeviceBuffer(in.q.bits.size() * 2, "q");
    dk = DeviceBuffer(in.k.bits.size() * 2, "k");
    dv = DeviceBuffer(in.v.bits.size() * 2, "v");
    to_device(dq.data(), in.q.bits.data(), dq.size());
    to_device(dk.data(), in.k.bits.data(), dk.size());
    to_device(dv.data(), in.v.bits.data(), dv.size());
    p.q = dq.as<uint16_t>(), p.k = dk.as<uint16_t>(), p.v = dv.as<uint16_t>();
    p.ld_q = p.ld_k = H * D;
    p.ld_v = H * Dv;
  }
  p.out = dout.as<uint16_t>();
  HYRT_CUDA_CHECK(cudaMemsetAsync(dout.data(), 0xff, dout.size(), gpu().ctx->stream()));
  if (s.sm90_groups) {
    p.sm90_warp_groups = s.sm90_groups;
    p.sm90_key_tile = s.sm90_key_tile;
    p.sm90_poly_exp_every = s.sm90_poly_exp_every;
    p.sm90_turns = s.sm90_turns;
    p.sm90_no_proxy_fence = s.sm90_no_proxy_fence;
    p.sm90_no_fold = s.sm90_no_fold;
    p.sm90_deep = s.sm90_deep;
    EXPECT_TRUE(backend::cuda::flash_attention_sm90_takes(p));
    HYRT_CUDA_CHECK(backend::cuda::launch_flash_attention_sm90(p, gpu().ctx->stream()));
  } else {
    HYRT_CUDA_CHECK(backend::cuda::launch_flash_attention(p, gpu().ctx->stream()));
  }
  return f16_from_device(dout.data(), static_cast<size_t>(out_n));
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return relative_l2(a.data(), b.data(), std::min(a.size(), b.size()));
}

enum class Path { kKernel, kDirect };

void check(const Spec& s, Path path = Path::kKernel) {
  SCOPED_TRACE(describe(s));
  const Inputs in(s);
  const std::vector<float> got = path == Path::kKernel ? run_kernel(s, in) : run_direct(s, in);
  const std::vector<float> want = reference(s, in.q.values, in.k.values, in.v.values, s.causal);
  const double err = rel(got, want);
  EXPECT_LE(err, kTolerance);
  if (s.causal) {  // the comparison can fail: ignoring the mask is caught
    EXPECT_GT(rel(got, reference(s, in.q.values, in.k.values, in.v.values, false)),
              10 * kTolerance);
  }
  std::printf("[ cuda     ] attention %s: rel L2 %.2e\n", describe(s).c_str(), err);
}

// Where cuDNN is found and used (HYRT_CUDA_ATTENTION=cudnn: ctest cuda_attention_cudnn;
// HYRT_CUDA_ATTENTION=own keeps hyrt's kernel: ctest cuda_attention_own), the shapes it can take
// run its SDPA plan once settled — checked, so that a silent fallback to hyrt's kernel is seen —
// and still meet the tolerance; causal and unaligned-head nodes keep hyrt's kernel.
TEST(CudaAttention, CudnnTakesTheShapesItCan) {
  REQUIRE_GPU();
  std::string why;
  if (!backend::cuda::cudnn_attention_available(&why)) GTEST_SKIP() << "no cuDNN: " << why;
  if (!backend::cuda::cudnn_attention_enabled()) GTEST_SKIP() << "cuDNN's attention not used";
  const auto program = [](const Spec& s) {
    const AttentionGraph ag(s);
    return std::string(backend::cuda::attention_program(
        *backend::cuda::make_attention_kernel(*gpu().ctx, ag.g, ag.node())));
  };
  // Hopper's kernel takes head dims 40, 64 and 80 ahead of cuDNN where it is on and built.
  const auto& dev = gpu().ctx->device();
  const bool hopper =
      backend::cuda::hopper_attention_enabled() &&
      backend::cuda::flash_attention_sm90_available(dev.compute_major, dev.compute_minor);
  for (const Spec& s : {Spec{.batch = 2, .tq = 1024, .tk = 1024, .heads = 8, .d = 40, .dv = 40},
                        Spec{.batch = 2, .tq = 1024, .tk = 77, .heads = 8, .d = 80, .dv = 80},
                        Spec{.batch = 1, .tq = 256, .tk = 256, .heads = 8, .d = 160, .dv = 160},
                        Spec{.batch = 2, .tq = 1024, .tk = 1024, .heads = 20, .d = 64, .dv = 64}}) {
    EXPECT_EQ(program(s), hopper && s.d != 160 ? "hopper" : "cudnn") << describe(s);
    check(s);
  }
  EXPECT_EQ(
      program({.batch = 2, .tq = 77, .tk = 77, .heads = 12, .d = 64, .dv = 64, .causal = true}),
      "own");
  EXPECT_EQ(program({.batch = 1, .tq = 64, .tk = 64, .heads = 2, .d = 12, .dv = 12}), "own");
}

// cuDNN's plan is built off the calling thread: a kernel runs hyrt's program at once (its
// first run never waits for the build) and switches at the first run after the plan is ready
// (Kernel::settled); both results meet the tolerance.
TEST(CudaAttention, RunsHyrtsKernelUntilCudnnsPlanIsReady) {
  REQUIRE_GPU();
  std::string why;
  if (!backend::cuda::cudnn_attention_available(&why)) GTEST_SKIP() << "no cuDNN: " << why;
  if (!backend::cuda::cudnn_attention_enabled()) GTEST_SKIP() << "cuDNN's attention not used";
  // A shape no other test builds (plans are shared per shape while a kernel holds one).
  const Spec s{.batch = 2, .tq = 832, .tk = 832, .heads = 6, .d = 48, .dv = 48, .seed = 31};
  const Inputs in(s);
  const AttentionGraph ag(s);
  const std::vector<float> want = reference(s, in.q.values, in.k.values, in.v.values, false);
  std::unique_ptr<backend::Kernel> kernel =
      backend::cuda::make_attention_kernel(*gpu().ctx, ag.g, ag.node());
  AttentionRun run(ag, in, *gpu().ctx);
  const auto t0 = std::chrono::steady_clock::now();
  const bool settled_at_start = kernel->settled();
  EXPECT_LE(rel(run.run(*kernel), want), kTolerance);
  const double first_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ cuda     ] first run before the plan: %.1f ms (settled at start: %d)\n", first_ms,
              settled_at_start);
  EXPECT_FALSE(settled_at_start) << "the plan was ready before its build could have run";
  kernel->settle();
  EXPECT_TRUE(kernel->settled());
  EXPECT_STREQ(backend::cuda::attention_program(*kernel), "cudnn");
  EXPECT_LE(rel(run.run(*kernel), want), kTolerance);
}

// A packed-qkv node (plan::stack_projections' self-attention) meets the tolerance on its first
// run and settled (cuDNN's plan over the strided rows where cuDNN is used), at SD 1.5's, SDXL's
// and a small model's heads; a packed node the backend cannot hold is refused.
TEST(CudaAttention, PackedQkvNode) {
  REQUIRE_GPU();
  for (const Spec& s :
       {Spec{.batch = 2, .tq = 1024, .tk = 1024, .heads = 8, .d = 40, .dv = 40, .seed = 41},
        Spec{.batch = 2, .tq = 1024, .tk = 1024, .heads = 20, .d = 64, .dv = 64, .seed = 42},
        Spec{.batch = 1, .tq = 300, .tk = 300, .heads = 2, .d = 16, .dv = 16, .seed = 43}}) {
    SCOPED_TRACE(describe(s));
    const Inputs in(s);
    const std::vector<float> want = reference(s, in.q.values, in.k.values, in.v.values, false);
    const std::vector<std::vector<float>> got = run_packed_node(s, in);
    for (const std::vector<float>& out : got) {
      const double err = rel(out, want);
      EXPECT_LE(err, kTolerance);
      std::printf("[ cuda     ] packed attention %s: rel L2 %.2e\n", describe(s).c_str(), err);
    }
    // k and v swapped in the reference is far off (the node reads them at the right columns).
    EXPECT_GT(rel(got.back(), reference(s, in.q.values, in.v.values, in.k.values, false)),
              10 * kTolerance);
  }
  // Heads wider than the fused kernels' (the chunked path has no strided form): refused.
  ir::Graph g{DType::kF32};
  ir::AttentionAttrs wide{1};
  wide.packed_qkv = true;
  g.mark_output(g.add_node(ir::OpKind::kAttention,
                           {g.add_input("qkv", DType::kF32, Shape{1, 64, 3 * 512})}, wide, "a"));
  EXPECT_FALSE(backend::cuda::supports_attention(g, g.nodes().back()));
}

TEST(CudaAttention, SdSelfAttentionD40) {  // 64² self attention's head dim, 1024 tokens
  REQUIRE_GPU();
  check({.batch = 2, .tq = 1024, .tk = 1024, .heads = 8, .d = 40, .dv = 40, .seed = 1});
}

TEST(CudaAttention, SdSelfAttentionD80) {
  REQUIRE_GPU();
  check({.batch = 1, .tq = 1024, .tk = 1024, .heads = 8, .d = 80, .dv = 80, .seed = 2});
}

TEST(CudaAttention, SdSelfAttentionD160) {
  REQUIRE_GPU();
  check({.batch = 1, .tq = 1024, .tk = 1024, .heads = 8, .d = 160, .dv = 160, .seed = 3});
}

TEST(CudaAttention, CrossAttention77Keys) {
  REQUIRE_GPU();
  check({.batch = 2, .tq = 1024, .tk = 77, .heads = 8, .d = 40, .dv = 40, .seed = 4});
  check({.batch = 2, .tq = 256, .tk = 77, .heads = 8, .d = 160, .dv = 160, .seed = 5});
}

// SDXL's heads (64 wide): 10 at the 64² level of a 1024² picture (4096 keys; 512 of its queries,
// the reference being a host loop), 20 at the 32² level, and cross attention to 77 tokens.
TEST(CudaAttention, SdxlHeadsOf64) {
  REQUIRE_GPU();
  check({.batch = 1, .tq = 512, .tk = 4096, .heads = 10, .d = 64, .dv = 64, .seed = 8});
  check({.batch = 2, .tq = 1024, .tk = 1024, .heads = 20, .d = 64, .dv = 64, .seed = 9});
  check({.batch = 2, .tq = 1024, .tk = 77, .heads = 20, .d = 64, .dv = 64, .seed = 10});
}

TEST(CudaAttention, ClipCausal) {  // CLIP ViT-L: 77 tokens, 12 heads of 64
  REQUIRE_GPU();
  check(
      {.batch = 2, .tq = 77, .tk = 77, .heads = 12, .d = 64, .dv = 64, .causal = true, .seed = 6});
}

TEST(CudaAttention, CausalAcrossTiles) {  // the diagonal crosses several key tiles
  REQUIRE_GPU();
  check({.batch = 1,
         .tq = 300,
         .tk = 300,
         .heads = 2,
         .d = 32,
         .dv = 32,
         .causal = true,
         .input_scale = 2.0f,
         .seed = 7});
  check({.batch = 1,
         .tq = 200,
         .tk = 200,
         .heads = 2,
         .d = 160,
         .dv = 160,
         .causal = true,
         .seed = 8});
}

TEST(CudaAttention, OddSizes) {
  REQUIRE_GPU();
  check({.batch = 2, .tq = 37, .tk = 13, .heads = 3, .d = 8, .dv = 8, .seed = 9});
  check({.batch = 1, .tq = 1, .tk = 1, .heads = 1, .d = 8, .dv = 8, .seed = 10});
  check({.batch = 3,
         .tq = 129,
         .tk = 65,
         .heads = 5,
         .d = 24,
         .dv = 24,
         .scale = 0.3f,
         .input_scale = 2.0f,
         .seed = 11});
}

TEST(CudaAttention, TinyModelHeads) {  // sd15-tiny: 8 heads of 4 and 8 (UNet), 4 of 16 (CLIP)
  REQUIRE_GPU();
  check({.batch = 2, .tq = 64, .tk = 64, .heads = 8, .d = 4, .dv = 4, .seed = 12});
  check({.batch = 2, .tq = 16, .tk = 7, .heads = 8, .d = 8, .dv = 8, .seed = 13});
  check({.batch = 2, .tq = 7, .tk = 7, .heads = 4, .d = 16, .dv = 16, .causal = true, .seed = 14});
}

TEST(CudaAttention, ValueDimDiffers) {
  REQUIRE_GPU();
  check({.batch = 2, .tq = 50, .tk = 77, .heads = 3, .d = 24, .dv = 40, .seed = 15});
  check({.batch = 1, .tq = 70, .tk = 33, .heads = 2, .d = 64, .dv = 8, .seed = 16});
}

TEST(CudaAttention, LargeAndUnalignedHeadDims) {
  REQUIRE_GPU();
  check({.batch = 1, .tq = 100, .tk = 90, .heads = 2, .d = 256, .dv = 256, .seed = 17});
  check({.batch = 1, .tq = 100, .tk = 90, .heads = 2, .d = 192, .dv = 192, .seed = 18});
  check({.batch = 1, .tq = 65, .tk = 70, .heads = 3, .d = 20, .dv = 20, .seed = 19});  // scalar
  check({.batch = 1, .tq = 40, .tk = 41, .heads = 1, .d = 7, .dv = 5, .seed = 20});
}

// Heads wider than the fused kernel's 256 (the VAE's one head of 512): query-row chunks
// through cuBLAS and the softmax kernel; one chunk, then several (Tk = 16384 gives 512 rows
// per 16 MiB chunk, so 600 query rows take two).
TEST(CudaAttention, WideHeadsThroughChunks) {
  REQUIRE_GPU();
  check({.batch = 1, .tq = 256, .tk = 256, .heads = 1, .d = 512, .dv = 512, .seed = 61});
  check({.batch = 2, .tq = 37, .tk = 53, .heads = 2, .d = 264, .dv = 272, .seed = 62});
  check({.batch = 1, .tq = 600, .tk = 16384, .heads = 1, .d = 264, .dv = 264, .seed = 63});
}

// Wide-range q, k, v (ir::Value::wide_range: the SDXL VAE's mid-block attention under
// force_upcast) are f32 on the device and run the chunked GEMM path on TF32 operands at any
// head dim that is a multiple of 8 (sdxl-tiny's VAE: 1 head of 64; the real one: 1 of 512),
// values beyond f16's range included (v scaled by 4e5; q·k large enough to be peaky).
TEST(CudaAttention, WideRangeRunsInF32) {
  REQUIRE_GPU();
  const Spec specs[] = {
      {.batch = 1,
       .tq = 256,
       .tk = 256,
       .heads = 1,
       .d = 64,
       .dv = 64,
       .input_scale = 3.0f,
       .seed = 67},
      {.batch = 2, .tq = 100, .tk = 100, .heads = 1, .d = 512, .dv = 512, .seed = 68},
      // Three chunks: 256 rows of 16384 f32 scores (16 MiB), twice, then 88.
      {.batch = 1, .tq = 600, .tk = 16384, .heads = 1, .d = 64, .dv = 64, .seed = 69},
  };
  constexpr float kValueScale = 4e5f;
  for (const Spec& s : specs) {
    SCOPED_TRACE(describe(s));
    const size_t nq = static_cast<size_t>(s.batch * s.tq * s.heads * s.d);
    const size_t nk = static_cast<size_t>(s.batch * s.tk * s.heads * s.d);
    const size_t nv = static_cast<size_t>(s.batch * s.tk * s.heads * s.dv);
    const std::vector<float> q = random_floats(nq, s.seed, s.input_scale);
    const std::vector<float> k = random_floats(nk, s.seed + 1, s.input_scale);
    const std::vector<float> v = random_floats(nv, s.seed + 2, kValueScale);
    const std::vector<float> want = reference(s, q, k, v, false);

    AttentionGraph ag(s);
    for (ir::ValueId id : {ag.q, ag.k, ag.v, ag.g.nodes().back().output})
      ag.g.set_wide_range(id);
    ASSERT_TRUE(backend::cuda::supports_attention(ag.g, ag.node()));
    std::unique_ptr<backend::Kernel> kernel =
        backend::cuda::make_attention_kernel(*gpu().ctx, ag.g, ag.node());
    const int64_t rows = std::clamp<int64_t>((int64_t{16} << 20) / (s.tk * 4), 1, s.tq);
    EXPECT_EQ(kernel->workspace_bytes(),
              (static_cast<size_t>(rows * s.tk * 4) + 255) / 256 * 256 + 192);
    DeviceBuffer dq(nq * 4, "q"), dk(nk * 4, "k"), dv(nv * 4, "v"),
        dout(static_cast<size_t>(ag.out_shape.numel()) * 4, "out");
    to_device(dq.data(), q.data(), dq.size());
    to_device(dk.data(), k.data(), dk.size());
    to_device(dv.data(), v.data(), dv.size());
    HYRT_CUDA_CHECK(cudaMemsetAsync(dout.data(), 0xff, dout.size(), gpu().ctx->stream()));
    const std::vector<TensorView> views{{dq.data(), DType::kF32, ag.g.value(ag.q).shape},
                                        {dk.data(), DType::kF32, ag.g.value(ag.k).shape},
                                        {dv.data(), DType::kF32, ag.g.value(ag.v).shape}};
    // f16 views of wide-range values are refused.
    const std::vector<TensorView> as_f16{
        {dq.data(), DType::kF16, ag.g.value(ag.q).shape}, views[1], views[2]};
    EXPECT_THROW(kernel->run(as_f16, {dout.data(), DType::kF32, ag.out_shape}), Error);
    kernel->run(views, {dout.data(), DType::kF32, ag.out_shape});
    const std::vector<uint8_t> raw = bytes_from_device(dout.data(), dout.size());
    std::vector<float> got(static_cast<size_t>(ag.out_shape.numel()));
    std::memcpy(got.data(), raw.data(), raw.size());
    const double err = rel(got, want);
    EXPECT_LE(err, kTolerance);
    // The comparison can fail: a result without the softmax's peaks (uniform weights) misses.
    Spec flat = s;
    flat.input_scale = 0.0f;
    EXPECT_GT(rel(got, reference(flat, std::vector<float>(nq, 0.0f), k, v, false)),
              10 * kTolerance);
    std::printf("[ cuda     ] attention %s wide-range f32: rel L2 %.2e\n", describe(s).c_str(),
                err);
  }
}

// The wide path's workspace (cuda_attention.h): one chunk's scores f16 [rows, Tk], rows =
// 16 MiB / (Tk·2) clamped to 1..Tq, rounded up to 256 bytes, + 192 bytes of slack. Each case
// runs on a context of its own, whose scratch is its cuBLAS workspace alone until an unbound
// run grows it: making the kernel reserves nothing; bound at offset 64 and then 192 of
// buffers poisoned with 0xff (64- but not 256-byte aligned; the second a rebinding, with the
// first buffer re-poisoned and required to stay so), the result matches the reference, no byte
// outside the workspace is written, some inside is, and the context's scratch does not grow;
// unbound, the first run grows it. The fused path needs no workspace.
TEST(CudaAttention, WideHeadsInABoundWorkspace) {
  REQUIRE_GPU();
  const Spec specs[] = {
      // One chunk of 37 rows (3922 bytes of scores: not a whole number of 256-byte blocks).
      {.batch = 2, .tq = 37, .tk = 53, .heads = 2, .d = 264, .dv = 272, .seed = 64},
      // Two chunks: 512 rows of 16384 keys (16 MiB), then 88.
      {.batch = 1, .tq = 600, .tk = 16384, .heads = 1, .d = 264, .dv = 264, .seed = 65},
  };
  constexpr size_t kGuard = 256;
  const auto poisoned = [](uint8_t b) { return b == 0xff; };
  for (const Spec& s : specs) {
    SCOPED_TRACE(describe(s));
    CudaContext ctx(gpu().ctx->device(), size_t{32} << 20);
    const Inputs in(s);
    const std::vector<float> want = reference(s, in.q.values, in.k.values, in.v.values, false);
    const AttentionGraph ag(s);
    std::unique_ptr<backend::Kernel> kernel =
        backend::cuda::make_attention_kernel(ctx, ag.g, ag.node());
    EXPECT_EQ(ctx.bytes_held(), ctx.workspace_bytes()) << "making the kernel reserved scratch";
    const int64_t rows = std::clamp<int64_t>((int64_t{16} << 20) / (s.tk * 2), 1, s.tq);
    const size_t ws = kernel->workspace_bytes();
    EXPECT_EQ(ws, (static_cast<size_t>(rows * s.tk * 2) + 255) / 256 * 256 + 192);
    AttentionRun run(ag, in, ctx);
    std::vector<DeviceBuffer> buffers;
    for (size_t offset : {size_t{64}, size_t{192}}) {
      SCOPED_TRACE(str_cat("workspace of ", ws, " bytes at offset ", offset));
      const size_t total = offset + ws + kGuard;
      if (!buffers.empty())  // the previous workspace, which the kernel must no longer use
        HYRT_CUDA_CHECK(
            cudaMemsetAsync(buffers.back().data(), 0xff, buffers.back().size(), ctx.stream()));
      buffers.emplace_back(total, "test workspace");
      auto* base = buffers.back().as<uint8_t>();
      HYRT_CUDA_CHECK(cudaMemsetAsync(base, 0xff, total, ctx.stream()));
      kernel->bind_workspace(base + offset);
      const double err = rel(run.run(*kernel), want);
      EXPECT_LE(err, kTolerance);
      EXPECT_EQ(ctx.bytes_held(), ctx.workspace_bytes())
          << "a run with a bound workspace grew the context's scratch";
      expect_only_range_written(bytes_from_device(base, total, ctx.stream()), offset, ws);
      if (buffers.size() > 1) {
        const DeviceBuffer& old = buffers[buffers.size() - 2];
        const std::vector<uint8_t> prev = bytes_from_device(old.data(), old.size(), ctx.stream());
        EXPECT_TRUE(std::all_of(prev.begin(), prev.end(), poisoned))
            << "the workspace bound before was written after rebinding";
      }
      std::printf("[ cuda     ] attention %s, bound workspace at +%zu: rel L2 %.2e\n",
                  describe(s).c_str(), offset, err);
    }
    // Unbound (tests, benchmarks): the first run grows the context's slot.
    kernel->bind_workspace(nullptr);
    EXPECT_LE(rel(run.run(*kernel), want), kTolerance);
    EXPECT_GT(ctx.bytes_held(), ctx.workspace_bytes());
  }

  // hyrt's fused kernel needs no workspace; cuDNN's plan may want a little, and then runs in a
  // bound one without writing outside it.
  const Spec fused_spec{
      .batch = 1, .tq = 64, .tk = 64, .heads = 2, .d = 256, .dv = 256, .seed = 66};
  const AttentionGraph fused(fused_spec);
  std::unique_ptr<backend::Kernel> kernel =
      backend::cuda::make_attention_kernel(*gpu().ctx, fused.g, fused.node());
  const size_t ws = kernel->workspace_bytes();
  if (std::string(backend::cuda::attention_program(*kernel)) == "own") {
    EXPECT_EQ(ws, 0u);
  } else if (ws > 0) {
    const Inputs in(fused_spec);
    AttentionRun run(fused, in, *gpu().ctx);
    const size_t total = 64 + ws + kGuard;
    DeviceBuffer buffer(total, "test workspace");
    HYRT_CUDA_CHECK(cudaMemsetAsync(buffer.data(), 0xff, total, gpu().ctx->stream()));
    kernel->bind_workspace(buffer.as<uint8_t>() + 64);
    EXPECT_LE(
        rel(run.run(*kernel), reference(fused_spec, in.q.values, in.k.values, in.v.values, false)),
        kTolerance);
    expect_only_range_written(bytes_from_device(buffer.data(), total), 64, ws);
    std::printf("[ cuda     ] attention %s: cuDNN in a bound workspace of %zu bytes\n",
                describe(fused_spec).c_str(), ws);
  }
}

TEST(CudaAttention, PackedQkvViews) {  // q, k, v as column views of one tensor, ld = H·(2D+Dv)
  REQUIRE_GPU();
  check(
      {.batch = 2, .tq = 300, .tk = 300, .heads = 8, .d = 40, .dv = 40, .seed = 21, .packed = true},
      Path::kDirect);
  check({.batch = 1,
         .tq = 77,
         .tk = 77,
         .heads = 12,
         .d = 64,
         .dv = 64,
         .causal = true,
         .seed = 22,
         .packed = true},
        Path::kDirect);
  check({.batch = 1, .tq = 33, .tk = 33, .heads = 3, .d = 4, .dv = 4, .seed = 23, .packed = true},
        Path::kDirect);
}

TEST(CudaAttention, BothWarpLayouts) {  // 16 and 32 query rows per warp agree with the reference
  REQUIRE_GPU();
  for (int rows : {16, 32}) {
    check({.batch = 1,
           .tq = 333,
           .tk = 257,
           .heads = 2,
           .d = 40,
           .dv = 40,
           .seed = 24,
           .rows_per_warp = rows},
          Path::kDirect);
    check({.batch = 1,
           .tq = 200,
           .tk = 200,
           .heads = 2,
           .d = 64,
           .dv = 64,
           .causal = true,
           .seed = 25,
           .rows_per_warp = rows},
          Path::kDirect);
  }
}

// Every form of the kernel agrees with the reference: 16 and 32 rows per warp with registers
// capped or not, vectorised and element-wise tile loads, a rescale at every growth of a row's
// maximum or only past the slack (with maxima that keep growing across key tiles), and a
// negative scale under a causal mask (scaled before the maximum is taken).
TEST(CudaAttention, KernelForms) {
  REQUIRE_GPU();
  struct Form {
    int rows;
    float slack;
    bool uncapped;
  };
  const Form forms[] = {{0, -1.0f, false}, {16, 0.0f, false}, {32, 8.0f, false},
                        {16, 12.0f, true}, {32, 0.0f, true},  {0, 0.0f, true}};
  for (const Form& f : forms) {
    const auto with = [&](Spec s) {
      s.rows_per_warp = f.rows, s.rescale_slack = f.slack, s.uncapped_registers = f.uncapped;
      return s;
    };
    check(with({.batch = 2, .tq = 333, .tk = 257, .heads = 2, .d = 40, .dv = 40, .seed = 31}),
          Path::kDirect);
    check(with({.batch = 1, .tq = 200, .tk = 300, .heads = 2, .d = 36, .dv = 36, .seed = 32}),
          Path::kDirect);  // element-wise loads
    check(with({.batch = 1,
                .tq = 130,
                .tk = 700,
                .heads = 3,
                .d = 40,
                .dv = 40,
                .input_scale = 2.0f,
                .seed = 33,
                .key_ramp = 6.0f}),
          Path::kDirect);
    check(with({.batch = 1,
                .tq = 256,
                .tk = 1024,
                .heads = 2,
                .d = 64,
                .dv = 64,
                .input_scale = 2.0f,
                .seed = 34,
                .key_ramp = 6.0f}),
          Path::kDirect);
    check(with({.batch = 1,
                .tq = 150,
                .tk = 150,
                .heads = 2,
                .d = 24,
                .dv = 8,
                .causal = true,
                .scale = -0.2f,
                .input_scale = 2.0f,
                .seed = 35}),
          Path::kDirect);
  }
}

// Runs everywhere: what the backend claims, without touching a device.
// Hopper's kernel (launch_flash_attention_sm90) against the reference at each head dim it
// takes, with query and key counts off its 64-row and 64-key tiles, one key tile and many,
// maxima that keep rising across tiles, peaky softmaxes, a negative scale, packed q/k/v views
// and both block sizes; and what it refuses.
bool sm90_attention_here() {
  const auto& dev = gpu().ctx->device();
  return backend::cuda::flash_attention_sm90_available(dev.compute_major, dev.compute_minor);
}

TEST(CudaAttentionSm90, MatchesTheReference) {
  REQUIRE_GPU();
  if (!sm90_attention_here()) GTEST_SKIP() << "not an sm_90 device, or built without CUTLASS";
  // Each case at every head dim it takes, with 2 and 3 consumer warp groups (d, dv and
  // sm90_groups are set below).
  const Spec cases[] = {
      {.batch = 2, .tq = 333, .tk = 257, .heads = 3, .seed = 41},
      {.batch = 1, .tq = 64, .tk = 64, .heads = 2, .seed = 42},  // one tile each way
      {.batch = 1, .tq = 1, .tk = 1, .heads = 1, .seed = 43},
      {.batch = 2, .tq = 200, .tk = 77, .heads = 4, .seed = 44},  // cross attention's 77 keys
      {.batch = 1,
       .tq = 130,
       .tk = 700,
       .heads = 3,
       .input_scale = 2.0f,
       .seed = 45,
       .key_ramp = 6.0f},  // maxima that keep growing across the key tiles
      {.batch = 1,
       .tq = 150,
       .tk = 190,
       .heads = 2,
       .scale = -0.2f,
       .input_scale = 2.0f,
       .seed = 46},
      {.batch = 2, .tq = 300, .tk = 300, .heads = 8, .seed = 47, .packed = true},
      // |scale|·log2(e) > 1: head 40 runs unfolded (q scaled by it could overflow f16).
      {.batch = 1,
       .tq = 100,
       .tk = 150,
       .heads = 2,
       .scale = 0.9f,
       .input_scale = 0.5f,
       .seed = 49},
  };
  // Block forms: 64-key tiles with 2 and 3 warp groups, 128-key tiles with 2.
  const std::pair<int, int> forms[] = {{2, 64}, {3, 64}, {2, 128}};
  for (auto [groups, keys] : forms) {
    for (int d : {40, 64, 80}) {
      for (Spec s : cases) {
        s.d = s.dv = d;
        s.sm90_groups = groups;
        s.sm90_key_tile = keys;
        check(s, Path::kDirect);
      }
    }
  }
  // A long key sequence (SD 1.5's 64² self attention): 64 or 32 tiles round the stage ring, in
  // the default schedule (deep at head 40), the shallow one and the deep ones; and those over
  // every tile count from 1 to 10 (their loops take 2 or 4 tiles a step, the rest run after it).
  for (int deep : {-1, 0, 2, 4})
    for (auto [groups, keys] : forms) {
      if (deep > 0 && keys != 64) continue;
      check({.batch = 1,
             .tq = 4096,
             .tk = 4096,
             .heads = 1,
             .d = 40,
             .dv = 40,
             .seed = 48,
             .sm90_groups = groups,
             .sm90_key_tile = keys,
             .sm90_deep = deep},
            Path::kDirect);
    }
  for (int deep : {0, 2, 4})
    for (int64_t tk : {1, 64, 65, 128, 129, 200, 256, 300, 384, 420, 512, 550, 640}) {
      check({.batch = 1,
             .tq = 130,
             .tk = tk,
             .heads = 2,
             .d = 40,
             .dv = 40,
             .input_scale = 2.0f,
             .seed = 52,
             .key_ramp = 6.0f,
             .sm90_groups = 3,
             .sm90_key_tile = 64,
             .sm90_deep = deep},
            Path::kDirect);
    }
  // A quarter of the exponentials on the FMA pipes (every head dim; rising maxima, a negative
  // scale, a masked last tile), the warp groups with turns and without (both ways at every head
  // dim, whatever the default), no proxy fence, no rescale slack, and head 40 unfolded (with and
  // without the cubic).
  for (auto [groups, keys] : forms) {
    for (int d : {40, 64, 80}) {
      for (Spec s : {cases[0], cases[3], cases[4]}) {
        s.d = s.dv = d;
        s.sm90_groups = groups;
        s.sm90_key_tile = keys;
        s.sm90_poly_exp_every = 4;
        check(s, Path::kDirect);
        s.sm90_poly_exp_every = 0;
        s.sm90_deep = -1;  // turns are the shallow schedule's (the deep one at head 40 has none)
        for (int turns : {1, 2}) {
          s.sm90_turns = turns;
          check(s, Path::kDirect);
        }
        s.sm90_turns = 0;
        check(s, Path::kDirect);
        s.sm90_deep = 0;
        s.sm90_no_proxy_fence = true;
        check(s, Path::kDirect);
        s.sm90_no_proxy_fence = false;
        s.rescale_slack = 0.0f;  // a rescale at every growth of a maximum
        check(s, Path::kDirect);
        s.rescale_slack = -1.0f;
        if (d == 40) {  // head 40 folds its softmax into the product by default: also unfolded
          s.sm90_no_fold = true;
          check(s, Path::kDirect);
          s.sm90_poly_exp_every = 4;
          check(s, Path::kDirect);
          s.sm90_no_fold = false, s.sm90_poly_exp_every = 0;
          if (keys == 64) {  // and the deep schedules, with slack and without (2: with the cubic)
            for (int deep : {2, 4}) {
              s.sm90_deep = deep;
              check(s, Path::kDirect);
              s.rescale_slack = 0.0f;
              check(s, Path::kDirect);
              s.rescale_slack = -1.0f;
            }
            s.sm90_deep = 2, s.sm90_poly_exp_every = 4;
            check(s, Path::kDirect);
            s.sm90_deep = 0, s.sm90_poly_exp_every = 0;
          }
        }
      }
    }
  }
  check({.batch = 1,
         .tq = 1024,
         .tk = 1024,
         .heads = 2,
         .d = 64,
         .dv = 64,
         .input_scale = 2.0f,
         .seed = 51,
         .sm90_groups = 3,
         .sm90_poly_exp_every = 4},
        Path::kDirect);
}

TEST(CudaAttentionSm90, RefusesWhatItDoesNotTake) {
  REQUIRE_GPU();
  DeviceBuffer buf(4096, "buf");
  FlashAttentionParams p;
  p.q = p.k = p.v = buf.as<uint16_t>();
  p.out = buf.as<uint16_t>();
  p.batch = 1, p.tq = 16, p.tk = 16, p.heads = 1, p.d = 40, p.dv = 40;
  p.ld_q = p.ld_k = p.ld_v = p.ld_out = 40;
  p.scale = 0.1f;
  const bool built = sm90_attention_here();
  EXPECT_EQ(backend::cuda::flash_attention_sm90_takes(p), built);
  auto refused = [&](FlashAttentionParams bad) {
    EXPECT_FALSE(backend::cuda::flash_attention_sm90_takes(bad));
    EXPECT_EQ(backend::cuda::launch_flash_attention_sm90(bad, gpu().ctx->stream()),
              cudaErrorInvalidValue);
  };
  FlashAttentionParams bad = p;
  bad.causal = true;
  refused(bad);
  bad = p, bad.d = bad.dv = 48;
  refused(bad);
  bad = p, bad.dv = 64;
  refused(bad);
  bad = p, bad.q = p.q + 1;  // not 16-byte aligned
  refused(bad);
  bad = p, bad.ld_k = 44;
  refused(bad);
  bad = p, bad.sm90_warp_groups = 4;
  refused(bad);
  bad = p, bad.sm90_key_tile = 96;
  refused(bad);
  bad = p, bad.sm90_poly_exp_every = 2;
  refused(bad);
  bad = p, bad.sm90_turns = 3;
  refused(bad);
  bad = p, bad.rescale_slack = 12.5f;
  refused(bad);
  bad = p, bad.tk = 0;
  refused(bad);
  bad = p, bad.sm90_deep = 3;
  refused(bad);
  bad = p, bad.sm90_deep = 2, bad.sm90_key_tile = 128;
  refused(bad);
  bad = p, bad.sm90_deep = 2, bad.d = bad.dv = 64, bad.ld_q = bad.ld_k = bad.ld_v = 64;
  refused(bad);
}

TEST(CudaAttentionSupport, HeadDimLimitsAndEstimates) {
  auto make = [](int64_t width, int heads, int64_t t) {
    auto g = std::make_unique<ir::Graph>(DType::kF32);
    const ir::ValueId q = g->add_input("q", DType::kF32, Shape{2, t, width});
    const ir::ValueId k = g->add_input("k", DType::kF32, Shape{2, 77, width});
    const ir::ValueId v = g->add_input("v", DType::kF32, Shape{2, 77, width});
    g->mark_output(g->add_node(ir::OpKind::kAttention, {q, k, v},
                               ir::AttentionAttrs{heads, 0.0f, false}, "attn"));
    return g;
  };
  const auto sd = make(320, 8, 4096), vae = make(512, 1, 4096), big = make(640, 8, 4096),
             huge = make(8192, 1, 64), odd = make(514, 1, 64);
  EXPECT_TRUE(backend::cuda::supports_attention(*sd, sd->nodes().back()));
  EXPECT_TRUE(backend::cuda::supports_attention(*vae, vae->nodes().back()));     // wide path
  EXPECT_FALSE(backend::cuda::supports_attention(*huge, huge->nodes().back()));  // D > 4096
  EXPECT_FALSE(backend::cuda::supports_attention(*odd, odd->nodes().back()));    // wide, D % 8
  const double us = backend::cuda::estimate_attention_us(*sd, sd->nodes().back());
  EXPECT_TRUE(std::isfinite(us) && us > 0) << us;
  EXPECT_GT(backend::cuda::estimate_attention_us(*big, big->nodes().back()), us);
  EXPECT_TRUE(std::isfinite(backend::cuda::estimate_attention_us(*vae, vae->nodes().back())));
  EXPECT_TRUE(std::isinf(backend::cuda::estimate_attention_us(*huge, huge->nodes().back())));

  ir::Graph g(DType::kF32);
  const ir::ValueId x = g.add_input("x", DType::kF32, Shape{2, 4});
  g.mark_output(g.add_node(ir::OpKind::kSilu, {x}, {}, "silu"));
  EXPECT_FALSE(backend::cuda::supports_attention(g, g.nodes().back()));
}

TEST(CudaAttention, RejectsUnsupportedAndMisbound) {
  REQUIRE_GPU();
  ir::Graph g(DType::kF32);
  const ir::ValueId q = g.add_input("q", DType::kF32, Shape{1, 4, 512});
  g.mark_output(  // a wide head with a causal mask: neither path runs it
      g.add_node(ir::OpKind::kAttention, {q, q, q}, ir::AttentionAttrs{1, 0.0f, true}, "wide"));
  EXPECT_THROW(backend::cuda::make_attention_kernel(*gpu().ctx, g, g.nodes().back()), Error);

  ir::Graph ok(DType::kF32);
  const ir::ValueId x = ok.add_input("x", DType::kF32, Shape{1, 4, 16});
  ok.mark_output(
      ok.add_node(ir::OpKind::kAttention, {x, x, x}, ir::AttentionAttrs{2, 0.0f, false}, "a"));
  auto kernel = backend::cuda::make_attention_kernel(*gpu().ctx, ok, ok.nodes().back());
  DeviceBuffer buf(4 * 16 * 4, "x");
  const TensorView f32{buf.data(), DType::kF32, Shape{1, 4, 16}};  // not the storage dtype
  const std::vector<TensorView> ins{f32, f32, f32};
  EXPECT_THROW(kernel->run(ins, f32), Error);

  // Direct launches with a knob out of range are refused before anything is queued.
  FlashAttentionParams p;
  p.q = p.k = p.v = buf.as<uint16_t>();
  p.out = buf.as<uint16_t>() + 64;
  p.batch = 1, p.tq = p.tk = 4, p.heads = 1, p.d = p.dv = 16;
  p.ld_q = p.ld_k = p.ld_v = p.ld_out = 16;
  p.scale = 0.25f;
  for (float slack : {-0.5f, 12.5f, std::numeric_limits<float>::quiet_NaN()}) {
    p.rescale_slack = slack;
    EXPECT_EQ(backend::cuda::launch_flash_attention(p, gpu().ctx->stream()), cudaErrorInvalidValue)
        << slack;
  }
  p.rescale_slack = -1.0f;
  p.multiprocessors = -1;
  EXPECT_EQ(backend::cuda::launch_flash_attention(p, gpu().ctx->stream()), cudaErrorInvalidValue);
  p.multiprocessors = 0;
  p.rows_per_warp = 8;
  EXPECT_EQ(backend::cuda::launch_flash_attention(p, gpu().ctx->stream()), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace hyrt::test

#else  // !HYRT_HAVE_CUDA

TEST(CudaAttention, NotBuilt) {
  GTEST_SKIP() << "built without the CUDA toolkit (HYRT_HAVE_CUDA off)";
}

#endif

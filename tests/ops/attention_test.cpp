// kAttention on the CPU backend vs a naive double reference.
#include "backend/cpu/attention_bf16.h"
#include "backend/cpu/attention_int8.h"
#include "backend/cpu/cpu_kernels.h"
#include "op_case.h"

#include <tuple>

namespace hyrt::test {
namespace {

using ir::OpKind;

// q [B, Tq, H·D], k [B, Tk, H·D], v [B, Tk, H·Dv] -> [B, Tq, H·Dv]
std::vector<double> attention_reference(const std::vector<float>& q, const std::vector<float>& k,
                                        const std::vector<float>& v, int64_t B, int64_t Tq,
                                        int64_t Tk, int64_t H, int64_t D, int64_t Dv, double scale,
                                        bool causal) {
  std::vector<double> out(static_cast<size_t>(B * Tq * H * Dv));
  std::vector<double> p(static_cast<size_t>(Tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Tq; ++i) {
        const float* qi = &q[((b * Tq + i) * H + h) * D];
        const int64_t valid = causal ? i + 1 : Tk;
        double m = -1e300;
        for (int64_t j = 0; j < valid; ++j) {
          const float* kj = &k[((b * Tk + j) * H + h) * D];
          double s = 0;
          for (int64_t d = 0; d < D; ++d)
            s += static_cast<double>(qi[d]) * kj[d];
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < valid; ++j)
          sum += p[j] = std::exp(p[j] - m);
        double* o = &out[((b * Tq + i) * H + h) * Dv];
        for (int64_t c = 0; c < Dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < valid; ++j)
            acc += p[j] * v[((b * Tk + j) * H + h) * Dv + c];
          o[c] = acc / sum;
        }
      }
  return out;
}

struct AttentionParams {
  int64_t batch, tq, tk, heads, d, dv;
  bool causal;
  float scale;  // 0: 1/sqrt(D)
  float input_scale;
};

class AttentionTest : public ::testing::TestWithParam<AttentionParams> {};

TEST_P(AttentionTest, MatchesReference) {
  const AttentionParams& p = GetParam();
  OpCase c;
  const ir::ValueId q = c.input({p.batch, p.tq, p.heads * p.d}, 1, p.input_scale);
  const ir::ValueId k = c.input({p.batch, p.tk, p.heads * p.d}, 2, p.input_scale);
  const ir::ValueId v = c.input({p.batch, p.tk, p.heads * p.dv}, 3);
  c.node(OpKind::kAttention, {q, k, v},
         ir::AttentionAttrs{static_cast<int>(p.heads), p.scale, p.causal});
  const double scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.d));
  const auto want = attention_reference(c.values(q), c.values(k), c.values(v), p.batch, p.tq, p.tk,
                                        p.heads, p.d, p.dv, scale, p.causal);
  EXPECT_OP_CLOSE("attention", c.run(), want);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionTest,
    ::testing::Values(AttentionParams{2, 13, 13, 3, 8, 8, false, 0, 1},        // self
                      AttentionParams{2, 13, 13, 3, 16, 16, true, 0, 2},       // causal (CLIP)
                      AttentionParams{1, 77, 77, 12, 7, 7, true, 0, 1},        // causal, 77 tokens
                      AttentionParams{2, 13, 77, 3, 8, 5, false, 0, 1},        // cross, Dv != D
                      AttentionParams{1, 300, 77, 2, 40, 40, false, 0.3f, 1},  // tail block
                      AttentionParams{1, 100, 100, 1, 96, 96, false, 0, 1},    // VAE: one head
                      AttentionParams{2, 1024, 1024, 8, 40, 40, false, 0, 2},  // tiled
                      // one head, causal, two query blocks split across threads
                      AttentionParams{1, 600, 600, 1, 16, 16, true, 0, 1}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

// Request batching: a sample's attention gives the same bits alone (a lone VAE's one head, one
// query block: a single tile, run outside the tiles' parallel region) or beside another sample
// (two tiles, each on a thread of the region): oneDNN's products run on one thread either way.
TEST(Attention, ASampleGivesTheSameBitsAloneOrBatched) {
  struct Shapes {
    int64_t t, d;
  };
  for (const Shapes& sh : {Shapes{64, 512}, Shapes{16, 128}, Shapes{256, 64}}) {
    const Tensor q = random_tensor(Shape{2, sh.t, sh.d}, 1),
                 k = random_tensor(Shape{2, sh.t, sh.d}, 2),
                 v = random_tensor(Shape{2, sh.t, sh.d}, 3);
    const auto run = [&](int64_t samples) {
      OpCase c;
      std::vector<ir::ValueId> ins;
      for (const Tensor* t : {&q, &k, &v}) {
        Tensor part(DType::kF32, Shape{samples, sh.t, sh.d});
        std::memcpy(part.data(), t->data(), part.bytes());
        ins.push_back(c.input_tensor(std::move(part)));
      }
      c.node(OpKind::kAttention, ins, ir::AttentionAttrs{1, 0.0f, false});
      return c.run();
    };
    const std::vector<float> alone = run(1), batched = run(2);
    ASSERT_EQ(alone.size() * 2, batched.size());
    EXPECT_EQ(0, std::memcmp(alone.data(), batched.data(), alone.size() * sizeof(float)))
        << "t " << sh.t << " d " << sh.d << ": the first sample differs batched";
  }
}

// The tiles' scratch is a workspace the executor plans into the arena (attention.cpp): the kernel
// asks for one, computes in the one bound (poisoned here first) exactly what it computes in scratch
// of its own when nothing is bound, and holds nothing of its own while bound.
TEST(Attention, ScratchIsTheBoundWorkspace) {
  OpCase c;
  const ir::ValueId q = c.input({2, 1024, 8 * 40}, 1);
  const ir::ValueId k = c.input({2, 1024, 8 * 40}, 2);
  const ir::ValueId v = c.input({2, 1024, 8 * 40}, 3);
  c.node(OpKind::kAttention, {q, k, v}, ir::AttentionAttrs{8, 0.0f, false});
  auto kernel = cpu_backend().prepare(c.graph, c.graph.nodes().back(), c.weights, c.cache);
  ASSERT_GT(kernel->workspace_bytes(), 0u);
  Tensor qt(DType::kF32, Shape{2, 1024, 320}), kt(DType::kF32, Shape{2, 1024, 320}),
      vt(DType::kF32, Shape{2, 1024, 320});
  for (auto [t, id] : {std::pair{&qt, q}, {&kt, k}, {&vt, v}}) {
    const std::vector<float> values = c.values(id);
    std::memcpy(t->data(), values.data(), t->bytes());
  }
  Tensor y(DType::kF32, Shape{2, 1024, 320});
  auto run = [&] {
    poison(y.data(), y.bytes());
    const std::vector<TensorView> views{qt.view(), kt.view(), vt.view()};
    kernel->run(views, y.view());
    return std::vector<float>(y.as<float>(), y.as<float>() + y.numel());
  };
  const std::vector<float> own = run();
  EXPECT_GT(kernel->held_bytes(), 0u);
  AlignedBuffer ws(kernel->workspace_bytes(), "test workspace");
  std::memset(ws.data(), 0xff, ws.size());
  kernel->bind_workspace(ws.data());
  EXPECT_EQ(kernel->held_bytes(), 0u);
  EXPECT_EQ(run(), own);
  EXPECT_EQ(kernel->held_bytes(), 0u);
}

// Reduced precision under W8A8 (attention.cpp): the CPU backend runs attention in int8 (where the
// fused int8 kernel runs: AVX-512 VNNI, no AMX) or else bf16 on a graph holding 8-bit S weights (a
// quantized model's), for Tq·Tk >= 256², where the CPU has bf16 or int8 dot products. Then the
// result is within 1e-2 (bf16) or 3e-2 (int8) of the reference and differs from the f32 kernel's
// (the rounding shows: the path ran); in W8 mode, or without those instructions, it is the f32
// kernel (1e-5).
TEST(AttentionBf16, WithinItsPrecisionOfTheReferenceOnQuantizedGraphs) {
  using backend::cpu::AttentionPrecision;
  const AttentionParams cases[] = {
      {2, 256, 256, 8, 40, 40, false, 0, 2},   // SD 1.5's 64² level, fewer tokens
      {1, 300, 600, 2, 64, 64, false, 0, 1},   // SDXL's head dim, a tail block
      {2, 1024, 77, 8, 40, 40, false, 0, 1},   // cross attention to 77 text tokens
      {1, 520, 520, 1, 16, 24, true, 0.3f, 1}  // causal, Dv != D, one head split over threads
  };
  std::unique_ptr<backend::Backend> w8a8 =
      backend::make_cpu_backend({.int8_mode = backend::Int8Mode::kW8A8});
  std::unique_ptr<backend::Backend> w8 =
      backend::make_cpu_backend({.int8_mode = backend::Int8Mode::kW8});
  for (const AttentionParams& p : cases) {
    SCOPED_TRACE(str_cat("B=", p.batch, " Tq=", p.tq, " Tk=", p.tk, " H=", p.heads, " D=", p.d,
                         " Dv=", p.dv, p.causal ? " causal" : ""));
    OpCase c;
    const ir::ValueId q = c.input({p.batch, p.tq, p.heads * p.d}, 11, p.input_scale);
    const ir::ValueId k = c.input({p.batch, p.tk, p.heads * p.d}, 12, p.input_scale);
    const ir::ValueId v = c.input({p.batch, p.tk, p.heads * p.dv}, 13);
    // A linear node on an 8-bit S weight in the graph (not run): what makes it a quantized
    // model's.
    c.weights.add("quantized", Tensor(DType::kS8, Shape{4, 4}));
    c.node(OpKind::kLinear,
           {c.input({1, 4}, 14), c.graph.add_weight("quantized", DType::kS8, Shape{4, 4})});
    c.node(OpKind::kAttention, {q, k, v},
           ir::AttentionAttrs{static_cast<int>(p.heads), p.scale, p.causal});
    const double scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.d));
    const auto want = attention_reference(c.values(q), c.values(k), c.values(v), p.batch, p.tq,
                                          p.tk, p.heads, p.d, p.dv, scale, p.causal);
    const std::vector<float> f32 = c.run_on(*w8);
    EXPECT_OP_CLOSE("attention", f32, want);
    const std::vector<float> got = c.run_on(*w8a8);
    const double err = rel_error(got, want);
    // What the backend asks for under W8A8 unless $HYRT_CPU_ATTENTION says otherwise.
    const backend::cpu::AttentionOverride forced = backend::cpu::attention_override();
    const bool int8_asked = forced == backend::cpu::AttentionOverride::kNone ||
                            forced == backend::cpu::AttentionOverride::kInt8;
    const AttentionPrecision runs = backend::cpu::attention_precision_run(
        int8_asked ? AttentionPrecision::kInt8 : AttentionPrecision::kBF16, p.d, p.dv);
    if (runs == AttentionPrecision::kF32) {
      EXPECT_LE(err, kTolerance) << "no bf16 or int8 attention here: f32 expected";
      continue;
    }
    const bool int8 = runs == AttentionPrecision::kInt8;
    double& worst = worst_errors()[int8 ? "attention int8" : "attention bf16"];
    worst = std::max(worst, err);
    EXPECT_LE(err, int8 ? 3e-2 : 1e-2) << (int8 ? "int8" : "bf16") << " attention rel L2 " << err;
    EXPECT_GT(rel_error(got, std::vector<double>(f32.begin(), f32.end())), 1e-5)
        << "the W8A8 backend's attention equals the f32 kernel's: the reduced precision did not "
           "run";
  }
}

// Under FloatPrecision::kBF16 attention takes the bf16 path on any graph (no 8-bit S weights
// needed) from Tq·Tk >= 256²; below that (the text encoders' 77 tokens) it stays f32.
TEST(AttentionBf16, UnderBf16PrecisionOnFloatGraphs) {
  for (const AttentionParams& p : {AttentionParams{2, 256, 256, 8, 40, 40, false, 0, 2},
                                   AttentionParams{1, 77, 77, 4, 16, 16, true, 0, 1}}) {
    SCOPED_TRACE(str_cat("Tq=", p.tq, " Tk=", p.tk));
    OpCase c;
    const ir::ValueId q = c.input({p.batch, p.tq, p.heads * p.d}, 11);
    const ir::ValueId k = c.input({p.batch, p.tk, p.heads * p.d}, 12);
    const ir::ValueId v = c.input({p.batch, p.tk, p.heads * p.dv}, 13);
    c.node(OpKind::kAttention, {q, k, v},
           ir::AttentionAttrs{static_cast<int>(p.heads), 0, p.causal});
    const auto want =
        attention_reference(c.values(q), c.values(k), c.values(v), p.batch, p.tq, p.tk, p.heads,
                            p.d, p.dv, 1.0 / std::sqrt(static_cast<double>(p.d)), p.causal);
    const std::vector<float> f32 = c.run();
    EXPECT_OP_CLOSE("attention", f32, want);
    EXPECT_BF16_CLOSE("attention bf16", p.tq * p.tk >= 256 * 256, c.run_on(bf16_backend()), want,
                      f32);
  }
}

// A fused kernel (attention_bf16.h, attention_int8.h) called directly, so that it is tested on any
// CPU that has its instructions whichever path the backend picks there, against the f64
// reference: every output register blocking (Dv 5..256 in 16s: 1..16 vectors, half and full last
// ones), odd head dims, key counts off the 16-key vectors and the key tiles, causal masks across
// tiles, a negative scale, and each head's rows in two calls split off the 16-row blocks (rows
// outside a call stay poisoned). k_offset adds a constant
// per channel to the keys (a biased K, as real layers' keys are: int8's smoothing must take it
// out). Returns the worst relative L2 error over the cases.
template <class Flash, class... Form>
double worst_fused_error(float k_offset, Form... form) {
  const AttentionParams cases[] = {
      {2, 300, 300, 3, 40, 40, false, 0, 2},    // SD 1.5's heads, tails of every tile
      {1, 77, 77, 2, 64, 64, true, 0, 1},       // causal inside one tile
      {1, 530, 530, 1, 16, 24, true, 0.3f, 1},  // causal across tiles, Dv != D
      {2, 200, 77, 2, 80, 80, false, 0, 1},     // cross attention to 77 tokens
      {1, 100, 261, 2, 7, 5, false, -0.4f, 2},  // odd D, negative scale
      {1, 33, 129, 1, 160, 160, false, 0, 1},   // SD 1.5's deepest heads
      {1, 40, 300, 1, 33, 256, false, 0, 1},    // the widest Dv
      {1, 20, 50, 2, 24, 120, false, 0, 1},     // 8 vectors of output
      {1, 20, 50, 1, 12, 200, false, 0, 1},     // 13 vectors
      {1, 64, 600, 1, 40, 40, false, 0, 4},     // peaked rows (few keys carry the weight)
  };
  double worst = 0;
  for (const AttentionParams& p : cases) {
    SCOPED_TRACE(str_cat("B=", p.batch, " Tq=", p.tq, " Tk=", p.tk, " H=", p.heads, " D=", p.d,
                         " Dv=", p.dv, p.causal ? " causal" : "", " scale=", p.scale));
    const int64_t ld_qk = p.heads * p.d, ld_v = p.heads * p.dv;
    const std::vector<float> q =
        random_floats(static_cast<size_t>(p.batch * p.tq * ld_qk), 21, p.input_scale);
    std::vector<float> k =
        random_floats(static_cast<size_t>(p.batch * p.tk * ld_qk), 22, p.input_scale);
    for (size_t i = 0; i < k.size(); ++i)
      k[i] +=
          k_offset * static_cast<float>(static_cast<int64_t>(i % static_cast<size_t>(p.d)) % 3 - 1);
    const std::vector<float> v = random_floats(static_cast<size_t>(p.batch * p.tk * ld_v), 23);
    const double scale = p.scale != 0 ? p.scale : 1.0 / std::sqrt(static_cast<double>(p.d));
    const auto want =
        attention_reference(q, k, v, p.batch, p.tq, p.tk, p.heads, p.d, p.dv, scale, p.causal);
    const Flash kernel(p.tk, p.d, p.dv, static_cast<float>(scale), p.causal, form...);
    AlignedBuffer scratch(kernel.scratch_bytes(), "test scratch");
    std::vector<float> out(static_cast<size_t>(p.batch * p.tq * ld_v),
                           std::numeric_limits<float>::quiet_NaN());
    const int64_t split = std::min<int64_t>(p.tq, 21);  // off the 16-row blocks
    for (int64_t b = 0; b < p.batch; ++b)
      for (int64_t h = 0; h < p.heads; ++h) {
        kernel.pack_head(k.data() + b * p.tk * ld_qk + h * p.d, ld_qk,
                         v.data() + b * p.tk * ld_v + h * p.dv, ld_v, scratch.data());
        const float* q_h = q.data() + b * p.tq * ld_qk + h * p.d;
        float* out_h = out.data() + b * p.tq * ld_v + h * p.dv;
        kernel.run_rows(q_h, ld_qk, split, p.tq - split, out_h, ld_v, scratch.data());
        if (b == 0 && h == 0 && split > 0) {  // rows before `split` are still unwritten
          EXPECT_TRUE(std::isnan(out_h[0])) << "run_rows wrote outside its rows";
        }
        kernel.run_rows(q_h, ld_qk, 0, split, out_h, ld_v, scratch.data());
      }
    const double err = rel_error(out, want);
    EXPECT_TRUE(std::isfinite(err)) << "rows left unwritten or not finite";
    worst = std::max(worst, err);
  }
  return worst;
}

TEST(FlashAttentionBf16, MatchesTheReference) {
  using backend::cpu::FlashAttentionBf16;
  if (!FlashAttentionBf16::supports(40, 40)) GTEST_SKIP() << "no AVX-512 BF16 here (or capped)";
  // Both product forms where the CPU has AMX: tiles, and the vdpbf16ps loops the others run.
  using Products = FlashAttentionBf16::Products;
  std::vector<Products> forms{Products::kVector};
  if (backend::cpu::amx::tiles_usable()) forms.push_back(Products::kAmx);
  for (const Products form : forms) {
    const bool amx = form == Products::kAmx;
    SCOPED_TRACE(amx ? "AMX" : "AVX-512 BF16");
    const double err = worst_fused_error<FlashAttentionBf16>(0.0f, form);
    double& worst = worst_errors()[amx ? "attention bf16 fused (AMX)" : "attention bf16 fused"];
    worst = std::max(worst, err);
    EXPECT_LE(err, 1e-2) << "fused bf16 attention rel L2 " << err;
  }
}

// int8 operands (u8 Q and P, s8 K and V): per-row, per-key and per-channel scales keep the error
// near W8A8's per-row activation rounding (~1e-2), with and without a bias on K's channels.
TEST(FlashAttentionInt8, MatchesTheReference) {
  using backend::cpu::FlashAttentionInt8;
  if (!FlashAttentionInt8::supports(40, 40)) GTEST_SKIP() << "no AVX-512 VNNI here (or capped)";
  // Both product forms where the CPU has AMX: tiles, and the VNNI loops the others run.
  using Products = FlashAttentionInt8::Products;
  std::vector<Products> forms{Products::kVector};
  if (backend::cpu::amx::tiles_usable()) forms.push_back(Products::kAmx);
  for (const Products form : forms)
    for (const float offset : {0.0f, 4.0f}) {
      const bool amx = form == Products::kAmx;
      SCOPED_TRACE(str_cat(amx ? "AMX" : "AVX-512 VNNI", ", k offset ", offset));
      const double err = worst_fused_error<FlashAttentionInt8>(offset, form);
      double& worst = worst_errors()[amx ? "attention int8 fused (AMX)" : "attention int8 fused"];
      worst = std::max(worst, err);
      EXPECT_LE(err, 3e-2) << "fused int8 attention rel L2 " << err;
    }
}

// A fused kernel's outputs in its vector form and on AMX tiles for the same heads: every tile
// group (head dims of one shorter group, of whole groups and of both; Dv of 1..4 accumulators and
// more), keys off the 64-key tiles. Returns the relative L2 difference (the vector form as the
// reference); fails if a form does not run as asked.
template <class Flash>
double amx_against_vector() {
  using Products = typename Flash::Products;
  double worst = 0;
  for (const auto& [tk, d, dv] : {std::tuple<int64_t, int64_t, int64_t>{300, 40, 40},
                                  {77, 80, 80},
                                  {130, 160, 160},
                                  {64, 64, 64},
                                  {200, 7, 200}}) {
    SCOPED_TRACE(str_cat("Tk=", tk, " D=", d, " Dv=", dv));
    const int64_t tq = 37;
    const std::vector<float> q = random_floats(static_cast<size_t>(tq * d), 31);
    const std::vector<float> k = random_floats(static_cast<size_t>(tk * d), 32);
    const std::vector<float> v = random_floats(static_cast<size_t>(tk * dv), 33);
    std::vector<float> outs[2];
    for (const bool amx : {false, true}) {
      const Flash kernel(tk, d, dv, 0.2f, false, amx ? Products::kAmx : Products::kVector);
      EXPECT_EQ(kernel.uses_amx(), amx);
      AlignedBuffer scratch(kernel.scratch_bytes(), "test scratch");
      std::vector<float>& out = outs[amx ? 1 : 0];
      out.assign(static_cast<size_t>(tq * dv), std::numeric_limits<float>::quiet_NaN());
      kernel.pack_head(k.data(), d, v.data(), dv, scratch.data());
      kernel.run_rows(q.data(), d, 0, tq, out.data(), dv, scratch.data());
    }
    worst =
        std::max(worst, rel_error(outs[1], std::vector<double>(outs[0].begin(), outs[0].end())));
  }
  return worst;
}

// int8: the same operands summed exactly in int32 and the same f32 operations after, so the two
// forms are bitwise equal (padding keys past Tk are masked out of both).
TEST(FlashAttentionInt8, AmxAgreesWithVnni) {
  using backend::cpu::FlashAttentionInt8;
  if (!FlashAttentionInt8::supports(40, 40) || !backend::cpu::amx::tiles_usable())
    GTEST_SKIP() << "no AMX here (or capped)";
  EXPECT_EQ(amx_against_vector<FlashAttentionInt8>(), 0.0);
}

// bf16: the same bf16 operands, f32 sums in another order: equal to f32 rounding.
TEST(FlashAttentionBf16, AmxAgreesWithAvx512) {
  using backend::cpu::FlashAttentionBf16;
  if (!FlashAttentionBf16::supports(40, 40) || !backend::cpu::amx::tiles_usable())
    GTEST_SKIP() << "no AMX here (or capped)";
  EXPECT_LE(amx_against_vector<FlashAttentionBf16>(), 1e-5);
}

}  // namespace
}  // namespace hyrt::test

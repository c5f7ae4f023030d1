// Activations (gelu, geglu, quick_gelu, silu), add/mul with broadcasting, scale, softmax over
// the last axis, and the f32 GEMMs' fused-epilogue pass. All AVX2 with scalar tails, parallel
// over contiguous chunks or rows; every op whose traits allow in-place execution reads element i
// before writing element i only, so out == in[0] is safe.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/vec_math.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

constexpr int64_t kGrain = 16 * 1024;  // elements per task: amortises the fork/join

// --- Unary activations ----------------------------------------------------------------

template <class F>
void apply_unary(const float* x, float* y, int64_t n) {
  parallel_for(n, kGrain, [&](int64_t begin, int64_t end) {
    int64_t i = begin;
    for (; i + 8 <= end; i += 8)
      _mm256_storeu_ps(y + i, F::vec(_mm256_loadu_ps(x + i)));
    for (; i < end; ++i)
      y[i] = F::one(x[i]);
  });
}

class UnaryKernel final : public Kernel {
 public:
  UnaryKernel(ir::OpKind op, int64_t n) : op_(op), n_(n) {}
  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<const float>();
    float* y = output.as<float>();
    switch (op_) {
      case ir::OpKind::kGelu:
        return apply_unary<Gelu>(x, y, n_);
      case ir::OpKind::kSilu:
        return apply_unary<Silu>(x, y, n_);
      case ir::OpKind::kQuickGelu:
        return apply_unary<QuickGelu>(x, y, n_);
      case ir::OpKind::kRelu:
        return apply_unary<Relu>(x, y, n_);
      case ir::OpKind::kTanh:
        return apply_unary<Tanh>(x, y, n_);
      default:
        HYRT_ASSERT(false, "not a unary op: ", ir::op_name(op_));
    }
  }

 private:
  ir::OpKind op_;
  int64_t n_;
};

// x [R, 2N] -> y [R, N] = x[:, :N] · gelu(x[:, N:]) (diffusers GEGLU: hidden, gate).
class GegluKernel final : public Kernel {
 public:
  GegluKernel(int64_t rows, int64_t n) : rows_(rows), n_(n) {}
  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    geglu_rows(inputs[0].as<const float>(), rows_, n_, output.as<float>());
  }

 private:
  int64_t rows_, n_;
};

class ScaleKernel final : public Kernel {
 public:
  ScaleKernel(int64_t n, float alpha, float beta) : n_(n), alpha_(alpha), beta_(beta) {}
  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<const float>();
    float* y = output.as<float>();
    const float alpha = alpha_, beta = beta_;
    parallel_for(n_, kGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        y[i] = x[i] * alpha + beta;
    });
  }

 private:
  int64_t n_;
  float alpha_, beta_;
};

// Softmax over the last axis: x [R, C].
class SoftmaxKernel final : public Kernel {
 public:
  SoftmaxKernel(int64_t rows, int64_t c) : rows_(rows), c_(c) {}
  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* x = inputs[0].as<const float>();
    float* y = output.as<float>();
    const int64_t c = c_;
    parallel_for(rows_, std::max<int64_t>(1, kGrain / c), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* in = x + r * c;
        float* out = y + r * c;
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        int64_t i = 0;
        for (; i + 8 <= c; i += 8)
          vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(in + i));
        float m = hmax_avx2(vmax);
        for (; i < c; ++i)
          m = std::max(m, in[i]);
        const __m256 vm = _mm256_set1_ps(m);
        __m256 vsum = _mm256_setzero_ps();
        i = 0;
        for (; i + 8 <= c; i += 8) {
          const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(in + i), vm));
          _mm256_storeu_ps(out + i, e);
          vsum = _mm256_add_ps(vsum, e);
        }
        float sum = hsum_avx2(vsum);
        for (; i < c; ++i) {
          out[i] = std::exp(in[i] - m);
          sum += out[i];
        }
        const float inv = 1.0f / sum;
        for (i = 0; i < c; ++i)
          out[i] *= inv;
      }
    });
  }

 private:
  int64_t rows_, c_;
};

// --- add / mul with numpy broadcasting of b onto a ---------------------------------------
//
// b's shape is right-aligned against a's. Adjacent dimensions that are both broadcast
// (b has 1, a has more) or both not broadcast merge into one, so every pattern becomes a
// short list of (extent, b_stride) dims with b_stride 0 for broadcast ones:
//   same shape            -> [(n, 1)]
//   [C] over [B, T, C]    -> [(B·T, 0), (C, 1)]
//   [B,1,1,C] over NHWC   -> [(B, C), (H·W, 0), (C, 1)]
// The innermost dim is then a contiguous vector loop (b stride 1) or a scalar broadcast
// (b stride 0); the outer dims are walked with an index counter per row of the inner dim.
struct BroadcastPlan {
  std::vector<int64_t> extent;    // merged dims of a / out, outermost first
  std::vector<int64_t> b_stride;  // b's element stride for each merged dim (0: broadcast)
};

BroadcastPlan plan_broadcast(const Shape& a, const Shape& b) {
  BroadcastPlan plan;
  const int rank = a.rank();
  std::vector<int64_t> extent, bcast;
  for (int i = 0; i < rank; ++i) {
    const int bi = i - (rank - b.rank());
    const int64_t bd = bi >= 0 ? b[bi] : 1;
    if (a[i] == 1) continue;  // size-1 dims change nothing
    const bool broadcast = bd == 1;
    if (!extent.empty() && static_cast<bool>(bcast.back()) == broadcast) {
      extent.back() *= a[i];
    } else {
      extent.push_back(a[i]);
      bcast.push_back(broadcast ? 1 : 0);
    }
  }
  if (extent.empty()) {  // a scalar-shaped tensor
    extent.push_back(1);
    bcast.push_back(0);
  }
  // b strides: product of the non-broadcast extents to the right.
  plan.extent = extent;
  plan.b_stride.resize(extent.size());
  int64_t stride = 1;
  for (int i = static_cast<int>(extent.size()) - 1; i >= 0; --i) {
    plan.b_stride[i] = bcast[i] ? 0 : stride;
    if (!bcast[i]) stride *= extent[i];
  }
  return plan;
}

template <bool kMul>
inline void binary_row(const float* a, const float* b, int64_t b_step, float* y, int64_t n) {
  int64_t i = 0;
  if (b_step == 1) {
    for (; i + 8 <= n; i += 8) {
      const __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
      _mm256_storeu_ps(y + i, kMul ? _mm256_mul_ps(va, vb) : _mm256_add_ps(va, vb));
    }
    for (; i < n; ++i)
      y[i] = kMul ? a[i] * b[i] : a[i] + b[i];
  } else {
    const float s = b[0];
    const __m256 vb = _mm256_set1_ps(s);
    for (; i + 8 <= n; i += 8) {
      const __m256 va = _mm256_loadu_ps(a + i);
      _mm256_storeu_ps(y + i, kMul ? _mm256_mul_ps(va, vb) : _mm256_add_ps(va, vb));
    }
    for (; i < n; ++i)
      y[i] = kMul ? a[i] * s : a[i] + s;
  }
}

class BinaryKernel final : public Kernel {
 public:
  explicit BinaryKernel(const PrepareContext& ctx)
      : inputs_(ctx),
        mul_(ctx.node.op == ir::OpKind::kMul),
        plan_(plan_broadcast(ctx.input(0).shape, ctx.input(1).shape)) {}

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const float* a = inputs[0].as<const float>();
    const float* b = inputs_.get(inputs, 1);
    float* y = output.as<float>();
    const int outer_dims = static_cast<int>(plan_.extent.size()) - 1;
    const int64_t inner = plan_.extent.back();
    const int64_t inner_step = plan_.b_stride.back() != 0 ? 1 : 0;
    int64_t rows = 1;
    for (int d = 0; d < outer_dims; ++d)
      rows *= plan_.extent[d];
    // Small inner rows (e.g. C = 35): hand a task several rows.
    parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t b_offset = 0, rem = r;
        for (int d = outer_dims - 1; d >= 0; --d) {
          b_offset += rem % plan_.extent[d] * plan_.b_stride[d];
          rem /= plan_.extent[d];
        }
        if (mul_)
          binary_row<true>(a + r * inner, b + b_offset, inner_step, y + r * inner, inner);
        else
          binary_row<false>(a + r * inner, b + b_offset, inner_step, y + r * inner, inner);
      }
    });
  }

 private:
  F32Inputs inputs_;
  bool mul_;
  BroadcastPlan plan_;
};

}  // namespace

// A fused GEMM epilogue's pass after an f32 matmul (cpu_kernels.h): the activations above,
// then the residual, one read and one write of y.
void activate_and_add(float* y, const float* residual, int64_t n, ir::Activation activation) {
  with_activation(activation, [&]<class Act>(Act) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      __m256 v = Act::vec(_mm256_loadu_ps(y + i));
      if (residual) v = _mm256_add_ps(v, _mm256_loadu_ps(residual + i));
      _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; ++i)
      y[i] = Act::one(y[i]) + (residual ? residual[i] : 0.0f);
  });
}

void geglu_rows_serial(const float* x, int64_t rows, int64_t n, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* hidden = x + r * 2 * n;
    const float* gate = hidden + n;
    float* out = y + r * n;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(hidden + i),
                                              Gelu::vec(_mm256_loadu_ps(gate + i))));
    for (; i < n; ++i)
      out[i] = hidden[i] * Gelu::one(gate[i]);
  }
}

void geglu_rows(const float* x, int64_t rows, int64_t n, float* y) {
  parallel_for(
      rows, std::max<int64_t>(1, kGrain / std::max<int64_t>(n, 1)),
      [&](int64_t r0, int64_t r1) { geglu_rows_serial(x + r0 * 2 * n, r1 - r0, n, y + r0 * n); });
}

void apply_gemm_epilogue(float* y, int64_t n, const GemmEpilogueArgs& epilogue) {
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    activate_and_add(y + b, epilogue.residual ? epilogue.residual + b : nullptr, e - b,
                     epilogue.activation);
  });
}

std::unique_ptr<Kernel> make_elementwise_kernel(const PrepareContext& ctx) {
  const Shape& x = ctx.input(0).shape;
  const int64_t n = x.numel();
  switch (ctx.node.op) {
    case ir::OpKind::kGelu:
    case ir::OpKind::kSilu:
    case ir::OpKind::kQuickGelu:
    case ir::OpKind::kRelu:
    case ir::OpKind::kTanh:
      return std::make_unique<UnaryKernel>(ctx.node.op, n);
    case ir::OpKind::kGeglu: {
      const int64_t half = x.dim(-1) / 2;
      return std::make_unique<GegluKernel>(n / (2 * half), half);
    }
    case ir::OpKind::kScale: {
      const auto& a = ctx.node.attr<ir::ScaleAttrs>();
      return std::make_unique<ScaleKernel>(n, a.alpha, a.beta);
    }
    case ir::OpKind::kSoftmax: {
      const int64_t c = x.rank() > 0 ? x.dim(-1) : 1;
      return std::make_unique<SoftmaxKernel>(c > 0 ? n / c : 0, c);
    }
    case ir::OpKind::kAdd:
    case ir::OpKind::kMul:
      return std::make_unique<BinaryKernel>(ctx);
    default:
      fail(ErrorCode::kInternal, "make_elementwise_kernel: unexpected op ",
           ir::op_name(ctx.node.op));
  }
}

}  // namespace hyrt::backend::cpu

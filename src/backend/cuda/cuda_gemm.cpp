// Linear nodes as cuBLASLt GEMM programs with two candidates (cuda_backend.h, GemmCandidate).
//
// Layout. hyrt's row-major y [M, N] = x [M, K] · w [N, K]ᵀ is, read column-major, the cuBLASLt
// problem D [N, M] = op(A) · B with A = w stored K×N (ld K) and transposed, B = x stored K×M
// (ld K) as is, and D = y stored N×M (ld N): the "TN" layout, both operands K-contiguous —
// the one layout cuBLASLt's int8 kernels accept. They also want m (here N) and k to be
// multiples of 4, and so the leading dimensions: the s8 weights are uploaded zero-padded to
// [N4, K4], the activation quantizer writes rows of K4 with zeros after K, and the s32 result
// goes to a [M, N4] scratch that the epilogue reads back into the dense [M, N] output. The
// padding adds exact zeros to every dot product.
//
// Tuning (first use of a key). For each candidate: its staging kernels run once, then each of
// the cuBLASLt heuristic's top algorithms is timed alone (median of tune_reps runs), and
// with the fastest one the whole candidate is timed the same way. The faster whole candidate
// wins. Timing runs on the node's own uploaded weights and random activations (never zeros:
// they can run faster than real data), with a spin kernel queued first so that events measure
// GPU time, not the host's launch rate (per-call host overhead is CUDA graphs' business).
#include "backend/cuda/cuda_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_kernels.h"
#include "core/buffer.h"
#include "core/error.h"
#include "core/half.h"
#include "core/log.h"

namespace hyrt::backend::cuda {

const char* candidate_name(GemmCandidate c) {
  return c == GemmCandidate::kF16 ? "f16" : "w8a8";
}

std::string GemmTuning::to_string() const {
  auto one = [](const char* name, const GemmCandidateStats& s) {
    if (!s.available) return str_cat(name, " n/a");
    return str_cat(name, " ", s.total_us, " us (gemm ", s.gemm_us, " us, ", s.algos_timed,
                   " algos)");
  };
  return str_cat(key.to_string(), ": ", one("f16", f16), ", ", one("w8a8", w8a8), " -> ",
                 candidate_name(chosen));
}

GemmKey linear_gemm_key(const ir::Graph& graph, const ir::Node& node) {
  const ir::Value& x = graph.value(node.inputs.at(0));
  const ir::Value& w = graph.value(node.inputs.at(1));
  GemmKey key;
  key.n = w.shape[0];
  key.k = w.shape[1];
  key.m = key.k > 0 ? x.shape.numel() / key.k : 0;
  key.batch = 1;
  key.a_type = x.dtype;
  key.w_type = w.dtype == DType::kS8 ? DType::kS8 : DType::kF16;
  key.out_type = x.dtype;
  key.w_transposed = true;
  key.epilogue = node.inputs.size() == 3 ? static_cast<uint8_t>(Epilogue::kBias) : 0;
  return key;
}

namespace {

int64_t round_up4(int64_t v) {
  return (v + 3) / 4 * 4;
}

FloatType float_type(DType t) {
  return t == DType::kF16 ? FloatType::kF16 : FloatType::kF32;
}

cudaDataType_t cuda_float_type(DType t) {
  return t == DType::kF16 ? CUDA_R_16F : CUDA_R_32F;
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Host -> device, complete on return. On the backend's own stream (a non-blocking stream does
// not wait for the legacy default stream that a plain cudaMemcpy uses), then synchronised.
void upload(const CudaContext& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  HYRT_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx.stream()));
  HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
}

// --- cuBLASLt objects ------------------------------------------------------------------------

struct MatmulDescDeleter {
  void operator()(cublasLtMatmulDesc_t d) const { cublasLtMatmulDescDestroy(d); }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayout_t l) const { cublasLtMatrixLayoutDestroy(l); }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreference_t p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, MatmulDescDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, LayoutDeleter>;
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, PreferenceDeleter>;

template <class T>
void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const T& value) {
  HYRT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)));
}

template <class T>
void set_pref(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr,
              const T& value) {
  HYRT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attr, &value, sizeof(value)));
}

// One cuBLASLt matmul configuration: D [m, n] = op(A) · B, A stored k×m and transposed, B
// stored k×n, D m×n, all column-major and dense; optional bias epilogue (bias[m] added to
// every column of D).
struct LtGemm {
  MatmulDesc op;
  Layout a, b, d;
};

Layout make_layout(cudaDataType_t type, int64_t rows, int64_t cols) {
  cublasLtMatrixLayout_t l = nullptr;
  HYRT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), rows));
  return Layout(l);
}

LtGemm make_lt_gemm(cublasComputeType_t compute, cudaDataType_t scale_type, cudaDataType_t ab_type,
                    cudaDataType_t d_type, int64_t m, int64_t n, int64_t k, const void* bias) {
  LtGemm g;
  cublasLtMatmulDesc_t op = nullptr;
  HYRT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, compute, scale_type));
  g.op.reset(op);
  set_attr(op, CUBLASLT_MATMUL_DESC_TRANSA, CUBLAS_OP_T);
  set_attr(op, CUBLASLT_MATMUL_DESC_TRANSB, CUBLAS_OP_N);
  if (bias) {
    set_attr(op, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS);
    set_attr(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias);
  }
  g.a = make_layout(ab_type, k, m);
  g.b = make_layout(ab_type, k, n);
  g.d = make_layout(d_type, m, n);
  return g;
}

// The heuristic's top `count` algorithms for `g` that fit the workspace. `min_align_bcd`:
// the pointer alignment promised for B, C and D (the rest stay at cuBLASLt's default 256).
// Empty when cuBLASLt supports no algorithm for the configuration.
std::vector<cublasLtMatmulHeuristicResult_t> heuristics(const CudaContext& ctx, const LtGemm& g,
                                                        int count, uint32_t min_align_bcd) {
  cublasLtMatmulPreference_t p = nullptr;
  HYRT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p));
  Preference pref(p);
  set_pref(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
           static_cast<uint64_t>(ctx.workspace_bytes()));
  if (min_align_bcd) {
    set_pref(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, min_align_bcd);
    set_pref(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, min_align_bcd);
    set_pref(p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, min_align_bcd);
  }
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(std::max(count, 1)));
  int returned = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      ctx.lt(), g.op.get(), g.a.get(), g.b.get(), g.d.get(), g.d.get(), p,
      static_cast<int>(results.size()), results.data(), &returned);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED) return {};
  if (st != CUBLAS_STATUS_SUCCESS)
    throw_cublas_error(st, "cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__);
  results.resize(static_cast<size_t>(returned));
  std::erase_if(results, [](const auto& r) { return r.state != CUBLAS_STATUS_SUCCESS; });
  return results;
}

// --- timing --------------------------------------------------------------------------------

class Events {
 public:
  explicit Events(int n) : ev_(static_cast<size_t>(n), nullptr) {
    for (cudaEvent_t& e : ev_)
      HYRT_CUDA_CHECK(cudaEventCreate(&e));
  }
  ~Events() {
    for (cudaEvent_t e : ev_)
      if (e) cudaEventDestroy(e);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  cudaEvent_t operator[](size_t i) const { return ev_[i]; }

 private:
  std::vector<cudaEvent_t> ev_;
};

// Median GPU microseconds of `reps` back-to-back runs of enqueue(), each between two events.
template <class F>
double median_us(const CudaContext& ctx, int reps, F&& enqueue) {
  reps = std::max(reps, 1);
  Events ev(reps + 1);
  // ~60 µs of host time per run is ample to enqueue it (a few launches) before the GPU gets there.
  HYRT_CUDA_CHECK(launch_spin(60.0 * reps, ctx.stream()));
  HYRT_CUDA_CHECK(cudaEventRecord(ev[0], ctx.stream()));
  for (int i = 0; i < reps; ++i) {
    enqueue();
    HYRT_CUDA_CHECK(cudaEventRecord(ev[static_cast<size_t>(i) + 1], ctx.stream()));
  }
  HYRT_CUDA_CHECK(cudaEventSynchronize(ev[static_cast<size_t>(reps)]));
  std::vector<double> us(static_cast<size_t>(reps));
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    HYRT_CUDA_CHECK(
        cudaEventElapsedTime(&ms, ev[static_cast<size_t>(i)], ev[static_cast<size_t>(i) + 1]));
    us[static_cast<size_t>(i)] = 1000.0 * ms;
  }
  std::nth_element(us.begin(), us.begin() + reps / 2, us.end());
  return us[static_cast<size_t>(reps / 2)];
}

// --- the kernel -----------------------------------------------------------------------------

class LinearKernel final : public CudaGemmKernel {
 public:
  LinearKernel(CudaContext& ctx, const CudaBackendOptions& options, const ir::Graph& graph,
               const ir::Node& node, const weights::WeightSource& weights, ProgramCache& cache)
      : ctx_(ctx), options_(options), name_(node.name), key_(linear_gemm_key(graph, node)) {
    m_ = key_.m, n_ = key_.n, k_ = key_.k;
    n4_ = round_up4(n_), k4_ = round_up4(k_);
    a_dtype_ = key_.a_type;
    s8_ = key_.w_type == DType::kS8;
    upload_weights(graph, node, weights);

    if (a_dtype_ == DType::kF32) ctx_.reserve(Scratch::kActF16, bytes(m_ * k_ * 2));
    if (s8_) {
      ctx_.reserve(Scratch::kWeightF16, bytes(n_ * k_ * 2));
      ctx_.reserve(Scratch::kActS8, bytes(m_ * k4_));
      ctx_.reserve(Scratch::kRowScales, bytes(m_ * 4));
      ctx_.reserve(Scratch::kAccS32, bytes(m_ * n4_ * 4));
    }

    f16_ = make_lt_gemm(CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, cuda_float_type(a_dtype_), n_,
                        m_, k_, bias_out_);
    if (s8_)
      s8_gemm_ = make_lt_gemm(CUBLAS_COMPUTE_32I, CUDA_R_32I, CUDA_R_8I, CUDA_R_32I, n4_, m_, k4_,
                              nullptr);

    const std::string cache_key =
        str_cat("cuda ", ctx_.device().name, " sm", ctx_.device().compute_major,
                ctx_.device().compute_minor, " ", key_.to_string());
    program_ = cache.get_or_create<CudaGemmProgram>(cache_key, [&] { return tune(); });

    switch (options_.gemm) {
      case GemmPolicy::kAuto:
        candidate_ = program_->tuning.chosen;
        break;
      case GemmPolicy::kF16:
        candidate_ = GemmCandidate::kF16;
        break;
      case GemmPolicy::kW8A8:
        candidate_ = s8_ ? GemmCandidate::kW8A8 : GemmCandidate::kF16;
        break;
    }
    HYRT_CHECK(program_->tuning.stats(candidate_).available, kUnsupported, "node '", name_,
               "': the ", candidate_name(candidate_),
               " GEMM candidate that the CUDA backend's "
               "policy asks for has no working cuBLASLt algorithm (",
               program_->tuning.to_string(), ")");
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    run_candidate(candidate_, inputs, output);
  }

  void run_candidate(GemmCandidate c, std::span<const TensorView> inputs,
                     const TensorView& output) override {
    HYRT_CHECK(!inputs.empty(), kInvalidArgument, "node '", name_, "': no input bound");
    const TensorView& x = inputs[0];
    HYRT_CHECK(x.dtype == a_dtype_ && x.numel() == m_ * k_ && output.dtype == a_dtype_ &&
                   output.numel() == m_ * n_,
               kInvalidArgument, "node '", name_, "': bound ", dtype_name(x.dtype),
               x.shape.to_string(), " -> ", dtype_name(output.dtype), output.shape.to_string(),
               ", the program computes ", key_.to_string());
    HYRT_CHECK(aligned16(x.data) && aligned16(output.data), kInvalidArgument, "node '", name_,
               "': activation buffers must be 16-byte aligned device memory");
    HYRT_CHECK(program_->tuning.stats(c).available, kUnsupported, "node '", name_, "': the ",
               candidate_name(c), " candidate is not available (", program_->tuning.to_string(),
               ")");
    enqueue(c, *program_, x.data, output.data);
  }

  const GemmTuning& tuning() const override { return program_->tuning; }
  GemmCandidate candidate() const override { return candidate_; }

 private:
  static size_t bytes(int64_t n) { return static_cast<size_t>(n); }

  void upload_weights(const ir::Graph& graph, const ir::Node& node,
                      const weights::WeightSource& weights) {
    const ir::Value& wv = graph.value(node.inputs[1]);
    const TensorView stored = weights.get(wv.name);
    HYRT_CHECK(stored.shape == wv.shape && stored.dtype == wv.dtype, kInvalidModel, "weight '",
               wv.name, "' is stored as ", dtype_name(stored.dtype), stored.shape.to_string(),
               " but node '", name_, "' expects ", dtype_name(wv.dtype), wv.shape.to_string());
    if (s8_) {
      const std::optional<TensorView> scale = weights.scale(wv.name);
      HYRT_CHECK(scale.has_value(), kInvalidModel, "8-bit S weight '", wv.name, "' of node '",
                 name_, "' has no per-row scale");
      HYRT_CHECK(scale->dtype == DType::kF32 && scale->shape.rank() == 1 && scale->shape[0] == n_,
                 kInvalidModel, "8-bit S weight '", wv.name, "' has scale ",
                 dtype_name(scale->dtype), scale->shape.to_string(), ", expected f32[", n_,
                 "] (one per output row)");
      // Zero-padded to [N4, K4]; the views may be unaligned file mappings: bytes only.
      AlignedBuffer padded(bytes(n4_ * k4_), wv.name + " padded");
      std::memset(padded.data(), 0, padded.size());
      const auto* q = static_cast<const uint8_t*>(stored.data);
      for (int64_t r = 0; r < n_; ++r)
        std::memcpy(padded.as<uint8_t>() + r * k4_, q + r * k_, bytes(k_));
      w_ = DeviceBuffer(padded.size(), wv.name + " (s8 weights)");
      upload(ctx_, w_.data(), padded.data(), padded.size());
      AlignedBuffer sc(bytes(n4_ * 4), wv.name + " scale");
      std::memset(sc.data(), 0, sc.size());
      std::memcpy(sc.data(), scale->data, bytes(n_ * 4));
      w_scale_ = DeviceBuffer(sc.size(), wv.name + " (scales)");
      upload(ctx_, w_scale_.data(), sc.data(), sc.size());
    } else {
      const size_t count = bytes(n_ * k_);
      w_ = DeviceBuffer(count * 2, wv.name + " (f16 weights)");
      if (stored.dtype == DType::kF16) {
        upload(ctx_, w_.data(), stored.data, count * 2);
      } else {
        AlignedBuffer f32(count * 4, wv.name + " staging"), f16(count * 2, wv.name + " staging");
        convert_to_f32(stored.dtype, stored.data, f32.as<float>(), count);
        convert_from_f32(f32.as<float>(), DType::kF16, f16.data(), count);
        upload(ctx_, w_.data(), f16.data(), f16.size());
      }
    }
    if (node.inputs.size() == 3) {
      const ir::Value& bv = graph.value(node.inputs[2]);
      const TensorView b = weights.get(bv.name);
      HYRT_CHECK(b.shape.numel() == n_ && dtype_is_float(b.dtype), kInvalidModel, "bias '", bv.name,
                 "' of node '", name_, "' is stored as ", dtype_name(b.dtype), b.shape.to_string(),
                 ", expected a float vector of ", n_);
      AlignedBuffer f32(bytes(n_ * 4), bv.name + " staging");
      convert_to_f32(b.dtype, b.data, f32.as<float>(), bytes(n_));
      bias_f32_ = DeviceBuffer(f32.size(), bv.name + " (f32 bias)");
      upload(ctx_, bias_f32_.data(), f32.data(), f32.size());
      bias_out_ = bias_f32_.data();
      if (a_dtype_ == DType::kF16) {
        AlignedBuffer f16(bytes(n_ * 2), bv.name + " staging");
        convert_from_f32(f32.as<float>(), DType::kF16, f16.data(), bytes(n_));
        bias_f16_ = DeviceBuffer(f16.size(), bv.name + " (f16 bias)");
        upload(ctx_, bias_f16_.data(), f16.data(), f16.size());
        bias_out_ = bias_f16_.data();
      }
    }
  }

  // --- the stages of the two candidates (all enqueued on the backend's stream) ---

  const void* f16_a() const { return s8_ ? ctx_.scratch(Scratch::kWeightF16, 0) : w_.data(); }
  const void* f16_b(const void* x) const {
    return a_dtype_ == DType::kF32 ? ctx_.scratch(Scratch::kActF16, 0) : x;
  }

  // 8-bit S weights -> f16 scratch; f32 activations -> f16 scratch.
  void stage_f16(const void* x) const {
    if (s8_)
      HYRT_CUDA_CHECK(launch_dequantize_rows_f16(
          w_.as<int8_t>(), n_, k_, k4_, w_scale_.as<float>(),
          static_cast<uint16_t*>(ctx_.scratch(Scratch::kWeightF16, bytes(n_ * k_ * 2))),
          ctx_.stream()));
    if (a_dtype_ == DType::kF32)
      HYRT_CUDA_CHECK(launch_f32_to_f16(
          static_cast<const float*>(x), m_ * k_,
          static_cast<uint16_t*>(ctx_.scratch(Scratch::kActF16, bytes(m_ * k_ * 2))),
          ctx_.stream()));
  }

  cublasStatus_t gemm_f16(const void* x, void* y, const cublasLtMatmulAlgo_t& algo) const {
    const float alpha = 1.0f, beta = 0.0f;
    return cublasLtMatmul(ctx_.lt(), f16_.op.get(), &alpha, f16_a(), f16_.a.get(), f16_b(x),
                          f16_.b.get(), &beta, y, f16_.d.get(), y, f16_.d.get(), &algo,
                          ctx_.workspace(), ctx_.workspace_bytes(), ctx_.stream());
  }

  // x -> s8 [M, K4] + row scales [M] in scratch.
  void quantize(const void* x) const {
    HYRT_CUDA_CHECK(launch_quantize_rows_s8(
        x, float_type(a_dtype_), m_, k_, k4_,
        static_cast<int8_t*>(ctx_.scratch(Scratch::kActS8, bytes(m_ * k4_))),
        static_cast<float*>(ctx_.scratch(Scratch::kRowScales, bytes(m_ * 4))), ctx_.stream()));
  }

  cublasStatus_t gemm_s8(const cublasLtMatmulAlgo_t& algo) const {
    const int32_t alpha = 1, beta = 0;
    void* acc = ctx_.scratch(Scratch::kAccS32, bytes(m_ * n4_ * 4));
    return cublasLtMatmul(ctx_.lt(), s8_gemm_.op.get(), &alpha, w_.data(), s8_gemm_.a.get(),
                          ctx_.scratch(Scratch::kActS8, bytes(m_ * k4_)), s8_gemm_.b.get(), &beta,
                          acc, s8_gemm_.d.get(), acc, s8_gemm_.d.get(), &algo, ctx_.workspace(),
                          ctx_.workspace_bytes(), ctx_.stream());
  }

  void rescale(void* y) const {
    HYRT_CUDA_CHECK(launch_rescale_s32(
        static_cast<const int32_t*>(ctx_.scratch(Scratch::kAccS32, bytes(m_ * n4_ * 4))), m_, n_,
        n4_, static_cast<const float*>(ctx_.scratch(Scratch::kRowScales, bytes(m_ * 4))),
        w_scale_.as<float>(), bias_f32_.as<float>(), y, float_type(a_dtype_), ctx_.stream()));
  }

  void enqueue(GemmCandidate c, const CudaGemmProgram& p, const void* x, void* y) const {
    if (c == GemmCandidate::kF16) {
      stage_f16(x);
      const cublasStatus_t st = gemm_f16(x, y, p.f16_algo);
      if (st != CUBLAS_STATUS_SUCCESS)
        throw_cublas_error(st, "cublasLtMatmul (f16 candidate)", __FILE__, __LINE__);
    } else {
      quantize(x);
      const cublasStatus_t st = gemm_s8(p.s8_algo);
      if (st != CUBLAS_STATUS_SUCCESS)
        throw_cublas_error(st, "cublasLtMatmul (s8 candidate)", __FILE__, __LINE__);
      rescale(y);
    }
  }

  // Times the heuristic's algorithms for one candidate's GEMM (its operands already staged);
  // returns the fastest, filling gemm_us and algos_timed. An algorithm that refuses the
  // operands at its trial run is skipped.
  template <class Gemm>
  std::optional<cublasLtMatmulAlgo_t> pick_algo(
      const std::vector<cublasLtMatmulHeuristicResult_t>& found, Gemm&& gemm,
      GemmCandidateStats& stats) const {
    std::optional<cublasLtMatmulAlgo_t> best;
    double best_us = std::numeric_limits<double>::infinity();
    for (const cublasLtMatmulHeuristicResult_t& h : found) {
      if (gemm(h.algo) != CUBLAS_STATUS_SUCCESS) continue;
      const double us = median_us(ctx_, options_.tune_reps, [&] {
        const cublasStatus_t st = gemm(h.algo);
        if (st != CUBLAS_STATUS_SUCCESS)
          throw_cublas_error(st, "cublasLtMatmul (autotuning)", __FILE__, __LINE__);
      });
      ++stats.algos_timed;
      if (us < best_us) best_us = us, best = h.algo;
    }
    if (best) stats.gemm_us = best_us;
    return best;
  }

  std::shared_ptr<CudaGemmProgram> tune() const {
    auto p = std::make_shared<CudaGemmProgram>();
    GemmTuning& t = p->tuning;
    t.key = key_;
    const size_t a_size = dtype_size(a_dtype_);
    DeviceBuffer x(bytes(m_ * k_) * a_size, "autotuning input");
    DeviceBuffer y(bytes(m_ * n_) * a_size, "autotuning output");
    HYRT_CUDA_CHECK(launch_fill_random(x.data(), float_type(a_dtype_), m_ * k_, 0x9e3779b9u, 1.0f,
                                       ctx_.stream()));
    const int n_algos = std::max(options_.tune_algos, 1);

    stage_f16(x.data());
    if (auto algo = pick_algo(
            heuristics(ctx_, f16_, n_algos, 16),
            [&](const cublasLtMatmulAlgo_t& a) { return gemm_f16(x.data(), y.data(), a); },
            t.f16)) {
      p->f16_algo = *algo;
      t.f16.available = true;
      t.f16.total_us = median_us(ctx_, options_.tune_reps,
                                 [&] { enqueue(GemmCandidate::kF16, *p, x.data(), y.data()); });
    }
    if (s8_) {
      quantize(x.data());
      if (auto algo = pick_algo(
              heuristics(ctx_, s8_gemm_, n_algos, 0),
              [&](const cublasLtMatmulAlgo_t& a) { return gemm_s8(a); }, t.w8a8)) {
        p->s8_algo = *algo;
        t.w8a8.available = true;
        t.w8a8.total_us = median_us(ctx_, options_.tune_reps,
                                    [&] { enqueue(GemmCandidate::kW8A8, *p, x.data(), y.data()); });
      }
    }
    HYRT_CHECK(t.f16.available || t.w8a8.available, kUnsupported, "node '", name_,
               "': cuBLASLt offers no working algorithm for ", key_.to_string(), " on ",
               ctx_.device().name);
    t.chosen = !t.w8a8.available                  ? GemmCandidate::kF16
               : !t.f16.available                 ? GemmCandidate::kW8A8
               : t.w8a8.total_us < t.f16.total_us ? GemmCandidate::kW8A8
                                                  : GemmCandidate::kF16;
    // The buffers above are freed on return: let the timing runs finish first.
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx_.stream()));
    HYRT_LOG(kDebug) << "cuda: tuned " << t.to_string();
    return p;
  }

  CudaContext& ctx_;
  const CudaBackendOptions& options_;
  std::string name_;
  GemmKey key_;
  int64_t m_ = 0, n_ = 0, k_ = 0, n4_ = 0, k4_ = 0;
  DType a_dtype_ = DType::kF16;  // activations and output
  bool s8_ = false;
  DeviceBuffer w_;        // s8 [N4, K4] zero-padded, or f16 [N, K]
  DeviceBuffer w_scale_;  // f32 [N4] (s8 only; padded rows 0)
  DeviceBuffer bias_f32_, bias_f16_;
  const void* bias_out_ = nullptr;  // the bias in the output's dtype, for cuBLASLt's epilogue
  LtGemm f16_, s8_gemm_;
  std::shared_ptr<CudaGemmProgram> program_;
  GemmCandidate candidate_ = GemmCandidate::kF16;
};

}  // namespace

std::unique_ptr<CudaGemmKernel> make_linear_kernel(CudaContext& ctx,
                                                   const CudaBackendOptions& options,
                                                   const ir::Graph& graph, const ir::Node& node,
                                                   const weights::WeightSource& weights,
                                                   ProgramCache& cache) {
  return std::make_unique<LinearKernel>(ctx, options, graph, node, weights, cache);
}

}  // namespace hyrt::backend::cuda

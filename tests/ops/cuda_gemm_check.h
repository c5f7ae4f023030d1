// What the CUDA GEMM-program tests (linear and conv2d) check of one prepared kernel: every
// available candidate against a double reference, outputs poisoned before each run (the
// `Run` does that), and the kernel's own choice through Kernel::run. Include only under
// HYRT_HAVE_CUDA.
//   f16  — ≤ 2e-3 relative L2 (f16 rounding of operands and output); leaving the bias out
//          must miss by 10x that, so the comparison can fail;
//   W8A8 — ≤ 2e-2 against the reference (per-row activation quantization), and ≤ 2e-3
//          against a reference that quantizes by the kernel's own rule.
// The references compute the whole node, its fused epilogue included (ir::GemmEpilogue:
// y = activation(x · wᵀ + bias) + residual, activation_ref below). For a fused node each part
// of the epilogue must show in both candidates' outputs: a reference that leaves the
// activation or the residual out (Omit) must miss by 10x the tolerance (f16, and W8A8 against
// its exact reference), so a kernel that drops a part cannot pass.
// Also ScopedGemmStagingBudget, which makes small GEMMs run in row chunks, and
// check_bound_workspace: the kernel's chosen candidate staging in a workspace bound the
// executor's way (Kernel::bind_workspace) — right results, nothing written outside the
// workspace, the backend's own scratch not grown.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gemm.h"
#include "core/error.h"
#include "ir/op.h"
#include "test_util.h"

namespace hyrt::test {

inline constexpr double kF16Tolerance = 2e-3;
inline constexpr double kW8A8Tolerance = 2e-2;
inline constexpr double kW8A8ExactTolerance = 2e-3;

// The GEMM staging budget (cuda_gemm.h, gemm_chunking) set to `bytes` while in scope: kernels
// made meanwhile run M in row chunks wherever their staging exceeds it.
class ScopedGemmStagingBudget {
 public:
  explicit ScopedGemmStagingBudget(size_t bytes)
      : previous_(backend::cuda::set_gemm_staging_budget(bytes)) {}
  ~ScopedGemmStagingBudget() { backend::cuda::set_gemm_staging_budget(previous_); }
  ScopedGemmStagingBudget(const ScopedGemmStagingBudget&) = delete;
  ScopedGemmStagingBudget& operator=(const ScopedGemmStagingBudget&) = delete;

 private:
  size_t previous_;
};

inline double rel(const std::vector<float>& a, const std::vector<float>& b) {
  return relative_l2(a.data(), b.data(), a.size());
}

// A fused activation (ir::Activation) in double, as op.h defines it: silu x·σ(x), gelu
// x·Φ(x) (the erf form), quick_gelu x·σ(1.702·x).
inline double activation_ref(double x, ir::Activation a) {
  switch (a) {
    case ir::Activation::kSilu:
      return x / (1.0 + std::exp(-x));
    case ir::Activation::kGelu:
      return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case ir::Activation::kQuickGelu:
      return x / (1.0 + std::exp(-1.702 * x));
    case ir::Activation::kRelu:
      return x > 0 ? x : 0.0;
    case ir::Activation::kNone:
      break;
  }
  return x;
}

// " +silu +residual" and the like ("" without an epilogue), for traces.
inline std::string epilogue_note(const ir::GemmEpilogue& e) {
  std::string out;
  if (e.activation != ir::Activation::kNone)
    out += str_cat(" +", ir::activation_name(e.activation));
  if (e.residual) out += " +residual";
  return out;
}

// A part of the node a reference leaves out: a kernel's output must miss such a reference.
enum class Omit : uint8_t { kNothing, kBias, kActivation, kResidual };

inline const char* omit_name(Omit o) {
  switch (o) {
    case Omit::kBias:
      return "bias";
    case Omit::kActivation:
      return "activation";
    case Omit::kResidual:
      return "residual";
    case Omit::kNothing:
      break;
  }
  return "nothing";
}

// The fused-epilogue parts of a case (what its references can leave out beyond the bias).
inline std::vector<Omit> epilogue_parts(const ir::GemmEpilogue& e) {
  std::vector<Omit> parts;
  if (e.activation != ir::Activation::kNone) parts.push_back(Omit::kActivation);
  if (e.residual) parts.push_back(Omit::kResidual);
  return parts;
}

// Case: reference(Omit = kNothing) and reference_w8a8(Omit = kNothing) — the node's output
// with every part (or all but one), bias (empty without one), epilogue (ir::GemmEpilogue).
// Run: run(kernel, std::optional<GemmCandidate>) -> the output as f32.
template <class Case, class Run>
void check_gemm_candidates(backend::cuda::CudaGemmKernel& kernel, Run& run, const Case& c,
                           bool s8_weights) {
  using backend::cuda::GemmCandidate;
  const auto& t = kernel.tuning();
  SCOPED_TRACE(t.to_string());
  const std::vector<float> ref = c.reference();
  const std::vector<Omit> parts = epilogue_parts(c.epilogue);

  ASSERT_TRUE(t.f16.available);
  const std::vector<float> y16 = run.run(kernel, GemmCandidate::kF16);
  EXPECT_LE(rel(y16, ref), kF16Tolerance) << "f16 candidate";
  if (!c.bias.empty()) {
    EXPECT_GT(rel(y16, c.reference(Omit::kBias)), 10 * kF16Tolerance);
  }
  for (Omit part : parts) {
    EXPECT_GT(rel(y16, c.reference(part)), 10 * kF16Tolerance)
        << "the f16 candidate also matches a reference without the " << omit_name(part);
  }

  if (s8_weights) {
    ASSERT_TRUE(t.w8a8.available);
    const std::vector<float> y8 = run.run(kernel, GemmCandidate::kW8A8);
    EXPECT_LE(rel(y8, ref), kW8A8Tolerance) << "w8a8 candidate vs the f64 reference";
    EXPECT_LE(rel(y8, c.reference_w8a8()), kW8A8ExactTolerance)
        << "w8a8 candidate vs its own quantization rule";
    if (!c.bias.empty()) {
      EXPECT_GT(rel(y8, c.reference_w8a8(Omit::kBias)), 10 * kW8A8ExactTolerance)
          << "the w8a8 candidate also matches its exact reference without the bias";
    }
    for (Omit part : parts) {
      EXPECT_GT(rel(y8, c.reference_w8a8(part)), 10 * kW8A8ExactTolerance)
          << "the w8a8 candidate also matches its exact reference without the " << omit_name(part);
    }
  } else {
    EXPECT_FALSE(t.w8a8.available) << "W8A8 needs 8-bit S weights";
    EXPECT_THROW(run.run(kernel, GemmCandidate::kW8A8), Error);
  }

  // What the backend runs by itself: the chosen candidate, through Kernel::run.
  EXPECT_EQ(kernel.candidate(), t.chosen);
  EXPECT_LE(rel(run.run(kernel), ref),
            t.chosen == GemmCandidate::kF16 ? kF16Tolerance : kW8A8Tolerance);
}

// That a fused kernel's epilogue shows and that its binding is checked, for candidate `cand`:
// the fused output matches the full reference and misses the references without the residual
// or the activation by 10x the tolerance; the plain kernel of the same node without epilogue
// matches its own reference and misses the fused one; binding the residual wrongly (left out,
// `row` elements short, f32, unaligned) throws kInvalidArgument and a good run follows.
// Case: reference(Omit) and reference_w8a8(Omit); Run: inputs(), residual(), run(kernel,
// cand), run_with(kernel, inputs, cand).
template <class Case, class Run>
void check_epilogue_shows(backend::cuda::CudaGemmKernel& fused, Run& run, const Case& c,
                          backend::cuda::CudaGemmKernel& unfused, Run& plain_run, const Case& plain,
                          backend::cuda::GemmCandidate cand, int64_t row) {
  SCOPED_TRACE(backend::cuda::candidate_name(cand));
  const bool f16 = cand == backend::cuda::GemmCandidate::kF16;
  const double tol = f16 ? kF16Tolerance : kW8A8ExactTolerance;
  const auto ref = [&](const Case& cc, Omit omit) {
    return f16 ? cc.reference(omit) : cc.reference_w8a8(omit);
  };
  const std::vector<float> full = ref(c, Omit::kNothing);
  const std::vector<float> y = run.run(fused, cand);
  EXPECT_LE(rel(y, full), tol);
  EXPECT_GT(rel(y, ref(c, Omit::kResidual)), 10 * tol) << "the residual does not show";
  EXPECT_GT(rel(y, ref(c, Omit::kActivation)), 10 * tol) << "the activation does not show";
  const std::vector<float> y_plain = plain_run.run(unfused, cand);
  EXPECT_LE(rel(y_plain, ref(plain, Omit::kNothing)), tol);
  EXPECT_GT(rel(y_plain, full), 10 * tol) << "a kernel without its epilogue would pass";

  const std::vector<TensorView> good = run.inputs();
  ASSERT_EQ(good.size(), 4u);  // x, w, b, r
  const TensorView r = run.residual();
  ASSERT_NE(r.data, nullptr);
  const auto expect_rejected = [&](const std::vector<TensorView>& ins, const char* what) {
    SCOPED_TRACE(what);
    try {
      run.run_with(fused, ins, cand);
      ADD_FAILURE() << "the kernel ran with its residual bound wrongly";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    }
  };
  expect_rejected({good[0], good[1], good[2]}, "x, w, b: the residual not bound");
  expect_rejected({good[0], good[1]}, "x, w: the residual not bound");
  std::vector<TensorView> bad = good;
  bad.back() = TensorView{r.data, r.dtype, Shape{r.numel() - row}};
  expect_rejected(bad, "one row short");
  bad.back() = TensorView{r.data, DType::kF32, r.shape};
  expect_rejected(bad, "f32, the device holds f16");
  bad.back() = TensorView{static_cast<uint8_t*>(r.data) + 2, r.dtype, r.shape};
  expect_rejected(bad, "not 16-byte aligned");
  EXPECT_LE(rel(run.run(fused, cand), full), tol) << "after the rejected bindings";
}

// Whether the fused W8A8 kernel (cuda_gemm.h, fused_s8_applies) runs `key`'s W8A8 candidate on
// the test device under the default options: then no s32 result is staged.
inline bool fused_s8_here(const backend::GemmKey& key) {
  static const std::vector<backend::cuda::CudaDeviceInfo> devices = backend::cuda::list_devices();
  return !devices.empty() &&
         backend::cuda::fused_s8_applies(key, devices[0],
                                         backend::cuda::CudaBackendOptions{}.fused_s8_gemm);
}

// Kernel::workspace_bytes() of a GEMM kernel whose chosen candidate is `c`, from the layout
// cuda_gemm.h documents ("Staging"), worked out independently of the kernel: the buffers of
// one chunk of `ch.rows` rows, each rounded up to 256 bytes, plus 192 bytes of slack for
// aligning a 64-byte-aligned workspace up to 256; 0 when nothing is staged.
inline size_t documented_workspace_bytes(const backend::GemmKey& key,
                                         backend::cuda::GemmCandidate c,
                                         const backend::cuda::GemmChunking& ch) {
  const auto a256 = [](int64_t bytes) { return (static_cast<size_t>(bytes) + 255) / 256 * 256; };
  const int64_t rows = ch.rows, k4 = (key.k + 3) / 4 * 4, n4 = (key.n + 3) / 4 * 4;
  const bool s8 = key.w_type == DType::kS8;
  size_t n = 0;
  if (c == backend::cuda::GemmCandidate::kF16) {
    // The float candidate's operands: f16, or f32 (TF32) on f32 activations.
    const int64_t op = key.a_type == DType::kF32 ? 4 : 2;
    if (s8) n += a256(key.n * key.k * op);                                           // kWeightWide
    if (key.epilogue & backend::cuda::kIm2colOperand) n += a256(rows * key.k * op);  // kIm2col
  } else if (s8) {
    n += a256(rows * k4) + a256(rows * 4);              // kActS8, kRowScales
    if (!fused_s8_here(key)) n += a256(rows * n4 * 4);  // kAccS32
  }
  return n ? n + 192 : 0;
}

// Runs `kernel`'s chosen candidate through Kernel::run with a workspace bound as the executor
// binds one, twice, in two different buffers (rebinding): each buffer is
// [guard | workspace_bytes() | 256-byte guard] with the workspace at offset 64 and then 192 —
// 64-byte aligned but not 256 (the kernel must align up within its slack) — and the whole
// buffer poisoned with 0xff first (NaN in every staging buffer: the kernel must write before
// it reads). Each run must match the same references as check_gemm_candidates, leave both
// guards untouched, write into the workspace (it stages there, not elsewhere) and leave
// `mem.held()` (the context's scratch bytes) as it was; the second must leave the first
// buffer (poisoned again before it) alone. Unbinds on return.
// Memory (on the kernel's stream, or synchronising): void* allocate(size_t) — 256-byte
// aligned, alive while `mem` is; void fill(void*, int value, size_t);
// std::vector<uint8_t> download(const void*, size_t); size_t held().
template <class Case, class Run, class Memory>
void check_bound_workspace(backend::cuda::CudaGemmKernel& kernel, Run& run, const Case& c,
                           Memory& mem) {
  using backend::cuda::GemmCandidate;
  const bool f16 = kernel.candidate() == GemmCandidate::kF16;
  SCOPED_TRACE(str_cat(backend::cuda::candidate_name(kernel.candidate()), " candidate, ",
                       kernel.tuning().to_string()));
  const size_t ws = kernel.workspace_bytes();
  ASSERT_GT(ws, 0u);
  const std::vector<float> ref = c.reference();
  const std::optional<std::vector<float>> ref_w8a8 =
      f16 ? std::nullopt : std::optional(c.reference_w8a8());
  const size_t held = mem.held();
  constexpr size_t kGuard = 256;
  const auto poisoned = [](uint8_t b) { return b == 0xff; };
  uint8_t* previous = nullptr;  // the buffer bound before, and its size
  size_t previous_total = 0;
  for (size_t offset : {size_t{64}, size_t{192}}) {
    SCOPED_TRACE(str_cat("workspace of ", ws, " bytes at offset ", offset));
    const size_t total = offset + ws + kGuard;
    auto* base = static_cast<uint8_t*>(mem.allocate(total));
    ASSERT_EQ(reinterpret_cast<uintptr_t>(base) % 256, 0u);
    if (previous) mem.fill(previous, 0xff, previous_total);
    mem.fill(base, 0xff, total);
    kernel.bind_workspace(base + offset);
    const std::vector<float> y = run.run(kernel);
    EXPECT_LE(rel(y, ref), f16 ? kF16Tolerance : kW8A8Tolerance);
    if (ref_w8a8) {
      EXPECT_LE(rel(y, *ref_w8a8), kW8A8ExactTolerance) << "vs its own quantization rule";
    }
    EXPECT_EQ(mem.held(), held) << "a run with a bound workspace grew the context's scratch";
    expect_only_range_written(mem.download(base, total), offset, ws);
    if (previous) {
      const std::vector<uint8_t> old = mem.download(previous, previous_total);
      EXPECT_TRUE(std::all_of(old.begin(), old.end(), poisoned))
          << "the workspace bound before was written after rebinding";
    }
    previous = base;
    previous_total = total;
  }
  kernel.bind_workspace(nullptr);
}

}  // namespace hyrt::test

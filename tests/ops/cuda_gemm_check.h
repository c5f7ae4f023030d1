// What the CUDA GEMM-program tests (linear and conv2d) check of one prepared kernel: every
// available candidate against a double reference, outputs poisoned before each run (the
// `Run` does that), and the kernel's own choice through Kernel::run. Include only under
// HYRT_HAVE_CUDA.
//   f16  — ≤ 2e-3 relative L2 (f16 rounding of operands and output); leaving the bias out
//          must miss by 10x that, so the comparison can fail;
//   W8A8 — ≤ 2e-2 against the reference (per-row activation quantization), and ≤ 2e-3
//          against a reference that quantizes by the kernel's own rule.
// Also ScopedGemmStagingBudget, which makes small GEMMs run in row chunks.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gemm.h"
#include "core/error.h"
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

// Case: reference(bool with_bias = true), reference_w8a8(), bias (empty without one).
// Run: run(kernel, std::optional<GemmCandidate>) -> the output as f32.
template <class Case, class Run>
void check_gemm_candidates(backend::cuda::CudaGemmKernel& kernel, Run& run, const Case& c,
                           bool s8_weights) {
  using backend::cuda::GemmCandidate;
  const auto& t = kernel.tuning();
  SCOPED_TRACE(t.to_string());
  const std::vector<float> ref = c.reference();

  ASSERT_TRUE(t.f16.available);
  const std::vector<float> y16 = run.run(kernel, GemmCandidate::kF16);
  EXPECT_LE(rel(y16, ref), kF16Tolerance) << "f16 candidate";
  if (!c.bias.empty()) {
    EXPECT_GT(rel(y16, c.reference(false)), 10 * kF16Tolerance);
  }

  if (s8_weights) {
    ASSERT_TRUE(t.w8a8.available);
    const std::vector<float> y8 = run.run(kernel, GemmCandidate::kW8A8);
    EXPECT_LE(rel(y8, ref), kW8A8Tolerance) << "w8a8 candidate vs the f64 reference";
    EXPECT_LE(rel(y8, c.reference_w8a8()), kW8A8ExactTolerance)
        << "w8a8 candidate vs its own quantization rule";
  } else {
    EXPECT_FALSE(t.w8a8.available) << "W8A8 needs 8-bit S weights";
    EXPECT_THROW(run.run(kernel, GemmCandidate::kW8A8), Error);
  }

  // What the backend runs by itself: the chosen candidate, through Kernel::run.
  EXPECT_EQ(kernel.candidate(), t.chosen);
  EXPECT_LE(rel(run.run(kernel), ref),
            t.chosen == GemmCandidate::kF16 ? kF16Tolerance : kW8A8Tolerance);
}

}  // namespace hyrt::test

// Every tile configuration of the fused W8A8 GEMM (gemm_s8_fused.h: kFusedS8Tiles) launched
// directly against a host reference: the s32 accumulation exact in int64, then the epilogue's
// arithmetic (acc · (a_scale · w_scale) + bias [+ residual], one rounding to f16) in double. Shapes
// with partial tiles in M and N, K of one and of many 128-steps, rows fewer than a cluster's
// two tiles, a residual and no bias. The output is poisoned (NaN) before each launch, so a tile
// that skips a region fails. Skips without a GPU that runs the kernels.
#ifdef HYRT_HAVE_CUDA

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/gemm_s8_fused.h"
#include "core/half.h"
#include "cuda_test_gpu.h"

namespace hyrt::test {
namespace {

namespace cu = backend::cuda;

struct TileCase {
  int64_t m, n, k;
  bool bias, residual;
};

template <class T>
cu::DeviceBuffer to_device(const std::vector<T>& v, const char* what) {
  cu::DeviceBuffer d(v.size() * sizeof(T) + 16, what);
  HYRT_CUDA_CHECK(cudaMemcpy(d.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

TEST(CudaGemmFused, EveryTileMatchesTheReference) {
  REQUIRE_GPU();
  const cu::CudaDeviceInfo& dev = gpu().ctx->device();
  if (!cu::fused_s8_gemm_available(dev.compute_major, dev.compute_minor))
    GTEST_SKIP() << "the fused W8A8 kernel is not built or " << dev.name << " cannot run it";
  const TileCase cases[] = {
      {300, 1280, 256, true, false},   // partial M tiles, N a multiple of 256
      {257, 520, 640, true, true},     // partial tiles in M and N (520 = 2·256 + 8), residual
      {2048, 384, 128, false, false},  // one K step, no bias
      {64, 264, 1024, true, false},    // fewer rows than a cluster's two 128-row tiles
      {1, 8, 16, true, true},          // the smallest shape the kernels take
  };
  std::mt19937 rng(97);
  std::uniform_int_distribution<int> s8(-127, 127);
  std::uniform_real_distribution<float> unit(0.5f, 1.5f), sym(-1.0f, 1.0f);
  for (const TileCase& c : cases) {
    SCOPED_TRACE(testing::Message() << c.m << "x" << c.n << "x" << c.k << (c.bias ? " bias" : "")
                                    << (c.residual ? " residual" : ""));
    ASSERT_TRUE(cu::fused_s8_gemm_shape_ok(c.m, c.n, c.k, c.k, c.k));
    std::vector<int8_t> a(static_cast<size_t>(c.m * c.k)), w(static_cast<size_t>(c.n * c.k));
    for (auto& v : a)
      v = static_cast<int8_t>(s8(rng));
    for (auto& v : w)
      v = static_cast<int8_t>(s8(rng));
    std::vector<float> a_scale(static_cast<size_t>(c.m)), w_scale(static_cast<size_t>(c.n)),
        bias(static_cast<size_t>(c.n));
    for (auto& v : a_scale)
      v = unit(rng) / 127.0f;
    for (auto& v : w_scale)
      v = unit(rng) * 0.02f / 127.0f;
    for (auto& v : bias)
      v = sym(rng);
    std::vector<uint16_t> residual(static_cast<size_t>(c.m * c.n));
    for (auto& v : residual)
      v = f32_to_f16(4.0f * sym(rng));
    // The reference in double from the exact integer sums.
    std::vector<double> want(static_cast<size_t>(c.m * c.n));
    for (int64_t i = 0; i < c.m; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        int64_t acc = 0;
        for (int64_t kk = 0; kk < c.k; ++kk)
          acc +=
              int64_t{a[static_cast<size_t>(i * c.k + kk)]} * w[static_cast<size_t>(j * c.k + kk)];
        double y = static_cast<double>(acc) * a_scale[static_cast<size_t>(i)] *
                   w_scale[static_cast<size_t>(j)];
        if (c.bias) y += bias[static_cast<size_t>(j)];
        if (c.residual) y += f16_to_f32(residual[static_cast<size_t>(i * c.n + j)]);
        want[static_cast<size_t>(i * c.n + j)] = y;
      }
    const cu::DeviceBuffer da = to_device(a, "tiles a"), dw = to_device(w, "tiles w"),
                           das = to_device(a_scale, "tiles a scale"),
                           dws = to_device(w_scale, "tiles w scale"),
                           db = to_device(bias, "tiles bias"),
                           dr = to_device(residual, "tiles residual");
    cu::DeviceBuffer dy(static_cast<size_t>(c.m * c.n) * 2, "tiles y");
    std::vector<uint16_t> first;
    for (cu::FusedS8Tile tile : cu::kFusedS8Tiles) {
      SCOPED_TRACE(cu::fused_s8_tile_name(tile));
      HYRT_CUDA_CHECK(cudaMemset(dy.data(), 0xff, dy.size()));  // f16 NaN
      HYRT_CUDA_CHECK(cu::launch_fused_s8_gemm(
          da.as<int8_t>(), c.k, dw.as<int8_t>(), c.k, das.as<float>(), dws.as<float>(),
          c.bias ? db.as<float>() : nullptr,
          c.residual ? static_cast<const __half*>(dr.data()) : nullptr,
          static_cast<__half*>(dy.data()), c.m, c.n, c.k, tile, dev.multiprocessors, nullptr));
      HYRT_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<uint16_t> got(static_cast<size_t>(c.m * c.n));
      HYRT_CUDA_CHECK(cudaMemcpy(got.data(), dy.data(), got.size() * 2, cudaMemcpyDeviceToHost));
      size_t bad = 0, differ = 0;
      double worst = 0.0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double g = f16_to_f32(got[i]);
        // One f16 rounding of the f32 epilogue: half an ulp of the value, plus f32's slack.
        const double err = std::abs(g - want[i]);
        const double allowed = std::abs(want[i]) * (1.0 / 1024.0) + 1e-6;
        if (!std::isfinite(g) || err > allowed) ++bad;
        if (std::isfinite(g)) worst = std::max(worst, err / (std::abs(want[i]) + 1e-6));
        if (!first.empty() && got[i] != first[i]) ++differ;
      }
      EXPECT_EQ(bad, 0u) << "values off the reference (worst relative error " << worst << ")";
      if (first.empty()) first = got;
      std::printf(
          "[ cuda     ] tile %-14s %lldx%lldx%lld: worst rel %.2e, %zu values differ "
          "from %s's\n",
          cu::fused_s8_tile_name(tile), static_cast<long long>(c.m), static_cast<long long>(c.n),
          static_cast<long long>(c.k), worst, differ, cu::fused_s8_tile_name(cu::kFusedS8Tiles[0]));
    }
  }
}

// The names round-trip (HYRT_CUDA_FUSED_S8_TILE takes them) and anything else is refused.
TEST(CudaGemmFused, TileNamesRoundTrip) {
  for (cu::FusedS8Tile tile : cu::kFusedS8Tiles)
    EXPECT_EQ(cu::parse_fused_s8_tile(cu::fused_s8_tile_name(tile)), tile);
  EXPECT_EQ(cu::parse_fused_s8_tile("auto"), cu::FusedS8Tile::kAuto);
  EXPECT_FALSE(cu::parse_fused_s8_tile("Large").has_value());
  EXPECT_FALSE(cu::parse_fused_s8_tile("").has_value());
}

}  // namespace
}  // namespace hyrt::test

#endif  // HYRT_HAVE_CUDA

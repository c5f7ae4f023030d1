// The implicit-GEMM W8A8 convolution's two parts launched directly (gemm_s8_fused.h,
// cuda_kernels.h), against host references:
//   launch_quantize_images_s8 — q bit for bit and the scales exactly as the host computes the
//     rule (one absmax per image; f16 and f32 input, vector and scalar paths, an all-zero
//     image), every row scale its image's;
//   launch_implicit_s8_conv — on each tile width, the s32 accumulation exact in int64 over the
//     taps inside the image (padding reads 0), then the epilogue's arithmetic in double, within
//     one f16 rounding: 3x3 stride 1 and 2, a 1x1, odd spatial sizes, N not a multiple of the tile,
//     a padded weight row (ldw > K), with and without bias and residual. Output poisoned (NaN)
//     before each launch; shapes and tile widths the kernel refuses return
//     cudaErrorInvalidValue; implicit_s8_conv_auto_tile's rule on the shapes it was measured at.
// Skips without a GPU that runs the kernels.
#ifdef HYRT_HAVE_CUDA

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/gemm_s8_fused.h"
#include "core/half.h"
#include "cuda_test_gpu.h"
#include "ir/graph.h"
#include "test_util.h"

namespace hyrt::test {
namespace {

namespace cu = backend::cuda;

template <class T>
cu::DeviceBuffer to_device(const std::vector<T>& v, const char* what) {
  cu::DeviceBuffer d(v.size() * sizeof(T) + 16, what);
  HYRT_CUDA_CHECK(cudaMemcpy(d.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <class T>
std::vector<T> from_device(const cu::DeviceBuffer& d, size_t n) {
  std::vector<T> v(n);
  HYRT_CUDA_CHECK(cudaMemcpy(v.data(), d.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

bool runs_here() {
  const cu::CudaDeviceInfo& dev = gpu().ctx->device();
  return cu::fused_s8_gemm_available(dev.compute_major, dev.compute_minor);
}

TEST(CudaConvImplicit, QuantizerMatchesTheHostRule) {
  REQUIRE_GPU();
  struct Case {
    int64_t images, elems, rows_per_image;
    bool f16, zero_image;
  };
  const Case cases[] = {
      {2, 16 * 16 * 64, 256, true, false},  // vector path (8 f16 a thread)
      {3, 999, 7, true, true},              // scalar path, one image all zeros
      {2, 4096, 64, false, false},          // f32, vector path
      {1, 13, 0, false, false},             // f32 scalar, no row scales asked for
  };
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int sms = gpu().ctx->device().multiprocessors;
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message()
                 << c.images << " images of " << c.elems << (c.f16 ? " f16" : " f32"));
    const size_t n = static_cast<size_t>(c.images * c.elems);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i)
      x[i] = normal(rng) * (1.0f + static_cast<float>(i % 7));  // uneven magnitudes
    if (c.zero_image)
      for (int64_t i = c.elems; i < 2 * c.elems; ++i)
        x[static_cast<size_t>(i)] = 0.0f;
    std::vector<uint16_t> x16(n);
    for (size_t i = 0; i < n; ++i) {
      x16[i] = f32_to_f16(x[i]);
      if (c.f16) x[i] = f16_to_f32(x16[i]);  // what the kernel reads
    }
    const cu::DeviceBuffer dx = c.f16 ? to_device(x16, "x16") : to_device(x, "x32");
    cu::DeviceBuffer dq(n + 16, "q"), dabs(static_cast<size_t>(c.images) * 4 + 16, "absmax"),
        drows(static_cast<size_t>(c.images * c.rows_per_image) * 4 + 16, "row scales");
    HYRT_CUDA_CHECK(cudaMemset(dq.data(), 0x55, dq.size()));
    HYRT_CUDA_CHECK(cudaMemset(drows.data(), 0xff, drows.size()));
    HYRT_CUDA_CHECK(cudaMemset(dabs.data(), 0x7f, dabs.size()));  // must be reset by the launch
    HYRT_CUDA_CHECK(cu::launch_quantize_images_s8(
        dx.data(), c.f16 ? cu::FloatType::kF16 : cu::FloatType::kF32, c.images, c.elems,
        dq.as<int8_t>(), dabs.as<float>(), c.rows_per_image, drows.as<float>(), sms, nullptr));
    HYRT_CUDA_CHECK(cudaDeviceSynchronize());
    const auto q = from_device<int8_t>(dq, n);
    const auto rows = from_device<float>(drows, static_cast<size_t>(c.images * c.rows_per_image));
    size_t bad_q = 0, bad_rows = 0;
    for (int64_t b = 0; b < c.images; ++b) {
      float m = 0.0f;
      for (int64_t i = 0; i < c.elems; ++i)
        m = std::fmax(m, std::fabs(x[static_cast<size_t>(b * c.elems + i)]));
      const float inv = m > 0.0f ? 127.0f / m : 0.0f, scale = m > 0.0f ? m / 127.0f : 0.0f;
      for (int64_t i = 0; i < c.elems; ++i) {
        const size_t at = static_cast<size_t>(b * c.elems + i);
        const float v = std::fmin(std::fmax(x[at] * inv, -127.0f), 127.0f);
        if (q[at] != static_cast<int8_t>(std::nearbyint(v))) ++bad_q;
      }
      for (int64_t r = 0; r < c.rows_per_image; ++r)
        if (rows[static_cast<size_t>(b * c.rows_per_image + r)] != scale) ++bad_rows;
    }
    EXPECT_EQ(bad_q, 0u) << "quantized values differ from the host rule";
    EXPECT_EQ(bad_rows, 0u) << "row scales are not their image's";
  }
}

struct ConvCase {
  int64_t batch, height, width, channels, out_channels;
  int kernel, stride, padding;
  int64_t ld_pad;  // ldw = kh·kw·C + ld_pad
  bool bias, residual;
};

TEST(CudaConvImplicit, MatchesTheIntegerReference) {
  REQUIRE_GPU();
  if (!runs_here()) GTEST_SKIP() << "the implicit-GEMM conv is not built or cannot run here";
  const ConvCase cases[] = {
      {2, 16, 16, 64, 64, 3, 1, 1, 0, true, true},       // the resnet conv with its residual
      {2, 13, 11, 128, 136, 3, 1, 1, 16, false, false},  // odd sizes, N % 128 != 0, ldw > K
      {1, 17, 17, 64, 72, 3, 2, 1, 0, true, false},      // stride 2 (the downsampler)
      {2, 9, 7, 192, 64, 1, 1, 0, 0, true, true},        // 1x1
      {2, 8, 8, 320, 320, 3, 1, 1, 0, true, false},      // SD 1.5's 320 channels
  };
  std::mt19937 rng(41);
  std::uniform_int_distribution<int> s8(-127, 127);
  std::uniform_real_distribution<float> unit(0.5f, 1.5f), sym(-1.0f, 1.0f);
  for (const ConvCase& c : cases) {
    SCOPED_TRACE(testing::Message()
                 << "x [" << c.batch << ", " << c.height << ", " << c.width << ", " << c.channels
                 << "] w [" << c.out_channels << ", " << c.kernel << "x" << c.kernel
                 << "] s=" << c.stride << " p=" << c.padding << (c.bias ? " bias" : "")
                 << (c.residual ? " residual" : ""));
    cu::ImplicitConvS8Shape s;
    s.batch = c.batch, s.height = c.height, s.width = c.width, s.channels = c.channels;
    s.out_channels = c.out_channels, s.kernel_h = c.kernel, s.kernel_w = c.kernel;
    s.stride = c.stride, s.padding = c.padding;
    s.out_h = (c.height + 2 * c.padding - c.kernel) / c.stride + 1;
    s.out_w = (c.width + 2 * c.padding - c.kernel) / c.stride + 1;
    const int64_t k = int64_t{c.kernel} * c.kernel * c.channels, ldw = k + c.ld_pad;
    ASSERT_TRUE(cu::implicit_s8_conv_shape_ok(s, ldw));
    const int64_t m = c.batch * s.out_h * s.out_w, n = c.out_channels;
    std::vector<int8_t> x(static_cast<size_t>(c.batch * c.height * c.width * c.channels)),
        w(static_cast<size_t>(n * ldw), 0);
    for (auto& v : x)
      v = static_cast<int8_t>(s8(rng));
    for (int64_t o = 0; o < n; ++o)
      for (int64_t i = 0; i < k; ++i)
        w[static_cast<size_t>(o * ldw + i)] = static_cast<int8_t>(s8(rng));
    std::vector<float> row_scale(static_cast<size_t>(m)), w_scale(static_cast<size_t>(n)),
        bias(static_cast<size_t>(n));
    for (auto& v : row_scale)
      v = unit(rng) / 127.0f;
    for (auto& v : w_scale)
      v = unit(rng) * 0.02f / 127.0f;
    for (auto& v : bias)
      v = sym(rng);
    std::vector<uint16_t> residual(static_cast<size_t>(m * n));
    for (auto& v : residual)
      v = f32_to_f16(4.0f * sym(rng));
    // The reference: exact integer sums over the taps inside the image, the epilogue in double.
    std::vector<double> want(static_cast<size_t>(m * n));
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t oh = 0; oh < s.out_h; ++oh)
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          const int64_t row = (b * s.out_h + oh) * s.out_w + ow;
          for (int64_t o = 0; o < n; ++o) {
            int64_t acc = 0;
            for (int i = 0; i < c.kernel; ++i)
              for (int j = 0; j < c.kernel; ++j) {
                const int64_t ih = oh * c.stride - c.padding + i;
                const int64_t iw = ow * c.stride - c.padding + j;
                if (ih < 0 || ih >= c.height || iw < 0 || iw >= c.width) continue;
                const int8_t* xp =
                    &x[static_cast<size_t>(((b * c.height + ih) * c.width + iw) * c.channels)];
                const int8_t* wp =
                    &w[static_cast<size_t>(o * ldw + (i * c.kernel + j) * c.channels)];
                for (int64_t ch = 0; ch < c.channels; ++ch)
                  acc += int64_t{xp[ch]} * wp[ch];
              }
            double y = static_cast<double>(acc) * row_scale[static_cast<size_t>(row)] *
                       w_scale[static_cast<size_t>(o)];
            if (c.bias) y += bias[static_cast<size_t>(o)];
            if (c.residual) y += f16_to_f32(residual[static_cast<size_t>(row * n + o)]);
            want[static_cast<size_t>(row * n + o)] = y;
          }
        }
    const cu::DeviceBuffer dx = to_device(x, "x"), dw = to_device(w, "w"),
                           drs = to_device(row_scale, "row scales"),
                           dws = to_device(w_scale, "w scales"), db = to_device(bias, "bias"),
                           dr = to_device(residual, "residual");
    cu::DeviceBuffer dy(static_cast<size_t>(m * n) * 2, "y");
    for (int tile : cu::kImplicitConvTileN) {
      SCOPED_TRACE(testing::Message() << "tile 128 x " << tile);
      HYRT_CUDA_CHECK(cudaMemset(dy.data(), 0xff, dy.size()));  // f16 NaN
      HYRT_CUDA_CHECK(
          cu::launch_implicit_s8_conv(dx.as<int8_t>(), dw.as<int8_t>(), ldw, drs.as<float>(),
                                      dws.as<float>(), c.bias ? db.as<float>() : nullptr,
                                      c.residual ? static_cast<const __half*>(dr.data()) : nullptr,
                                      static_cast<__half*>(dy.data()), s, tile, nullptr));
      HYRT_CUDA_CHECK(cudaDeviceSynchronize());
      const auto got = from_device<uint16_t>(dy, static_cast<size_t>(m * n));
      size_t bad = 0;
      double worst = 0.0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double g = f16_to_f32(got[i]);
        const double err = std::abs(g - want[i]);
        if (!std::isfinite(g) || err > std::abs(want[i]) * (1.0 / 1024.0) + 1e-6) ++bad;
        if (std::isfinite(g)) worst = std::max(worst, err / (std::abs(want[i]) + 1e-6));
      }
      EXPECT_EQ(bad, 0u) << "values off the reference (worst relative error " << worst << ")";
      std::printf(
          "[ cuda     ] implicit conv %lldx%lldx%lld -> %lld, %dx%d s%d, tile %d: worst rel "
          "%.2e\n",
          static_cast<long long>(c.height), static_cast<long long>(c.width),
          static_cast<long long>(c.channels), static_cast<long long>(n), c.kernel, c.kernel,
          c.stride, tile, worst);
    }
  }
}

// The tile rule (implicit_s8_conv_auto_tile) on the shapes it was measured at, 132 SMs (b2):
// 160 wide from about a wave of tiles, 128 where 160 does not divide N, none below a wave.
TEST(CudaConvImplicit, TileRule) {
  auto conv = [](int64_t hw, int64_t c, int64_t n) {
    cu::ImplicitConvS8Shape s;
    s.batch = 2, s.height = s.width = s.out_h = s.out_w = hw, s.channels = c;
    s.out_channels = n, s.kernel_h = s.kernel_w = 3, s.stride = 1, s.padding = 1;
    return s;
  };
  if (!cu::fused_s8_gemm_available(9, 0)) GTEST_SKIP() << "a build without the kernels";
  EXPECT_EQ(cu::implicit_s8_conv_auto_tile(conv(128, 320, 320), 132), 160);   // 512 tiles
  EXPECT_EQ(cu::implicit_s8_conv_auto_tile(conv(64, 320, 320), 132), 160);    // 128 tiles
  EXPECT_EQ(cu::implicit_s8_conv_auto_tile(conv(32, 1280, 1280), 132), 160);  // 128 tiles
  EXPECT_EQ(cu::implicit_s8_conv_auto_tile(conv(32, 640, 640), 132), 0);      // 64 tiles
  EXPECT_EQ(cu::implicit_s8_conv_auto_tile(conv(16, 1280, 1280), 132), 0);    // 32 tiles
  EXPECT_EQ(cu::implicit_s8_conv_auto_tile(conv(64, 256, 256), 132), 128);    // 128 tiles
  EXPECT_EQ(cu::implicit_s8_conv_auto_tile(conv(64, 320, 320), 264), 0);      // half a wave
}

// Which convs read a quantizing group norm's output (s8rows, one scale per image) as it is —
// conv2d_reads_quantized_input, a host-side rule (no GPU needed): only the implicit-GEMM W8A8
// form the tile rule gives a tile (about a wave on 132 SMs), rows = input positions (stride 1,
// same size), 8-bit S weights, no fused activation; HYRT_CUDA_CONV_IMPLICIT decides as for the
// float input.
TEST(CudaConvImplicit, WhichConvsReadAQuantizedGroupNorm) {
  if (!cu::fused_s8_gemm_available(9, 0)) GTEST_SKIP() << "a build without the kernels";
  cu::CudaDeviceInfo h100;
  h100.name = "H100 (as described)", h100.compute_major = 9, h100.multiprocessors = 132;
  struct Conv {
    int64_t hw, c, n;
    int kernel = 3, stride = 1, padding = 1;
    DType w = DType::kS8;
    ir::Activation act = ir::Activation::kNone;
  };
  auto reads_on = [&](const Conv& cv, const cu::CudaDeviceInfo& dev) {
    ir::Graph g(DType::kF16);
    const ir::ValueId x = g.add_input("x", DType::kF16, {2, cv.hw, cv.hw, cv.c});
    const ir::ValueId h = g.add_node(
        ir::OpKind::kGroupNorm,
        {x, g.add_weight("g", DType::kF32, {cv.c}), g.add_weight("b", DType::kF32, {cv.c})},
        ir::NormAttrs{32, 1e-5f, true, true}, "gn");
    ir::Conv2dAttrs a{cv.stride, cv.padding};
    a.epilogue.activation = cv.act;
    const ir::ValueId y =
        g.add_node(ir::OpKind::kConv2d,
                   {h, g.add_weight("w", cv.w, {cv.n, cv.c, cv.kernel, cv.kernel})}, a, "conv");
    EXPECT_EQ(g.value(y).dtype, DType::kF16);
    return cu::conv2d_reads_quantized_input(g, g.nodes()[1], dev, true);
  };
  auto reads = [&](const Conv& cv) { return reads_on(cv, h100); };
  // SD 1.5's resnet convs at 1024² (128², 64², 32² latents) and 512²'s level 0: a wave or more.
  EXPECT_TRUE(reads({128, 320, 320}));
  EXPECT_TRUE(reads({128, 960, 320}));
  EXPECT_TRUE(reads({64, 640, 640}));
  EXPECT_TRUE(reads({32, 1280, 1280}));
  // Below a wave (512²'s 32² and 16² convs): they run through im2col, which quantizes per row.
  EXPECT_FALSE(reads({32, 640, 640}));
  EXPECT_FALSE(reads({16, 1280, 1280}));
  // Rows that are not the input's positions, a 1x1 conv (a linear: per-row scales), weights
  // that are not 8-bit S, a fused activation, channels the kernel does not take.
  EXPECT_FALSE(reads({128, 320, 320, 3, 2, 1}));
  EXPECT_FALSE(reads({128, 320, 320, 1, 1, 0}));
  EXPECT_FALSE(reads({128, 320, 320, 3, 1, 1, DType::kF16}));
  EXPECT_FALSE(reads({128, 320, 320, 3, 1, 1, DType::kS8, ir::Activation::kSilu}));
  EXPECT_FALSE(reads({128, 96, 320}));
  // No fused W8A8 kernel on the device (not Hopper), or turned off.
  cu::CudaDeviceInfo ampere = h100;
  ampere.compute_major = 8;
  EXPECT_FALSE(reads_on({128, 320, 320}, ampere));
  {
    const ScopedEnv off("HYRT_CUDA_CONV_IMPLICIT", "0");
    EXPECT_FALSE(reads({128, 320, 320}));
  }
  {
    const ScopedEnv every("HYRT_CUDA_CONV_IMPLICIT", "2");
    EXPECT_TRUE(reads({16, 1280, 1280}));  // any size under =2
    EXPECT_FALSE(reads({16, 1280, 1280, 3, 2, 1}));
  }
}

// Shapes outside the kernel's reach are refused up front (not launched).
TEST(CudaConvImplicit, RefusesShapesItCannotRun) {
  cu::ImplicitConvS8Shape s;
  s.batch = 2, s.height = 8, s.width = 8, s.channels = 64, s.out_channels = 64;
  s.kernel_h = s.kernel_w = 3, s.stride = 1, s.padding = 1, s.out_h = 8, s.out_w = 8;
  const int64_t k = 9 * 64;
  if (!cu::fused_s8_gemm_available(9, 0)) GTEST_SKIP() << "a build without the kernels";
  // Taken, CUTLASS's own can_implement included (host-side checks).
  ASSERT_TRUE(cu::implicit_s8_conv_shape_ok(s, k));
  auto refused = [&](cu::ImplicitConvS8Shape bad, int64_t ldw) {
    EXPECT_FALSE(cu::implicit_s8_conv_shape_ok(bad, ldw));
    EXPECT_EQ(cu::launch_implicit_s8_conv(nullptr, nullptr, ldw, nullptr, nullptr, nullptr, nullptr,
                                          nullptr, bad, 128, nullptr),
              cudaErrorInvalidValue);
  };
  cu::ImplicitConvS8Shape bad = s;
  bad.channels = 32;  // not a whole K step
  refused(bad, 9 * 32);
  bad = s, bad.out_channels = 60;  // f16 rows of 8
  refused(bad, k);
  refused(s, k - 16);  // a weight row shorter than K
  bad = s, bad.stride = 3;
  refused(bad, k);
  bad = s, bad.batch = 65536;  // more images than the per-image quantizer takes
  refused(bad, k);
  bad = s, bad.out_h = 7;  // not what the geometry gives
  refused(bad, k);
  // A tile width the kernel is not built for.
  EXPECT_EQ(cu::launch_implicit_s8_conv(nullptr, nullptr, k, nullptr, nullptr, nullptr, nullptr,
                                        nullptr, s, 96, nullptr),
            cudaErrorInvalidValue);
}

}  // namespace
}  // namespace hyrt::test

#endif  // HYRT_HAVE_CUDA

// The W8A8 activation quantizers (src/backend/cuda/cuda_kernels.h: launch_quantize_rows_s8,
// launch_im2col_quantize_s8) against the CPU backend's quantizer of the same rule
// (cpu/int8_common.h), bit for bit: every s8 value (the K padding's zeros included) and every f32
// row scale. Dense rows: vectorized and scalar widths, zero rows, outliers, f16 and f32. im2col:
// each thread-group size of the register-resident kernel (im2col.cu: 32..256 threads a row), the
// widest row it holds and wider ones (the two-pass kernel), odd channel counts (the scalar
// kernel), padding, stride 2, 1x1, and a row range that starts mid-image. Outputs are poisoned
// before each run. ctest runs these again with $HYRT_CUDA_QUANTIZE=twopass (the two-pass kernel
// everywhere), which must give the same bits. Skips without a usable GPU.
#ifdef HYRT_HAVE_CUDA

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/int8_common.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_kernels.h"
#include "core/half.h"
#include "cuda_test_gpu.h"

namespace hyrt::test {
namespace {

using backend::cuda::DeviceBuffer;
using backend::cuda::FloatType;

// The rule on one row of floats, as the CPU backend applies it (cuda_kernels.h promises the
// CPU's bits): q [ld_q] (zeros after the row) and the row's scale.
float quantize_row(const float* x, int64_t cols, int64_t ld_q, int8_t* q) {
  float scale = 0.0f;
  backend::cpu::quantize_rows_s8(x, 1, cols, q, &scale);
  std::fill(q + cols, q + ld_q, int8_t{0});
  return scale;
}

// Random values with some structure: row r % 7 == 3 all zero, row r % 5 == 1 with one outlier.
std::vector<float> make_values(int64_t rows, int64_t cols, uint32_t seed, bool as_f16) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      float v = r % 7 == 3 ? 0.0f : d(rng);
      if (r % 5 == 1 && k == (r * 131) % cols) v = 300.0f;
      // Round through f16 so host and device read the same value.
      if (as_f16) v = f16_to_f32(f32_to_f16(v));
      x[static_cast<size_t>(r * cols + k)] = v;
    }
  return x;
}

// Device copy of x as f16 or f32.
DeviceBuffer upload(const std::vector<float>& x, FloatType type) {
  const size_t n = x.size();
  DeviceBuffer buf(n * (type == FloatType::kF16 ? 2 : 4) + 16, "quantize test x");
  if (type == FloatType::kF16) {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i)
      h[i] = f32_to_f16(x[i]);
    HYRT_CUDA_CHECK(cudaMemcpy(buf.data(), h.data(), n * 2, cudaMemcpyHostToDevice));
  } else {
    HYRT_CUDA_CHECK(cudaMemcpy(buf.data(), x.data(), n * 4, cudaMemcpyHostToDevice));
  }
  return buf;
}

struct Outputs {
  DeviceBuffer q, scales;
  Outputs(int64_t rows, int64_t ld_q)
      : q(static_cast<size_t>(rows * ld_q), "quantize test q"),
        scales(static_cast<size_t>(rows) * 4, "quantize test scales") {
    // Poison: 0x7f in q (a value the rule gives only at the absmax), NaN in the scales.
    HYRT_CUDA_CHECK(cudaMemset(q.data(), 0x7f, q.size()));
    HYRT_CUDA_CHECK(cudaMemset(scales.data(), 0xff, scales.size()));
  }
  void expect_equal(const std::vector<int8_t>& want_q, const std::vector<float>& want_s,
                    const std::string& what) const {
    std::vector<int8_t> got_q(want_q.size());
    std::vector<float> got_s(want_s.size());
    HYRT_CUDA_CHECK(cudaDeviceSynchronize());
    HYRT_CUDA_CHECK(cudaMemcpy(got_q.data(), q.data(), got_q.size(), cudaMemcpyDeviceToHost));
    HYRT_CUDA_CHECK(
        cudaMemcpy(got_s.data(), scales.data(), got_s.size() * 4, cudaMemcpyDeviceToHost));
    size_t bad_q = 0, bad_s = 0;
    for (size_t i = 0; i < want_q.size(); ++i)
      bad_q += got_q[i] != want_q[i];
    for (size_t i = 0; i < want_s.size(); ++i)
      bad_s += std::memcmp(&got_s[i], &want_s[i], 4) != 0;
    EXPECT_EQ(bad_q, 0u) << what << ": s8 values differ";
    EXPECT_EQ(bad_s, 0u) << what << ": row scales differ";
  }
};

struct DenseCase {
  int64_t rows, cols, pad;  // ld_q = cols + pad
  FloatType type;
};

TEST(CudaQuantize, DenseRowsMatchTheRuleBitForBit) {
  REQUIRE_GPU();
  const DenseCase cases[] = {
      {37, 8, 0, FloatType::kF16},    {37, 320, 0, FloatType::kF16}, {21, 1288, 8, FloatType::kF16},
      {19, 2056, 0, FloatType::kF16}, {9, 5120, 0, FloatType::kF16}, {5, 16384, 0, FloatType::kF16},
      {5, 16392, 8, FloatType::kF16}, {11, 13, 3, FloatType::kF16},  {300, 640, 0, FloatType::kF16},
      {37, 4, 0, FloatType::kF32},    {23, 640, 4, FloatType::kF32}, {5, 8192, 0, FloatType::kF32},
      {5, 8196, 0, FloatType::kF32},  {7, 30, 2, FloatType::kF32},
  };
  uint32_t seed = 1;
  for (const DenseCase& c : cases) {
    const bool f16 = c.type == FloatType::kF16;
    const std::vector<float> x = make_values(c.rows, c.cols, seed++, f16);
    const int64_t ld_q = c.cols + c.pad;
    std::vector<int8_t> want_q(static_cast<size_t>(c.rows * ld_q));
    std::vector<float> want_s(static_cast<size_t>(c.rows));
    for (int64_t r = 0; r < c.rows; ++r)
      want_s[static_cast<size_t>(r)] = quantize_row(&x[static_cast<size_t>(r * c.cols)], c.cols,
                                                    ld_q, &want_q[static_cast<size_t>(r * ld_q)]);
    DeviceBuffer dx = upload(x, c.type);
    Outputs out(c.rows, ld_q);
    HYRT_CUDA_CHECK(backend::cuda::launch_quantize_rows_s8(dx.data(), c.type, c.rows, c.cols, ld_q,
                                                           out.q.as<int8_t>(),
                                                           out.scales.as<float>(), nullptr));
    out.expect_equal(want_q, want_s,
                     str_cat(c.rows, "x", c.cols, " ld_q ", ld_q, f16 ? " f16" : " f32"));
  }
}

struct Im2colCase {
  int64_t batch, height, width, channels;
  int kernel, stride, padding;
  int64_t row_begin, rows;  // rows < 0: all from row_begin
  int64_t pad;              // ld_q = K + pad
  FloatType type;
};

TEST(CudaQuantize, Im2colRowsMatchTheRuleBitForBit) {
  REQUIRE_GPU();
  const Im2colCase cases[] = {
      {2, 5, 7, 16, 3, 1, 1, 0, -1, 0, FloatType::kF16},     // 144 columns, one warp
      {2, 6, 6, 320, 3, 1, 1, 0, -1, 0, FloatType::kF16},    // K 2880: 64 threads a row
      {1, 7, 5, 640, 3, 2, 1, 0, -1, 16, FloatType::kF16},   // stride 2, K padded
      {2, 4, 4, 1280, 3, 1, 1, 5, 19, 0, FloatType::kF16},   // K 11520: 256, mid-image range
      {1, 3, 3, 2048, 3, 1, 1, 0, -1, 0, FloatType::kF16},   // K 18432: the two-pass kernel
      {1, 2, 3, 16384, 1, 1, 0, 0, -1, 0, FloatType::kF16},  // the widest resident row
      {1, 2, 3, 16392, 1, 1, 0, 0, -1, 8, FloatType::kF16},  // one group more: two-pass
      {2, 5, 5, 12, 3, 1, 1, 0, -1, 4, FloatType::kF16},     // 12 channels: the scalar kernel
      {2, 5, 6, 64, 3, 1, 1, 3, 40, 0, FloatType::kF32},     // f32, a row range
      {1, 4, 4, 2304, 3, 1, 1, 0, -1, 0, FloatType::kF32},   // f32 K 20736: two-pass
      {2, 8, 8, 32, 1, 1, 0, 0, -1, 0, FloatType::kF16},     // 1x1: gather of one tap
  };
  uint32_t seed = 100;
  for (const Im2colCase& c : cases) {
    const bool f16 = c.type == FloatType::kF16;
    const int64_t out_h = (c.height + 2 * c.padding - c.kernel) / c.stride + 1;
    const int64_t out_w = (c.width + 2 * c.padding - c.kernel) / c.stride + 1;
    const int64_t all_rows = c.batch * out_h * out_w;
    const int64_t rows = c.rows < 0 ? all_rows - c.row_begin : c.rows;
    const int64_t k = c.kernel * c.kernel * c.channels, ld_q = k + c.pad;
    const std::vector<float> x = make_values(c.batch * c.height * c.width, c.channels, seed++, f16);
    std::vector<int8_t> want_q(static_cast<size_t>(rows * ld_q));
    std::vector<float> want_s(static_cast<size_t>(rows)), row(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t m = c.row_begin + r, ow = m % out_w, oh = m / out_w % out_h,
                    b = m / (out_w * out_h);
      for (int64_t i = 0; i < c.kernel; ++i)
        for (int64_t j = 0; j < c.kernel; ++j)
          for (int64_t ch = 0; ch < c.channels; ++ch) {
            const int64_t ih = oh * c.stride - c.padding + i, iw = ow * c.stride - c.padding + j;
            const bool in = ih >= 0 && ih < c.height && iw >= 0 && iw < c.width;
            row[static_cast<size_t>((i * c.kernel + j) * c.channels + ch)] =
                in ? x[static_cast<size_t>(((b * c.height + ih) * c.width + iw) * c.channels + ch)]
                   : 0.0f;
          }
      want_s[static_cast<size_t>(r)] =
          quantize_row(row.data(), k, ld_q, &want_q[static_cast<size_t>(r * ld_q)]);
    }
    DeviceBuffer dx = upload(x, c.type);
    Outputs out(rows, ld_q);
    HYRT_CUDA_CHECK(backend::cuda::launch_im2col_quantize_s8(
        dx.data(), c.type, c.batch, c.height, c.width, c.channels, c.kernel, c.kernel, c.stride,
        c.padding, out_h, out_w, c.row_begin, rows, ld_q, out.q.as<int8_t>(),
        out.scales.as<float>(), nullptr));
    out.expect_equal(
        want_q, want_s,
        str_cat("im2col ", c.batch, "x", c.height, "x", c.width, "x", c.channels, " k", c.kernel,
                " s", c.stride, " rows ", c.row_begin, "+", rows, f16 ? " f16" : " f32"));
  }
}

}  // namespace
}  // namespace hyrt::test

#endif  // HYRT_HAVE_CUDA

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/buffer.h"
#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "core/shape.h"
#include "core/sysinfo.h"
#include "core/tensor.h"

using namespace hyrt;

TEST(Half, EveryF16RoundTripsThroughF32) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << "h=" << h << " f=" << f;
  }
}

TEST(Half, F32ToF16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(65504.f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.f), 0x7c00);             // rounds to inf
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // tie -> even
  EXPECT_EQ(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);
  EXPECT_EQ(f32_to_f16(5.9604645e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(2.9802322e-08f), 0x0000);  // half of it: tie -> even (0)
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
}

TEST(Half, BulkConversionMatchesScalar) {
  std::vector<uint16_t> h(1003);
  for (size_t i = 0; i < h.size(); ++i)
    h[i] = static_cast<uint16_t>(i * 65 + 7);
  std::vector<float> f(h.size()), g(h.size());
  convert_to_f32(DType::kF16, h.data(), f.data(), h.size());
  for (size_t i = 0; i < h.size(); ++i)
    g[i] = f16_to_f32(h[i]);
  for (size_t i = 0; i < h.size(); ++i)  // NaN payloads may differ (F16C quiets them)
    ASSERT_TRUE(f[i] == g[i] || (std::isnan(f[i]) && std::isnan(g[i]))) << i;
  std::vector<uint16_t> back(h.size());
  convert_from_f32(f.data(), DType::kF16, back.data(), f.size());
  for (size_t i = 0; i < h.size(); ++i) {
    if (!std::isnan(f[i])) {
      ASSERT_EQ(back[i], h[i]);
    }
  }
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
}

// The bulk f32 -> bf16 conversion (vectorised where the CPU has AVX-512) gives the scalar
// f32_to_bf16's bits for every input: ties to even, subnormals kept, infinities, quiet NaNs,
// and a tail shorter than a vector.
TEST(Half, BulkBf16MatchesTheScalarConversion) {
  std::vector<uint32_t> bits = {0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x00000001u, 0x80000001u,
                                0x007fffffu, 0x7f800000u, 0xff800000u, 0x7fc00001u, 0x7f800001u,
                                0xff800001u, 0x7f7fffffu, 0x00000000u, 0x80000000u};
  uint32_t state = 12345;
  for (int i = 0; i < 4099; ++i) {
    state = state * 1664525u + 1013904223u;
    bits.push_back(state);
  }
  std::vector<float> f(bits.size());
  std::memcpy(f.data(), bits.data(), bits.size() * 4);
  std::vector<uint16_t> got(f.size());
  convert_from_f32(f.data(), DType::kBF16, got.data(), f.size());
  for (size_t i = 0; i < f.size(); ++i)
    ASSERT_EQ(got[i], f32_to_bf16(f[i])) << std::hex << "input 0x" << bits[i];
  EXPECT_EQ(got[0], 0x3f80);           // 1 + 2^-8 is a tie: to even
  EXPECT_EQ(got[1], 0x3f82);           // 1 + 3·2^-8: a tie, up to even
  EXPECT_EQ(got[9] & 0x7fc0, 0x7fc0);  // a signalling NaN comes out quiet
}

TEST(Shape, NumelOverflowIsAnError) {
  Shape s{1ll << 40, 1ll << 40};
  EXPECT_THROW(s.numel(), Error);
  EXPECT_THROW((Shape{-1, 4}.numel()), Error);
  EXPECT_EQ((Shape{2, 3, 4}.numel()), 24);
  EXPECT_EQ(Shape{}.numel(), 1);
}

TEST(Parallel, CoversTheRangeOnce) {
  std::vector<int> hits(10007, 0);
  parallel_for(static_cast<int64_t>(hits.size()), 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      ++hits[i];
  });
  for (int h : hits)
    ASSERT_EQ(h, 1);
}

TEST(Tensor, NchwNhwcRoundTrip) {
  Tensor t(DType::kF32, {2, 3, 4, 5});
  for (int i = 0; i < t.numel(); ++i)
    t.as<float>()[i] = static_cast<float>(i);
  Tensor n = nchw_to_nhwc(t.view());
  EXPECT_EQ(n.shape(), (Shape{2, 4, 5, 3}));
  EXPECT_EQ(n.as<float>()[1], 20.0f);  // (b0, h0, w0, c1) = c*20
  Tensor back = nhwc_to_nchw(n.view());
  EXPECT_EQ(std::memcmp(back.data(), t.data(), t.bytes()), 0);
}

// Large buffers are their own mappings: aligned, usable, movable, and their pages leave the
// resident set when freed (a released model stage must not stay resident).
TEST(AlignedBufferTest, LargeBuffersReturnTheirPagesWhenFreed) {
  using hyrt::AlignedBuffer;
  AlignedBuffer small(1000, "small");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % AlignedBuffer::kAlignment, 0u);
  constexpr size_t kBytes = size_t{256} << 20;
  const int64_t before = hyrt::current_rss_bytes();
  {
    AlignedBuffer big(kBytes, "big");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % AlignedBuffer::kAlignment, 0u);
    std::memset(big.data(), 1, kBytes);
    AlignedBuffer moved = std::move(big);
    EXPECT_EQ(big.data(), nullptr);
    EXPECT_EQ(moved.size(), kBytes);
    EXPECT_EQ(moved.as<uint8_t>()[kBytes - 1], 1);
    EXPECT_GT(hyrt::current_rss_bytes(), before + static_cast<int64_t>(kBytes / 2));
  }
  EXPECT_LT(hyrt::current_rss_bytes(), before + static_cast<int64_t>(kBytes / 4));
}

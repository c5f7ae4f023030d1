// TorchCpuRng (pipeline/rng.h) against values printed by torch 2.x on x86-64:
//   g = torch.Generator("cpu").manual_seed(seed); torch.randn(n, generator=g) / torch.rand(...)
// The uniform stream and the n < 16 path are bit-exact; the n >= 16 path uses libm where torch
// uses SLEEF, so it is checked to 1e-6 (measured: at most 3 ulp, |diff| <= 4e-7).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "pipeline/rng.h"

namespace hyrt::pipeline {
namespace {

// torch.rand(20, generator=torch.Generator().manual_seed(42))
TEST(TorchCpuRng, UniformStreamIsBitExact) {
  const std::vector<float> want = {
      0.8822692632675171f, 0.9150039553642273f,  0.38286375999450684f, 0.9593056440353394f,
      0.3904482126235962f, 0.600895345211029f,   0.2565724849700928f,  0.7936413288116455f,
      0.9407714605331421f, 0.13318592309951782f, 0.9345980882644653f,  0.5935796499252319f,
      0.8694044351577759f, 0.5677152872085571f,  0.7410940527915955f,  0.42940449714660645f,
      0.8854429125785828f, 0.5739044547080994f,  0.2665800452232361f,  0.6274491548538208f};
  TorchCpuRng rng(42);
  std::vector<float> got(want.size());
  rng.rand(got);
  EXPECT_EQ(got, want);
}

// Small draws use the double-precision path and cache the second Box–Muller value across
// calls: randn(3), randn(1), randn(5) on seed 0.
TEST(TorchCpuRng, SmallDrawsAreBitExact) {
  TorchCpuRng rng(0);
  EXPECT_EQ(rng.randn(3),
            (std::vector<float>{1.5409960746765137f, -0.293428897857666f, -2.1787893772125244f}));
  EXPECT_EQ(rng.randn(1), (std::vector<float>{0.5684312582015991f}));
  EXPECT_EQ(rng.randn(5),
            (std::vector<float>{-1.0845223665237427f, -1.3985954523086548f, 0.40334683656692505f,
                                0.8380263447761536f, -0.7192575931549072f}));
}

// Only the low 32 bits of the seed matter, as in torch: seed 2**32 + 5.
TEST(TorchCpuRng, SeedIsTruncatedTo32Bits) {
  TorchCpuRng rng((uint64_t{1} << 32) + 5);
  EXPECT_EQ(rng.randn(2), (std::vector<float>{-0.4867807626724243f, -0.6038215756416321f}));
}

// A [1, 4, 8, 8] latent (the vectorised n >= 16 path) and then randn(20), whose 20 is not a
// multiple of 16 (the last 16 values are redrawn) — seed 42.
TEST(TorchCpuRng, LargeDrawsMatchTorch) {
  TorchCpuRng rng(42);
  const std::vector<float> latent = rng.randn(256);
  const std::vector<float> head = {1.9269152879714966f,   1.4872840642929077f, 0.9007171988487244f,
                                   -2.1055209636688232f,  0.6784184575080872f, -1.2345448732376099f,
                                   -0.04306747764348984f, -1.6046669483184814f};
  const std::vector<float> tail = {0.5397310256958008f, 0.5655050277709961f, 0.5057917237281799f,
                                   0.22245365381240845f};
  for (size_t i = 0; i < head.size(); ++i)
    EXPECT_NEAR(latent[i], head[i], 1e-6) << i;
  for (size_t i = 0; i < tail.size(); ++i)
    EXPECT_NEAR(latent[252 + i], tail[i], 1e-6) << i;
  double sum = 0, sum_sq = 0;
  for (float v : latent)
    sum += v, sum_sq += double(v) * v;
  EXPECT_NEAR(sum, 16.138675689697266, 1e-4);
  EXPECT_NEAR(sum_sq, 250.3199005126953, 1e-4);

  const std::vector<float> next = rng.randn(20);
  const std::vector<float> want = {
      -0.685481607913971f,  0.5635589957237244f,  -1.507175087928772f,  -1.610666036605835f,
      -0.1221928745508194f, -0.7469954490661621f, 1.7093087434768677f,  0.05792269483208656f,
      0.8637403845787048f,  -0.5890002846717834f, -1.0340019464492798f, -0.2178654670715332f,
      0.41459226608276367f, 1.15656316280365f,    0.2690545618534088f,  -0.036629438400268555f,
      -0.4807589650154114f, 0.3163014054298401f,  0.3865722119808197f,  0.7336946129798889f};
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(next[i], want[i], 1e-6) << i;
}

TEST(TorchCpuRng, ManualSeedResets) {
  TorchCpuRng a(7);
  const auto first = a.randn(3);  // leaves a cached normal behind
  a.manual_seed(7);
  EXPECT_EQ(a.randn(3), first);
  TorchCpuRng b(8);
  EXPECT_NE(b.randn(100), TorchCpuRng(7).randn(100));
}

TEST(TorchCpuRng, LooksNormal) {
  TorchCpuRng rng(123);
  const auto v = rng.randn(1 << 16);
  double mean = 0, var = 0;
  for (float x : v)
    mean += x;
  mean /= v.size();
  for (float x : v)
    var += (x - mean) * (x - mean);
  var /= v.size();
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(var, 1.0, 0.02);
  for (float x : v)
    ASSERT_TRUE(std::isfinite(x));
}

}  // namespace
}  // namespace hyrt::pipeline

// Issue rates of the instructions a head-40 attention's softmax is made of, on the card it runs
// on: how many results per clock and SM the SFU's exp2 (MUFU.EX2), the f32 -> f16x2 packing of
// P (F2FP.PACK_AB) and the FMA pipe (FFMA, HFMA2, and 2^x as a cubic on it) give, alone and
// mixed in the softmax's ratios — so that a kernel's design rests on measured rates, not on
// a table that does not list F2FP. The exponentials and the packing are the attention kernels'
// own (backend/cuda/attention_device.cuh); no hyrt library is linked:
//   build/bench/pipe_rates (HYRT_BUILD_CUDA_BENCH), or
//   nvcc -O3 -std=c++20 -arch=sm_90a -Isrc -o pipe_rates bench/cuda/pipe_rates.cu && ./pipe_rates
// Prints one JSON object: per case, results per clock per SM (clock64 around the loop in every
// block, one block of 1024 threads per SM, 8 independent chains per thread).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/cuda/attention_device.cuh"

namespace hyrt {
namespace {

constexpr int kChains = 8;
constexpr int kIters = 4096;
constexpr int kThreads = 1024;

using backend::cuda::attention_device::ex2;
using backend::cuda::attention_device::exp2_poly;
// The kernels' f16x2 packing (attention_device::pack_half2: F2FP.PACK_AB), a in the low half.
__device__ __forceinline__ uint32_t pack(float a, float b) {
  return backend::cuda::attention_device::pack_half2(a, b);
}
__device__ __forceinline__ uint32_t hfma2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm volatile("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// 2^x of two f32 x <= 0 into one f16x2 on the f16 FMA pipe: packed once, rounded to an integer
// by 1.5·2^10, a cubic in f16x2, the integer part added into each half's exponent field.
__device__ __forceinline__ uint32_t exp2_pair_h2(float a, float b) {
  uint32_t x = pack(a, b);
  asm volatile("max.f16x2 %0, %0, %1;\n" : "+r"(x) : "r"(0xCE00CE00u));  // -24
  uint32_t shifted, rounded, f, y;
  asm volatile("add.rn.f16x2 %0, %1, %2;\n" : "=r"(shifted) : "r"(x), "r"(0x66006600u));  // 1536
  asm volatile("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(rounded) : "r"(shifted), "r"(0x66006600u));
  asm volatile("sub.rn.f16x2 %0, %1, %2;\n" : "=r"(f) : "r"(x), "r"(rounded));
  y = hfma2(0x2B102B10u, f, 0x33C433C4u);  // 0.0555, 0.2427 (f16)
  y = hfma2(y, f, 0x398C398Cu);            // 0.6934
  y = hfma2(y, f, 0x3C003C00u);            // 1.0
  const uint32_t e = (shifted << 10) & 0xFC00FC00u;
  return y + e - 0x00010000u;
}

enum Case : int {
  kEx2,
  kPack,
  kEx2Pack2to1,
  kFfma,
  kHfma2,
  kPolyF32,
  kEx2Ffma1to8,
  kPolyH2Pair,
  kSoftmaxMufu,  // per pair: 2 FFMA, 2 ex2, 1 pack (the kernel's softmax without the max)
  kEx2H2,        // ex2.approx.f16x2: two MUFU.EX2.F16 and a PRMT on sm_90
  kEx2PackFfma,  // per pair: 2 ex2, 1 pack, 8 FFMA (does the FMA pipe run beside them?)
  kCases
};
const char* const kNames[] = {"mufu_ex2",
                              "f2fp_pack",
                              "ex2_pack_2to1",
                              "ffma",
                              "hfma2",
                              "exp2_poly_f32",
                              "ex2_ffma_1to8",
                              "exp2_poly_h2_pair",
                              "softmax_pair_mufu",
                              "mufu_ex2_f16x2",
                              "ex2_pack_ffma_2_1_8"};
// Results counted per loop iteration and chain (a pair counts as two exponentials).
static_assert(sizeof(kNames) / sizeof(kNames[0]) == kCases);
const int kResults[] = {1, 1, 3, 1, 2, 1, 9, 2, 2, 2, 11};
static_assert(sizeof(kResults) / sizeof(kResults[0]) == kCases);

template <int kCase>
__global__ void __launch_bounds__(kThreads, 1) rates(float seed, long long* cycles, float* sink) {
  float f[kChains];
  uint32_t u[kChains];
#pragma unroll
  for (int c = 0; c < kChains; ++c) {
    f[c] = -seed * (threadIdx.x % 7 + c + 1) * 0.01f;
    u[c] = __float_as_uint(f[c]);
  }
  __syncthreads();
  const long long t0 = clock64();
  for (int it = 0; it < kIters; ++it) {
#pragma unroll
    for (int c = 0; c < kChains; ++c) {
      if constexpr (kCase == kEx2) {
        f[c] = ex2(f[c]) - 1.0f * 0.0f;
      } else if constexpr (kCase == kPack) {
        u[c] = pack(__uint_as_float(u[c]), f[c]);
      } else if constexpr (kCase == kEx2Pack2to1) {
        const float a = ex2(f[c]), b = ex2(__uint_as_float(u[c]));
        u[c] = pack(a, b);
        f[c] = a;
      } else if constexpr (kCase == kFfma) {
        f[c] = fmaf(f[c], 0.999f, -0.001f);
      } else if constexpr (kCase == kHfma2) {
        u[c] = hfma2(u[c], 0x3BFF3BFFu, 0x14001400u);
      } else if constexpr (kCase == kPolyF32) {
        f[c] = exp2_poly(f[c]) - 1.0f;
      } else if constexpr (kCase == kEx2Ffma1to8) {
        float a = ex2(f[c]);
        float g = __uint_as_float(u[c]);
#pragma unroll
        for (int k = 0; k < 8; ++k)
          g = fmaf(g, 0.999f, -0.001f);
        u[c] = __float_as_uint(g);
        f[c] = a - 1.0f;
      } else if constexpr (kCase == kPolyH2Pair) {
        u[c] = exp2_pair_h2(f[c], __uint_as_float(u[c]) - 1.0f);
        f[c] = __uint_as_float(u[c] & 0x3FFFu) - 2.0f;
      } else if constexpr (kCase == kSoftmaxMufu) {
        const float a = ex2(fmaf(f[c], 0.7f, -0.5f));
        const float b = ex2(fmaf(__uint_as_float(u[c]), 0.7f, -0.5f));
        u[c] = pack(a, b);
        f[c] = a - 1.0f;
      } else if constexpr (kCase == kEx2H2) {
        asm volatile("ex2.approx.f16x2 %0, %0;" : "+r"(u[c]));
      } else if constexpr (kCase == kEx2PackFfma) {
        const float a = ex2(f[c]), b = ex2(__uint_as_float(u[c]));
        float g = a;
#pragma unroll
        for (int k = 0; k < 8; ++k)
          g = fmaf(g, 0.999f, -0.001f);
        u[c] = pack(b, g);
        f[c] = a - 1.0f;
      }
    }
  }
  const long long t1 = clock64();
  float acc = 0.0f;
#pragma unroll
  for (int c = 0; c < kChains; ++c)
    acc += f[c] + __uint_as_float(u[c] & 0x7FFFFFu);
  sink[blockIdx.x * kThreads + threadIdx.x] = acc;
  if (threadIdx.x == 0) cycles[blockIdx.x] = t1 - t0;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

template <int kCase>
double run(int sms, long long* cycles, float* sink) {
  std::vector<long long> host(sms);
  double best = 0.0;
  for (int rep = 0; rep < 3; ++rep) {
    rates<kCase><<<sms, kThreads>>>(1.0f + rep, cycles, sink);
    check(cudaGetLastError(), "launch");
    check(cudaDeviceSynchronize(), "sync");
    check(cudaMemcpy(host.data(), cycles, sms * sizeof(long long), cudaMemcpyDeviceToHost), "copy");
    long long worst = 0;
    for (long long c : host)
      worst = c > worst ? c : worst;
    const double per_clock = double(kThreads) * kIters * kChains * kResults[kCase] / double(worst);
    best = per_clock > best ? per_clock : best;
  }
  return best;
}

template <int... kC>
void run_all(int sms, long long* cycles, float* sink, std::integer_sequence<int, kC...>) {
  const double r[] = {run<kC>(sms, cycles, sink)...};
  for (int i = 0; i < int(sizeof...(kC)); ++i)
    std::printf("%s    \"%s\": %.2f", i ? ",\n" : "", kNames[i], r[i]);
}

}  // namespace
}  // namespace hyrt

int main() {
  using namespace hyrt;
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "properties");
  const int sms = prop.multiProcessorCount;
  long long* cycles = nullptr;
  float* sink = nullptr;
  check(cudaMalloc(&cycles, sms * sizeof(long long)), "malloc");
  check(cudaMalloc(&sink, size_t(sms) * kThreads * sizeof(float)), "malloc");
  std::printf(
      "{\n  \"card\": \"%s\",\n  \"sms\": %d,\n  \"unit\": \"results per clock per SM\",\n"
      "  \"rates\": {\n",
      prop.name, sms);
  run_all(sms, cycles, sink, std::make_integer_sequence<int, kCases>{});
  std::printf("\n  }\n}\n");
  return 0;
}

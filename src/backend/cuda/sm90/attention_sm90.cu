// Hopper's flash attention (attention_kernels.h, launch_flash_attention_sm90): the products on
// wgmma, the K/V tiles streamed by a producer warp, the softmax of one key tile under the
// tensor cores' work on the next. Compiled for sm_90a only (CMakeLists.txt, the sm90 target).
//
// Why a kernel of hyrt's own beside cuDNN's SDPA: at SD 1.5's head dim 40 cuDNN pads the head
// to 64 (its engines' smallest), so 37 % of its tensor-core work multiplies zeros, and it
// costs 50-100 ms to plan per shape. Here the q·kᵀ product runs k-steps of 16 over the head
// padded only to 48 and the p·v product has N = dv exactly (wgmma takes any N that is a
// multiple of 8), and there is nothing to plan.
//
// Schedule. A block owns kGroups·64 query rows of one (batch, head): kGroups consumer warp
// groups of 64 rows each, and one producer warp group (its registers handed to the consumers by
// setmaxnreg). The producer streams key tiles of kBc (64 or 128) keys (K and V, kStages deep)
// into shared memory with cp.async, each thread's copies arriving on the
// stage's `full` mbarrier as they land (cp.async.mbarrier.arrive), so that the producer never
// waits on its own loads; consumers fence the async proxy (wgmma reads shared memory through
// it) and release a stage through its `empty` mbarrier. Each consumer warp
// group keeps its 64 rows of q in registers as wgmma's A operand (loaded once), and per tile:
//   issue S' = q·kᵀ for the next tile (async), run the online softmax of this tile's S in f32
//   (exp2 on the SFU, row maxima and sums in registers), rescale the output, issue O += P·v
//   with P straight from the score registers rounded to f16 (the m64nN f32 accumulator layout
//   of two adjacent 8-column groups is the k16 A-operand layout), wait for both.
// So the SFU's exponentials of one tile overlap the tensor cores' q·kᵀ of the next; the warp
// groups drift apart on their own barriers and overlap each other too.
//
// Shared layout: wgmma's no-swizzle ("interleave") canonical form, 8x16-byte core matrices.
// A tile of kBc rows by C chunks of 16 bytes (8 halves) is stored chunk-major: chunk c of row
// r at 16·(c·kBc + r). For K (B operand of q·kᵀ, K-major: head dim contiguous) the core
// matrices along N (8 keys) are 128 bytes apart (SBO) and along K (8 head columns) 16·kBc
// (LBO). For V (B operand of P·v, MN-major: head dim contiguous, keys the reduction) the same
// bytes read as 8 keys x 8 head columns per core matrix: along N (head) 16·kBc apart (SBO),
// along K (keys) 128 (LBO). These are the offsets CuTe's make_gmma_desc derives for the same
// layouts ((64,(8,2)):(8,(1,512)) K-major and ((8,5),16):((1,512),8) MN-major, in halves),
// checked on the host. Head columns past d and keys past tk are zero-filled (cp.async's
// src-size 0), so they add nothing to q·k and keep 0·garbage out of P·v; padded keys' scores are
// masked to -inf.
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/arch/mma_sm90_gmma_ext.hpp>

#include "backend/cuda/attention_device.cuh"
#include "backend/cuda/attention_kernels.h"

namespace hyrt::backend::cuda {
namespace {

namespace gmma = cute::SM90::GMMA;

constexpr int kRowsPerGroup = 64;  // query rows per consumer warp group (wgmma's M)

// --- PTX wrappers ----------------------------------------------------------------------------

using attention_device::ex2;
using attention_device::pack_half2;
using attention_device::smem_addr;

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}
// Arrives on `bar` once every cp.async this thread has issued so far has landed, without
// raising the barrier's expected count.
__device__ __forceinline__ void cp_async_mbar_arrive(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar))
               : "memory");
}
// Orders generic-proxy shared-memory accesses before this thread's later async-proxy ones.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count)
               : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// Waits until the phase of parity `parity` has completed. kBounded: a wait that never ends (a
// pipeline bug, not a slow GPU: a tile's wait is microseconds) traps after 2^26 polls, each of
// which may suspend the thread a while, so that the launch fails with an error instead of
// hanging the process. Only where registers allow: the producer's waits and the consumers' first
// (a barrier that never completes stops there; a ring that deadlocks later stops the producer).
template <bool kBounded>
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0, polls = 0;
  do {
    if constexpr (kBounded)
      if (++polls == (1u << 26)) __trap();
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
}

// Raises (kInc) or lowers this warp group's registers per thread to kRegs; every thread of the
// warp group executes it.
template <bool kInc, int kRegs>
__device__ __forceinline__ void set_max_registers() {
  if constexpr (kInc)
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
  else
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// A wgmma shared-memory descriptor for the no-swizzle layout (byte offsets in 16-byte units).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr >> 4) & 0x3FFF) | uint64_t((lbo >> 4) & 0x3FFF) << 16 |
         uint64_t((sbo >> 4) & 0x3FFF) << 32;
}

// wgmma m64nNk16, f32 += f16 · f16, A from registers, B from shared memory.
template <int N, gmma::Major kMajorB>
struct RsMma;
template <gmma::Major B>
struct RsMma<40, B> {
  using Op = gmma::MMA_64x40x16_F32F16F16_RS<gmma::Major::K, B>;
};
template <gmma::Major B>
struct RsMma<64, B> {
  using Op = gmma::MMA_64x64x16_F32F16F16_RS<gmma::Major::K, B>;
};
template <gmma::Major B>
struct RsMma<80, B> {
  using Op = gmma::MMA_64x80x16_F32F16F16_RS<gmma::Major::K, B>;
};
template <gmma::Major B>
struct RsMma<128, B> {
  using Op = gmma::MMA_64x128x16_F32F16F16_RS<gmma::Major::K, B>;
};

template <int N, gmma::Major kMajorB, size_t... I>
__device__ __forceinline__ void mma_rs_impl(const uint32_t (&a)[4], uint64_t desc,
                                            float (&d)[N / 2], bool accumulate,
                                            std::index_sequence<I...>) {
  RsMma<N, kMajorB>::Op::fma(a[0], a[1], a[2], a[3], desc, d[I]...,
                             accumulate ? gmma::ScaleOut::One : gmma::ScaleOut::Zero);
}
template <int N, gmma::Major kMajorB>
__device__ __forceinline__ void mma_rs(const uint32_t (&a)[4], uint64_t desc, float (&d)[N / 2],
                                       bool accumulate) {
  mma_rs_impl<N, kMajorB>(a, desc, d, accumulate, std::make_index_sequence<N / 2>{});
}

template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    asm volatile("" : "+f"(d[i])::"memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// --- The kernel ------------------------------------------------------------------------------

// kDqk: the q/k head dim padded to a multiple of 16 (wgmma's k); kDv: the v head dim (a
// multiple of 8, wgmma's N for P·v).
template <int kDqk, int kDv, int kBc, int kGroups, int kStages>
struct Sm90Attention {
  static_assert(kDqk % 16 == 0 && kDv % 8 == 0 && (kBc == 64 || kBc == 128) && kStages >= 2);
  static constexpr int kQkChunks = kDqk / 8;
  static constexpr int kVChunks = kDv / 8;
  static constexpr int kKTileBytes = kQkChunks * kBc * 16;
  static constexpr int kVTileBytes = kVChunks * kBc * 16;
  static constexpr int kStageBytes = kKTileBytes + kVTileBytes;
  static constexpr int kConsumerThreads = kGroups * 128;
  static constexpr int kThreads = kConsumerThreads + 128;  // + the producer warp group
  // Registers per thread after the producer hands its share to the consumers (setmaxnreg): the
  // launch gives each of the kGroups + 1 warp groups 65536 / kThreads (rounded down to 8); the
  // producer keeps 40 (its address arithmetic spills at 24) and the consumers split the rest, which
  // lets 64-row groups hold the scores, two sets of P and the output without spilling.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = kGroups == 2 ? 232 : 152;
  // setmaxnreg.inc waits until the block's pool has the registers: more than it holds would hang.
  static constexpr int kLaunchRegs = 65536 / kThreads / 8 * 8;
  static_assert(kProducerRegs + kGroups * kConsumerRegs <= (kGroups + 1) * kLaunchRegs);
  static constexpr int kBarrierOffset = kStages * kStageBytes;
  static constexpr int kSmemBytes = kBarrierOffset + 2 * kStages * 8;
  static constexpr int kRowsPerBlock = kGroups * kRowsPerGroup;
};

// kHalfExp: the exponentials as ex2.approx.f16x2, two per SFU instruction, on arguments rounded
// to f16 (P is rounded to f16 anyway; the argument's rounding costs up to 2^-11 of |x| in
// relative error, x <= 0 the scaled score minus the row maximum).
template <int kDqk, int kDv, int kBc, int kGroups, int kStages, bool kHalfExp>
__global__ void __launch_bounds__(Sm90Attention<kDqk, kDv, kBc, kGroups, kStages>::kThreads, 1)
    flash_attention_sm90_kernel(const FlashAttentionParams p, float scale_log2) {
  using C = Sm90Attention<kDqk, kDv, kBc, kGroups, kStages>;
  extern __shared__ __align__(128) unsigned char smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + C::kBarrierOffset);
  uint64_t* empty = full + kStages;

  const int bh = blockIdx.y;
  const int b = bh / p.heads, h = bh % p.heads;
  const int64_t row_base = int64_t{blockIdx.x} * C::kRowsPerBlock;
  const int tiles = static_cast<int>((p.tk + kBc - 1) / kBc);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 128);                        // every producer thread arrives
      mbar_init(&empty[s], C::kConsumerThreads / 32);  // every consumer warp arrives
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  const uint32_t smem_base = smem_addr(smem);

  if (warp >= kGroups * 4) {
    // Producer warp group: key tile t into stage t % kStages.
    set_max_registers<false, C::kProducerRegs>();
    const int pt = threadIdx.x - C::kConsumerThreads;
    const uint16_t* k_head = p.k + int64_t{b} * p.tk * p.ld_k + int64_t{h} * p.d;
    const uint16_t* v_head = p.v + int64_t{b} * p.tk * p.ld_v + int64_t{h} * p.dv;
    for (int t = 0; t < tiles; ++t) {
      const int s = t % kStages;
      if (t >= kStages) mbar_wait<true>(&empty[s], ((t / kStages) - 1) & 1);
      const uint32_t k_dst = smem_base + s * C::kStageBytes;
      const uint32_t v_dst = k_dst + C::kKTileBytes;
      const int64_t key0 = int64_t{t} * kBc;
      // Chunk-fastest over a row, so that a warp reads whole rows (coalesced in L2).
#pragma unroll 2
      for (int i = pt; i < kBc * C::kQkChunks; i += 128) {
        const int r = i / C::kQkChunks, c = i % C::kQkChunks;
        const int64_t key = key0 + r;
        const bool ok = key < p.tk && c * 8 < p.d;
        const uint16_t* src = ok ? k_head + key * p.ld_k + c * 8 : p.k;
        cp_async16(k_dst + (c * kBc + r) * 16, src, ok);
      }
#pragma unroll 2
      for (int i = pt; i < kBc * C::kVChunks; i += 128) {
        const int r = i / C::kVChunks, c = i % C::kVChunks;
        const int64_t key = key0 + r;
        const bool ok = key < p.tk;
        const uint16_t* src = ok ? v_head + key * p.ld_v + c * 8 : p.v;
        cp_async16(v_dst + (c * kBc + r) * 16, src, ok);
      }
      // This thread's share of the tile arrives on `full` once its copies have landed (.noinc:
      // the barrier expects the 128 threads' arrivals and no more), so the producer never waits
      // for a tile's bytes itself and runs up to kStages tiles ahead of the slowest consumer.
      cp_async_mbar_arrive(&full[s]);
    }
    // A thread must not retire with copies in flight.
    cp_async_wait_all();
    return;
  }

  // Consumer warp group `group`: query rows row_base + 64·group + [0, 64).
  set_max_registers<true, C::kConsumerRegs>();
  const int group = warp / 4, warp_in_group = warp % 4;
  const int g = lane / 4, q4 = lane % 4;
  const int64_t row0 = row_base + group * kRowsPerGroup + warp_in_group * 16 + g;
  const int64_t row1 = row0 + 8;

  // q as wgmma's A operand, one set of 4 registers per k-step of 16 head columns.
  constexpr int kSteps = kDqk / 16;
  uint32_t qa[kSteps][4];
  {
    const uint16_t* q_head = p.q + int64_t{b} * p.tq * p.ld_q + int64_t{h} * p.d;
    auto load = [&](int64_t row, int col) -> uint32_t {
      if (row >= p.tq || col >= p.d) return 0u;
      return *reinterpret_cast<const uint32_t*>(q_head + row * p.ld_q + col);
    };
    // A negative scale is applied as -q with |scale| (f16 negation is exact), so that the row
    // maxima below are those of the scaled scores.
    const uint32_t sign = p.scale < 0.0f ? 0x80008000u : 0u;
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      const int c0 = kk * 16 + 2 * q4;
      qa[kk][0] = load(row0, c0) ^ sign;
      qa[kk][1] = load(row1, c0) ^ sign;
      qa[kk][2] = load(row0, c0 + 8) ^ sign;
      qa[kk][3] = load(row1, c0 + 8) ^ sign;
    }
  }

  constexpr int kSRegs = kBc / 2;  // the m64n(kBc) f32 accumulator: kBc / 2 per thread
  constexpr int kORegs = kDv / 2;
  float o[kORegs];
#pragma unroll
  for (int i = 0; i < kORegs; ++i)
    o[i] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY;  // running maxima of q·k (rows row0, row1; q as loaded)
  float l0 = 0.0f, l1 = 0.0f;            // this thread's part of the running sums

  // S = q·kᵀ of tile t (async; committed as one group).
  float s[kSRegs];
  auto issue_scores = [&](int t, auto bounded) {
    const int st = t % kStages;
    mbar_wait<decltype(bounded)::value>(&full[st], (t / kStages) & 1);
    fence_proxy_async();  // the tile's bytes, landed by cp.async, are read by wgmma
    const uint32_t k_tile = smem_base + st * C::kStageBytes;
    fence_operands(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk)
      mma_rs<kBc, gmma::Major::K>(qa[kk], smem_desc(k_tile + kk * 2 * kBc * 16, kBc * 16, 128), s,
                                  kk > 0);
    wgmma_commit();
  };

  // The online softmax of tile t's scores (s, complete): new maxima, P rounded to f16 in
  // wgmma's A layout (columns 8j.. of the accumulator are k-step j/2's A registers 0,1 for even
  // j, 2,3 for odd), the running sums; returns the factors the output must be rescaled by. s is
  // only read: no instruction but wgmma defines an accumulator register while one is in flight
  // (ptxas serialises the wgmmas otherwise).
  auto softmax = [&](int t, uint32_t(&pa)[kBc / 16][4], float& alpha0, float& alpha1) {
    const int valid = static_cast<int>(p.tk - int64_t{t} * kBc);  // keys in this tile
    auto score = [&](int i) {
      const int col = (i / 4) * 8 + 2 * q4 + (i % 2);
      return valid >= kBc || col < valid ? s[i] : -INFINITY;
    };
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < kBc / 8; ++j) {
      mx0 = fmaxf(mx0, fmaxf(score(4 * j), score(4 * j + 1)));
      mx1 = fmaxf(mx1, fmaxf(score(4 * j + 2), score(4 * j + 3)));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    alpha0 = ex2((m0 - mx0) * scale_log2), alpha1 = ex2((m1 - mx1) * scale_log2);
    m0 = mx0, m1 = mx1;
    const float mc0 = mx0 * scale_log2, mc1 = mx1 * scale_log2;
    float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int j = 0; j < kBc / 8; ++j) {
      const float x0 = fmaf(score(4 * j), scale_log2, -mc0);
      const float x1 = fmaf(score(4 * j + 1), scale_log2, -mc0);
      const float x2 = fmaf(score(4 * j + 2), scale_log2, -mc1);
      const float x3 = fmaf(score(4 * j + 3), scale_log2, -mc1);
      if constexpr (kHalfExp) {
        const __half2 e01 = h2exp2(__floats2half2_rn(x0, x1));
        const __half2 e23 = h2exp2(__floats2half2_rn(x2, x3));
        const float2 f01 = __half22float2(e01), f23 = __half22float2(e23);
        sum0 += f01.x + f01.y;
        sum1 += f23.x + f23.y;
        pa[j / 2][(j % 2) * 2 + 0] = *reinterpret_cast<const uint32_t*>(&e01);
        pa[j / 2][(j % 2) * 2 + 1] = *reinterpret_cast<const uint32_t*>(&e23);
      } else {
        const float p0 = ex2(x0), p1 = ex2(x1), p2 = ex2(x2), p3 = ex2(x3);
        sum0 += p0 + p1;
        sum1 += p2 + p3;
        pa[j / 2][(j % 2) * 2 + 0] = pack_half2(p0, p1);
        pa[j / 2][(j % 2) * 2 + 1] = pack_half2(p2, p3);
      }
    }
    l0 = l0 * alpha0 + sum0;
    l1 = l1 * alpha1 + sum1;
  };

  // O += P·v of tile t (async; committed as one group).
  auto issue_pv = [&](int t, const uint32_t(&pa)[kBc / 16][4]) {
    const uint32_t v_tile = smem_base + (t % kStages) * C::kStageBytes + C::kKTileBytes;
    fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk)
      mma_rs<kDv, gmma::Major::MN>(pa[kk], smem_desc(v_tile + kk * 16 * 16, 128, kBc * 16), o,
                                   true);
    wgmma_commit();
  };

  // Tile t (not the last) with P_t in `pa`: issue S_{t+1} and O += P_t·v_t back to back,
  // then the softmax of S_{t+1} (into pa_next) under P_t·v_t, then the output's rescale once
  // that is done (FlashAttention-3's intra-warp-group overlap). Branch-free between the issues
  // and the waits, so that ptxas sees which group each wait retires.
  auto step = [&](int t, const uint32_t(&pa)[kBc / 16][4], uint32_t(&pa_next)[kBc / 16][4]) {
    issue_scores(t + 1, std::false_type{});
    issue_pv(t, pa);
    wgmma_wait<1>();
    fence_operands(s);
    float alpha0, alpha1;
    softmax(t + 1, pa_next, alpha0, alpha1);
    wgmma_wait<0>();
    fence_operands(o);
    if (lane == 0) mbar_arrive(&empty[t % kStages]);
#pragma unroll
    for (int j = 0; j < kDv / 8; ++j) {
      o[4 * j] *= alpha0, o[4 * j + 1] *= alpha0;
      o[4 * j + 2] *= alpha1, o[4 * j + 3] *= alpha1;
    }
  };
  auto last_step = [&](int t, const uint32_t(&pa)[kBc / 16][4]) {
    issue_pv(t, pa);
    wgmma_wait<0>();
    fence_operands(o);
  };

  uint32_t pa0[kBc / 16][4], pa1[kBc / 16][4];
  {
    issue_scores(0, std::true_type{});
    wgmma_wait<0>();
    fence_operands(s);
    float alpha0, alpha1;  // of no use: o is zero
    softmax(0, pa0, alpha0, alpha1);
  }
  int t = 0;
  for (; t + 2 < tiles; t += 2) {
    step(t, pa0, pa1);
    step(t + 1, pa1, pa0);
  }
  if (t + 1 < tiles) {  // two tiles left
    step(t, pa0, pa1);
    last_step(t + 1, pa1);
  } else {
    last_step(t, pa0);
  }

  // Row sums across the quad, then out = O / l.
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, off);
    l1 += __shfl_xor_sync(0xffffffffu, l1, off);
  }
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  uint16_t* out_head = p.out + int64_t{b} * p.tq * p.ld_out + int64_t{h} * p.dv;
#pragma unroll
  for (int j = 0; j < kDv / 8; ++j) {
    const int col = j * 8 + 2 * q4;
    if (row0 < p.tq)
      *reinterpret_cast<uint32_t*>(out_head + row0 * p.ld_out + col) =
          pack_half2(o[4 * j] * inv0, o[4 * j + 1] * inv0);
    if (row1 < p.tq)
      *reinterpret_cast<uint32_t*>(out_head + row1 * p.ld_out + col) =
          pack_half2(o[4 * j + 2] * inv1, o[4 * j + 3] * inv1);
  }
}

template <int kDqk, int kDv, int kBc, int kGroups, int kStages, bool kHalfExp>
cudaError_t launch(const FlashAttentionParams& p, cudaStream_t stream) {
  using C = Sm90Attention<kDqk, kDv, kBc, kGroups, kStages>;
  auto* kernel = flash_attention_sm90_kernel<kDqk, kDv, kBc, kGroups, kStages, kHalfExp>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>((p.tq + C::kRowsPerBlock - 1) / C::kRowsPerBlock),
                  static_cast<unsigned>(p.batch * p.heads));
  constexpr float kLog2e = 1.4426950408889634f;
  kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(p, std::fabs(p.scale) * kLog2e);
  return cudaGetLastError();
}

// launch with the exponentials p asks for (FlashAttentionParams::sm90_half_exp).
template <int kDqk, int kDv, int kBc, int kGroups>
cudaError_t launch_exp(const FlashAttentionParams& p, cudaStream_t stream) {
  // Stages: 4 of 64 keys, 3 of 128 (the largest, d = 80 at 128 keys, is 120 KiB).
  constexpr int kStages = kBc == 64 ? 4 : 3;
  return p.sm90_half_exp ? launch<kDqk, kDv, kBc, kGroups, kStages, true>(p, stream)
                         : launch<kDqk, kDv, kBc, kGroups, kStages, false>(p, stream);
}

// launch with the key tile and warp groups p asks for: 128-key tiles with two groups only (three
// would not hold the scores' 64 registers and two sets of P's 32 under the register cap).
template <int kDqk, int kDv>
cudaError_t launch_tile(const FlashAttentionParams& p, cudaStream_t stream) {
  if (p.sm90_key_tile == 128) return launch_exp<kDqk, kDv, 128, 2>(p, stream);
  if constexpr (kDv == 80) {
    return launch_exp<kDqk, kDv, 64, 2>(p, stream);
  } else {
    if (p.sm90_warp_groups == 2) return launch_exp<kDqk, kDv, 64, 2>(p, stream);
    return launch_exp<kDqk, kDv, 64, 3>(p, stream);
  }
}

bool aligned16(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

}  // namespace

bool flash_attention_sm90_available(int cc_major, int cc_minor) {
  return cc_major == 9 && cc_minor == 0;
}

bool flash_attention_sm90_takes_shape(int64_t batch, int heads, int64_t tq, int64_t tk, int d,
                                      int dv, bool causal) {
  const bool dims = (d == 40 && dv == 40) || (d == 64 && dv == 64) || (d == 80 && dv == 80);
  constexpr int64_t kMaxRows = (int64_t{1} << 31) - 1;
  return dims && !causal && batch >= 1 && heads >= 1 && tq >= 1 && tk >= 1 &&
         batch * heads <= 65535 && tq <= kMaxRows && tk <= kMaxRows;
}

bool flash_attention_sm90_takes(const FlashAttentionParams& p) {
  // The benchmark knobs name a form the launch runs, not a hint: an unknown value is refused
  // rather than run as some other form under its name.
  const bool knobs =
      (p.sm90_warp_groups == 0 || p.sm90_warp_groups == 2 || p.sm90_warp_groups == 3) &&
      (p.sm90_key_tile == 0 || p.sm90_key_tile == 64 || p.sm90_key_tile == 128);
  return knobs &&
         flash_attention_sm90_takes_shape(p.batch, p.heads, p.tq, p.tk, p.d, p.dv, p.causal) &&
         p.ld_q % 8 == 0 && p.ld_k % 8 == 0 && p.ld_v % 8 == 0 && p.ld_out % 2 == 0 &&
         aligned16(p.q) && aligned16(p.k) && aligned16(p.v) && aligned16(p.out);
}

cudaError_t launch_flash_attention_sm90(const FlashAttentionParams& p, cudaStream_t stream) {
  if (!flash_attention_sm90_takes(p)) return cudaErrorInvalidValue;
  switch (p.d) {
    case 40:
      return launch_tile<48, 40>(p, stream);
    case 64:
      return launch_tile<64, 64>(p, stream);
    case 80:  // 64-key tiles with two warp groups: three would not hold 40 output registers
      return launch_tile<80, 80>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace hyrt::backend::cuda

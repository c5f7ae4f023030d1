// Hopper's flash attention (attention_kernels.h, launch_flash_attention_sm90): the products on
// wgmma, the K/V tiles streamed by a producer warp, the softmax of one key tile under the
// tensor cores' work on the next. Compiled for sm_90a only (CMakeLists.txt, the sm90 target).
//
// Why a kernel of hyrt's own beside cuDNN's SDPA: at SD 1.5's head dim 40 cuDNN pads the head
// to 64 (its engines' smallest), so 37 % of its tensor-core work multiplies zeros, and it
// costs 50-100 ms to plan per shape. Here the q·kᵀ product runs k-steps of 16 over the head
// padded only to 48 and the p·v product has N = dv rounded up to 16 (head dim 40: 48, whose
// first extra column yields the row sums, below), and there is nothing to plan.
//
// Schedule. A block owns kGroups·64 query rows of one (batch, head): kGroups consumer warp
// groups of 64 rows each, and one producer warp group (its registers handed to the consumers by
// setmaxnreg). The producer streams key tiles of kBc (64 or 128) keys (K and V, kStages deep)
// into shared memory with cp.async, each thread's copies arriving on the stage's `full`
// mbarrier as they land (cp.async.mbarrier.arrive), so that the producer never waits on its own
// loads; consumers fence the async proxy (wgmma reads shared memory through it) and release a
// stage through its `empty` mbarrier. Each consumer warp group keeps its 64 rows of q in
// registers as wgmma's A operand (loaded once), and per tile t (FlashAttention-3's order):
// issue S_{t+1} = q·k_{t+1}ᵀ and O += P_t·v_t, run S_{t+1}'s online softmax in f32 under P_t·v_t
// (exp2 on the SFU, the exponentials in place in the score registers), then wait for P_t·v_t,
// rescale O where a maximum moved, and round P_{t+1} to f16 into wgmma's A registers (the
// m64nN f32 accumulator layout of two adjacent 8-column groups is the k16 A-operand layout).
// At head dim 40 the groups take turns issuing (named barriers), so that one's products run
// under another's softmax (FlashAttentionParams::sm90_turns says where it was measured to help).
// kDeepStep (FlashAttentionParams::sm90_deep, folded head 40 at 64 keys): one tile deeper —
// S_{t+1} into a second score buffer, issued before S_t's softmax and run under it, so that no
// warp waits for its own q·kᵀ; drained every 2 or 4 tiles (kDeepStep), because ptxas serializes
// every wgmma of a loop that carries groups in flight across its back edge into a partial wait.
//
// Shared layout: wgmma's 32-byte-swizzled canonical form (attention_sm90_layout.h, checked
// against CuTe's on the host). The no-swizzle ("interleave") form ran first: Nsight Compute
// found 62 % of the kernel's shared-memory wavefronts excessive, the tensor pipe 25 % busy and
// half the issue slots idle (bench/results/attention_sm90_h100.json): wgmma reads a k-step's 32
// bytes of 8 rows together, and without the swizzle the two 16-byte halves of every row share
// banks. With it, 44 % (measured 2026-12-07). Head columns past d and keys
// past tk are zero-filled (cp.async's src-size 0), so they add nothing to q·k and keep
// 0·garbage out of P·v; padded keys' scores are masked to -inf.
//
// Row sums on the tensor cores: V's columns are padded to a multiple of 16 (SW32's atom); where
// that adds columns (head dim 40 -> 48), column dv holds 1.0 in every row, written once per
// stage before the pipeline starts, so P·v's column dv is the row's sum of P — the f16 P the
// output is made of, summed in f32 — and the softmax drops its 32 additions per tile. Elsewhere
// (64, 80) the sums stay additions in registers.
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include <cute/arch/mma_sm90_gmma.hpp>
#include <cute/arch/mma_sm90_gmma_ext.hpp>

#include "backend/cuda/attention_device.cuh"
#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/sm90/attention_sm90_layout.h"

namespace hyrt::backend::cuda {
namespace {

namespace gmma = cute::SM90::GMMA;

constexpr int kRowsPerGroup = 64;  // query rows per consumer warp group (wgmma's M)
constexpr float kLog2e = 1.4426950408889634f;

// --- PTX wrappers ----------------------------------------------------------------------------

using attention_device::ex2;
using attention_device::exp2_poly;
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

// Named barrier `id` (1..15; 0 is __syncthreads') over `threads` threads: wait for all, or
// count this warp's arrival and go on.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

using sm90_layout::sw32_desc;
using sm90_layout::sw32_offset;

// wgmma m64nNk16, f32 += f16 · f16, A from registers, B from shared memory.
template <int N, gmma::Major kMajorB>
struct RsMma;
template <gmma::Major B>
struct RsMma<48, B> {
  using Op = gmma::MMA_64x48x16_F32F16F16_RS<gmma::Major::K, B>;
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

// Orders the computation of these registers before whatever volatile asm follows (wgmma's
// issues and waits): the compiler may otherwise sink arithmetic below a wait it does not feed.
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    asm volatile("" : "+f"(d[i])::"memory");
}
template <int N, int M>
__device__ __forceinline__ void fence_operands(uint32_t (&d)[N][M]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
#pragma unroll
    for (int j = 0; j < M; ++j)
      asm volatile("" : "+r"(d[i][j])::"memory");
}
__device__ __forceinline__ void fence_operand(float& d) {
  asm volatile("" : "+f"(d)::"memory");
}

// Halves v[0, 2W) into v[0, W) by pairwise maxima, then on to W = 1: a tree log2 deep (written
// as recursion: nvcc left a loop over the levels rolled, and v in local memory).
template <int W, int N>
__device__ __forceinline__ void max_tree(float (&v)[N]) {
#pragma unroll
  for (int i = 0; i < W; ++i)
    v[i] = fmaxf(v[i], v[i + W]);
  if constexpr (W > 1) max_tree<W / 2>(v);
}

// The maximum of this thread's scores of row kRow (0: row0, 1: row1) in an m64nN f32
// accumulator (registers 4j + 2·kRow and 4j + 2·kRow + 1).
template <int kRow, int N>
__device__ __forceinline__ float row_max(const float (&s)[N]) {
  float v[N / 2];
#pragma unroll
  for (int j = 0; j < N / 4; ++j)
    v[2 * j] = s[4 * j + 2 * kRow], v[2 * j + 1] = s[4 * j + 2 * kRow + 1];
  max_tree<N / 4>(v);
  return v[0];
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
// multiple of 8).
template <int kDqk, int kDv, int kBc, int kGroups, int kStages>
struct Sm90Attention {
  static_assert(kDqk % 16 == 0 && kDv % 8 == 0 && (kBc == 64 || kBc == 128) && kStages >= 2);
  static constexpr int kQkChunks = kDqk / 8;
  static constexpr int kVChunks = kDv / 8;  // the chunks of v the producer copies
  // V's columns in shared memory and P·v's N: kDv padded to SW32's 16; the first padding column
  // is the ones column (row sums), where there is one.
  static constexpr int kPvN = (kDv + 15) / 16 * 16;
  static constexpr bool kOnesColumn = kPvN > kDv;
  // Where q·kᵀ's k is padded past the head (head dim 40: 48), the row's maximum can ride in the
  // product (kFold, below): column kDv of q holds -m, column kDv of K holds 1.0.
  static constexpr bool kCanFold = (kDqk > kDv) && (kDv % 8 == 0);
  static constexpr int kKTileBytes = kQkChunks * kBc * 16;
  static constexpr int kVTileBytes = kPvN / 8 * kBc * 16;
  static constexpr int kStageBytes = kKTileBytes + kVTileBytes;
  static constexpr int kConsumerThreads = kGroups * 128;
  static constexpr int kThreads = kConsumerThreads + 128;  // + the producer warp group
  // Registers per thread after the producer hands its share to the consumers (setmaxnreg): the
  // launch gives each of the kGroups + 1 warp groups 65536 / kThreads (rounded down to 8); the
  // producer keeps 40 (its address arithmetic spills at 24) and the consumers split the rest, which
  // lets 64-row groups hold the scores, P and the output without spilling.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = kGroups == 2 ? 232 : 152;
  // setmaxnreg.inc waits until the block's pool has the registers: more than it holds would hang.
  static constexpr int kLaunchRegs = 65536 / kThreads / 8 * 8;
  static_assert(kProducerRegs + kGroups * kConsumerRegs <= (kGroups + 1) * kLaunchRegs);
  static constexpr int kBarrierOffset = kStages * kStageBytes;
  // + 256: the tiles start at the first 256-byte boundary of the dynamic shared memory.
  static constexpr int kSmemBytes = kBarrierOffset + 2 * kStages * 8 + 256;
  static constexpr int kRowsPerBlock = kGroups * kRowsPerGroup;
};

// kFold (C::kCanFold only): the softmax's scale and running maximum folded into the product,
// so that q·kᵀ yields the exponent itself. q is loaded scaled by scale·log2(e) (rounded to f16:
// relative 2^-12 more on each q value, which is f16 already), and the first padding column of the
// head (dv, = d) holds -m in q's registers against 1.0 in every K row (written once per stage, like
// V's ones column): S' = scale·log2(e)·q·k - m straight from the tensor cores, f32 accumulated,
// and each score's exponent costs nothing before ex2 (the unfolded softmax spends an FFMA a score,
// 32 of ~220 instructions a tile and warp). m only moves in a rescale, which is rare (slack), so
// the common path is: each thread's maximum of its own scores (no shuffles), a compare with the
// slack, a vote. A rescale finds the rows' maxima (shuffles), moves m (rounded to f16: it is an
// offset, and the f16 value is the one subtracted everywhere), subtracts the move from the
// scores and writes -m into q's registers — S has retired, and P·v in flight reads P and O only.
// m must stay within f16's range (|scale·q·k| < 65504 in log2 units; it is clamped there, and
// beyond it the row's output is as wrong as an f16 product's).
// kPolyEvery: 0, or the exponentials of every kPolyEvery-th group of 8 key columns on the FMA
// pipes (exp2_poly) instead of the SFU. ordered: the consumer warp groups issue their wgmmas in
// turn (named barriers 1..kGroups), so that one's products run under the others' softmax instead
// of all of them multiplying, then all of them exponentiating, in lockstep.
template <int kDqk, int kDv, int kBc, int kGroups, int kStages, int kPolyEvery, bool kFold,
          int kDeepStep>
__global__ void __launch_bounds__(Sm90Attention<kDqk, kDv, kBc, kGroups, kStages>::kThreads, 1)
    flash_attention_sm90_kernel(const FlashAttentionParams p, float scale_log2, float slack,
                                bool ordered, bool proxy_fence) {
  using C = Sm90Attention<kDqk, kDv, kBc, kGroups, kStages>;
  static_assert(!kFold || (C::kCanFold && C::kOnesColumn));
  static_assert(kDeepStep == 0 || ((kDeepStep == 2 || kDeepStep == 4) && kFold && kBc == 64));
  constexpr bool kDeep = kDeepStep > 0;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((256 - smem_addr(smem_raw) % 256) % 256);
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
  if constexpr (C::kOnesColumn) {
    // Chunk kVChunks of every V row in every stage: 1.0, then zeros; with kFold, K's chunk
    // kDv / 8 too. The producer never writes them; wgmma reads them through the async proxy,
    // hence the fence before the block's barrier.
    for (int i = threadIdx.x; i < kStages * kBc; i += C::kThreads) {
      const int st = i / kBc, r = i % kBc;
      unsigned char* stage = smem + st * C::kStageBytes;
      *reinterpret_cast<uint4*>(stage + C::kKTileBytes + sw32_offset(r, C::kVChunks, kBc)) =
          make_uint4(0x3C00u, 0, 0, 0);
      if constexpr (kFold)
        *reinterpret_cast<uint4*>(stage + sw32_offset(r, kDv / 8, kBc)) =
            make_uint4(0x3C00u, 0, 0, 0);
    }
    fence_proxy_async();
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
      // K's chunks: with kFold the last is the ones column, written above.
      constexpr int kKChunks = kFold ? kDv / 8 : C::kQkChunks;
#pragma unroll 2
      for (int i = pt; i < kBc * kKChunks; i += 128) {
        const int r = i / kKChunks, c = i % kKChunks;
        const int64_t key = key0 + r;
        const bool ok = key < p.tk && c * 8 < p.d;
        const uint16_t* src = ok ? k_head + key * p.ld_k + c * 8 : p.k;
        cp_async16(k_dst + sw32_offset(r, c, kBc), src, ok);
      }
#pragma unroll 2
      for (int i = pt; i < kBc * C::kVChunks; i += 128) {
        const int r = i / C::kVChunks, c = i % C::kVChunks;
        const int64_t key = key0 + r;
        const bool ok = key < p.tk;
        const uint16_t* src = ok ? v_head + key * p.ld_v + c * 8 : p.v;
        cp_async16(v_dst + sw32_offset(r, c, kBc), src, ok);
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
    // kFold: q·scale·log2(e) instead (the launch folds only where that factor is at most 1, so
    // that no f16 q overflows); its column dv, -m, starts at 0 and is set by the first tile.
    auto scaled = [&](uint32_t v) -> uint32_t {
      if constexpr (!kFold) {
        return v ^ sign;
      } else {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&v));
        const float c = p.scale < 0.0f ? -scale_log2 : scale_log2;
        return pack_half2(f.x * c, f.y * c);
      }
    };
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) {
      const int c0 = kk * 16 + 2 * q4;
      qa[kk][0] = scaled(load(row0, c0));
      qa[kk][1] = scaled(load(row1, c0));
      qa[kk][2] = scaled(load(row0, c0 + 8));
      qa[kk][3] = scaled(load(row1, c0 + 8));
    }
  }

  constexpr int kSRegs = kBc / 2;      // the m64n(kBc) f32 accumulator: kBc / 2 per thread
  constexpr int kORegs = C::kPvN / 2;  // the m64n(kPvN) accumulator, ones column included
  float o[kORegs];
#pragma unroll
  for (int i = 0; i < kORegs; ++i)
    o[i] = 0.0f;
  // Deep: the zeros written here, not sunk between two wgmma issues (ptxas would serialize).
  if constexpr (kDeep) fence_operands(o);
  // Running maxima of q·k (rows row0, row1; q as loaded); with kFold, of the folded scores in
  // log2 units (0 until the first tile sets them, as q's column dv does).
  float m0 = kFold ? 0.0f : -INFINITY, m1 = kFold ? 0.0f : -INFINITY;
  float l0 = 0.0f, l1 = 0.0f;  // this thread's part of the running sums (no ones column)

  // The warp groups' turns at the tensor cores (when ordered): group g issues after group g-1,
  // group 0 after the last one's previous issue (the last group opens the first round). Every
  // group has the same issues (tiles + 1), so each barrier's arrivals and waits pair up; the last
  // group's last arrival, which no one would wait for, is left out.
  constexpr int kPair = 256;  // threads per turn barrier: the waiting group and the arriving one
  auto turn_begin = [&] {
    if (ordered) named_barrier_sync(1 + group, kPair);
  };
  auto turn_end = [&](bool last) {
    if (ordered && !(last && group == kGroups - 1))
      named_barrier_arrive(1 + (group + 1) % kGroups, kPair);
  };
  if (ordered && group == kGroups - 1) named_barrier_arrive(1, kPair);

  // Waits for tile t's K and V to land.
  auto wait_tile = [&](int t, auto bounded) {
    mbar_wait<decltype(bounded)::value>(&full[t % kStages], (t / kStages) & 1);
    // The tile's bytes, written by cp.async (the generic proxy), are read by wgmma (the async
    // proxy): the memory model asks for this fence. CUTLASS's cp.async-fed wgmma mainloop
    // (sm90_mma_multistage_gmma_ss_warpspecialized) goes without; proxy_fence false does too,
    // to measure what it costs (a MEMBAR.ALL.CTA per tile and warp).
    if (proxy_fence) fence_proxy_async();
  };
  // The descriptors of stage 0's K and V tiles; a stage's and a k-step's are these plus their
  // byte offset >> 4 (sw32_desc), one addition instead of building each from its address.
  constexpr sm90_layout::DescOffsets kK = sm90_layout::k_desc_offsets(kBc);
  constexpr sm90_layout::DescOffsets kV = sm90_layout::v_desc_offsets(kBc);
  const uint64_t k_desc0 = sw32_desc(smem_base, kK.lbo, kK.sbo);
  const uint64_t v_desc0 = sw32_desc(smem_base + C::kKTileBytes, kV.lbo, kV.sbo);

  // S = q·kᵀ of tile t (async; committed as one group). K-major: a k-step is a column block.
  float s[kSRegs];
  auto issue_scores = [&](int t, auto& sb) {
    const uint64_t desc = k_desc0 + uint64_t((t % kStages) * C::kStageBytes >> 4);
    fence_operands(sb);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk)
      mma_rs<kBc, gmma::Major::K>(qa[kk], desc + uint64_t(kk * sm90_layout::k_step_bytes(kBc) >> 4),
                                  sb, kk > 0);
    wgmma_commit();
  };

  // The online softmax of tile t's scores (s, complete): new maxima, s overwritten by the
  // exponentials, the running sums; returns the factors the output must be rescaled by. It runs
  // while the previous tile's P·v is in flight, which reads pa and o only: s's own product has
  // retired. masked: the last tile, whose keys past tk score -inf (every other tile is whole,
  // and skips the compare and select per score).
  bool rescale_due = false;  // whether the last softmax moved a maximum in this warp
  // The last tile's keys past tk score -inf.
  auto mask_past_tk = [&](auto& sb, int t) {
    const int valid = static_cast<int>(p.tk - int64_t{t} * kBc);  // keys in this tile
#pragma unroll
    for (int i = 0; i < kSRegs; ++i)
      if ((i / 4) * 8 + 2 * q4 + (i % 2) >= valid) sb[i] = -INFINITY;
  };
  auto softmax = [&](int t, auto masked, float& alpha0, float& alpha1) {
    if constexpr (decltype(masked)::value) mask_past_tk(s, t);
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int j = 0; j < kBc / 8; ++j) {
      mx0 = fmaxf(mx0, fmaxf(s[4 * j], s[4 * j + 1]));
      mx1 = fmaxf(mx1, fmaxf(s[4 * j + 2], s[4 * j + 3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
    }
    // The running maxima move only when a row's grows by more than `slack` (log2 units,
    // FlashAttentionParams::rescale_slack) somewhere in the warp: until then the old ones stay
    // subtracted, P reaches at most 2^slack (f16 and the f32 sums hold that), and the output's
    // rescale — a
    // multiplication per output register — is skipped (rescale_due, read once P·v has retired).
    // Selects, not a branch: P·v is in flight.
    const bool grow = (mx0 - m0) * scale_log2 > slack || (mx1 - m1) * scale_log2 > slack;
    rescale_due = __any_sync(0xffffffffu, grow);
    alpha0 = rescale_due ? ex2((m0 - mx0) * scale_log2) : 1.0f;
    alpha1 = rescale_due ? ex2((m1 - mx1) * scale_log2) : 1.0f;
    m0 = rescale_due ? mx0 : m0, m1 = rescale_due ? mx1 : m1;
    const float mc0 = m0 * scale_log2, mc1 = m1 * scale_log2;
    [[maybe_unused]] float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
    for (int j = 0; j < kBc / 8; ++j) {
      // j is a constant once unrolled: the choice of pipe costs nothing at run time.
      const bool poly = kPolyEvery > 0 && j % (kPolyEvery > 0 ? kPolyEvery : 1) == kPolyEvery - 1;
#pragma unroll
      for (int i = 4 * j; i < 4 * j + 4; ++i) {
        const float x = fmaf(s[i], scale_log2, i % 4 < 2 ? -mc0 : -mc1);
        s[i] = poly ? exp2_poly(x) : ex2(x);
      }
      if constexpr (!C::kOnesColumn) {
        sum0 += s[4 * j] + s[4 * j + 1];
        sum1 += s[4 * j + 2] + s[4 * j + 3];
      }
    }
    if constexpr (!C::kOnesColumn) {
      l0 = l0 * alpha0 + sum0;
      l1 = l1 * alpha1 + sum1;
    }
    // Keep the softmax where it is written, under the P·v in flight: the compiler may
    // otherwise sink it below the wait for that product.
    fence_operands(s);
    fence_operand(l0), fence_operand(l1), fence_operand(alpha0), fence_operand(alpha1);
  };

  // m's moves since q's column was last written (rows row0, row1), and whether there are any:
  // in the deep schedule the next tile's S is in flight under a softmax, made with the old
  // column, so the column is written (and that S shifted) once it has retired (fold_catch_up).
  float q_behind0 = 0.0f, q_behind1 = 0.0f;
  bool q_stale = false;
  // -m into q's column (kFold), after a softmax moved m, where no S in flight reads q (the P·v in
  // flight reads P and O only).
  auto write_q_column = [&] {
    // -m into q's column dv: k-step dv / 16, registers 0/1 (column 16k) or 2/3 (16k + 8) of
    // the quad's first lane, low half; the high half (column dv + 1) stays 0.
    constexpr int kStep = kDv / 16, kReg = (kDv % 16) / 8 * 2;
    if (q4 == 0) {
      qa[kStep][kReg] = __half_as_ushort(__float2half_rn(-m0));
      qa[kStep][kReg + 1] = __half_as_ushort(__float2half_rn(-m1));
    }
    q_behind0 = q_behind1 = 0.0f;
    q_stale = false;
    fence_operands(qa);
  };
  // Scores made with a stale column (complete, not yet softmaxed): shifted by the moves they
  // missed, and the column brought up to date before the next S is issued.
  auto fold_catch_up = [&](auto& sb) {
    if (q_stale) {  // uniform across the warp
#pragma unroll
      for (int i = 0; i < kSRegs; ++i)
        sb[i] -= i % 4 < 2 ? q_behind0 : q_behind1;
      write_q_column();
    }
  };
  // kFold's softmax (see the kernel's comment): s holds S' = scale·log2(e)·q·k - m. first: the
  // first tile, which sets m whatever the slack (m = 0 until then stands for no maximum yet).
  auto softmax_folded = [&](auto& sb, int t, auto masked, auto first, float& alpha0,
                            float& alpha1) {
    if constexpr (decltype(masked)::value) mask_past_tk(sb, t);
    float mx0 = row_max<0>(sb), mx1 = row_max<1>(sb);  // this thread's keys only
    if constexpr (decltype(first)::value)
      rescale_due = true;
    else
      rescale_due = __any_sync(0xffffffffu, mx0 > slack || mx1 > slack);
    alpha0 = 1.0f, alpha1 = 1.0f;
    if (rescale_due) {  // uniform across the warp
#pragma unroll
      for (int off = 1; off <= 2; off <<= 1) {
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
      }
      // The move of each row's m: to its maximum (never down after the first tile), as the
      // f16 value q's column holds.
      auto move = [&](float& m, float mx) {
        const float want = decltype(first)::value ? mx : m + fmaxf(mx, 0.0f);
        const float held = __half2float(__float2half_rn(fminf(fmaxf(want, -65504.0f), 65504.0f)));
        const float delta = held - m;
        m = held;
        return delta;
      };
      const float d0 = move(m0, mx0), d1 = move(m1, mx1);
      alpha0 = ex2(-d0), alpha1 = ex2(-d1);
#pragma unroll
      for (int i = 0; i < kSRegs; ++i)
        sb[i] -= i % 4 < 2 ? d0 : d1;
      q_behind0 += d0, q_behind1 += d1;
      q_stale = true;
      if constexpr (!kDeep) write_q_column();  // nothing in flight reads q
    }
#pragma unroll
    for (int j = 0; j < kBc / 8; ++j) {
      const bool poly = kPolyEvery > 0 && j % (kPolyEvery > 0 ? kPolyEvery : 1) == kPolyEvery - 1;
#pragma unroll
      for (int i = 4 * j; i < 4 * j + 4; ++i)
        sb[i] = poly ? exp2_poly(sb[i]) : ex2(sb[i]);
    }
    fence_operands(sb);
    fence_operand(alpha0), fence_operand(alpha1);
  };
  // The softmax of tile t in this kernel's form, on the scores in sb (unfolded: `s` itself; the
  // deep schedule folds).
  auto softmax_tile = [&](auto& sb, int t, auto masked, auto first, float& alpha0, float& alpha1) {
    if constexpr (kFold)
      softmax_folded(sb, t, masked, first, alpha0, alpha1);
    else
      softmax(t, masked, alpha0, alpha1);
  };

  // P, the exponentials in s, rounded to f16 into wgmma's A layout: columns 8j.. of the
  // accumulator are k-step j/2's A registers 0,1 for even j, 2,3 for odd. Only once the P·v
  // that reads pa has retired.
  uint32_t pa[kBc / 16][4];
  auto pack_p = [&](auto& sb) {
#pragma unroll
    for (int j = 0; j < kBc / 8; ++j) {
      pa[j / 2][(j % 2) * 2 + 0] = pack_half2(sb[4 * j], sb[4 * j + 1]);
      pa[j / 2][(j % 2) * 2 + 1] = pack_half2(sb[4 * j + 2], sb[4 * j + 3]);
    }
  };

  // O += P·v of tile t (async; committed as one group). MN-major: a k-step of 16 keys is two
  // 8-key swizzle atoms, 512 bytes.
  auto issue_pv = [&](int t) {
    const uint64_t desc = v_desc0 + uint64_t((t % kStages) * C::kStageBytes >> 4);
    fence_operands(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk)
      mma_rs<C::kPvN, gmma::Major::MN>(pa[kk], desc + uint64_t(kk * sm90_layout::kVStepBytes >> 4),
                                       o, true);
    wgmma_commit();
  };

  // The output's rescale by the last softmax's factors, once the P·v before has retired (the
  // ones column's sums with it).
  auto rescale = [&](float alpha0, float alpha1) {
#pragma unroll
    for (int j = 0; j < C::kPvN / 8; ++j) {
      o[4 * j] *= alpha0, o[4 * j + 1] *= alpha0;
      o[4 * j + 2] *= alpha1, o[4 * j + 3] *= alpha1;
    }
  };

  // FlashAttention-3's intra-warp-group overlap: S_{t+1} = q·k_{t+1}ᵀ and O += P_t·v_t are
  // issued back to back, S_{t+1}'s softmax runs under P_t·v_t, and only then does the group wait
  // for P_t·v_t to rescale O and pack P_{t+1}. The order matters to ptxas: it hoists a
  // wgmma.wait_group within a basic block (above a softmax that does not depend on it, so that
  // the softmax would run after the product instead of under it), so each wait for P·v sits
  // after the next tile's mbarrier wait, whose retry branch ends the block. Branch-free between
  // the issues and the waits otherwise, so that ptxas sees which group each wait retires.
  float alpha0 = 1.0f, alpha1 = 1.0f;  // the last softmax's factors
  // Tile t + 1 landed, P_t packed: issues S_{t+1} and P_t·v_t and waits for S_{t+1} (whose
  // softmax then runs under P_t·v_t).
  auto issue_pair = [&](int t) {
    turn_begin();
    issue_scores(t + 1, s);
    issue_pv(t);
    turn_end(false);
    wgmma_wait<1>();  // S_{t+1}
    fence_operands(s);
  };
  // Retires P_t·v_t: releases its stage (not the last one's: the producer is done), rescales
  // O by the softmax's factors where due, packs the next P.
  auto retire_pv = [&](int t, bool release) {
    wgmma_wait<0>();
    fence_operands(o);
    if (release && lane == 0) mbar_arrive(&empty[t % kStages]);
    if (rescale_due) rescale(alpha0, alpha1);
    pack_p(s);
  };

  constexpr std::false_type kWhole, kLater;
  constexpr std::true_type kMasked, kFirst;
  if constexpr (kDeep) {
    // One tile deeper, two tiles a loop step: S_{t+1} is issued before S_t's softmax and runs
    // under it, into a second score buffer, so that a warp does not wait for its own q·kᵀ. A loop
    // step starts with S_t complete in `s2` and nothing in flight: its first tile issues S_{t+1},
    // runs S_t's softmax, then P_t·v_t; its second waits for S_{t+1}, issues S_{t+2}, runs
    // S_{t+1}'s softmax under S_{t+2} and P_t·v_t, issues P_{t+1}·v_{t+1}, and the step drains
    // (wait_group 0). ptxas serializes every wgmma of a loop that carries groups in flight across
    // its back edge into a partial wait (C7514/C7515), hence the drain every two tiles.
    float s2[kSRegs];
    wait_tile(0, std::true_type{});
    issue_scores(0, s);
    wgmma_wait<0>();
    fence_operands(s);
    softmax_tile(s, 0, kMasked, kFirst, alpha0, alpha1);  // the factors are of no use: O is zero
    if constexpr (kFold) write_q_column();                // nothing in flight yet
    pack_p(s);
    if (tiles > 1) {
      wait_tile(1, std::false_type{});
      issue_scores(1, s2);
    }
    issue_pv(0);
    wgmma_wait<0>();
    fence_operands(s2);
    fence_operands(o);
    if (lane == 0 && tiles > 1) mbar_arrive(&empty[0]);
    // Tile t's softmax and P·v, S_t complete in cur; first: P_{t-1}·v_{t-1} has retired (the step
    // drained), else it is in flight and S_t is the older of the two groups.
    auto body = [&](int t, auto& cur, auto& nxt, auto masked, auto first, bool has_next) {
      if constexpr (!decltype(first)::value) {
        wgmma_wait<1>();  // S_t
        fence_operands(cur);
      }
      if constexpr (kFold) fold_catch_up(cur);
      if (has_next) {
        wait_tile(t + 1, std::false_type{});
        issue_scores(t + 1, nxt);
      }
      softmax_tile(cur, t, masked, kLater, alpha0, alpha1);
      if constexpr (!decltype(first)::value) {
        if (has_next)
          wgmma_wait<1>();  // P_{t-1}·v_{t-1}; S_{t+1} may still run
        else
          wgmma_wait<0>();
        fence_operands(o);
        if (lane == 0) mbar_arrive(&empty[(t - 1) % kStages]);
      }
      if (rescale_due) rescale(alpha0, alpha1);
      pack_p(cur);
      issue_pv(t);
    };
    // Drains the step: S_{t+1} (if issued) and P_t·v_t retire; tile t's stage is released.
    auto drain = [&](int t, bool release) {
      wgmma_wait<0>();
      fence_operands(o);
      fence_operands(s2);
      if (release && lane == 0) mbar_arrive(&empty[t % kStages]);
    };
    // The last r (1..kDeepStep) tiles from t: the same bodies, the last one masked.
    auto rest = [&](int t, int r) {
      if (r == 1) {
        body(t, s2, s, kMasked, kFirst, false);
        drain(t, false);
        return;
      }
      body(t, s2, s, kWhole, kFirst, true);
      if (kDeepStep == 2 || r == 2) {  // (every path ends drained: ptxas checks them all)
        body(t + 1, s, s2, kMasked, kLater, false);
        drain(t + 1, false);
        return;
      }
      if constexpr (kDeepStep == 4) {
        body(t + 1, s, s2, kWhole, kLater, true);
        if (r == 3) {
          body(t + 2, s2, s, kMasked, kLater, false);
          drain(t + 2, false);
          return;
        }
        body(t + 2, s2, s, kWhole, kLater, true);
        body(t + 3, s, s2, kMasked, kLater, false);
        drain(t + 3, false);
      }
    };
    int t = 1;
    for (; t + kDeepStep < tiles; t += kDeepStep) {
      body(t, s2, s, kWhole, kFirst, true);
      body(t + 1, s, s2, kWhole, kLater, true);
      if constexpr (kDeepStep == 4) {
        body(t + 2, s2, s, kWhole, kLater, true);
        body(t + 3, s, s2, kWhole, kLater, true);
      }
      drain(t + kDeepStep - 1, true);
    }
    if (t < tiles) rest(t, tiles - t);
    fence_operands(o);
  } else {
    wait_tile(0, std::true_type{});
    turn_begin();
    issue_scores(0, s);
    turn_end(false);
    wgmma_wait<0>();
    fence_operands(s);
    softmax_tile(s, 0, kMasked, kFirst, alpha0, alpha1);  // the factors are of no use: O is zero
    pack_p(s);
    // Tile t (1 <= t < tiles - 1) with P_{t-1}·v_{t-1} in flight and S_t's softmax done; masked:
    // t + 1 is the last tile.
    auto iteration = [&](int t, auto masked) {
      wait_tile(t + 1, std::false_type{});
      retire_pv(t - 1, true);
      issue_pair(t);
      softmax_tile(s, t + 1, masked, kLater, alpha0, alpha1);
    };
    if (tiles > 1) {
      wait_tile(1, std::false_type{});
      issue_pair(0);
      if (tiles > 2) {
        softmax_tile(s, 1, kWhole, kLater, alpha0, alpha1);
        for (int t = 1; t + 2 < tiles; ++t)
          iteration(t, kWhole);
        iteration(tiles - 2, kMasked);
      } else {
        softmax_tile(s, 1, kMasked, kLater, alpha0, alpha1);
      }
      retire_pv(tiles - 2, false);
    }
    // The last tile's P·v.
    turn_begin();
    issue_pv(tiles - 1);
    turn_end(true);
    wgmma_wait<0>();
    fence_operands(o);
  }

  // Row sums: the ones column's (column kDv, held by the quad's first lane) or the quad's
  // partial sums added; then out = O / l.
  if constexpr (C::kOnesColumn) {
    l0 = __shfl_sync(0xffffffffu, o[4 * (kDv / 8)], lane & ~3);
    l1 = __shfl_sync(0xffffffffu, o[4 * (kDv / 8) + 2], lane & ~3);
  } else {
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      l0 += __shfl_xor_sync(0xffffffffu, l0, off);
      l1 += __shfl_xor_sync(0xffffffffu, l1, off);
    }
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

template <int kDqk, int kDv, int kBc, int kGroups, int kStages, int kPolyEvery, bool kFold,
          int kDeepStep = 0>
cudaError_t launch(const FlashAttentionParams& p, cudaStream_t stream) {
  using C = Sm90Attention<kDqk, kDv, kBc, kGroups, kStages>;
  auto* kernel =
      flash_attention_sm90_kernel<kDqk, kDv, kBc, kGroups, kStages, kPolyEvery, kFold, kDeepStep>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return attr;
  const dim3 grid(static_cast<unsigned>((p.tq + C::kRowsPerBlock - 1) / C::kRowsPerBlock),
                  static_cast<unsigned>(p.batch * p.heads));
  const bool turns = kDeepStep == 0 && (p.sm90_turns == 1 || (p.sm90_turns == 0 && kDv == 40));
  kernel<<<grid, C::kThreads, C::kSmemBytes, stream>>>(
      p, std::fabs(p.scale) * kLog2e, flash_attention_rescale_slack(p.rescale_slack), turns,
      !p.sm90_no_proxy_fence);
  return cudaGetLastError();
}

// Whether a launch of a kernel that can fold (Sm90Attention::kCanFold) folds the softmax into the
// product: unless p asks not to, where scale·log2(e) is at most 1 (q scaled by it stays within
// f16; SD's 1/sqrt(40) gives 0.23).
bool folds(const FlashAttentionParams& p) {
  return !p.sm90_no_fold && std::fabs(p.scale) * kLog2e <= 1.0f;
}

// The deep schedule's drain step (kDeepStep) for p: 0, 2 or 4. Only where the launch folds head
// 40 at 64-key tiles (flash_attention_sm90_takes checks an explicit ask); by default (0) where
// there are more than two key tiles: at one or two the deeper schedule only adds its drain.
int deep_step(const FlashAttentionParams& p) {
  if (p.sm90_deep == 2 || p.sm90_deep == 4) return p.sm90_deep;
  const bool can = p.sm90_deep == 0 && p.d == 40 && p.sm90_key_tile != 128 && folds(p);
  return can && p.tk > 2 * 64 ? 2 : 0;
}

// launch with the exponentials and schedule p asks for (FlashAttentionParams::
// sm90_poly_exp_every, ::sm90_deep), folded where the head can and folds() says.
template <int kDqk, int kDv, int kBc, int kGroups>
cudaError_t launch_exp(const FlashAttentionParams& p, cudaStream_t stream) {
  // Stages: 4 of 64 keys, 3 of 128 (the largest, d = 80 at 128 keys, is 120 KiB).
  constexpr int kStages = kBc == 64 ? 4 : 3;
  const bool poly = p.sm90_poly_exp_every == 4;
  if constexpr (Sm90Attention<kDqk, kDv, kBc, kGroups, kStages>::kCanFold) {
    if constexpr (kBc == 64) {
      const int deep = deep_step(p);
      if (deep == 2)
        return poly ? launch<kDqk, kDv, kBc, kGroups, kStages, 4, true, 2>(p, stream)
                    : launch<kDqk, kDv, kBc, kGroups, kStages, 0, true, 2>(p, stream);
      if (deep == 4) return launch<kDqk, kDv, kBc, kGroups, kStages, 0, true, 4>(p, stream);
    }
    if (folds(p))
      return poly ? launch<kDqk, kDv, kBc, kGroups, kStages, 4, true>(p, stream)
                  : launch<kDqk, kDv, kBc, kGroups, kStages, 0, true>(p, stream);
  }
  return poly ? launch<kDqk, kDv, kBc, kGroups, kStages, 4, false>(p, stream)
              : launch<kDqk, kDv, kBc, kGroups, kStages, 0, false>(p, stream);
}

// launch with the key tile and warp groups p asks for: 128-key tiles with two groups only (with
// three, 152 registers per consumer thread spill 112-492 bytes: the scores' 64, P's 32, the
// output's 24-40 and q's 12-20).
template <int kDqk, int kDv>
cudaError_t launch_tile(const FlashAttentionParams& p, cudaStream_t stream) {
  if (p.sm90_key_tile == 128) return launch_exp<kDqk, kDv, 128, 2>(p, stream);
  if (p.sm90_warp_groups == 2) return launch_exp<kDqk, kDv, 64, 2>(p, stream);
  return launch_exp<kDqk, kDv, 64, 3>(p, stream);
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
      (p.sm90_key_tile == 0 || p.sm90_key_tile == 64 || p.sm90_key_tile == 128) &&
      (p.sm90_poly_exp_every == 0 || p.sm90_poly_exp_every == 4) &&
      (p.sm90_turns >= 0 && p.sm90_turns <= 2) &&
      (p.sm90_deep == 0 || p.sm90_deep == -1 ||
       ((p.sm90_deep == 2 || p.sm90_deep == 4) && p.d == 40 && p.sm90_key_tile != 128 && folds(p) &&
        (p.sm90_deep == 2 || p.sm90_poly_exp_every == 0))) &&
      flash_attention_rescale_slack(p.rescale_slack) >= 0.0f;
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
    case 80:
      return launch_tile<80, 80>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace hyrt::backend::cuda

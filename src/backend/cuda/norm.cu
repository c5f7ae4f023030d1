// Group norm, layer norm and softmax on the GPU; contracts in op_kernels.h.
//
// Group norm, x [B, P, C] channels-last. A group is a short run of C/G channels in every one of
// P positions (10 channels of 320 in SD's UNet), so instead of walking groups the kernels
// stream whole rows of C channels, one thread per V consecutive channels (16-byte accesses)
// and several rows per block, exactly like an elementwise pass: a warp reads 512 contiguous
// bytes. Per-channel sums are folded into groups at the end of each block.
//   1. gn_stats: grid (chunks, B), chunks ≈ 2 blocks per SM over the batch. Each thread loads
//      all its rows (up to 8) at once, then sums x − K_g and (x − K_g)² in f32, K_g being the
//      group's first value: the shift keeps E[x²] − E[x]² from cancelling when |mean| ≫ std
//      (the CPU backend uses double for the same reason). The block reduces its rows in
//      shared memory in a fixed order (deterministic, no float atomics), folds channels into
//      groups and writes one partial (Σ, Σ²) per (b, g, chunk). The last block of each sample
//      to finish (a ticket from one atomicAdd per block) sums the partials in double, in
//      chunk order, all groups at once, and writes per-channel scale a = γ·rstd and shift
//      β − mean·a (γ, β prefetched by every block, so this tail is about one L2 round trip);
//      it then resets the ticket.
//   2. gn_apply: y = x·a + shift (+ SiLU), the same thread layout, 4 rows per thread loaded
//      together with the coefficients. It reads what gn_stats read, usually from L2.
// In place is safe: gn_apply starts after gn_stats has read everything.
// Measured on an H200 (bench notes in the CUDA ops report): [2, 64, 64, 320] + SiLU ~15 µs in
// a stream of launches (statistics ~9.4 of it, of which ~3 the tail), [1, 512, 512, 256]
// ~130 µs (x read twice and written once at ~3 TB/s). A single-pass version (statistics kept
// in registers across a grid-wide barrier) could roughly halve the small cases.
//
// Layer norm and softmax: a row per warp — or per 4, 8 or 16 lanes for rows of at most that
// many 16-byte vectors — held in registers (up to 8 vectors per lane, C ≤ 2048 for f16) so
// that x is read once; longer rows are re-read from global memory (L1/L2) for each pass.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/op_device.cuh"
#include "backend/cuda/op_kernels.h"

namespace hyrt::backend::cuda {
namespace {

using namespace device;

// --- group norm --------------------------------------------------------------------------------

constexpr int kGnMaxChannels = 4096;
constexpr int kGnThreads = 256;           // block size target; a block holds whole rows
constexpr int kGnApplyRows = 4;           // rows per thread in the apply pass
constexpr size_t kSmemLimit = 48 * 1024;  // without opting in

struct GnLayout {
  int v = 1;        // channels per thread (vector width)
  int cv = 1;       // threads per row
  int rpb = 1;      // rows per block step
  int threads = 1;  // cv · rpb
};

GnLayout gn_layout(int64_t channels, int target_threads) {
  GnLayout l;
  l.v = vector_width(channels, 2);
  l.cv = static_cast<int>(channels / l.v);
  l.rpb = std::max(1, target_threads / l.cv);
  l.threads = l.cv * l.rpb;
  return l;
}

// Dynamic shared memory of the statistics kernel: [2][threads · V] sums and [G] shifts.
size_t gn_stats_smem(const GnLayout& l, int64_t groups) {
  return (2 * static_cast<size_t>(l.threads) * l.v + static_cast<size_t>(groups)) * sizeof(float);
}

// How a launch splits the work: ~2 statistics blocks per SM over the batch, each taking a
// chunk of positions; apply blocks of kGnApplyRows rows per thread.
struct GnPlan {
  GnLayout stats, apply;       // the same layout (one thread per V channels of a row)
  int64_t chunks = 1;          // statistics blocks per sample
  int64_t rows_per_chunk = 1;  // positions per statistics block
  int64_t apply_rows = 1;      // positions per apply block
};

GnPlan gn_plan(const GroupNormShape& s, int multiprocessors) {
  GnPlan p;
  p.stats = p.apply = gn_layout(s.channels, kGnThreads);
  p.apply_rows = static_cast<int64_t>(p.apply.rpb) * kGnApplyRows;
  const int64_t target = std::max<int64_t>(1, 2 * static_cast<int64_t>(multiprocessors));
  const int64_t per_sample = std::max<int64_t>(1, ceil_div(target, std::max<int64_t>(s.batch, 1)));
  const int64_t max_chunks = std::max<int64_t>(1, ceil_div(s.positions, p.stats.rpb));
  p.chunks = std::min(per_sample, max_chunks);
  p.rows_per_chunk = std::max<int64_t>(1, ceil_div(s.positions, p.chunks));
  p.chunks = std::max<int64_t>(1, ceil_div(s.positions, p.rows_per_chunk));  // none empty
  return p;
}

size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

struct GnWorkspace {
  // Byte offsets, total size. The quantizing form (launch_group_norm_quantize) also has
  // extremes [B][C][2] (each channel's largest and its smallest input, as gn_order_bits and its
  // complement, both folded by atomicMax over zero) and absmax [B] (each sample's bound).
  size_t partials = 0, coef = 0, counters = 0, extremes = 0, absmax = 0, total = 0;
};

GnWorkspace gn_workspace(const GroupNormShape& s, int64_t chunks, bool quantize) {
  GnWorkspace w;
  w.partials = 0;
  w.coef = align256(static_cast<size_t>(s.batch * s.groups * chunks) * sizeof(float2));
  w.counters = w.coef + align256(static_cast<size_t>(s.batch * s.channels) * 2 * sizeof(float));
  w.total = w.counters + align256(static_cast<size_t>(s.batch) * sizeof(unsigned));
  if (quantize) {
    w.extremes = w.total;
    w.absmax = w.extremes + align256(static_cast<size_t>(s.batch * s.channels) * 2 * 4);
    w.total = w.absmax + align256(static_cast<size_t>(s.batch) * sizeof(float));
  }
  return w;
}

struct GnArgs {
  int64_t positions;
  int64_t rows_per_chunk;
  int chunks;
  int channels;
  int groups;
  int group_size;
  int rpb;
  float eps;
  bool silu;
  // The quantizing form's (null otherwise): GnWorkspace::extremes and ::absmax.
  unsigned* extremes;
  float* absmax;
};

// A float's bits as an unsigned that orders as the floats do (negative ones complemented, the
// sign bit set on the others), so atomicMax folds maxima; every non-NaN float maps above zero.
__device__ __forceinline__ unsigned gn_order_bits(float f) {
  const unsigned u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float gn_from_order_bits(unsigned o) {
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

// The group norm's output for input x of a channel with coefficients (scale, shift):
// x·scale + shift (+ SiLU), before rounding to the output's type. One definition for the apply
// pass and the quantizing form's bound, which must agree bit for bit.
__device__ __forceinline__ float gn_activate(float x, float scale, float shift, bool silu) {
  const float t = fmaf(x, scale, shift);
  return silu ? sigmoid_gate(t, 1.0f) : t;
}

// gn_activate's value as the quantizer reads it back: rounded to T, as the output holds it.
template <class T>
__device__ __forceinline__ float gn_value(float x, float scale, float shift, bool silu) {
  const float t = gn_activate(x, scale, shift, silu);
  if constexpr (sizeof(T) == 2)
    return __half2float(__float2half_rn(t));
  else
    return t;
}

// SiLU's output never goes below −0.278465 (at x ≈ −1.278465); rounded up, so that it bounds
// every computed value near there.
constexpr float kSiluMinMagnitude = 0.2785f;
constexpr float kSiluArgMin = -1.2784645f;

// (mean, rstd) of every group of sample b from its `chunks` partials (Σ(x − K_g), Σ(x − K_g)²),
// into stats[G]; K_g from shift(g). Sums in double, in a fixed order. L lanes of a warp per
// group, L the largest power of two ≤ 32 with L·G ≤ the block's full-warp threads, so all
// groups load at once: about one L2 round trip. Threads of a partial last warp do nothing;
// the caller synchronises before reading stats.
template <class Shift>
__device__ void gn_fold_groups(const float2* partials_b, int chunks, int groups, double count,
                               float eps, const Shift& shift, float2* stats) {
  const int tid = threadIdx.x;
  const int full = blockDim.x / kWarp * kWarp;  // shuffles need whole warps
  if (tid >= full) return;
  int lanes = 1;
  while (lanes < kWarp && 2 * lanes * groups <= full)
    lanes *= 2;
  const int per_round = full / lanes;
  const int sub = tid % lanes;
  for (int g0 = 0; g0 < groups; g0 += per_round) {  // the same trip count in every lane
    const int g = g0 + tid / lanes;
    double ts = 0.0, tq = 0.0;
    float k_g = 0.0f;
    if (g < groups) {
      if (sub == 0) k_g = shift(g);  // issued before the partials, used after them
      const float2* p = partials_b + static_cast<int64_t>(g) * chunks;
      // A batch of loads goes out before any is used (__ldcg — the partials were written by
      // other blocks of the running kernel: past L1 — is volatile asm and keeps its order).
      constexpr int kBatch = 16;
      for (int k0 = sub; k0 < chunks; k0 += kBatch * lanes) {
        float2 v[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int k = k0 + u * lanes;
          v[u] = k < chunks ? __ldcg(p + k) : make_float2(0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          ts += v[u].x;
          tq += v[u].y;
        }
      }
    }
    for (int o = lanes / 2; o > 0; o /= 2) {
      ts += __shfl_xor_sync(0xffffffffu, ts, o);
      tq += __shfl_xor_sync(0xffffffffu, tq, o);
    }
    if (sub == 0 && g < groups) {
      const double shifted_mean = ts / count;
      const double var = fmax(0.0, tq / count - shifted_mean * shifted_mean);
      stats[g] = make_float2(static_cast<float>(static_cast<double>(k_g) + shifted_mean),
                             static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps))));
    }
  }
}

// Statistics pass: grid (chunks, B), one thread per V channels of a row, rpb rows per step.
// Each block writes one partial per group; the last block of each sample (a ticket from one
// atomicAdd per block) folds them into coef [B][scale, shift][V][C / V] and resets the ticket.
// kWide: blocks of more than kGnThreads threads (rows of more than 2048 channels), which must
// fit the register file at up to 1024 threads: fewer rows in flight per thread.
// kQuant (launch_group_norm_quantize): each block also folds every channel's smallest and
// largest input into a.extremes, and the last block turns them into the sample's bound
// a.absmax[b] (largest |gn_value| at any channel's extremes, and SiLU's minimum where a
// channel's range spans it), resetting a.extremes.
template <class T, int V, bool kWide, bool kQuant>
__global__ void __launch_bounds__(kWide ? 1024 : kGnThreads)
    gn_stats_kernel(const T* __restrict__ x, GnArgs a, const float* __restrict__ gamma,
                    const float* __restrict__ beta, float2* __restrict__ partials,
                    float* __restrict__ coef, unsigned* __restrict__ counters) {
  constexpr int kRows = kWide ? 2 : (sizeof(T) == 2 ? 8 : 4);  // rows loaded at once
  // [2][threads · V]: per-thread sums, then per-channel sums, then the groups' (mean, rstd);
  // then [G] the groups' shifts.
  extern __shared__ float smem[];
  __shared__ unsigned ticket;
  const int tid = threadIdx.x, threads = blockDim.x;
  const int C = a.channels, cg = a.group_size;
  const int cv = C / V;
  const int c0 = (tid % cv) * V;  // this thread's first channel
  const int rr = tid / cv;        // its row slot
  const int b = blockIdx.y, chunk = blockIdx.x;
  const T* xb = x + static_cast<int64_t>(b) * a.positions * C;
  const int64_t row0 = static_cast<int64_t>(chunk) * a.rows_per_chunk;
  const int64_t row1 = min(a.positions, row0 + a.rows_per_chunk);

  // γ and β of channels tid + j·threads (C ≤ V · threads) for the finalize, which only the
  // last block runs: loaded now, they arrive with the data (loads do not move past
  // __syncthreads).
  float pg[V], pb[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int c = tid + j * threads;
    pg[j] = c < C ? gamma[c] : 0.0f;
    pb[j] = c < C ? beta[c] : 0.0f;
  }
  float shift[V], s[V], q[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    shift[i] = to_float(xb[(c0 + i) / cg * cg]);
    s[i] = 0.0f, q[i] = 0.0f;
  }
  // kQuant (f16 only): the smallest and largest input of each channel, in pairs as loaded
  // (exact, and half the registers of floats).
  __half2 lo[(V + 1) / 2], hi[(V + 1) / 2];
  if constexpr (kQuant) {
#pragma unroll
    for (int i = 0; i < V / 2; ++i)
      lo[i] = __float2half2_rn(INFINITY), hi[i] = __float2half2_rn(-INFINITY);
  }
  // All of a thread's rows (up to kRows) are loaded before any is added: one memory round
  // trip for the usual few rows per thread.
  const int64_t step = a.rpb;
  for (int64_t r = row0 + rr; r < row1; r += kRows * step) {
    Raw<T, V> raw[kRows];  // as loaded: 4 registers per row of 8 f16
#pragma unroll
    for (int k = 0; k < kRows; ++k)
      if (r + k * step < row1) raw[k] = load_raw<T, V>(xb + (r + k * step) * C + c0);
#pragma unroll
    for (int k = 0; k < kRows; ++k) {
      if (r + k * step < row1) {
        float v[V];
        unpack<T, V>(raw[k], v);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const float d = v[i] - shift[i];
          s[i] += d;
          q[i] = fmaf(d, d, q[i]);
        }
        if constexpr (kQuant) {
          const auto* pair = reinterpret_cast<const __half2*>(&raw[k]);
#pragma unroll
          for (int i = 0; i < V / 2; ++i)
            lo[i] = __hmin2(lo[i], pair[i]), hi[i] = __hmax2(hi[i], pair[i]);
        }
      }
    }
  }

  // Slot rr, channel c sits at rr·C + c = tid·V + i: one contiguous store per thread.
  float* ss = smem;
  float* sq = smem + threads * V;
  float* ks = smem + 2 * threads * V;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    ss[tid * V + i] = s[i];
    sq[tid * V + i] = q[i];
    if (rr == 0 && (c0 + i) % cg == 0) ks[(c0 + i) / cg] = shift[i];  // one owner per group
  }
  __syncthreads();
  // Per channel over the row slots, in slot order. Entry c < C is read and written only by
  // the thread that owns channel c here.
  for (int c = tid; c < C; c += threads) {
    float ts = 0.0f, tq = 0.0f;
    for (int k = 0; k < a.rpb; ++k) {
      ts += ss[k * C + c];
      tq += sq[k * C + c];
    }
    ss[c] = ts;
    sq[c] = tq;
  }
  __syncthreads();
  for (int g = tid; g < a.groups; g += threads) {
    float ts = 0.0f, tq = 0.0f;
    for (int c = g * cg; c < (g + 1) * cg; ++c) {
      ts += ss[c];
      tq += sq[c];
    }
    partials[(static_cast<int64_t>(b) * a.groups + g) * a.chunks + chunk] = make_float2(ts, tq);
  }
  if constexpr (kQuant) {
    // The block's extremes per channel over its row slots (the sums' buffers again), then one
    // atomicMax each into the sample's: the largest as ordered bits, the smallest as their
    // complement (so that zero is the identity of both).
    __syncthreads();
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
      ss[tid * V + 2 * i] = __low2float(lo[i]);
      ss[tid * V + 2 * i + 1] = __high2float(lo[i]);
      sq[tid * V + 2 * i] = __low2float(hi[i]);
      sq[tid * V + 2 * i + 1] = __high2float(hi[i]);
    }
    __syncthreads();
    unsigned* ext = a.extremes + static_cast<int64_t>(b) * 2 * C;
    for (int c = tid; c < C; c += threads) {
      float l = INFINITY, h = -INFINITY;
      for (int k = 0; k < a.rpb; ++k) {
        l = fminf(l, ss[k * C + c]);
        h = fmaxf(h, sq[k * C + c]);
      }
      if (l <= h) {  // a slot without rows leaves ±inf: a block has at least one row
        atomicMax(ext + 2 * c, ~gn_order_bits(l));
        atomicMax(ext + 2 * c + 1, gn_order_bits(h));
      }
    }
  }

  // The last block of sample b to get here folds every chunk's partials.
  if (kQuant || tid < a.groups) __threadfence();  // the threads that wrote partials / extremes
  __syncthreads();
  if (tid == 0) ticket = atomicAdd(&counters[b], 1u);
  __syncthreads();
  if (ticket != static_cast<unsigned>(a.chunks - 1)) return;
  __threadfence();
  if (tid == 0) counters[b] = 0;    // ready for the next launch
  __shared__ unsigned block_bound;  // kQuant
  if (kQuant && tid == 0) block_bound = 0;

  float2* stats = reinterpret_cast<float2*>(smem);  // [G] (G ≤ C ≤ threads · V)
  gn_fold_groups(
      partials + static_cast<int64_t>(b) * a.groups * a.chunks, a.chunks, a.groups,
      static_cast<double>(a.positions) * cg, a.eps, [&](int g) { return ks[g]; }, stats);
  __syncthreads();
  float bound = 0.0f;  // kQuant: the largest magnitude bound of this thread's channels
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int c = tid + j * threads;
    if (c < C) {
      const float2 st = stats[c / cg];
      const float sc = pg[j] * st.y;
      // [B][scale, shift][V][C / V]: the V values a thread of the apply pass needs are cv
      // apart, so each of its loads is one contiguous line per warp.
      float* cb = coef + static_cast<int64_t>(b) * 2 * C + (c % V) * cv + c / V;
      const float sh = fmaf(-st.x, sc, pb[j]);
      cb[0] = sc;
      cb[C] = sh;
      if constexpr (kQuant) {
        // The channel's extremes, read and reset in one exchange (atomics: past L1).
        unsigned* ext = a.extremes + static_cast<int64_t>(b) * 2 * C + 2 * c;
        const float l = gn_from_order_bits(~atomicExch(ext, 0u));
        const float h = gn_from_order_bits(atomicExch(ext + 1, 0u));
        float m =
            fmaxf(fabsf(gn_value<T>(l, sc, sh, a.silu)), fabsf(gn_value<T>(h, sc, sh, a.silu)));
        // x·sc + sh is monotone in x, SiLU only on either side of its minimum: a range that
        // spans the minimum may hold a value of about its magnitude inside.
        const float t0 = fmaf(l, sc, sh), t1 = fmaf(h, sc, sh);
        if (a.silu && fminf(t0, t1) <= kSiluArgMin && fmaxf(t0, t1) >= kSiluArgMin)
          m = fmaxf(m, kSiluMinMagnitude);
        bound = fmaxf(bound, m);
      }
    }
  }
  if constexpr (kQuant) {
    // Non-negative floats order as their bits (a block may end in a partial warp: no shuffles).
    atomicMax(&block_bound, __float_as_uint(bound));
    __syncthreads();
    if (tid == 0) a.absmax[b] = __uint_as_float(block_bound);
  }
}

// Apply pass: y = x·scale + shift (+ SiLU), grid (positions / rows_per_block, B), the
// statistics pass's thread layout, kGnApplyRows rows per thread loaded together with the
// coefficients. kWide: more than kGnThreads threads.
// kQuant (launch_group_norm_quantize): the values quantized by the sample's bound into q
// (s8, x's layout) instead of y, and each row's scale (the sample's) into row_scales.
template <class T, int V, bool kSilu, bool kWide, bool kQuant = false>
__global__ void __launch_bounds__(kWide ? 1024 : kGnThreads, kWide ? 1 : 4)  // 4: 64 registers
    gn_apply_kernel(const T* x, T* y, int64_t positions, int channels, int64_t rows_per_block,
                    int rpb, const float* __restrict__ coef, int8_t* __restrict__ q = nullptr,
                    float* __restrict__ row_scales = nullptr,
                    const float* __restrict__ absmax = nullptr) {
  const int tid = threadIdx.x;
  const int cv = channels / V;
  const int c0 = (tid % cv) * V;
  const int rr = tid / cv;
  const int b = blockIdx.y;
  const int64_t base = static_cast<int64_t>(b) * positions * channels;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * rows_per_block;
  const int64_t row1 = min(positions, row0 + rows_per_block);
  Raw<T, V> raw[kGnApplyRows];  // as loaded: 4 registers per row of 8 f16
#pragma unroll
  for (int k = 0; k < kGnApplyRows; ++k) {
    const int64_t r = row0 + rr + k * rpb;
    if (r < row1) raw[k] = load_raw<T, V>(x + base + r * channels + c0);
  }
  float sc[V], sh[V];
  const float image_bound = kQuant ? absmax[b] : 0.0f;
  const float* cb = coef + static_cast<int64_t>(b) * 2 * channels + tid % cv;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    sc[i] = cb[i * cv];
    sh[i] = cb[channels + i * cv];
  }
#pragma unroll
  for (int k = 0; k < kGnApplyRows; ++k) {
    const int64_t r = row0 + rr + k * rpb;
    if (r >= row1) break;
    float v[V];
    unpack<T, V>(raw[k], v);
    if constexpr (kQuant) {
#pragma unroll
      for (int i = 0; i < V; ++i)
        v[i] = gn_value<T>(v[i], sc[i], sh[i], kSilu);
      store_s8<V>(v, s8_row_inv(image_bound), q + base + r * channels + c0);
      if (c0 == 0) row_scales[static_cast<int64_t>(b) * positions + r] = s8_row_scale(image_bound);
    } else {
#pragma unroll
      for (int i = 0; i < V; ++i)
        v[i] = gn_activate(v[i], sc[i], sh[i], kSilu);
      store_vec<T, V>(y + base + r * channels + c0, v);
    }
  }
}

// The two launches; with q (launch_group_norm_quantize) the quantizing forms, writing q and
// row_scales instead of y.
template <class T, int V>
void gn_launch(const T* x, T* y, const GroupNormShape& s, const GnPlan& p, const float* gamma,
               const float* beta, char* ws, const GnWorkspace& w, int8_t* q, float* row_scales,
               cudaStream_t stream) {
  auto* partials = reinterpret_cast<float2*>(ws + w.partials);
  auto* coef = reinterpret_cast<float*>(ws + w.coef);
  auto* counters = reinterpret_cast<unsigned*>(ws + w.counters);
  GnArgs a;
  a.positions = s.positions;
  a.rows_per_chunk = p.rows_per_chunk;
  a.chunks = static_cast<int>(p.chunks);
  a.channels = static_cast<int>(s.channels);
  a.groups = static_cast<int>(s.groups);
  a.group_size = static_cast<int>(s.channels / s.groups);
  a.rpb = p.stats.rpb;
  a.eps = s.eps;
  a.silu = s.silu;
  a.extremes = q ? reinterpret_cast<unsigned*>(ws + w.extremes) : nullptr;
  a.absmax = q ? reinterpret_cast<float*>(ws + w.absmax) : nullptr;
  const bool wide = p.stats.threads > kGnThreads;
  const dim3 stats_grid(static_cast<unsigned>(p.chunks), static_cast<unsigned>(s.batch));
  const size_t smem = gn_stats_smem(p.stats, s.groups);
  auto stats = [&](auto wide_tag, auto quant) {
    gn_stats_kernel<T, V, decltype(wide_tag)::value, decltype(quant)::value>
        <<<stats_grid, p.stats.threads, smem, stream>>>(x, a, gamma, beta, partials, coef,
                                                        counters);
  };
  const dim3 grid(static_cast<unsigned>(ceil_div(s.positions, p.apply_rows)),
                  static_cast<unsigned>(s.batch));
  auto apply = [&](auto silu, auto wide_tag, auto quant) {
    gn_apply_kernel<T, V, decltype(silu)::value, decltype(wide_tag)::value, decltype(quant)::value>
        <<<grid, p.apply.threads, 0, stream>>>(x, y, s.positions, a.channels, p.apply_rows,
                                               p.apply.rpb, coef, q, row_scales, a.absmax);
  };
  auto both = [&](auto wide_tag, auto quant) {
    stats(wide_tag, quant);
    if (s.silu)
      apply(std::true_type{}, wide_tag, quant);
    else
      apply(std::false_type{}, wide_tag, quant);
  };
  // Only f16 rows of 8-wide vectors quantize (launch_group_norm_quantize): no other form is
  // compiled.
  constexpr bool kCanQuantize = std::is_same_v<T, __half> && V == 8;
  if constexpr (kCanQuantize) {
    if (q) {
      if (wide)
        both(std::true_type{}, std::true_type{});
      else
        both(std::false_type{}, std::true_type{});
      return;
    }
  }
  if (wide)
    both(std::true_type{}, std::false_type{});
  else
    both(std::false_type{}, std::false_type{});
}

template <class T>
void gn_dispatch(const void* x, void* y, const GroupNormShape& s, const GnPlan& p,
                 const float* gamma, const float* beta, char* ws, const GnWorkspace& w, int8_t* q,
                 float* row_scales, cudaStream_t stream) {
  const T* xt = static_cast<const T*>(x);
  T* yt = static_cast<T*>(y);
  switch (p.apply.v) {
    case 8:
      return gn_launch<T, 8>(xt, yt, s, p, gamma, beta, ws, w, q, row_scales, stream);
    case 4:
      return gn_launch<T, 4>(xt, yt, s, p, gamma, beta, ws, w, q, row_scales, stream);
    case 2:
      return gn_launch<T, 2>(xt, yt, s, p, gamma, beta, ws, w, q, row_scales, stream);
    default:
      return gn_launch<T, 1>(xt, yt, s, p, gamma, beta, ws, w, q, row_scales, stream);
  }
}

// --- row kernels: layer norm, softmax (one warp per row) ---------------------------------------

constexpr int kRowThreads = 128;  // per block; a row takes LANES (4..32) of them
constexpr int kMaxCached = 8;     // vectors per lane kept in registers

// Sum / max over the LANES lanes of an aligned group within a warp (every lane of the warp
// takes part).
template <int LANES, class F>
__device__ __forceinline__ F group_sum(F v) {
#pragma unroll
  for (int o = LANES / 2; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <int LANES>
__device__ __forceinline__ float group_max(float v) {
#pragma unroll
  for (int o = LANES / 2; o > 0; o /= 2)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Quantize = false: y (T) is written. Quantize = true (NV > 0: the row held in registers): the
// normalised row is rounded to T, as y would hold it, then quantized by the W8A8 rule
// (op_device.cuh: s8_row_inv, store_s8) into q8 [rows, channels] with scales[row] — the same
// bits as this kernel's T output quantized by launch_quantize_rows_s8.
template <class T, int V, int NV, int LANES, bool Quantize = false>
__global__ void layer_norm_kernel(const T* x, T* y, int64_t rows, int channels, float eps,
                                  const float* __restrict__ gamma, const float* __restrict__ beta,
                                  int8_t* __restrict__ q8 = nullptr,
                                  float* __restrict__ scales = nullptr) {
  static_assert(!Quantize || (NV > 0 && V == 8),
                "the quantized form holds the row in registers, 8 f16 values a vector");
  const int lane = threadIdx.x % LANES;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * (kRowThreads / LANES) + threadIdx.x / LANES;
  // Lanes past the last row compute a copy of it (every lane must join the shuffles) and
  // store nothing.
  const bool valid = row < rows;
  const T* xr = x + (valid ? row : rows - 1) * channels;
  T* yr = y + row * channels;
  const int cv = channels / V;
  const float inv_c = 1.0f / static_cast<float>(channels);

  float cache[NV > 0 ? NV : 1][V];
  float s = 0.0f;
  if constexpr (NV > 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int k = lane + j * LANES;
      if (k < cv) {
        load_vec<T, V>(xr + k * V, cache[j]);
#pragma unroll
        for (int i = 0; i < V; ++i)
          s += cache[j][i];
      }
    }
  } else {
    for (int k = lane; k < cv; k += LANES) {
      float v[V];
      load_vec<T, V>(xr + k * V, v);
#pragma unroll
      for (int i = 0; i < V; ++i)
        s += v[i];
    }
  }
  const float mean = group_sum<LANES>(s) * inv_c;

  float q = 0.0f;
  if constexpr (NV > 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (lane + j * LANES < cv) {
#pragma unroll
        for (int i = 0; i < V; ++i) {
          const float d = cache[j][i] - mean;
          q = fmaf(d, d, q);
        }
      }
    }
  } else {
    for (int k = lane; k < cv; k += LANES) {
      float v[V];
      load_vec<T, V>(xr + k * V, v);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float d = v[i] - mean;
        q = fmaf(d, d, q);
      }
    }
  }
  const float rstd = 1.0f / sqrtf(group_sum<LANES>(q) * inv_c + eps);

  auto normalise = [&](int k, float(&v)[V]) {
    float g[V], bt[V];
    load_vec<float, V>(gamma + k * V, g);
    load_vec<float, V>(beta + k * V, bt);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float a = g[i] * rstd;
      v[i] = fmaf(v[i], a, bt[i] - mean * a);
    }
  };
  auto write = [&](int k, float(&v)[V]) {
    normalise(k, v);
    if (valid) store_vec<T, V>(yr + k * V, v);
  };
  if constexpr (Quantize) {
    float m = 0.0f;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int k = lane + j * LANES;
      if (k < cv) {
        normalise(k, cache[j]);
#pragma unroll
        for (int i = 0; i < V; ++i) {
          cache[j][i] = static_cast<float>(static_cast<T>(cache[j][i]));  // as y would hold it
          m = fmaxf(m, fabsf(cache[j][i]));
        }
      }
    }
    m = group_max<LANES>(m);
    const float inv = s8_row_inv(m);
    if (valid && lane == 0) scales[row] = s8_row_scale(m);
    int8_t* qr = q8 + row * channels;
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int k = lane + j * LANES;
      if (k < cv && valid) store_s8<V>(cache[j], inv, qr + k * V);  // V = 8: one 8-byte store
    }
  } else if constexpr (NV > 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int k = lane + j * LANES;
      if (k < cv) write(k, cache[j]);
    }
  } else {
    for (int k = lane; k < cv; k += LANES) {
      float v[V];
      load_vec<T, V>(xr + k * V, v);
      write(k, v);
    }
  }
}

template <class T, int V, int NV, int LANES>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int cols) {
  const int lane = threadIdx.x % LANES;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * (kRowThreads / LANES) + threadIdx.x / LANES;
  const bool valid = row < rows;
  const T* xr = x + (valid ? row : rows - 1) * cols;
  T* yr = y + row * cols;
  const int cv = cols / V;

  float cache[NV > 0 ? NV : 1][V];
  float m = -INFINITY;
  if constexpr (NV > 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int k = lane + j * LANES;
      if (k < cv) {
        load_vec<T, V>(xr + k * V, cache[j]);
#pragma unroll
        for (int i = 0; i < V; ++i)
          m = fmaxf(m, cache[j][i]);
      }
    }
  } else {
    for (int k = lane; k < cv; k += LANES) {
      float v[V];
      load_vec<T, V>(xr + k * V, v);
#pragma unroll
      for (int i = 0; i < V; ++i)
        m = fmaxf(m, v[i]);
    }
  }
  m = group_max<LANES>(m);

  float s = 0.0f;
  if constexpr (NV > 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      if (lane + j * LANES < cv) {
#pragma unroll
        for (int i = 0; i < V; ++i) {
          cache[j][i] = expf(cache[j][i] - m);
          s += cache[j][i];
        }
      }
    }
  } else {
    for (int k = lane; k < cv; k += LANES) {
      float v[V];
      load_vec<T, V>(xr + k * V, v);
#pragma unroll
      for (int i = 0; i < V; ++i)
        s += expf(v[i] - m);
    }
  }
  const float inv = 1.0f / group_sum<LANES>(s);

  if constexpr (NV > 0) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int k = lane + j * LANES;
      if (k < cv) {
#pragma unroll
        for (int i = 0; i < V; ++i)
          cache[j][i] *= inv;
        if (valid) store_vec<T, V>(yr + k * V, cache[j]);
      }
    }
  } else {
    for (int k = lane; k < cv; k += LANES) {
      float v[V];
      load_vec<T, V>(xr + k * V, v);
#pragma unroll
      for (int i = 0; i < V; ++i)
        v[i] = expf(v[i] - m) * inv;
      if (valid) store_vec<T, V>(yr + k * V, v);
    }
  }
}

// Picks the vector width (the widest 16-byte vector, or 1 for rows it does not divide), the
// lanes per row (4, 8 or 16 for rows of at most that many vectors, else a warp) and the
// register cache (the smallest of 1, 2, 4, 8 vectors per lane that holds the row, else none),
// then calls launch.template run<T, V, NV, LANES>().
template <class T, int V, class Launch>
void row_dispatch_v(int64_t vectors, const Launch& launch) {
  if (vectors <= 4) return launch.template run<T, V, 1, 4>();
  if (vectors <= 8) return launch.template run<T, V, 1, 8>();
  if (vectors <= 16) return launch.template run<T, V, 1, 16>();
  const int64_t per_lane = ceil_div(vectors, kWarp);
  if (per_lane <= 1) return launch.template run<T, V, 1, kWarp>();
  if (per_lane <= 2) return launch.template run<T, V, 2, kWarp>();
  if (per_lane <= 4) return launch.template run<T, V, 4, kWarp>();
  if (V > 1 && per_lane <= kMaxCached) return launch.template run<T, V, kMaxCached, kWarp>();
  if (V == 1 && per_lane <= 16) return launch.template run<T, V, 16, kWarp>();
  return launch.template run<T, V, 0, kWarp>();
}

template <class T, class Launch>
void row_dispatch(int64_t cols, const Launch& launch) {
  constexpr int kVec = 16 / sizeof(T);
  if (cols % kVec == 0)
    row_dispatch_v<T, kVec>(cols / kVec, launch);
  else
    row_dispatch_v<T, 1>(cols, launch);
}

// The layer norm; with q8 set, its quantized form (layer_norm_kernel's Quantize: only for rows
// the register cache holds, which launch_layer_norm_quantize ensures).
struct LayerNormLaunch {
  const void* x;
  void* y;
  int64_t rows;
  int channels;
  float eps;
  const float* gamma;
  const float* beta;
  cudaStream_t stream;
  int8_t* q8 = nullptr;
  float* scales = nullptr;
  template <class T, int V, int NV, int LANES>
  void run() const {
    const unsigned blocks = blocks_for(rows, kRowThreads / LANES);
    const T* xt = static_cast<const T*>(x);
    if (!q8)
      layer_norm_kernel<T, V, NV, LANES><<<blocks, kRowThreads, 0, stream>>>(
          xt, static_cast<T*>(y), rows, channels, eps, gamma, beta);
    else if constexpr (NV > 0 && V == 8)
      layer_norm_kernel<T, V, NV, LANES, true><<<blocks, kRowThreads, 0, stream>>>(
          xt, nullptr, rows, channels, eps, gamma, beta, q8, scales);
  }
};

struct SoftmaxLaunch {
  const void* x;
  void* y;
  int64_t rows;
  int cols;
  cudaStream_t stream;
  template <class T, int V, int NV, int LANES>
  void run() const {
    softmax_kernel<T, V, NV, LANES>
        <<<blocks_for(rows, kRowThreads / LANES), kRowThreads, 0, stream>>>(
            static_cast<const T*>(x), static_cast<T*>(y), rows, cols);
  }
};

}  // namespace

bool group_norm_supported(int64_t channels, int64_t groups) {
  if (channels < 1 || channels > kGnMaxChannels || groups < 1 || channels % groups != 0)
    return false;
  const GnLayout l = gn_layout(channels, kGnThreads);
  return l.cv <= 1024 && gn_stats_smem(l, groups) + 64 <= kSmemLimit;
}

size_t group_norm_workspace_bytes(const GroupNormShape& s, int multiprocessors) {
  return gn_workspace(s, gn_plan(s, multiprocessors).chunks, false).total;
}

cudaError_t launch_group_norm(const void* x, void* y, FloatType type, const GroupNormShape& s,
                              const float* gamma, const float* beta, void* workspace,
                              int multiprocessors, cudaStream_t stream) {
  if (s.batch <= 0 || s.positions <= 0 || s.channels <= 0) return cudaSuccess;
  if (!group_norm_supported(s.channels, s.groups) || s.batch > 65535 || !workspace)
    return cudaErrorInvalidValue;
  const GnPlan p = gn_plan(s, multiprocessors);
  const GnWorkspace w = gn_workspace(s, p.chunks, false);
  char* ws = static_cast<char*>(workspace);
  if (type == FloatType::kF16)
    gn_dispatch<__half>(x, y, s, p, gamma, beta, ws, w, nullptr, nullptr, stream);
  else
    gn_dispatch<float>(x, y, s, p, gamma, beta, ws, w, nullptr, nullptr, stream);
  return cudaGetLastError();
}

bool group_norm_quantize_supported(int64_t channels, int64_t groups) {
  return group_norm_supported(channels, groups) && gn_layout(channels, kGnThreads).v == 8;
}

size_t group_norm_quantize_workspace_bytes(const GroupNormShape& s, int multiprocessors) {
  return gn_workspace(s, gn_plan(s, multiprocessors).chunks, true).total;
}

cudaError_t launch_group_norm_quantize(const void* x, const GroupNormShape& s, const float* gamma,
                                       const float* beta, int8_t* q, float* row_scales,
                                       void* workspace, int multiprocessors, cudaStream_t stream) {
  if (s.batch <= 0 || s.positions <= 0 || s.channels <= 0) return cudaSuccess;
  if (!group_norm_quantize_supported(s.channels, s.groups) || s.batch > 65535 || !workspace || !q ||
      !row_scales || !aligned(x, 16) || !aligned(q, 8))
    return cudaErrorInvalidValue;
  const GnPlan p = gn_plan(s, multiprocessors);
  const GnWorkspace w = gn_workspace(s, p.chunks, true);
  gn_dispatch<__half>(x, nullptr, s, p, gamma, beta, static_cast<char*>(workspace), w, q,
                      row_scales, stream);
  return cudaGetLastError();
}

cudaError_t launch_layer_norm(const void* x, void* y, FloatType type, int64_t rows,
                              int64_t channels, float eps, const float* gamma, const float* beta,
                              cudaStream_t stream) {
  if (rows <= 0 || channels <= 0) return cudaSuccess;
  if (channels > (int64_t{1} << 30)) return cudaErrorInvalidValue;
  const LayerNormLaunch launch{x, y, rows, static_cast<int>(channels), eps, gamma, beta, stream};
  if (type == FloatType::kF16)
    row_dispatch<__half>(channels, launch);
  else
    row_dispatch<float>(channels, launch);
  return cudaGetLastError();
}

bool layer_norm_quantize_supported(int64_t channels) {
  return channels > 0 && channels % 8 == 0 && channels / 8 <= int64_t{kWarp} * kMaxCached;
}

cudaError_t launch_layer_norm_quantize(const void* x, FloatType type, int64_t rows,
                                       int64_t channels, float eps, const float* gamma,
                                       const float* beta, int8_t* q, float* scales,
                                       cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (type != FloatType::kF16 || !layer_norm_quantize_supported(channels) || !aligned(x, 16))
    return cudaErrorInvalidValue;
  const LayerNormLaunch launch{x,      nullptr, rows,  static_cast<int>(channels), eps, gamma, beta,
                               stream, q,       scales};
  row_dispatch<__half>(channels, launch);
  return cudaGetLastError();
}

cudaError_t launch_softmax(const void* x, void* y, FloatType type, int64_t rows, int64_t cols,
                           cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return cudaSuccess;
  if (cols > (int64_t{1} << 30)) return cudaErrorInvalidValue;
  const SoftmaxLaunch launch{x, y, rows, static_cast<int>(cols), stream};
  if (type == FloatType::kF16)
    row_dispatch<__half>(cols, launch);
  else
    row_dispatch<float>(cols, launch);
  return cudaGetLastError();
}

}  // namespace hyrt::backend::cuda

// Fused attention on tensor cores; contract in attention_kernels.h.
//
// FlashAttention-2's schedule: a block owns BM query rows of one (batch, head) and walks
// the keys in tiles of BN; each warp owns 16·MT of the rows, so a row's softmax state
// (running max, running sum) and its output accumulator stay in that warp's registers and
// scores never leave them. Per key tile: S = Q·Kᵀ (mma.sync m16n8k16, f16 in, f32 out),
// scaling by scale·log2 e and masking (keys past tk, causal), online softmax with ex2 on the
// SFU, P rounded to f16 and reused straight from the accumulator registers as the A operand
// of O += P·V (the m16n8 C layout of two adjacent n-tiles is the m16k16 A layout), with V
// fed through ldmatrix.trans. K/V tiles are double-buffered in shared memory with cp.async,
// so the next tile streams in while this one is multiplied.
//
// Head dims are padded with zeros to DP, a multiple of 16 (the mma's k), in shared memory:
// zero columns add nothing to q·k and produce output columns that are never stored. Rows
// past tq / tk are zero-filled too: a padded key's score is masked, and its zero V row
// keeps 0·garbage from turning into NaN. Shared rows are DP + 8 halves long so that the
// 8 rows an ldmatrix phase reads fall on distinct 16-byte bank groups.
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/attention_device.cuh"
#include "backend/cuda/attention_kernels.h"

namespace hyrt::backend::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

// --- PTX wrappers ----------------------------------------------------------------------------

using attention_device::ex2;
using attention_device::pack_half2;
using attention_device::smem_addr;

// 16 bytes global -> shared, asynchronously; valid == false writes 16 zero bytes instead.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// c += a · b, m16n8k16, f16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// --- tile loads ------------------------------------------------------------------------------

// rows x DP halves of `src` (rows `ld` apart, `cols` valid columns, `valid_rows` valid rows)
// into shared `dst` (rows LDS apart), zero-filling the rest. vec: cp.async in 16-byte chunks
// (cols % 8 == 0, ld % 8 == 0, src 16-byte aligned); otherwise element by element, synchronous.
template <int ROWS, int DP, int LDS>
__device__ __forceinline__ void load_tile(__half* dst, const __half* src, int64_t ld,
                                          int64_t valid_rows, int cols, bool vec) {
  if (vec) {
    constexpr int kChunks = DP / 8;
    for (int c = threadIdx.x; c < ROWS * kChunks; c += kThreads) {
      const int r = c / kChunks, col = (c % kChunks) * 8;
      const bool ok = r < valid_rows && col < cols;
      cp_async16(dst + r * LDS + col, ok ? src + r * ld + col : src, ok);
    }
  } else {
    for (int e = threadIdx.x; e < ROWS * DP; e += kThreads) {
      const int r = e / DP, col = e % DP;
      dst[r * LDS + col] = r < valid_rows && col < cols ? src[r * ld + col] : __float2half(0.0f);
    }
  }
}

// --- the kernel ------------------------------------------------------------------------------

// DP: padded head dim (multiple of 16); MT: m16 tiles per warp; BN: keys per tile;
// Q_REGS: keep the warp's Q fragments in registers for the whole key loop (else re-read
// them from shared memory each tile, saving registers at large DP); MIN_BLOCKS: resident
// blocks per SM the registers must allow (launch(): the cap); slack:
// FlashAttentionParams::rescale_slack.
template <int DP, int MT, int BN, bool Q_REGS, int MIN_BLOCKS>
__global__ void __launch_bounds__(kThreads, MIN_BLOCKS)
    flash_attention_kernel(FlashAttentionParams p, float scale_log2, bool vec, float slack) {
  constexpr int BM = kWarps * 16 * MT;
  constexpr int LDS = DP + 8;
  constexpr int KT = DP / 16;  // k-steps of S = Q·Kᵀ; also 16-column groups of O
  extern __shared__ uint4 smem_raw[];
  __half* sQ = reinterpret_cast<__half*>(smem_raw);  // [BM][LDS]
  __half* sK = sQ + BM * LDS;                        // [2][BN][LDS]
  __half* sV = sK + 2 * BN * LDS;                    // [2][BN][LDS]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // mma fragment row group, thread in group
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int h = blockIdx.y;
  const int64_t b = blockIdx.z;
  const int64_t tq = p.tq, tk = p.tk;

  // Head h of batch b: row 0 of each operand.
  const __half* q = reinterpret_cast<const __half*>(p.q) + (b * tq + m0) * p.ld_q + h * p.d;
  const __half* k = reinterpret_cast<const __half*>(p.k) + b * tk * p.ld_k + h * p.d;
  const __half* v = reinterpret_cast<const __half*>(p.v) + b * tk * p.ld_v + h * p.dv;

  // Causal: no query of this block sees keys past its last row.
  const int64_t kv_end = p.causal ? min(tk, min(m0 + BM, tq)) : tk;
  const int n_tiles = static_cast<int>((kv_end + BN - 1) / BN);

  load_tile<BM, DP, LDS>(sQ, q, p.ld_q, tq - m0, p.d, vec);
  load_tile<BN, DP, LDS>(sK, k, p.ld_k, tk, p.d, vec);
  const bool pos_scale = scale_log2 > 0.0f;
  load_tile<BN, DP, LDS>(sV, v, p.ld_v, tk, p.dv, vec);
  cp_async_commit();

  float o[MT][DP / 8][4];
  // The value subtracted before exponentiation (log2 domain); this thread's partial sum.
  float row_max[MT][2], row_sum[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < DP / 8; ++j)
      o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
    row_max[mt][0] = row_max[mt][1] = -INFINITY;
    row_sum[mt][0] = row_sum[mt][1] = 0.0f;
  }
  uint32_t qf[Q_REGS ? MT : 1][Q_REGS ? KT : 1][4];

  // ldmatrix row addresses of this lane (see the fragment layouts of mma.m16n8k16):
  // A (Q, row-major): rows lane % 16, column half lane / 16.
  const int a_row = lane % 16, a_col = (lane / 16) * 8;
  // B of S (K rows = n, non-trans): keys (lane % 8) + (lane / 16)·8, column half (lane / 8) % 2.
  const int kb_row = (lane % 8) + (lane / 16) * 8, kb_col = ((lane / 8) % 2) * 8;
  // B of O (V rows = k, trans): keys lane % 16, column half lane / 16.
  const int vb_row = lane % 16, vb_col = (lane / 16) * 8;
  const __half* sQw = sQ + warp * 16 * MT * LDS;

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int buf = tile & 1;
    const int64_t n0 = static_cast<int64_t>(tile) * BN;
    if (tile + 1 < n_tiles) {
      const int64_t n1 = n0 + BN;
      load_tile<BN, DP, LDS>(sK + (buf ^ 1) * BN * LDS, k + n1 * p.ld_k, p.ld_k, tk - n1, p.d, vec);
      load_tile<BN, DP, LDS>(sV + (buf ^ 1) * BN * LDS, v + n1 * p.ld_v, p.ld_v, tk - n1, p.dv,
                             vec);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const __half* sKb = sK + buf * BN * LDS;
    const __half* sVb = sV + buf * BN * LDS;

    if constexpr (Q_REGS) {
      if (tile == 0) {
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int kk = 0; kk < KT; ++kk)
            ldmatrix_x4(qf[mt][kk], sQw + (mt * 16 + a_row) * LDS + kk * 16 + a_col);
      }
    }

    // s: [MT][BN / 8] m16n8 accumulators; S = Q·Kᵀ for this warp's rows.
    float s[MT][BN / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < BN / 8; ++j)
        s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (Q_REGS) {
#pragma unroll
          for (int r = 0; r < 4; ++r)
            a[mt][r] = qf[mt][kk][r];
        } else {
          ldmatrix_x4(a[mt], sQw + (mt * 16 + a_row) * LDS + kk * 16 + a_col);
        }
      }
#pragma unroll
      for (int nn = 0; nn < BN / 16; ++nn) {
        uint32_t kb[4];
        ldmatrix_x4(kb, sKb + (nn * 16 + kb_row) * LDS + kk * 16 + kb_col);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816(s[mt][2 * nn], a[mt], kb[0], kb[1]);
          mma_16816(s[mt][2 * nn + 1], a[mt], kb[2], kb[3]);
        }
      }
    }

    // Masks: keys past tk (last tile), keys after the query (causal, near the diagonal).
    const bool mask = n0 + BN > tk || (p.causal && n0 + BN - 1 > m0);
    // Probabilities as f16 pairs, the A fragments of O += P·V: pf[mt][j][half] holds keys
    // n0 + 8j + 2t, +1 of row g + 8·half.
    uint32_t pf[MT][BN / 8][2];
    float alpha[MT][2];
    bool rescale = false;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // rows g and g + 8 of the m16 tile
        const int64_t qi = m0 + warp * 16 * MT + mt * 16 + g + half * 8;
        const int64_t key_limit = p.causal ? min(tk, qi + 1) : tk;  // keys < limit are valid
        // With a positive scale the maximum is taken on the raw scores and scaled once;
        // otherwise each score is scaled first (a mask before a negative scale would flip).
        if (!pos_scale) {
#pragma unroll
          for (int j = 0; j < BN / 8; ++j)
#pragma unroll
            for (int c = 0; c < 2; ++c)
              s[mt][j][half * 2 + c] *= scale_log2;
        }
        if (mask) {
#pragma unroll
          for (int j = 0; j < BN / 8; ++j)
#pragma unroll
            for (int c = 0; c < 2; ++c)
              if (n0 + j * 8 + 2 * t + c >= key_limit) s[mt][j][half * 2 + c] = -INFINITY;
        }
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j)
          mx = fmaxf(mx, fmaxf(s[mt][j][half * 2], s[mt][j][half * 2 + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float tile_max = pos_scale ? mx * scale_log2 : mx;  // log2 domain
        // row_max is the value subtracted so far; it moves (and O, the sums rescale) only
        // when this tile's maximum passes it by more than the slack. -inf: nothing seen yet.
        float& base = row_max[mt][half];
        alpha[mt][half] = 1.0f;
        if (tile_max > base + slack) {
          alpha[mt][half] = ex2(base - tile_max);  // base -inf: 0
          base = tile_max;
          rescale = true;
        }
        // A row with every key so far masked keeps -inf: subtract 0 instead (its
        // probabilities are all 0), never -inf - -inf.
        const float sub = base == -INFINITY ? 0.0f : base;
        const float mul = pos_scale ? scale_log2 : 1.0f;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < BN / 8; ++j) {
          const float e0 = ex2(fmaf(s[mt][j][half * 2], mul, -sub));
          const float e1 = ex2(fmaf(s[mt][j][half * 2 + 1], mul, -sub));
          pf[mt][j][half] = pack_half2(e0, e1);
          sum += e0 + e1;
        }
        row_sum[mt][half] = row_sum[mt][half] * alpha[mt][half] + sum;
      }
    }
    // O rescales where any row of the warp moved (the others multiply by 1).
    if (__any_sync(0xffffffffu, rescale)) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < DP / 8; ++j) {
          o[mt][j][0] *= alpha[mt][0];
          o[mt][j][1] *= alpha[mt][0];
          o[mt][j][2] *= alpha[mt][1];
          o[mt][j][3] *= alpha[mt][1];
        }
    }

    // O += P·V: the probabilities of keys 16kk..16kk+15 are the A fragment of k-step kk.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = pf[mt][2 * kk][0];
        pa[mt][1] = pf[mt][2 * kk][1];
        pa[mt][2] = pf[mt][2 * kk + 1][0];
        pa[mt][3] = pf[mt][2 * kk + 1][1];
      }
#pragma unroll
      for (int dd = 0; dd < KT; ++dd) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, sVb + (kk * 16 + vb_row) * LDS + dd * 16 + vb_col);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_16816(o[mt][2 * dd], pa[mt], vb[0], vb[1]);
          mma_16816(o[mt][2 * dd + 1], pa[mt], vb[2], vb[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with this buffer before it is refilled
  }

  // out = O / row sum (the four threads of a row group hold parts of the sum).
  __half* out = reinterpret_cast<__half*>(p.out) + b * tq * p.ld_out + h * p.dv;
  const bool pairs =
      p.dv % 2 == 0 && p.ld_out % 2 == 0 && reinterpret_cast<uintptr_t>(p.out) % 4 == 0;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      float sum = row_sum[mt][half];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      const int64_t qi = m0 + warp * 16 * MT + mt * 16 + g + half * 8;
      if (qi >= tq) continue;
      __half* row = out + qi * p.ld_out;
#pragma unroll
      for (int j = 0; j < DP / 8; ++j) {
        const int col = j * 8 + 2 * t;
        const float x0 = o[mt][j][half * 2] * inv, x1 = o[mt][j][half * 2 + 1] * inv;
        if (pairs) {
          if (col < p.dv) *reinterpret_cast<__half2*>(row + col) = __floats2half2_rn(x0, x1);
        } else {
          if (col < p.dv) row[col] = __float2half_rn(x0);
          if (col + 1 < p.dv) row[col + 1] = __float2half_rn(x1);
        }
      }
    }
  }
}

// Resident blocks per SM that a kernel's registers leave room for, where capped: with heads
// up to 64 (DP <= 64), 3 blocks of 32-row warps (168 registers) or 4 of 16-row warps (128).
// Uncapped, 32-row warps at DP = 48 and 64 take 204-230 registers: 2 blocks (8 warps) share
// an SM and the kernel waits on latency. Capped (bench_cuda_attention on H200s, two machines):
// SDXL's 1024 tokens of 20 x 64 take 62-71 instead of 73-106 µs, its 4096 of 10 x 64 389-457
// instead of 402-561, SD 1.5's 16384 of 8 x 40 3.64-4.10 instead of 4.05-4.79 ms; at DP = 64
// the cap spills ~180 bytes a thread, and is still faster.
constexpr int kCappedBlocks32 = 3, kCappedBlocks16 = 4, kUncappedBlocks32 = 2;
// A whole wave of capped 32-row blocks takes ~1.2x an uncapped one (SD 1.5's 16384 tokens:
// 6 waves in 3.64 ms against 8 in 4.05).
constexpr double kCappedWaveCost = 1.2;

template <int DP, int MT, int BN, bool Q_REGS>
cudaError_t launch(const FlashAttentionParams& p, float scale_log2, bool vec, bool capped,
                   float slack, cudaStream_t stream) {
  constexpr int BM = kWarps * 16 * MT;
  constexpr size_t kSmem = static_cast<size_t>(BM + 4 * BN) * (DP + 8) * sizeof(__half);
  constexpr int kCap = DP > 64 ? 1 : MT == 2 ? kCappedBlocks32 : kCappedBlocks16;
  auto* kernel = capped ? flash_attention_kernel<DP, MT, BN, Q_REGS, kCap>
                        : flash_attention_kernel<DP, MT, BN, Q_REGS, 1>;
  // Above 48 KiB a kernel must opt in to dynamic shared memory. Per device, so at every
  // launch (a host-side attribute, not a stream operation: launches stay capturable).
  if constexpr (kSmem > 48 * 1024) {
    const cudaError_t st = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(kSmem));
    if (st != cudaSuccess) return st;
  }
  const dim3 grid(static_cast<unsigned>((p.tq + BM - 1) / BM), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, kThreads, kSmem, stream>>>(p, scale_log2, vec, slack);
  return cudaGetLastError();
}

// How a call with heads up to 64 runs when FlashAttentionParams::rows_per_warp leaves it free.
struct Layout {
  bool two;     // 32 query rows per warp (else 16)
  bool capped;  // registers capped (kCappedBlocks32 / kCappedBlocks16)
};

// Few rows (CLIP: 10 vs 7.4 µs) or few keys (cross attention over 77 tokens: SDXL's 4096
// queries of 10 x 64 in 25-28 vs 27-35 µs) favour 16-row blocks, which keep more warps on
// each SM. Past that, 32-row blocks run in waves of (blocks per SM) x SMs, a last partial
// wave costing about a whole one, and the cap is taken where its waves cost less: SD 1.5's
// 4096 tokens of 8 x 40 (512 blocks: 2 uncapped waves of 264 against 2 capped of 396) stay
// uncapped, 264 vs 272 µs.
Layout choose_layout(const FlashAttentionParams& p) {
  const int64_t heads = p.batch * p.heads;
  if (heads * p.tq < 16384 || p.tk <= 128) return {false, true};
  const int64_t sms = p.multiprocessors > 0 ? p.multiprocessors : 132;
  const int64_t blocks = (p.tq + kWarps * 32 - 1) / (kWarps * 32) * heads;
  const auto waves = [&](int64_t per_sm) {
    return static_cast<double>((blocks + per_sm * sms - 1) / (per_sm * sms));
  };
  return {true, kCappedWaveCost * waves(kCappedBlocks32) < waves(kUncappedBlocks32)};
}

bool aligned16(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

}  // namespace

cudaError_t launch_flash_attention(const FlashAttentionParams& p, cudaStream_t stream) {
  if (p.batch < 0 || p.tq < 0 || p.tk < 0 || p.heads < 0) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.tq == 0 || p.heads == 0) return cudaSuccess;
  if (p.tk < 1 || p.d < 1 || p.dv < 1 || p.d > kFlashAttentionMaxHeadDim ||
      p.dv > kFlashAttentionMaxHeadDim || p.ld_q < int64_t{p.heads} * p.d ||
      p.ld_k < int64_t{p.heads} * p.d || p.ld_v < int64_t{p.heads} * p.dv ||
      p.ld_out < int64_t{p.heads} * p.dv || !p.q || !p.k || !p.v || !p.out || p.batch > 65535 ||
      p.heads > 65535 || (p.tq + 15) / 16 > 0x7fffffff)
    return cudaErrorInvalidValue;
  if (p.rows_per_warp != 0 && p.rows_per_warp != 16 && p.rows_per_warp != 32)
    return cudaErrorInvalidValue;
  const float slack = flash_attention_rescale_slack(p.rescale_slack);
  if (slack < 0.0f || p.multiprocessors < 0) return cudaErrorInvalidValue;
  const bool vec = p.d % 8 == 0 && p.dv % 8 == 0 && p.ld_q % 8 == 0 && p.ld_k % 8 == 0 &&
                   p.ld_v % 8 == 0 && aligned16(p.q) && aligned16(p.k) && aligned16(p.v);
  const float scale_log2 = p.scale * 1.4426950408889634f;
  const int dmax = p.d > p.dv ? p.d : p.dv;
  // Two m16 tiles per warp halve the shared-memory reads per multiply; past DP = 64 their
  // registers spill. Uncapped: the rule the kernel had before the cap (for comparisons).
  Layout layout{p.batch * p.heads * p.tq >= 16384, false};
  if (!p.uncapped_registers) layout = choose_layout(p);
  if (p.rows_per_warp != 0) layout.two = p.rows_per_warp == 32;
  const bool two = dmax <= 64 && layout.two, capped = layout.capped;
#define HYRT_FA_CASE(DP)                                                                  \
  if (dmax <= DP) {                                                                       \
    if constexpr (DP <= 64)                                                               \
      if (two) return launch<DP, 2, 64, true>(p, scale_log2, vec, capped, slack, stream); \
    return launch<DP, 1, 64, true>(p, scale_log2, vec, capped, slack, stream);            \
  }
  HYRT_FA_CASE(16)
  HYRT_FA_CASE(32)
  HYRT_FA_CASE(48)
  HYRT_FA_CASE(64)
  HYRT_FA_CASE(80)
  HYRT_FA_CASE(96)
  HYRT_FA_CASE(128)
#undef HYRT_FA_CASE
  // Large heads: one m16 tile per warp, 32-key tiles, Q re-read from shared memory, to stay
  // within 255 registers (O is DP/2 floats per thread).
  if (dmax <= 160) return launch<160, 1, 32, false>(p, scale_log2, vec, capped, slack, stream);
  if (dmax <= 192) return launch<192, 1, 32, false>(p, scale_log2, vec, capped, slack, stream);
  return launch<256, 1, 32, false>(p, scale_log2, vec, capped, slack, stream);
}

}  // namespace hyrt::backend::cuda

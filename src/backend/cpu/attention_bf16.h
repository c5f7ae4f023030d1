// One attention head in bf16 on AVX-512 BF16 (vdpbf16ps), fused: the scores never leave L1.
//
// FlashAttention's schedule on a CPU core: a block of kRows queries walks the keys in tiles of
// kKeys; per tile, S = Q·Kᵀ (bf16 pairs, f32 sums), an online softmax (running max and sum per
// row; the output rescaled when a row's maximum grows), P rounded to bf16, O += P·V in f32.
// Only the head's packed K and V (~700 KiB at SD 1.5's 4096 tokens of 40) are read from L2.
//
// Why by hand: oneDNN 2.6's bf16 matmul pads the score product's depth to 32 (40 -> 64 for SD
// 1.5's heads: 60 % more work) and needs the scores written out and read back around the
// softmax; on CPUs without AMX (AMD Zen 4: one 512-bit vdpbf16ps per clock) that left the
// attention at ~43 % of the bf16 peak. With AMX the products run on tiles (tdpbf16ps): a 16-row
// query block is one A tile, the packed K and V below are already the tiles' B layout, and the
// output accumulates in tiles loaded from and stored back to O around each key tile.
//
// Numerics: q·scale, k and v rounded to bf16 (RNE); scores, softmax, sums and the output in
// f32; probabilities rounded to bf16 for P·V. As attention.cpp's oneDNN bf16 path: ~3e-3
// relative error against f64.
//
// Layouts (all per head; inputs f32 with a row stride, as the graph's [B, T, H·D] slices):
//   q [Tq, D], k [Tk, D], v [Tk, Dv] -> out [Tq, Dv]
// Thread safety: const methods; each thread passes its own scratch of scratch_bytes().
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cpu/amx_tiles.h"

namespace hyrt::backend::cpu {

class FlashAttentionBf16 {
 public:
  static constexpr int64_t kRows = 16;   // queries per block
  static constexpr int64_t kKeys = 256;  // keys per tile
  static constexpr int64_t kMaxDv = 256;

  // Whether the kernel takes these head dims (d >= 1, 1 <= dv <= kMaxDv) on this CPU (AVX-512
  // BF16, not capped below it by DNNL_MAX_CPU_ISA).
  static bool supports(int64_t d, int64_t dv);

  // Where the two products run (amx::ProductForm): kAmx on AMX tiles, kVector in the AVX-512
  // loops, kAuto on tiles where they are usable and pay (amx::tiles_chosen). The same operands
  // either way (tests run both and compare them).
  using Products = amx::ProductForm;

  // Heads of tk keys, head dims d (q, k) and dv (v); scale: applied to q·k (any sign); causal:
  // query i sees keys 0..i only. Any number of queries (run_rows takes them in ranges).
  FlashAttentionBf16(int64_t tk, int64_t d, int64_t dv, float scale, bool causal,
                     Products products = Products::kAuto);

  bool uses_amx() const { return amx_; }

  // Scratch one thread needs (64-byte aligned): the packed K and V, and one block's buffers.
  size_t scratch_bytes() const { return scratch_bytes_; }

  // Packs one head's keys k_h [Tk, D] (rows ld_k apart) and values v_h [Tk, Dv] (ld_v) into
  // `scratch`, for the run_rows calls that follow on the same scratch.
  void pack_head(const float* k_h, int64_t ld_k, const float* v_h, int64_t ld_v,
                 void* scratch) const;

  // out rows [q0, q0 + rows) of the head packed last into `scratch`: q_h and out_h point at
  // the head's row 0 (rows ld_q / ld_out apart). q0 counts from the head's first query (the
  // causal mask needs it).
  void run_rows(const float* q_h, int64_t ld_q, int64_t q0, int64_t rows, float* out_h,
                int64_t ld_out, void* scratch) const;

 private:
  int64_t tk_, d_, dv_;
  float scale_;
  bool causal_;
  bool amx_;
  int64_t pairs_d_;   // ceil(D / 2): depth of the score product in bf16 pairs
  int64_t keys_pad_;  // Tk rounded up to 16, 64 for AMX (zero keys past Tk, masked)
  int64_t dv_pad_;    // Dv rounded up to 16 (zero columns past Dv, never stored)
  size_t k_bytes_, v_bytes_, row_bytes_, q_bytes_, s_bytes_, p_bytes_, o_bytes_, scratch_bytes_;
};

}  // namespace hyrt::backend::cpu

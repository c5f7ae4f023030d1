// One attention head with int8 products on AVX-512 VNNI (vpdpbusd), fused like attention_bf16.h:
// a block of kRows queries walks the keys in tiles of kKeys; per tile S = Q·Kᵀ (u8 · s8, int32
// sums), an online softmax in f32, P rounded to u8, O += P·V (u8 · s8, int32 per tile, added to
// an f32 O). Both products run at the int8 rate, twice the bf16 one on CPUs whose bf16 and int8
// dot products issue alike (AMD Zen 4: one 512-bit vpdpbusd or vdpbf16ps per clock).
//
// Used for W8A8's attention (cpu_backend.cpp): that mode already quantizes every GEMM's
// activations per row, and these roundings are of the same kind.
//
// Numerics (exact integer sums; only the operands are rounded):
//   K smoothed, then per key: k' = k − mean over the head's keys (adds q·mean to a whole row of
//     scores: the softmax does not change, SageAttention's observation), then s8 with one scale
//     per key (absmax / 127).
//   Q·scale per query row: s8 with one scale per row, stored as u8 = s8 + 128; the score sum's
//     extra 128·Σ k₈ is a per-key constant, taken off with the key's scale in one FMA (the
//     int32 sums are exact in f32; the row's scale is applied inside the softmax's exponent).
//   P = exp(s − running max) ∈ [0, 1] as u8 = round(255·P); the row sum l adds the same
//     rounded values, so the weights still sum to one.
//   V: s8 with one scale per channel (absmax over the head's keys / 127).
// ~1e-2 relative L2 against f64 at SD's shapes (attention_test.cpp), the size of W8A8's other
// roundings.
//
// With AMX (Sapphire Rapids and later) the two products run on tiles instead: a 16-row query
// block is one A tile, 16 keys of the packed K (or 16 key quads of the packed V) one B tile in
// the very layouts the VNNI loops read, so the packing is shared; the softmax stays AVX-512.
//
// Layouts and threading as FlashAttentionBf16: inputs f32 with a row stride, per head
//   q [Tq, D], k [Tk, D], v [Tk, Dv] -> out [Tq, Dv]; const methods, a scratch per thread.
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/cpu/amx_tiles.h"

namespace hyrt::backend::cpu {

class FlashAttentionInt8 {
 public:
  static constexpr int64_t kRows = 16;   // queries per block
  static constexpr int64_t kKeys = 256;  // keys per tile
  // Score sums reach 255·127·D and P·V sums 255·127·kKeys: both below 2²⁴, so converting them
  // to f32 is exact.
  static constexpr int64_t kMaxD = 256;
  static constexpr int64_t kMaxDv = 256;

  // Whether the kernel takes these head dims (1..kMaxD, 1..kMaxDv) on this CPU (AVX-512 VNNI,
  // not capped below it by DNNL_MAX_CPU_ISA).
  static bool supports(int64_t d, int64_t dv);

  // Where the two products run (amx::ProductForm): kAmx on AMX tiles, kVector in the AVX-512
  // loops, kAuto on tiles where they are usable and pay (amx::tiles_chosen). The same operands
  // either way (tests run both and compare them).
  using Products = amx::ProductForm;

  // As FlashAttentionBf16's: heads of tk keys, head dims d and dv, scale on q·k, causal mask.
  FlashAttentionInt8(int64_t tk, int64_t d, int64_t dv, float scale, bool causal,
                     Products products = Products::kAuto);

  bool uses_amx() const { return amx_; }

  size_t scratch_bytes() const { return scratch_bytes_; }

  // Quantizes and packs one head's k_h [Tk, D] (rows ld_k apart) and v_h [Tk, Dv] (ld_v) into
  // `scratch` for the run_rows calls that follow on it.
  void pack_head(const float* k_h, int64_t ld_k, const float* v_h, int64_t ld_v,
                 void* scratch) const;

  // out rows [q0, q0 + rows) of the head packed last into `scratch` (as FlashAttentionBf16).
  void run_rows(const float* q_h, int64_t ld_q, int64_t q0, int64_t rows, float* out_h,
                int64_t ld_out, void* scratch) const;

 private:
  int64_t tk_, d_, dv_;
  float scale_;
  bool causal_;
  bool amx_;
  int64_t quads_d_;   // ceil(D / 4): depth of the score product in 4-byte words
  int64_t keys_pad_;  // Tk rounded up to 16, 64 for AMX (zero keys past Tk, masked)
  int64_t dv_pad_;    // Dv rounded up to 16 (zero columns past Dv, never stored)
  // Scratch: packed K, per-key scale and correction, packed V, per-channel V scale, the packing
  // rows, then one query block's Q (and its row scales), S, P and O.
  size_t k_bytes_, key_bytes_, v_bytes_, vs_bytes_, pack_bytes_, q_bytes_, s_bytes_, p_bytes_,
      o_bytes_, scratch_bytes_;
};

}  // namespace hyrt::backend::cpu

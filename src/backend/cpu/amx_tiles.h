// Intel AMX tiles for hyrt's own kernels (the fused attention kernels, attention_int8.cpp and
// attention_bf16.cpp): the tile configuration, the instructions as inline asm, the operating
// system's permission, and which form a kernel's products take.
//
// Why asm, not GCC's <amxtileintrin.h>: its _tile_loadd/_tile_stored are asm statements without
// a memory operand or clobber, so the compiler may move the plain stores that fill a buffer
// (the softmax writing P) past the tile load that reads it. These wrappers clobber memory.
// Tile numbers are literals (the instructions encode them).
//
// Thread safety: the configuration and the tiles are per-thread state. A kernel loads its
// configuration at the start of each call (other code on the thread, oneDNN's AMX kernels
// among them, loads its own) and releases the tiles at the end.
#pragma once

#include <cstdint>

namespace hyrt::backend::cpu::amx {

// Whether this process may use AMX tiles: the CPU has them (cpu_has_amx: oneDNN's view, so
// DNNL_MAX_CPU_ISA caps it) and Linux granted the tile data state (arch_prctl
// ARCH_REQ_XCOMP_PERM, asked once per process; oneDNN asks the same).
bool tiles_usable();

// The 64-byte tile configuration (palette 1): rows and bytes per row of tiles 0..7; tiles left
// at 0 are unconfigured.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};

  void set(int tile, int n_rows, int bytes_per_row) {
    rows[tile] = static_cast<uint8_t>(n_rows);
    colsb[tile] = static_cast<uint16_t>(bytes_per_row);
  }
};
static_assert(sizeof(TileConfig) == 64);

inline void load_config(const TileConfig& cfg) {
  asm volatile("ldtilecfg %0" ::"m"(cfg));
}
inline void release() {
  asm volatile("tilerelease" ::);
}

}  // namespace hyrt::backend::cpu::amx

// tile T = rows at BASE, STRIDE bytes apart (as configured for T).
#define HYRT_AMX_LOAD(T, BASE, STRIDE)                                                \
  asm volatile("tileloadd (%0,%1,1), %%tmm" #T ::"r"(static_cast<const void*>(BASE)), \
               "r"(static_cast<long>(STRIDE))                                         \
               : "memory")
// tile T's rows to BASE, STRIDE bytes apart.
#define HYRT_AMX_STORE(T, BASE, STRIDE)                                             \
  asm volatile("tilestored %%tmm" #T ", (%0,%1,1)" ::"r"(static_cast<void*>(BASE)), \
               "r"(static_cast<long>(STRIDE))                                       \
               : "memory")
#define HYRT_AMX_ZERO(T) asm volatile("tilezero %%tmm" #T ::)

// tile C += A · B: tdpbusd (u8 A, s8 B, int32 C) or tdpbf16ps (bf16 pairs, f32 C).
#define HYRT_AMX_DPBUSD(C, A, B) asm volatile("tdpbusd %%tmm" #B ", %%tmm" #A ", %%tmm" #C ::)
#define HYRT_AMX_DPBF16PS(C, A, B) asm volatile("tdpbf16ps %%tmm" #B ", %%tmm" #A ", %%tmm" #C ::)

namespace hyrt::backend::cpu::amx {

// Whether tiles that take keys in 64s pay for a head of tk keys: unless that pads the keys by
// more than an eighth over the vector loops' 16s (the text's 77 keys would become 128, and the
// vector loops' 80 measured faster: 1.54 against 1.87 ms for SD 1.5's cross attention).
inline bool pays_for_keys(int64_t tk) {
  return (tk + 63) / 64 * 64 * 8 <= (tk + 15) / 16 * 16 * 9;
}

// Where a fused attention kernel's products run: kAmx on tiles (where tiles_usable(), else as
// kVector), kVector in AVX-512 loops, kAuto on tiles where usable and pays_for_keys.
enum class ProductForm { kAuto, kVector, kAmx };

// Whether a kernel of tk keys asked for `form` runs its products on tiles.
inline bool tiles_chosen(ProductForm form, int64_t tk) {
  return form != ProductForm::kVector && tiles_usable() &&
         (form == ProductForm::kAmx || pays_for_keys(tk));
}

// Keys padded for the chosen form: whole 64-key tiles, else the vector loops' 16s.
inline int64_t padded_keys(int64_t tk, bool tiles) {
  return tiles ? (tk + 63) / 64 * 64 : (tk + 15) / 16 * 16;
}

// The products' tiles (the fused attention kernels): 0..3 accumulators of 16 rows x 64 bytes
// (16 int32 or f32 columns); 4 and 5 the A and B of a full 64-byte group of the reduction (A 16
// rows x 64 bytes, B 16 rows of 64 bytes); 6 and 7 those of a last, shorter group of `depth_words
// % 16` four-byte words (a head dim not a multiple of 16 words), unconfigured when there is none.
inline void configure_products(int64_t depth_words) {
  TileConfig cfg;
  for (int t = 0; t < 6; ++t)
    cfg.set(t, 16, 64);
  const int rem = static_cast<int>(depth_words % 16);
  if (rem > 0) {
    cfg.set(6, 16, 4 * rem);
    cfg.set(7, rem, 64);
  }
  load_config(cfg);
}

// Accumulators 0 .. n-1 (n <= 4): zeroed, or loaded from / stored to 16 rows at `rows` (stride
// in bytes), accumulator i at columns [16 i, 16 i + 16) of 4-byte elements.
inline void zero_accumulators(int n) {
  HYRT_AMX_ZERO(0);
  if (n > 1) HYRT_AMX_ZERO(1);
  if (n > 2) HYRT_AMX_ZERO(2);
  if (n > 3) HYRT_AMX_ZERO(3);
}
template <class T>
inline void load_accumulators(int n, const T* rows, int64_t stride_bytes) {
  static_assert(sizeof(T) == 4);
  HYRT_AMX_LOAD(0, rows, stride_bytes);
  if (n > 1) HYRT_AMX_LOAD(1, rows + 16, stride_bytes);
  if (n > 2) HYRT_AMX_LOAD(2, rows + 32, stride_bytes);
  if (n > 3) HYRT_AMX_LOAD(3, rows + 48, stride_bytes);
}
template <class T>
inline void store_accumulators(int n, T* rows, int64_t stride_bytes) {
  static_assert(sizeof(T) == 4);
  HYRT_AMX_STORE(0, rows, stride_bytes);
  if (n > 1) HYRT_AMX_STORE(1, rows + 16, stride_bytes);
  if (n > 2) HYRT_AMX_STORE(2, rows + 32, stride_bytes);
  if (n > 3) HYRT_AMX_STORE(3, rows + 48, stride_bytes);
}

}  // namespace hyrt::backend::cpu::amx

// Defines `void NAME(int n, const uint32_t* b, int64_t b_stride)`: accumulator n (0..3, chosen at
// run time: the instructions encode their tiles) += tile A_TILE · B, B loaded from b through
// tile B_TILE, by HYRT_AMX_<OP> (DPBUSD or DPBF16PS).
#define HYRT_AMX_ACCUMULATE_INTO(OP, C, A, B) \
  HYRT_AMX_LOAD(B, b, b_stride);              \
  HYRT_AMX_##OP(C, A, B);                     \
  break
#define HYRT_AMX_ACCUMULATE_FN(NAME, OP, A_TILE, B_TILE)         \
  inline void NAME(int n, const uint32_t* b, int64_t b_stride) { \
    switch (n) {                                                 \
      case 0:                                                    \
        HYRT_AMX_ACCUMULATE_INTO(OP, 0, A_TILE, B_TILE);         \
      case 1:                                                    \
        HYRT_AMX_ACCUMULATE_INTO(OP, 1, A_TILE, B_TILE);         \
      case 2:                                                    \
        HYRT_AMX_ACCUMULATE_INTO(OP, 2, A_TILE, B_TILE);         \
      default:                                                   \
        HYRT_AMX_ACCUMULATE_INTO(OP, 3, A_TILE, B_TILE);         \
    }                                                            \
  }

namespace hyrt::backend::cpu::amx {

// The score product of the fused attention kernels on the product tiles (configure_products with
// depth_words): 16 query rows (A: depth_words four-byte words per row at q) against keys [n0, n0
// + keys) (keys a multiple of 64) of K packed as [key / 16][depth_words][16] words, 64 keys (four
// accumulators) at a time, stored to `out` (16 rows out_stride_bytes apart, 4-byte elements).
// FULL and REM: the kernel's HYRT_AMX_ACCUMULATE_FN functions for tiles 4/5 and 6/7.
template <auto FULL, auto REM, class T>
inline void score_tiles(const uint32_t* q, int64_t depth_words, const uint32_t* kp, int64_t n0,
                        int64_t keys, T* out, int64_t out_stride_bytes) {
  const int64_t vec = 16 * depth_words;  // words per 16-key vector
  const int64_t full = depth_words / 16, rem = depth_words % 16;
  for (int64_t j = 0; j < keys; j += 64) {
    const uint32_t* kj = kp + (n0 + j) / 16 * vec;
    zero_accumulators(4);
    for (int64_t c = 0; c < full; ++c) {
      HYRT_AMX_LOAD(4, q + 16 * c, 4 * depth_words);
      for (int n = 0; n < 4; ++n)
        FULL(n, kj + n * vec + 256 * c, 64);
    }
    if (rem > 0) {
      HYRT_AMX_LOAD(6, q + 16 * full, 4 * depth_words);
      for (int n = 0; n < 4; ++n)
        REM(n, kj + n * vec + 256 * full, 64);
    }
    store_accumulators(4, out + j, out_stride_bytes);
  }
}

}  // namespace hyrt::backend::cpu::amx

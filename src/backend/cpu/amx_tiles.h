// Intel AMX tiles for hyrt's own kernels (attention_int8.cpp): the tile configuration, the
// instructions as inline asm, and the operating system's permission.
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
#include <cstring>

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
// int32 tile C += A (u8 rows, four bytes per group) · B (s8, rows of four-byte groups).
#define HYRT_AMX_DPBUSD(C, A, B) asm volatile("tdpbusd %%tmm" #B ", %%tmm" #A ", %%tmm" #C ::)

// What the fused attention kernels (attention_bf16.cpp, attention_int8.cpp) share: the walk over
// query blocks and key tiles with its causal bounds, the online softmax's running maximum, and
// the rows' final normalisation. Their products and probability formats are their own.
// Internal to the CPU backend; the AVX-512 pieces are for callers that checked the CPU.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace hyrt::backend::cpu::fused_attention {

// Query rows [q0, q0 + rows) in blocks of `block_rows` (the last one shorter), each against key
// tiles of `tile_keys` from 0: `keys` in a tile is a multiple of 16 up to keys_pad, and with
// `causal` a block stops after the key of its last row. begin(r0, n_rows) starts a block,
// tile(n0, keys, valid) runs one — valid(r) is how many of its keys row r of the block sees
// (<= 0: none) — and end(r0, n_rows) closes the block.
template <class Begin, class Tile, class End>
void walk(int64_t q0, int64_t rows, int64_t block_rows, int64_t tile_keys, int64_t tk,
          int64_t keys_pad, bool causal, Begin&& begin, Tile&& tile, End&& end) {
  for (int64_t r0 = q0; r0 < q0 + rows; r0 += block_rows) {
    const int64_t n_rows = std::min(block_rows, q0 + rows - r0);
    begin(r0, n_rows);
    const int64_t key_end = causal ? std::min(tk, r0 + n_rows) : tk;
    for (int64_t n0 = 0; n0 < key_end; n0 += tile_keys) {
      const int64_t keys = std::min(tile_keys, keys_pad - n0);
      tile(n0, keys, [&](int64_t r) { return (causal ? std::min(tk, r0 + r + 1) : tk) - n0; });
    }
    end(r0, n_rows);
  }
}

// The lanes [0, n) of a 16-lane vector (all 16 for n >= 16).
inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// The online softmax's bookkeeping before one row's tile whose maximum (scaled) is tile_max: when
// it is above the running maximum m, the row's output o [dv_pad] and sum l are rescaled by
// e^(m − tile_max) (0 before the first tile) and m raised.
__attribute__((target("avx512f"))) inline void raise_running_max_to(float tile_max, float& m,
                                                                    float& l, float* o,
                                                                    int64_t dv_pad) {
  if (!(tile_max > m)) return;
  const float alpha = m == -INFINITY ? 0.0f : std::exp(m - tile_max);
  const __m512 va = _mm512_set1_ps(alpha);
  for (int64_t c = 0; c < dv_pad; c += 16)
    _mm512_storeu_ps(o + c, _mm512_mul_ps(_mm512_loadu_ps(o + c), va));
  l *= alpha;
  m = tile_max;
}

// raise_running_max_to with the tile's maximum of scale · s[j] over its first `valid` (>= 1)
// scores (scale >= 0, so the maximum of s scaled).
__attribute__((target("avx512f"))) inline void raise_running_max(const float* s, int64_t valid,
                                                                 float scale, float& m, float& l,
                                                                 float* o, int64_t dv_pad) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (int64_t j = 0; j < valid; j += 16) {
    const __mmask16 mk = first_lanes(valid - j);
    vmax = _mm512_mask_max_ps(vmax, mk, vmax, _mm512_maskz_loadu_ps(mk, s + j));
  }
  raise_running_max_to(scale * _mm512_reduce_max_ps(vmax), m, l, o, dv_pad);
}

// out rows r < n_rows (ld apart) = o's rows [r][0, dv) (dv_pad apart) / l[r] (0 where l is 0).
inline void store_normalized(const float* o, int64_t dv_pad, const float* l, int64_t n_rows,
                             int64_t dv, float* out, int64_t ld) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
    for (int64_t c = 0; c < dv; ++c)
      out[r * ld + c] = o[r * dv_pad + c] * inv;
  }
}

}  // namespace hyrt::backend::cpu::fused_attention

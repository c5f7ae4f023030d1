// Shared pieces of the "8-bit S" kernels: s8 weight loading, the AVX2 activation
// quantizer, the dequantizing epilogue. Contracts in int8_common.h.
#include "backend/cpu/int8_common.h"

#include "backend/cpu/onednn_compat.h"
#include "backend/cpu/vec_math.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "core/half.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {

S8Weight load_s8_weight(const PrepareContext& ctx, size_t i) {
  const ir::Value& v = ctx.input(i);
  const TensorView stored = ctx.weights.get(v.name);
  HYRT_CHECK(stored.shape == v.shape && stored.dtype == DType::kS8 && v.dtype == DType::kS8,
             kInvalidModel, "weight '", v.name, "' is stored as ", dtype_name(stored.dtype),
             stored.shape.to_string(), " but node '", ctx.node.name, "' expects ",
             dtype_name(v.dtype), v.shape.to_string());
  S8Weight w;
  w.q = static_cast<const int8_t*>(stored.data);
  w.rows = v.shape[0];
  w.cols = v.shape.numel() / w.rows;
  const std::optional<TensorView> scale = ctx.weights.scale(v.name);
  HYRT_CHECK(scale.has_value(), kInvalidModel, "8-bit S weight '", v.name, "' of node '",
             ctx.node.name, "' has no per-row scale");
  HYRT_CHECK(scale->dtype == DType::kF32 && scale->shape.rank() == 1 && scale->shape[0] == w.rows,
             kInvalidModel, "8-bit S weight '", v.name, "' has scale ", dtype_name(scale->dtype),
             scale->shape.to_string(), ", expected f32[", w.rows, "] (one per output row)");
  // The view may be an unaligned file mapping: copy bytes, never dereference as float.
  w.scale = shared_weight_data(ctx, v.name, *scale, "f32 scale", [&] {
    AlignedBuffer copy(static_cast<size_t>(w.rows) * sizeof(float), v.name + " scale");
    std::memcpy(copy.data(), scale->data, static_cast<size_t>(w.rows) * sizeof(float));
    return copy;
  });
  return w;
}

namespace {

inline __m256 abs_ps(__m256 x) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
}

float absmax(const float* x, int64_t n) {
  __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(m0, abs_ps(_mm256_loadu_ps(x + i)));
    m1 = _mm256_max_ps(m1, abs_ps(_mm256_loadu_ps(x + i + 8)));
  }
  m0 = _mm256_max_ps(m0, m1);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m0);
  float m = 0.0f;
  for (float l : lanes)
    m = std::max(m, l);
  for (; i < n; ++i)
    m = std::max(m, std::fabs(x[i]));
  return m;
}

// q[i] = clamp(round_half_even(x[i] · inv), ±127). cvtps rounds with MXCSR's mode, which
// is round-to-nearest-even as everywhere in hyrt; std::nearbyint does the same for tails.
void quantize_span(const float* x, int64_t n, float inv, int8_t* q) {
  const __m256 vinv = _mm256_set1_ps(inv);
  const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  // packs_epi32 then packs_epi16 work per 128-bit lane and leave the 4-byte groups of the
  // 32 results (a,b,c,d = the four loads) as a0 b0 c0 d0 a1 b1 c1 d1; this puts them back
  // as a0 a1 b0 b1 c0 c1 d0 d1.
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  auto cvt = [&](const float* p) {
    const __m256 v = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(_mm256_loadu_ps(p), vinv), lo), hi);
    return _mm256_cvtps_epi32(v);
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i ab = _mm256_packs_epi32(cvt(x + i), cvt(x + i + 8));
    const __m256i cd = _mm256_packs_epi32(cvt(x + i + 16), cvt(x + i + 24));
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), bytes);
  }
  for (; i < n; ++i) {
    const float v = std::clamp(x[i] * inv, -127.0f, 127.0f);
    q[i] = static_cast<int8_t>(std::nearbyint(v));
  }
}

}  // namespace

void quantize_rows_s8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  // x: [rows, cols] -> q: [rows, cols], scales: [rows]
  parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(cols, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   const float* xr = x + r * cols;
                   const float m = absmax(xr, cols);
                   scales[r] = m > 0 ? m / 127.0f : 0.0f;
                   quantize_span(xr, cols, m > 0 ? 127.0f / m : 0.0f, q + r * cols);
                 }
               });
}

namespace {

// oneDNN's s8·s8 compensation for weights q [rows, cols] (rows = output columns or channels):
// comp[r] = −128 · Σ_c q[r, c], the term an s8 source shifted to u8 (+128) adds to each output.
void write_s8s8_compensation(const int8_t* q, int64_t rows, int64_t cols, int32_t* comp) {
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int32_t sum = 0;
      for (int64_t c = 0; c < cols; ++c)
        sum += q[r * cols + c];
      comp[r] = -128 * sum;
    }
  });
}

}  // namespace

std::optional<AlignedBuffer> pack_s8_matmul_weights_by_hand(const int8_t* q, int64_t n, int64_t k,
                                                            const dnnl::memory::desc& packed,
                                                            std::string_view what) {
  if (!is_vnni_s8_matmul_weights(packed, k, n)) return std::nullopt;
  constexpr int64_t kBlock = 64;
  const int64_t kb_count = (k + kBlock - 1) / kBlock, nb_count = (n + kBlock - 1) / kBlock;
  AlignedBuffer out(packed.get_size(), what);
  auto* data = static_cast<int8_t*>(out.data());
  std::memset(data, 0, out.size());  // padding rows and columns, and the compensation's slack
  // Block (nb, kb) at (nb · kb_count + kb) · 64², its element (kk, nn) at
  // (kk / 4) · 256 + nn · 4 + kk % 4: four consecutive k of a column are one 32-bit word.
  parallel_for(nb_count, 1, [&](int64_t nb0, int64_t nb1) {
    for (int64_t nb = nb0; nb < nb1; ++nb)
      for (int64_t kb = 0; kb < kb_count; ++kb) {
        int8_t* block = data + (nb * kb_count + kb) * kBlock * kBlock;
        const int64_t k0 = kb * kBlock, k_valid = std::min(kBlock, k - k0);
        for (int64_t nn = 0; nn < std::min(kBlock, n - nb * kBlock); ++nn) {
          const int8_t* row = q + (nb * kBlock + nn) * k + k0;
          if (k_valid == kBlock) {
            for (int64_t w = 0; w < kBlock / 4; ++w)
              std::memcpy(block + w * 256 + nn * 4, row + 4 * w, 4);
          } else {
            for (int64_t kk = 0; kk < k_valid; ++kk)
              block[kk / 4 * 256 + nn * 4 + kk % 4] = row[kk];
          }
        }
      }
  });
  // The s8·s8 compensation after the elements, per column (0 for padding).
  write_s8s8_compensation(q, n, k,
                          reinterpret_cast<int32_t*>(data + kb_count * nb_count * kBlock * kBlock));
  return out;
}

std::optional<AlignedBuffer> pack_s8_conv_weights_by_hand(const int8_t* q, const int64_t (&dims)[4],
                                                          const dnnl::memory::desc& packed,
                                                          std::string_view what) {
  int64_t bo = 0, st[4] = {};
  if (!is_vnni_s8_conv_weights(packed, dims, &bo, st)) return std::nullopt;
  const int64_t o_count = dims[0], i_count = dims[1], kh = dims[2], kw = dims[3];
  const int64_t taps = kh * kw, op = (o_count + bo - 1) / bo * bo, ip = (i_count + 3) / 4 * 4;
  AlignedBuffer out(packed.get_size(), what);
  auto* data = static_cast<int8_t*>(out.data());
  std::memset(data, 0, out.size());  // padding channels, and the compensation's slack
  // Element (o, i, h, w) at (o / bo)·st0 + (i / 4)·st1 + h·st2 + w·st3 + (o % bo)·4 + i % 4: the
  // destination walked block by block, each block's 4 input channels of bo output channels
  // gathered from bo rows of the OIHW source (one output block's rows: bo · i · taps bytes).
  parallel_for(op / bo, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t ob = b0; ob < b1; ++ob)
      for (int64_t h = 0; h < kh; ++h)
        for (int64_t w = 0; w < kw; ++w)
          for (int64_t ib = 0; ib < ip / 4; ++ib) {
            int8_t* dst = data + ob * st[0] + ib * st[1] + h * st[2] + w * st[3];
            for (int64_t oo = 0; oo < std::min(bo, o_count - ob * bo); ++oo) {
              const int8_t* row = q + (ob * bo + oo) * i_count * taps + h * kw + w;
              for (int64_t ii = 0; ii < std::min<int64_t>(4, i_count - ib * 4); ++ii)
                dst[oo * 4 + ii] = row[(ib * 4 + ii) * taps];
            }
          }
  });
  // The s8·s8 compensation after the elements, per output channel (0 for padding).
  write_s8s8_compensation(q, o_count, i_count * taps,
                          reinterpret_cast<int32_t*>(data + op * ip * taps));
  return out;
}

AlignedBuffer pack_s8_matmul_weights(const int8_t* q, int64_t n, int64_t k,
                                     const dnnl::memory::desc& packed, std::string_view what) {
  if (std::optional<AlignedBuffer> by_hand = pack_s8_matmul_weights_by_hand(q, n, k, packed, what))
    return std::move(*by_hand);
  // q [N, K] row-major is qᵀ [K, N] with strides {1, K}: oneDNN's `ba` tag.
  const dnnl::memory::desc stored({k, n}, dnnl::memory::data_type::s8,
                                  dnnl::memory::format_tag::ba);
  return pack_weights(stored, q, packed, what);
}

namespace {

constexpr int64_t kChunk = 1 << 14;

// max |x| over x [n], as a chunked max (fixed chunks, so the result never depends on the
// thread count).
float tensor_absmax(const float* x, int64_t n) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<float> partial(static_cast<size_t>(std::max<int64_t>(chunks, 1)), 0.0f);
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c)
      partial[c] = absmax(x + c * kChunk, std::min(kChunk, n - c * kChunk));
  });
  return *std::max_element(partial.begin(), partial.end());
}

}  // namespace

float quantize_tensor_s8(const float* x, int64_t n, int8_t* q) {
  // Two passes: the max, then the quantize.
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  const float m = tensor_absmax(x, n);
  const float inv = m > 0 ? 127.0f / m : 0.0f;
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c)
      quantize_span(x + c * kChunk, std::min(kChunk, n - c * kChunk), inv, q + c * kChunk);
  });
  return m > 0 ? m / 127.0f : 0.0f;
}

float quantize_image_s8_padded(const float* x, int64_t h, int64_t w, int64_t c, int64_t pad,
                               int8_t* q) {
  if (pad == 0) return quantize_tensor_s8(x, h * w * c, q);
  const float m = tensor_absmax(x, h * w * c);
  const float inv = m > 0 ? 127.0f / m : 0.0f;
  const int64_t row = w * c, padded_row = (w + 2 * pad) * c, side = pad * c;
  std::memset(q, 0, static_cast<size_t>(pad * padded_row));                           // top border
  std::memset(q + (h + pad) * padded_row, 0, static_cast<size_t>(pad * padded_row));  // bottom
  parallel_for(h, std::max<int64_t>(1, 4096 / std::max<int64_t>(row, 1)),
               [&](int64_t b, int64_t e) {
                 for (int64_t r = b; r < e; ++r) {
                   int8_t* qr = q + (r + pad) * padded_row;
                   std::memset(qr, 0, static_cast<size_t>(side));
                   quantize_span(x + r * row, row, inv, qr + side);
                   std::memset(qr + side + row, 0, static_cast<size_t>(side));
                 }
               });
  return m > 0 ? m / 127.0f : 0.0f;
}

// Rows [r0, r1) of dequant_epilogue (below), with Act and the residual `residual` (null: none).
template <class Acc, class Act>
void dequant_epilogue_rows(void* io, int64_t r0, int64_t r1, int64_t cols, const float* row_scales,
                           float uniform_row_scale, const float* col_scale, const float* bias,
                           const float* residual) {
  for (int64_t r = r0; r < r1; ++r) {
    Acc* in = static_cast<Acc*>(io) + r * cols;
    float* out = static_cast<float*>(io) + r * cols;
    const float* res = residual ? residual + r * cols : nullptr;
    const float rs = row_scales ? row_scales[r] : uniform_row_scale;
    const __m256 vrs = _mm256_set1_ps(rs);
    int64_t c = 0;
    for (; c + 8 <= cols; c += 8) {
      __m256 acc;
      if constexpr (std::is_same_v<Acc, int32_t>)
        acc = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + c)));
      else
        acc = _mm256_loadu_ps(in + c);
      const __m256 s = _mm256_mul_ps(vrs, _mm256_loadu_ps(col_scale + c));
      const __m256 b0 = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
      __m256 y = Act::vec(_mm256_fmadd_ps(acc, s, b0));
      if (res) y = _mm256_add_ps(y, _mm256_loadu_ps(res + c));
      _mm256_storeu_ps(out + c, y);
    }
    for (; c < cols; ++c) {
      const float acc = static_cast<float>(in[c]);
      float y = Act::one(std::fma(acc, rs * col_scale[c], bias ? bias[c] : 0.0f));
      if (res) y += res[c];
      out[c] = y;
    }
  }
}

// Rows [r0, r1) of a GEGLU epilogue: in [*, 2n] of Acc, out [*, n] f32 = a · gelu(g) with a, g
// the two halves dequantized as dequant_epilogue_rows would write them (the same operations,
// so the result is the unfused dequant-then-GEGLU's, bit for bit).
template <class Acc>
void dequant_geglu_rows(const void* in, int64_t r0, int64_t r1, int64_t n, const float* row_scales,
                        float uniform_row_scale, const float* col_scale, const float* bias,
                        float* out) {
  const auto load = [](const Acc* p) {
    if constexpr (std::is_same_v<Acc, int32_t>)
      return _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    else
      return _mm256_loadu_ps(p);
  };
  for (int64_t r = r0; r < r1; ++r) {
    const Acc* a = static_cast<const Acc*>(in) + r * 2 * n;
    const Acc* g = a + n;
    float* y = out + r * n;
    const float rs = row_scales ? row_scales[r] : uniform_row_scale;
    const __m256 vrs = _mm256_set1_ps(rs);
    const auto value = [&](const Acc* p, int64_t c) {  // column c of the full row
      const __m256 s = _mm256_mul_ps(vrs, _mm256_loadu_ps(col_scale + c));
      const __m256 b0 = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
      return _mm256_fmadd_ps(load(p), s, b0);
    };
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
      _mm256_storeu_ps(y + c, _mm256_mul_ps(value(a + c, c), Gelu::vec(value(g + c, n + c))));
    for (; c < n; ++c) {
      const float hidden =
          std::fma(static_cast<float>(a[c]), rs * col_scale[c], bias ? bias[c] : 0.0f);
      const float gate =
          std::fma(static_cast<float>(g[c]), rs * col_scale[n + c], bias ? bias[n + c] : 0.0f);
      y[c] = hidden * Gelu::one(gate);
    }
  }
}

template <class Acc>
void dequant_epilogue(void* io, int64_t rows, int64_t cols, const float* row_scales,
                      float uniform_row_scale, const float* col_scale, const float* bias,
                      const GemmEpilogueArgs& epilogue) {
  // io: [rows, cols] of Acc in, f32 out (same bytes); residual: [rows, cols] f32
  static_assert(sizeof(Acc) == sizeof(float));
  if (epilogue.low_rank.h) {
    // Row groups: each group's rows dequantized plainly, then the low-rank term, activation
    // and residual while they are in cache (low_rank.cpp) — or, under a GEGLU epilogue, the
    // term and then the gate into the output [rows, cols / 2].
    const int64_t groups = (rows + kLowRankRowGroup - 1) / kLowRankRowGroup;
    parallel_for(groups, 1, [&](int64_t g0, int64_t g1) {
      const int64_t r0 = g0 * kLowRankRowGroup, r1 = std::min(rows, g1 * kLowRankRowGroup);
      LowRankRows finisher(epilogue, cols);
      auto* y = static_cast<float*>(io);
      for (int64_t r = r0; r < r1; r += kLowRankRowGroup) {
        const int64_t re = std::min(r1, r + kLowRankRowGroup);
        dequant_epilogue_rows<Acc, Identity>(io, r, re, cols, row_scales, uniform_row_scale,
                                             col_scale, bias, nullptr);
        finisher.finish(y, r, re);
        if (epilogue.geglu_out)
          geglu_rows_serial(y + r * cols, re - r, cols / 2, epilogue.geglu_out + r * (cols / 2));
      }
    });
    return;
  }
  if (epilogue.geglu_out) {  // out: [rows, cols / 2] elsewhere
    parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)),
                 [&](int64_t b, int64_t e) {
                   dequant_geglu_rows<Acc>(io, b, e, cols / 2, row_scales, uniform_row_scale,
                                           col_scale, bias, epilogue.geglu_out);
                 });
    return;
  }
  with_activation(epilogue.activation, [&]<class Act>(Act) {
    parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)),
                 [&](int64_t b, int64_t e) {
                   dequant_epilogue_rows<Acc, Act>(io, b, e, cols, row_scales, uniform_row_scale,
                                                   col_scale, bias, epilogue.residual);
                 });
  });
}

template void dequant_epilogue<int32_t>(void*, int64_t, int64_t, const float*, float, const float*,
                                        const float*, const GemmEpilogueArgs&);
template void dequant_epilogue<float>(void*, int64_t, int64_t, const float*, float, const float*,
                                      const float*, const GemmEpilogueArgs&);

void widen_s8_to_f32(const int8_t* src, float* dst, int64_t n) {
  parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
    int64_t i = b;
    for (; i + 8 <= e; i += 8) {
      const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i));
      _mm256_storeu_ps(dst + i, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)));
    }
    for (; i < e; ++i)
      dst[i] = static_cast<float>(src[i]);
  });
}

// W8 keeps weights resident as s8 but multiplies in f32: prepare reorders the stored s8
// weights into this twin, and run() widens it element by element (widen_s8_to_f32) into a
// buffer that the f32 primitive reads as its packed weights. That only works when the twin
// has the f32 layout's exact element order, padding included, with nothing after the
// elements — so anything but a plain or blocked layout is refused. The layout is matched by
// format tag (same_layout_as, onednn_compat.h): the same public calls on oneDNN 2 and 3.
dnnl::memory::desc s8_twin_of(const dnnl::memory::desc& wide_desc) {
  const dnnl::memory::desc twin = same_layout_as(wide_desc, dnnl::memory::data_type::s8);
#if DNNL_VERSION_MAJOR >= 3
  const bool bf16 = wide_desc.get_data_type() == dnnl::memory::data_type::bf16;
#else
  const bool bf16 = wide_desc.data_type() == dnnl::memory::data_type::bf16;
#endif
  const size_t wide_size = bf16 ? 2 : 4;
  HYRT_CHECK(!twin.is_zero() && twin.get_size() * wide_size == wide_desc.get_size(), kUnsupported,
             "W8: oneDNN's packed ", bf16 ? "bf16" : "f32",
             " weight layout is not a plain blocked one (no format tag describes it)");
  return twin;
}

void widen_s8_to_bf16(const int8_t* src, uint16_t* dst, int64_t n) {
  // |q| <= 127 needs 7 significant bits: bf16 (8) holds it exactly, and the f32 of a small
  // integer has its low 16 bits zero, so its top half is the bf16.
  parallel_for(n, 1 << 15, [&](int64_t b, int64_t e) {
    int64_t i = b;
    for (; i + 8 <= e; i += 8) {
      const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i));
      const __m256i f = _mm256_castps_si256(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)));
      const __m256i hi = _mm256_srli_epi32(f, 16);  // 8 × u16 in 32-bit lanes
      const __m128i packed =
          _mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), packed);
    }
    for (; i < e; ++i)
      dst[i] = f32_to_bf16(static_cast<float>(src[i]));
  });
}

}  // namespace hyrt::backend::cpu

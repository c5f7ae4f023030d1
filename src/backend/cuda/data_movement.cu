// Concat, nearest upsampling, permute, timestep and token embeddings on the GPU; contracts in
// op_kernels.h.
//
// The copies are type-blind: each thread moves one "word", the widest of 16, 8, 4, 2 or 1
// bytes that divides every run it copies (a concat row, a pixel's channels, a permute's
// contiguous inner run), so SD's channel counts move 16 bytes per access. Index arithmetic is
// 32-bit when the word count allows.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backend/cuda/op_device.cuh"
#include "backend/cuda/op_kernels.h"

namespace hyrt::backend::cuda {
namespace {

using namespace device;

constexpr int kThreads = 256;

// The widest word (16, 8, 4, 2, 1 bytes) dividing `bytes`.
int word_bytes(int64_t bytes) {
  for (int w = 16; w > 1; w /= 2)
    if (bytes % w == 0) return w;
  return 1;
}

// Calls f.template run<Word>() with the unsigned type of `bytes` bytes.
template <class F>
void with_word(int bytes, const F& f) {
  switch (bytes) {
    case 16:
      return f.template run<uint4>();
    case 8:
      return f.template run<uint2>();
    case 4:
      return f.template run<uint32_t>();
    case 2:
      return f.template run<uint16_t>();
    default:
      return f.template run<uint8_t>();
  }
}

// --- concat ------------------------------------------------------------------------------------

constexpr int kConcatBatch = 8;  // inputs per launch

template <class I>
struct ConcatArgs {
  int count;
  const void* src[kConcatBatch];
  I row_words[kConcatBatch];  // input row length in words
  I col_begin[kConcatBatch];  // where its row starts within this launch's span
  I span;                     // words of each output row this launch writes
  I span_offset;              // the span's first word within an output row
  I out_row;                  // output row length in words
};

template <class W, class I>
__global__ void concat_kernel(ConcatArgs<I> a, I items, W* __restrict__ y) {
  const I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= items) return;
  const I row = i / a.span;
  const I col = i - row * a.span;
  int k = 0;
#pragma unroll
  for (int j = 1; j < kConcatBatch; ++j)
    if (j < a.count && col >= a.col_begin[j]) k = j;
  const W* src = static_cast<const W*>(a.src[k]);
  y[row * a.out_row + a.span_offset + col] = src[row * a.row_words[k] + (col - a.col_begin[k])];
}

struct ConcatLaunch {
  const void* const* inputs;
  const int64_t* row_bytes;
  int first, count;      // inputs of this launch
  int64_t offset_bytes;  // where input `first` starts within an output row
  int64_t out_row_bytes;
  int64_t outer;
  void* y;
  cudaStream_t stream;

  template <class W, class I>
  void run_indexed() const {
    constexpr int64_t wb = sizeof(W);
    ConcatArgs<I> a{};
    a.count = count;
    int64_t span = 0;
    for (int k = 0; k < count; ++k) {
      a.src[k] = inputs[first + k];
      a.row_words[k] = static_cast<I>(row_bytes[first + k] / wb);
      a.col_begin[k] = static_cast<I>(span);
      span += row_bytes[first + k] / wb;
    }
    a.span = static_cast<I>(span);
    a.span_offset = static_cast<I>(offset_bytes / wb);
    a.out_row = static_cast<I>(out_row_bytes / wb);
    const int64_t items = outer * span;
    if (items == 0) return;
    concat_kernel<W, I><<<blocks_for(items, kThreads), kThreads, 0, stream>>>(
        a, static_cast<I>(items), static_cast<W*>(y));
  }
  template <class W>
  void run() const {
    if (fits_32bit(outer * out_row_bytes))
      run_indexed<W, int32_t>();
    else
      run_indexed<W, int64_t>();
  }
};

// --- upsample ----------------------------------------------------------------------------------

template <class I>
struct UpsampleArgs {
  I items, pixel_words, ow, oh, w, h;
  float scale_h, scale_w;  // in / out, as f32
};

template <class W, class I>
__global__ void upsample_kernel(const W* __restrict__ x, W* __restrict__ y, UpsampleArgs<I> a) {
  const I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= a.items) return;
  I rest = i / a.pixel_words;
  const I word = i - rest * a.pixel_words;
  I q = rest / a.ow;
  const I ox = rest - q * a.ow;
  rest = q;
  q = rest / a.oh;
  const I oy = rest - q * a.oh;
  const I b = q;
  // The CPU backend's rule: floor(f32(i) · f32(in / out)), an f32 product, clamped.
  const I sy = min(static_cast<I>(floorf(__fmul_rn(static_cast<float>(oy), a.scale_h))), a.h - 1);
  const I sx = min(static_cast<I>(floorf(__fmul_rn(static_cast<float>(ox), a.scale_w))), a.w - 1);
  y[i] = x[((b * a.h + sy) * a.w + sx) * a.pixel_words + word];
}

struct UpsampleLaunch {
  const void* x;
  void* y;
  int64_t batch, h, w, pixel_bytes, oh, ow;
  cudaStream_t stream;

  template <class W, class I>
  void run_indexed() const {
    UpsampleArgs<I> a;
    const int64_t pw = pixel_bytes / static_cast<int64_t>(sizeof(W));
    const int64_t items = batch * oh * ow * pw;
    a.items = static_cast<I>(items);
    a.pixel_words = static_cast<I>(pw);
    a.ow = static_cast<I>(ow);
    a.oh = static_cast<I>(oh);
    a.w = static_cast<I>(w);
    a.h = static_cast<I>(h);
    a.scale_h = static_cast<float>(h) / static_cast<float>(oh);
    a.scale_w = static_cast<float>(w) / static_cast<float>(ow);
    upsample_kernel<W, I><<<blocks_for(items, kThreads), kThreads, 0, stream>>>(
        static_cast<const W*>(x), static_cast<W*>(y), a);
  }
  template <class W>
  void run() const {
    const int64_t words = batch * std::max(oh * ow, h * w) * (pixel_bytes / sizeof(W));
    if (fits_32bit(words))
      run_indexed<W, int32_t>();
    else
      run_indexed<W, int64_t>();
  }
};

// --- permute -----------------------------------------------------------------------------------

// Innermost output dim contiguous in the input: item i is word (i mod inner) of output row
// i / inner, whose input start comes from the outer dims' strides (in words).
template <class I>
struct RowsArgs {
  int outer_rank;
  I extent[kMaxOpDims];
  I stride[kMaxOpDims];  // input stride of each outer dim, in words
  I inner;               // words per row
  I items;
};

template <class W, class I>
__global__ void permute_rows_kernel(const W* __restrict__ x, W* __restrict__ y, RowsArgs<I> a) {
  const I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= a.items) return;
  I rest = i / a.inner;
  const I word = i - rest * a.inner;
  I src = word;
#pragma unroll
  for (int k = kMaxOpDims - 1; k >= 0; --k) {
    if (k < a.outer_rank) {
      const I e = a.extent[k];
      const I q = rest / e;
      src += (rest - q * e) * a.stride[k];
      rest = q;
    }
  }
  y[i] = x[src];
}

// Transposing permutes: dim p of the output is the input's contiguous dim, dim l (the last) the
// output's. 32x32 tiles of (p, l) go through shared memory; the remaining dims index tiles.
constexpr int kTile = 32;
constexpr int kTileRows = 8;

template <class I>
struct TileArgs {
  I ep, el;  // extents of p and l
  I src_l;   // input stride of l (p's is 1)
  I dst_p;   // output stride of p (l's is 1)
  I tiles_p, tiles_l;
  int batch_rank;  // the other dims, outermost first
  I extent[kMaxOpDims];
  I src[kMaxOpDims];
  I dst[kMaxOpDims];
};

template <class E, class I>
__global__ void permute_tiled_kernel(const E* __restrict__ x, E* __restrict__ y, TileArgs<I> a) {
  // Odd row length in 4-byte banks: column reads of the tile are conflict-free.
  constexpr int kPad = sizeof(E) == 2 ? 2 : (sizeof(E) == 1 ? 4 : 1);
  __shared__ E tile[kTile][kTile + kPad];
  I blk = blockIdx.x;
  const I tl = blk % a.tiles_l;
  blk /= a.tiles_l;
  const I tp = blk % a.tiles_p;
  I rest = blk / a.tiles_p;
  I src = 0, dst = 0;
#pragma unroll
  for (int k = kMaxOpDims - 1; k >= 0; --k) {
    if (k < a.batch_rank) {
      const I e = a.extent[k];
      const I q = rest / e;
      const I c = rest - q * e;
      src += c * a.src[k];
      dst += c * a.dst[k];
      rest = q;
    }
  }
  const int tx = threadIdx.x, ty = threadIdx.y;
  {
    const I p = tp * kTile + tx;
#pragma unroll
    for (int j = ty; j < kTile; j += kTileRows) {
      const I l = tl * kTile + j;
      if (p < a.ep && l < a.el) tile[j][tx] = x[src + p + l * a.src_l];
    }
  }
  __syncthreads();
  {
    const I l = tl * kTile + tx;
#pragma unroll
    for (int j = ty; j < kTile; j += kTileRows) {
      const I p = tp * kTile + j;
      if (p < a.ep && l < a.el) y[dst + p * a.dst_p + l] = tile[tx][j];
    }
  }
}

// Any permute, one element per thread: output element i reads the input at Σ i_d · src_stride[d].
// For transposes whose tiles would be mostly empty (a dim of a few elements, e.g. NHWC -> NCHW
// of a 3-channel image): the writes coalesce and the reads stay within a few lines per warp.
template <class I>
struct GatherArgs {
  int rank;
  I extent[kMaxOpDims];
  I stride[kMaxOpDims];
  I items;
};

template <class E, class I>
__global__ void permute_gather_kernel(const E* __restrict__ x, E* __restrict__ y, GatherArgs<I> a) {
  const I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= a.items) return;
  I rest = i, src = 0;
#pragma unroll
  for (int k = kMaxOpDims - 1; k >= 0; --k) {
    if (k < a.rank) {
      const I e = a.extent[k];
      const I q = rest / e;
      src += (rest - q * e) * a.stride[k];
      rest = q;
    }
  }
  y[i] = x[src];
}

struct PermuteLaunch {
  const void* x;
  void* y;
  int elem_bytes;
  PermuteDims d;
  cudaStream_t stream;
  int64_t numel;

  // Rows: run<Word>() with the word dividing the inner run.
  template <class W, class I>
  void rows_indexed() const {
    const int64_t per_elem = elem_bytes;  // bytes
    const int64_t wb = sizeof(W);
    RowsArgs<I> a{};
    a.outer_rank = d.rank - 1;
    for (int k = 0; k + 1 < d.rank; ++k) {
      a.extent[k] = static_cast<I>(d.extent[k]);
      a.stride[k] = static_cast<I>(d.src_stride[k] * per_elem / wb);
    }
    a.inner = static_cast<I>(d.extent[d.rank - 1] * per_elem / wb);
    const int64_t items = numel * per_elem / wb;
    a.items = static_cast<I>(items);
    permute_rows_kernel<W, I><<<blocks_for(items, kThreads), kThreads, 0, stream>>>(
        static_cast<const W*>(x), static_cast<W*>(y), a);
  }
  template <class W>
  void run() const {
    if (fits_32bit(numel))
      rows_indexed<W, int32_t>();
    else
      rows_indexed<W, int64_t>();
  }

  template <class E, class I>
  void gather_indexed() const {
    GatherArgs<I> a{};
    a.rank = d.rank;
    for (int k = 0; k < d.rank; ++k) {
      a.extent[k] = static_cast<I>(d.extent[k]);
      a.stride[k] = static_cast<I>(d.src_stride[k]);
    }
    a.items = static_cast<I>(numel);
    permute_gather_kernel<E, I><<<blocks_for(numel, kThreads), kThreads, 0, stream>>>(
        static_cast<const E*>(x), static_cast<E*>(y), a);
  }
  template <class E>
  void gather() const {
    if (fits_32bit(numel))
      gather_indexed<E, int32_t>();
    else
      gather_indexed<E, int64_t>();
  }

  template <class E, class I>
  void tiled_indexed(int p) const {
    const int l = d.rank - 1;
    int64_t dst_stride[kMaxOpDims];
    int64_t s = 1;
    for (int k = d.rank - 1; k >= 0; --k) {
      dst_stride[k] = s;
      s *= d.extent[k];
    }
    TileArgs<I> a{};
    a.ep = static_cast<I>(d.extent[p]);
    a.el = static_cast<I>(d.extent[l]);
    a.src_l = static_cast<I>(d.src_stride[l]);
    a.dst_p = static_cast<I>(dst_stride[p]);
    a.tiles_p = static_cast<I>(ceil_div(d.extent[p], kTile));
    a.tiles_l = static_cast<I>(ceil_div(d.extent[l], kTile));
    int64_t batch = 1;
    a.batch_rank = 0;
    for (int k = 0; k < d.rank; ++k) {
      if (k == p || k == l) continue;
      a.extent[a.batch_rank] = static_cast<I>(d.extent[k]);
      a.src[a.batch_rank] = static_cast<I>(d.src_stride[k]);
      a.dst[a.batch_rank] = static_cast<I>(dst_stride[k]);
      ++a.batch_rank;
      batch *= d.extent[k];
    }
    const int64_t blocks = batch * ceil_div(d.extent[p], kTile) * ceil_div(d.extent[l], kTile);
    permute_tiled_kernel<E, I>
        <<<static_cast<unsigned>(blocks), dim3(kTile, kTileRows), 0, stream>>>(
            static_cast<const E*>(x), static_cast<E*>(y), a);
  }
  template <class E>
  void tiled(int p) const {
    // Indices are formed only for elements in range (< numel); tile coordinates run past the
    // extents by at most 31.
    if (fits_32bit(numel + 64))
      tiled_indexed<E, int32_t>(p);
    else
      tiled_indexed<E, int64_t>(p);
  }
};

// --- embeddings --------------------------------------------------------------------------------

template <class T>
__global__ void timestep_kernel(const float* __restrict__ t, const float* __restrict__ freqs,
                                int64_t batch, int64_t half, int64_t sin_at, int64_t cos_at,
                                T* __restrict__ y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= batch * half) return;
  const int64_t b = i / half, k = i - b * half;
  const float arg = __fmul_rn(t[b], freqs[k]);  // an f32 product, as torch
  float s, c;
  sincosf(arg, &s, &c);
  y[b * 2 * half + sin_at + k] = from_float<T>(s);
  y[b * 2 * half + cos_at + k] = from_float<T>(c);
}

// Item i: word (i mod row_words) of output row i / row_words. Out-of-range ids give all-ones
// bytes: NaN in f16 and f32.
template <class W, class I>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const W* __restrict__ table,
                                 I vocab, I row_words, I items, W* __restrict__ y) {
  const I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= items) return;
  const I row = i / row_words;
  const I word = i - row * row_words;
  const int32_t id = ids[row];
  W v;
  if (id >= 0 && static_cast<I>(id) < vocab) {
    v = table[static_cast<I>(id) * row_words + word];
  } else {
    unsigned char* bytes = reinterpret_cast<unsigned char*>(&v);
#pragma unroll
    for (int k = 0; k < static_cast<int>(sizeof(W)); ++k)
      bytes[k] = 0xff;
  }
  y[i] = v;
}

struct EmbeddingLaunch {
  const int32_t* ids;
  int64_t n;
  const void* table;
  int64_t vocab, row_bytes;
  void* y;
  cudaStream_t stream;

  template <class W, class I>
  void run_indexed() const {
    const int64_t row_words = row_bytes / static_cast<int64_t>(sizeof(W));
    const int64_t items = n * row_words;
    embedding_kernel<W, I><<<blocks_for(items, kThreads), kThreads, 0, stream>>>(
        ids, static_cast<const W*>(table), static_cast<I>(vocab), static_cast<I>(row_words),
        static_cast<I>(items), static_cast<W*>(y));
  }
  template <class W>
  void run() const {
    const int64_t words = std::max(n, vocab) * (row_bytes / static_cast<int64_t>(sizeof(W)));
    if (fits_32bit(words))
      run_indexed<W, int32_t>();
    else
      run_indexed<W, int64_t>();
  }
};

}  // namespace

cudaError_t launch_concat(const void* const* inputs, const int64_t* row_bytes, int count,
                          int64_t outer, void* y, cudaStream_t stream) {
  if (count < 1 || outer < 0) return cudaErrorInvalidValue;
  int64_t out_row = 0;
  for (int k = 0; k < count; ++k) {
    if (row_bytes[k] < 0) return cudaErrorInvalidValue;
    out_row += row_bytes[k];
  }
  if (outer == 0 || out_row == 0) return cudaSuccess;
  int64_t offset = 0;
  for (int first = 0; first < count; first += kConcatBatch) {
    const int n = std::min(kConcatBatch, count - first);
    int64_t gcd_bytes = out_row | offset;
    for (int k = 0; k < n; ++k)
      gcd_bytes |= row_bytes[first + k];
    const ConcatLaunch launch{inputs, row_bytes, first, n, offset, out_row, outer, y, stream};
    // The widest word dividing every length and offset: the lowest set bit of their OR.
    with_word(word_bytes(gcd_bytes & -gcd_bytes), launch);
    for (int k = 0; k < n; ++k)
      offset += row_bytes[first + k];
  }
  return cudaGetLastError();
}

cudaError_t launch_upsample_nearest(const void* x, void* y, int elem_bytes, int64_t batch,
                                    int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                                    cudaStream_t stream) {
  if (batch <= 0 || oh <= 0 || ow <= 0 || c <= 0) return cudaSuccess;
  if (h <= 0 || w <= 0) return cudaErrorInvalidValue;
  const int64_t pixel_bytes = c * elem_bytes;
  const UpsampleLaunch launch{x, y, batch, h, w, pixel_bytes, oh, ow, stream};
  with_word(word_bytes(pixel_bytes), launch);
  return cudaGetLastError();
}

cudaError_t launch_permute(const void* x, void* y, int elem_bytes, const PermuteDims& d,
                           cudaStream_t stream) {
  if (d.rank < 1 || d.rank > kMaxOpDims) return cudaErrorInvalidValue;
  if (elem_bytes != 1 && elem_bytes != 2 && elem_bytes != 4 && elem_bytes != 8)
    return cudaErrorInvalidValue;
  int64_t numel = 1;
  int p = -1;  // the output dim that is the input's contiguous one
  for (int k = 0; k < d.rank; ++k) {
    numel *= d.extent[k];
    if (d.src_stride[k] == 1 && d.extent[k] > 1) p = k;
  }
  if (numel == 0) return cudaSuccess;
  const PermuteLaunch launch{x, y, elem_bytes, d, stream, numel};
  if (p < 0 || p == d.rank - 1 || d.src_stride[d.rank - 1] == 1) {
    with_word(word_bytes(d.extent[d.rank - 1] * elem_bytes), launch);
  } else if (d.extent[p] < kTile / 2 || d.extent[d.rank - 1] < kTile / 2) {
    switch (elem_bytes) {
      case 1:
        launch.gather<uint8_t>();
        break;
      case 2:
        launch.gather<uint16_t>();
        break;
      case 4:
        launch.gather<uint32_t>();
        break;
      default:
        launch.gather<uint2>();
        break;
    }
  } else {
    switch (elem_bytes) {
      case 1:
        launch.tiled<uint8_t>(p);
        break;
      case 2:
        launch.tiled<uint16_t>(p);
        break;
      case 4:
        launch.tiled<uint32_t>(p);
        break;
      default:
        launch.tiled<uint2>(p);
        break;
    }
  }
  return cudaGetLastError();
}

cudaError_t launch_timestep_embedding(const float* t, const float* freqs, int64_t batch,
                                      int64_t half, bool flip_sin_to_cos, void* y, FloatType type,
                                      cudaStream_t stream) {
  if (batch <= 0 || half <= 0) return cudaSuccess;
  const int64_t sin_at = flip_sin_to_cos ? half : 0;
  const int64_t cos_at = flip_sin_to_cos ? 0 : half;
  const unsigned blocks = blocks_for(batch * half, kThreads);
  if (type == FloatType::kF16)
    timestep_kernel<__half><<<blocks, kThreads, 0, stream>>>(t, freqs, batch, half, sin_at, cos_at,
                                                             static_cast<__half*>(y));
  else
    timestep_kernel<float><<<blocks, kThreads, 0, stream>>>(t, freqs, batch, half, sin_at, cos_at,
                                                            static_cast<float*>(y));
  return cudaGetLastError();
}

cudaError_t launch_embedding(const int32_t* ids, int64_t n, const void* table, int64_t vocab,
                             int64_t width, void* y, FloatType type, cudaStream_t stream) {
  if (n <= 0 || width <= 0) return cudaSuccess;
  if (vocab < 0) return cudaErrorInvalidValue;
  const int64_t row_bytes = width * (type == FloatType::kF16 ? 2 : 4);
  const EmbeddingLaunch launch{ids, n, table, vocab, row_bytes, y, stream};
  with_word(word_bytes(row_bytes), launch);
  return cudaGetLastError();
}

}  // namespace hyrt::backend::cuda

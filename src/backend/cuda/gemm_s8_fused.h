// Internal to the CUDA backend: the W8A8 GEMM with hyrt's rescale epilogue fused into it, for
// Hopper (sm_90). Built from CUTLASS 3 (wgmma tensor-core instructions fed by TMA, a
// warp-specialized persistent kernel) when the build found CUTLASS (HYRT_HAVE_CUTLASS; the
// kernels live in sm90/gemm_s8_fused.cu, compiled for sm_90a only).
//
// Why: cuBLASLt's int8 GEMM can only write s32, which hyrt's rescale pass then reads back —
// 8 bytes per output beyond the f16 result, and a launch, for each of the ~750 int8 linears of
// an SDXL step. Here the accumulator is scaled, biased and rounded to f16 in the GEMM's own
// epilogue, with the same arithmetic as launch_rescale_s32:
//   y[m, n] = f16( float(Σ_k a[m, k] · w[n, k]) · (a_scale[m] · w_scale[n]) + bias[n]
//                  [+ float(residual[m, n])] )
// (round to nearest, once). No activation: nodes with one keep the separate pass.
//
// Operands (all device memory): a s8 [M, lda] row-major (the first K of each row used),
// w s8 [N, ldw] (PyTorch's [out, in]), a_scale f32 [M], w_scale f32 [N], bias f32 [N] or null,
// residual f16 [M, N] (ld = N) or null, y f16 [M, N] (ld = N; not overlapping the residual).
// Pointers 16-byte aligned.
// Stateless; safe from any host thread.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace hyrt::backend::cuda {

// The tile configuration a launch runs (M x N per thread-block tile; K steps of 128; each a
// persistent, warp-specialized kernel: one producer warp group loading by TMA, two consumer warp
// groups on wgmma). "Cooperative": the two consumers share one tile; "ping-pong": they work on
// alternate tiles, so one's epilogue (the rescale and the f16 store) runs under the other's
// mainloop. A cluster of two along M loads each weight tile once and multicasts it to both
// thread blocks. (Also measured and not kept, bench/results/README.md "fused W8A8 tile
// configurations": 128 x 128 cooperative and 64 x 128 ping-pong in clusters of two, 128 x 256
// cooperative.)
enum class FusedS8Tile : uint8_t {
  kAuto,      // by the shape (fused_s8_auto_tile)
  kLarge,     // 128 x 128, cooperative
  kSmall,     // 64 x 128, ping-pong
  kPingpong,  // 128 x 128, ping-pong, clusters of 2 x 1
};

// Every configuration but kAuto, for benchmarks and tests.
inline constexpr FusedS8Tile kFusedS8Tiles[] = {FusedS8Tile::kLarge, FusedS8Tile::kSmall,
                                                FusedS8Tile::kPingpong};

// "auto", "large", "small", "pingpong".
inline const char* fused_s8_tile_name(FusedS8Tile t) {
  switch (t) {
    case FusedS8Tile::kAuto:
      return "auto";
    case FusedS8Tile::kLarge:
      return "large";
    case FusedS8Tile::kSmall:
      return "small";
    case FusedS8Tile::kPingpong:
      return "pingpong";
  }
  return "?";
}

// The configuration of a name fused_s8_tile_name gives; nullopt for any other text.
inline std::optional<FusedS8Tile> parse_fused_s8_tile(std::string_view name) {
  for (FusedS8Tile t : kFusedS8Tiles)
    if (name == fused_s8_tile_name(t)) return t;
  if (name == "auto") return FusedS8Tile::kAuto;
  return std::nullopt;
}

// Whether this build holds the kernels and a device of compute capability major.minor can run
// them (sm_90 exactly: wgmma is not in later architectures' instruction sets under sm_90a).
bool fused_s8_gemm_available(int cc_major, int cc_minor);

// Whether the kernels take this shape: K, lda and ldw multiples of 16 (TMA's 16-byte row
// alignment for s8), N a multiple of 8 (f16 rows), and every extent below 2^31.
bool fused_s8_gemm_shape_ok(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldw);

// The tile kAuto picks for an M x N x K problem on a device with `multiprocessors` SMs (a rule
// from measurements: gemm_s8_fused.cu): kPingpong where K <= 1280 and its 128 x 128 tiles are
// at least one per SM; else kLarge when K >= 2880 and its tiles are at least one per SM, or
// when they fill the device 4 times over; else kSmall.
FusedS8Tile fused_s8_auto_tile(int64_t m, int64_t n, int64_t k, int multiprocessors);

// Enqueues y = the fused GEMM above on `stream`. cudaErrorInvalidValue for a shape
// fused_s8_gemm_shape_ok refuses or a build without the kernels; otherwise the launch's status.
// Needs no workspace. The first call of each tile shape sets the kernel's shared-memory
// attribute (not a stream operation: prime it with fused_s8_gemm_prime before a graph capture).
cudaError_t launch_fused_s8_gemm(const int8_t* a, int64_t lda, const int8_t* w, int64_t ldw,
                                 const float* a_scale, const float* w_scale, const float* bias,
                                 const __half* residual, __half* y, int64_t m, int64_t n, int64_t k,
                                 FusedS8Tile tile, int multiprocessors, cudaStream_t stream);

// Sets the kernels' shared-memory attributes now (idempotent): cudaSuccess, or why not.
cudaError_t fused_s8_gemm_prime();

// --- the W8A8 convolution as an implicit GEMM (sm90/conv_s8_implicit.cu) --------------------
// A convolution whose quantized input is read in place by the GEMM's TMA loads (im2col mode):
// no im2col matrix is gathered or written. The GEMM's rows are the output pixels, so its
// per-row activation scale must hold for every input pixel a row reads — one scale per image
// (launch_quantize_images_s8, cuda_kernels.h), where the im2col path quantizes each im2col row
// on its own. Same epilogue arithmetic as launch_fused_s8_gemm:
//   y[b, oh, ow, n] = f16( float(Σ_{i,j,c} x[b, oh·s − p + i, ow·s − p + j, c] · w[n, i, j, c])
//                          · (row_scale[r] · w_scale[n]) + bias[n] [+ residual[b, oh, ow, n]] )
// with r = (b·OH + oh)·OW + ow (taps in the padding read 0).
// Operands (device memory, 16-byte aligned): x s8 NHWC [B, H, W, C] (dense), w s8 [N, ldw]
// holding [N, kh, kw, C] (the im2col column order: launch_reorder_weight_rows), row_scale f32
// [B·OH·OW], w_scale f32 [N], bias f32 [N] or null, residual f16 [B, OH, OW, N] or null, y f16
// [B, OH, OW, N] (not overlapping the residual).
struct ImplicitConvS8Shape {
  int64_t batch = 0, height = 0, width = 0, channels = 0, out_channels = 0;
  int kernel_h = 0, kernel_w = 0, stride = 1, padding = 0;
  int64_t out_h = 0, out_w = 0;
};

// Whether the kernel takes this convolution: C a multiple of 64 (its K step), N of 8, ldw of
// 16 and at least kh·kw·C, square strides 1 or 2, padding below the filter, the output extents
// the geometry implies, at most 65535 images (launch_quantize_images_s8's limit), every extent
// below 2^31.
bool implicit_s8_conv_shape_ok(const ImplicitConvS8Shape& s, int64_t ldw);

// The kernel's tiles: 128 output pixels x `n` output channels, n one of these.
inline constexpr int kImplicitConvTileN[] = {128, 160};

// The tile width a convolution runs best on, or 0 where the im2col path is faster (a rule from
// measurements, conv_s8_implicit.cu): the kernel is not persistent, so it needs about a wave of
// tiles to fill `multiprocessors` SMs — 160 where N is a multiple of 160 (SD's 320, 640, 1280:
// whole tiles), else 128.
int implicit_s8_conv_auto_tile(const ImplicitConvS8Shape& s, int multiprocessors);

// Enqueues the convolution above on `stream` on tiles `tile_n` wide (one of kImplicitConvTileN):
// cudaErrorInvalidValue for a shape implicit_s8_conv_shape_ok refuses, another tile width or a
// build without the kernel, else the launch's status. Needs no workspace; prime
// (implicit_s8_conv_prime) before a graph capture.
cudaError_t launch_implicit_s8_conv(const int8_t* x, const int8_t* w, int64_t ldw,
                                    const float* row_scale, const float* w_scale, const float* bias,
                                    const __half* residual, __half* y, const ImplicitConvS8Shape& s,
                                    int tile_n, cudaStream_t stream);

// Sets the kernel's shared-memory attributes now (idempotent): cudaSuccess, or why not.
cudaError_t implicit_s8_conv_prime();

}  // namespace hyrt::backend::cuda

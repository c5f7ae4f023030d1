// The fused W8A8 GEMM for Hopper (gemm_s8_fused.h): the tile rule and the launch, which
// dispatches to the tile configurations (gemm_s8_fused_kernel.cuh; one file each,
// gemm_s8_fused_tile_*.cu). Compiled for sm_90a only (CMakeLists.txt); fused_s8_gemm_available
// gates the launches.
#include "backend/cuda/gemm_s8_fused.h"

#include <algorithm>
#include <cstdlib>

#include "backend/cuda/sm90/gemm_s8_fused_kernel.cuh"
#include "core/env.h"

namespace hyrt::backend::cuda {
bool fused_s8_gemm_available(int cc_major, int cc_minor) {
  return cc_major == 9 && cc_minor == 0;
}

bool fused_s8_gemm_shape_ok(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldw) {
  constexpr int64_t kMax = (int64_t{1} << 31) - 1;
  return m > 0 && n > 0 && k > 0 && m <= kMax && n <= kMax && k <= kMax && k % 16 == 0 &&
         lda % 16 == 0 && ldw % 16 == 0 && lda >= k && ldw >= k && n % 8 == 0;
}

namespace {
// $HYRT_CUDA_FUSED_S8_TILE=<a tile's name> forces kAuto's tile (a knob for measuring the rule).
FusedS8Tile forced_tile() {
  static const FusedS8Tile forced = [] {
    const char* v = std::getenv("HYRT_CUDA_FUSED_S8_TILE");
    return v ? parse_fused_s8_tile(v).value_or(FusedS8Tile::kAuto) : FusedS8Tile::kAuto;
  }();
  return forced;
}

// Tiles per SM from which kAuto takes the 128 x 128 tile whatever K: 4, or
// $HYRT_CUDA_FUSED_S8_FILL (a whole number 1..64).
int64_t fill_tiles_per_sm() {
  static const int64_t fill = env_int("HYRT_CUDA_FUSED_S8_FILL", 1, 64).value_or(4);
  return fill;
}

// The deepest K kAuto runs on the ping-pong tile: 1280, or $HYRT_CUDA_FUSED_S8_PINGPONG_K
// (0..1048576; 0 never: the rule of before, for measuring).
int64_t pingpong_max_k() {
  static const int64_t k = env_int("HYRT_CUDA_FUSED_S8_PINGPONG_K", 0, 1 << 20).value_or(1280);
  return k;
}
}  // namespace

FusedS8Tile fused_s8_auto_tile(int64_t m, int64_t n, int64_t k, int multiprocessors) {
  // Measured on an H100 at SD 1.5's and SDXL's 1024² GEMMs (bench_cuda_gemm --breakdown, every
  // configuration; bench/results/fused_s8_tiles_h100.json). The 128 x 128 ping-pong tile in
  // clusters of two (one consumer's epilogue under the other's mainloop, weight tiles multicast)
  // won wherever K is shallow and the tiles fill the device: GEGLU projections 2048·10240·1280
  // 47.1 µs against 62.2 on the cooperative 128 x 128, 8192·5120·640 60.7 against 78.3,
  // 32768·2560·320 98.3 against 118.0; 32768·320·320 21.9 against 24.6; 2048·1280·1280 14.7
  // against 15.7 (64 x 128). Within 3 % either way at 32768·320·1280 and 8192·640·640; behind at
  // deep K (the 3x3 convolutions' 5760 and 11520: 158 against 151, 70 against 64), where the
  // epilogue is a small part of a tile's time and the cooperative tile's two warp groups on one
  // tile finish it sooner.
  //
  // Below that, measured on an H200 at the SDXL UNet's GEMMs (bench/results/README.md, fused
  // W8A8): the 128 x 128 tile won wherever K >= 2880 (3x3 convolutions: 2048·1280·17280 took 143
  // µs against 171) and where its tiles fill the device many times over (8192·5120·640: 84
  // against 97 µs); the 64 x 128 tile elsewhere (few rows). A deep K with fewer 128 x 128 tiles
  // than SMs (SD 1.5's 512·1280·11520: 40 tiles on 132 SMs) keeps the small tile, which at least
  // doubles the SMs at work: with the K rule alone SD 1.5's 512² step took 8.31 ms (7.94
  // unfused, and 7.94 fused under an earlier rule that kept such shapes on the small tile).
  // The fill threshold was 8 tiles per SM until SD 1.5's 1024² shapes were measured alone on an
  // H100 (bench/results/gemm_breakdown_h100.json): with 768 tiles (5.8 per SM) 32768·320·320
  // took 24.4 µs on 128 x 128 against 31.4, and 32768·320·1280 38.7 against 54.7; at 320 tiles
  // (2.4 per SM) the two were within 6 % either way. Now 4 per SM
  // ($HYRT_CUDA_FUSED_S8_FILL=N sets another, for measuring).
  const int64_t large_tiles = ((m + 127) / 128) * ((n + 127) / 128);
  const int64_t sms = std::max(multiprocessors, 1);
  if (k <= pingpong_max_k() && large_tiles >= sms) return FusedS8Tile::kPingpong;
  const bool deep_k_fills_device = k >= 2880 && large_tiles >= sms;
  return deep_k_fills_device || large_tiles >= fill_tiles_per_sm() * sms ? FusedS8Tile::kLarge
                                                                         : FusedS8Tile::kSmall;
}

cudaError_t launch_fused_s8_gemm(const int8_t* a, int64_t lda, const int8_t* w, int64_t ldw,
                                 const float* a_scale, const float* w_scale, const float* bias,
                                 const __half* residual, __half* y, int64_t m, int64_t n, int64_t k,
                                 FusedS8Tile tile, int multiprocessors, cudaStream_t stream) {
  if (!fused_s8_gemm_shape_ok(m, n, k, lda, ldw)) return cudaErrorInvalidValue;
  if (tile == FusedS8Tile::kAuto) tile = forced_tile();
  if (tile == FusedS8Tile::kAuto) tile = fused_s8_auto_tile(m, n, k, multiprocessors);
  sm90::FusedS8Args args{a, lda, w, ldw, a_scale, w_scale, bias, residual, y, 0, 0, 0, stream};
  args.m = static_cast<int>(m);  // fused_s8_gemm_shape_ok: each below 2^31
  args.n = static_cast<int>(n);
  args.k = static_cast<int>(k);
  switch (tile) {
    case FusedS8Tile::kLarge:
      return sm90::run_fused_s8_tile<FusedS8Tile::kLarge>(args);
    case FusedS8Tile::kSmall:
      return sm90::run_fused_s8_tile<FusedS8Tile::kSmall>(args);
    case FusedS8Tile::kPingpong:
      return sm90::run_fused_s8_tile<FusedS8Tile::kPingpong>(args);
    case FusedS8Tile::kAuto:
      break;
  }
  return cudaErrorInvalidValue;
}

cudaError_t fused_s8_gemm_prime() {
  for (cudaError_t s : {sm90::prime_fused_s8_tile<FusedS8Tile::kLarge>(),
                        sm90::prime_fused_s8_tile<FusedS8Tile::kSmall>(),
                        sm90::prime_fused_s8_tile<FusedS8Tile::kPingpong>()})
    if (s != cudaSuccess) return s;
  return cudaSuccess;
}

}  // namespace hyrt::backend::cuda

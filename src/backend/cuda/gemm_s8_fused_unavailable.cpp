// The fused W8A8 GEMM's interface (gemm_s8_fused.h) in a build without CUTLASS's headers:
// nothing is available, so the W8A8 candidate keeps cuBLASLt's s8 GEMM and hyrt's rescale pass.
// (With CUTLASS, sm90/gemm_s8_fused.cu defines these and HYRT_HAVE_CUTLASS is set.)
#include "backend/cuda/gemm_s8_fused.h"

#ifndef HYRT_HAVE_CUTLASS

namespace hyrt::backend::cuda {

bool fused_s8_gemm_available(int, int) {
  return false;
}

bool fused_s8_gemm_shape_ok(int64_t, int64_t, int64_t, int64_t, int64_t) {
  return false;
}

FusedS8Tile fused_s8_auto_tile(int64_t, int64_t, int64_t, int) {
  return FusedS8Tile::kLarge;
}

cudaError_t launch_fused_s8_gemm(const int8_t*, int64_t, const int8_t*, int64_t, const float*,
                                 const float*, const float*, const __half*, __half*, int64_t,
                                 int64_t, int64_t, FusedS8Tile, int, cudaStream_t) {
  return cudaErrorInvalidValue;
}

cudaError_t fused_s8_gemm_prime() {
  return cudaSuccess;
}

bool implicit_s8_conv_shape_ok(const ImplicitConvS8Shape&, int64_t) {
  return false;
}

int implicit_s8_conv_auto_tile(const ImplicitConvS8Shape&, int) {
  return 0;
}

cudaError_t launch_implicit_s8_conv(const int8_t*, const int8_t*, int64_t, const float*,
                                    const float*, const float*, const __half*, __half*,
                                    const ImplicitConvS8Shape&, int, cudaStream_t) {
  return cudaErrorInvalidValue;
}

cudaError_t implicit_s8_conv_prime() {
  return cudaSuccess;
}

}  // namespace hyrt::backend::cuda

#endif  // HYRT_HAVE_CUTLASS

// Hopper's flash attention (attention_kernels.h) in a build without CUTLASS's headers: never
// available, so attention keeps cuDNN's plans and hyrt's mma.sync kernel. (With CUTLASS,
// sm90/attention_sm90.cu defines these and HYRT_HAVE_CUTLASS is set.)
#include "backend/cuda/attention_kernels.h"

#ifndef HYRT_HAVE_CUTLASS

namespace hyrt::backend::cuda {

bool flash_attention_sm90_available(int, int) {
  return false;
}

bool flash_attention_sm90_takes_shape(int64_t, int, int64_t, int64_t, int, int, bool) {
  return false;
}

bool flash_attention_sm90_takes(const FlashAttentionParams&) {
  return false;
}

cudaError_t launch_flash_attention_sm90(const FlashAttentionParams&, cudaStream_t) {
  return cudaErrorInvalidValue;
}

}  // namespace hyrt::backend::cuda

#endif  // HYRT_HAVE_CUTLASS

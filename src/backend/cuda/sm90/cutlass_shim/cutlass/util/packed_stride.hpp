// hyrt's stand-in for CUTLASS's tools/util header of this name, which the nvidia-cutlass wheel
// does not ship but CUTLASS's sm90 implicit-GEMM conv mainloop includes for one thing: turning
// a ConvProblemShape's flat [n, h, w, c] / [k, r, s, c] stride arrays into the mainloop's CuTe
// strides. Only the 2-D forward convolution's two forms are defined (sm90/conv_s8_implicit.cu is
// the one user); any other stride type fails to compile rather than guessing.
#pragma once

#include <cstdint>

#include "cute/container/array.hpp"
#include "cute/stride.hpp"
#include "cutlass/conv/convolution.h"

namespace cutlass {

// Activations of a 2-D forward convolution: modes ((w, h, n), c), channels contiguous.
inline cute::Stride<cute::Stride<int64_t, int64_t, int64_t>, cute::Int<1>> make_cute_packed_stride(
    cute::Stride<cute::Stride<int64_t, int64_t, int64_t>, cute::Int<1>>,
    const cute::array<int64_t, 4>& nhwc, conv::Operator) {
  return {{nhwc[2], nhwc[1], nhwc[0]}, {}};
}

// Filter of a 2-D forward convolution: modes (k, (c, s, r)), channels contiguous.
inline cute::Stride<int64_t, cute::Stride<cute::Int<1>, int64_t, int64_t>> make_cute_packed_stride(
    cute::Stride<int64_t, cute::Stride<cute::Int<1>, int64_t, int64_t>>,
    const cute::array<int64_t, 4>& krsc, conv::Operator) {
  return {krsc[0], {{}, krsc[2], krsc[1]}};
}

}  // namespace cutlass

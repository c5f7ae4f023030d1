#include "core/tensor.h"

#include <cstring>

#include "core/error.h"
#include "core/half.h"

namespace hyrt {

Tensor::Tensor(DType dtype, Shape shape)
    : dtype_(dtype),
      shape_(shape),
      buf_(static_cast<size_t>(checked_mul(shape.numel(), static_cast<int64_t>(dtype_size(dtype)))),
           "tensor") {}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t(dtype, shape);
  if (t.bytes()) std::memset(t.data(), 0, t.bytes());
  return t;
}

Tensor to_f32(const TensorView& v) {
  Tensor t(DType::kF32, v.shape);
  convert_to_f32(v.dtype, v.data, t.as<float>(), static_cast<size_t>(v.numel()));
  return t;
}

static Tensor permute4(const TensorView& v, bool to_nhwc) {
  HYRT_CHECK(v.shape.rank() == 4 && v.dtype == DType::kF32, kInvalidArgument,
             "layout conversion needs a rank-4 f32 tensor, got ", v.shape.to_string());
  const int64_t n = v.shape[0];
  // Source is [n, a, b, c]; NCHW->NHWC: a=C, b*c = HW. NHWC->NCHW: a*b = HW, c = C.
  const int64_t c = to_nhwc ? v.shape[1] : v.shape[3];
  const int64_t hw = to_nhwc ? v.shape[2] * v.shape[3] : v.shape[1] * v.shape[2];
  Shape out = to_nhwc ? Shape{n, v.shape[2], v.shape[3], c} : Shape{n, c, v.shape[1], v.shape[2]};
  Tensor t(DType::kF32, out);
  const float* s = v.as<float>();
  float* d = t.as<float>();
  for (int64_t b = 0; b < n; ++b) {
    const float* sb = s + b * c * hw;
    float* db = d + b * c * hw;
    for (int64_t i = 0; i < hw; ++i)
      for (int64_t ch = 0; ch < c; ++ch) {
        if (to_nhwc)
          db[i * c + ch] = sb[ch * hw + i];
        else
          db[ch * hw + i] = sb[i * c + ch];
      }
  }
  return t;
}

Tensor nchw_to_nhwc(const TensorView& v) { return permute4(v, true); }
Tensor nhwc_to_nchw(const TensorView& v) { return permute4(v, false); }

}  // namespace hyrt

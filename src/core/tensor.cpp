#include "core/tensor.h"

#include <cstring>

#include "core/alloc.h"
#include "core/error.h"
#include "core/half.h"

namespace hyrt {

namespace {

// Bytes of a dense `dtype` tensor of `shape`; a size past int64 cannot be allocated either.
size_t tensor_bytes(DType dtype, const Shape& shape, std::string_view what) {
  uint64_t n = 1;
  for (int i = 0; i < shape.rank(); ++i) {
    HYRT_CHECK(shape[i] >= 0, kInvalidArgument, what, ": negative dimension in ",
               shape.to_string());
    n = bytes_of(n, static_cast<uint64_t>(shape[i]));
  }
  n = bytes_of(n, dtype_size(dtype));
  if (dtype == DType::kS8Rows) n = storage_bytes(dtype, shape);  // + its row scales; n fits
  if (n > static_cast<uint64_t>(INT64_MAX))
    fail(ErrorCode::kOutOfMemory, "cannot allocate ", what, " of shape ", shape.to_string(), " (",
         dtype_name(dtype), "): its size overflows 64 bits");
  return static_cast<size_t>(n);
}

}  // namespace

Tensor::Tensor(DType dtype, Shape shape, std::string_view what)
    : dtype_(dtype), shape_(shape), buf_(tensor_bytes(dtype, shape, what), what) {}

Tensor Tensor::zeros(DType dtype, Shape shape, std::string_view what) {
  Tensor t(dtype, shape, what);
  if (t.bytes()) std::memset(t.data(), 0, t.bytes());
  return t;
}

Tensor to_f32(const TensorView& v) {
  Tensor t(DType::kF32, v.shape, "an f32 copy of a tensor");
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
  Tensor t(DType::kF32, out, to_nhwc ? "an NHWC copy of a tensor" : "an NCHW copy of a tensor");
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

Tensor nchw_to_nhwc(const TensorView& v) {
  return permute4(v, true);
}
Tensor nhwc_to_nchw(const TensorView& v) {
  return permute4(v, false);
}

}  // namespace hyrt

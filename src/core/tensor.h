// TensorView: a non-owning, dense, row-major view (dtype, shape, pointer).
// Tensor: an owning host tensor (AlignedBuffer + view), for inputs/outputs and tests.
//
// Layout convention (stated once, here): hyrt's internal activations are channels-last.
// Images and feature maps are NHWC [B, H, W, C]; token sequences are [B, T, C]. Model
// files store PyTorch layouts (NCHW activations in golden data, OIHW conv weights,
// [out, in] linear weights); conversions happen at API and weight-loading boundaries.
#pragma once

#include <cstdint>
#include <string_view>

#include "core/buffer.h"
#include "core/dtype.h"
#include "core/shape.h"

namespace hyrt {

struct TensorView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;

  int64_t numel() const { return shape.numel(); }
  size_t bytes() const { return storage_bytes(dtype, shape); }
  template <class T>
  T* as() const {
    return static_cast<T*>(data);
  }
};

// The row scales of an s8rows view (core/dtype.h: after its values, at
// s8rows_scales_offset(numel)); its s8 values are the view's data.
inline float* s8rows_scales(const TensorView& v) {
  return reinterpret_cast<float*>(static_cast<char*>(v.data) + s8rows_scales_offset(v.numel()));
}

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised contents. `what` names the tensor in the kOutOfMemory error a failed
  // allocation throws (with its size in bytes).
  Tensor(DType dtype, Shape shape, std::string_view what = "a tensor");
  static Tensor zeros(DType dtype, Shape shape, std::string_view what = "a tensor");

  TensorView view() const { return {const_cast<void*>(buf_.data()), dtype_, shape_}; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  size_t bytes() const { return storage_bytes(dtype_, shape_); }
  void* data() { return buf_.data(); }
  const void* data() const { return buf_.data(); }
  template <class T>
  T* as() {
    return buf_.as<T>();
  }
  template <class T>
  const T* as() const {
    return buf_.as<T>();
  }

 private:
  DType dtype_ = DType::kF32;
  Shape shape_;
  AlignedBuffer buf_;
};

// Copies a float tensor of any float dtype into a new f32 tensor.
Tensor to_f32(const TensorView& v);
// NCHW <-> NHWC for rank-4 f32 tensors (returns a new tensor).
Tensor nchw_to_nhwc(const TensorView& v);
Tensor nhwc_to_nchw(const TensorView& v);

}  // namespace hyrt

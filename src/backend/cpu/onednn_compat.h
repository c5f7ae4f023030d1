// Internal to the CPU backend: the few oneDNN calls whose spelling differs between oneDNN
// 2.x (Debian 12: 2.6) and 3.x (Debian 13, Ubuntu 24.04), so that the kernels read the same
// on both. The version test lives here and nowhere else.
//
//   oneDNN 2: an operation descriptor (matmul::desc, convolution_forward::desc) is built
//             first and a primitive_desc made from it with the engine and attributes;
//   oneDNN 3: the operation descriptors are gone — primitive_desc takes the engine, the
//             memory descriptors and the attributes directly.
//
// same_layout_as() names oneDNN's layout with a format tag (public API in both), where oneDNN 2
// also allowed editing the C struct of a memory descriptor but oneDNN 3 made that struct an
// opaque handle (and has no call that builds a blocked descriptor from its blocking).
#pragma once

#include <oneapi/dnnl/dnnl_version.h>
#include <dnnl.hpp>

namespace hyrt::backend::cpu {

// matmul: src × weights (+ bias, when `bias` is not the zero descriptor memory::desc()) -> dst.
// Throws dnnl::error when oneDNN has no implementation.
inline dnnl::matmul::primitive_desc make_matmul_pd(
    const dnnl::engine& engine, const dnnl::memory::desc& src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc& bias, const dnnl::memory::desc& dst,
    const dnnl::primitive_attr& attr = dnnl::primitive_attr()) {
#if DNNL_VERSION_MAJOR >= 3
  if (bias.is_zero()) return dnnl::matmul::primitive_desc(engine, src, weights, dst, attr);
  return dnnl::matmul::primitive_desc(engine, src, weights, bias, dst, attr);
#else
  if (bias.is_zero())
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), attr, engine);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, bias, dst), attr, engine);
#endif
}

// Direct forward-inference convolution (+ bias, when `bias` is not the zero descriptor).
// Throws dnnl::error when oneDNN has no implementation.
inline dnnl::convolution_forward::primitive_desc make_conv_pd(
    const dnnl::engine& engine, const dnnl::memory::desc& src, const dnnl::memory::desc& weights,
    const dnnl::memory::desc& bias, const dnnl::memory::desc& dst,
    const dnnl::memory::dims& strides, const dnnl::memory::dims& padding_l,
    const dnnl::memory::dims& padding_r,
    const dnnl::primitive_attr& attr = dnnl::primitive_attr()) {
  const auto prop = dnnl::prop_kind::forward_inference;
  const auto algo = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  if (bias.is_zero())
    return dnnl::convolution_forward::primitive_desc(engine, prop, algo, src, weights, dst, strides,
                                                     padding_l, padding_r, attr);
  return dnnl::convolution_forward::primitive_desc(engine, prop, algo, src, weights, bias, dst,
                                                   strides, padding_l, padding_r, attr);
#else
  if (bias.is_zero())
    return dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(prop, algo, src, weights, dst, strides, padding_l,
                                        padding_r),
        attr, engine);
  return dnnl::convolution_forward::primitive_desc(
      dnnl::convolution_forward::desc(prop, algo, src, weights, bias, dst, strides, padding_l,
                                      padding_r),
      attr, engine);
#endif
}

// The descriptor with `layout`'s dims and element order (its format tag: plain or blocked,
// padding included) and data type `type`, or the zero descriptor when no oneDNN format tag
// describes `layout` exactly: a layout that is not plain/blocked (Winograd, opaque packed
// formats) or carries extra data after the elements (the s8·s8 compensation) never equals
// a descriptor made from a tag. Cost: one descriptor per format tag tried (a few hundred,
// microseconds in all).
inline dnnl::memory::desc same_layout_as(const dnnl::memory::desc& layout,
                                         dnnl::memory::data_type type) {
  using dnnl::memory;
#if DNNL_VERSION_MAJOR >= 3
  const memory::dims dims = layout.get_dims();
  const memory::data_type layout_type = layout.get_data_type();
#else
  const memory::dims dims = layout.dims();
  const memory::data_type layout_type = layout.data_type();
#endif
  for (int t = static_cast<int>(dnnl_a); t < static_cast<int>(dnnl_format_tag_last); ++t) {
    const auto tag = static_cast<memory::format_tag>(t);
    // allow_empty: a tag that does not fit the dims gives, instead of an exception, an
    // empty handle on oneDNN 3 and the zero descriptor on oneDNN 2.
    const memory::desc candidate(dims, layout_type, tag, /*allow_empty=*/true);
#if DNNL_VERSION_MAJOR >= 3
    const bool made = static_cast<bool>(candidate);
#else
    const bool made = !candidate.is_zero();
#endif
    if (made && candidate == layout) return memory::desc(dims, type, tag);
  }
  return memory::desc();
}

// Whether `packed` is oneDNN 2's VNNI layout of s8 matmul weights [k, n] for an s8 source, the
// one int8_common.h's pack_s8_matmul_weights writes by hand: BA16a64b4a — [k, n] padded to 64s,
// 64 x 64 blocks with the K blocks inner, each block [16][64][4] (four consecutive k of one n
// together) — then the s8·s8 compensation, one int32 per column (mask 2). Anything else (other
// ISAs' layouts, oneDNN 3, whose descriptors do not show the compensation) is false.
inline bool is_vnni_s8_matmul_weights(const dnnl::memory::desc& packed, int64_t k, int64_t n) {
#if DNNL_VERSION_MAJOR >= 3
  (void)packed, (void)k, (void)n;
  return false;
#else
  const dnnl_memory_desc_t& d = packed.data;
  if (d.ndims != 2 || d.data_type != dnnl_s8 || d.format_kind != dnnl_blocked || d.offset0 != 0)
    return false;
  const int64_t kp = (k + 63) / 64 * 64, np = (n + 63) / 64 * 64;
  if (d.dims[0] != k || d.dims[1] != n || d.padded_dims[0] != kp || d.padded_dims[1] != np)
    return false;
  const dnnl_blocking_desc_t& b = d.format_desc.blocking;
  if (b.inner_nblks != 3 || b.inner_blks[0] != 16 || b.inner_idxs[0] != 0 ||
      b.inner_blks[1] != 64 || b.inner_idxs[1] != 1 || b.inner_blks[2] != 4 ||
      b.inner_idxs[2] != 0 || b.strides[0] != 64 * 64 || b.strides[1] != kp * 64)
    return false;
  if (d.extra.flags != dnnl_memory_extra_flag_compensation_conv_s8s8 ||
      d.extra.compensation_mask != 2)
    return false;
  return packed.get_size() >= static_cast<size_t>(kp * np + 4 * np);
#endif
}

// Whether `packed` is oneDNN 2's VNNI layout of s8 convolution weights [o, i, kh, kw] for an s8
// source, the one int8_common.h's pack_s8_conv_weights writes by hand: blocks of `*block_o`
// output channels by 4 input channels ([block_o][4], four consecutive input channels of one output
// together), o padded to block_o and i to 4, the outer dims at the strides `strides` (elements),
// then the s8·s8 compensation, one int32 per (padded) output channel (mask 1). oneDNN 3: false.
inline bool is_vnni_s8_conv_weights(const dnnl::memory::desc& packed, const int64_t (&dims)[4],
                                    int64_t* block_o, int64_t (&strides)[4]) {
#if DNNL_VERSION_MAJOR >= 3
  (void)packed, (void)dims, (void)block_o, (void)strides;
  return false;
#else
  const dnnl_memory_desc_t& d = packed.data;
  if (d.ndims != 4 || d.data_type != dnnl_s8 || d.format_kind != dnnl_blocked || d.offset0 != 0)
    return false;
  const dnnl_blocking_desc_t& b = d.format_desc.blocking;
  if (b.inner_nblks != 2 || b.inner_idxs[0] != 0 || b.inner_blks[1] != 4 || b.inner_idxs[1] != 1)
    return false;
  const int64_t bo = b.inner_blks[0];
  if (bo != 16 && bo != 32 && bo != 64) return false;
  const int64_t op = (dims[0] + bo - 1) / bo * bo, ip = (dims[1] + 3) / 4 * 4;
  if (d.dims[0] != dims[0] || d.dims[1] != dims[1] || d.dims[2] != dims[2] ||
      d.dims[3] != dims[3] || d.padded_dims[0] != op || d.padded_dims[1] != ip ||
      d.padded_dims[2] != dims[2] || d.padded_dims[3] != dims[3])
    return false;
  if (d.extra.flags != dnnl_memory_extra_flag_compensation_conv_s8s8 ||
      d.extra.compensation_mask != 1)
    return false;
  if (packed.get_size() < static_cast<size_t>(op * ip * dims[2] * dims[3] + 4 * op)) return false;
  *block_o = bo;
  for (int k = 0; k < 4; ++k)
    strides[k] = b.strides[k];
  return true;
#endif
}

}  // namespace hyrt::backend::cpu

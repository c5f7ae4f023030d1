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

}  // namespace hyrt::backend::cpu

// kConv2d with an "8-bit S" weight q s8 [Co, Ci, kh, kw] (as stored, OIHW) and scales
// s f32 [Co]; x NHWC [B, H, W, Ci] -> y NHWC [B, Ho, Wo, Co]. Modes as in gemm_int8.cpp:
//
// W8A8: x is quantized with one dynamic scale per sample (absmax over its H·W·Ci; the
//   two halves of a classifier-free-guidance batch can differ in magnitude, and the
//   per-sample scale factors out of the conv exactly because no output pixel mixes
//   samples). Per-pixel scales would not factor out: an output pixel sums over kh·kw input pixels,
//   each with its own scale, so Σ a[p]·x̂[p]·q cannot become a·Σ x̂·q — only an explicit
//   im2col (a [B·Ho·Wo, kh·kw·Ci] matrix quantized per row, 9x the activation bytes for
//   3x3) would allow it, and oneDNN's direct conv is what makes int8 worth it. Then an
//   s8·s8 -> s32 convolution (weights packed at prepare for an s8 source, compensation
//   included) writes int32 into the output buffer and our epilogue rewrites it in place as
//   y = acc · (a[b] · s[co]) + bias[co]. The quantized x is written with its zero padding
//   around it (x̂ = 0 there, as for the padding oneDNN would read) and the convolution runs
//   unpadded on it. oneDNN 2.6.3's brgconv on an s8 source with padding (its comp_with_vpads
//   path: the s8·s8 compensation computed per run into its scratchpad, jit_brgemm_conv.cpp's
//   cal_compensation) gets some shapes wrong, and reads scratchpad it never wrote: e.g. SD 1.5's
//   up_blocks.2.resnets.0.conv1 at 512² (Ci 1920, Co 640, 32x32, on AVX512-VNNI without AMX)
//   had every output off by a multiple of 128 and different on each run. Unpadded, the
//   compensation is packed with the weights. Scratch: B·(H+2p)·(W+2p)·Ci bytes + 4·B.
// W8: f32 convolution on the unscaled integers q, widened at run time from an s8 copy in
//   oneDNN's packed f32 layout; epilogue y = acc · s[co] + bias[co].
//   Scratch: one packed f32 layer (≈ 4·Co·Ci·kh·kw bytes). Under FloatPrecision::kBF16 a
//   bf16 convolution instead: the bf16 packed layout's twin widened exactly, x rounded to bf16
//   into scratch (B·H·W·Ci·2 bytes); scratch ≈ 2·Co·Ci·kh·kw bytes for the layer.
// The packed weights, scales and bias are shared through the backend's WeightCache, keyed
// as in gemm_int8.cpp (weight_cache.h).
#include <dnnl.hpp>

#include "backend/cpu/int8_common.h"
#include "core/parallel.h"

namespace hyrt::backend::cpu {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// The stored OIHW s8 weight w [Co, Ci, kh, kw] in `packed`: by hand where that is oneDNN 2's
// VNNI layout for W8A8 (pack_s8_conv_weights_by_hand, straight from OIHW: the UNet's conv2d
// prepare ~985 -> ~780 ms on 2 Zen 4 cores), else by oneDNN's reorder. A kernel wider than 1x1
// goes to that reorder through OHWI: oneDNN 2.6 reorders OIHW s8 into brgconv's blocked
// layouts ~6x slower than OHWI (its jit:uni reorder on 2 Zen 4 cores: 1280² x 3x3 to AcdB32a4b
// with compensation 44 ms from OIHW, 7 ms from OHWI; SD 1.5's UNet spent 1.5 s of its 2.7 s
// prepare there). The same bytes either way; the OHWI copy lives for the reorder only.
AlignedBuffer pack_oihw_s8(const int8_t* w, const Shape& ws, const memory::desc& packed,
                           std::string_view what) {
  // W8A8's layout on AVX-512 VNNI: packed by hand straight from OIHW (int8_common.h).
  const int64_t dims4[4] = {ws[0], ws[1], ws[2], ws[3]};
  if (std::optional<AlignedBuffer> by_hand = pack_s8_conv_weights_by_hand(w, dims4, packed, what))
    return std::move(*by_hand);
  const memory::dims dims{ws[0], ws[1], ws[2], ws[3]};
  if (ws[2] * ws[3] == 1)
    return pack_weights(memory::desc(dims, dt::s8, tag::oihw), w, packed, what);
  const int64_t ci = ws[1], taps = ws[2] * ws[3];
  AlignedBuffer ohwi(static_cast<size_t>(ws.numel()), "an OHWI copy of an s8 convolution weight");
  auto* dst = static_cast<int8_t*>(ohwi.data());
  // Writes in order, reads strided within one output channel's ci·taps bytes (at most 23 KB in
  // SD: in L1/L2). The other nesting (reads in order, each write ci bytes from the last) took
  // ~0.45 s of the UNet's prepare on 2 Zen 4 cores.
  parallel_for(ws[0], 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int8_t* src = w + o * ci * taps;
      int8_t* out = dst + o * taps * ci;
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t i = 0; i < ci; ++i)
          out[t * ci + i] = src[i * taps + t];
    }
  });
  return pack_weights(memory::desc(dims, dt::s8, tag::ohwi), dst, packed, what);
}

class Conv2dInt8Kernel final : public Kernel {
 public:
  Conv2dInt8Kernel(const PrepareContext& ctx, Int8Mode mode, FloatPrecision precision) {
    const Shape& x = ctx.input(0).shape;   // [B, H, W, Ci]
    const Shape& ws = ctx.input(1).shape;  // [Co, Ci, kh, kw]
    const Shape& y = ctx.output().shape;   // [B, Ho, Wo, Co]
    const auto& attrs = ctx.node.attr<ir::Conv2dAttrs>();
    // W8A8 pads x itself (above): the primitive sees the padded x and no padding.
    pre_pad_ = mode == Int8Mode::kW8A8 ? attrs.padding : 0;
    // No bias in the primitive (our epilogue adds it); W8 shares the f32 conv's program.
    shape_ = {x[0],
              x[1] + 2 * pre_pad_,
              x[2] + 2 * pre_pad_,
              x[3],
              ws[0],
              ws[2],
              ws[3],
              y[1],
              y[2],
              attrs.stride,
              attrs.padding - static_cast<int>(pre_pad_),
              false,
              mode == Int8Mode::kW8A8,
              mode == Int8Mode::kW8 && precision == FloatPrecision::kBF16};
    S8Weight w = load_s8_weight(ctx, 1);
    program_ = conv_program(ctx.cache, shape_, ctx.node.name);
    col_scale_ = std::move(w.scale);

    packed_desc_ = program_->pd.weights_desc();
    const memory::desc packed_s8 = shape_.s8 ? packed_desc_ : s8_twin_of(packed_desc_);
    packed_s8_elems_ = static_cast<int64_t>(packed_s8.get_size());  // W8: no extras, 1 B each
    const auto in_elems = static_cast<size_t>(x.numel());
    const auto padded_elems =
        static_cast<size_t>(shape_.batch * shape_.height * shape_.width * shape_.in_channels);
    const auto elems = static_cast<size_t>(packed_s8_elems_);
    scratch_ =
        shape_.s8
            ? Int8RunScratch(padded_elems, static_cast<size_t>(shape_.batch) * sizeof(float), 0)
        : shape_.bf16 ? Int8RunScratch(in_elems * sizeof(uint16_t), 0, elems * sizeof(uint16_t))
                      : Int8RunScratch(0, 0, elems * sizeof(float));
    packed_ = shared_weight(
        ctx, 1,
        shape_.s8     ? "s8 packed for w8a8"
        : shape_.bf16 ? "s8 twin for w8 bf16"
                      : "s8 twin for w8",
        packed_s8,
        [&] { return pack_oihw_s8(w.q, ws, packed_s8, ctx.node.name + " packed s8 weights"); },
        &held_bytes_);
    if (ctx.node.gemm_bias() != ir::kNone) bias_ = shared_weight_f32(ctx, 2);
    epilogue_ = attrs.epilogue;
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    const int64_t height = shape_.height - 2 * pre_pad_, width = shape_.width - 2 * pre_pad_;
    const int64_t in_elems = shape_.batch * height * width * shape_.in_channels;
    const int64_t pixels = shape_.batch * shape_.out_height * shape_.out_width;
    HYRT_ASSERT(inputs[0].numel() == in_elems && output.numel() == pixels * shape_.out_channels);
    const float* bias = bias_ ? bias_->as<float>() : nullptr;
    const GemmEpilogueArgs epilogue = GemmEpilogueArgs::of(epilogue_, inputs);
    const auto* x = inputs[0].as<const float>();
    if (shape_.s8) {
      auto* q = static_cast<int8_t*>(scratch_.activations());
      const int64_t per_sample_in = in_elems / shape_.batch, per_sample_px = pixels / shape_.batch;
      const int64_t per_sample_q = shape_.height * shape_.width * shape_.in_channels;
      float* a = scratch_.row_scales();
      for (int64_t b = 0; b < shape_.batch; ++b)
        a[b] = quantize_image_s8_padded(x + b * per_sample_in, height, width, shape_.in_channels,
                                        pre_pad_, q + b * per_sample_q);
      // acc s32 NHWC lands in the output's bytes and is rewritten there as f32.
      execute_packed(program_->pd, program_->primitive, q, output.data, packed_desc_,
                     packed_->data(), nullptr);
      const int64_t per_sample_out = per_sample_px * shape_.out_channels;
      for (int64_t b = 0; b < shape_.batch; ++b) {
        GemmEpilogueArgs sample = epilogue;
        if (sample.residual) sample.residual += b * per_sample_out;
        dequant_epilogue<int32_t>(output.as<float>() + b * per_sample_out, per_sample_px,
                                  shape_.out_channels, nullptr, a[b], col_scale_->as<float>(), bias,
                                  sample);
      }
    } else if (shape_.bf16) {
      auto* wb = static_cast<uint16_t*>(scratch_.weights());
      widen_s8_to_bf16(packed_->as<int8_t>(), wb, packed_s8_elems_);
      auto* xb = static_cast<uint16_t*>(scratch_.activations());
      round_to_bf16(x, xb, in_elems);
      execute_packed(program_->pd, program_->primitive, xb, output.data, packed_desc_, wb, nullptr);
      dequant_epilogue<float>(output.data, pixels, shape_.out_channels, nullptr, 1.0f,
                              col_scale_->as<float>(), bias, epilogue);
    } else {
      auto* wf = static_cast<float*>(scratch_.weights());
      widen_s8_to_f32(packed_->as<int8_t>(), wf, packed_s8_elems_);
      execute_packed(program_->pd, program_->primitive, const_cast<float*>(x), output.data,
                     packed_desc_, wf, nullptr);
      dequant_epilogue<float>(output.data, pixels, shape_.out_channels, nullptr, 1.0f,
                              col_scale_->as<float>(), bias, epilogue);
    }
  }

  // The weights are the backend's WeightCache's (shared); this kernel's own are only a pack
  // it made in a layout for this shape (weight_cache.h, Accounting).
  size_t held_bytes() const override { return held_bytes_; }

  // The run-time scratch (int8_common.h).
  size_t workspace_bytes() const override { return scratch_.bytes(); }
  void bind_workspace(void* workspace) override { scratch_.bind(workspace); }

 private:
  Int8RunScratch scratch_{0, 0, 0};
  ConvShape shape_{};    // the primitive's: W8A8's x padded by pre_pad_ on each side
  int64_t pre_pad_ = 0;  // W8A8: the conv's padding, written into the quantized x
  ir::GemmEpilogue epilogue_;
  std::shared_ptr<ConvProgram> program_;
  memory::desc packed_desc_;     // the weights layout the primitive reads (s8 or f32)
  int64_t packed_s8_elems_ = 0;  // W8: elements of the s8 twin = of the f32 packed layout
  SharedBuffer packed_;          // W8A8: in packed_desc_; W8: in its s8 twin
  SharedBuffer col_scale_;       // f32 [Co]
  SharedBuffer bias_;            // f32 [Co] or null
  size_t held_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Kernel> make_conv2d_s8_kernel(const PrepareContext& ctx, Int8Mode mode,
                                              FloatPrecision precision) {
  // A 1x1, stride-1, unpadded convolution on NHWC data is a linear layer over channels,
  // [B·H·W, Ci] · [Co, Ci]ᵀ. Run as one, W8A8 gets a quantization scale per pixel rather
  // than per sample: these are SD's residual shortcuts and transformer proj_in/proj_out,
  // which see the un-normalised residual stream, and per-sample scales there cost the
  // UNet ~1.5e-2 of relative L2 error on the golden model (parity --keep conv_shortcut).
  const Shape& w = ctx.input(1).shape;
  const auto& attrs = ctx.node.attr<ir::Conv2dAttrs>();
  if (!conv_runs_bf16(w, false))
    precision = FloatPrecision::kF32;  // as for float weights (conv.cpp)
  if (w.rank() == 4 && w[2] == 1 && w[3] == 1 && attrs.stride == 1 && attrs.padding == 0)
    return make_linear_s8_kernel(ctx, mode, precision);
  return std::make_unique<Conv2dInt8Kernel>(ctx, mode, precision);
}

}  // namespace hyrt::backend::cpu

// kConv2d: oneDNN forward-inference convolution, NHWC source and destination (hyrt's
// activation layout, so no activation reorders), weights stored OIHW and reordered once at
// prepare into the blocked layout oneDNN prefers for this shape (format_tag::any).
// The primitive for a shape is shared through ProgramCache; the packed weights and the bias
// through the backend's WeightCache (one copy per weight and layout, weight_cache.h).
//
// bf16 (FloatPrecision::kBF16): weights packed as bf16 at prepare, the NHWC source rounded to
// bf16 into the kernel's workspace at each run (B·H·W·Cin · 2 bytes), bf16 × bf16 -> f32
// convolution (AMX or AVX-512 BF16) with the f32 bias.
#include <dnnl.hpp>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/onednn_compat.h"

namespace hyrt::backend::cpu {
namespace {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

class Conv2dKernel final : public Kernel {
 public:
  Conv2dKernel(const PrepareContext& ctx, FloatPrecision precision, bool residual_stream_bf16) {
    const Shape& x = ctx.input(0).shape;  // [B, H, W, Cin]
    const Shape& w = ctx.input(1).shape;  // [Cout, Cin, kh, kw]
    const Shape& y = ctx.output().shape;  // [B, Ho, Wo, Cout]
    const auto& attrs = ctx.node.attr<ir::Conv2dAttrs>();
    shape_ = {x[0],
              x[1],
              x[2],
              x[3],
              w[0],
              w[2],
              w[3],
              y[1],
              y[2],
              attrs.stride,
              attrs.padding,
              ctx.node.gemm_bias() != ir::kNone,
              false,
              precision == FloatPrecision::kBF16 && conv_runs_bf16(w, residual_stream_bf16)};
    if (shape_.bf16)
      workspace_ = KernelWorkspace(static_cast<size_t>(ctx.input(0).shape.numel()) * 2,
                                   "conv2d bf16 source");
    program_ = conv_program(ctx.cache, shape_, ctx.node.name);

    packed_desc_ = program_->pd.weights_desc();
    const memory::desc stored({w[0], w[1], w[2], w[3]}, dt::f32, tag::oihw);
    packed_weights_ =
        PackedFloatWeight(ctx, 1, stored, packed_desc_, precision, shape_.bf16, &held_bytes_);
    // Never with bf16 (which rounds the source into the workspace): the widened pack's.
    if (const size_t widened = packed_weights_.workspace_bytes())
      workspace_ = KernelWorkspace(widened, "conv2d f32 pack widened");
    if (shape_.bias) bias_ = shared_weight_f32(ctx, 2);
    epilogue_ = attrs.epilogue;
  }

  void run(std::span<const TensorView> inputs, const TensorView& output) override {
    void* x = inputs[0].data;
    if (shape_.bf16) {
      x = workspace_.get();
      round_to_bf16(inputs[0].as<const float>(), static_cast<uint16_t*>(x), inputs[0].numel());
    }
    execute_packed(program_->pd, program_->primitive, x, output.data, packed_desc_,
                   packed_weights_.data(workspace_.get()), bias_ ? bias_->as<float>() : nullptr);
    if (!epilogue_.empty())
      apply_gemm_epilogue(output.as<float>(), output.numel(),
                          GemmEpilogueArgs::of(epilogue_, inputs));
  }

  // The weights are the backend's WeightCache's (shared); this kernel's own are only a pack
  // it made in a layout for this shape (weight_cache.h, Accounting).
  size_t held_bytes() const override { return held_bytes_; }

  // bf16: the source rounded at each run; a 16-bit-held f32 pack: that pack widened.
  size_t workspace_bytes() const override { return workspace_.bytes(); }
  void bind_workspace(void* workspace) override { workspace_.bind(workspace); }

 private:
  ConvShape shape_{};
  KernelWorkspace workspace_{0, ""};  // bf16: the source [B, H, W, Cin]; or the widened pack
  ir::GemmEpilogue epilogue_;
  std::shared_ptr<ConvProgram> program_;
  memory::desc packed_desc_;
  PackedFloatWeight packed_weights_;  // in packed_desc_
  SharedBuffer bias_;                 // f32 [Cout] or null
  size_t held_bytes_ = 0;
};

}  // namespace

// Staying f32 under bf16:
//  - fewer than kBf16MinChannels input or output channels: the models' conv_in (4 latent
//    channels in) and conv_out (4 or 3 out), a sliver of the work, where rounding reaches the
//    result most directly (the UNet's prediction, the decoded pixels);
//  - 1x1 kernels: SD's residual shortcuts and transformer proj_in/proj_out, which mix the
//    channels of the un-normalised residual stream, so rounding their input rounds the stream
//    itself. On the golden SD 1.5 model they were half of the UNet's bf16 error (1.1e-2 -> 5.4e-3
//    relative L2 with them in f32) for ~3 % of the UNet's FLOPs (+5 % step time at 512²).
//    Unless `residual_stream_bf16`: beside W8A8's own error they are noise (cpu_backend.cpp).
bool conv_runs_bf16(const Shape& w, bool residual_stream_bf16) {
  constexpr int64_t kBf16MinChannels = 16;
  return w[0] >= kBf16MinChannels && w[1] >= kBf16MinChannels &&
         (residual_stream_bf16 || w[2] * w[3] > 1);
}

std::string ConvShape::key() const {
  return str_cat("conv2d ",
                 s8     ? "s8s8s32"
                 : bf16 ? "bf16bf16f32"
                        : "f32",
                 " nhwc b=", batch, " h=", height, " w=", width, " ci=", in_channels,
                 " co=", out_channels, " k=", kernel_h, "x", kernel_w, " s=", stride,
                 " p=", padding, " bias=", bias ? 1 : 0);
}

std::shared_ptr<ConvProgram> conv_program(ProgramCache& cache, const ConvShape& s,
                                          const std::string& what) {
  const std::string name = s.key();
  return cache.get_or_create<ConvProgram>(name, [&] {
    const dt a = s.s8 ? dt::s8 : s.bf16 ? dt::bf16 : dt::f32, o = s.s8 ? dt::s32 : dt::f32;
    // oneDNN describes activations as logical NCHW dims with an nhwc memory layout.
    const memory::desc src({s.batch, s.in_channels, s.height, s.width}, a, tag::nhwc);
    const memory::desc weights({s.out_channels, s.in_channels, s.kernel_h, s.kernel_w}, a,
                               tag::any);
    const memory::desc bias =
        s.bias ? memory::desc({s.out_channels}, dt::f32, tag::a) : memory::desc();
    const memory::desc dst({s.batch, s.out_channels, s.out_height, s.out_width}, o, tag::nhwc);
    const memory::dims strides{s.stride, s.stride};
    const memory::dims padding{s.padding, s.padding};
    auto program = std::make_shared<ConvProgram>();
    try {
      program->pd = make_conv_pd(dnnl_engine(), src, weights, bias, dst, strides, padding, padding);
    } catch (const dnnl::error& e) {
      fail(ErrorCode::kUnsupported, what, " (", name, "): oneDNN has no implementation (", e.what(),
           ")");
    }
    refuse_reference_impl(program->pd.impl_info_str(), what + " (" + name + ")");
    program->primitive = dnnl::convolution_forward(program->pd);
    return program;
  });
}

std::unique_ptr<Kernel> make_conv2d_kernel(const PrepareContext& ctx, FloatPrecision precision,
                                           bool residual_stream_bf16) {
  return std::make_unique<Conv2dKernel>(ctx, precision, residual_stream_bf16);
}

}  // namespace hyrt::backend::cpu

// Internal to the CPU backend: what the "8-bit S" linear and conv kernels
// (gemm_int8.cpp, conv_int8.cpp) share — loading s8 weights with their per-row scales,
// the run-time activation quantizer, the dequantizing epilogue and the run-time scratch.
//
// Quantization rule (the op tests replicate it bit for bit, so keep them in sync):
//   absmax = max |x| over the group (a row of x for linear, one sample [H, W, Ci] for conv);
//   absmax == 0: scale = 0, q = 0;
//   else: inv = 127.0f / absmax, scale = absmax / 127.0f (both f32),
//         q = clamp(round_half_even(x · inv), -127, 127), x · inv computed in f32.
// Non-finite activations are not detected: an Inf makes every q of its group 0 and a NaN
// gives unspecified q (the f32 path would propagate them; the graph is broken either way).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "backend/cpu/cpu_kernels.h"

namespace hyrt::backend::cpu {

// An s8 weight (input 1 of the node) with its per-output-row scales, read from the
// WeightSource at prepare. `q` points into the source (read only during prepare, and only
// when a kernel packs it: a WeightCache hit reads nothing); `scale` is an aligned f32 copy
// shared through the backend's WeightCache. Throws kInvalidModel naming the weight when the
// stored tensor differs from the graph's, or its scale is missing, not f32, or not [rows].
struct S8Weight {
  const int8_t* q = nullptr;
  int64_t rows = 0, cols = 0;  // rows = dim 0 (output channels), cols = the rest
  SharedBuffer scale;          // f32 [rows]
};
S8Weight load_s8_weight(const PrepareContext& ctx, size_t i);

// x [rows, cols] f32 -> q [rows, cols] s8 with one scale per row (scales [rows]).
void quantize_rows_s8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales);

// A linear's stored 8-bit S weight q [n, k] (row-major, PyTorch's [out, in]) in `packed`, the
// layout its s8-source matmul reads (pd.weights_desc() of [k, n]): by hand where that is oneDNN
// 2's VNNI layout (is_vnni_s8_matmul_weights: every SD layer on AVX-512 VNNI), else by a oneDNN
// reorder. Why by hand: oneDNN 2.6 has only its `simple:any` reorder into that layout with the
// compensation, single-threaded, ~3 ms per SD 1.5 layer on 2 Zen 4 cores (0.5 s of the UNet's
// prepare). pack_s8_matmul_weights_by_hand is that path alone (nullopt where it does not apply),
// for tests to compare byte for byte with oneDNN's.
AlignedBuffer pack_s8_matmul_weights(const int8_t* q, int64_t n, int64_t k,
                                     const dnnl::memory::desc& packed, std::string_view what);
// The same for a convolution's stored q [o, i, kh, kw] (OIHW) in the layout its s8-source
// convolution reads, where that is oneDNN 2's VNNI one (is_vnni_s8_conv_weights; SD's 3x3 convs on
// AVX-512 VNNI); nullopt elsewhere (the caller reorders through oneDNN).
std::optional<AlignedBuffer> pack_s8_conv_weights_by_hand(const int8_t* q, const int64_t (&dims)[4],
                                                          const dnnl::memory::desc& packed,
                                                          std::string_view what);
std::optional<AlignedBuffer> pack_s8_matmul_weights_by_hand(const int8_t* q, int64_t n, int64_t k,
                                                            const dnnl::memory::desc& packed,
                                                            std::string_view what);
// x [n] f32 -> q [n] s8 with one scale for the whole tensor; returns that scale.
float quantize_tensor_s8(const float* x, int64_t n, int8_t* q);
// x [h, w, c] f32 -> q [h + 2·pad, w + 2·pad, c] s8: x quantized as by quantize_tensor_s8 (one
// scale for the whole of x, the same q) inside a border of `pad` zeros on every side, which
// this writes too; returns the scale.
float quantize_image_s8_padded(const float* x, int64_t h, int64_t w, int64_t c, int64_t pad,
                               int8_t* q);

// In-place epilogue over a dense [rows, cols] block `io` holding accumulators of type
// Acc (int32_t or float), rewritten as f32:
//   io[r, c] = act(float(acc[r, c]) · (row_scale(r) · col_scale[c]) + bias[c]) + res[r, c]
// row_scale(r) = row_scales[r] when row_scales is non-null, else `uniform_row_scale`.
// bias may be null; act and res are the node's fused epilogue (GemmEpilogueArgs, res
// dense [rows, cols] from epilogue.residual, which may be null). Each element is read
// before it is written, so int32 -> f32 in the same bytes is safe. With epilogue.geglu_out
// the rows are gated instead (ir::GemmEpilogue::geglu): geglu_out [rows, cols / 2] =
// y[:, :cols/2] · gelu(y[:, cols/2:]) of the values above (io is only read).
template <class Acc>
void dequant_epilogue(void* io, int64_t rows, int64_t cols, const float* row_scales,
                      float uniform_row_scale, const float* col_scale, const float* bias,
                      const GemmEpilogueArgs& epilogue = {});

// An int8 kernel's run-time scratch: the quantized or bf16-rounded activations, their row
// scales, W8's widened weights — each sized for this node, at 64-byte-aligned offsets of one
// workspace that the executor plans into the arena (Kernel::workspace_bytes), so it costs
// only where the activations leave room, rather than the largest layer's need resident
// through the whole process (~10 MiB for an int8 SD 1.5 UNet's W8A8 activations).
class Int8RunScratch {
 public:
  Int8RunScratch(size_t activation_bytes, size_t row_scale_bytes, size_t weight_bytes)
      : scales_at_(align_up(activation_bytes)),
        weights_at_(scales_at_ + align_up(row_scale_bytes)),
        workspace_(weights_at_ + align_up(weight_bytes), "int8 run scratch") {}
  size_t bytes() const { return workspace_.bytes(); }
  void bind(void* workspace) { workspace_.bind(workspace); }
  void* activations() { return workspace_.get(); }
  float* row_scales() { return reinterpret_cast<float*>(base() + scales_at_); }
  void* weights() { return base() + weights_at_; }

 private:
  uint8_t* base() { return static_cast<uint8_t*>(workspace_.get()); }
  size_t scales_at_, weights_at_;
  KernelWorkspace workspace_;
};

// Run-time expansion for W8: dst[i] = float(src[i]) over a packed buffer (parallel); the bf16
// form (FloatPrecision::kBF16) is exact too (|q| <= 127 fits bf16's 8 significant bits).
void widen_s8_to_f32(const int8_t* src, float* dst, int64_t n);
void widen_s8_to_bf16(const int8_t* src, uint16_t* dst, int64_t n);

// A copy of `wide_desc` (a packed weights layout oneDNN chose for f32 or bf16) describing the
// same element order with s8 elements, so an s8 buffer in it widens elementwise into the wide
// packed layout. Throws kUnsupported if the layout is not plain/blocked (no oneDNN format
// tag describes it) or carries extra data (compensation).
dnnl::memory::desc s8_twin_of(const dnnl::memory::desc& wide_desc);

}  // namespace hyrt::backend::cpu

// The operator set of hyrt's graph IR and each operator's attributes and contract.
//
// Layout: activations are channels-last (see core/tensor.h). Shapes below use
// B = batch, T = tokens, H/W = spatial, C = channels, N = output features, K = input
// features. Weights appear as graph values of kind kWeight, in their stored layout.
#pragma once

#include <cstdint>
#include <string_view>
#include <variant>

#include "core/shape.h"

namespace hyrt::ir {

enum class OpKind : uint8_t {
  kLinear,           // x [..., K], w [N, K], optional bias [N], optional residual [..., N]
                     //   -> [..., N]; optional LinearAttrs (a fused GemmEpilogue). x may be
                     //   s8rows (quantized by its producer): the output is then of the graph's
                     //   activation dtype
  kConv2d,           // x [B, H, W, Cin], w [Cout, Cin, kh, kw] (OIHW), optional bias [Cout],
                     //   optional residual [B, Ho, Wo, Cout] -> [B, Ho, Wo, Cout]; Conv2dAttrs
                     //   (square stride and padding, a fused GemmEpilogue)
  kGroupNorm,        // x [B, ..., C], gamma [C], beta [C] -> same; statistics over all non-batch
                     //   positions of each group of C/groups channels; NormAttrs (+ fused SiLU)
  kLayerNorm,        // x [..., C], gamma [C], beta [C] -> same; NormAttrs (groups unused); with
                     //   NormAttrs::quantize_output the output is s8rows (core/dtype.h)
  kAttention,        // q [B, Tq, heads*D], k [B, Tk, heads*D], v [B, Tk, heads*Dv]
                     //   -> [B, Tq, heads*Dv]; softmax(q kᵀ · scale [+ causal mask]) v per head;
                     //   with AttentionAttrs::packed_qkv one input qkv [B, T, 3*heads*D] instead
  kSoftmax,          // over the last axis
  kGelu,             // x · Φ(x) (erf form, as torch.nn.functional.gelu)
  kGeglu,            // x [..., 2N] -> [..., N]: x[..., :N] · gelu(x[..., N:]) (diffusers GEGLU);
                     //   optional GegluAttrs (with quantize_output the output is s8rows)
  kQuickGelu,        // x · sigmoid(1.702 x) (CLIP)
  kSilu,             // x · sigmoid(x)
  kAdd,              // a + b, numpy broadcasting of b onto a's shape (output shape = a's)
  kMul,              // a · b, same broadcasting as kAdd
  kScale,            // x · alpha + beta; ScaleAttrs
  kConcat,           // inputs concatenated along ConcatAttrs::axis
  kUpsampleNearest,  // x [B, H, W, C] -> [B, Ho, Wo, C], nearest neighbour (PyTorch's
                     //   "nearest": src = floor(dst · in/out)); UpsampleAttrs, default 2x
  kTimestepEmbedding,  // t [B] (f32) -> [B, dim] sinusoidal; TimestepAttrs
  kEmbedding,          // ids [...] (s32), table [V, C] -> [..., C]
  kReshape,            // same elements, ReshapeAttrs::shape; a view: no data moves
  kPermute,            // axes permuted by PermuteAttrs::perm (output dim i = input dim perm[i])
  kSlice,              // x[..., start : start + length, ...] along SliceAttrs::axis (a copy)
  kRelu,               // max(x, 0)
  kTanh,               // tanh(x)
};

inline constexpr int kNumOpKinds = static_cast<int>(OpKind::kTanh) + 1;  // the last kind

std::string_view op_name(OpKind op);

// What a linear or conv2d node does to its GEMM result before writing it, in this order:
//   y = activation(x · wᵀ + bias) + residual
// (and for linear, optionally a low-rank term before the activation: GemmEpilogue::low_rank)
// The residual, when present, is the node's last input, with the output's shape and dtype
// (no broadcasting); the bias, when present, is input 2. Graph builders write the plain
// ops (linear, then silu, then add); plan::fuse_epilogues folds them into the GEMM node
// where the backend that runs both says it can (it saves the output's round trip through
// memory).
enum class Activation : uint8_t { kNone, kSilu, kGelu, kQuickGelu, kRelu };

// "none", "silu", "gelu", "quick_gelu", "relu".
std::string_view activation_name(Activation a);

// Linear only, a low-rank term inside the activation (a LoRA's side path folded into the
// layer it adapts):
//   y = activation(x · wᵀ + bias + (x · downᵀ) · upᵀ) + residual
// with down [R, K] and up [N, R] weights, as inputs after the bias and before the residual. It
// saves the side path's two products' round trips through memory and their launches.
//
// Linear only, a gated output (diffusers' GEGLU folded into the projection before it): the GEMM
// result r = x · wᵀ + bias [..., 2N] is split into halves and the node writes
//   y = r[..., :N] · gelu(r[..., N:])   -> [..., N]
// (kGeglu's formula), with no activation or residual beside it. A low-rank term may come with
// it (a LoRA on the projection): it is added to r, before the gate. It saves the 2N-wide
// result's round trip through memory.
struct GemmEpilogue {
  Activation activation = Activation::kNone;
  bool residual = false;
  bool low_rank = false;
  bool geglu = false;
  bool empty() const { return activation == Activation::kNone && !residual && !low_rank && !geglu; }
};

struct LinearAttrs {
  GemmEpilogue epilogue{};
  // Stacked projections: the node's weights are inputs 1..weights, each [N_i, K] of one dtype,
  // and its output is their products side by side, [..., N_1 + ... + N_weights] in input order —
  // one GEMM over the weights' rows as if concatenated (plan::stack_projections: a self-
  // attention's q, k and v from one x, one launch that fills the machine instead of three that
  // each leave most of a wave idle). A stacked linear (weights > 1) has no bias and an empty
  // epilogue; the weights stay separate graph values (each stored, counted and named as it was).
  int weights = 1;
};

struct Conv2dAttrs {
  int stride = 1;
  int padding = 0;
  GemmEpilogue epilogue{};
};

struct NormAttrs {
  int groups = 1;  // group norm only
  float eps = 1e-5f;
  bool fuse_silu = false;  // group norm only: apply SiLU to the normalised output
  // The output is held quantized, DType::kS8Rows (plan::quantize_activations sets it); only a
  // linear or conv2d may read such a value, as its x. Each value is the normalised (and, with
  // fuse_silu, activated) value rounded to the float dtype of x, as a float output would hold
  // it, then quantized by the W8A8 rule against a scale:
  //  - layer norm: one per row, from the row's largest magnitude — for linears that would each
  //    quantize the row again;
  //  - group norm: one per sample (image), written as the scale of each of its rows — for
  //    convolutions that quantize their whole input per image (the CUDA backend's implicit-GEMM
  //    conv). The scale is a bound on the sample's largest magnitude taken from each channel's
  //    smallest and largest input (the output is monotone in x on each side of SiLU's minimum):
  //    the exact largest magnitude wherever it lies at a channel's extreme, as it always does
  //    without SiLU; where SiLU's minimum falls inside a channel's range the bound counts that
  //    minimum's magnitude (~0.278) — never below the true largest magnitude, so nothing clips.
  bool quantize_output = false;
};

// GEGLU's (optional): the output held quantized, DType::kS8Rows, exactly as NormAttrs::
// quantize_output — each gated row rounded to the float dtype of x, then quantized by the W8A8
// rule — for the linear after it (plan::quantize_activations sets it).
struct GegluAttrs {
  bool quantize_output = false;
};

struct AttentionAttrs {
  int heads = 1;
  float scale = 0.0f;   // 0 means 1/sqrt(D)
  bool causal = false;  // mask key j > query i (CLIP's text encoder)
  // One input qkv [B, T, 3·heads·D] holding q, k and v side by side along its last axis (columns
  // [0, W), [W, 2W), [2W, 3W) with W = heads·D: a stacked linear's output,
  // plan::stack_projections) instead of three; self-attention only (Tq = Tk, Dv = D).
  bool packed_qkv = false;
};

struct ScaleAttrs {
  float alpha = 1.0f;
  float beta = 0.0f;
};

struct ConcatAttrs {
  int axis = -1;  // negative counts from the back
};

struct SliceAttrs {
  int axis = 0;  // negative counts from the back
  int64_t start = 0;
  int64_t length = 0;
};

struct TimestepAttrs {
  int dim = 0;
  bool flip_sin_to_cos = true;  // [cos, sin] instead of [sin, cos]
  float downscale_freq_shift = 0.0f;
  float max_period = 10000.0f;
};

struct UpsampleAttrs {
  int64_t out_height = 0;  // 0: twice the input
  int64_t out_width = 0;
};

struct ReshapeAttrs {
  Shape shape;  // may contain one -1
};

struct PermuteAttrs {
  Shape perm;
};

using Attrs = std::variant<std::monostate, Conv2dAttrs, NormAttrs, AttentionAttrs, ScaleAttrs,
                           ConcatAttrs, TimestepAttrs, UpsampleAttrs, ReshapeAttrs, PermuteAttrs,
                           SliceAttrs, LinearAttrs, GegluAttrs>;

// The fused epilogue of a linear or conv2d node's attributes (empty for any other attrs:
// a linear without LinearAttrs has none).
GemmEpilogue gemm_epilogue(const Attrs& attrs);
// The number of weight inputs of a linear node with these attributes (LinearAttrs::weights; 1
// for any other attrs).
int gemm_weights(const Attrs& attrs);
// Whether an attention node with these attributes reads one packed qkv input
// (AttentionAttrs::packed_qkv).
bool packed_qkv(const Attrs& attrs);

// Whether a node with these attributes writes its output quantized (s8rows): a layer norm's
// or GEGLU's quantize_output.
bool quantizes_output(const Attrs& attrs);

// Static properties of an op kind that the planner and backends rely on.
struct OpTraits {
  bool gemm_class;   // linear, conv, attention: what a GEMM-only accelerator runs
  bool elementwise;  // output element i depends only on input element i (broadcasts aside)
  // Output may share input 0's memory (the kernel then runs with out == in[0]). Every
  // backend must implement these ops so that they are correct in place.
  bool in_place_input0;
  bool view;  // output is input 0 reinterpreted (reshape): no kernel work
};

OpTraits op_traits(OpKind op);

}  // namespace hyrt::ir

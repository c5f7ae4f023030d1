#include "ir/op.h"

namespace hyrt::ir {

std::string_view op_name(OpKind op) {
  switch (op) {
    case OpKind::kLinear:
      return "linear";
    case OpKind::kConv2d:
      return "conv2d";
    case OpKind::kGroupNorm:
      return "group_norm";
    case OpKind::kLayerNorm:
      return "layer_norm";
    case OpKind::kAttention:
      return "attention";
    case OpKind::kSoftmax:
      return "softmax";
    case OpKind::kGelu:
      return "gelu";
    case OpKind::kGeglu:
      return "geglu";
    case OpKind::kQuickGelu:
      return "quick_gelu";
    case OpKind::kSilu:
      return "silu";
    case OpKind::kAdd:
      return "add";
    case OpKind::kMul:
      return "mul";
    case OpKind::kScale:
      return "scale";
    case OpKind::kConcat:
      return "concat";
    case OpKind::kUpsampleNearest:
      return "upsample_nearest";
    case OpKind::kTimestepEmbedding:
      return "timestep_embedding";
    case OpKind::kEmbedding:
      return "embedding";
    case OpKind::kReshape:
      return "reshape";
    case OpKind::kPermute:
      return "permute";
    case OpKind::kSlice:
      return "slice";
    case OpKind::kRelu:
      return "relu";
    case OpKind::kTanh:
      return "tanh";
  }
  return "?";
}

std::string_view activation_name(Activation a) {
  switch (a) {
    case Activation::kNone:
      return "none";
    case Activation::kSilu:
      return "silu";
    case Activation::kGelu:
      return "gelu";
    case Activation::kQuickGelu:
      return "quick_gelu";
    case Activation::kRelu:
      return "relu";
  }
  return "?";
}

GemmEpilogue gemm_epilogue(const Attrs& attrs) {
  if (const auto* l = std::get_if<LinearAttrs>(&attrs)) return l->epilogue;
  if (const auto* c = std::get_if<Conv2dAttrs>(&attrs)) return c->epilogue;
  return {};
}

int gemm_weights(const Attrs& attrs) {
  if (const auto* l = std::get_if<LinearAttrs>(&attrs)) return l->weights;
  return 1;
}

bool packed_qkv(const Attrs& attrs) {
  if (const auto* a = std::get_if<AttentionAttrs>(&attrs)) return a->packed_qkv;
  return false;
}

bool quantizes_output(const Attrs& attrs) {
  if (const auto* n = std::get_if<NormAttrs>(&attrs)) return n->quantize_output;
  if (const auto* g = std::get_if<GegluAttrs>(&attrs)) return g->quantize_output;
  return false;
}

OpTraits op_traits(OpKind op) {
  //                  gemm   elementwise in_place view
  switch (op) {
    case OpKind::kLinear:
    case OpKind::kConv2d:
    case OpKind::kAttention:
      return {true, false, false, false};
    // Norms read a whole row/group for their statistics before writing it, so they can
    // overwrite their input; softmax likewise per row.
    case OpKind::kGroupNorm:
    case OpKind::kLayerNorm:
    case OpKind::kSoftmax:
      return {false, false, true, false};
    case OpKind::kGelu:
    case OpKind::kQuickGelu:
    case OpKind::kSilu:
    case OpKind::kRelu:
    case OpKind::kTanh:
    case OpKind::kScale:
    case OpKind::kAdd:
    case OpKind::kMul:
      return {false, true, true, false};
    case OpKind::kReshape:
      return {false, false, false, true};
    case OpKind::kGeglu:
    case OpKind::kConcat:
    case OpKind::kUpsampleNearest:
    case OpKind::kTimestepEmbedding:
    case OpKind::kEmbedding:
    case OpKind::kPermute:
    case OpKind::kSlice:
      return {false, false, false, false};
  }
  return {false, false, false, false};
}

}  // namespace hyrt::ir

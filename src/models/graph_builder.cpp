#include "models/graph_builder.h"

#include "core/error.h"

namespace hyrt::models {

GraphBuilder::GraphBuilder(ir::Graph& graph, const weights::WeightSource& weights, std::string root)
    : graph_(graph), weights_(weights), prefix_(root.empty() ? "" : root + ".") {}

GraphBuilder::Scope::Scope(GraphBuilder& b, const std::string& name)
    : b_(b), saved_(b.prefix_.size()) {
  b_.prefix_ += name + ".";
}
GraphBuilder::Scope::~Scope() {
  b_.prefix_.resize(saved_);
}

std::string GraphBuilder::scoped(const std::string& leaf) const {
  return prefix_ + leaf;
}

std::string GraphBuilder::name(const std::string& leaf) const {
  return scoped(leaf);
}

bool GraphBuilder::has_weight(const std::string& leaf) const {
  return weights_.contains(scoped(leaf));
}

ValueId GraphBuilder::weight(const std::string& leaf) {
  const std::string full = scoped(leaf);
  if (auto it = weight_ids_.find(full); it != weight_ids_.end()) return it->second;
  HYRT_CHECK(weights_.contains(full), kNotFound, "the checkpoint has no tensor '", full, "'");
  const TensorView v = weights_.get(full);
  const ValueId id = graph_.add_weight(full, v.dtype, v.shape);
  weight_ids_.emplace(full, id);
  return id;
}

ValueId GraphBuilder::op(ir::OpKind kind, std::vector<ValueId> inputs, ir::Attrs attrs) {
  // Node names: "<scope>.<op>#<n>" — unique, and they say where in the model a node is.
  std::string base = prefix_ + std::string(ir::op_name(kind));
  const int n = op_counts_[base]++;
  if (n) base += "#" + std::to_string(n);
  const ValueId out = graph_.add_node(kind, std::move(inputs), std::move(attrs), std::move(base));
  if (wide_range_) graph_.set_wide_range(out);
  return out;
}

ValueId GraphBuilder::linear(ValueId x, const std::string& leaf, bool bias) {
  Scope s(*this, leaf);
  const ValueId side = lora_side(x, nullptr);
  std::vector<ValueId> in{x, weight("weight")};
  if (bias) in.push_back(weight("bias"));
  const ValueId y = op(ir::OpKind::kLinear, std::move(in));
  return side == ir::kNone ? y : add(y, side);
}

ValueId GraphBuilder::conv2d(ValueId x, const std::string& leaf, int stride, int padding) {
  Scope s(*this, leaf);
  const ValueId w = weight("weight");
  if (padding < 0) padding = static_cast<int>(graph_.value(w).shape[2] / 2);
  const ir::Conv2dAttrs attrs{stride, padding};
  const ValueId side = lora_side(x, &attrs);
  std::vector<ValueId> in{x, w};
  if (has_weight("bias")) in.push_back(weight("bias"));
  const ValueId y = op(ir::OpKind::kConv2d, std::move(in), attrs);
  return side == ir::kNone ? y : add(y, side);
}

ValueId GraphBuilder::lora_side(ValueId x, const ir::Conv2dAttrs* conv) {
  // The names weights::LoraWeights gives a module's adapters (lora_down_name/lora_up_name).
  if (!has_weight("lora_side.down")) return ir::kNone;
  const Shape layer_w = graph_.value(weight("weight")).shape;
  Scope s(*this, "lora_side");
  const ValueId down = weight("down"), up = weight("up");
  // Emitted before the layer's GEMM, so epilogue fusion folds the add that joins the two into
  // the up projection (the layer's output as its residual): a GEMM with K = rank, where the
  // extra read costs least.
  if (!conv) return op(ir::OpKind::kLinear, {op(ir::OpKind::kLinear, {x, down}), up});
  // down keeps its kernel (1x1 or the layer's): centred on the same input positions as the
  // layer's own kernel, so its padding is the layer's less the half-size difference.
  const int64_t kd = shape(down)[2];
  const int pad = conv->padding - static_cast<int>((layer_w[2] - kd) / 2);
  HYRT_CHECK(pad >= 0, kInvalidArgument, "a LoRA's ", kd, "x", kd, " down kernel does not fit ",
             name("down"));
  const ValueId d = op(ir::OpKind::kConv2d, {x, down}, ir::Conv2dAttrs{conv->stride, pad});
  return op(ir::OpKind::kConv2d, {d, up}, ir::Conv2dAttrs{1, 0});
}

ValueId GraphBuilder::group_norm(ValueId x, const std::string& leaf, int groups, float eps,
                                 bool silu) {
  Scope s(*this, leaf);
  return op(ir::OpKind::kGroupNorm, {x, weight("weight"), weight("bias")},
            ir::NormAttrs{groups, eps, silu});
}

ValueId GraphBuilder::layer_norm(ValueId x, const std::string& leaf, float eps) {
  Scope s(*this, leaf);
  return op(ir::OpKind::kLayerNorm, {x, weight("weight"), weight("bias")},
            ir::NormAttrs{1, eps, false});
}

ValueId GraphBuilder::attention(ValueId q, ValueId k, ValueId v, int heads, bool causal) {
  return op(ir::OpKind::kAttention, {q, k, v}, ir::AttentionAttrs{heads, 0.0f, causal});
}

void GraphBuilder::tap(ValueId v, const std::string& tap_name) {
  if (taps_enabled_) taps_.emplace_back(tap_name, v);
}

std::vector<std::pair<std::string, ValueId>> GraphBuilder::finish(ValueId main_output) {
  graph_.mark_output(main_output);
  for (const auto& [name, v] : taps_)
    graph_.mark_output(v);
  return taps_;
}

}  // namespace hyrt::models

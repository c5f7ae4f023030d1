// GraphBuilder — the helper every model block family uses to emit IR: it scopes weight
// names ("down_blocks.0" / "resnets.1" / "conv1.weight"), adds each named weight once
// with the dtype and shape the checkpoint stores, and wraps the op constructors so block
// code reads like the diffusers module it mirrors.
//
// The builder reads only metadata (dtype, shape) from the WeightSource; no weight data
// is touched while building a graph. Not thread-safe; one builder per graph.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "ir/graph.h"
#include "weights/weight_source.h"

namespace hyrt::models {

using ir::ValueId;

class GraphBuilder {
 public:
  // `root` is the component prefix of every weight name, e.g. "unet".
  GraphBuilder(ir::Graph& graph, const weights::WeightSource& weights, std::string root);

  ir::Graph& graph() { return graph_; }

  // RAII name scope: GraphBuilder::Scope s(b, "resnets.1");
  class Scope {
   public:
    Scope(GraphBuilder& b, const std::string& name);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    GraphBuilder& b_;
    size_t saved_;
  };

  // Full name of `leaf` in the current scope: "<root>.<scopes>.<leaf>".
  std::string name(const std::string& leaf) const;
  // The weight `leaf` in the current scope (added on first use). Throws kNotFound
  // naming the full key if the checkpoint lacks it.
  ValueId weight(const std::string& leaf);
  bool has_weight(const std::string& leaf) const;

  // Ops. `leaf` names the module whose weights are used ("to_q" -> to_q.weight/.bias).
  // linear and conv2d add a LoRA side path when the weights hold adapters for the module
  // (`<module>.lora_side.down` / `.up`, weights::LoraWeights): y = layer(x) + up(down(x)),
  // the down a linear (or a convolution with the layer's stride), the up a linear (1x1
  // convolution); scales are folded into up.
  ValueId linear(ValueId x, const std::string& leaf, bool bias = true);
  ValueId conv2d(ValueId x, const std::string& leaf, int stride = 1, int padding = -1);  // -1: k/2
  ValueId group_norm(ValueId x, const std::string& leaf, int groups, float eps, bool silu);
  ValueId layer_norm(ValueId x, const std::string& leaf, float eps);
  ValueId attention(ValueId q, ValueId k, ValueId v, int heads, bool causal = false);
  ValueId op(ir::OpKind kind, std::vector<ValueId> inputs, ir::Attrs attrs = {});
  ValueId add(ValueId a, ValueId b) { return op(ir::OpKind::kAdd, {a, b}); }
  ValueId silu(ValueId x) { return op(ir::OpKind::kSilu, {x}); }
  ValueId reshape(ValueId x, Shape shape) {
    return op(ir::OpKind::kReshape, {x}, ir::ReshapeAttrs{shape});
  }
  const Shape& shape(ValueId v) const { return graph_.value(v).shape; }

  // Records `v` as a tap (an extra graph output named `tap_name`) if taps are enabled.
  void tap(ValueId v, const std::string& tap_name);
  void enable_taps(bool on) { taps_enabled_ = on; }
  // While on, every op output is marked wide-range (ir::Value::wide_range): activations that
  // may exceed f16's range, held in f32/bf16 by whichever backend runs them.
  void set_wide_range(bool on) { wide_range_ = on; }
  // Marks `main_output` as graph output 0 and the taps as outputs 1..n; returns the taps.
  std::vector<std::pair<std::string, ValueId>> finish(ValueId main_output);

 private:
  std::string scoped(const std::string& leaf) const;
  // The LoRA side path up(down(x)) of the layer in scope, if the weights hold adapters for it
  // (else ir::kNone); `conv` is the layer's attributes when it is a convolution.
  ValueId lora_side(ValueId x, const ir::Conv2dAttrs* conv);

  ir::Graph& graph_;
  const weights::WeightSource& weights_;
  std::string prefix_;  // "<root>.<scope>." with trailing dot
  std::unordered_map<std::string, ValueId> weight_ids_;
  std::unordered_map<std::string, int> op_counts_;
  bool taps_enabled_ = false;
  bool wide_range_ = false;
  std::vector<std::pair<std::string, ValueId>> taps_;
};

}  // namespace hyrt::models

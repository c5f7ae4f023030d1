// ir::Graph — a computation as metadata only: values (shape, dtype, kind) and nodes (op,
// inputs, attributes, one output each). A graph never holds data pointers: weights are
// named constants resolved by a weights::WeightSource when a backend prepares a node.
//
// Nodes are kept in insertion order, and a node may only consume values that exist
// when it is added, so insertion order is a valid execution order.
//
// Thread safety: a Graph is not synchronised; build it on one thread, then share it
// read-only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "ir/op.h"

namespace hyrt::ir {

using ValueId = int32_t;
using NodeId = int32_t;
inline constexpr int32_t kNone = -1;

enum class ValueKind : uint8_t {
  kInput,         // provided by the caller at run time
  kWeight,        // a named constant, resolved from the model's weights
  kIntermediate,  // produced by a node
};

struct Value {
  ValueId id = kNone;
  ValueKind kind = ValueKind::kIntermediate;
  DType dtype = DType::kF32;
  Shape shape;
  std::string name;         // inputs/weights: their key; intermediates: the producing node's name
  NodeId producer = kNone;  // kIntermediate only
  bool is_output = false;
  // Range policy: the value may exceed f16's range (±65504), so every backend that holds it
  // must store it in f32 or bf16 (Backend::storage_dtype). plan::place runs a node only on a
  // backend that holds all of its wide-range activations so; weights are not affected (they
  // are stored as given). The real SDXL VAE decoder's activations are (VaeConfig::force_upcast).
  bool wide_range = false;
  // Inputs only: the caller usually writes the same contents run after run (a sampler's text
  // conditioning, the same for every step of a picture). An executable may then keep what it
  // computed from such inputs alone (and weights) from one run to the next instead of
  // computing it again — only after checking that their contents are unchanged, so this is
  // a hint for speed and never changes results (exec/executable.h, ExecOptions::reuse_invariant).
  bool run_invariant = false;

  size_t bytes() const { return storage_bytes(dtype, shape); }
};

struct Node {
  NodeId id = kNone;
  OpKind op = OpKind::kAdd;
  std::vector<ValueId> inputs;
  ValueId output = kNone;
  Attrs attrs;
  std::string name;  // hierarchical, e.g. "unet.down_blocks.0.resnets.1.conv1"

  template <class A>
  const A& attr() const {
    return std::get<A>(attrs);
  }

  // Linear and conv2d (see ir::GemmEpilogue): the fused epilogue, the number of weight inputs
  // (LinearAttrs::weights: more than one for stacked projections, which take no bias or
  // epilogue), the bias input (kNone without one), the low-rank term's down and up weights (kNone
  // without one) and the residual input (kNone without one). Inputs: x, w, [bias], [down, up],
  // [residual]; a stacked linear's: x, w_1, ..., w_weights.
  GemmEpilogue epilogue() const { return gemm_epilogue(attrs); }
  int gemm_weights() const { return ir::gemm_weights(attrs); }
  ValueId gemm_bias() const {
    const GemmEpilogue e = epilogue();
    if (gemm_weights() != 1) return kNone;
    return inputs.size() - (e.residual ? 1 : 0) - (e.low_rank ? 2 : 0) == 3 ? inputs[2] : kNone;
  }
  ValueId gemm_low_rank_down() const { return low_rank_input(0); }
  ValueId gemm_low_rank_up() const { return low_rank_input(1); }
  ValueId gemm_residual() const { return epilogue().residual ? inputs.back() : kNone; }

 private:
  ValueId low_rank_input(size_t i) const {
    const GemmEpilogue e = epilogue();
    if (!e.low_rank) return kNone;
    return inputs[inputs.size() - (e.residual ? 1 : 0) - 2 + i];
  }
};

class Graph {
 public:
  // `activation_dtype` is the dtype of outputs that do not follow an input's dtype
  // (embedding lookups, timestep embeddings).
  explicit Graph(DType activation_dtype = DType::kF32) : activation_dtype_(activation_dtype) {}

  ValueId add_input(std::string name, DType dtype, Shape shape);
  ValueId add_weight(std::string name, DType dtype, Shape shape);
  // Adds a node; infers and checks the output's shape and dtype (throws hyrt::Error
  // kInvalidArgument naming the node on a mismatch). Returns the output value.
  ValueId add_node(OpKind op, std::vector<ValueId> inputs, Attrs attrs = {}, std::string name = {});
  void mark_output(ValueId v);
  // Marks `v` as a wide-range value (Value::wide_range).
  void set_wide_range(ValueId v, bool wide = true);
  // Marks graph input `v` as run-invariant (Value::run_invariant); throws kInvalidArgument for
  // a value that is not a graph input.
  void set_run_invariant(ValueId v, bool invariant = true);

  const Value& value(ValueId id) const { return values_.at(static_cast<size_t>(id)); }
  const Node& node(NodeId id) const { return nodes_.at(static_cast<size_t>(id)); }
  const std::vector<Value>& values() const { return values_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<ValueId>& inputs() const { return inputs_; }
  const std::vector<ValueId>& outputs() const { return outputs_; }
  DType activation_dtype() const { return activation_dtype_; }

  // Checks every invariant: ids in range, values defined before use, inferred shapes
  // and dtypes match the stored ones, every intermediate consumed or an output, every
  // weight used, at least one output. Throws hyrt::Error(kInternal) listing problems.
  void verify() const;
  // Human-readable listing: one line per input, weight and node.
  std::string dump() const;
  // Sum of weight bytes and number of weight elements.
  size_t weight_bytes() const;
  int64_t weight_params() const;

 private:
  DType activation_dtype_;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<ValueId> inputs_;
  std::vector<ValueId> outputs_;
};

// For rewrites that build a graph anew from another (plan::fuse_epilogues,
// plan::quantize_activations): adds `from`'s inputs and weights to `to`, in `from`'s order, with
// their names, dtypes, shapes and flags (run_invariant, wide_range). Returns the map from `from`'s
// value ids to `to`'s, kNone for intermediates (the caller adds them with their nodes).
std::vector<ValueId> add_inputs_and_weights(const Graph& from, Graph& to);

// Infers the output (dtype, shape) of `op` on `inputs`; throws kInvalidArgument with a
// message naming `node_name` when inputs or attributes are inconsistent.
struct InferredType {
  DType dtype;
  Shape shape;
};
InferredType infer_output(const Graph& g, OpKind op, const std::vector<ValueId>& inputs,
                          const Attrs& attrs, std::string_view node_name);

}  // namespace hyrt::ir

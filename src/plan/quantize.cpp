#include "plan/quantize.h"

#include <algorithm>
#include <set>

#include "core/error.h"
#include "plan/rewrite.h"

namespace hyrt::plan {
namespace {

using ir::Graph;
using ir::Node;
using ir::NodeId;
using ir::OpKind;
using ir::ValueId;

// The graph again, with the norms and GEGLUs in `quantized` writing s8rows.
std::shared_ptr<Graph> rewrite(const Graph& g, const std::set<NodeId>& quantized) {
  auto out = std::make_shared<Graph>(g.activation_dtype());
  std::vector<ValueId> map = ir::add_inputs_and_weights(g, *out);
  for (const Node& n : g.nodes()) {
    std::vector<ValueId> inputs;
    for (ValueId v : n.inputs)
      inputs.push_back(map[v]);
    ir::Attrs attrs = n.attrs;
    if (quantized.count(n.id)) {
      if (n.op == OpKind::kLayerNorm || n.op == OpKind::kGroupNorm)
        std::get<ir::NormAttrs>(attrs).quantize_output = true;
      else
        attrs = ir::GegluAttrs{true};
    }
    map[n.output] = out->add_node(n.op, std::move(inputs), std::move(attrs), n.name);
    if (g.value(n.output).wide_range) out->set_wide_range(map[n.output]);
  }
  for (ValueId v : g.outputs())
    out->mark_output(map[v]);
  return out;
}

}  // namespace

ActivationQuantization quantize_activations(std::shared_ptr<const ir::Graph> graph,
                                            const Placement& placement,
                                            std::span<const backend::Backend* const> backends,
                                            const CopyCostModel& copy) {
  check_placement_of(graph.get(), placement, "quantize_activations");
  const Graph& g = *graph;
  const ValueUses uses(g);
  const std::vector<std::vector<NodeId>>& readers = uses.readers;

  // The candidates: layer norms and GEGLUs whose output only plain-input linears on their
  // backend read, group norms whose output only convolutions on theirs read.
  std::set<NodeId> chosen;
  for (const Node& n : g.nodes()) {
    const int b = placement.backend_of[n.id];
    if ((n.op != OpKind::kLayerNorm && n.op != OpKind::kGeglu && n.op != OpKind::kGroupNorm) ||
        b < 0 || ir::quantizes_output(n.attrs))
      continue;
    const OpKind reader_op = n.op == OpKind::kGroupNorm ? OpKind::kConv2d : OpKind::kLinear;
    const ir::Value& y = g.value(n.output);
    if (y.is_output || y.wide_range || readers[y.id].empty()) continue;
    const bool only_gemms = std::all_of(readers[y.id].begin(), readers[y.id].end(), [&](NodeId r) {
      const Node& l = g.node(r);
      return l.op == reader_op && placement.backend_of[r] == b && l.inputs[0] == y.id &&
             !l.epilogue().low_rank && std::count(l.inputs.begin(), l.inputs.end(), y.id) == 1;
    });
    if (only_gemms) chosen.insert(n.id);
  }

  ActivationQuantization result;
  while (!chosen.empty()) {
    std::shared_ptr<Graph> rw = rewrite(g, chosen);
    // Every rewritten node must be one its backend runs: a refused producer (or one of its
    // readers) is left as it was and the rewrite redone (each round drops one, so this ends).
    const size_t before = chosen.size();
    for (auto it = chosen.begin(); it != chosen.end();) {
      const NodeId n = *it;
      const backend::Backend& b = *backends[placement.backend_of[n]];
      bool ok = b.supports(*rw, rw->node(n));
      for (NodeId r : readers[g.node(n).output])
        ok = ok && b.supports(*rw, rw->node(r));
      it = ok ? std::next(it) : chosen.erase(it);
    }
    if (chosen.size() != before) continue;
    rw->verify();
    for (NodeId n : chosen) {
      const int reads = static_cast<int>(readers[g.node(n).output].size());
      switch (g.node(n).op) {
        case OpKind::kLayerNorm:
          ++result.layer_norms, result.linears += reads;
          break;
        case OpKind::kGroupNorm:
          ++result.group_norms, result.convs += reads;
          break;
        default:
          ++result.geglus, result.linears += reads;
      }
    }
    result.placement = placement_of_rewrite(*rw, placement, backends, copy);
    result.graph = std::move(rw);
    return result;
  }
  result.graph = std::move(graph);
  result.placement = placement;
  return result;
}

}  // namespace hyrt::plan

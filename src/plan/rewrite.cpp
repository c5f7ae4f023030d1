#include "plan/rewrite.h"

#include <algorithm>

#include "core/error.h"
#include "plan/memory.h"

namespace hyrt::plan {
namespace {

// `graph` placed node by node as `backend_of` says, its copies and estimates evaluated in its
// insertion order, with the given mode, reasons and fallback count.
Placement evaluated(const ir::Graph& graph, std::vector<int> backend_of, PlacementMode mode,
                    std::vector<std::string> reason, int fallback_nodes,
                    std::span<const backend::Backend* const> backends, const CopyCostModel& copy) {
  Placement p =
      evaluate_assignment(graph, default_order(graph), backends, std::move(backend_of), copy);
  p.mode = mode;
  p.reason = std::move(reason);
  p.fallback_nodes = fallback_nodes;
  return p;
}

}  // namespace

void check_placement_of(const ir::Graph* graph, const Placement& placement, const char* pass) {
  HYRT_CHECK(graph && placement.backend_of.size() == graph->nodes().size(), kInvalidArgument, pass,
             ": the placement is not of this graph");
}

ValueUses::ValueUses(const ir::Graph& g)
    : readers(g.values().size()), producer(g.values().size(), ir::kNone) {
  for (const ir::Node& n : g.nodes()) {
    for (ir::ValueId v : n.inputs)
      readers[static_cast<size_t>(v)].push_back(n.id);
    producer[static_cast<size_t>(n.output)] = n.id;
  }
}

PlacedRewrite::PlacedRewrite(const ir::Graph& from, const Placement& placement)
    : from_(from),
      placement_(placement),
      graph_(std::make_shared<ir::Graph>(from.activation_dtype())),
      map_(ir::add_inputs_and_weights(from, *graph_)) {}

ir::ValueId PlacedRewrite::emit(ir::OpKind op, std::vector<ir::ValueId> inputs, ir::Attrs attrs,
                                std::string name, ir::NodeId from_node) {
  const ir::ValueId v = graph_->add_node(op, std::move(inputs), std::move(attrs), std::move(name));
  if (from_.value(from_.node(from_node).output).wide_range) graph_->set_wide_range(v);
  backend_of_.push_back(placement_.backend_of[static_cast<size_t>(from_node)]);
  reason_.push_back(placement_.reason.empty() ? std::string()
                                              : placement_.reason[static_cast<size_t>(from_node)]);
  return v;
}

ir::ValueId PlacedRewrite::keep(const ir::Node& n) {
  const ir::ValueId v = emit(n.op, mapped(n.inputs), n.attrs, n.name, n.id);
  set_map(n.output, v);
  return v;
}

std::vector<ir::ValueId> PlacedRewrite::mapped(const std::vector<ir::ValueId>& old) const {
  std::vector<ir::ValueId> m;
  m.reserve(old.size());
  for (ir::ValueId v : old)
    m.push_back(map(v));
  return m;
}

PlacedRewrite::Result PlacedRewrite::finish(std::span<const backend::Backend* const> backends,
                                            const CopyCostModel& copy) {
  for (ir::ValueId v : from_.outputs())
    graph_->mark_output(map(v));
  graph_->verify();
  Result r;
  const int fallback = static_cast<int>(std::count_if(
      reason_.begin(), reason_.end(), [](const std::string& s) { return !s.empty(); }));
  r.placement = evaluated(*graph_, std::move(backend_of_), placement_.mode, std::move(reason_),
                          fallback, backends, copy);
  r.graph = std::move(graph_);
  return r;
}

Placement placement_of_rewrite(const ir::Graph& graph, const Placement& before,
                               std::span<const backend::Backend* const> backends,
                               const CopyCostModel& copy) {
  return evaluated(graph, before.backend_of, before.mode, before.reason, before.fallback_nodes,
                   backends, copy);
}

}  // namespace hyrt::plan

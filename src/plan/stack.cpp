#include "plan/stack.h"

#include <algorithm>
#include <array>
#include <set>
#include <string>

#include "core/error.h"
#include "plan/memory.h"

namespace hyrt::plan {
namespace {

using ir::Graph;
using ir::Node;
using ir::NodeId;
using ir::OpKind;
using ir::ValueId;

// One attention's projections, in q, k, v order.
struct Group {
  NodeId attention = ir::kNone;
  std::array<NodeId, 3> projections{};
  NodeId first() const { return *std::min_element(projections.begin(), projections.end()); }
};

// "<parent>.to_qkv" for "<parent>.to_q", "<parent>.to_k", "<parent>.to_v"; else q's name.
std::string stacked_name(const Graph& g, const Group& grp) {
  const std::string& q = g.node(grp.projections[0]).name;
  const size_t dot = q.rfind('.');
  if (dot == std::string::npos) return q;
  const std::string parent = q.substr(0, dot);
  const char* leaves[3] = {".to_q", ".to_k", ".to_v"};
  for (int i = 0; i < 3; ++i)
    if (g.node(grp.projections[i]).name != parent + leaves[i]) return q;
  return parent + ".to_qkv";
}

std::vector<Group> find_groups(const Graph& g, const Placement& p,
                               const std::vector<std::vector<NodeId>>& readers,
                               const std::vector<NodeId>& producer,
                               const std::set<NodeId>& rejected) {
  std::vector<Group> groups;
  for (const Node& a : g.nodes()) {
    if (a.op != OpKind::kAttention || a.inputs.size() != 3 || rejected.count(a.id)) continue;
    const auto* attrs = std::get_if<ir::AttentionAttrs>(&a.attrs);
    const int b = p.backend_of[a.id];
    if (!attrs || attrs->causal || attrs->packed_qkv || b < 0) continue;
    Group grp;
    grp.attention = a.id;
    bool ok = true;
    for (int i = 0; i < 3 && ok; ++i) {
      const ValueId v = a.inputs[static_cast<size_t>(i)];
      const ir::Value& val = g.value(v);
      const NodeId l = producer[v];
      ok = l != ir::kNone && !val.is_output && !val.wide_range && readers[v].size() == 1;
      if (!ok) break;
      const Node& lin = g.node(l);
      ok = lin.op == OpKind::kLinear && lin.inputs.size() == 2 && lin.epilogue().empty() &&
           lin.gemm_weights() == 1 && p.backend_of[l] == b &&
           g.value(lin.inputs[1]).kind == ir::ValueKind::kWeight;
      grp.projections[static_cast<size_t>(i)] = l;
    }
    if (!ok) continue;
    const Node &q = g.node(grp.projections[0]), &k = g.node(grp.projections[1]),
               &v = g.node(grp.projections[2]);
    // Three distinct nodes (q = k = v from one linear is read three times: not this pattern).
    if (q.id == k.id || q.id == v.id || k.id == v.id) continue;
    if (k.inputs[0] != q.inputs[0] || v.inputs[0] != q.inputs[0]) continue;
    const DType wt = g.value(q.inputs[1]).dtype;
    if (g.value(k.inputs[1]).dtype != wt || g.value(v.inputs[1]).dtype != wt) continue;
    const Shape &qs = g.value(q.output).shape, &ks = g.value(k.output).shape,
                &vs = g.value(v.output).shape;
    if (qs != ks || qs != vs || qs.rank() != 3) continue;
    groups.push_back(grp);
  }
  return groups;
}

struct Rewrite {
  std::shared_ptr<Graph> graph;
  std::vector<int> backend_of;  // per new node
  std::vector<std::string> reason;
  std::vector<std::pair<NodeId, NodeId>> stacked;  // (new stacked linear, old attention)
  std::vector<NodeId> packed;                      // new attention nodes, as `stacked`
};

Rewrite rewrite(const Graph& g, const Placement& p, const std::vector<Group>& groups) {
  Rewrite r;
  r.graph = std::make_shared<Graph>(g.activation_dtype());
  Graph& out = *r.graph;
  std::vector<ValueId> map = ir::add_inputs_and_weights(g, out);
  // Per old node: the group it starts (its first projection), the group whose attention it is,
  // or a projection folded into a group.
  std::vector<const Group*> starts(g.nodes().size(), nullptr), attends = starts;
  std::vector<bool> folded(g.nodes().size(), false);
  for (const Group& grp : groups) {
    starts[grp.first()] = &grp;
    attends[grp.attention] = &grp;
    for (NodeId l : grp.projections)
      folded[l] = true;
  }
  std::vector<ValueId> stacked_of(g.nodes().size(), ir::kNone);  // by attention id
  auto emit = [&](OpKind op, std::vector<ValueId> inputs, ir::Attrs attrs, std::string name,
                  NodeId from) {
    const ValueId v = out.add_node(op, std::move(inputs), std::move(attrs), std::move(name));
    r.backend_of.push_back(p.backend_of[from]);
    r.reason.push_back(p.reason.empty() ? std::string() : p.reason[from]);
    return v;
  };
  for (const Node& n : g.nodes()) {
    if (const Group* grp = starts[n.id]) {
      const Node& q = g.node(grp->projections[0]);
      std::vector<ValueId> inputs = {map[q.inputs[0]]};
      for (NodeId l : grp->projections)
        inputs.push_back(map[g.node(l).inputs[1]]);
      ir::LinearAttrs attrs;
      attrs.weights = 3;
      stacked_of[grp->attention] =
          emit(OpKind::kLinear, std::move(inputs), attrs, stacked_name(g, *grp), q.id);
      r.stacked.emplace_back(out.nodes().back().id, grp->attention);
    }
    if (folded[n.id]) continue;
    if (attends[n.id]) {
      ir::AttentionAttrs attrs = n.attr<ir::AttentionAttrs>();
      attrs.packed_qkv = true;
      map[n.output] = emit(OpKind::kAttention, {stacked_of[n.id]}, attrs, n.name, n.id);
      r.packed.push_back(out.nodes().back().id);
      if (g.value(n.output).wide_range) out.set_wide_range(map[n.output]);
      continue;
    }
    std::vector<ValueId> inputs;
    for (ValueId v : n.inputs)
      inputs.push_back(map[v]);
    map[n.output] = emit(n.op, std::move(inputs), n.attrs, n.name, n.id);
    if (g.value(n.output).wide_range) out.set_wide_range(map[n.output]);
  }
  for (ValueId v : g.outputs())
    out.mark_output(map[v]);
  return r;
}

}  // namespace

StackedProjections stack_projections(std::shared_ptr<const ir::Graph> graph,
                                     const Placement& placement,
                                     std::span<const backend::Backend* const> backends,
                                     const CopyCostModel& copy) {
  HYRT_CHECK(graph && placement.backend_of.size() == graph->nodes().size(), kInvalidArgument,
             "stack_projections: the placement is not of this graph");
  const Graph& g = *graph;
  std::vector<std::vector<NodeId>> readers(g.values().size());
  std::vector<NodeId> producer(g.values().size(), ir::kNone);
  for (const Node& n : g.nodes()) {
    for (ValueId v : n.inputs)
      if (readers[v].empty() || readers[v].back() != n.id) readers[v].push_back(n.id);
    producer[n.output] = n.id;
  }
  StackedProjections result;
  std::set<NodeId> rejected;  // attentions whose backend refused the stacked forms
  for (;;) {
    const std::vector<Group> groups = find_groups(g, placement, readers, producer, rejected);
    if (groups.empty()) break;
    Rewrite rw = rewrite(g, placement, groups);
    // Both rewritten nodes of a group must be ones its backend runs (each round rejects at
    // least one group or succeeds, so this ends).
    const size_t before = rejected.size();
    for (size_t i = 0; i < rw.stacked.size(); ++i) {
      const auto& [linear, attention] = rw.stacked[i];
      const backend::Backend& b = *backends[rw.backend_of[linear]];
      if (!b.supports(*rw.graph, rw.graph->node(linear)) ||
          !b.supports(*rw.graph, rw.graph->node(rw.packed[i])))
        rejected.insert(attention);
    }
    if (rejected.size() != before) continue;
    rw.graph->verify();
    result.attentions = static_cast<int>(groups.size());
    const std::vector<NodeId> order = default_order(*rw.graph);
    result.placement =
        evaluate_assignment(*rw.graph, order, backends, std::move(rw.backend_of), copy);
    result.placement.mode = placement.mode;
    result.placement.reason = std::move(rw.reason);
    result.placement.fallback_nodes = placement.fallback_nodes;
    result.graph = std::move(rw.graph);
    return result;
  }
  result.graph = std::move(graph);
  result.placement = placement;
  return result;
}

}  // namespace hyrt::plan

#include "plan/stack.h"

#include <algorithm>
#include <array>
#include <set>
#include <string>

#include "core/error.h"
#include "plan/rewrite.h"

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

std::vector<Group> find_groups(const Graph& g, const Placement& p, const ValueUses& uses,
                               const std::set<NodeId>& rejected) {
  std::vector<Group> groups;
  for (const Node& a : g.nodes()) {
    if (a.op != OpKind::kAttention || a.inputs.size() != 3 || rejected.count(a.id)) continue;
    const auto* attrs = std::get_if<ir::AttentionAttrs>(&a.attrs);
    const int b = p.backend_of[a.id];
    if (!attrs || attrs->causal || b < 0) continue;  // (three inputs: not packed)
    Group grp;
    grp.attention = a.id;
    bool ok = true;
    for (int i = 0; i < 3 && ok; ++i) {
      const ValueId v = a.inputs[static_cast<size_t>(i)];
      const ir::Value& val = g.value(v);
      const NodeId l = uses.producer[v];
      // Read once, by the attention (a value read as both q and k is two reads).
      ok = l != ir::kNone && !val.is_output && !val.wide_range && uses.readers[v].size() == 1;
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

// The graph with every group's projections as one stacked linear (at the first projection's
// place) and its attention reading their output packed. `stacked` gets (new stacked linear, new
// attention, old attention) per group.
struct StackedNodes {
  NodeId linear, attention, old_attention;
};
PlacedRewrite rewrite(const Graph& g, const Placement& p, const std::vector<Group>& groups,
                      std::vector<StackedNodes>& stacked) {
  PlacedRewrite r(g, p);
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
  std::vector<ValueId> qkv_of(g.nodes().size(), ir::kNone);  // by old attention id
  std::vector<NodeId> linear_of(g.nodes().size(), ir::kNone);
  for (const Node& n : g.nodes()) {
    if (const Group* grp = starts[n.id]) {
      const Node& q = g.node(grp->projections[0]);
      std::vector<ValueId> inputs = {r.map(q.inputs[0])};
      for (NodeId l : grp->projections)
        inputs.push_back(r.map(g.node(l).inputs[1]));
      ir::LinearAttrs attrs;
      attrs.weights = 3;
      qkv_of[grp->attention] =
          r.emit(OpKind::kLinear, std::move(inputs), attrs, stacked_name(g, *grp), q.id);
      linear_of[grp->attention] = r.last_node();
    }
    if (folded[n.id]) continue;
    if (attends[n.id]) {
      ir::AttentionAttrs attrs = n.attr<ir::AttentionAttrs>();
      attrs.packed_qkv = true;
      r.set_map(n.output, r.emit(OpKind::kAttention, {qkv_of[n.id]}, attrs, n.name, n.id));
      stacked.push_back({linear_of[n.id], r.last_node(), n.id});
      continue;
    }
    r.keep(n);
  }
  return r;
}

}  // namespace

StackedProjections stack_projections(std::shared_ptr<const ir::Graph> graph,
                                     const Placement& placement,
                                     std::span<const backend::Backend* const> backends,
                                     const CopyCostModel& copy) {
  check_placement_of(graph.get(), placement, "stack_projections");
  const ValueUses uses(*graph);
  StackedProjections result;
  std::set<NodeId> rejected;  // attentions whose backend refused the stacked forms
  for (;;) {
    const std::vector<Group> groups = find_groups(*graph, placement, uses, rejected);
    if (groups.empty()) break;
    std::vector<StackedNodes> stacked;
    PlacedRewrite rw = rewrite(*graph, placement, groups, stacked);
    // Both rewritten nodes of a group must be ones its backend runs (each round rejects at
    // least one group or succeeds, so this ends).
    const size_t before = rejected.size();
    for (const StackedNodes& s : stacked) {
      const backend::Backend& b = *backends[rw.backend_of(s.linear)];
      if (!b.supports(rw.graph(), rw.graph().node(s.linear)) ||
          !b.supports(rw.graph(), rw.graph().node(s.attention)))
        rejected.insert(s.old_attention);
    }
    if (rejected.size() != before) continue;
    result.attentions = static_cast<int>(groups.size());
    PlacedRewrite::Result done = rw.finish(backends, copy);
    result.graph = std::move(done.graph);
    result.placement = std::move(done.placement);
    return result;
  }
  result.graph = std::move(graph);
  result.placement = placement;
  return result;
}

}  // namespace hyrt::plan

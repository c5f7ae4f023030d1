#include "plan/fuse.h"

#include <algorithm>
#include <optional>
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

std::optional<ir::Activation> activation_of(OpKind op) {
  switch (op) {
    case OpKind::kSilu:
      return ir::Activation::kSilu;
    case OpKind::kGelu:
      return ir::Activation::kGelu;
    case OpKind::kQuickGelu:
      return ir::Activation::kQuickGelu;
    case OpKind::kRelu:  // TAESD's convolutions
      return ir::Activation::kRelu;
    default:
      return std::nullopt;
  }
}

// One GEMM's fusion: the nodes it absorbs, in chain order, and what it becomes.
struct Chain {
  NodeId gemm = ir::kNone;
  ir::GemmEpilogue epilogue;          // the fused node's (the GEMM's own plus what it absorbs)
  std::vector<NodeId> absorbed;       // [down, up, add,] activation, reshape, add — or a
                                      // GEGLU alone; the last is the anchor
  ValueId residual = ir::kNone;       // old graph's value added (the add's other input)
  ValueId low_rank_down = ir::kNone;  // old graph's low-rank term: the down weight
  ValueId low_rank_up = ir::kNone;    // and the up weight
  const Node* reshape = nullptr;      // the view between GEMM (or activation) and add
  ValueId final_value = ir::kNone;    // old graph's value the fused chain produces
  NodeId anchor() const { return absorbed.back(); }
};

class Fuser {
 public:
  Fuser(const Graph& g, const Placement& p)
      : g_(g), p_(p), consumers_(g.values().size()), producer_(g.values().size(), ir::kNone) {
    for (const Node& n : g.nodes()) {
      for (ValueId v : n.inputs)
        consumers_[v].push_back(n.id);
      producer_[n.output] = n.id;
    }
  }

  // Chains for every GEMM not in `rejected`, by GEMM node id. Low-rank chains (a LoRA's side
  // path) are found first, since their up projection comes before the layer in the order. An
  // add of two GEMM outputs (a resnet's conv2 and conv_shortcut) goes to the first GEMM's chain.
  // GEMMs in `ungated` do not take a GEGLU (their backend refused the gated node: the chain
  // is looked for again without it).
  std::vector<Chain> find_chains(const std::set<NodeId>& rejected,
                                 const std::set<NodeId>& ungated) const {
    std::vector<Chain> chains;
    std::vector<bool> taken(g_.nodes().size(), false), has_chain = taken;
    auto keep = [&](Chain&& c) {
      for (NodeId a : c.absorbed)
        taken[a] = true;
      has_chain[c.gemm] = true;
      chains.push_back(std::move(c));
    };
    for (bool low_rank : {true, false})
      for (const Node& n : g_.nodes()) {
        if (n.op != OpKind::kLinear && n.op != OpKind::kConv2d) continue;
        if (rejected.count(n.id) || p_.backend_of[n.id] < 0 || taken[n.id] || has_chain[n.id])
          continue;
        if (std::optional<Chain> c = chain_from(n, taken, low_rank, !ungated.count(n.id)))
          keep(std::move(*c));
      }
    return chains;
  }

 private:
  // The only consumer of v on the GEMM's backend, when v has exactly one and is no output.
  // Nodes already in another chain (`taken`) do not count.
  const Node* sole_consumer(ValueId v, int backend, const std::vector<bool>& taken) const {
    if (g_.value(v).is_output || consumers_[v].size() != 1) return nullptr;
    const Node& c = g_.node(consumers_[v][0]);
    if (taken[c.id]) return nullptr;
    // A node reading v twice (add(v, v)) lists it twice.
    if (std::count(c.inputs.begin(), c.inputs.end(), v) != 1) return nullptr;
    return p_.backend_of[c.id] == backend ? &c : nullptr;
  }

  // A plain linear (two inputs, the second a graph weight, no epilogue) on `backend` whose
  // output only `consumer` reads.
  const Node* plain_linear_producing(ValueId v, int backend, NodeId consumer,
                                     const std::vector<bool>& taken) const {
    const NodeId p = producer_[v];
    if (p == ir::kNone || taken[p] || p_.backend_of[p] != backend) return nullptr;
    const Node& n = g_.node(p);
    if (n.op != OpKind::kLinear || n.inputs.size() != 2 || !n.epilogue().empty() ||
        g_.value(n.inputs[1]).kind != ir::ValueKind::kWeight)
      return nullptr;
    if (g_.value(v).is_output || consumers_[v].size() != 1 || consumers_[v][0] != consumer)
      return nullptr;
    return &n;
  }

  // low_rank: only chains that start with a low-rank term: the linear `gemm` (x · wᵀ [+ bias])
  // added to up(down(x)) — two plain linears on gemm's backend with graph weights, the down
  // reading gemm's own x (graph_builder's LoRA side path). The down, the up and the add are
  // absorbed; their weights become the term's.
  std::optional<Chain> chain_from(const Node& gemm, const std::vector<bool>& taken, bool low_rank,
                                  bool gate) const {
    const int backend = p_.backend_of[gemm.id];
    Chain c;
    c.gemm = gemm.id;
    c.epilogue = gemm.epilogue();
    ValueId cur = gemm.output;
    if (low_rank) {
      if (gemm.op != OpKind::kLinear || !c.epilogue.empty()) return std::nullopt;
      const Node* add = sole_consumer(cur, backend, taken);
      if (!add || add->op != OpKind::kAdd) return std::nullopt;
      const ValueId side = add->inputs[0] == cur ? add->inputs[1] : add->inputs[0];
      const Node* up = plain_linear_producing(side, backend, add->id, taken);
      if (!up) return std::nullopt;
      const Node* down = plain_linear_producing(up->inputs[0], backend, up->id, taken);
      if (!down || down->inputs[0] != gemm.inputs[0]) return std::nullopt;
      const ir::Value &a = g_.value(add->inputs[0]), &b = g_.value(add->inputs[1]);
      if (a.shape != b.shape || a.dtype != b.dtype) return std::nullopt;
      c.epilogue.low_rank = true;
      c.low_rank_down = down->inputs[1];
      c.low_rank_up = up->inputs[1];
      c.absorbed = {down->id, up->id, add->id};
      cur = add->output;
    }
    // A GEGLU right after a plain linear (or its low-rank term: a LoRA on a feed-forward's
    // input projection) gates its output (ir::GemmEpilogue::geglu); nothing else joins that
    // chain.
    ir::GemmEpilogue beside_gate = c.epilogue;  // what the chain holds but a low-rank term
    beside_gate.low_rank = false;
    if (gate && gemm.op == OpKind::kLinear && beside_gate.empty()) {
      const Node* a = sole_consumer(cur, backend, taken);
      if (a && a->op == OpKind::kGeglu) {
        c.epilogue.geglu = true;
        c.absorbed.push_back(a->id);
        c.final_value = a->output;
        return c;
      }
    }
    if (c.epilogue.activation == ir::Activation::kNone && !c.epilogue.residual) {
      if (const Node* a = sole_consumer(cur, backend, taken)) {
        if (std::optional<ir::Activation> act = activation_of(a->op)) {
          c.epilogue.activation = *act;
          c.absorbed.push_back(a->id);
          cur = a->output;
        }
      }
    }
    if (!c.epilogue.residual) {
      const Node* next = sole_consumer(cur, backend, taken);
      const Node* reshape = nullptr;
      if (next && next->op == OpKind::kReshape) {
        reshape = next;
        next = sole_consumer(next->output, backend, taken);
      }
      if (next && next->op == OpKind::kAdd) {
        const ValueId chain_value = reshape ? reshape->output : cur;
        const ValueId other = next->inputs[0] == chain_value ? next->inputs[1] : next->inputs[0];
        const ir::Value &a = g_.value(next->inputs[0]), &b = g_.value(next->inputs[1]);
        if (a.shape == b.shape && a.dtype == b.dtype) {
          c.epilogue.residual = true;
          c.residual = other;
          c.reshape = reshape;
          if (reshape) c.absorbed.push_back(reshape->id);
          c.absorbed.push_back(next->id);
          cur = next->output;
        }
      }
    }
    if (c.absorbed.empty()) return std::nullopt;
    c.final_value = cur;
    return c;
  }

  const Graph& g_;
  const Placement& p_;
  std::vector<std::vector<NodeId>> consumers_;
  std::vector<NodeId> producer_;  // per value: the node writing it (kNone: input or weight)
};

// The graph with every chain fused; `fused` gets (new fused node, old GEMM) per chain.
PlacedRewrite rewrite(const Graph& g, const Placement& p, const std::vector<Chain>& chains,
                      std::vector<std::pair<NodeId, NodeId>>& fused) {
  PlacedRewrite r(g, p);
  // What each old node is to the rewrite: absorbed (skipped), a chain's GEMM (skipped, emitted
  // at the anchor), an anchor (emits the chain), or kept.
  std::vector<const Chain*> gemm_chain(g.nodes().size(), nullptr), anchor_chain = gemm_chain;
  std::vector<bool> absorbed(g.nodes().size(), false);
  for (const Chain& c : chains) {
    gemm_chain[c.gemm] = &c;
    anchor_chain[c.anchor()] = &c;
    for (NodeId n : c.absorbed)
      absorbed[n] = true;
  }
  for (const Node& n : g.nodes()) {
    if (const Chain* c = anchor_chain[n.id]) {
      const Node& gemm = g.node(c->gemm);
      std::vector<ValueId> inputs = r.mapped(gemm.inputs);
      if (c->low_rank_down != ir::kNone) {
        inputs.push_back(r.map(c->low_rank_down));
        inputs.push_back(r.map(c->low_rank_up));
      }
      const ir::Value& gemm_out = g.value(gemm.output);
      if (c->residual != ir::kNone) {
        ValueId residual = r.map(c->residual);
        if (c->reshape)  // view the residual in the GEMM's output shape
          residual = r.emit(OpKind::kReshape, {residual}, ir::ReshapeAttrs{gemm_out.shape},
                            gemm.name + ".residual", c->gemm);
        inputs.push_back(residual);
      }
      ir::Attrs attrs = gemm.attrs;
      if (gemm.op == OpKind::kConv2d)
        std::get<ir::Conv2dAttrs>(attrs).epilogue = c->epilogue;
      else
        attrs = ir::LinearAttrs{c->epilogue};
      ValueId v = r.emit(gemm.op, std::move(inputs), std::move(attrs), gemm.name, c->gemm);
      fused.emplace_back(r.last_node(), c->gemm);
      if (c->reshape)  // the fused result in the add's shape
        v = r.emit(OpKind::kReshape, {v}, ir::ReshapeAttrs{g.value(c->final_value).shape},
                   g.node(c->anchor()).name, c->gemm);
      r.set_map(c->final_value, v);
      continue;
    }
    if (absorbed[n.id] || gemm_chain[n.id]) continue;
    r.keep(n);
  }
  return r;
}

}  // namespace

EpilogueFusion fuse_epilogues(std::shared_ptr<const ir::Graph> graph, const Placement& placement,
                              std::span<const backend::Backend* const> backends,
                              const CopyCostModel& copy) {
  check_placement_of(graph.get(), placement, "fuse_epilogues");
  EpilogueFusion result;
  const Fuser fuser(*graph, placement);
  std::set<NodeId> rejected, ungated;
  for (;;) {
    const std::vector<Chain> chains = fuser.find_chains(rejected, ungated);
    if (chains.empty()) break;
    std::vector<std::pair<NodeId, NodeId>> fused_nodes;
    PlacedRewrite rw = rewrite(*graph, placement, chains, fused_nodes);
    // Every fused node must be one its backend runs; a refused chain is left unfused and the
    // rewrite redone (each round rejects at least one chain, so this ends).
    // A refused gated chain is tried once more without its gate (a backend that runs the
    // low-rank term but keeps its GEGLU apart).
    const size_t before = rejected.size() + ungated.size();
    for (const auto& [node, gemm] : fused_nodes) {
      const backend::Backend& b = *backends[rw.backend_of(node)];
      const Node& fused = rw.graph().node(node);
      if (!b.supports(rw.graph(), fused) || !holds_wide_range(rw.graph(), fused, b))
        (fused.epilogue().geglu && !ungated.count(gemm) ? ungated : rejected).insert(gemm);
    }
    if (rejected.size() + ungated.size() != before) continue;
    for (const Chain& c : chains) {
      if (c.epilogue.activation != graph->node(c.gemm).epilogue().activation) ++result.activations;
      if (c.residual != ir::kNone) ++result.residual_adds;
      if (c.low_rank_down != ir::kNone) ++result.low_rank_terms;
      if (c.epilogue.geglu) ++result.geglus;
    }
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

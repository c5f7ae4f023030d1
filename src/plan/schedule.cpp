#include "plan/schedule.h"

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "plan/memory.h"

namespace hyrt::plan {
namespace {

// `placement` re-evaluated for another order of the same nodes (copies, costs, by-op tables),
// keeping its mode, reasons and assignment.
Placement reordered(const ir::Graph& graph, const Placement& placement,
                    std::span<const ir::NodeId> order,
                    std::span<const backend::Backend* const> backends, const CopyCostModel& copy) {
  Placement p = evaluate_assignment(graph, order, backends, placement.backend_of, copy);
  p.mode = placement.mode;
  p.reason = placement.reason;
  p.fallback_nodes = placement.fallback_nodes;
  return p;
}

constexpr double kNever = std::numeric_limits<double>::infinity();

// The executor's asynchronous execution (schedule.h, "Model") with estimated times, advanced
// one node at a time in the order nodes are committed.
class Simulation {
 public:
  Simulation(const ir::Graph& g, const std::vector<int>& backend_of, const std::vector<double>& est,
             int num_backends, const CopyCostModel& copy)
      : g_(g),
        backend_of_(backend_of),
        est_(est),
        nb_(num_backends),
        copy_(copy),
        queue_(num_backends, 0.0),
        avail_(g.values().size()),
        needed_on_(g.values().size()) {
    // Which backends read each value (graph outputs are read on the host).
    for (const ir::Node& n : g.nodes())
      for (ir::ValueId in : n.inputs)
        if (g.value(in).kind != ir::ValueKind::kWeight) need(in, backend_of_[n.id]);
    for (ir::ValueId v : g.outputs())
      need(v, 0);
    // Graph inputs are on the host from the start; their uploads are issued first.
    for (ir::ValueId v : g.inputs())
      arrive(v, 0, 0.0);
  }

  // When node `n` could start if it were issued next.
  double start(const ir::Node& n) const {
    const int b = backend_of_[n.id];
    double t = b == 0 ? host_ : std::max(queue_[b], host_);
    for (ir::ValueId in : n.inputs)
      if (g_.value(in).kind != ir::ValueKind::kWeight) t = std::max(t, avail(in, b));
    return t;
  }

  void commit(const ir::Node& n) {
    const int b = backend_of_[n.id];
    const double finish = start(n) + est_[n.id];
    (b == 0 ? host_ : queue_[b]) = finish;
    arrive(n.output, b, finish);
  }

  double makespan() const {
    double t = host_;
    for (int b = 1; b < nb_; ++b)
      t = std::max(t, queue_[b]);
    return t;
  }

 private:
  void need(ir::ValueId v, int b) {
    if (needed_on_[v].empty()) needed_on_[v].assign(nb_, 0);
    needed_on_[v][b] = 1;
  }
  double avail(ir::ValueId v, int b) const { return avail_[v].empty() ? kNever : avail_[v][b]; }

  // Value `v` is ready on backend `home` at `t`; the copies to the other backends that read
  // it are issued now (schedule.h: right after the producer).
  void arrive(ir::ValueId v, int home, double t) {
    avail_[v].assign(nb_, kNever);
    avail_[v][home] = t;
    if (needed_on_[v].empty()) return;
    for (int to = 0; to < nb_; ++to) {
      if (to == home || !needed_on_[v][to]) continue;
      const double cost = copy_.cost_us(g_.value(v).bytes());
      // The queue that carries the copy: the accelerator's (an upload or a download).
      double& q = queue_[to == 0 ? home : to];
      q = std::max(q, t) + cost;
      avail_[v][to] = q;
    }
  }

  const ir::Graph& g_;
  const std::vector<int>& backend_of_;
  const std::vector<double>& est_;
  int nb_;
  CopyCostModel copy_;
  double host_ = 0;
  std::vector<double> queue_;  // per accelerator: when its queue runs dry
  std::vector<std::vector<double>> avail_;
  std::vector<std::vector<char>> needed_on_;
};

// Each node's estimate on the backend the placement gave it.
std::vector<double> node_estimates(const ir::Graph& g, const Placement& p,
                                   std::span<const backend::Backend* const> backends) {
  HYRT_CHECK(p.backend_of.size() == g.nodes().size() && p.order.size() == g.nodes().size(),
             kInvalidArgument, "overlap schedule: the placement is for another graph");
  std::vector<double> est(g.nodes().size(), 0.0);
  for (ir::NodeId id : p.order) {
    const int b = p.backend_of[id];
    HYRT_CHECK(b >= 0 && static_cast<size_t>(b) < backends.size(), kInvalidArgument,
               "overlap schedule: node ", id, " on backend ", b, " of ", backends.size());
    est[id] = backends[b]->estimate_us(g, g.node(id));
  }
  return est;
}

double simulate(const ir::Graph& g, const Placement& p, const std::vector<double>& est,
                int num_backends, const CopyCostModel& copy) {
  Simulation sim(g, p.backend_of, est, num_backends, copy);
  for (ir::NodeId id : p.order)
    sim.commit(g.node(id));
  return sim.makespan();
}

}  // namespace

double simulate_overlapped_us(const ir::Graph& graph, const Placement& placement,
                              std::span<const backend::Backend* const> backends,
                              const CopyCostModel& copy) {
  return simulate(graph, placement, node_estimates(graph, placement, backends),
                  static_cast<int>(backends.size()), copy);
}

Placement overlap_schedule(const ir::Graph& graph, const Placement& placement,
                           std::span<const backend::Backend* const> backends,
                           const CopyCostModel& copy) {
  HYRT_CHECK(placement.backend_of.size() == graph.nodes().size() &&
                 placement.order.size() == graph.nodes().size(),
             kInvalidArgument, "overlap schedule: the placement is for another graph");
  bool mixed = false;
  for (ir::NodeId id : placement.order)
    mixed = mixed || placement.backend_of[id] != placement.backend_of[placement.order[0]];
  if (!mixed) return placement;  // before asking for estimates: a new shape pays nothing
  const std::vector<double> est = node_estimates(graph, placement, backends);
  const int nb = static_cast<int>(backends.size());
  const size_t num_nodes = graph.nodes().size();

  // Dependencies (one count per input occurrence, so repeated inputs balance out) and the
  // longest estimated path from each node to the end, over the given (valid) order.
  std::vector<int> position(num_nodes, 0), waiting(num_nodes, 0);
  std::vector<std::vector<ir::NodeId>> readers(graph.values().size());
  for (size_t s = 0; s < placement.order.size(); ++s) {
    const ir::Node& n = graph.node(placement.order[s]);
    position[n.id] = static_cast<int>(s);
    for (ir::ValueId in : n.inputs)
      if (graph.value(in).kind == ir::ValueKind::kIntermediate) {
        readers[in].push_back(n.id);
        ++waiting[n.id];
      }
  }
  std::vector<double> to_end(num_nodes, 0.0);
  for (auto it = placement.order.rbegin(); it != placement.order.rend(); ++it) {
    double longest = 0;
    for (ir::NodeId r : readers[graph.node(*it).output])
      longest = std::max(longest, to_end[r]);
    to_end[*it] = est[*it] + longest;
  }

  Simulation sim(graph, placement.backend_of, est, nb, copy);
  std::vector<ir::NodeId> ready, order;
  order.reserve(num_nodes);
  for (ir::NodeId id : placement.order)
    if (waiting[id] == 0) ready.push_back(id);
  while (!ready.empty()) {
    // Accelerator steps first: issuing one costs the host nothing, and its inputs are
    // already produced or queued, so it never waits for later work. Then the earliest
    // start, the longer path to the end, the given order.
    size_t best = 0;
    auto rank = [&](ir::NodeId id) {
      return std::make_tuple(placement.backend_of[id] == 0 ? 1 : 0, sim.start(graph.node(id)),
                             -to_end[id], position[id]);
    };
    auto best_rank = rank(ready[0]);
    for (size_t i = 1; i < ready.size(); ++i) {
      auto r = rank(ready[i]);
      if (r < best_rank) {
        best = i;
        best_rank = r;
      }
    }
    const ir::NodeId id = ready[best];
    ready.erase(ready.begin() + static_cast<std::ptrdiff_t>(best));
    sim.commit(graph.node(id));
    order.push_back(id);
    for (ir::NodeId r : readers[graph.node(id).output])
      if (--waiting[r] == 0) ready.push_back(r);
  }
  HYRT_CHECK(order.size() == placement.order.size(), kInternal, "overlap schedule: ordered ",
             order.size(), " of ", placement.order.size(), " nodes");

  if (!(sim.makespan() < simulate(graph, placement, est, nb, copy) * (1.0 - 1e-9)))
    return placement;
  Placement p = reordered(graph, placement, order, backends, copy);
  p.overlapped_us = sim.makespan();
  return p;
}

std::vector<bool> run_invariant_nodes(const ir::Graph& graph) {
  std::vector<bool> invariant_value(graph.values().size(), false);
  for (const ir::Value& v : graph.values())
    invariant_value[v.id] =
        v.kind == ir::ValueKind::kWeight || (v.kind == ir::ValueKind::kInput && v.run_invariant);
  // Producers come before their readers in the graph's own order (Graph::add_node).
  std::vector<bool> node(graph.nodes().size(), false);
  for (const ir::Node& n : graph.nodes()) {
    node[n.id] = std::all_of(n.inputs.begin(), n.inputs.end(),
                             [&](ir::ValueId in) { return invariant_value[in]; });
    invariant_value[n.output] = node[n.id];
  }
  return node;
}

size_t run_invariant_prefix(const ir::Graph& graph, std::span<const ir::NodeId> order) {
  const std::vector<bool> invariant = run_invariant_nodes(graph);
  size_t n = 0;
  while (n < order.size() && invariant[order[n]])
    ++n;
  return n;
}

Placement run_invariant_first(const ir::Graph& graph, const Placement& placement,
                              std::span<const backend::Backend* const> backends,
                              const CopyCostModel& copy) {
  const std::vector<bool> invariant = run_invariant_nodes(graph);
  const std::vector<ir::NodeId> old =
      placement.order.empty() ? default_order(graph) : placement.order;
  std::vector<ir::NodeId> order = old;
  std::stable_partition(order.begin(), order.end(), [&](ir::NodeId n) { return invariant[n]; });
  if (order == old) return placement;
  Placement p = reordered(graph, placement, order, backends, copy);
  // An order chosen for overlap keeps its estimate, now for the new order.
  if (placement.overlapped_us > 0)
    p.overlapped_us = simulate_overlapped_us(graph, p, backends, copy);
  return p;
}

}  // namespace hyrt::plan

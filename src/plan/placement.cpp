#include "plan/placement.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <queue>
#include <tuple>
#include <utility>

#include "core/error.h"

namespace hyrt::plan {

bool holds_wide_range(const ir::Graph& g, const ir::Node& n, const backend::Backend& b) {
  auto held = [&](ir::ValueId id) {
    const ir::Value& v = g.value(id);
    if (!v.wide_range || v.kind == ir::ValueKind::kWeight || !dtype_is_float(v.dtype)) return true;
    const DType s = b.storage_dtype(v);
    return s == DType::kF32 || s == DType::kBF16;
  };
  if (!held(n.output)) return false;
  for (ir::ValueId in : n.inputs)
    if (!held(in)) return false;
  return true;
}

namespace {

using backend::Backend;

// Everything place() asks the backends, asked once per (node, backend).
struct Tables {
  const ir::Graph& graph;
  std::span<const ir::NodeId> order;
  std::span<const Backend* const> backends;
  std::vector<int> step_of;                  // per NodeId, -1 if not in order
  std::vector<std::vector<char>> supported;  // [node][backend]
  std::vector<std::vector<double>> est;      // [node][backend], meaningful where supported
  // Per ValueId (non-weights): the nodes that read it, in order, each once.
  std::vector<std::vector<ir::NodeId>> consumers;

  int num_backends() const { return static_cast<int>(backends.size()); }
  bool ok(ir::NodeId n, int b) const { return supported[n][b] != 0; }
};

std::string describe(const ir::Graph& g, const ir::Node& n) {
  return str_cat(ir::op_name(n.op), " node '", n.name.empty() ? str_cat("#", n.id) : n.name, "'");
}

Tables build_tables(const ir::Graph& g, std::span<const ir::NodeId> order,
                    std::span<const Backend* const> backends) {
  HYRT_CHECK(!backends.empty(), kInvalidArgument, "placement needs at least the host backend");
  for (const Backend* b : backends)
    HYRT_CHECK(b != nullptr, kInvalidArgument, "placement: null backend");
  HYRT_CHECK(backends[0]->device_type() == backend::DeviceType::kHost, kInvalidArgument,
             "placement: backends[0] ('", backends[0]->name(), "') must be the host");
  const size_t num_nodes = g.nodes().size();
  HYRT_CHECK(order.size() == num_nodes, kInvalidArgument, "placement: order lists ", order.size(),
             " nodes, the graph has ", num_nodes);

  Tables t{g, order, backends, std::vector<int>(num_nodes, -1), {}, {}, {}};
  std::vector<char> defined(g.values().size(), 0);
  for (const ir::Value& v : g.values())
    if (v.kind != ir::ValueKind::kIntermediate) defined[v.id] = 1;
  t.consumers.resize(g.values().size());
  for (size_t s = 0; s < order.size(); ++s) {
    const ir::NodeId id = order[s];
    HYRT_CHECK(id >= 0 && static_cast<size_t>(id) < num_nodes && t.step_of[id] < 0,
               kInvalidArgument, "placement: order entry ", s, " (node ", id,
               ") is out of range or repeated");
    t.step_of[id] = static_cast<int>(s);
    const ir::Node& n = g.node(id);
    for (ir::ValueId in : n.inputs) {
      HYRT_CHECK(defined[in], kInvalidArgument, "placement: ", describe(g, n),
                 " runs before its input '", g.value(in).name, "' is produced");
      if (g.value(in).kind == ir::ValueKind::kWeight) continue;
      auto& c = t.consumers[in];
      if (c.empty() || c.back() != id) c.push_back(id);
    }
    defined[n.output] = 1;
  }

  const int nb = static_cast<int>(backends.size());
  t.supported.assign(num_nodes, std::vector<char>(nb, 0));
  t.est.assign(num_nodes, std::vector<double>(nb, 0.0));
  for (const ir::Node& n : g.nodes()) {
    bool any = false;
    for (int b = 0; b < nb; ++b) {
      if (!backends[b]->supports(g, n) || !holds_wide_range(g, n, *backends[b])) continue;
      const double us = backends[b]->estimate_us(g, n);
      HYRT_CHECK(std::isfinite(us) && us >= 0, kInvalidArgument, "placement: backend '",
                 backends[b]->name(), "' estimates ", us, " us for ", describe(g, n));
      t.supported[n.id][b] = 1;
      t.est[n.id][b] = us;
      any = true;
    }
    HYRT_CHECK(any, kUnsupported, "no backend supports ", describe(g, n), " (",
               dtype_name(g.value(n.output).dtype), " output)");
  }
  return t;
}

Placement evaluate(const Tables& t, std::vector<int> backend_of, const CopyCostModel& copy) {
  const ir::Graph& g = t.graph;
  const int nb = t.num_backends();
  Placement p;
  for (const Backend* b : t.backends)
    p.backend_names.emplace_back(b->name());
  p.backend_of = std::move(backend_of);
  p.order.assign(t.order.begin(), t.order.end());
  p.reason.assign(g.nodes().size(), {});
  p.resident_weight_bytes.assign(nb, 0);

  std::vector<int> op_index(ir::kNumOpKinds, -1);
  for (const ir::Node& n : g.nodes())
    op_index[static_cast<int>(n.op)] = 0;
  for (int k = 0; k < ir::kNumOpKinds; ++k) {
    if (op_index[k] < 0) continue;
    op_index[k] = static_cast<int>(p.by_op.size());
    p.by_op.push_back(
        {static_cast<ir::OpKind>(k), std::vector<int>(nb, 0), std::vector<double>(nb, 0.0)});
  }

  // Where each value's data is (its producer's backend; graph inputs: the host), and
  // which backends already received a copy (a bit per backend; nb is small).
  auto home = [&](ir::ValueId v) {
    const ir::Value& val = g.value(v);
    return val.kind == ir::ValueKind::kIntermediate ? p.backend_of[val.producer] : 0;
  };
  auto after_step = [&](ir::ValueId v) {
    const ir::Value& val = g.value(v);
    return val.kind == ir::ValueKind::kIntermediate ? t.step_of[val.producer] : -1;
  };
  std::vector<std::vector<char>> has(g.values().size());
  auto add_copy = [&](ir::ValueId v, int to, int before) {
    auto& h = has[v];
    if (h.empty()) h.assign(nb, 0);
    if (h[to]) return;
    h[to] = 1;
    const size_t bytes = g.value(v).bytes();
    p.copies.push_back({v, home(v), to, bytes, after_step(v), before});
    p.copy_bytes += bytes;
    p.copy_us += copy.cost_us(bytes);
  };

  std::vector<std::vector<char>> weight_on(g.values().size());
  for (size_t s = 0; s < t.order.size(); ++s) {
    const ir::Node& n = g.node(t.order[s]);
    const int b = p.backend_of[n.id];
    HYRT_CHECK(b >= 0 && b < nb && t.ok(n.id, b), kInvalidArgument, "placement: ", describe(g, n),
               " assigned to backend ", b, ", which cannot run it");
    p.node_us += t.est[n.id][b];
    OpKindPlacement& k = p.by_op[op_index[static_cast<int>(n.op)]];
    ++k.nodes[b];
    k.estimated_us[b] += t.est[n.id][b];
    for (ir::ValueId in : n.inputs) {
      if (g.value(in).kind == ir::ValueKind::kWeight) {
        auto& w = weight_on[in];
        if (w.empty()) w.assign(nb, 0);
        if (!w[b]) p.resident_weight_bytes[b] += g.value(in).bytes();
        w[b] = 1;
        continue;
      }
      if (home(in) != b) add_copy(in, b, static_cast<int>(s));
    }
  }
  for (ir::ValueId v : g.outputs())
    if (home(v) != 0) add_copy(v, 0, static_cast<int>(t.order.size()));
  std::stable_sort(p.copies.begin(), p.copies.end(), [](const ValueCopy& a, const ValueCopy& b) {
    return std::tie(a.before_step, a.value, a.to) < std::tie(b.before_step, b.value, b.to);
  });
  return p;
}

// The cheapest accelerator (index >= 1) that supports `n`, or -1.
int best_accelerator(const Tables& t, ir::NodeId n) {
  int best = -1;
  for (int b = 1; b < t.num_backends(); ++b)
    if (t.ok(n, b) && (best < 0 || t.est[n][b] < t.est[n][best])) best = b;
  return best;
}

// The cheapest backend that supports `n` (there is one: build_tables checked).
int cheapest(const Tables& t, ir::NodeId n) {
  int best = -1;
  for (int b = 0; b < t.num_backends(); ++b)
    if (t.ok(n, b) && (best < 0 || t.est[n][b] < t.est[n][best])) best = b;
  return best;
}

// kHost / kHybrid / kDevice: each node where the mode wants it, else on the host, else on
// the cheapest backend that can run it; `reasons` (optional) records each such fallback.
std::vector<int> mode_assignment(const Tables& t, PlacementMode mode,
                                 std::vector<std::string>* reasons) {
  const ir::Graph& g = t.graph;
  const bool have_accelerator = t.num_backends() > 1;
  std::vector<int> backend_of(g.nodes().size(), -1);
  for (ir::NodeId id : t.order) {
    const ir::Node& n = g.node(id);
    const bool wants_accel =
        have_accelerator && (mode == PlacementMode::kDevice ||
                             (mode == PlacementMode::kHybrid && ir::op_traits(n.op).gemm_class));
    int b = wants_accel ? best_accelerator(t, id) : 0;
    std::string why;
    if (b < 0) {
      why = str_cat(t.num_backends() == 2 ? std::string(t.backends[1]->name()) : "no accelerator",
                    t.num_backends() == 2 ? " does not support " : " supports ", describe(g, n));
      b = 0;
    }
    if (!t.ok(id, b)) {
      const int fallback = cheapest(t, id);
      why = str_cat(why.empty() ? "" : why + "; ", t.backends[b]->name(), " does not support ",
                    describe(g, n));
      b = fallback;
    }
    if (!why.empty() && reasons) (*reasons)[id] = str_cat(why, "; on ", t.backends[b]->name());
    backend_of[id] = b;
  }
  return backend_of;
}

// Dinic's maximum flow on double capacities; after max_flow(), on_source_side() gives the
// minimum cut.
class MaxFlow {
 public:
  explicit MaxFlow(int vertices) : head_(vertices, -1), level_(vertices), it_(vertices) {}
  void add_edge(int from, int to, double cap) {
    edges_.push_back({to, head_[from], cap});
    head_[from] = static_cast<int>(edges_.size()) - 1;
    edges_.push_back({from, head_[to], 0.0});
    head_[to] = static_cast<int>(edges_.size()) - 1;
  }
  double max_flow(int s, int t, double eps) {
    eps_ = eps;
    double flow = 0;
    while (bfs(s, t)) {
      it_ = head_;
      while (true) {
        const double f = dfs(s, t, std::numeric_limits<double>::infinity());
        if (f <= eps_) break;
        flow += f;
      }
    }
    bfs(s, t);  // leaves level_ >= 0 exactly on the source side of the cut
    return flow;
  }
  bool on_source_side(int v) const { return level_[v] >= 0; }

 private:
  struct Edge {
    int to, next;
    double cap;
  };
  bool bfs(int s, int t) {
    std::fill(level_.begin(), level_.end(), -1);
    std::queue<int> q;
    level_[s] = 0;
    q.push(s);
    while (!q.empty()) {
      const int v = q.front();
      q.pop();
      for (int e = head_[v]; e >= 0; e = edges_[e].next)
        if (edges_[e].cap > eps_ && level_[edges_[e].to] < 0) {
          level_[edges_[e].to] = level_[v] + 1;
          q.push(edges_[e].to);
        }
    }
    return level_[t] >= 0;
  }
  // Iterative DFS would avoid deep recursion; the level graph's depth is bounded by the
  // longest shortest path, which for a DAG of nodes is the graph's depth (thousands at
  // most for SD-class models), well within the stack.
  double dfs(int v, int t, double pushed) {
    if (v == t) return pushed;
    for (int& e = it_[v]; e >= 0; e = edges_[e].next) {
      Edge& ed = edges_[e];
      if (ed.cap <= eps_ || level_[ed.to] != level_[v] + 1) continue;
      const double f = dfs(ed.to, t, std::min(pushed, ed.cap));
      if (f > eps_) {
        ed.cap -= f;
        edges_[e ^ 1].cap += f;
        return f;
      }
    }
    return 0;
  }
  std::vector<Edge> edges_;
  std::vector<int> head_, level_, it_;
  double eps_ = 0;
};

// kAuto between the host (0) and accelerator `a`: an exact minimum of node + copy cost
// over all host/`a` assignments, as an s-t minimum cut. s = host side, t = `a` side.
//   node n:  s -> n  cap est_a(n)    (cut when n runs on a)
//            n -> t  cap est_h(n)    (cut when n runs on the host)
//   value v produced by p (s for graph inputs), read by consumers C:
//     host->a copy, paid iff p on host and some c on a:   p -> A cap copy(v), A -> c inf
//     a->host copy, paid iff p on a and some c (or graph output) on host:
//                                                         c -> B inf, B -> p cap copy(v)
// A and B sit on whichever side makes their edges cheapest, so the cut equals the cost.
// Returns an empty vector when some node can run on neither.
std::vector<int> min_cut_assignment(const Tables& t, int a, const CopyCostModel& copy) {
  const ir::Graph& g = t.graph;
  const int num_nodes = static_cast<int>(g.nodes().size());
  const int num_values = static_cast<int>(g.values().size());
  for (ir::NodeId id : t.order)
    if (!t.ok(id, 0) && !t.ok(id, a)) return {};
  double finite = 1.0;
  for (ir::NodeId id : t.order)
    finite += t.est[id][0] + t.est[id][a];
  for (const ir::Value& v : g.values())
    if (v.kind != ir::ValueKind::kWeight) finite += 2 * copy.cost_us(v.bytes());
  const double inf = finite * 4;  // above any finite cut, so an infinite edge is never cut

  const int s = 0, sink = 1, node0 = 2, aux0 = node0 + num_nodes;
  MaxFlow flow(aux0 + 2 * num_values);
  for (ir::NodeId id : t.order) {
    flow.add_edge(s, node0 + id, t.ok(id, a) ? t.est[id][a] : inf);
    flow.add_edge(node0 + id, sink, t.ok(id, 0) ? t.est[id][0] : inf);
  }
  for (const ir::Value& v : g.values()) {
    if (v.kind == ir::ValueKind::kWeight) continue;
    const auto& readers = t.consumers[v.id];
    const double c = copy.cost_us(v.bytes());
    const int producer = v.kind == ir::ValueKind::kIntermediate ? node0 + v.producer : s;
    if (!readers.empty()) {
      const int A = aux0 + 2 * v.id;
      flow.add_edge(producer, A, c);
      for (ir::NodeId r : readers)
        flow.add_edge(A, node0 + r, inf);
    }
    if (producer != s && (!readers.empty() || v.is_output)) {
      const int B = aux0 + 2 * v.id + 1;
      flow.add_edge(B, producer, c);
      for (ir::NodeId r : readers)
        flow.add_edge(node0 + r, B, inf);
      if (v.is_output) flow.add_edge(s, B, inf);
    }
  }
  flow.max_flow(s, sink, finite * 1e-12);
  std::vector<int> backend_of(num_nodes, -1);
  for (ir::NodeId id : t.order)
    backend_of[id] = flow.on_source_side(node0 + id) ? 0 : a;
  return backend_of;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4)
    b /= 1024, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", b, units[u]);
  return buf;
}

}  // namespace

std::string_view placement_mode_name(PlacementMode mode) {
  switch (mode) {
    case PlacementMode::kHost:
      return "host";
    case PlacementMode::kHybrid:
      return "hybrid";
    case PlacementMode::kDevice:
      return "device";
    case PlacementMode::kAuto:
      return "auto";
  }
  return "?";
}

PlacementMode parse_placement_mode(std::string_view name) {
  for (PlacementMode m :
       {PlacementMode::kHost, PlacementMode::kHybrid, PlacementMode::kDevice, PlacementMode::kAuto})
    if (name == placement_mode_name(m)) return m;
  fail(ErrorCode::kInvalidArgument, "unknown placement '", name,
       "' (valid: host, hybrid, device, auto)");
}

Placement evaluate_assignment(const ir::Graph& graph, std::span<const ir::NodeId> order,
                              std::span<const backend::Backend* const> backends,
                              std::vector<int> backend_of, const CopyCostModel& copy) {
  HYRT_CHECK(backend_of.size() == graph.nodes().size(), kInvalidArgument,
             "placement: assignment has ", backend_of.size(), " entries for ", graph.nodes().size(),
             " nodes");
  return evaluate(build_tables(graph, order, backends), std::move(backend_of), copy);
}

Placement place(const ir::Graph& graph, std::span<const ir::NodeId> order,
                std::span<const backend::Backend* const> backends,
                const PlacementOptions& options) {
  const Tables t = build_tables(graph, order, backends);
  std::vector<std::string> reasons(graph.nodes().size());
  Placement best;
  if (options.mode != PlacementMode::kAuto) {
    best = evaluate(t, mode_assignment(t, options.mode, &reasons), options.copy);
  } else {
    // The exact two-way optimum per accelerator, then the fixed modes as candidates: they
    // can only win with several accelerators (mixing them) or by rounding.
    bool have = false;
    auto consider = [&](std::vector<int> backend_of) {
      if (backend_of.empty()) return;
      Placement p = evaluate(t, std::move(backend_of), options.copy);
      const double tol = 1e-9 * std::max(1.0, p.total_us());
      if (!have || p.total_us() < best.total_us() - tol) {
        best = std::move(p);
        have = true;
      }
    };
    for (int a = 1; a < t.num_backends(); ++a)
      consider(min_cut_assignment(t, a, options.copy));
    for (PlacementMode m : {PlacementMode::kHost, PlacementMode::kHybrid, PlacementMode::kDevice})
      consider(mode_assignment(t, m, nullptr));
    // kAuto has no wish to fall back from except the host: note nodes it could not run.
    for (ir::NodeId id : order)
      if (best.backend_of[id] != 0 && !t.ok(id, 0))
        reasons[id] =
            str_cat(backends[0]->name(), " does not support ", describe(graph, graph.node(id)),
                    "; on ", backends[best.backend_of[id]]->name());
  }
  best.mode = options.mode;
  best.reason = std::move(reasons);
  best.fallback_nodes = static_cast<int>(std::count_if(best.reason.begin(), best.reason.end(),
                                                       [](const auto& r) { return !r.empty(); }));
  return best;
}

std::string Placement::summary() const {
  const int nb = static_cast<int>(backend_names.size());
  std::string out =
      str_cat("placement ", placement_mode_name(mode), ": estimated ",
              static_cast<int64_t>(std::llround(total_us())), " us per run (nodes ",
              static_cast<int64_t>(std::llround(node_us)), " + copies ",
              static_cast<int64_t>(std::llround(copy_us)), ")",
              overlapped_us > 0 ? str_cat("; ordered for host/device overlap: estimated ",
                                          static_cast<int64_t>(std::llround(overlapped_us)), " us")
                                : std::string(),
              "\n");
  char buf[64];
  std::snprintf(buf, sizeof buf, "  %-20s", "op");
  out += buf;
  for (const auto& name : backend_names) {
    std::snprintf(buf, sizeof buf, " %8.8s", name.c_str());
    out += buf;
  }
  out += "\n";
  for (const OpKindPlacement& k : by_op) {
    std::snprintf(buf, sizeof buf, "  %-20.20s", std::string(ir::op_name(k.op)).c_str());
    out += buf;
    for (int b = 0; b < nb; ++b) {
      std::snprintf(buf, sizeof buf, " %8d", k.nodes[b]);
      out += buf;
    }
    out += "\n";
  }
  out += str_cat("  copies per run: ", copies.size(), " (",
                 human_bytes(static_cast<double>(copy_bytes)), ")\n  resident weights:");
  for (int b = 0; b < nb; ++b)
    out += str_cat(" ", backend_names[b], " ",
                   human_bytes(static_cast<double>(resident_weight_bytes[b])));
  out += "\n";
  if (fallback_nodes > 0) {
    const auto first =
        std::find_if(reason.begin(), reason.end(), [](const auto& r) { return !r.empty(); });
    out += str_cat("  fallbacks: ", fallback_nodes, " node(s), e.g. ", *first, "\n");
  }
  return out;
}

}  // namespace hyrt::plan

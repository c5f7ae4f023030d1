#include "plan/memory.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace hyrt::plan {

namespace {
int64_t align_up(int64_t v, int64_t a) {
  return (v + a - 1) / a * a;
}
}  // namespace

OffsetAssignment assign_offsets(std::span<const BufferUse> uses, int64_t alignment) {
  OffsetAssignment out;
  out.offsets.assign(uses.size(), -1);
  std::vector<size_t> order(uses.size());
  std::iota(order.begin(), order.end(), 0);
  // Largest first: big buffers get the low, contiguous space; small ones fill the gaps.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (uses[a].bytes != uses[b].bytes) return uses[a].bytes > uses[b].bytes;
    return uses[a].first < uses[b].first;
  });
  std::vector<size_t> placed;
  placed.reserve(uses.size());
  struct Interval {
    int64_t begin, end;
  };
  std::vector<Interval> busy;
  for (size_t i : order) {
    const BufferUse& u = uses[i];
    const int64_t size = align_up(std::max<int64_t>(u.bytes, 1), alignment);
    busy.clear();
    for (size_t j : placed) {
      const BufferUse& v = uses[j];
      if (v.first <= u.last && u.first <= v.last)
        busy.push_back(
            {out.offsets[j], out.offsets[j] + align_up(std::max<int64_t>(v.bytes, 1), alignment)});
    }
    std::sort(busy.begin(), busy.end(),
              [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
    // Best fit: the smallest gap between simultaneously live buffers that holds `size`;
    // otherwise the first offset past all of them.
    int64_t best = -1, best_gap = INT64_MAX, cursor = 0;
    for (const Interval& b : busy) {
      if (b.begin > cursor) {
        const int64_t gap = b.begin - cursor;
        if (gap >= size && gap < best_gap) {
          best = cursor;
          best_gap = gap;
        }
      }
      cursor = std::max(cursor, b.end);
    }
    if (best < 0) best = cursor;
    out.offsets[i] = best;
    out.arena_bytes = std::max(out.arena_bytes, best + size);
    placed.push_back(i);
  }
  return out;
}

int64_t live_bytes_lower_bound(std::span<const BufferUse> uses, int64_t alignment) {
  int32_t last_step = 0;
  for (const auto& u : uses)
    last_step = std::max(last_step, u.last);
  std::vector<int64_t> delta(static_cast<size_t>(last_step) + 2, 0);
  for (const auto& u : uses) {
    const int64_t size = align_up(std::max<int64_t>(u.bytes, 1), alignment);
    delta[u.first] += size;
    delta[u.last + 1] -= size;
  }
  int64_t live = 0, peak = 0;
  for (int64_t d : delta) {
    live += d;
    peak = std::max(peak, live);
  }
  return peak;
}

std::vector<ir::NodeId> default_order(const ir::Graph& graph) {
  std::vector<ir::NodeId> order(graph.nodes().size());
  std::iota(order.begin(), order.end(), 0);
  return order;
}

MemoryPlan plan_memory(const ir::Graph& graph, std::span<const ir::NodeId> order,
                       const MemoryPlanOptions& options) {
  return std::move(plan_placed_memory(graph, order, Residency{}, options)[0]);
}

std::vector<MemoryPlan> plan_placed_memory(const ir::Graph& graph,
                                           std::span<const ir::NodeId> order,
                                           const Residency& residency,
                                           const MemoryPlanOptions& options) {
  const size_t nv = graph.values().size();
  const int nb = residency.num_backends;
  const int32_t steps = static_cast<int32_t>(order.size());
  HYRT_CHECK(nb >= 1, kInvalidArgument, "memory plan: no backend");
  HYRT_CHECK(order.size() == graph.nodes().size(), kInvalidArgument, "execution order lists ",
             order.size(), " nodes, graph has ", graph.nodes().size());
  HYRT_CHECK(residency.backend_of.empty() || residency.backend_of.size() == graph.nodes().size(),
             kInvalidArgument, "memory plan: backend_of lists ", residency.backend_of.size(),
             " nodes, graph has ", graph.nodes().size());
  auto backend_of = [&](ir::NodeId n) {
    return residency.backend_of.empty() ? 0 : residency.backend_of[n];
  };
  auto bytes_on = [&](const ir::Value& v, int b) {
    return residency.bytes ? residency.bytes(v, b) : static_cast<int64_t>(v.bytes());
  };

  // Step at which each node runs.
  std::vector<int32_t> step_of(graph.nodes().size(), -1);
  for (int32_t s = 0; s < steps; ++s) {
    const ir::NodeId n = order[s];
    HYRT_CHECK(n >= 0 && static_cast<size_t>(n) < step_of.size() && step_of[n] < 0,
               kInvalidArgument, "execution order lists node ", n, " twice or out of range");
    step_of[n] = s;
  }
  auto home = [&](const ir::Value& v) {
    return v.kind == ir::ValueKind::kIntermediate ? backend_of(v.producer) : 0;
  };

  // Per (backend, value): held there, and first/last step of that holding.
  auto at = [&](int b, ir::ValueId v) { return static_cast<size_t>(b) * nv + v; };
  std::vector<char> held(nv * nb, 0);
  std::vector<int32_t> first(nv * nb, 0), last(nv * nb, -1);
  for (const ir::Value& v : graph.values()) {
    if (v.kind == ir::ValueKind::kWeight) continue;
    const size_t i = at(home(v), v.id);
    held[i] = 1;
    if (v.kind == ir::ValueKind::kIntermediate) first[i] = last[i] = step_of[v.producer];
  }
  HYRT_CHECK(residency.step_workspace.empty() ||
                 residency.step_workspace.size() == static_cast<size_t>(steps),
             kInvalidArgument, "memory plan: ", residency.step_workspace.size(),
             " step workspaces for ", steps, " steps");
  HYRT_CHECK(residency.windows.empty() || residency.windows.size() == residency.copies.size(),
             kInvalidArgument, "memory plan: ", residency.windows.size(), " copy windows for ",
             residency.copies.size(), " copies");
  for (size_t k = 0; k < residency.copies.size(); ++k) {
    const ValueCopy& c = residency.copies[k];
    const CopyWindow w =
        residency.windows.empty() ? CopyWindow{c.before_step, c.before_step} : residency.windows[k];
    HYRT_CHECK(c.from >= 0 && c.from < nb && c.to >= 0 && c.to < nb && c.from != c.to &&
                   c.value >= 0 && static_cast<size_t>(c.value) < nv && c.before_step >= 0 &&
                   c.before_step <= steps,
               kInvalidArgument, "memory plan: malformed copy of value ", c.value);
    const size_t src = at(c.from, c.value), dst = at(c.to, c.value);
    HYRT_CHECK(held[src], kInvalidArgument, "memory plan: copy of '", graph.value(c.value).name,
               "' from backend ", c.from, ", which does not hold it");
    HYRT_CHECK(w.issue_step > c.after_step && w.issue_step <= c.before_step &&
                   w.source_until >= w.issue_step,
               kInvalidArgument, "memory plan: copy of '", graph.value(c.value).name,
               "' issued before step ", w.issue_step, " (source until ", w.source_until,
               ") outside its window (after ", c.after_step, ", before ", c.before_step, ")");
    last[src] = std::max(last[src], std::min<int32_t>(w.source_until, steps));
    if (!held[dst]) first[dst] = last[dst] = w.issue_step;
    first[dst] = std::min(first[dst], w.issue_step);
    held[dst] = 1;
  }
  // Graph outputs are read by the caller after the run, on backend 0 (the placement
  // copies those produced elsewhere there).
  for (ir::ValueId v : graph.outputs()) {
    HYRT_CHECK(held[at(0, v)], kInvalidArgument, "memory plan: graph output '", graph.value(v).name,
               "' never reaches backend 0");
    last[at(0, v)] = steps;
  }
  for (int32_t s = 0; s < steps; ++s) {
    const ir::Node& n = graph.node(order[s]);
    const int b = backend_of(n.id);
    HYRT_CHECK(b >= 0 && b < nb, kInvalidArgument, "memory plan: node '", n.name, "' on backend ",
               b, " of ", nb);
    for (ir::ValueId in : n.inputs) {
      const ir::Value& v = graph.value(in);
      if (v.kind == ir::ValueKind::kWeight) continue;
      HYRT_CHECK(v.kind != ir::ValueKind::kIntermediate || step_of[v.producer] < s,
                 kInvalidArgument, "execution order runs '", n.name,
                 "' before the producer of its input '", v.name, "'");
      const size_t i = at(b, in);
      HYRT_CHECK(held[i] && first[i] <= s, kInvalidArgument, "memory plan: '", n.name, "' reads '",
                 v.name, "' on backend ", b, ", where no copy brings it in time");
      last[i] = std::max(last[i], s);
    }
  }

  // Holdings the reusable prefix writes and later steps read: kept for the whole run.
  HYRT_CHECK(residency.reusable_prefix >= 0 && residency.reusable_prefix <= steps, kInvalidArgument,
             "memory plan: reusable prefix of ", residency.reusable_prefix, " steps in a run of ",
             steps);
  if (residency.reusable_prefix > 0)
    for (int b = 0; b < nb; ++b)
      for (const ir::Value& v : graph.values()) {
        const size_t i = at(b, v.id);
        const bool caller_written = v.kind == ir::ValueKind::kInput && home(v) == b;
        if (held[i] && !caller_written && first[i] < residency.reusable_prefix &&
            last[i] >= residency.reusable_prefix) {
          first[i] = 0;
          last[i] = steps;
        }
      }

  std::vector<MemoryPlan> plans(static_cast<size_t>(nb));
  for (int b = 0; b < nb; ++b) {
    MemoryPlan& plan = plans[b];
    plan.storage_of.assign(nv, ir::kNone);
    plan.offset.assign(nv, -1);
    plan.storage_use.assign(nv, BufferUse{});
    std::vector<bool> root_pinned(nv, false);  // graph inputs and outputs: never overwritten
    auto new_root = [&](const ir::Value& v) {
      const size_t i = at(b, v.id);
      plan.storage_of[v.id] = v.id;
      plan.storage_use[v.id] = {bytes_on(v, b), first[i], std::max(first[i], last[i])};
      root_pinned[v.id] =
          (home(v) == b && v.kind == ir::ValueKind::kInput) || (b == 0 && v.is_output);
      plan.naive_bytes += bytes_on(v, b);
    };
    // Values that arrive on b without a node of b producing them: graph inputs held at
    // home, and copies' destinations.
    for (const ir::Value& v : graph.values())
      if (v.kind != ir::ValueKind::kWeight && held[at(b, v.id)] &&
          (home(v) != b || v.kind == ir::ValueKind::kInput))
        new_root(v);

    for (int32_t s = 0; s < steps; ++s) {
      const ir::Node& n = graph.node(order[s]);
      if (backend_of(n.id) != b) continue;
      const ir::Value& out = graph.value(n.output);
      const ir::OpTraits traits = ir::op_traits(n.op);
      const ir::Value* in0 = n.inputs.empty() ? nullptr : &graph.value(n.inputs[0]);
      ir::ValueId root = ir::kNone;
      if (in0 && in0->kind != ir::ValueKind::kWeight) root = plan.storage_of[in0->id];
      const int32_t out_last = last[at(b, out.id)];

      // A view shares its input's storage unless the backend holds the two in different
      // dtypes (CUDA: a rank-1 f32 value reshaped to rank 2 becomes f16) — then it is a
      // conversion with its own buffer.
      if (traits.view && root != ir::kNone && bytes_on(out, b) == bytes_on(*in0, b)) {
        plan.storage_of[out.id] = root;
        BufferUse& u = plan.storage_use[root];
        u.first = std::min(u.first, first[at(b, out.id)]);  // a kept view keeps its storage
        u.last = std::max(u.last, out_last);
        if (out.is_output && b == 0) root_pinned[root] = true;
        plan.naive_bytes += bytes_on(out, b);
        ++plan.view_nodes;
        continue;
      }
      const bool in_place = options.allow_in_place && traits.in_place_input0 && root != ir::kNone &&
                            !root_pinned[root] && !(out.is_output && b == 0) &&
                            plan.storage_use[root].last == s &&
                            plan.storage_use[root].bytes == bytes_on(out, b) &&
                            out.dtype == in0->dtype;  // not a layer norm writing s8rows
      if (in_place) {
        plan.storage_of[out.id] = root;
        plan.storage_use[root].first = std::min(plan.storage_use[root].first, first[at(b, out.id)]);
        plan.storage_use[root].last = std::max(s, out_last);
        plan.naive_bytes += bytes_on(out, b);
        ++plan.in_place_nodes;
        continue;
      }
      new_root(out);
    }

    // Place the storage roots, then the steps' workspaces (live during their step only).
    std::vector<ir::ValueId> roots;
    std::vector<BufferUse> uses;
    for (size_t v = 0; v < nv; ++v)
      if (plan.storage_of[v] == static_cast<ir::ValueId>(v)) {
        roots.push_back(static_cast<ir::ValueId>(v));
        uses.push_back(plan.storage_use[v]);
      }
    std::vector<int32_t> workspace_steps;
    for (int32_t s = 0; s < static_cast<int32_t>(residency.step_workspace.size()); ++s)
      if (residency.step_workspace[s] > 0 && backend_of(order[s]) == b) {
        workspace_steps.push_back(s);
        uses.push_back({residency.step_workspace[s], s, s});
        plan.naive_bytes += residency.step_workspace[s];
      }
    const OffsetAssignment a = assign_offsets(uses, options.alignment);
    for (size_t i = 0; i < roots.size(); ++i)
      plan.offset[roots[i]] = a.offsets[i];
    plan.workspace_offset.assign(static_cast<size_t>(steps), -1);
    for (size_t i = 0; i < workspace_steps.size(); ++i)
      plan.workspace_offset[workspace_steps[i]] = a.offsets[roots.size() + i];
    for (size_t v = 0; v < nv; ++v)
      if (plan.storage_of[v] != ir::kNone) plan.offset[v] = plan.offset[plan.storage_of[v]];
    plan.arena_bytes = a.arena_bytes;
    plan.lower_bound = live_bytes_lower_bound(uses, options.alignment);
  }
  return plans;
}

}  // namespace hyrt::plan

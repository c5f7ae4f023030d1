#include "plan/memory.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace hyrt::plan {

namespace {
int64_t align_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }
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
        busy.push_back({out.offsets[j], out.offsets[j] + align_up(std::max<int64_t>(v.bytes, 1), alignment)});
    }
    std::sort(busy.begin(), busy.end(), [](const Interval& a, const Interval& b) {
      return a.begin < b.begin;
    });
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
  for (const auto& u : uses) last_step = std::max(last_step, u.last);
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
  const size_t nv = graph.values().size();
  const int32_t steps = static_cast<int32_t>(order.size());
  HYRT_CHECK(order.size() == graph.nodes().size(), kInvalidArgument,
             "execution order lists ", order.size(), " nodes, graph has ", graph.nodes().size());

  // Step at which each node runs, and each value's first/last step.
  std::vector<int32_t> step_of(graph.nodes().size(), -1);
  for (int32_t s = 0; s < steps; ++s) {
    const ir::NodeId n = order[s];
    HYRT_CHECK(n >= 0 && static_cast<size_t>(n) < step_of.size() && step_of[n] < 0,
               kInvalidArgument, "execution order lists node ", n, " twice or out of range");
    step_of[n] = s;
  }
  std::vector<int32_t> first(nv, 0), last(nv, -1);
  for (const ir::Value& v : graph.values()) {
    if (v.kind == ir::ValueKind::kIntermediate) first[v.id] = last[v.id] = step_of[v.producer];
    if (v.is_output) last[v.id] = steps;  // read by the caller after the run
  }
  for (int32_t s = 0; s < steps; ++s) {
    for (ir::ValueId in : graph.node(order[s]).inputs) {
      const ir::Value& v = graph.value(in);
      HYRT_CHECK(v.kind != ir::ValueKind::kIntermediate || step_of[v.producer] < s,
                 kInvalidArgument, "execution order runs '", graph.node(order[s]).name,
                 "' before the producer of its input '", v.name, "'");
      last[in] = std::max(last[in], s);
    }
  }

  MemoryPlan plan;
  plan.storage_of.assign(nv, ir::kNone);
  plan.offset.assign(nv, -1);
  plan.storage_use.assign(nv, BufferUse{});
  std::vector<bool> root_pinned(nv, false);  // graph inputs and outputs: never overwritten

  auto new_root = [&](const ir::Value& v) {
    plan.storage_of[v.id] = v.id;
    plan.storage_use[v.id] = {static_cast<int64_t>(v.bytes()), first[v.id], std::max(first[v.id], last[v.id])};
    root_pinned[v.id] = v.kind == ir::ValueKind::kInput || v.is_output;
    plan.naive_bytes += static_cast<int64_t>(v.bytes());
  };
  for (ir::ValueId id : graph.inputs()) new_root(graph.value(id));

  for (int32_t s = 0; s < steps; ++s) {
    const ir::Node& n = graph.node(order[s]);
    const ir::Value& out = graph.value(n.output);
    const ir::OpTraits traits = ir::op_traits(n.op);
    const ir::Value* in0 = n.inputs.empty() ? nullptr : &graph.value(n.inputs[0]);
    ir::ValueId root = ir::kNone;
    if (in0 && in0->kind != ir::ValueKind::kWeight) root = plan.storage_of[in0->id];

    if (traits.view && root != ir::kNone) {
      plan.storage_of[out.id] = root;
      BufferUse& u = plan.storage_use[root];
      u.last = std::max(u.last, last[out.id]);
      if (out.is_output) root_pinned[root] = true;
      plan.naive_bytes += static_cast<int64_t>(out.bytes());
      ++plan.view_nodes;
      continue;
    }
    const bool in_place = options.allow_in_place && traits.in_place_input0 && root != ir::kNone &&
                          !root_pinned[root] && !out.is_output &&
                          plan.storage_use[root].last == s &&
                          plan.storage_use[root].bytes == static_cast<int64_t>(out.bytes());
    if (in_place) {
      plan.storage_of[out.id] = root;
      plan.storage_use[root].last = std::max(s, last[out.id]);
      plan.naive_bytes += static_cast<int64_t>(out.bytes());
      ++plan.in_place_nodes;
      continue;
    }
    new_root(out);
  }

  // Place the storage roots.
  std::vector<ir::ValueId> roots;
  std::vector<BufferUse> uses;
  for (size_t v = 0; v < nv; ++v)
    if (plan.storage_of[v] == static_cast<ir::ValueId>(v)) {
      roots.push_back(static_cast<ir::ValueId>(v));
      uses.push_back(plan.storage_use[v]);
    }
  const OffsetAssignment a = assign_offsets(uses, options.alignment);
  for (size_t i = 0; i < roots.size(); ++i) plan.offset[roots[i]] = a.offsets[i];
  for (size_t v = 0; v < nv; ++v)
    if (plan.storage_of[v] != ir::kNone) plan.offset[v] = plan.offset[plan.storage_of[v]];
  plan.arena_bytes = a.arena_bytes;
  plan.lower_bound = live_bytes_lower_bound(uses, options.alignment);
  return plan;
}

}  // namespace hyrt::plan

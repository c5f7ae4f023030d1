// Memory planning: from an execution order, value lifetimes -> one arena with a byte
// offset per buffer. Pure functions: no allocation of the planned memory, no kernels.
//
// Model (XNNPACK/TFLite-style usage records):
//  - Every graph input and intermediate value lives in the arena; weights do not.
//  - A value's lifetime is [step that produces it, last step that reads it], inclusive;
//    graph inputs start at step 0, graph outputs live until the end.
//  - A reshape output is a view of its input: it shares the input's storage.
//  - An op whose traits allow it (ir::op_traits(op).in_place_input0) writes over input 0
//    when that input (and everything sharing its storage) is dead afterwards, is not a
//    graph input or output, and has the same byte size. Such values share storage.
//  - Storages whose lifetimes overlap never overlap in memory. Offsets are assigned
//    greedily by size (largest first, best-fitting gap).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "ir/graph.h"
#include "plan/placement.h"

namespace hyrt::plan {

// One buffer to place: `bytes` live during steps [first, last] inclusive.
struct BufferUse {
  int64_t bytes = 0;
  int32_t first = 0;
  int32_t last = 0;
};

struct OffsetAssignment {
  std::vector<int64_t> offsets;  // per buffer, aligned
  int64_t arena_bytes = 0;       // peak: max(offset + aligned bytes)
};

// Places buffers so that any two with overlapping lifetimes are disjoint.
OffsetAssignment assign_offsets(std::span<const BufferUse> uses, int64_t alignment = 64);
// The lower bound for any placement: the maximum over steps of the aligned bytes live then.
int64_t live_bytes_lower_bound(std::span<const BufferUse> uses, int64_t alignment = 64);

struct MemoryPlanOptions {
  bool allow_in_place = true;
  int64_t alignment = 64;
};

struct MemoryPlan {
  // Per ValueId: the value whose storage it uses (itself unless it is a view or was
  // computed in place), or ir::kNone for weights.
  std::vector<ir::ValueId> storage_of;
  // Per ValueId: byte offset of its data in the arena (-1 for weights).
  std::vector<int64_t> offset;
  // Per storage root (indexed by ValueId; unused entries are zero): lifetime used.
  std::vector<BufferUse> storage_use;
  int64_t arena_bytes = 0;  // the planned peak
  int64_t lower_bound = 0;  // max over steps of live bytes
  int64_t naive_bytes = 0;  // every input/intermediate value in its own buffer
  // Per step: offset of the step's kernel workspace in this arena, -1 if none here.
  std::vector<int64_t> workspace_offset;
  int in_place_nodes = 0;  // nodes that write over their input
  int view_nodes = 0;      // reshapes that share their input's storage
};

// `order` must list every node of `graph` once, each after the producers of its inputs.
MemoryPlan plan_memory(const ir::Graph& graph, std::span<const ir::NodeId> order,
                       const MemoryPlanOptions& options = {});
// When an asynchronous copy uses its two buffers (Residency::windows).
struct CopyWindow {
  int32_t issue_step = 0;    // ValueCopy::after_step + 1 <= issue_step <= before_step
  int32_t source_until = 0;  // >= issue_step
};

// Where the nodes of a placed graph run (plan/placement.h), as the memory planner needs it.
struct Residency {
  int num_backends = 1;
  // Per NodeId: the backend that runs it (Placement::backend_of); empty = all on backend 0.
  std::span<const int> backend_of;
  // The copies between backends (Placement::copies). A copy is made just before its
  // before_step runs: its source is live until then, its destination from then on.
  std::span<const ValueCopy> copies;
  // Bytes value `v` takes in backend `b`'s memory (backends may store activations in a
  // narrower dtype, Backend::storage_dtype); null = Value::bytes() everywhere.
  std::function<int64_t(const ir::Value& v, int b)> bytes;
  // Asynchronous copies (exec/executable.h, ExecOptions::overlap): per copy, parallel to
  // `copies`, the step before which it is issued (its destination is live from then on)
  // and the last step during which its source must stay intact (the copy may still be
  // reading it). Empty = copies made synchronously just before their before_step.
  std::span<const CopyWindow> windows;
  // Per step (in `order`), bytes of scratch the step's kernel uses while it runs
  // (backend::Kernel::workspace_bytes), on the step's backend; live during that step only.
  // Empty = none.
  std::span<const int64_t> step_workspace;
  // Steps [0, reusable_prefix) may be skipped in a run, their results kept from an earlier
  // run (the run-invariant prefix, exec/executable.h). Every holding written before step
  // reusable_prefix (a value produced there, or a copy's destination issued there) and read
  // at or after it is then kept for the whole run — steps [0, steps] — so that no other
  // buffer of any step, and no graph input the caller writes before a run, ever overlaps it,
  // and it is never written over in place. 0 = nothing is skipped.
  int32_t reusable_prefix = 0;
};

// One arena per backend for a placed graph. A value is held on its home backend (where
// its producer runs; graph inputs on backend 0) and on each backend a copy brings it to;
// every backend's holdings are planned as plan_memory plans one graph (views and in-place
// within a backend; copies' destinations are private and may be overwritten in place by
// their last reader). Result: per backend, a MemoryPlan whose offset/storage_of are -1 /
// kNone for values that backend does not hold.
std::vector<MemoryPlan> plan_placed_memory(const ir::Graph& graph,
                                           std::span<const ir::NodeId> order,
                                           const Residency& residency,
                                           const MemoryPlanOptions& options = {});

// The graph's insertion order (always valid).
std::vector<ir::NodeId> default_order(const ir::Graph& graph);

}  // namespace hyrt::plan

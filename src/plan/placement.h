// Placement: which backend runs each node, and which values cross between backends.
// A pure function of the graph, an execution order, the backends' answers to
// supports()/estimate_us() and a copy cost model — it allocates nothing and runs nothing,
// so it is unit-tested with fake backends (../shared/DESIGN.md, "src/plan").
//
// Model:
//  - backends[0] is the host. Graph inputs start there; graph outputs must end there.
//  - A value lives where its producer ran (graph inputs: on the host). Every other
//    backend that consumes it receives one copy, made once per run and shared by all of
//    that backend's consumers; a graph output produced off the host gets one copy to it.
//  - Weights are never copied per run: a weight is resident (uploaded once, in its stored
//    form) on every backend that runs one of its consumers; `resident_weight_bytes` says
//    how much that is per backend.
//  - A node is never placed on a backend whose supports() is false. When the mode asks
//    for one that cannot run it, the node falls back to the host (or, if the host cannot
//    run it either, to the cheapest backend that can) and `reason` says why. A node no
//    backend supports is an error (kUnsupported, naming the node).
//
// Modes:
//  - kHost:   every node on the host.
//  - kHybrid: GEMM-class nodes (ir::op_traits(op).gemm_class: linear, conv2d, attention)
//             on an accelerator, everything else on the host — the GEMM-only pattern.
//  - kDevice: every node an accelerator supports on it.
//    (With several accelerators, kHybrid/kDevice pick the one with the lowest estimate.)
//  - kAuto:   minimises  sum(estimate_us of each node on its backend)
//                      + sum over copies(latency_us + bytes / bytes_per_us).
//             With one accelerator this is solved exactly as an s-t minimum cut (host = s
//             side, accelerator = t side; a copy is paid once per value and direction via
//             one auxiliary vertex per value and direction — see placement.cpp). With
//             several accelerators each host/accelerator pair is solved that way, and the
//             cheapest of those and of the kHost/kHybrid/kDevice assignments is kept, so
//             kAuto is never estimated slower than the other three modes.
//             The sum ignores overlap of host and device work (streams); it is the serial
//             cost, which is what a single-stream executor pays.
//
// Thread safety: place() only reads its arguments and calls the backends' const
// supports()/estimate_us(), so it may run concurrently with anything that does not mutate
// them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/backend.h"
#include "ir/graph.h"

namespace hyrt::plan {

enum class PlacementMode { kHost, kHybrid, kDevice, kAuto };

// "host", "hybrid", "device", "auto".
std::string_view placement_mode_name(PlacementMode mode);
// Parses the names above; throws hyrt::Error(kInvalidArgument) listing the valid ones.
PlacementMode parse_placement_mode(std::string_view name);

// Cost of moving `bytes` between two backends: latency_us + bytes / bytes_per_us.
// The defaults are a PCIe 4/5 x16 link as cudaMemcpy sees it for pageable-free (pinned)
// buffers: ~25 GB/s and ~10 µs per copy including the launch and synchronisation.
struct CopyCostModel {
  double bytes_per_us = 25000.0;
  double latency_us = 10.0;
  double cost_us(size_t bytes) const {
    return latency_us + static_cast<double>(bytes) / bytes_per_us;
  }
};

struct PlacementOptions {
  PlacementMode mode = PlacementMode::kAuto;
  CopyCostModel copy;
};

// One copy of a value's data from the backend that holds it to another, once per run.
struct ValueCopy {
  ir::ValueId value = ir::kNone;
  int from = 0;  // backend index
  int to = 0;
  size_t bytes = 0;
  // Positions in `order`: the copy may start once step `after_step` has run (-1: a graph
  // input, available before the first step) and must be done before step `before_step`
  // runs (order.size(): a graph output, needed when the run ends).
  int after_step = -1;
  int before_step = 0;
};

// Where the nodes of one op kind ran: nodes[b] is the count on backend b.
struct OpKindPlacement {
  ir::OpKind op = ir::OpKind::kAdd;
  std::vector<int> nodes;
  std::vector<double> estimated_us;  // per backend, the sum of those nodes' estimates
};

struct Placement {
  PlacementMode mode = PlacementMode::kAuto;
  std::vector<std::string> backend_names;  // backends[b]->name(), for printing
  // The execution order the copies' steps index (place/evaluate_assignment's `order`;
  // plan::overlap_schedule may choose another).
  std::vector<ir::NodeId> order;
  // Per NodeId: the chosen backend index. Nodes absent from `order` keep -1.
  std::vector<int> backend_of;
  // Per NodeId: empty, or why the node is not where the mode asked for it
  // ("cuda does not support layer_norm node 'x'; on cpu").
  std::vector<std::string> reason;
  int fallback_nodes = 0;  // nodes with a non-empty reason
  // In `order` of before_step, then value id; each (value, to) pair appears once.
  std::vector<ValueCopy> copies;
  size_t copy_bytes = 0;  // sum of copies[].bytes: bytes moved per run
  double node_us = 0;     // sum of the chosen backends' estimates
  double copy_us = 0;     // sum of the copy cost model over `copies`
  double total_us() const { return node_us + copy_us; }
  // plan::overlap_schedule's estimate of a run in `order` with host and accelerator work
  // overlapping (0: the order was not chosen for overlap).
  double overlapped_us = 0;
  // Per backend: bytes of weights that must be resident there (each weight counted once
  // per backend that runs one of its consumers).
  std::vector<size_t> resident_weight_bytes;
  // One entry per op kind present in the graph, in OpKind order.
  std::vector<OpKindPlacement> by_op;

  // Multi-line text for `hyrt generate --verbose`: one line per op kind
  // ("  linear        cuda 64  cpu 0"), then copies and bytes per run, then fallbacks.
  std::string summary() const;
};

// True when `backend` holds every wide-range activation of `node` (its non-weight float
// inputs and its output with ir::Value::wide_range) in f32 or bf16 (Backend::storage_dtype).
// place() and fuse_epilogues() run a node only on a backend for which this and supports() hold.
bool holds_wide_range(const ir::Graph& graph, const ir::Node& node,
                      const backend::Backend& backend);

// Places every node listed in `order` (which must list each node of `graph` once, after
// the producers of its inputs). `backends` is non-empty, backends[0] the host (its
// device_type() must be kHost); pointers are borrowed for the call only.
// Throws hyrt::Error: kInvalidArgument for a bad order or backend list, kUnsupported for
// a node no backend supports.
Placement place(const ir::Graph& graph, std::span<const ir::NodeId> order,
                std::span<const backend::Backend* const> backends,
                const PlacementOptions& options = {});

// The cost `place` minimises, for any assignment (per NodeId backend index, every node
// of `order` assigned to a backend that supports it): fills copies, copy_bytes, node_us,
// copy_us, resident_weight_bytes and by_op of a Placement. Exposed so callers and tests
// can compare assignments under one cost model.
Placement evaluate_assignment(const ir::Graph& graph, std::span<const ir::NodeId> order,
                              std::span<const backend::Backend* const> backends,
                              std::vector<int> backend_of, const CopyCostModel& copy);

}  // namespace hyrt::plan

// What the planner's graph rewrites share (plan::fuse_epilogues, plan::stack_projections,
// plan::quantize_activations): who reads and writes each value, a graph rebuilt from another node
// by node with each new node placed where the old one it stands for was, and the placement of
// the result.
//
// Thread safety: plain values; use from one thread.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "ir/graph.h"
#include "plan/placement.h"

namespace hyrt::plan {

// Throws kInvalidArgument, naming `pass`, unless `placement` places every node of `graph`.
void check_placement_of(const ir::Graph* graph, const Placement& placement, const char* pass);

// Per value of a graph: the nodes reading it, once per read, in node order (a node reading a
// value twice is listed twice), and the node writing it (kNone for inputs and weights).
struct ValueUses {
  std::vector<std::vector<ir::NodeId>> readers;
  std::vector<ir::NodeId> producer;
  explicit ValueUses(const ir::Graph& g);
};

// A graph being rebuilt from `from` (placed by `placement`): from's inputs and weights first,
// in their order with their names and flags (ir::add_inputs_and_weights), then nodes added in
// an order valid for the new graph. Each new node is placed on the backend of the old node it
// stands for, with that node's placement reason, and keeps the range policy of its output.
class PlacedRewrite {
 public:
  PlacedRewrite(const ir::Graph& from, const Placement& placement);

  // Adds a node standing for old node `from_node`; returns its output.
  ir::ValueId emit(ir::OpKind op, std::vector<ir::ValueId> inputs, ir::Attrs attrs,
                   std::string name, ir::NodeId from_node);
  // Old node `n` as it was, its inputs mapped; maps and returns its output.
  ir::ValueId keep(const ir::Node& n);
  // The new graph's value for an old one (kNone for an intermediate not emitted yet), and the
  // mapping of an old intermediate to what now computes it.
  ir::ValueId map(ir::ValueId old) const { return map_[static_cast<size_t>(old)]; }
  void set_map(ir::ValueId old, ir::ValueId now) { map_[static_cast<size_t>(old)] = now; }
  std::vector<ir::ValueId> mapped(const std::vector<ir::ValueId>& old) const;
  // Id of the last node added.
  ir::NodeId last_node() const { return static_cast<ir::NodeId>(graph_->nodes().size()) - 1; }
  const ir::Graph& graph() const { return *graph_; }
  // The backend index of new node `n`.
  int backend_of(ir::NodeId n) const { return backend_of_[static_cast<size_t>(n)]; }

  // Marks from's outputs (mapped) as the new graph's, verifies it and returns it with its
  // placement: the kept backends and reasons, the input placement's mode, fallback count and
  // copies and estimates evaluated anew (evaluate_assignment with `copy`) in the new graph's
  // insertion order. Call once, last.
  struct Result {
    std::shared_ptr<const ir::Graph> graph;
    Placement placement;
  };
  Result finish(std::span<const backend::Backend* const> backends, const CopyCostModel& copy);

 private:
  const ir::Graph& from_;
  const Placement& placement_;
  std::shared_ptr<ir::Graph> graph_;
  std::vector<ir::ValueId> map_;
  std::vector<int> backend_of_;  // per new node
  std::vector<std::string> reason_;
};

// The placement of `graph`, a rewrite of the graph `before` placed that keeps its node count and
// backends (node i placed as before's node i): copies and estimates evaluated anew, mode,
// reasons and fallback count as they were.
Placement placement_of_rewrite(const ir::Graph& graph, const Placement& before,
                               std::span<const backend::Backend* const> backends,
                               const CopyCostModel& copy);

}  // namespace hyrt::plan

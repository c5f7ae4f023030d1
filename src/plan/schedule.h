// Scheduling a placed graph so that the host and the accelerators work at the same time.
//
// The executor issues an accelerator's work (kernels and copies) into its in-order queue
// without waiting, and the host thread waits only where a host step reads a value the
// accelerator produced (exec/executable.h, ExecOptions::overlap). What the two can do at
// once then depends only on the execution order: in a graph with independent chains — the
// two classifier-free-guidance halves of a UNet built per sample (models/components.h,
// UNetShape::independent_samples) — the host can run one chain's normalisations while the
// device runs the other chain's GEMMs and copies, if the order interleaves them.
//
// Model (the same as the executor's, with estimated times):
//  - The host runs its steps one after another; a step starts when the host reaches it and
//    its inputs are on the host (a download completes after its producer and the copy).
//  - Each accelerator runs its queue in order: a step or copy starts when the host has
//    issued it, its inputs are there, and everything queued before it is done.
//  - A copy is issued right after its source is produced (ValueCopy::after_step + 1) and
//    costs CopyCostModel::cost_us on the accelerator's queue.
// overlap_schedule orders the nodes greedily (list scheduling): repeatedly a ready
// accelerator step if there is one (issuing it costs the host nothing), else the ready host
// step that can start earliest; ties go to the longest estimated path to the graph's end.
//
// Pure functions of their arguments (the backends' estimate_us only): unit-tested with
// fake backends.
#pragma once

#include <span>
#include <vector>

#include "backend/backend.h"
#include "ir/graph.h"
#include "plan/placement.h"

namespace hyrt::plan {

// Estimated time of one run of `placement` (in its own order) as the model above executes it.
double simulate_overlapped_us(const ir::Graph& graph, const Placement& placement,
                              std::span<const backend::Backend* const> backends,
                              const CopyCostModel& copy = {});

// `placement` with an execution order chosen for overlap (and its copies, costs and by-op
// tables re-evaluated for that order; mode, reasons and assignment kept). Returned
// unchanged when every node runs on one backend, or when the new order is not estimated
// faster than the given one.
Placement overlap_schedule(const ir::Graph& graph, const Placement& placement,
                           std::span<const backend::Backend* const> backends,
                           const CopyCostModel& copy = {});

// Run-invariant work (ir::Value::run_invariant): per NodeId, whether the node reads only
// run-invariant graph inputs, weights and outputs of such nodes — what an executable may keep
// from one run to the next while those inputs keep their contents (exec/executable.h).
std::vector<bool> run_invariant_nodes(const ir::Graph& graph);

// How many leading steps of `order` are run-invariant nodes (run_invariant_nodes).
size_t run_invariant_prefix(const ir::Graph& graph, std::span<const ir::NodeId> order);

// `placement` with its order changed so that every run-invariant node runs before the rest
// (each group in its previous relative order: still a valid order, since a run-invariant
// node reads only inputs, weights and other run-invariant nodes' outputs), its copies and
// costs re-evaluated for that order;
// mode, reasons and assignment kept. Returned unchanged when the graph has no run-invariant
// node or they already lead.
Placement run_invariant_first(const ir::Graph& graph, const Placement& placement,
                              std::span<const backend::Backend* const> backends,
                              const CopyCostModel& copy = {});

}  // namespace hyrt::plan

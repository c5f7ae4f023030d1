// Epilogue fusion: folds the activation or residual add that follows a linear/conv2d node
// into that node's ir::GemmEpilogue, where one backend runs all of them — so the GEMM's
// result is written once, activated and summed, instead of written, read back by a separate
// kernel and written again. A pure graph rewrite driven by a placement (plan::place), asking
// the backends only through supports()/estimate_us(); unit-tested with fake backends.
//
// What is fused (each rule on the placed, unfused graph):
//  - activation: g (linear or conv2d, no epilogue yet) → silu | gelu | quick_gelu | relu, where g's
//    output has no other consumer and is not a graph output;
//  - residual add: g [→ activation] [→ reshape] → add(a, b) with a and b of the same shape and
//    dtype (no broadcasting), the chain's value one of them and the other the residual; every
//    value of the chain has no other consumer and is not a graph output. Through a reshape
//    (a view: Transformer2D's linear proj_out, the VAE attention's to_out) the residual is
//    viewed in the GEMM's output shape and the fused result viewed back in the add's.
//  - low-rank term (first, since a LoRA's side path comes before its layer in the order):
//    linear g (no epilogue) → add(g's output, up(down(x))) where x is g's own input and up and
//    down are plain linears (no bias) of graph weights; the down, the up and the add are
//    absorbed (GemmEpilogue::low_rank with their weights). Then the activation and residual
//    rules go on from the add's output;
//  - every node of a chain runs on the same backend, and that backend's supports() accepts
//    the fused node (a backend answers no where it has no fused kernel for it: then nothing
//    of that chain is fused).
// The fused node takes the add's (or activation's) place in the order, so all its inputs,
// the residual included, exist when it runs; it keeps the GEMM's name. Graph inputs and
// outputs keep their order and names (Executable binds them by index or name).
//
// Thread safety: a pure function of its arguments (backends' const methods only).
#pragma once

#include <memory>
#include <span>

#include "backend/backend.h"
#include "ir/graph.h"
#include "plan/placement.h"

namespace hyrt::plan {

struct EpilogueFusion {
  std::shared_ptr<const ir::Graph> graph;  // the rewritten graph (the input one if none fused)
  Placement placement;     // over `graph`: the input placement's choices, re-evaluated
  int activations = 0;     // activation nodes folded into a GEMM
  int residual_adds = 0;   // add nodes folded into a GEMM
  int low_rank_terms = 0;  // LoRA side paths folded into the layer they adapt
  int geglus = 0;          // GEGLU nodes folded into the projection before them
  int fused() const { return activations + residual_adds + low_rank_terms + geglus; }
};

// `placement` was made by plan::place (or evaluate_assignment) for `graph` over `backends`.
// The result's placement keeps each surviving node's backend and reason, its mode and
// backend names, and recomputes copies and estimates (evaluate_assignment with `copy`) in
// the rewritten graph's insertion order; an overlap order (plan::overlap_schedule) is not
// carried over — schedule after fusing.
EpilogueFusion fuse_epilogues(std::shared_ptr<const ir::Graph> graph, const Placement& placement,
                              std::span<const backend::Backend* const> backends,
                              const CopyCostModel& copy = {});

}  // namespace hyrt::plan

// Stacked projections: a self-attention's q, k and v — three linears reading the same rows —
// become one linear over their weights stacked (ir::LinearAttrs::weights) whose output the
// attention reads packed (ir::AttentionAttrs::packed_qkv), where one backend runs all four and
// says it takes the stacked forms. Why: at SDXL's 1024² shapes each projection is a GEMM of
// 2048 x 1280 x 1280, about 1.2 waves of tiles on an H100, so three launches leave most of
// their second wave idle; one 2048 x 3840 GEMM fills the machine, and the activations are read
// once. A pure graph rewrite driven by a placement, asking the backends only through
// supports(); unit-tested with fake backends.
//
// What is rewritten: an attention node a (not causal, three inputs) on backend b whose q, k and
// v are the outputs of three distinct linears on b that
//  - read the same x and nothing else but one graph weight each (no bias, no epilogue: a LoRA's
//    low-rank term, folded by plan::fuse_epilogues, keeps its layer apart), the weights of one
//    dtype and q, k, v of one width (so Dv = D),
//  - have a as their only reader, which reads them as q, k and v, and are neither graph outputs
//    nor wide-range,
// when b's supports() accepts both rewritten nodes (a backend without the stacked forms — the
// CPU — says no: its graph is unchanged). The stacked linear takes the first projection's place
// in the order and the name "<parent>.to_qkv" where the three are "<parent>.to_q", ".to_k",
// ".to_v" (else the q projection's name); the attention keeps its place and name. Graph inputs
// and outputs keep their order and names; the weights stay separate graph values.
//
// Run after plan::fuse_epilogues (whose LoRA folding it must see) and before
// plan::quantize_activations (a layer norm then quantizes for one reader).
//
// Thread safety: a pure function of its arguments (backends' const methods only).
#pragma once

#include <memory>
#include <span>

#include "backend/backend.h"
#include "ir/graph.h"
#include "plan/placement.h"

namespace hyrt::plan {

struct StackedProjections {
  std::shared_ptr<const ir::Graph> graph;  // the rewritten graph (the input one if none stacked)
  Placement placement;  // over `graph`: the input placement's choices, re-evaluated
  int attentions = 0;   // attention nodes whose q, k and v now come from one stacked linear
};

// `placement` was made by plan::place (or a later rewrite) for `graph` over `backends`. The
// result's placement keeps each surviving node's backend and reason and the mode, and
// recomputes copies and estimates (evaluate_assignment with `copy`) in the rewritten graph's
// insertion order; an overlap order is not carried over — schedule after stacking.
StackedProjections stack_projections(std::shared_ptr<const ir::Graph> graph,
                                     const Placement& placement,
                                     std::span<const backend::Backend* const> backends,
                                     const CopyCostModel& copy = {});

}  // namespace hyrt::plan

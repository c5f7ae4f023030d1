// Quantized activations: a layer norm or GEGLU whose output only linears read, and each of them
// would quantize it for its W8A8 GEMM (q, k and v of a transformer block read the same
// normalised rows: three quantize passes over one tensor; a feed-forward's output projection
// quantizes the GEGLU's), writes that output quantized instead — ir::NormAttrs::quantize_output,
// ir::GegluAttrs::quantize_output: an s8rows value (core/dtype.h) — and the linears read it as
// their operand. One pass over the rows instead of a float write and a quantize pass per reader;
// the values are the same bits (the producer rounds to its float type before quantizing).
// Likewise a group norm whose output only convolutions read (a resnet's two convs), with one
// scale per sample — the per-image quantization a backend's W8A8 conv would make of it itself
// (the CUDA implicit-GEMM conv): its normalise pass writes s8 instead of a float tensor that the
// conv's two quantize passes would read again.
// A pure graph rewrite driven by a placement, asking the backends only through supports().
//
// What is rewritten: a layer norm, GEGLU or group norm on backend b whose output
//  - is not a graph output and not wide-range, and
//  - is read only by linears (convolutions, for a group norm) on b, each reading it once, as x,
//    without a low-rank term (which would read x in float),
// when b's supports() accepts the quantizing producer and every reader on the rewritten graph
// (a backend that would not run a reader's GEMM on s8 activations, for its shape or its
// epilogue, says no there: then that producer stays as it was). Node count, order, names and
// the graph's inputs and outputs do not change.
//
// Thread safety: a pure function of its arguments (backends' const methods only).
#pragma once

#include <memory>
#include <span>

#include "backend/backend.h"
#include "ir/graph.h"
#include "plan/placement.h"

namespace hyrt::plan {

struct ActivationQuantization {
  std::shared_ptr<const ir::Graph> graph;  // the rewritten graph (the input one if none changed)
  Placement placement;                     // over `graph`: the same assignment, re-evaluated
  int layer_norms = 0;                     // layer norms that write their output quantized
  int geglus = 0;                          // GEGLUs that do
  int group_norms = 0;                     // group norms that do
  int linears = 0;                         // linears reading a quantized x
  int convs = 0;                           // convolutions reading one
};

// `placement` was made for `graph` over `backends` (plan::place, then fuse_epilogues: run this
// after epilogue fusion, whose fused epilogues decide what a reader's backend accepts). The
// result's placement keeps every node's backend, reason and the mode, and recomputes copies
// and estimates with `copy`; an overlap order is not carried over — schedule after this.
ActivationQuantization quantize_activations(std::shared_ptr<const ir::Graph> graph,
                                            const Placement& placement,
                                            std::span<const backend::Backend* const> backends,
                                            const CopyCostModel& copy = {});

}  // namespace hyrt::plan

#include "exec/executable.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"
#include "core/log.h"

namespace hyrt::exec {

using Clock = std::chrono::steady_clock;

static double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::unique_ptr<Executable> Executable::create(std::shared_ptr<const ir::Graph> graph,
                                               backend::Backend& backend,
                                               const weights::WeightSource& weights,
                                               backend::ProgramCache& cache,
                                               const ExecOptions& options) {
  const auto t0 = Clock::now();
  HYRT_CHECK(graph != nullptr, kInvalidArgument, "Executable::create: null graph");
  graph->verify();
  std::unique_ptr<Executable> e(new Executable());
  e->graph_ = std::move(graph);
  e->backend_ = &backend;
  e->options_ = options;
  const ir::Graph& g = *e->graph_;

  e->order_ = plan::default_order(g);
  for (ir::NodeId n : e->order_)
    HYRT_CHECK(backend.supports(g, g.node(n)), kUnsupported, "backend '", backend.name(),
               "' cannot run node '", g.node(n).name, "' (", ir::op_name(g.node(n).op), ")");

  e->plan_ = plan::plan_memory(g, e->order_, options.memory);
  if (!options.shared_scratch)
    e->arena_ = backend.allocate(static_cast<size_t>(std::max<int64_t>(e->plan_.arena_bytes, 64)),
                                 "activation arena");

  // Weights bind once to their stored views; activations bind into the arena (bind()).
  e->views_.resize(g.values().size());
  for (const ir::Value& v : g.values()) {
    if (v.kind != ir::ValueKind::kWeight) continue;
    TensorView view = weights.get(v.name);
    HYRT_CHECK(view.shape.numel() == v.shape.numel(), kInvalidModel, "weight '", v.name,
               "' has shape ", view.shape.to_string(), ", the graph expects ", v.shape.to_string());
    HYRT_CHECK(view.dtype == v.dtype, kInvalidModel, "weight '", v.name, "' is ",
               dtype_name(view.dtype), ", the graph expects ", dtype_name(v.dtype));
    view.shape = v.shape;
    e->views_[v.id] = view;
  }

  e->kernels_.reserve(e->order_.size());
  for (ir::NodeId n : e->order_) {
    const ir::Node& node = g.node(n);
    e->kernels_.push_back(backend.prepare(g, node, weights, cache));
    // The backend holds its own (packed) copy now: the node's stored pages of a mapped
    // file need not stay resident (1 byte per int8 parameter instead of 2). Released
    // node by node, so the file and the packed copies never both peak.
    if (backend.copies_weights())
      for (ir::ValueId in : node.inputs)
        if (g.value(in).kind == ir::ValueKind::kWeight) weights.release_stored(g.value(in).name);
  }
  e->bind();
  e->op_ms_.assign(ir::kNumOpKinds, 0.0);
  e->op_count_.assign(ir::kNumOpKinds, 0);
  e->prepare_ms_ = ms_since(t0);
  HYRT_LOG(kDebug) << "executable: " << g.nodes().size() << " nodes, arena " << e->plan_.arena_bytes
                   << " bytes (lower bound " << e->plan_.lower_bound << ", naive "
                   << e->plan_.naive_bytes << "), prepared in " << e->prepare_ms_ << " ms";
  return e;
}

uint8_t* SharedScratch::reserve(size_t bytes) {
  bytes = std::max<size_t>(bytes, 64);
  if (!memory_ || memory_->size() < bytes) {
    memory_.reset();  // free first: the peak is the new size, not old + new
    memory_ = backend_->allocate(bytes, "shared activation arena");
  }
  return static_cast<uint8_t*>(memory_->data());
}

void Executable::bind() const {
  uint8_t* base = options_.shared_scratch
                      ? options_.shared_scratch->reserve(static_cast<size_t>(plan_.arena_bytes))
                      : static_cast<uint8_t*>(arena_->data());
  if (base == bound_base_) return;
  const ir::Graph& g = *graph_;
  for (const ir::Value& v : g.values())
    if (v.kind != ir::ValueKind::kWeight)
      views_[v.id] = {base + plan_.offset[v.id], v.dtype, v.shape};
  step_inputs_.resize(order_.size());
  for (size_t s = 0; s < order_.size(); ++s) {
    const ir::Node& node = g.node(order_[s]);
    step_inputs_[s].clear();
    for (ir::ValueId in : node.inputs)
      step_inputs_[s].push_back(views_[in]);
  }
  bound_base_ = base;
}

TensorView Executable::input(size_t i) const {
  bind();
  HYRT_CHECK(i < graph_->inputs().size(), kNotFound, "no graph input #", i);
  return views_[graph_->inputs()[i]];
}

TensorView Executable::input(std::string_view name) const {
  bind();
  for (ir::ValueId id : graph_->inputs())
    if (graph_->value(id).name == name) return views_[id];
  fail(ErrorCode::kNotFound, "graph has no input named '", name, "'");
}

TensorView Executable::output(size_t i) const {
  bind();
  HYRT_CHECK(i < graph_->outputs().size(), kNotFound, "no graph output #", i);
  return views_[graph_->outputs()[i]];
}

void Executable::run() {
  bind();
  const ir::Graph& g = *graph_;
  for (size_t s = 0; s < order_.size(); ++s) {
    const ir::Node& node = g.node(order_[s]);
    if (options_.profile) {
      const auto t0 = Clock::now();
      kernels_[s]->run(step_inputs_[s], views_[node.output]);
      op_ms_[static_cast<int>(node.op)] += ms_since(t0);
      ++op_count_[static_cast<int>(node.op)];
    } else {
      kernels_[s]->run(step_inputs_[s], views_[node.output]);
    }
  }
  backend_->synchronize();
}

std::vector<OpProfile> Executable::profile() const {
  std::vector<OpProfile> p;
  for (int i = 0; i < ir::kNumOpKinds; ++i)
    if (op_count_[i])
      p.push_back({std::string(ir::op_name(static_cast<ir::OpKind>(i))), op_count_[i], op_ms_[i]});
  return p;
}

}  // namespace hyrt::exec

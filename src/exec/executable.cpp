#include "exec/executable.h"

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
  e->arena_ = backend.allocate(static_cast<size_t>(std::max<int64_t>(e->plan_.arena_bytes, 64)),
                               "activation arena");

  // Bind every value once: weights to their stored views, the rest into the arena.
  e->views_.resize(g.values().size());
  auto* base = static_cast<uint8_t*>(e->arena_->data());
  for (const ir::Value& v : g.values()) {
    TensorView view;
    if (v.kind == ir::ValueKind::kWeight) {
      view = weights.get(v.name);
      HYRT_CHECK(view.shape.numel() == v.shape.numel(), kInvalidModel, "weight '", v.name,
                 "' has shape ", view.shape.to_string(), ", the graph expects ", v.shape.to_string());
      HYRT_CHECK(view.dtype == v.dtype, kInvalidModel, "weight '", v.name, "' is ",
                 dtype_name(view.dtype), ", the graph expects ", dtype_name(v.dtype));
      view.shape = v.shape;
    } else {
      view = {base + e->plan_.offset[v.id], v.dtype, v.shape};
    }
    e->views_[v.id] = view;
  }

  e->kernels_.reserve(e->order_.size());
  e->step_inputs_.reserve(e->order_.size());
  for (ir::NodeId n : e->order_) {
    const ir::Node& node = g.node(n);
    e->kernels_.push_back(backend.prepare(g, node, weights, cache));
    std::vector<TensorView> ins;
    for (ir::ValueId in : node.inputs) ins.push_back(e->views_[in]);
    e->step_inputs_.push_back(std::move(ins));
  }
  e->op_ms_.assign(ir::kNumOpKinds, 0.0);
  e->op_count_.assign(ir::kNumOpKinds, 0);
  e->prepare_ms_ = ms_since(t0);
  HYRT_LOG(kDebug) << "executable: " << g.nodes().size() << " nodes, arena "
                   << e->plan_.arena_bytes << " bytes (lower bound " << e->plan_.lower_bound
                   << ", naive " << e->plan_.naive_bytes << "), prepared in " << e->prepare_ms_
                   << " ms";
  return e;
}

TensorView Executable::input(size_t i) const {
  HYRT_CHECK(i < graph_->inputs().size(), kNotFound, "no graph input #", i);
  return views_[graph_->inputs()[i]];
}

TensorView Executable::input(std::string_view name) const {
  for (ir::ValueId id : graph_->inputs())
    if (graph_->value(id).name == name) return views_[id];
  fail(ErrorCode::kNotFound, "graph has no input named '", name, "'");
}

TensorView Executable::output(size_t i) const {
  HYRT_CHECK(i < graph_->outputs().size(), kNotFound, "no graph output #", i);
  return views_[graph_->outputs()[i]];
}

void Executable::run() {
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
    if (op_count_[i]) p.push_back({std::string(ir::op_name(static_cast<ir::OpKind>(i))), op_count_[i], op_ms_[i]});
  return p;
}

}  // namespace hyrt::exec

#include "exec/executable.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <string>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "plan/schedule.h"
#include "weights/lora.h"

namespace hyrt::exec {

namespace {

// Profile classes: the op kinds, then a LoRA's side GEMMs apart from the model's own (so a
// profile shows what an adapter costs): kLoraDown, kLoraUp.
constexpr int kLoraDownClass = ir::kNumOpKinds;
constexpr int kLoraUpClass = ir::kNumOpKinds + 1;
constexpr int kNumProfileClasses = ir::kNumOpKinds + 2;

int profile_class(const ir::Graph& g, const ir::Node& node) {
  if (ir::op_traits(node.op).gemm_class && node.inputs.size() > 1) {
    const std::string& w = g.value(node.inputs[1]).name;
    if (weights::is_lora_up_name(w)) return kLoraUpClass;
    if (weights::is_lora_down_name(w)) return kLoraDownClass;
  }
  return static_cast<int>(node.op);
}

std::string_view profile_class_name(int c) {
  if (c == kLoraDownClass) return "lora_down";
  if (c == kLoraUpClass) return "lora_up";
  return ir::op_name(static_cast<ir::OpKind>(c));
}

void append_shape(std::string& s, const Shape& shape) {
  s += '[';
  for (int i = 0; i < shape.rank(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  s += ']';
}

// ExecOptions::profile_shapes' class name: the kind, the output's shape and, for GEMM-class
// nodes and attention, the operands that set the work (the weight with its dtype; q and k).
std::string shape_class_name(const ir::Graph& g, const ir::Node& node, int kind_class) {
  std::string s(profile_class_name(kind_class));
  s += " out";
  append_shape(s, g.value(node.output).shape);
  if (node.op == ir::OpKind::kAttention && ir::packed_qkv(node.attrs)) {
    s += " packed";
  } else if (node.op == ir::OpKind::kAttention && node.inputs.size() > 1) {
    s += " k";
    append_shape(s, g.value(node.inputs[1]).shape);
  } else if (ir::op_traits(node.op).gemm_class && node.inputs.size() > 1) {
    const ir::Value& w = g.value(node.inputs[1]);
    s += " w";
    append_shape(s, w.shape);
    s += dtype_name(w.dtype);
    if (node.gemm_weights() > 1) s += " x" + std::to_string(node.gemm_weights());  // stacked
    if (node.epilogue().residual) s += " +res";
  }
  return s;
}

}  // namespace

std::unique_ptr<Executable> Executable::create(std::shared_ptr<const ir::Graph> graph,
                                               backend::Backend& backend,
                                               const weights::WeightSource& weights,
                                               backend::ProgramCache& cache,
                                               const ExecOptions& options) {
  HYRT_CHECK(graph != nullptr, kInvalidArgument, "Executable::create: null graph");
  HYRT_CHECK(backend.device_type() == backend::DeviceType::kHost, kInvalidArgument,
             "Executable::create: backend '", backend.name(),
             "' alone cannot hold the graph's inputs and outputs; place the graph across the "
             "host and it");
  backend::Backend* const backends[] = {&backend};
  const backend::Backend* const const_backends[] = {&backend};
  plan::PlacementOptions po;
  po.mode = plan::PlacementMode::kHost;
  plan::Placement placement = plan::place(*graph, plan::default_order(*graph), const_backends, po);
  return create(std::move(graph), backends, std::move(placement), weights, cache, options);
}

std::unique_ptr<Executable> Executable::create(std::shared_ptr<const ir::Graph> graph,
                                               std::span<backend::Backend* const> backends,
                                               plan::Placement placement,
                                               const weights::WeightSource& weights,
                                               backend::ProgramCache& cache,
                                               const ExecOptions& options) {
  const auto t0 = Clock::now();
  HYRT_CHECK(graph != nullptr, kInvalidArgument, "Executable::create: null graph");
  HYRT_CHECK(!backends.empty() && backends[0]->device_type() == backend::DeviceType::kHost,
             kInvalidArgument, "Executable::create: backends[0] must be the host");
  graph->verify();
  std::unique_ptr<Executable> e(new Executable());
  e->graph_ = std::move(graph);
  e->backends_.assign(backends.begin(), backends.end());
  e->options_ = options;
  e->placement_ = std::move(placement);
  const ir::Graph& g = *e->graph_;
  const int nb = static_cast<int>(backends.size());

  e->order_ = e->placement_.order.empty() ? plan::default_order(g) : e->placement_.order;
  HYRT_CHECK(
      e->placement_.backend_of.size() == g.nodes().size() && e->order_.size() == g.nodes().size(),
      kInvalidArgument, "Executable::create: the placement is for another graph");
  for (ir::NodeId n : e->order_) {
    const int b = e->placement_.backend_of[n];
    HYRT_CHECK(b >= 0 && b < nb, kInvalidArgument, "Executable::create: node '", g.node(n).name,
               "' placed on backend ", b, " of ", nb);
    HYRT_CHECK(backends[b]->supports(g, g.node(n)), kUnsupported, "backend '", backends[b]->name(),
               "' cannot run node '", g.node(n).name, "' (", ir::op_name(g.node(n).op), ")");
    e->step_backend_.push_back(b);
  }
  // Profile classes: every op kind and a LoRA's side GEMMs (indices profile_class gives), then
  // with profile_shapes one more per distinct name.
  for (int c = 0; c < kNumProfileClasses; ++c)
    e->class_names_.emplace_back(profile_class_name(c));
  std::map<std::string, int> shape_classes;
  for (ir::NodeId n : e->order_) {
    const int kind_class = profile_class(g, g.node(n));
    if (!(options.profile && options.profile_shapes)) {
      e->step_class_.push_back(kind_class);
      continue;
    }
    std::string name = shape_class_name(g, g.node(n), kind_class);
    auto [it, fresh] = shape_classes.emplace(std::move(name), 0);
    if (fresh) {
      it->second = static_cast<int>(e->class_names_.size());
      e->class_names_.push_back(it->first);
    }
    e->step_class_.push_back(it->second);
  }

  if (options.reuse_invariant) e->invariant_steps_ = plan::run_invariant_prefix(g, e->order_);
  if (e->invariant_steps_ > 0)
    for (ir::ValueId in : g.inputs())
      if (g.value(in).run_invariant) e->invariant_inputs_.push_back({in, {}});

  // Weights bind once to their stored views (kernels that uploaded or packed them ignore
  // these); activations bind into the arenas (bind()).
  e->views_.assign(nb, std::vector<TensorView>(g.values().size()));
  for (const ir::Value& v : g.values()) {
    if (v.kind != ir::ValueKind::kWeight) continue;
    TensorView view = weights.get(v.name);
    HYRT_CHECK(view.shape.numel() == v.shape.numel(), kInvalidModel, "weight '", v.name,
               "' has shape ", view.shape.to_string(), ", the graph expects ", v.shape.to_string());
    HYRT_CHECK(view.dtype == v.dtype, kInvalidModel, "weight '", v.name, "' is ",
               dtype_name(view.dtype), ", the graph expects ", dtype_name(v.dtype));
    view.shape = v.shape;
    for (int b = 0; b < nb; ++b)
      e->views_[b][v.id] = view;
  }

  // However preparing ends, each backend then drops what only made preparing cheap.
  struct EndPrepare {
    std::span<backend::Backend* const> backends;
    ~EndPrepare() {
      for (backend::Backend* b : backends)
        b->end_prepare();
    }
  };
  e->kernels_.reserve(e->order_.size());
  e->prepare_op_ms_.assign(e->class_names_.size(), 0.0);
  e->prepare_op_count_.assign(e->class_names_.size(), 0);
  {
    const EndPrepare end_prepare{backends};
    for (size_t s = 0; s < e->order_.size(); ++s) {
      const ir::Node& node = g.node(e->order_[s]);
      backend::Backend& b = *backends[e->step_backend_[s]];
      const auto tk = Clock::now();
      e->kernels_.push_back(b.prepare(g, node, weights, cache));
      e->prepare_op_ms_[e->step_class_[s]] += ms_since(tk);
      ++e->prepare_op_count_[e->step_class_[s]];
      // The backend holds its own (packed or uploaded) copy now: the node's stored pages of
      // a mapped file need not stay resident (1 byte per int8 parameter instead of 2).
      // Released node by node, so the file and the copies never both peak.
      if (b.copies_weights())
        for (ir::ValueId in : node.inputs)
          if (g.value(in).kind == ir::ValueKind::kWeight) weights.release_stored(g.value(in).name);
    }
  }
  e->async_ = options.overlap && nb > 1 && !e->placement_.copies.empty();
  e->plan_copy_windows();
  plan::Residency residency;
  residency.num_backends = nb;
  residency.backend_of = e->placement_.backend_of;
  residency.copies = e->placement_.copies;
  residency.windows = e->windows_;
  residency.reusable_prefix = static_cast<int32_t>(e->invariant_steps_);
  // Kernels' scratch (GEMM staging and the like) is planned with the activations.
  std::vector<int64_t> step_workspace(e->order_.size());
  for (size_t s = 0; s < e->order_.size(); ++s)
    step_workspace[s] = static_cast<int64_t>(e->kernels_[s]->workspace_bytes());
  residency.step_workspace = step_workspace;
  residency.bytes = [&](const ir::Value& v, int b) {
    return static_cast<int64_t>(storage_bytes(backends[b]->storage_dtype(v), v.shape));
  };
  e->plans_ = plan::plan_placed_memory(g, e->order_, residency, options.memory);
  e->arenas_.resize(nb);
  for (int b = 0; b < nb; ++b) {
    const bool shared = static_cast<size_t>(b) < options.shared_scratch.size() &&
                        options.shared_scratch[b] != nullptr;
    if (shared) continue;
    const size_t bytes = static_cast<size_t>(std::max<int64_t>(e->plans_[b].arena_bytes, 64));
    // The host's arena in memory the accelerators copy directly, when copies are async.
    for (int a = 1; b == 0 && e->async_ && a < nb && !e->arenas_[0]; ++a)
      e->arenas_[0] = backends[a]->allocate_host(bytes, "activation arena");
    if (!e->arenas_[b]) e->arenas_[b] = backends[b]->allocate(bytes, "activation arena");
  }
  if (e->async_)
    for (const plan::ValueCopy& c : e->placement_.copies)
      e->fences_.push_back(c.to == 0 ? backends[c.from]->make_fence() : nullptr);
  // Copy staging is allocated now, not by the first run.
  for (const plan::ValueCopy& c : e->placement_.copies) {
    const ir::Value& v = g.value(c.value);
    const size_t host_bytes = storage_bytes(backends[0]->storage_dtype(v), v.shape);
    backends[c.from == 0 ? c.to : c.from]->reserve_copy_staging(host_bytes);
  }

  e->bound_base_.assign(nb, nullptr);
  e->find_segments();
  e->bind();
  e->op_ms_.assign(e->class_names_.size(), 0.0);
  e->op_count_.assign(e->class_names_.size(), 0);
  if (e->options_.profile) {
    e->timelines_.resize(nb);
    for (size_t b = 0; b < nb; ++b)
      e->timelines_[b] = backends[b]->make_timeline();
  }
  e->prepare_ms_ = ms_since(t0);
  HYRT_LOG(kDebug) << "executable: " << g.nodes().size() << " nodes on " << nb
                   << " backend(s), host arena " << e->plans_[0].arena_bytes
                   << " bytes (lower bound " << e->plans_[0].lower_bound << ", naive "
                   << e->plans_[0].naive_bytes << "), " << e->placement_.copies.size()
                   << " copies per run, prepared in " << e->prepare_ms_ << " ms";
  return e;
}

uint8_t* SharedScratch::reserve(size_t bytes) {
  bytes = std::max<size_t>(bytes, 64);
  if (!memory_ || memory_->size() < bytes) {
    memory_.reset();  // free first: the peak is the new size, not old + new
    user_ = nullptr;  // a new buffer holds nobody's results (claim)
    if (host_memory_of_) memory_ = host_memory_of_->allocate_host(bytes, "shared activation arena");
    if (!memory_) memory_ = backend_->allocate(bytes, "shared activation arena");
  }
  return static_cast<uint8_t*>(memory_->data());
}

void Executable::bind() const {
  const ir::Graph& g = *graph_;
  bool moved = false;
  for (size_t b = 0; b < backends_.size(); ++b) {
    SharedScratch* shared =
        b < options_.shared_scratch.size() ? options_.shared_scratch[b] : nullptr;
    uint8_t* base = shared ? shared->reserve(static_cast<size_t>(plans_[b].arena_bytes))
                           : static_cast<uint8_t*>(arenas_[b]->data());
    if (base == bound_base_[b]) continue;
    moved = true;
    prefix_valid_ = false;  // the kept results stayed at the old address
    for (const ir::Value& v : g.values())
      if (v.kind != ir::ValueKind::kWeight && plans_[b].offset[v.id] >= 0)
        views_[b][v.id] = {base + plans_[b].offset[v.id], backends_[b]->storage_dtype(v), v.shape};
    for (size_t s = 0; s < order_.size(); ++s)
      if (plans_[b].workspace_offset[s] >= 0)
        kernels_[s]->bind_workspace(base + plans_[b].workspace_offset[s]);
    bound_base_[b] = base;
  }
  if (!moved) return;
  step_inputs_.resize(order_.size());
  for (size_t s = 0; s < order_.size(); ++s) {
    step_inputs_[s].clear();
    for (ir::ValueId in : g.node(order_[s]).inputs)
      step_inputs_[s].push_back(views_[step_backend_[s]][in]);
  }
  for (Segment& seg : segments_)
    seg.replay.reset();
}

void Executable::plan_copy_windows() {
  const auto& copies = placement_.copies;
  const int steps = static_cast<int>(order_.size());
  issue_order_.resize(copies.size());
  for (size_t k = 0; k < copies.size(); ++k)
    issue_order_[k] = k;
  if (!async_) return;  // issued and done at before_step, in `copies` order
  windows_.resize(copies.size());
  for (size_t k = 0; k < copies.size(); ++k)
    windows_[k].issue_step = copies[k].after_step + 1;
  std::stable_sort(issue_order_.begin(), issue_order_.end(), [&](size_t a, size_t b) {
    return windows_[a].issue_step < windows_[b].issue_step;
  });
  const int prefix = static_cast<int>(invariant_steps_);
  for (size_t k = 0; k < copies.size(); ++k) {
    const plan::ValueCopy& c = copies[k];
    plan::CopyWindow& w = windows_[k];
    if (w.issue_step < prefix && c.before_step >= prefix) {
      // Due inside the prefix but needed after it: a run that skips the prefix issues it at
      // the prefix's end instead, and then knows it is done only at the run's end.
      w.source_until = steps;
      continue;
    }
    if (c.from != 0) {
      // A download reads device memory in queue order: later device work cannot overtake it.
      w.source_until = w.issue_step;
      continue;
    }
    // An upload may read the host's buffer until the accelerator's queue reaches it, which
    // the host knows once it has waited for a later download from that queue (before that
    // download's before_step) or at the end of the run.
    w.source_until = steps;
    for (size_t d = 0; d < copies.size(); ++d)
      if (copies[d].to == 0 && copies[d].from == c.to && windows_[d].issue_step > w.issue_step)
        w.source_until =
            std::min(w.source_until, std::max(w.issue_step, copies[d].before_step - 1));
  }
}

void Executable::find_segments() {
  // Steps before which a copy is issued or awaited end a unit.
  std::vector<char> boundary(order_.size() + 1, 0);
  boundary[invariant_steps_] = 1;  // a run may start after the run-invariant prefix
  for (size_t k = 0; k < placement_.copies.size(); ++k) {
    boundary[placement_.copies[k].before_step] = 1;
    if (async_) boundary[windows_[k].issue_step] = 1;
  }
  for (size_t s = 0; s < order_.size();) {
    const int b = step_backend_[s];
    size_t e = s + 1;
    if (options_.capture && backends_[b]->supports_capture()) {
      while (e < order_.size() && step_backend_[e] == b && !boundary[e])
        ++e;
      if (e - s >= 2) segments_.push_back({s, e, b, nullptr});
    }
    s = e;
  }
}

bool Executable::steps_settled(size_t begin, size_t end) const {
  for (size_t s = begin; s < end; ++s)
    if (!kernels_[s]->settled()) return false;
  return true;
}

bool Executable::settled() const {
  return steps_settled(0, kernels_.size());
}

void Executable::settle() {
  for (const auto& k : kernels_)
    k->settle();
}

int Executable::captured_steps() const {
  int n = 0;
  for (const Segment& seg : segments_)
    if (seg.replay) n += static_cast<int>(seg.end - seg.begin);
  return n;
}

void Executable::issue_copy(size_t k) const {
  const plan::ValueCopy& c = placement_.copies[k];
  const TensorView& src = views_[c.from][c.value];
  const TensorView& dst = views_[c.to][c.value];
  if (c.from != 0 && c.to != 0)
    fail(ErrorCode::kUnsupported, "copy of '", graph_->value(c.value).name,
         "' between two accelerators (", backends_[c.from]->name(), " -> ", backends_[c.to]->name(),
         ") is not implemented");
  if (!async_) {
    if (c.to == 0)
      backends_[c.from]->download_value(src, dst);
    else
      backends_[c.to]->upload_value(src, dst);
  } else if (c.to == 0) {
    backends_[c.from]->download_value_async(src, dst, *fences_[k]);
  } else {
    backends_[c.to]->upload_value_async(src, dst);
  }
}

void Executable::wait_copy(size_t k) const {
  if (async_ && placement_.copies[k].to == 0) fences_[k]->wait();
}

void Executable::run_steps(size_t begin, size_t end) {
  const ir::Graph& g = *graph_;
  for (size_t s = begin; s < end; ++s) {
    const ir::Node& node = g.node(order_[s]);
    const int b = step_backend_[s];
    if (options_.profile && timelines_[b]) {
      // Asynchronous kernels: timestamps around the node in the backend's own queue, read
      // after the run's final synchronize (run_once) — the queue keeps flowing.
      backend::Timeline& t = *timelines_[b];
      const size_t begin = t.mark();
      kernels_[s]->run(step_inputs_[s], views_[b][node.output]);
      marks_.push_back({step_class_[s], b, begin, t.mark()});
    } else if (options_.profile) {
      const auto t0 = Clock::now();
      kernels_[s]->run(step_inputs_[s], views_[b][node.output]);
      backends_[b]->synchronize();  // a backend without timestamps: wait for the kernel
      op_ms_[step_class_[s]] += ms_since(t0);
      ++op_count_[step_class_[s]];
    } else {
      kernels_[s]->run(step_inputs_[s], views_[b][node.output]);
    }
  }
}

void Executable::run() {
  try {
    run_once();
  } catch (...) {
    // Copies and kernels already queued still read and write the arenas: let every
    // backend drain before the exception leaves, so the next run (or the next executable
    // sharing the scratch) starts from a quiet machine. Their own errors are secondary.
    for (backend::Backend* b : backends_) {
      try {
        b->synchronize();
      } catch (...) {
      }
    }
    prefix_valid_ = false;  // the prefix's kept results may be half-written
    marks_.clear();         // a failed run's timings are not kept
    for (auto& t : timelines_)
      if (t) t->clear();
    throw;
  }
}

size_t Executable::held_bytes() const {
  size_t total = 0;
  for (const auto& k : kernels_)
    total += k->held_bytes();
  for (const auto& a : arenas_)
    if (a) total += a->size();
  return total;
}

void Executable::claim_scratch() const {
  for (SharedScratch* shared : options_.shared_scratch)
    if (shared && !shared->claim(this)) prefix_valid_ = false;  // another executable used it
}

bool Executable::can_skip_prefix() const {
  return prefix_valid_ &&
         std::all_of(invariant_inputs_.begin(), invariant_inputs_.end(), [&](const auto& input) {
           return std::memcmp(views_[0][input.first].data, input.second.data(),
                              input.second.size()) == 0;
         });
}

void Executable::run_once() {
  for (backend::Backend* b : backends_)
    b->attach_thread();
  bind();
  claim_scratch();  // every run does, so that the others see the scratch was used
  const auto& copies = placement_.copies;
  const bool capture_now = runs_ >= 1 && !options_.profile;
  // The first step this run: after the run-invariant prefix when its kept results hold.
  size_t start = 0;
  if (invariant_steps_ > 0) {
    if (can_skip_prefix()) {
      start = invariant_steps_;
      ++reused_runs_;
    } else {  // (a failed run leaves prefix_valid_ false: run())
      for (auto& [id, bytes] : invariant_inputs_) {
        const TensorView& v = views_[0][id];
        const auto* p = static_cast<const uint8_t*>(v.data);
        bytes.assign(p, p + v.bytes());
      }
    }
  }
  auto issue_step = [&](size_t k) {
    return async_ ? windows_[k].issue_step : copies[k].before_step;
  };
  // A copy the skipped prefix needed is not made (its destination, if read later, is kept).
  auto wanted = [&](size_t k) { return copies[k].before_step >= static_cast<int>(start); };
  // Before step s: issue the copies due (in issue order), then wait for those step s needs
  // (`copies` is sorted by before_step).
  size_t issued = 0, awaited = 0, seg = 0;
  auto copies_before = [&](size_t s) {
    while (issued < issue_order_.size() &&
           issue_step(issue_order_[issued]) <= static_cast<int>(s)) {
      const size_t k = issue_order_[issued++];
      if (wanted(k)) issue_copy(k);
    }
    while (awaited < copies.size() && copies[awaited].before_step <= static_cast<int>(s)) {
      if (wanted(awaited)) wait_copy(awaited);
      ++awaited;
    }
  };
  for (size_t s = start; s < order_.size();) {
    copies_before(s);
    while (seg < segments_.size() && segments_[seg].begin < s)
      ++seg;
    if (seg < segments_.size() && segments_[seg].begin == s) {
      Segment& sg = segments_[seg];
      // A unit recorded while one of its kernels was still preparing its program is
      // recorded again once they all have it (the fallback's work stays in the replay
      // otherwise).
      if (sg.replay && sg.provisional && capture_now && steps_settled(sg.begin, sg.end)) {
        sg.replay.reset();
        ++recaptures_;
      }
      if (sg.replay) {
        sg.replay->launch();
        s = sg.end;
        continue;
      }
      if (capture_now) {
        backend::Backend& b = *backends_[sg.backend];
        // Checked before: a kernel settled now runs its final program in the capture.
        sg.provisional = !steps_settled(sg.begin, sg.end);
        b.begin_capture();
        try {
          run_steps(sg.begin, sg.end);
        } catch (...) {
          b.abort_capture();
          throw;
        }
        sg.replay = b.end_capture();
        sg.replay->launch();
        s = sg.end;
        continue;
      }
    }
    run_steps(s, s + 1);
    ++s;
  }
  copies_before(order_.size());
  for (backend::Backend* b : backends_)
    b->synchronize();
  for (const Mark& m : marks_) {
    op_ms_[m.op] += timelines_[m.backend]->elapsed_ms(m.begin, m.end);
    ++op_count_[m.op];
  }
  marks_.clear();
  for (auto& t : timelines_)
    if (t) t->clear();
  if (invariant_steps_ > 0) prefix_valid_ = true;
  ++runs_;
}

TensorView Executable::input(size_t i) const {
  bind();
  claim_scratch();  // the caller writes into the scratch through the view
  HYRT_CHECK(i < graph_->inputs().size(), kNotFound, "no graph input #", i);
  return views_[0][graph_->inputs()[i]];
}

TensorView Executable::input(std::string_view name) const {
  bind();
  claim_scratch();  // the caller writes into the scratch through the view
  for (ir::ValueId id : graph_->inputs())
    if (graph_->value(id).name == name) return views_[0][id];
  fail(ErrorCode::kNotFound, "graph has no input named '", name, "'");
}

TensorView Executable::output(size_t i) const {
  bind();
  HYRT_CHECK(i < graph_->outputs().size(), kNotFound, "no graph output #", i);
  return views_[0][graph_->outputs()[i]];
}

static std::vector<OpProfile> by_class(const std::vector<std::string>& names,
                                       const std::vector<int>& count,
                                       const std::vector<double>& ms) {
  std::vector<OpProfile> p;
  for (size_t i = 0; i < names.size(); ++i)
    if (count[i]) p.push_back({names[i], count[i], ms[i]});
  return p;
}

std::vector<OpProfile> Executable::profile() const {
  return by_class(class_names_, op_count_, op_ms_);
}

std::vector<OpProfile> Executable::prepare_profile() const {
  return by_class(class_names_, prepare_op_count_, prepare_op_ms_);
}

}  // namespace hyrt::exec

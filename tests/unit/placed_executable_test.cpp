// The executor across two backends, on the CPU: the host (the real CPU backend) and a fake
// "device" that keeps activations in f16 in its own (host-RAM, NaN-poisoned) memory, runs a
// few ops, and records kernels when asked to capture. Random graphs are placed in every mode
// and run three times (plain, captured, replayed); each run must match the graph run on the
// host alone to f16 accuracy — so every copy the placement asked for was made, converted,
// and in time, and the per-backend memory plans never let a live value be overwritten.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <span>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/half.h"
#include "exec/executable.h"
#include "ir/graph.h"
#include "plan/memory.h"
#include "plan/placement.h"
#include "plan/schedule.h"
#include "test_util.h"
#include "weights/memory_weights.h"

using namespace hyrt;
using namespace hyrt::ir;

namespace {

class HostBytes final : public backend::DeviceMemory {
 public:
  explicit HostBytes(size_t bytes) : data_(bytes, 0xff) {}  // 0xffff.. is NaN in f16 and f32
  void* data() override { return data_.data(); }
  size_t size() const override { return data_.size(); }

 private:
  std::vector<uint8_t> data_;
};

class FakeDevice;

// Runs `op` elementwise on f16 views (f32 math), or records itself while capturing.
class FakeKernel final : public backend::Kernel {
 public:
  FakeKernel(FakeDevice& dev, const Node& node, int64_t out_elems)
      : dev_(dev), node_(node), out_elems_(out_elems) {}
  void run(std::span<const TensorView> in, const TensorView& out) override;
  void compute(std::vector<TensorView> in, TensorView out, void* workspace) const;
  // Results go through a planned workspace first (the output's f16 bytes), so a workspace
  // that overlapped a live value, or was not bound, would show.
  size_t workspace_bytes() const override;
  void bind_workspace(void* workspace) override { workspace_ = workspace; }
  // Silu kernels stand for a kernel whose faster program is built in the background: unsettled
  // until the device's programs are ready (FakeDevice::programs_ready).
  bool settled() const override;
  void settle() override;

 private:
  void* workspace_ = nullptr;
  FakeDevice& dev_;
  Node node_;
  int64_t out_elems_;
};

class FakeReplay final : public backend::Replay {
 public:
  FakeReplay(std::vector<std::function<void()>> work, std::vector<std::function<void()>>* queue)
      : work_(std::move(work)), queue_(queue) {}
  void launch() override {
    for (auto& w : work_)
      if (queue_)
        queue_->push_back(w);
      else
        w();
  }

 private:
  std::vector<std::function<void()>> work_;
  std::vector<std::function<void()>>* queue_;  // the lazy device's queue, or null
};

// A fence of the lazy fake device: waiting runs the device's queue up to the work it marks.
class FakeFence final : public backend::Fence {
 public:
  explicit FakeFence(FakeDevice& dev) : dev_(dev) {}
  void wait() override;
  size_t ticket = 0;  // queue entries to have run

 private:
  FakeDevice& dev_;
};

class FakeDevice final : public backend::Backend {
 public:
  std::string_view name() const override { return "fake"; }
  backend::DeviceType device_type() const override { return backend::DeviceType::kCuda; }
  DType storage_dtype(const Value& v) const override {
    return v.dtype == DType::kF32 ? DType::kF16 : v.dtype;
  }
  bool supports(const Graph& g, const Node& n) const override {
    switch (n.op) {
      case OpKind::kSilu:
      case OpKind::kScale:
      case OpKind::kReshape:
        return true;
      case OpKind::kAdd:
        return g.value(n.inputs[0]).shape == g.value(n.inputs[1]).shape;
      default:
        return false;
    }
  }
  double estimate_us(const Graph&, const Node& n) const override {
    return n.op == OpKind::kReshape ? 0.0 : 1.0;
  }
  std::unique_ptr<backend::Kernel> prepare(const Graph& g, const Node& n,
                                           const weights::WeightSource&,
                                           backend::ProgramCache&) override {
    return std::make_unique<FakeKernel>(*this, n, g.value(n.output).shape.numel());
  }
  std::unique_ptr<backend::DeviceMemory> allocate(size_t bytes, std::string_view) override {
    return std::make_unique<HostBytes>(bytes);
  }
  // Lazy mode: kernels and asynchronous copies only queue their work, which runs when a
  // fence or synchronize() asks for it — as late as the backend contract allows, so an
  // executor that reads a download early, or reuses an upload's source too soon, computes
  // garbage. (The synchronous copies run the queue first.)
  bool lazy = false;
  std::vector<std::function<void()>> queue;
  size_t ran = 0;
  void run_queue(size_t until) {
    for (; ran < until; ++ran)
      queue[ran]();
  }
  void synchronize() override {
    ++syncs;
    run_queue(queue.size());
  }
  void upload_value_async(const TensorView& src, const TensorView& dst) override {
    if (!lazy) return upload_value(src, dst);
    queue.push_back([this, src, dst] { copy_up(src, dst); });
  }
  void download_value_async(const TensorView& src, const TensorView& dst,
                            backend::Fence& done) override {
    if (!lazy) return download_value(src, dst);
    queue.push_back([this, src, dst] { copy_down(src, dst); });
    static_cast<FakeFence&>(done).ticket = queue.size();
  }
  std::unique_ptr<backend::Fence> make_fence() override {
    return std::make_unique<FakeFence>(*this);
  }
  std::unique_ptr<backend::DeviceMemory> allocate_host(size_t bytes, std::string_view) override {
    ++host_allocations;
    return std::make_unique<HostBytes>(bytes);
  }
  int host_allocations = 0;

  void upload_value(const TensorView& src, const TensorView& dst) override {
    synchronize();
    copy_up(src, dst);
  }
  void download_value(const TensorView& src, const TensorView& dst) override {
    synchronize();
    copy_down(src, dst);
  }
  void copy_up(const TensorView& src, const TensorView& dst) {
    ASSERT_EQ(src.dtype, DType::kF32);
    ASSERT_EQ(dst.dtype, DType::kF16);
    convert_from_f32(static_cast<const float*>(src.data), DType::kF16, dst.data,
                     static_cast<size_t>(src.shape.numel()));
    ++uploads;
  }
  void copy_down(const TensorView& src, const TensorView& dst) {
    ASSERT_EQ(src.dtype, DType::kF16);
    ASSERT_EQ(dst.dtype, DType::kF32);
    convert_to_f32(DType::kF16, src.data, static_cast<float*>(dst.data),
                   static_cast<size_t>(src.shape.numel()));
    ++downloads;
  }
  bool supports_capture() const override { return true; }
  void begin_capture() override {
    capturing = true;
    recorded.clear();
  }
  std::unique_ptr<backend::Replay> end_capture() override {
    capturing = false;
    return std::make_unique<FakeReplay>(std::move(recorded), lazy ? &queue : nullptr);
  }

  bool capturing = false;
  std::vector<std::function<void()>> recorded;
  // Kernel::settled: false keeps silu kernels on their fallback; how often each program of
  // theirs ran (counted when the work runs, so replays count too).
  bool programs_ready = true;
  int silu_fallback_runs = 0, silu_final_runs = 0;
  int uploads = 0, downloads = 0;

  // Timestamps (Backend::make_timeline) on a fake clock: each kernel the device runs advances
  // it by `node id + 1` ms, so a node's true time is known; marks are queue entries too.
  bool timeline = false;
  double clock_ms = 0;
  int syncs = 0;
  std::unique_ptr<backend::Timeline> make_timeline() override;
};

class FakeTimeline final : public backend::Timeline {
 public:
  explicit FakeTimeline(FakeDevice& dev) : dev_(dev) {}
  size_t mark() override {
    const size_t i = stamps_.size();
    stamps_.push_back(-1);
    auto stamp = [this, i] { stamps_[i] = dev_.clock_ms; };
    if (dev_.lazy)
      dev_.queue.push_back(stamp);
    else
      stamp();
    return i;
  }
  double elapsed_ms(size_t a, size_t b) override {
    EXPECT_GE(stamps_.at(a), 0) << "read before the device reached the mark";
    EXPECT_GE(stamps_.at(b), 0) << "read before the device reached the mark";
    return stamps_.at(b) - stamps_.at(a);
  }
  void clear() override { stamps_.clear(); }

 private:
  FakeDevice& dev_;
  std::vector<double> stamps_;
};

std::unique_ptr<backend::Timeline> FakeDevice::make_timeline() {
  if (!timeline) return nullptr;
  return std::make_unique<FakeTimeline>(*this);
}

void FakeFence::wait() {
  dev_.run_queue(ticket);
}

size_t FakeKernel::workspace_bytes() const {
  return node_.op == OpKind::kReshape ? 0
                                      : static_cast<size_t>(out_elems_ * 2 + (node_.id % 3) * 64);
}

bool FakeKernel::settled() const {
  return node_.op != OpKind::kSilu || dev_.programs_ready;
}

void FakeKernel::settle() {
  dev_.programs_ready = true;
}

void FakeKernel::run(std::span<const TensorView> in, const TensorView& out) {
  std::vector<TensorView> inputs(in.begin(), in.end());
  void* ws = workspace_;
  if (workspace_bytes() > 0) {
    ASSERT_NE(ws, nullptr) << node_.name << ": no workspace bound";
  }
  // The program is chosen when the work is enqueued (or recorded), as a real kernel's is.
  int* count = node_.op != OpKind::kSilu ? nullptr
               : dev_.programs_ready     ? &dev_.silu_final_runs
                                         : &dev_.silu_fallback_runs;
  auto work = [this, inputs, out, ws, count] {
    if (count) ++*count;
    compute(inputs, out, ws);
  };
  if (dev_.capturing)
    dev_.recorded.push_back(work);
  else if (dev_.lazy)
    dev_.queue.push_back(work);
  else
    work();
}

void FakeKernel::compute(std::vector<TensorView> in, TensorView out, void* workspace) const {
  if (node_.op == OpKind::kReshape) {
    ASSERT_EQ(in[0].data, out.data) << "a reshape must be a view";
    return;
  }
  for (const TensorView& v : in)
    ASSERT_EQ(v.dtype, DType::kF16) << node_.name;
  ASSERT_EQ(out.dtype, DType::kF16);
  const size_t n = static_cast<size_t>(out.shape.numel());
  std::vector<float> a(n), b(n), y(n);
  convert_to_f32(DType::kF16, in[0].data, a.data(), n);
  if (in.size() > 1) convert_to_f32(DType::kF16, in[1].data, b.data(), n);
  const auto* scale = std::get_if<ScaleAttrs>(&node_.attrs);
  for (size_t i = 0; i < n; ++i) {
    switch (node_.op) {
      case OpKind::kSilu:
        y[i] = a[i] / (1.0f + std::exp(-a[i]));
        break;
      case OpKind::kScale:
        y[i] = a[i] * scale->alpha + scale->beta;
        break;
      default:
        y[i] = a[i] + b[i];
        break;
    }
  }
  // Through the workspace: the f16 result, and poison in the rest of it.
  ASSERT_LE(n * 2, workspace_bytes());
  std::memset(workspace, 0xff, workspace_bytes());
  convert_from_f32(y.data(), DType::kF16, workspace, n);
  std::memcpy(out.data, workspace, n * 2);
  dev_.clock_ms += static_cast<double>(node_.id + 1);
}

// The host backend on one thread (the tests' graphs are small).
std::unique_ptr<backend::Backend> one_thread_cpu() {
  backend::CpuBackendOptions co;
  co.num_threads = 1;
  return backend::make_cpu_backend(co);
}

// Chains of silu/scale/add/reshape (the fake device runs them) mixed with gelu and concat
// (host only), so every placement mode cuts the graph somewhere.
std::shared_ptr<Graph> random_graph(uint64_t seed, int num_nodes) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<uint64_t>(n)); };
  auto g = std::make_shared<Graph>();
  std::vector<ValueId> pool;
  for (int i = 0; i < 2; ++i)
    pool.push_back(g->add_input("in" + std::to_string(i), DType::kF32, {2, 24}));
  for (int i = 0; i < num_nodes; ++i) {
    const int window = std::min<int>(static_cast<int>(pool.size()), 5);
    const ValueId v = pool[pool.size() - 1 - pick(window)];
    const Shape s = g->value(v).shape;
    ValueId out;
    switch (pick(6)) {
      case 0:
        out = g->add_node(OpKind::kSilu, {v});
        break;
      case 1:
        out = g->add_node(OpKind::kScale, {v}, ScaleAttrs{0.5f, 0.25f});
        break;
      case 2: {
        std::vector<ValueId> same;
        for (ValueId u : pool)
          if (g->value(u).shape == s) same.push_back(u);
        out = g->add_node(OpKind::kAdd, {v, same[pick(static_cast<int>(same.size()))]});
        break;
      }
      case 3:
        out = g->add_node(
            OpKind::kReshape, {v},
            ReshapeAttrs{s[0] == 2 ? Shape{4, s.numel() / 4} : Shape{2, s.numel() / 2}});
        break;
      case 4:
        out = g->add_node(OpKind::kGelu, {v});
        break;
      default:
        out = g->add_node(OpKind::kConcat, {v, v}, ConcatAttrs{0});
        out = g->add_node(OpKind::kReshape, {out}, ReshapeAttrs{Shape{s[0], 2 * s[1]}});
        out = g->add_node(OpKind::kScale, {out}, ScaleAttrs{0.5f, 0.0f});
        break;
    }
    pool.push_back(out);
  }
  hyrt::test::mark_random_outputs(*g, pick, 8);
  g->verify();
  return g;
}

std::vector<std::vector<float>> run_once(exec::Executable& e, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (size_t i = 0; i < e.num_inputs(); ++i) {
    TensorView in = e.input(i);
    float* p = static_cast<float*>(in.data);
    for (int64_t j = 0; j < in.shape.numel(); ++j)
      p[j] = u(rng);
  }
  e.run();
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < e.num_outputs(); ++i) {
    const TensorView o = e.output(i);
    EXPECT_EQ(o.dtype, DType::kF32);
    const float* p = static_cast<const float*>(o.data);
    out.emplace_back(p, p + o.shape.numel());
  }
  return out;
}

double max_rel_l2(const std::vector<std::vector<float>>& a,
                  const std::vector<std::vector<float>>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    double num = 0, den = 0;
    for (size_t j = 0; j < a[i].size(); ++j) {
      num += (double(a[i][j]) - b[i][j]) * (double(a[i][j]) - b[i][j]);
      den += double(b[i][j]) * b[i][j];
    }
    worst = std::max(worst, std::isfinite(num) ? std::sqrt(num / std::max(den, 1e-30)) : 1e9);
  }
  return worst;
}

// Every mode, with synchronous copies (overlap off: the device runs each kernel as it is
// issued) and with asynchronous ones on the lazy device, in the placement's order and in
// the overlap schedule's.
class PlacedExecutable : public testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(Copies, PlacedExecutable, testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

TEST_P(PlacedExecutable, EveryModeMatchesTheHostOnRandomGraphs) {
  const bool async = GetParam();
  auto cpu = one_thread_cpu();
  FakeDevice dev;
  dev.lazy = async;
  exec::ExecOptions eo;
  eo.overlap = async;
  int reordered = 0;
  backend::Backend* const backends[] = {cpu.get(), &dev};
  const backend::Backend* const const_backends[] = {cpu.get(), &dev};
  weights::MemoryWeights no_weights;
  backend::ProgramCache cache;
  int captured = 0, copies = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    auto g = random_graph(seed, 12 + static_cast<int>(seed % 20));
    auto host = exec::Executable::create(g, *cpu, no_weights, cache);
    const auto want = run_once(*host, seed);
    for (auto mode :
         {plan::PlacementMode::kHybrid, plan::PlacementMode::kDevice, plan::PlacementMode::kAuto}) {
      plan::PlacementOptions po;
      po.mode = mode;
      plan::Placement p = plan::place(*g, plan::default_order(*g), const_backends, po);
      if (async) {
        plan::Placement o = plan::overlap_schedule(*g, p, const_backends);
        reordered += o.order != p.order;
        p = std::move(o);
      }
      copies += static_cast<int>(p.copies.size());
      auto e = exec::Executable::create(g, backends, std::move(p), no_weights, cache, eo);
      for (int run = 0; run < 3; ++run) {
        const double err = max_rel_l2(run_once(*e, seed), want);
        ASSERT_LT(err, 5e-3) << "seed " << seed << " mode " << plan::placement_mode_name(mode)
                             << " run " << run;
      }
      captured += e->captured_steps();
    }
  }
  EXPECT_GT(captured, 0) << "no run of device steps was ever captured";
  EXPECT_GT(copies, 0);
  EXPECT_GT(dev.uploads, 0);
  EXPECT_GT(dev.downloads, 0);
  if (async) {
    EXPECT_GT(reordered, 0) << "the overlap schedule never changed an order";
    EXPECT_GT(dev.host_allocations, 0) << "host arenas were not taken from allocate_host";
  }
}

// Profiling a device with timestamps (Backend::make_timeline): the device's nodes are timed by
// marks in its queue, read after the run — the executor never waits per node (one synchronize
// per run), and each op kind's time is exactly what the device spent (the fake clock); the
// results are those of an unprofiled run.
TEST(PlacedExecutable, ProfilesDeviceNodesByQueueTimestamps) {
  auto cpu = one_thread_cpu();
  FakeDevice dev;
  dev.lazy = true;
  dev.timeline = true;
  backend::Backend* const backends[] = {cpu.get(), &dev};
  const backend::Backend* const const_backends[] = {cpu.get(), &dev};
  weights::MemoryWeights no_weights;
  backend::ProgramCache cache;
  auto g = random_graph(7, 24);
  auto host = exec::Executable::create(g, *cpu, no_weights, cache);
  const auto want = run_once(*host, 7);
  plan::PlacementOptions po;
  po.mode = plan::PlacementMode::kDevice;
  plan::Placement p = plan::place(*g, plan::default_order(*g), const_backends, po);
  std::map<int, double> expected;  // op kind -> ms per run, from the fake clock
  for (size_t s = 0; s < p.order.size(); ++s) {
    const Node& n = g->node(p.order[s]);
    if (p.backend_of[n.id] == 1 && n.op != OpKind::kReshape)
      expected[static_cast<int>(n.op)] += static_cast<double>(n.id + 1);
  }
  ASSERT_FALSE(expected.empty());
  exec::ExecOptions eo;
  eo.profile = true;
  auto e = exec::Executable::create(g, backends, std::move(p), no_weights, cache, eo);
  constexpr int kRuns = 3;
  for (int run = 0; run < kRuns; ++run) {
    const int syncs = dev.syncs;
    ASSERT_LT(max_rel_l2(run_once(*e, 7), want), 5e-3);
    EXPECT_LE(dev.syncs - syncs, 3) << "the executor waited on the device per node";
  }
  for (const exec::OpProfile& op : e->profile()) {
    for (int k = 0; k < ir::kNumOpKinds; ++k)
      if (op.op == ir::op_name(static_cast<OpKind>(k)) && expected.count(k)) {
        // (host nodes of the same kind add their clock-read microseconds)
        EXPECT_NEAR(op.total_ms, kRuns * expected[k], 0.5) << op.op;
        expected.erase(k);
      }
  }
  EXPECT_TRUE(expected.empty()) << "a device op kind is missing from the profile";
}

// profile_shapes splits each op kind by shapes: every node is counted once per run under a
// name that starts with its kind and says its output's shape, and the device's time is the
// same in total as by kind alone.
TEST(PlacedExecutable, ProfilesByShapeWhenAsked) {
  auto cpu = one_thread_cpu();
  FakeDevice dev;
  dev.timeline = true;
  backend::Backend* const backends[] = {cpu.get(), &dev};
  const backend::Backend* const const_backends[] = {cpu.get(), &dev};
  weights::MemoryWeights no_weights;
  backend::ProgramCache cache;
  auto g = random_graph(11, 24);
  double device_ms = 0;
  std::map<std::string, int> nodes_by_shape;
  plan::PlacementOptions po;
  po.mode = plan::PlacementMode::kDevice;
  plan::Placement p = plan::place(*g, plan::default_order(*g), const_backends, po);
  for (const Node& n : g->nodes()) {
    if (p.backend_of[n.id] == 1 && n.op != OpKind::kReshape)
      device_ms += static_cast<double>(n.id + 1);
    std::string out = "out[";
    for (int i = 0; i < g->value(n.output).shape.rank(); ++i)
      out += (i ? "," : "") + std::to_string(g->value(n.output).shape[i]);
    ++nodes_by_shape[std::string(ir::op_name(n.op)) + " " + out + "]"];
  }
  exec::ExecOptions eo;
  eo.profile = true;
  eo.profile_shapes = true;
  auto e = exec::Executable::create(g, backends, std::move(p), no_weights, cache, eo);
  constexpr int kRuns = 2;
  for (int run = 0; run < kRuns; ++run)
    run_once(*e, 3);
  int counted = 0;
  double profiled_ms = 0;
  std::map<std::string, int> seen;
  for (const exec::OpProfile& op : e->profile()) {
    counted += op.count;
    profiled_ms += op.total_ms;
    // "<kind> out[...]" and, for GEMMs and attention, their operands after it
    const size_t end = op.op.find(']');
    ASSERT_NE(end, std::string::npos) << op.op;
    seen[op.op.substr(0, end + 1)] += op.count / kRuns;
  }
  EXPECT_EQ(counted, kRuns * static_cast<int>(g->nodes().size()));
  EXPECT_EQ(seen, nodes_by_shape);
  // (host nodes add their clock-read microseconds)
  EXPECT_NEAR(profiled_ms, kRuns * device_ms, 0.5 + 0.05 * kRuns * device_ms);
}

// A kernel still building its program (Kernel::settled false) runs its fallback, and a unit
// captured then is provisional: the first run after the kernel settles captures it again, so
// the replay runs the final program from then on; settle() waits for it.
TEST(PlacedExecutable, RecapturesUnitsOnceTheirKernelsSettle) {
  auto cpu = one_thread_cpu();
  FakeDevice dev;
  backend::Backend* const backends[] = {cpu.get(), &dev};
  const backend::Backend* const const_backends[] = {cpu.get(), &dev};
  weights::MemoryWeights no_weights;
  backend::ProgramCache cache;
  auto g = std::make_shared<Graph>();
  ValueId x = g->add_input("x", DType::kF32, {2, 24});
  x = g->add_node(OpKind::kScale, {x}, ScaleAttrs{0.5f, 0.25f});
  x = g->add_node(OpKind::kSilu, {x});
  x = g->add_node(OpKind::kScale, {x}, ScaleAttrs{2.0f, 0.0f});
  g->mark_output(x);
  g->verify();
  auto host = exec::Executable::create(g, *cpu, no_weights, cache);
  const auto want = run_once(*host, 3);
  plan::PlacementOptions po;
  po.mode = plan::PlacementMode::kDevice;
  auto e = exec::Executable::create(
      g, backends, plan::place(*g, plan::default_order(*g), const_backends, po), no_weights, cache);
  ASSERT_EQ(e->captured_units(), 1);
  dev.programs_ready = false;
  EXPECT_FALSE(e->settled());
  for (int run = 0; run < 3; ++run)  // eager, captured (provisional), replayed
    ASSERT_LT(max_rel_l2(run_once(*e, 3), want), 5e-3) << run;
  EXPECT_EQ(e->captured_steps(), 3);
  EXPECT_EQ(dev.silu_fallback_runs, 3);
  EXPECT_EQ(dev.silu_final_runs, 0);
  EXPECT_EQ(e->recaptures(), 0);
  dev.programs_ready = true;  // the build finished
  EXPECT_TRUE(e->settled());
  for (int run = 0; run < 2; ++run)  // captured again, then replayed
    ASSERT_LT(max_rel_l2(run_once(*e, 3), want), 5e-3) << run;
  EXPECT_EQ(dev.silu_fallback_runs, 3);
  EXPECT_EQ(dev.silu_final_runs, 2);
  EXPECT_EQ(e->recaptures(), 1);

  // settle() waits for the programs (here: makes them ready).
  dev.programs_ready = false;
  auto f = exec::Executable::create(
      g, backends, plan::place(*g, plan::default_order(*g), const_backends, po), no_weights, cache);
  EXPECT_FALSE(f->settled());
  f->settle();
  EXPECT_TRUE(f->settled());
  ASSERT_LT(max_rel_l2(run_once(*f, 3), want), 5e-3);
  EXPECT_EQ(dev.silu_final_runs, 3);
}

// Writes input i from seeds[i] (the same seed, the same bytes).
void write_inputs(exec::Executable& e, std::span<const uint64_t> seeds) {
  for (size_t i = 0; i < e.num_inputs(); ++i) {
    std::mt19937_64 rng(seeds[i]);
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    TensorView in = e.input(i);
    float* p = static_cast<float*>(in.data);
    for (int64_t j = 0; j < in.shape.numel(); ++j)
      p[j] = u(rng);
  }
}

std::vector<std::vector<float>> outputs(const exec::Executable& e) {
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < e.num_outputs(); ++i) {
    const TensorView o = e.output(i);
    const float* p = static_cast<const float*>(o.data);
    out.emplace_back(p, p + o.shape.numel());
  }
  return out;
}

// The run-invariant prefix (exec/executable.h): input 0 of random graphs is run-invariant.
// Every placement mode, sync and async copies, the prefix first (plan::run_invariant_first);
// runs change the other input every time and input 0 now and then, and each must match the
// host executable that computes everything — so the prefix is skipped only while input 0 is
// unchanged, and what it kept (on the NaN-poisoned fake device too) was never overwritten.
TEST_P(PlacedExecutable, RunInvariantPrefixIsKeptOnlyWhileItsInputsAreUnchanged) {
  const bool async = GetParam();
  auto cpu = one_thread_cpu();
  FakeDevice dev;
  dev.lazy = async;
  backend::Backend* const backends[] = {cpu.get(), &dev};
  const backend::Backend* const const_backends[] = {cpu.get(), &dev};
  weights::MemoryWeights no_weights;
  backend::ProgramCache cache;
  exec::ExecOptions every_step;
  every_step.reuse_invariant = false;
  exec::ExecOptions eo;
  eo.overlap = async;
  int reused = 0, with_prefix = 0, prefix_copies = 0;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    auto g = random_graph(seed, 12 + static_cast<int>(seed % 20));
    g->set_run_invariant(g->inputs()[0]);
    auto host = exec::Executable::create(g, *cpu, no_weights, cache, every_step);
    for (auto mode :
         {plan::PlacementMode::kHybrid, plan::PlacementMode::kDevice, plan::PlacementMode::kAuto}) {
      plan::PlacementOptions po;
      po.mode = mode;
      plan::Placement p = plan::place(*g, plan::default_order(*g), const_backends, po);
      if (async) p = plan::overlap_schedule(*g, p, const_backends);
      p = plan::run_invariant_first(*g, p, const_backends);
      const size_t prefix = plan::run_invariant_prefix(*g, p.order);
      const std::vector<bool> invariant = plan::run_invariant_nodes(*g);
      EXPECT_EQ(prefix, static_cast<size_t>(std::count(invariant.begin(), invariant.end(), true)));
      for (const plan::ValueCopy& c : p.copies)
        prefix_copies += c.before_step < static_cast<int>(prefix);
      auto e = exec::Executable::create(g, backends, std::move(p), no_weights, cache, eo);
      EXPECT_EQ(e->invariant_steps(), prefix);
      with_prefix += prefix > 0;
      // (input 0's seed, input 1's seed) per run: input 0 kept, changed, kept, back again.
      const uint64_t runs[][2] = {{1, 10}, {1, 11}, {1, 12}, {2, 13}, {2, 14}, {1, 15}, {1, 16}};
      for (const auto& r : runs) {
        const uint64_t seeds[] = {seed * 100 + r[0], seed * 100 + r[1]};
        write_inputs(*host, seeds);
        host->run();
        write_inputs(*e, seeds);
        e->run();
        ASSERT_LT(max_rel_l2(outputs(*e), outputs(*host)), 5e-3)
            << "seed " << seed << " mode " << plan::placement_mode_name(mode) << " inputs " << r[0]
            << "," << r[1];
      }
      // Skipped in runs 2, 3, 5 and 7 (input 0 as in the run before).
      EXPECT_EQ(e->reused_runs(), prefix > 0 ? 4 : 0);
      reused += e->reused_runs();
    }
  }
  EXPECT_GT(with_prefix, 20);
  EXPECT_GT(reused, 0);
  EXPECT_GT(prefix_copies, 0) << "no prefix ever needed a copy";
}

// Two executables in one shared scratch: one that keeps a run-invariant prefix must compute
// it again after the other ran (it wrote over the kept results), and still match.
TEST(SharedScratch, AnotherExecutableDropsTheKeptPrefix) {
  auto cpu = one_thread_cpu();
  weights::MemoryWeights no_weights;
  backend::ProgramCache cache;
  auto g = random_graph(3, 30);
  g->set_run_invariant(g->inputs()[0]);
  exec::ExecOptions every_step;
  every_step.reuse_invariant = false;
  auto want = exec::Executable::create(g, *cpu, no_weights, cache, every_step);
  exec::SharedScratch scratch(*cpu);
  exec::ExecOptions shared;
  shared.shared_scratch = {&scratch};
  auto a = exec::Executable::create(g, *cpu, no_weights, cache, shared);
  auto other = exec::Executable::create(random_graph(4, 40), *cpu, no_weights, cache, shared);
  ASSERT_GT(a->invariant_steps(), 0u);
  const uint64_t seeds[] = {5, 6}, other_seeds[] = {7, 8};
  write_inputs(*want, seeds);
  want->run();
  for (int round = 0; round < 3; ++round) {
    write_inputs(*a, seeds);
    a->run();
    EXPECT_EQ(a->reused_runs(), round) << "the first run after the other one must not skip";
    write_inputs(*a, seeds);
    a->run();  // skips
    EXPECT_EQ(a->reused_runs(), round + 1);
    EXPECT_LT(max_rel_l2(outputs(*a), outputs(*want)), 1e-6);
    write_inputs(*other, other_seeds);  // writes into the scratch before it runs
    other->run();
  }
}

// Per-backend plans: a value copied to the device lives there only from the copy on, in
// the device's storage size, and the host keeps its own holding until the copy is made.
TEST(PlacedMemoryPlan, CopiesGetTheirOwnStorageOnTheDestination) {
  Graph g;
  const ValueId x = g.add_input("x", DType::kF32, {2, 8});
  const ValueId a = g.add_node(OpKind::kGelu, {x});  // host
  const ValueId b = g.add_node(OpKind::kSilu, {a});  // device
  const ValueId c = g.add_node(OpKind::kGelu, {b});  // host
  g.mark_output(c);
  const std::vector<int> backend_of = {0, 1, 0};
  const std::vector<plan::ValueCopy> copies = {{a, 0, 1, 64, 0, 1}, {b, 1, 0, 64, 1, 2}};
  plan::Residency r;
  r.num_backends = 2;
  r.backend_of = backend_of;
  r.copies = copies;
  r.bytes = [](const Value& v, int b) {
    return static_cast<int64_t>(v.shape.numel()) * (b ? 2 : 4);
  };
  const auto plans = plan::plan_placed_memory(g, plan::default_order(g), r);
  ASSERT_EQ(plans.size(), 2u);
  EXPECT_EQ(plans[1].offset[x], -1);
  EXPECT_GE(plans[1].offset[a], 0);
  EXPECT_GE(plans[1].offset[b], 0);
  EXPECT_EQ(plans[1].offset[c], -1);
  EXPECT_EQ(plans[1].storage_use[a].bytes, 32);
  EXPECT_EQ(plans[1].storage_use[a].first, 1);
  EXPECT_EQ(plans[0].storage_use[a].last, 1);  // until the copy before step 1
  EXPECT_GE(plans[0].offset[b], 0);            // b's copy back to the host
  EXPECT_EQ(plans[0].storage_use[b].first, 2);
  // A node reading a value no copy brings is refused.
  const std::vector<plan::ValueCopy> missing = {{a, 0, 1, 64, 0, 1}};
  r.copies = missing;
  EXPECT_THROW(plan::plan_placed_memory(g, plan::default_order(g), r), Error);
}

}  // namespace

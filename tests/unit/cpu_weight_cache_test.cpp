// The CPU backend's shared weights (src/backend/cpu/weight_cache.h): executables of one graph
// at two shapes, from one WeightSource, on one backend — f32 weights and "8-bit S" weights in
// both int8 modes — give correct outputs, the second executable packs nothing the first has
// packed, a source of another generation (same names, other values) is never served the first
// source's packs, and the packs are freed with the last executable that uses them.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/weight_cache.h"
#include "core/error.h"
#include "exec/executable.h"
#include "ir/graph.h"
#include "test_util.h"
#include "weights/memory_weights.h"
#include "weights/quantize.h"

namespace hyrt {
namespace {

using backend::CpuWeightCacheStats;
using backend::Int8Mode;
using ir::OpKind;

// conv: kCin -> kC channels; the linear: kC -> kC (wider than 64 on both sides, so that it
// packs its weight: gemm.cpp keeps rank-sized weights plain, outside the cache)
constexpr int64_t kCin = 16, kC = 72;

// The model's weights as the kernels see them (dequantized for int8), for the reference.
struct Model {
  weights::MemoryWeights source;
  std::vector<float> conv_w, conv_b, lin_w, lin_b;
};

std::vector<float> floats(const Tensor& t) {
  return std::vector<float>(t.as<float>(), t.as<float>() + t.numel());
}

// A weight stored f32, or as "8-bit S" (s8 + per-row scales); returns its effective values.
std::vector<float> add_weight(weights::MemoryWeights& w, const std::string& name, Shape shape,
                              uint64_t seed, bool int8) {
  Tensor t = test::random_tensor(shape, seed, 0.3f);
  if (!int8) {
    std::vector<float> v = floats(t);
    w.add(name, std::move(t));
    return v;
  }
  weights::QuantizedTensor q = weights::quantize_per_row(t.view());
  std::vector<float> v = floats(weights::dequantize_per_row(q.q.view(), q.scale.view()));
  w.add_quantized(name, std::move(q.q), std::move(q.scale));
  return v;
}

void fill(Model& m, uint64_t seed, bool int8) {
  m.conv_w = add_weight(m.source, "conv.weight", {kC, kCin, 3, 3}, seed, int8);
  m.conv_b = add_weight(m.source, "conv.bias", {kC}, seed + 1, false);
  m.lin_w = add_weight(m.source, "proj.weight", {kC, kC}, seed + 2, int8);
  m.lin_b = add_weight(m.source, "proj.bias", {kC}, seed + 3, false);
}

// x [b, h, w, kCin] -> conv 3x3 pad 1 -> linear -> the same linear again (one weight used by
// two nodes, as a UNet built one chain per sample does).
std::shared_ptr<ir::Graph> graph(int64_t b, int64_t h, int64_t w, bool int8) {
  auto g = std::make_shared<ir::Graph>();
  const DType wt = int8 ? DType::kS8 : DType::kF32;
  const ir::ValueId x = g->add_input("x", DType::kF32, {b, h, w, kCin});
  const ir::ValueId cw = g->add_weight("conv.weight", wt, {kC, kCin, 3, 3});
  const ir::ValueId cb = g->add_weight("conv.bias", DType::kF32, {kC});
  const ir::ValueId lw = g->add_weight("proj.weight", wt, {kC, kC});
  const ir::ValueId lb = g->add_weight("proj.bias", DType::kF32, {kC});
  const ir::ValueId c = g->add_node(OpKind::kConv2d, {x, cw, cb}, ir::Conv2dAttrs{1, 1, {}});
  const ir::ValueId l1 = g->add_node(OpKind::kLinear, {c, lw, lb});
  g->mark_output(g->add_node(OpKind::kLinear, {l1, lw, lb}));
  return g;
}

std::vector<double> reference(const Model& m, const std::vector<float>& x, int64_t b, int64_t h,
                              int64_t w) {
  const int64_t pixels = b * h * w;
  std::vector<double> y(static_cast<size_t>(pixels * kC));
  for (int64_t n = 0; n < b; ++n)
    for (int64_t oh = 0; oh < h; ++oh)
      for (int64_t ow = 0; ow < w; ++ow)
        for (int64_t co = 0; co < kC; ++co) {
          double acc = m.conv_b[co];
          for (int64_t kh = 0; kh < 3; ++kh)
            for (int64_t kw = 0; kw < 3; ++kw) {
              const int64_t ih = oh - 1 + kh, iw = ow - 1 + kw;
              if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
              for (int64_t ci = 0; ci < kCin; ++ci)
                acc += static_cast<double>(x[((n * h + ih) * w + iw) * kCin + ci]) *
                       m.conv_w[((co * kCin + ci) * 3 + kh) * 3 + kw];
            }
          y[((n * h + oh) * w + ow) * kC + co] = acc;
        }
  for (int pass = 0; pass < 2; ++pass) {
    std::vector<double> next(y.size());
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t o = 0; o < kC; ++o) {
        double acc = m.lin_b[o];
        for (int64_t i = 0; i < kC; ++i)
          acc += y[p * kC + i] * m.lin_w[o * kC + i];
        next[p * kC + o] = acc;
      }
    y = std::move(next);
  }
  return y;
}

double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

struct Shape3 {
  int64_t b, h, w;
};

std::vector<float> input(const Shape3& s) {
  return floats(test::random_tensor({s.b, s.h, s.w, kCin}, 100 + s.b * 31 + s.h * 7 + s.w));
}

std::vector<float> run(exec::Executable& e, const std::vector<float>& x) {
  std::memcpy(e.input(0).data, x.data(), x.size() * sizeof(float));
  e.run();
  const TensorView y = e.output(0);
  const float* p = static_cast<const float*>(y.data);
  return std::vector<float>(p, p + y.shape.numel());
}

// The same tensors as `base` (the same views), as another source: its own generation, like a
// second load of one file.
class OtherSource final : public weights::WeightSource {
 public:
  explicit OtherSource(const weights::WeightSource& base) : base_(base) {}
  TensorView get(std::string_view name) const override { return base_.get(name); }
  bool contains(std::string_view name) const override { return base_.contains(name); }
  std::optional<TensorView> scale(std::string_view name) const override {
    return base_.scale(name);
  }

 private:
  const weights::WeightSource& base_;
};

// An overlay that forwards every name to `base`, generation included (what a LoRA overlay does
// for the base model's weights).
class ForwardingOverlay final : public weights::WeightSource {
 public:
  explicit ForwardingOverlay(const weights::WeightSource& base) : base_(base) {}
  uint64_t generation_of(std::string_view name) const override { return base_.generation_of(name); }
  TensorView get(std::string_view name) const override { return base_.get(name); }
  bool contains(std::string_view name) const override { return base_.contains(name); }
  std::optional<TensorView> scale(std::string_view name) const override {
    return base_.scale(name);
  }

 private:
  const weights::WeightSource& base_;
};

struct Mode {
  const char* name;
  bool int8;
  Int8Mode int8_mode;
  double tolerance;  // relative L2 vs the double reference on the effective weights
};

class CpuWeightCache : public testing::TestWithParam<Mode> {};

INSTANTIATE_TEST_SUITE_P(Weights, CpuWeightCache,
                         testing::Values(Mode{"f32", false, Int8Mode::kW8, 1e-5},
                                         Mode{"w8", true, Int8Mode::kW8, 1e-5},
                                         // activation rounding at each of the three GEMMs
                                         Mode{"w8a8", true, Int8Mode::kW8A8, 3e-2}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_P(CpuWeightCache, ExecutablesOfTwoShapesShareOnePackOfEachWeight) {
  const Mode& mode = GetParam();
  auto cpu = backend::make_cpu_backend({.num_threads = 0, .int8_mode = mode.int8_mode});
  backend::ProgramCache programs;
  Model m;
  fill(m, 1, mode.int8);
  const Shape3 s1{1, 8, 8}, s2{2, 12, 10};
  const std::vector<float> x1 = input(s1), x2 = input(s2);

  auto e1 = exec::Executable::create(graph(s1.b, s1.h, s1.w, mode.int8), *cpu, m.source, programs);
  // Packing staged the f32 weights; create() ended preparing, which let the staging go.
  EXPECT_EQ(backend::cpu::weight_staging_bytes(), 0u);
  const CpuWeightCacheStats after1 = backend::cpu_weight_cache_stats(*cpu);
  // Every buffer was made once; the second linear found the first one's.
  EXPECT_EQ(after1.misses, after1.entries);
  EXPECT_GE(after1.hits, mode.int8 ? 3u : 2u);  // packed weights, bias (and scales)
  EXPECT_GT(after1.bytes, 0u);
  EXPECT_EQ(cpu->resident_weight_bytes(), after1.bytes);
  const std::vector<float> y1 = run(*e1, x1);
  EXPECT_LE(rel_error(y1, reference(m, x1, s1.b, s1.h, s1.w)), mode.tolerance);

  auto e2 = exec::Executable::create(graph(s2.b, s2.h, s2.w, mode.int8), *cpu, m.source, programs);
  const CpuWeightCacheStats after2 = backend::cpu_weight_cache_stats(*cpu);
  EXPECT_EQ(after2.misses, after1.misses) << "the second shape packed a weight again";
  EXPECT_EQ(after2.extra_layouts, 0u);
  EXPECT_EQ(after2.entries, after1.entries);
  EXPECT_EQ(after2.bytes, after1.bytes);
  EXPECT_EQ(after2.hits, after1.hits + after1.misses + after1.hits);  // every lookup a hit
  const std::vector<float> y2 = run(*e2, x2);
  EXPECT_LE(rel_error(y2, reference(m, x2, s2.b, s2.h, s2.w)), mode.tolerance);
  EXPECT_EQ(run(*e1, x1), y1);  // the first one is unchanged by the second

  // The shared packs give exactly what packs of one's own give (a fresh backend).
  {
    auto fresh = backend::make_cpu_backend({.num_threads = 0, .int8_mode = mode.int8_mode});
    backend::ProgramCache fresh_programs;
    auto e = exec::Executable::create(graph(s2.b, s2.h, s2.w, mode.int8), *fresh, m.source,
                                      fresh_programs);
    EXPECT_EQ(run(*e, x2), y2);
    EXPECT_EQ(backend::cpu_weight_cache_stats(*fresh).hits, after1.hits);  // its own 2nd linear
  }

  // An overlay forwarding the generation (a LoRA overlay's base weights) shares the packs.
  {
    ForwardingOverlay overlay(m.source);
    auto e = exec::Executable::create(graph(s1.b, s1.h, s1.w, mode.int8), *cpu, overlay, programs);
    EXPECT_EQ(backend::cpu_weight_cache_stats(*cpu).misses, after1.misses);
    EXPECT_EQ(run(*e, x1), y1);
  }

  // The same bytes behind another source (another generation) are not trusted: packed again.
  {
    OtherSource other(m.source);
    auto e = exec::Executable::create(graph(s1.b, s1.h, s1.w, mode.int8), *cpu, other, programs);
    const CpuWeightCacheStats s = backend::cpu_weight_cache_stats(*cpu);
    EXPECT_EQ(s.misses, 2 * after1.misses);
    EXPECT_EQ(s.entries, 2 * after1.entries);
    EXPECT_EQ(run(*e, x1), y1);
  }
  EXPECT_EQ(backend::cpu_weight_cache_stats(*cpu).bytes, after1.bytes);  // its copies are gone

  // A new source with the same names and other values: the stale-weights guard.
  {
    Model m2;
    fill(m2, 50, mode.int8);
    auto e =
        exec::Executable::create(graph(s1.b, s1.h, s1.w, mode.int8), *cpu, m2.source, programs);
    EXPECT_EQ(backend::cpu_weight_cache_stats(*cpu).misses, 3 * after1.misses);
    const std::vector<float> y = run(*e, x1);
    EXPECT_LE(rel_error(y, reference(m2, x1, s1.b, s1.h, s1.w)), mode.tolerance);
    EXPECT_GT(rel_error(y, reference(m, x1, s1.b, s1.h, s1.w)), 0.1);
    EXPECT_EQ(run(*e1, x1), y1);  // and the first model's executables are untouched
  }

  // The packs live as long as some executable uses them.
  e1.reset();
  EXPECT_EQ(backend::cpu_weight_cache_stats(*cpu).bytes, after1.bytes);
  EXPECT_EQ(run(*e2, x2), y2);
  e2.reset();
  const CpuWeightCacheStats freed = backend::cpu_weight_cache_stats(*cpu);
  EXPECT_EQ(freed.entries, 0u);
  EXPECT_EQ(freed.bytes, 0u);
  EXPECT_EQ(cpu->resident_weight_bytes(), 0u);
}

// Kernel::held_bytes leaves the shared buffers out (they are the backend's, counted once by
// resident_weight_bytes), so an executable's held bytes do not grow with its weights.
TEST(CpuWeightCacheAccounting, SharedWeightsAreCountedByTheBackendOnly) {
  auto cpu = backend::make_cpu_backend();
  backend::ProgramCache programs;
  Model m;
  fill(m, 7, false);
  auto e1 = exec::Executable::create(graph(1, 8, 8, false), *cpu, m.source, programs);
  const size_t weight_bytes =
      (m.conv_w.size() + m.conv_b.size() + m.lin_w.size() + m.lin_b.size()) * sizeof(float);
  EXPECT_GE(cpu->resident_weight_bytes(), weight_bytes);
  auto e2 = exec::Executable::create(graph(2, 12, 10, false), *cpu, m.source, programs);
  for (const exec::Executable* e : {e1.get(), e2.get()}) {
    size_t arena_bytes = 0;
    for (const auto& plan : e->memory_plans())
      arena_bytes += static_cast<size_t>(plan.arena_bytes);
    // Its own packs for its shape only (none here: both shapes use the same layouts).
    EXPECT_EQ(backend::cpu_weight_cache_stats(*cpu).extra_layouts, 0u);
    EXPECT_LE(e->held_bytes(), arena_bytes + 4096);
  }
}

// The cache itself: keys, layouts, lifetime, threads.
using backend::cpu::WeightCache;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

std::function<AlignedBuffer()> filled(size_t bytes, uint8_t value, std::atomic<int>* made) {
  return [=] {
    if (made) ++*made;
    AlignedBuffer b(bytes, "test buffer");
    std::memset(b.data(), value, bytes);
    return b;
  };
}

TEST(WeightCache, KeysOnGenerationNameFormAndTheExactLayout) {
  WeightCache c;
  std::atomic<int> made{0};
  const dnnl::memory::desc ab({64, 32}, dt::f32, tag::ab), ba({64, 32}, dt::f32, tag::ba);
  const dnnl::memory::desc ba_other_dims({32, 64}, dt::f32, tag::ba);
  WeightCache::Lookup first = c.get_or_make({1, "w", "f32 packed", ab}, filled(8192, 1, &made));
  EXPECT_FALSE(first.extra_layout);
  WeightCache::Lookup again = c.get_or_make({1, "w", "f32 packed", ab}, filled(8192, 9, &made));
  EXPECT_EQ(again.buffer, first.buffer);  // the same buffer, make() not called
  EXPECT_EQ(made, 1);
  // Another layout of the same weight and form: made, and a per-shape extra.
  WeightCache::Lookup other = c.get_or_make({1, "w", "f32 packed", ba}, filled(8192, 2, &made));
  EXPECT_NE(other.buffer, first.buffer);
  EXPECT_TRUE(other.extra_layout);
  EXPECT_TRUE(
      c.get_or_make({1, "w", "f32 packed", ba_other_dims}, filled(8192, 3, &made)).extra_layout);
  // Another generation, name or form: never the first one's, never an extra layout.
  for (const WeightCache::Key& k :
       {WeightCache::Key{2, "w", "f32 packed", ab}, WeightCache::Key{1, "v", "f32 packed", ab},
        WeightCache::Key{1, "w", "s8 packed for w8a8", ab}}) {
    WeightCache::Lookup l = c.get_or_make(k, filled(4096, 4, &made));
    EXPECT_NE(l.buffer, first.buffer);
    EXPECT_FALSE(l.extra_layout);
    EXPECT_EQ(l.buffer->as<uint8_t>()[0], 4);
  }  // ... and dropped here: their entries expire
  WeightCache::Stats s = c.stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 6u);
  EXPECT_EQ(s.extra_layouts, 2u);
  EXPECT_EQ(s.entries, 2u);  // first (= again) and other; the ba_other_dims one was dropped
  EXPECT_EQ(s.bytes, 2u * 8192);
  EXPECT_EQ(first.buffer->as<uint8_t>()[0], 1);
  // Freed with its last holder; a later lookup makes it again.
  first = {};
  again = {};
  EXPECT_EQ(c.stats().entries, 1u);
  WeightCache::Lookup remade = c.get_or_make({1, "w", "f32 packed", ab}, filled(8192, 5, &made));
  EXPECT_EQ(remade.buffer->as<uint8_t>()[0], 5);
  EXPECT_TRUE(remade.extra_layout);  // `other` still holds the weight in its layout
  other = {};
  remade = {};
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_EQ(c.live_bytes(), 0u);
}

TEST(WeightCache, ThreadsShareBuffersAndEveryoneSeesCompleteOnes) {
  WeightCache c;
  const dnnl::memory::desc layout({16, 16}, dt::f32, tag::ab);
  constexpr int kThreads = 4, kKeys = 8, kRounds = 2000;
  std::atomic<int> made{0}, wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::vector<backend::cpu::SharedBuffer> keep(kKeys);
      for (int r = 0; r < kRounds; ++r) {
        const int k = (r * 7 + t) % kKeys;
        const std::string name = "w" + std::to_string(k);
        WeightCache::Lookup l = c.get_or_make({1, name, "f32 copy", layout},
                                              filled(4096, static_cast<uint8_t>(k + 1), &made));
        const auto* p = l.buffer->as<uint8_t>();
        if (p[0] != k + 1 || p[4095] != k + 1) ++wrong;
        // Hold some, drop others, so entries expire and are made again meanwhile.
        keep[k] = (r + t) % 3 == 0 ? l.buffer : nullptr;
      }
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(wrong, 0);
  const WeightCache::Stats s = c.stats();
  EXPECT_EQ(s.hits + s.misses, static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_LE(s.misses, static_cast<uint64_t>(made.load()));  // a lost race makes one for nothing
  EXPECT_EQ(s.entries, 0u);
}

TEST(CpuWeightCacheIntrospection, RefusesAnotherBackend) {
  class NotCpu final : public backend::Backend {
   public:
    std::string_view name() const override { return "other"; }
    backend::DeviceType device_type() const override { return backend::DeviceType::kHost; }
    bool supports(const ir::Graph&, const ir::Node&) const override { return false; }
    double estimate_us(const ir::Graph&, const ir::Node&) const override { return 0; }
    std::unique_ptr<backend::Kernel> prepare(const ir::Graph&, const ir::Node&,
                                             const weights::WeightSource&,
                                             backend::ProgramCache&) override {
      return nullptr;
    }
    std::unique_ptr<backend::DeviceMemory> allocate(size_t, std::string_view) override {
      return nullptr;
    }
  } other;
  EXPECT_THROW(backend::cpu_weight_cache_stats(other), hyrt::Error);
}

}  // namespace
}  // namespace hyrt

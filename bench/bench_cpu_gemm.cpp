// GEMM-class ops at SD 1.5 UNet shapes through the hyrt CPU backend's prepared kernels
// (what hyrt actually runs: packed weights, cached primitives, our attention tiling), plus
// a register-resident FMA loop that measures the machine's f32 peak so every result can
// be read as a fraction of it.
//
//   OMP_NUM_THREADS=2 bench_cpu_gemm --benchmark_repetitions=5
//     --benchmark_report_aggregates_only=true --benchmark_format=json
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <omp.h>

#include <time.h>

#include <dnnl.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/parallel.h"
#include "ir/graph.h"

namespace {

using hyrt::DType;
using hyrt::Shape;
using hyrt::Tensor;
using hyrt::TensorView;
namespace ir = hyrt::ir;

class MemoryWeights final : public hyrt::weights::WeightSource {
 public:
  void add(const std::string& name, Tensor t) { tensors_[name] = std::move(t); }
  TensorView get(std::string_view name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) hyrt::fail(hyrt::ErrorCode::kNotFound, "no weight '", name, "'");
    return it->second.view();
  }
  bool contains(std::string_view name) const override { return tensors_.count(name) > 0; }

 private:
  std::map<std::string, Tensor, std::less<>> tensors_;
};

Tensor filled(Shape shape, float value_step) {
  Tensor t(DType::kF32, shape);
  float* p = t.as<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(i % 97) * value_step - 0.5f;
  return t;
}

// bf16: FloatPrecision::kBF16 (bf16 operands, f32 accumulation; f32 where the CPU lacks bf16
// dot products).
hyrt::backend::Backend& backend(bool bf16 = false) {
  static std::unique_ptr<hyrt::backend::Backend> f32 = hyrt::backend::make_cpu_backend();
  static std::unique_ptr<hyrt::backend::Backend> b16 =
      hyrt::backend::make_cpu_backend({.float_precision = hyrt::backend::FloatPrecision::kBF16});
  return bf16 ? *b16 : *f32;
}

// A one-node graph prepared through the Backend interface, with bound buffers.
struct PreparedNode {
  ir::Graph graph;
  MemoryWeights weights;
  hyrt::backend::ProgramCache cache;
  std::vector<Tensor> activations;
  std::vector<TensorView> views;
  Tensor output;
  std::unique_ptr<hyrt::backend::Kernel> kernel;
  bool bf16 = false;  // prepare on backend(true)
  // W8A8 on a quantized model's graph (an unused 8-bit S weight in it): what makes the backend
  // take int8 attention (cpu_backend.cpp), on the default backend (W8A8, f32 elsewhere).
  bool quantized_graph = false;

  ir::ValueId input(Shape shape) {
    activations.push_back(filled(shape, 0.01f));
    return graph.add_input("x" + std::to_string(activations.size()), DType::kF32, shape);
  }
  ir::ValueId weight(Shape shape) {
    const std::string name = "w" + std::to_string(graph.values().size());
    weights.add(name, filled(shape, 0.001f));
    return graph.add_weight(name, DType::kF32, shape);
  }
  void finish(ir::OpKind op, std::vector<ir::ValueId> inputs, ir::Attrs attrs = {}) {
    const ir::ValueId out = graph.add_node(op, inputs, std::move(attrs), "node");
    graph.mark_output(out);
    if (quantized_graph) {
      weights.add("quantized", Tensor(DType::kS8, Shape{4, 4}));
      graph.add_weight("quantized", DType::kS8, Shape{4, 4});
    }
    const ir::Node& n = graph.nodes().back();
    kernel = backend(bf16).prepare(graph, n, weights, cache);
    size_t next_activation = 0;
    for (ir::ValueId id : n.inputs) {
      const ir::Value& v = graph.value(id);
      views.push_back(v.kind == ir::ValueKind::kWeight ? weights.get(v.name)
                                                       : activations[next_activation++].view());
    }
    output = Tensor(DType::kF32, graph.value(out).shape);
  }
  void run() { kernel->run(views, output.view()); }
};

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// GFLOP/s: wall-clock rate. GFLOP/cpu-s: work per second of CPU this process got, summed
// over its threads. On a machine shared with other jobs (the 2-core dev boxes often are),
// GFLOP/cpu-s x threads is what the threads would do with the cores to themselves (a lower
// bound: OpenMP threads spin while they wait). `cpu_start` is read before the timed loop.
void report(benchmark::State& state, double flops, double cpu_start) {
  const double work = flops * static_cast<double>(state.iterations()) / 1e9;
  state.counters["GFLOP/s"] = benchmark::Counter(work, benchmark::Counter::kIsRate);
  state.counters["GFLOP/cpu-s"] = work / (process_cpu_seconds() - cpu_start);
  state.counters["threads"] = hyrt::num_threads();
}

// y [M, N] = x [M, K] · w [N, K]ᵀ + bias
void BM_Linear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  PreparedNode p;
  const ir::ValueId x = p.input({m, k});
  const ir::ValueId w = p.weight({n, k});
  const ir::ValueId b = p.weight({n});
  p.finish(ir::OpKind::kLinear, {x, w, b});
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state)
    p.run();
  report(state, 2.0 * m * n * k, cpu_start);
}
BENCHMARK(BM_Linear)
    ->ArgNames({"M", "N", "K"})
    ->Args({4096, 320, 320})
    ->Args({4096, 2560, 320})
    ->Args({4096, 320, 1280})
    ->Args({1024, 640, 640})
    ->Args({256, 1280, 1280})
    ->Args({77, 320, 768})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// 3x3, stride 1, pad 1, C -> C channels on a batch-1 HxH NHWC map.
void BM_Conv3x3(benchmark::State& state) {
  const int64_t c = state.range(0), hw = state.range(1);
  PreparedNode p;
  const ir::ValueId x = p.input({1, hw, hw, c});
  const ir::ValueId w = p.weight({c, c, 3, 3});
  const ir::ValueId b = p.weight({c});
  p.finish(ir::OpKind::kConv2d, {x, w, b}, ir::Conv2dAttrs{1, 1});
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state)
    p.run();
  report(state, 2.0 * hw * hw * c * c * 9, cpu_start);
}
BENCHMARK(BM_Conv3x3)
    ->ArgNames({"C", "HW"})
    ->Args({320, 64})
    ->Args({640, 32})
    ->Args({1280, 16})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Attention, batch 1, Tq queries over Tk keys, `heads` heads of D; prec: 0 f32, 1 under
// FloatPrecision::kBF16, 2 under W8A8 on a quantized model's graph (int8 where the fused int8
// kernel runs, else bf16: attention.cpp). Shapes: SD 1.5's levels (8 heads of 40, 80, 160) and
// SDXL's at 1024² (10 and 20 heads of 64), self and cross (77 keys).
void BM_Attention(benchmark::State& state) {
  const int64_t tq = state.range(0), tk = state.range(1), heads = state.range(3),
                d = state.range(4);
  PreparedNode p;
  p.bf16 = state.range(2) == 1;
  p.quantized_graph = state.range(2) == 2;
  const ir::ValueId q = p.input({1, tq, heads * d});
  const ir::ValueId k = p.input({1, tk, heads * d});
  const ir::ValueId v = p.input({1, tk, heads * d});
  p.finish(ir::OpKind::kAttention, {q, k, v}, ir::AttentionAttrs{static_cast<int>(heads)});
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state)
    p.run();
  report(state, 2.0 * tq * tk * heads * (d + d), cpu_start);
}
void attention_shapes(benchmark::internal::Benchmark* b) {
  b->Args({4096, 4096, 0, 8, 40})->Args({4096, 77, 0, 8, 40});
  for (int64_t prec : {1, 2})
    b->Args({4096, 4096, prec, 8, 40})
        ->Args({4096, 77, prec, 8, 40})
        ->Args({1024, 1024, prec, 8, 80})
        ->Args({256, 256, prec, 8, 160})
        ->Args({4096, 4096, prec, 10, 64})
        ->Args({1024, 1024, prec, 20, 64})
        ->Args({4096, 77, prec, 10, 64});
}
BENCHMARK(BM_Attention)
    ->ArgNames({"Tq", "Tk", "prec", "H", "D"})
    ->Apply(attention_shapes)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// --- Peak: independent FMA chains that never touch memory, on every thread ---------------
// kChains accumulators hide the 4-cycle FMA latency on two FMA ports (8 would just
// suffice) and still fit the register file with the two constants: 12 of 16 ymm
// registers, 24 of 32 zmm registers. The chain loop is fully unrolled so the accumulators
// live in registers.
constexpr int64_t kPeakIterations = 1 << 22;
constexpr int kChainsAvx2 = 12;
constexpr int kChainsAvx512 = 24;

__attribute__((noinline)) float fma_loop_avx2(int64_t iters) {
  __m256 acc[kChainsAvx2];
#pragma GCC unroll 32
  for (int i = 0; i < kChainsAvx2; ++i)
    acc[i] = _mm256_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kChainsAvx2; ++i)
      acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  __m256 s = acc[0];
#pragma GCC unroll 32
  for (int i = 1; i < kChainsAvx2; ++i)
    s = _mm256_add_ps(s, acc[i]);
  return _mm256_cvtss_f32(s);
}

__attribute__((noinline, target("avx512f"))) float fma_loop_avx512(int64_t iters) {
  __m512 acc[kChainsAvx512];
#pragma GCC unroll 32
  for (int i = 0; i < kChainsAvx512; ++i)
    acc[i] = _mm512_set1_ps(static_cast<float>(i) * 1e-3f);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 32
    for (int i = 0; i < kChainsAvx512; ++i)
      acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
#pragma GCC unroll 32
  for (int i = 1; i < kChainsAvx512; ++i)
    s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

template <float (*Loop)(int64_t), int kLanes, int kChains>
void BM_PeakFma(benchmark::State& state) {
  const int threads = hyrt::num_threads();
  float sink = 0;
  const double cpu_start = process_cpu_seconds();
  for (auto _ : state) {
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += Loop(kPeakIterations);
  }
  benchmark::DoNotOptimize(sink);
  report(state, 2.0 * kLanes * kChains * static_cast<double>(kPeakIterations) * threads, cpu_start);
}

void BM_PeakFmaAvx2(benchmark::State& state) {
  BM_PeakFma<fma_loop_avx2, 8, kChainsAvx2>(state);
}
BENCHMARK(BM_PeakFmaAvx2)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_PeakFmaAvx512(benchmark::State& state) {
  if (!__builtin_cpu_supports("avx512f")) {
    state.SkipWithError("no AVX-512 on this CPU");
    return;
  }
  BM_PeakFma<fma_loop_avx512, 16, kChainsAvx512>(state);
}
BENCHMARK(BM_PeakFmaAvx512)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

// Records what the JSON context lacks: the CPU model, oneDNN's version, the thread count.
int main(int argc, char** argv) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      benchmark::AddCustomContext("cpu_model", line.substr(line.find(':') + 2));
      break;
    }
  const dnnl_version_t* v = dnnl_version();
  benchmark::AddCustomContext("onednn", std::to_string(v->major) + "." + std::to_string(v->minor) +
                                            "." + std::to_string(v->patch) +
                                            (v->cpu_runtime == DNNL_RUNTIME_OMP ? " omp" : ""));
  benchmark::AddCustomContext("hyrt_threads", std::to_string(hyrt::num_threads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// "8-bit S" linear and conv2d through the hyrt CPU backend's prepared kernels, side by
// side with the f32 kernels at the SD 1.5 UNet shapes of bench_cpu_gemm.cpp:
//   mode 0  f32 weights (the f32 path: oneDNN brgemm, bias fused)
//   mode 1  W8:   s8 weights widened to f32 at run time + f32 GEMM + scale/bias epilogue
//   mode 2  W8A8: per-row (linear) / per-tensor (conv) activation quantization + s8·s8->s32
//                 + dequant/bias epilogue
// GOP/s counts 2·M·N·K (or the conv's MACs ×2) per run for every mode, so the columns are
// directly comparable. Each case runs 5 repetitions and reports their median (and mean,
// stddev).
//
//   OMP_NUM_THREADS=2 bench_cpu_int8 --benchmark_filter=median
#include <benchmark/benchmark.h>

#include <dnnl.hpp>

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/onednn_compat.h"
#include "core/error.h"
#include "core/parallel.h"
#include "ir/graph.h"
#include "weights/quantize.h"

namespace {

using hyrt::DType;
using hyrt::Shape;
using hyrt::Tensor;
using hyrt::TensorView;
namespace ir = hyrt::ir;
using hyrt::backend::Int8Mode;

// Weights with optional "8-bit S" scales, in memory.
class MemoryWeights final : public hyrt::weights::WeightSource {
 public:
  void add(const std::string& name, Tensor t) { tensors_[name] = std::move(t); }
  void add_scale(const std::string& name, Tensor t) { scales_[name] = std::move(t); }
  TensorView get(std::string_view name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) hyrt::fail(hyrt::ErrorCode::kNotFound, "no weight '", name, "'");
    return it->second.view();
  }
  bool contains(std::string_view name) const override { return tensors_.count(name) > 0; }
  std::optional<TensorView> scale(std::string_view name) const override {
    auto it = scales_.find(name);
    if (it == scales_.end()) return std::nullopt;
    return it->second.view();
  }

 private:
  std::map<std::string, Tensor, std::less<>> tensors_, scales_;
};

Tensor filled(Shape shape, float value_step) {
  Tensor t(DType::kF32, shape);
  float* p = t.as<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    p[i] = static_cast<float>(i % 97) * value_step - 0.5f * value_step * 97;
  return t;
}

// One backend per mode (mode 0 uses the W8A8 one; it never sees s8 weights).
hyrt::backend::Backend& backend(int mode) {
  static std::unique_ptr<hyrt::backend::Backend> w8a8 =
      hyrt::backend::make_cpu_backend({.num_threads = 0, .int8_mode = Int8Mode::kW8A8});
  static std::unique_ptr<hyrt::backend::Backend> w8 =
      hyrt::backend::make_cpu_backend({.num_threads = 0, .int8_mode = Int8Mode::kW8});
  return mode == 1 ? *w8 : *w8a8;
}

struct PreparedNode {
  int mode = 0;
  ir::Graph graph;
  MemoryWeights weights;
  hyrt::backend::ProgramCache cache;
  std::vector<Tensor> activations;
  std::vector<TensorView> views;
  Tensor output;
  std::unique_ptr<hyrt::backend::Kernel> kernel;

  ir::ValueId input(Shape shape) {
    activations.push_back(filled(shape, 0.01f));
    return graph.add_input("x" + std::to_string(activations.size()), DType::kF32, shape);
  }
  // The GEMM weight: f32 in mode 0, quantized "8-bit S" otherwise.
  ir::ValueId gemm_weight(Shape shape) {
    const std::string name = "w" + std::to_string(graph.values().size());
    Tensor w = filled(shape, 0.001f);
    if (mode == 0) {
      weights.add(name, std::move(w));
      return graph.add_weight(name, DType::kF32, shape);
    }
    hyrt::weights::QuantizedTensor q = hyrt::weights::quantize_per_row(w.view(), 0);
    weights.add(name, std::move(q.q));
    weights.add_scale(name, std::move(q.scale));
    return graph.add_weight(name, DType::kS8, shape);
  }
  ir::ValueId bias(Shape shape) {
    const std::string name = "b" + std::to_string(graph.values().size());
    weights.add(name, filled(shape, 0.001f));
    return graph.add_weight(name, DType::kF32, shape);
  }
  void finish(ir::OpKind op, std::vector<ir::ValueId> inputs, ir::Attrs attrs = {}) {
    const ir::ValueId out = graph.add_node(op, inputs, std::move(attrs), "node");
    graph.mark_output(out);
    const ir::Node& n = graph.nodes().back();
    kernel = backend(mode).prepare(graph, n, weights, cache);
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

const char* mode_label(int mode) {
  return mode == 0 ? "f32" : mode == 1 ? "W8" : "W8A8";
}

void report(benchmark::State& state, double ops, int mode) {
  state.counters["GOP/s"] = benchmark::Counter(ops * static_cast<double>(state.iterations()) / 1e9,
                                               benchmark::Counter::kIsRate);
  state.counters["threads"] = hyrt::num_threads();
  state.SetLabel(mode_label(mode));
}

// y [M, N] = x [M, K] · w [N, K]ᵀ + bias
void BM_Linear(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  PreparedNode p;
  p.mode = static_cast<int>(state.range(3));
  const ir::ValueId x = p.input({m, k});
  const ir::ValueId w = p.gemm_weight({n, k});
  const ir::ValueId b = p.bias({n});
  p.finish(ir::OpKind::kLinear, {x, w, b});
  for (auto _ : state)
    p.run();
  report(state, 2.0 * m * n * k, p.mode);
}
BENCHMARK(BM_Linear)
    ->ArgNames({"M", "N", "K", "mode"})
    ->ArgsProduct({{4096}, {320}, {320}, {0, 1, 2}})
    ->ArgsProduct({{4096}, {2560}, {320}, {0, 1, 2}})
    ->ArgsProduct({{4096}, {320}, {1280}, {0, 1, 2}})
    ->ArgsProduct({{1024}, {640}, {640}, {0, 1, 2}})
    ->ArgsProduct({{256}, {1280}, {1280}, {0, 1, 2}})
    ->ArgsProduct({{77}, {320}, {768}, {0, 1, 2}})
    // W8A8 at the SD 1.5 UNet's 512² shapes with CFG's batch of 2: each level's attention
    // projections, GEGLU input and feed-forward output.
    ->ArgsProduct({{8192}, {320, 2560}, {320}, {2}})
    ->Args({8192, 320, 1280, 2})
    ->ArgsProduct({{2048}, {640, 5120}, {640}, {2}})
    ->Args({2048, 640, 2560, 2})
    ->ArgsProduct({{512}, {1280, 10240}, {1280}, {2}})
    ->Args({512, 1280, 5120, 2})
    ->Repetitions(5)
    ->ReportAggregatesOnly(true)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// 3x3, stride 1, pad 1, C -> C channels on a batch-1 HxH NHWC map.
void BM_Conv3x3(benchmark::State& state) {
  const int64_t c = state.range(0), hw = state.range(1);
  PreparedNode p;
  p.mode = static_cast<int>(state.range(2));
  const ir::ValueId x = p.input({1, hw, hw, c});
  const ir::ValueId w = p.gemm_weight({c, c, 3, 3});
  const ir::ValueId b = p.bias({c});
  p.finish(ir::OpKind::kConv2d, {x, w, b}, ir::Conv2dAttrs{1, 1});
  for (auto _ : state)
    p.run();
  report(state, 2.0 * hw * hw * c * c * 9, p.mode);
}
BENCHMARK(BM_Conv3x3)
    ->ArgNames({"C", "HW", "mode"})
    ->ArgsProduct({{320}, {64}, {0, 1, 2}})
    ->ArgsProduct({{640}, {32}, {0, 1, 2}})
    ->ArgsProduct({{1280}, {16}, {0, 1, 2}})
    ->Repetitions(5)
    ->ReportAggregatesOnly(true)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Why W8A8 feeds s8 rather than u8 activations: the bare oneDNN s8·s8 -> s32 vs u8·s8 -> s32
// matmul, weights pre-packed for the source type (s8 packing adds compensation on VNNI;
// AMX has a native s8·s8 instruction). src 0 = s8, 1 = u8. Run under
// DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI to see the VNNI (Zen 5-like) figure on an AMX machine.
void BM_RawInt8Matmul(benchmark::State& state) {
  using dnnl::memory;
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const memory::data_type src_type =
      state.range(3) == 0 ? memory::data_type::s8 : memory::data_type::u8;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(eng);
  const memory::desc src({m, k}, src_type, memory::format_tag::ab);
  const memory::desc wei({k, n}, memory::data_type::s8, memory::format_tag::any);
  const memory::desc dst({m, n}, memory::data_type::s32, memory::format_tag::ab);
  const dnnl::matmul::primitive_desc pd =
      hyrt::backend::cpu::make_matmul_pd(eng, src, wei, memory::desc(), dst);
  const dnnl::matmul matmul(pd);
  memory src_mem(src, eng), dst_mem(dst, eng), packed(pd.weights_desc(), eng);
  memory plain({{k, n}, memory::data_type::s8, memory::format_tag::ba}, eng);
  std::memset(src_mem.get_data_handle(), 3, static_cast<size_t>(m * k));
  std::memset(plain.get_data_handle(), 5, static_cast<size_t>(n * k));
  dnnl::reorder(plain, packed).execute(stream, plain, packed);
  for (auto _ : state) {
    matmul.execute(stream,
                   {{DNNL_ARG_SRC, src_mem}, {DNNL_ARG_WEIGHTS, packed}, {DNNL_ARG_DST, dst_mem}});
    stream.wait();
  }
  state.counters["GOP/s"] = benchmark::Counter(
      2.0 * m * n * k * static_cast<double>(state.iterations()) / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(state.range(3) == 0 ? "s8" : "u8") + " " + pd.impl_info_str());
}
BENCHMARK(BM_RawInt8Matmul)
    ->ArgNames({"M", "N", "K", "src"})
    ->ArgsProduct({{4096}, {320}, {320}, {0, 1}})
    ->ArgsProduct({{4096}, {2560}, {320}, {0, 1}})
    ->ArgsProduct({{1024}, {640}, {640}, {0, 1}})
    ->Repetitions(5)
    ->ReportAggregatesOnly(true)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();

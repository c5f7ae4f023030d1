// OpCase: builds a one-node ir::Graph with random inputs and weights, prepares it through
// the Backend interface (with an in-memory WeightSource) and runs the Kernel on a poisoned
// output buffer — the way the executor uses a backend.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "core/buffer.h"
#include "core/error.h"
#include "core/half.h"
#include "ir/graph.h"
#include "test_util.h"
#include "weights/weight_source.h"

namespace hyrt::test {

// Weights held in memory, keyed by name.
class MapWeights final : public weights::WeightSource {
 public:
  void add(const std::string& name, Tensor t) { tensors_[name] = std::move(t); }
  TensorView get(std::string_view name) const override {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) fail(ErrorCode::kNotFound, "no weight '", name, "'");
    return it->second.view();
  }
  bool contains(std::string_view name) const override { return tensors_.count(name) > 0; }
  // Per-row scales of an "8-bit S" weight (any dtype/shape: tests feed wrong ones too).
  void add_scale(const std::string& name, Tensor scale) { scales_[name] = std::move(scale); }
  std::optional<TensorView> scale(std::string_view name) const override {
    auto it = scales_.find(name);
    if (it == scales_.end()) return std::nullopt;
    return it->second.view();
  }

 private:
  std::map<std::string, Tensor, std::less<>> tensors_;
  std::map<std::string, Tensor, std::less<>> scales_;
};

inline backend::Backend& cpu_backend() {
  static std::unique_ptr<backend::Backend> b = backend::make_cpu_backend();
  return *b;
}

class OpCase {
 public:
  ir::Graph graph;
  MapWeights weights;
  backend::ProgramCache cache;

  // A random f32 activation input.
  ir::ValueId input(Shape shape, uint64_t seed, float scale = 1.0f) {
    return input_tensor(random_tensor(shape, seed, scale));
  }
  ir::ValueId input_tensor(Tensor t) {
    const ir::ValueId id = graph.add_input("in" + std::to_string(next_++), t.dtype(), t.shape());
    activations_[id] = std::move(t);
    return id;
  }
  // A random weight stored as `dtype`; values() returns what it represents (rounded).
  ir::ValueId weight(Shape shape, DType dtype, uint64_t seed, float scale = 1.0f) {
    Tensor f32 = random_tensor(shape, seed, scale);
    Tensor stored(dtype, shape);
    convert_from_f32(f32.as<float>(), dtype, stored.data(), static_cast<size_t>(f32.numel()));
    const std::string name = "w" + std::to_string(next_++);
    weights.add(name, std::move(stored));
    return graph.add_weight(name, dtype, shape);
  }
  // The f32 values of an input or weight.
  std::vector<float> values(ir::ValueId id) const {
    const ir::Value& v = graph.value(id);
    const TensorView view =
        v.kind == ir::ValueKind::kWeight ? weights.get(v.name) : activations_.at(id).view();
    std::vector<float> out(static_cast<size_t>(view.numel()));
    convert_to_f32(view.dtype, view.data, out.data(), out.size());
    return out;
  }
  ir::ValueId node(ir::OpKind op, std::vector<ir::ValueId> inputs, ir::Attrs attrs = {}) {
    node_ = graph.add_node(op, std::move(inputs), std::move(attrs), "node");
    graph.mark_output(node_);
    return node_;
  }
  const Shape& out_shape() const { return graph.value(node_).shape; }

  // Prepares and runs the node. in_place: the output buffer is input 0's buffer.
  std::vector<float> run(bool in_place = false) { return run_on(cpu_backend(), in_place); }
  // The same on a given backend (e.g. a CPU backend built with other options).
  std::vector<float> run_on(backend::Backend& backend, bool in_place = false) {
    return run_on(backend, in_place, nullptr);
  }
  // The same with the kernel's workspace bound to a buffer poisoned first, as the executor
  // binds one from its arena; `workspace_bytes` gets the size the kernel asked for.
  std::vector<float> run_bound(backend::Backend& backend, size_t* workspace_bytes) {
    return run_on(backend, false, workspace_bytes);
  }

 private:
  std::vector<float> run_on(backend::Backend& backend, bool in_place, size_t* workspace_bytes) {
    graph.verify();
    const ir::Node& n = graph.nodes().back();
    auto kernel = backend.prepare(graph, n, weights, cache);
    AlignedBuffer workspace;
    if (workspace_bytes) {
      *workspace_bytes = kernel->workspace_bytes();
      workspace = AlignedBuffer(std::max<size_t>(*workspace_bytes, 64), "test workspace");
      std::memset(workspace.data(), 0xff, workspace.size());
      kernel->bind_workspace(workspace.data());
    }
    std::vector<TensorView> views;
    for (ir::ValueId id : n.inputs) {
      const ir::Value& v = graph.value(id);
      views.push_back(v.kind == ir::ValueKind::kWeight ? weights.get(v.name)
                                                       : activations_.at(id).view());
    }
    const ir::Value& out = graph.value(n.output);
    Tensor result(out.dtype, out.shape);
    TensorView out_view = result.view();
    if (in_place) {
      out_view = views[0];
      EXPECT_EQ(out_view.bytes(), result.bytes());
    } else {
      poison(result.data(), result.bytes());
    }
    kernel->run(views, out_view);
    std::vector<float> y(static_cast<size_t>(out.shape.numel()));
    std::memcpy(y.data(), out_view.data, y.size() * sizeof(float));
    return y;
  }

  std::map<ir::ValueId, Tensor> activations_;
  ir::ValueId node_ = ir::kNone;
  int next_ = 0;
};

// Relative L2 of an f32 result against a double reference.
inline double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  EXPECT_EQ(got.size(), want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  if (den == 0) return num == 0 ? 0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

inline constexpr double kTolerance = 1e-5;

// Worst relative error seen per op family; printed when the test binary ends.
inline std::map<std::string, double>& worst_errors() {
  static std::map<std::string, double> m;
  return m;
}

// Records `err` for `family` and checks it against the tolerance.
#define EXPECT_OP_CLOSE(family, got, want)                                       \
  do {                                                                           \
    const double err_ = ::hyrt::test::rel_error(got, want);                      \
    double& worst_ = ::hyrt::test::worst_errors()[family];                       \
    worst_ = std::max(worst_, err_);                                             \
    EXPECT_LE(err_, ::hyrt::test::kTolerance) << (family) << " rel L2 " << err_; \
  } while (0)

// A CPU backend multiplying float operands in bf16 (FloatPrecision::kBF16), in `mode`.
inline backend::Backend& bf16_backend(backend::Int8Mode mode = backend::Int8Mode::kW8A8) {
  static std::unique_ptr<backend::Backend> w8a8 = backend::make_cpu_backend(
      {.int8_mode = backend::Int8Mode::kW8A8, .float_precision = backend::FloatPrecision::kBF16});
  static std::unique_ptr<backend::Backend> w8 = backend::make_cpu_backend(
      {.int8_mode = backend::Int8Mode::kW8, .float_precision = backend::FloatPrecision::kBF16});
  return mode == backend::Int8Mode::kW8 ? *w8 : *w8a8;
}

// Tolerance of a product on bf16 operands (8 significant bits each, f32 accumulation) against
// the double reference: rounding both operands costs ~3e-3 relative L2 on random data.
inline constexpr double kBf16Tolerance = 1e-2;

// `got` ran on bf16_backend(): where the node runs bf16 (`runs_bf16`: the kernels' rule) and
// the CPU has bf16 dot products, within kBf16Tolerance of `want` and measurably different from
// `f32` (the same op on the f32 backend), so the bf16 path did run; elsewhere the node runs
// f32 and `got` must meet kTolerance.
#define EXPECT_BF16_CLOSE(family, runs_bf16, got, want, f32)                                  \
  do {                                                                                        \
    const std::vector<float> got_ = (got);                                                    \
    const double err_ = ::hyrt::test::rel_error(got_, want);                                  \
    const bool bf16_ = (runs_bf16) && ::hyrt::backend::cpu_has_bf16_dot_product();            \
    double& worst_ = ::hyrt::test::worst_errors()[bf16_ ? family : "f32 under bf16"];         \
    worst_ = std::max(worst_, err_);                                                          \
    if (bf16_) {                                                                              \
      EXPECT_LE(err_, ::hyrt::test::kBf16Tolerance) << (family) << " rel L2 " << err_;        \
      const std::vector<float>& f32_ = (f32);                                                 \
      EXPECT_GT(::hyrt::test::rel_error(got_, std::vector<double>(f32_.begin(), f32_.end())), \
                1e-6)                                                                         \
          << (family) << ": equals the f32 kernel's result, so bf16 did not run";             \
    } else {                                                                                  \
      EXPECT_LE(err_, ::hyrt::test::kTolerance)                                               \
          << (family) << ": runs f32 here (rule or CPU); rel L2 " << err_;                    \
    }                                                                                         \
  } while (0)

}  // namespace hyrt::test

// FakeBackend: a backend that only answers supports()/estimate_us() — for the planner's
// tests (placement, epilogue fusion), which never prepare or run anything.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "backend/backend.h"
#include "core/error.h"
#include "ir/graph.h"

namespace hyrt::test {

// A backend that only answers supports()/estimate_us() from the functions it was given.
class FakeBackend : public backend::Backend {
 public:
  using Supports = std::function<bool(const ir::Graph&, const ir::Node&)>;
  using Estimate = std::function<double(const ir::Graph&, const ir::Node&)>;
  FakeBackend(std::string name, backend::DeviceType type, Supports supports, Estimate estimate)
      : name_(std::move(name)),
        type_(type),
        supports_(std::move(supports)),
        estimate_(std::move(estimate)) {}
  std::string_view name() const override { return name_; }
  backend::DeviceType device_type() const override { return type_; }
  bool supports(const ir::Graph& g, const ir::Node& n) const override { return supports_(g, n); }
  double estimate_us(const ir::Graph& g, const ir::Node& n) const override {
    return estimate_(g, n);
  }
  // Holds float activations of rank >= 2 as `activation_storage` (f32 unless set: a fake f16
  // device mirrors CUDA's device_storage_dtype).
  DType storage_dtype(const ir::Value& v) const override {
    return dtype_is_float(v.dtype) && v.shape.rank() >= 2 ? activation_storage : v.dtype;
  }
  DType activation_storage = DType::kF32;
  std::unique_ptr<backend::Kernel> prepare(const ir::Graph&, const ir::Node&,
                                           const weights::WeightSource&,
                                           backend::ProgramCache&) override {
    fail(ErrorCode::kUnsupported, "fake backend");
  }
  std::unique_ptr<backend::DeviceMemory> allocate(size_t, std::string_view) override {
    fail(ErrorCode::kUnsupported, "fake backend");
  }

 private:
  std::string name_;
  backend::DeviceType type_;
  Supports supports_;
  Estimate estimate_;
};

inline bool all_ops(const ir::Graph&, const ir::Node&) {
  return true;
}
inline bool gemm_only(const ir::Graph&, const ir::Node& n) {
  return ir::op_traits(n.op).gemm_class;
}
inline auto constant(double us) {
  return [us](const ir::Graph&, const ir::Node&) { return us; };
}
// GEMMs cost `gemm`, everything else `other`.
inline auto by_class(double gemm, double other) {
  return [=](const ir::Graph&, const ir::Node& n) {
    return ir::op_traits(n.op).gemm_class ? gemm : other;
  };
}

inline FakeBackend host(FakeBackend::Estimate e = by_class(100, 10)) {
  return FakeBackend("cpu", backend::DeviceType::kHost, all_ops, std::move(e));
}
inline FakeBackend device(FakeBackend::Supports s = all_ops,
                          FakeBackend::Estimate e = by_class(5, 2)) {
  return FakeBackend("gpu", backend::DeviceType::kCuda, std::move(s), std::move(e));
}

// A device that runs every node but those `refuse` names.
inline FakeBackend device_refusing(std::function<bool(const ir::Graph&, const ir::Node&)> refuse) {
  return device([refuse](const ir::Graph& g, const ir::Node& n) { return !refuse(g, n); });
}

}  // namespace hyrt::test

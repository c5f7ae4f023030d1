// The backend-neutral parts of the contract: defaults of the optional Backend methods.
#include "backend/backend.h"

#include "core/error.h"

namespace hyrt::backend {

const char* int8_mode_name(Int8Mode mode) {
  return mode == Int8Mode::kW8A8 ? "w8a8" : "w8";
}

const char* float_precision_name(FloatPrecision precision) {
  return precision == FloatPrecision::kBF16 ? "bf16" : "f32";
}

void Backend::upload_value(const TensorView&, const TensorView&) {
  fail(ErrorCode::kUnsupported, "backend '", name(), "' holds no memory apart from the host's");
}

void Backend::download_value(const TensorView&, const TensorView&) {
  fail(ErrorCode::kUnsupported, "backend '", name(), "' holds no memory apart from the host's");
}

namespace {
class SignalledFence final : public Fence {
 public:
  void wait() override {}
};
}  // namespace

std::unique_ptr<Fence> Backend::make_fence() {
  return std::make_unique<SignalledFence>();
}

void Backend::begin_capture() {
  fail(ErrorCode::kUnsupported, "backend '", name(), "' cannot capture kernels");
}

std::unique_ptr<Replay> Backend::end_capture() {
  fail(ErrorCode::kUnsupported, "backend '", name(), "' cannot capture kernels");
}

void Backend::abort_capture() noexcept {
  try {
    end_capture();
  } catch (...) {  // the recording is discarded either way
  }
}

}  // namespace hyrt::backend

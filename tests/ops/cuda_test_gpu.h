// A CUDA context of the op tests' own on device 0, for tests that run one kernel without the
// backend's factory, or the reason there is none (tests then skip with it: REQUIRE_GPU()).
// One per test binary, made on first use. Include only under HYRT_HAVE_CUDA.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_device.h"
#include "core/error.h"

namespace hyrt::test {

struct CudaTestGpu {
  std::unique_ptr<backend::cuda::CudaContext> ctx;  // null without a usable device
  std::string why_not;
};

inline CudaTestGpu& gpu() {
  static CudaTestGpu g = [] {
    CudaTestGpu out;
    try {
      const std::vector<backend::cuda::CudaDeviceInfo> devices =
          backend::cuda::list_devices(&out.why_not);
      if (devices.empty()) return out;
      if (devices[0].compute_major < 9) {
        out.why_not = str_cat(devices[0].name, " is older than sm_90");
        return out;
      }
      out.ctx = std::make_unique<backend::cuda::CudaContext>(devices[0], size_t{32} << 20);
    } catch (const Error& e) {
      out.why_not = e.what();
    }
    return out;
  }();
  return g;
}

}  // namespace hyrt::test

#define REQUIRE_GPU()           \
  if (!::hyrt::test::gpu().ctx) \
  GTEST_SKIP() << "no usable CUDA device: " << ::hyrt::test::gpu().why_not

// cuDNN, opened at run time and optional (backend/cuda/cudnn_api.h): it is found or the reason
// it is not is given, HYRT_CUDNN=0 turns it off (ctest runs this file again so:
// cuda_cudnn_off), and a plan that cannot be built is refused with hyrt::Error naming cuDNN —
// on a machine without a GPU (cudnnCreate fails) and for an empty shape on one with a GPU —
// which is what lets the CUDA backend fall back to its own attention kernel.
#include <gtest/gtest.h>

#ifdef HYRT_HAVE_CUDA

#include <cstdlib>
#include <string>

#include "backend/cuda/cuda_device.h"
#include "backend/cuda/cudnn_api.h"
#include "backend/cuda/cudnn_attention.h"
#include "core/error.h"

namespace hyrt::test {
namespace {

bool turned_off() {
  const char* v = std::getenv("HYRT_CUDNN");
  return v && std::string(v) == "0";
}

TEST(CudnnLoader, OpensOrSaysWhy) {
  std::string why;
  const bool available = backend::cuda::cudnn_attention_available(&why);
  const std::string description = backend::cuda::cudnn_description();
  std::printf("[ cudnn    ] %s\n", description.c_str());
  if (turned_off()) {
    EXPECT_FALSE(available);
    EXPECT_NE(why.find("HYRT_CUDNN=0"), std::string::npos) << why;
  }
  if (available) {
    EXPECT_TRUE(why.empty()) << why;
    EXPECT_EQ(description.rfind("cuDNN 9.", 0), 0u) << description;
  } else {
    EXPECT_FALSE(why.empty());
    EXPECT_EQ(description.rfind("not used: ", 0), 0u) << description;
    EXPECT_NE(description.find(why), std::string::npos) << description;
  }
}

TEST(CudnnLoader, APlanItCannotBuildIsRefusedWithTheReason) {
  std::string why;
  if (!backend::cuda::cudnn_attention_available(&why)) GTEST_SKIP() << "no cuDNN: " << why;
  backend::cuda::CudnnAttentionShape shape;
  shape.batch = 2, shape.heads = 8, shape.tq = 64, shape.tk = 64, shape.d = shape.dv = 40;
  shape.scale = 0.158f;
  std::string no_gpu;
  const bool gpu = !backend::cuda::list_devices(&no_gpu).empty();
  if (gpu) shape.tq = 0;  // an empty shape: refused before cuDNN sees it
  try {
    backend::cuda::CudnnAttentionPlan plan(shape, nullptr);
    ADD_FAILURE() << "a plan was built for " << shape.key() << (gpu ? "" : " without a GPU");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), gpu ? ErrorCode::kInvalidArgument : ErrorCode::kUnsupported) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuDNN attention"), std::string::npos) << e.what();
    std::printf("[ cudnn    ] refused: %s\n", e.what());
  }
}

}  // namespace
}  // namespace hyrt::test

#else

TEST(CudnnLoader, NotBuilt) {
  GTEST_SKIP() << "built without the CUDA toolkit (HYRT_HAVE_CUDA off)";
}

#endif

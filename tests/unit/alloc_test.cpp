// core/alloc.h: a failed host allocation becomes kOutOfMemory naming what and how much.
#include "core/alloc.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <new>
#include <string>

#include "core/tensor.h"

namespace hyrt {
namespace {

TEST(Alloc, FormatsBytes) {
  EXPECT_EQ(format_bytes(512), "512 bytes");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB (1536 bytes)");
  EXPECT_EQ(format_bytes(3ull << 30), "3.0 GiB (3221225472 bytes)");
  EXPECT_EQ(bytes_of(UINT64_MAX / 2, 4), UINT64_MAX);  // saturates
}

TEST(Alloc, BadAllocBecomesOutOfMemoryNamingWhat) {
  try {
    checked_alloc("a picture", 123456, []() -> int { throw std::bad_alloc(); });
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory);
    EXPECT_EQ(std::string(e.what()),
              "out of memory allocating 120.6 KiB (123456 bytes) for a picture");
  }
  // A size past max_size() (std::length_error) as well.
  try {
    (void)checked_vector<uint32_t>(SIZE_MAX / 2, "the rows");
    ADD_FAILURE() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory);
    EXPECT_NE(std::string(e.what()).find("for the rows"), std::string::npos) << e.what();
  }
  std::vector<int> v;
  checked_resize(v, 3, "small");
  EXPECT_EQ(v.size(), 3u);
}

TEST(Alloc, TensorNamesItself) {
  try {
    Tensor t(DType::kF32, {int64_t{1} << 40, int64_t{1} << 20}, "the latents");
    ADD_FAILURE() << "allocated";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kOutOfMemory);
    EXPECT_NE(std::string(e.what()).find("the latents"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hyrt

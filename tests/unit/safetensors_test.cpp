// safetensors reader: one test per malformed input (each checks the ErrorCode and that the
// message names the file and the problem), plus writer round trips.
#include "weights/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "temp_dir_test.h"

namespace hyrt::weights {
namespace {

constexpr const char* kLabel = "bad.safetensors";

// [u64 header length][header][data]
std::vector<uint8_t> make_file(const std::string& header, const std::vector<uint8_t>& data = {},
                               uint64_t header_len_override = UINT64_MAX) {
  std::vector<uint8_t> out(8);
  uint64_t n = header_len_override == UINT64_MAX ? header.size() : header_len_override;
  for (int i = 0; i < 8; ++i)
    out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Expects from_bytes to throw `code` with a message containing the label and `problem`.
void expect_rejected(const std::vector<uint8_t>& bytes, ErrorCode code,
                     const std::string& problem) {
  try {
    SafetensorsFile::from_bytes(bytes, kLabel);
    ADD_FAILURE() << "accepted a malformed file; expected: " << problem;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    const std::string msg = e.what();
    EXPECT_NE(msg.find(kLabel), std::string::npos) << msg;
    EXPECT_NE(msg.find(problem), std::string::npos) << "missing \"" << problem << "\" in: " << msg;
  }
}

std::vector<uint8_t> bytes(size_t n, uint8_t v = 0) {
  return std::vector<uint8_t>(n, v);
}

TEST(SafetensorsTest, EmptyFile) {
  expect_rejected({}, ErrorCode::kInvalidModel, "truncated");
}

TEST(SafetensorsTest, TruncatedBeforeHeaderLength) {
  expect_rejected({1, 2, 3}, ErrorCode::kInvalidModel, "shorter than the 8-byte header length");
}

TEST(SafetensorsTest, TruncatedInData) {
  auto f = make_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", bytes(16));
  f.resize(f.size() - 5);  // cut inside the tensor's bytes
  expect_rejected(f, ErrorCode::kInvalidModel, "outside the data section");
}

TEST(SafetensorsTest, HeaderLengthPastEnd) {
  expect_rejected(make_file("{}", {}, 1000), ErrorCode::kInvalidModel,
                  "runs past the end of the file");
}

TEST(SafetensorsTest, HeaderLengthAbsurd) {
  expect_rejected(make_file("{}", {}, 1ull << 40), ErrorCode::kInvalidModel, "absurd");
}

TEST(SafetensorsTest, InvalidJson) {
  expect_rejected(make_file(R"({"w": {"dtype": )"), ErrorCode::kInvalidModel,
                  "header is not valid JSON");
}

TEST(SafetensorsTest, HeaderNotObject) {
  expect_rejected(make_file("[1, 2, 3]"), ErrorCode::kInvalidModel, "not a JSON object");
}

TEST(SafetensorsTest, EntryNotObject) {
  expect_rejected(make_file(R"({"w": 5})"), ErrorCode::kInvalidModel, "tensor 'w'");
}

TEST(SafetensorsTest, MissingFields) {
  expect_rejected(make_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})"),
                  ErrorCode::kInvalidModel, "missing \"dtype\"");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", bytes(4)),
                  ErrorCode::kInvalidModel, "missing \"shape\"");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1]}})", bytes(4)),
                  ErrorCode::kInvalidModel, "missing \"data_offsets\"");
}

TEST(SafetensorsTest, WrongJsonTypes) {
  expect_rejected(make_file(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", bytes(4)),
                  ErrorCode::kInvalidModel, "\"dtype\" is not a string");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", bytes(4)),
                  ErrorCode::kInvalidModel, "\"shape\" is not an array");
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", bytes(4)),
                  ErrorCode::kInvalidModel, "not an array [begin, end]");
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", bytes(4)),
      ErrorCode::kInvalidModel, "not a non-negative integer");
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":["0","4"]}})", bytes(4)),
      ErrorCode::kInvalidModel, "are not non-negative integers");
}

TEST(SafetensorsTest, UnknownDtype) {
  expect_rejected(make_file(R"({"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}})", bytes(1)),
                  ErrorCode::kInvalidModel, "tensor 'w' has unknown dtype \"Q4_K\"");
}

TEST(SafetensorsTest, UnsupportedDtype) {
  expect_rejected(make_file(R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", bytes(8)),
                  ErrorCode::kUnsupported, "tensor 'w' has dtype F64");
  expect_rejected(make_file(R"({"b":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", bytes(1)),
                  ErrorCode::kUnsupported, "tensor 'b' has dtype BOOL");
}

TEST(SafetensorsTest, OffsetsOutsideData) {
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", bytes(8)),
                  ErrorCode::kInvalidModel, "outside the data section");
}

TEST(SafetensorsTest, OffsetsReversed) {
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", bytes(8)),
                  ErrorCode::kInvalidModel, "begin > end");
}

TEST(SafetensorsTest, NegativeOffset) {
  expect_rejected(make_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", bytes(8)),
                  ErrorCode::kInvalidModel, "not non-negative integers");
}

TEST(SafetensorsTest, OverlappingTensors) {
  expect_rejected(make_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            bytes(12)),
                  ErrorCode::kInvalidModel, "tensors 'a' [0, 8) and 'b' [4, 12) overlap");
}

TEST(SafetensorsTest, ContainedTensorOverlaps) {
  // b lies inside a; c starts after b ends but still inside a.
  expect_rejected(make_file(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                            R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                            bytes(16)),
                  ErrorCode::kInvalidModel, "overlap");
}

TEST(SafetensorsTest, ByteLengthMismatch) {
  expect_rejected(make_file(R"({"w":{"dtype":"F16","shape":[3],"data_offsets":[0,8]}})", bytes(8)),
                  ErrorCode::kInvalidModel, "byte length 8 does not match f16 x [3] = 6 bytes");
}

TEST(SafetensorsTest, ShapeOverflow) {
  expect_rejected(
      make_file(
          R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})",
          bytes(4)),
      ErrorCode::kInvalidModel, "overflows");
  // numel fits int64 but numel * 4 bytes does not.
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})",
                bytes(4)),
      ErrorCode::kInvalidModel, "overflows");
}

TEST(SafetensorsTest, NegativeDim) {
  expect_rejected(
      make_file(R"({"w":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,4]}})", bytes(4)),
      ErrorCode::kInvalidModel, "not a non-negative integer");
}

TEST(SafetensorsTest, RankTooHigh) {
  expect_rejected(
      make_file(R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})",
                bytes(1)),
      ErrorCode::kUnsupported, "rank 9");
}

TEST(SafetensorsTest, DuplicateNames) {
  expect_rejected(make_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                            R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                            bytes(2)),
                  ErrorCode::kInvalidModel, "duplicate tensor name 'w'");
}

TEST(SafetensorsTest, NestedDuplicateKeysAreNotTensorDuplicates) {
  // Only top-level keys name tensors; a repeated key inside __metadata__ is not a
  // duplicate tensor (nlohmann keeps the last value).
  auto f = SafetensorsFile::from_bytes(
      make_file(
          R"({"__metadata__":{"a":"1","a":"2"},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
          bytes(1)),
      kLabel);
  EXPECT_EQ(f->metadata().at("a"), "2");
}

TEST(SafetensorsTest, BadMetadata) {
  expect_rejected(make_file(R"({"__metadata__":{"format":1}})"), ErrorCode::kInvalidModel,
                  "__metadata__ value for 'format' is not a string");
  expect_rejected(make_file(R"({"__metadata__":[1]})"), ErrorCode::kInvalidModel,
                  "__metadata__ is not an object");
}

TEST(SafetensorsTest, MissingTensorView) {
  auto f = SafetensorsFile::from_bytes(
      make_file(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", bytes(1)), kLabel);
  EXPECT_EQ(f->find("nope"), nullptr);
  try {
    f->view("nope");
    ADD_FAILURE() << "view of an absent tensor did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find(kLabel), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("'nope'"), std::string::npos);
  }
}

TEST(SafetensorsTest, OpenMissingPath) {
  try {
    SafetensorsFile::open("/nonexistent/dir/x.safetensors");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/x.safetensors"), std::string::npos);
  }
}

TEST(SafetensorsTest, EmptyHeaderObjectIsValid) {
  auto f = SafetensorsFile::from_bytes(make_file("{}"), kLabel);
  EXPECT_TRUE(f->tensors().empty());
}

TEST(SafetensorsTest, PaddedHeaderAndHoles) {
  // Trailing spaces after the JSON and unused bytes between tensors are both tolerated.
  std::vector<uint8_t> data(24);
  float v = 2.5f;
  std::memcpy(data.data() + 16, &v, 4);
  auto f = SafetensorsFile::from_bytes(
      make_file(R"({"x":{"dtype":"F32","shape":[],"data_offsets":[16,20]}}      )", data), kLabel);
  ASSERT_EQ(f->tensors().size(), 1u);
  float got;
  std::memcpy(&got, f->view("x").data, 4);
  EXPECT_EQ(got, 2.5f);
  EXPECT_EQ(f->view("x").shape.rank(), 0);
}

class SafetensorsFileTest : public test::TempDirTest {};

TEST_F(SafetensorsFileTest, RoundTrip) {
  Tensor a(DType::kF32, {2, 3});
  for (int i = 0; i < 6; ++i)
    a.as<float>()[i] = static_cast<float>(i) * 0.5f;
  Tensor b(DType::kF16, {3});  // 6 bytes: the next tensor must be re-aligned to 8
  for (int i = 0; i < 3; ++i)
    b.as<uint16_t>()[i] = static_cast<uint16_t>(0x3c00 + i);
  Tensor c(DType::kS8, {4});
  for (int i = 0; i < 4; ++i)
    c.as<int8_t>()[i] = static_cast<int8_t>(-i);
  Tensor d(DType::kS64, {1});
  d.as<int64_t>()[0] = -123456789012345;
  Tensor e(DType::kBF16, {1, 1});
  e.as<uint16_t>()[0] = 0x3f80;
  Tensor u(DType::kU8, {2});
  u.as<uint8_t>()[0] = 255;
  u.as<uint8_t>()[1] = 7;
  Tensor s(DType::kS32, {1});
  s.as<int32_t>()[0] = -7;

  const auto path = dir_ / "rt.safetensors";
  write_safetensors(path,
                    {{"a", a.view()},
                     {"b", b.view()},
                     {"c", c.view()},
                     {"d", d.view()},
                     {"e", e.view()},
                     {"u", u.view()},
                     {"s", s.view()}},
                    {{"format", "pt"}, {"note", "hyrt test"}});
  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->label(), path.string());
  EXPECT_EQ(f->file_size(), std::filesystem::file_size(path));
  EXPECT_EQ(f->data_start() % 8, 0u);
  ASSERT_EQ(f->tensors().size(), 7u);
  // File order = data order = the order given to the writer.
  const char* order[] = {"a", "b", "c", "d", "e", "u", "s"};
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(f->tensors()[i].name, order[i]);
    EXPECT_EQ(f->tensors()[i].offset % 8, 0u);
  }
  for (const auto& [name, t] : std::vector<std::pair<std::string, const Tensor*>>{
           {"a", &a}, {"b", &b}, {"c", &c}, {"d", &d}, {"e", &e}, {"u", &u}, {"s", &s}}) {
    TensorView v = f->view(name);
    EXPECT_EQ(v.dtype, t->dtype()) << name;
    EXPECT_EQ(v.shape, t->shape()) << name;
    EXPECT_EQ(std::memcmp(v.data, t->data(), t->bytes()), 0) << name;
  }
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "hyrt test");
  EXPECT_FALSE(std::filesystem::exists(dir_ / "rt.safetensors.tmp"));
}

TEST_F(SafetensorsFileTest, ZeroSizedTensors) {
  Tensor z(DType::kF32, {0, 3});
  Tensor one(DType::kF32, {1});
  one.as<float>()[0] = 1.0f;
  const auto path = dir_ / "z.safetensors";
  write_safetensors(path, {{"z", z.view()}, {"one", one.view()}, {"z2", z.view()}});
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->find("z")->bytes, 0u);
  EXPECT_EQ(f->view("z").shape, (Shape{0, 3}));
  EXPECT_EQ(*f->view("one").as<float>(), 1.0f);
}

TEST_F(SafetensorsFileTest, NoMetadataMeansEmptyMap) {
  Tensor one(DType::kF32, {1});
  const auto path = dir_ / "m.safetensors";
  write_safetensors(path, {{"one", one.view()}});
  EXPECT_TRUE(SafetensorsFile::open(path)->metadata().empty());
}

TEST_F(SafetensorsFileTest, WriterRejectsDuplicateAndReservedNames) {
  Tensor one(DType::kF32, {1});
  try {
    write_safetensors(dir_ / "d.safetensors", {{"x", one.view()}, {"x", one.view()}});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("duplicate tensor name 'x'"), std::string::npos);
  }
  EXPECT_THROW(write_safetensors(dir_ / "d.safetensors", {{"__metadata__", one.view()}}), Error);
}

TEST_F(SafetensorsFileTest, WriteToMissingFolderIsIoError) {
  Tensor one(DType::kF32, {1});
  try {
    write_safetensors(dir_ / "no" / "such" / "dir" / "x.safetensors", {{"x", one.view()}});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kIo);
    EXPECT_NE(std::string(e.what()).find("x.safetensors"), std::string::npos);
  }
}

TEST_F(SafetensorsFileTest, OpenEmptyAndTruncatedFiles) {
  const auto empty = dir_ / "empty.safetensors";
  std::ofstream(empty).close();
  try {
    SafetensorsFile::open(empty);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find(empty.string()), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos);
  }
  // A real file cut in the middle of its data.
  Tensor big(DType::kF32, {64});
  for (int i = 0; i < 64; ++i)
    big.as<float>()[i] = 1.0f;
  auto full = serialize_safetensors({{"big", big.view()}});
  full.resize(full.size() - 10);
  const auto cut = dir_ / "cut.safetensors";
  std::ofstream(cut, std::ios::binary)
      .write(reinterpret_cast<const char*>(full.data()), static_cast<std::streamsize>(full.size()));
  try {
    SafetensorsFile::open(cut);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("cut.safetensors"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("tensor 'big'"), std::string::npos);
  }
}

TEST(SafetensorsTest, SerializeMatchesFromBytes) {
  Tensor a(DType::kF16, {5});
  for (int i = 0; i < 5; ++i)
    a.as<uint16_t>()[i] = static_cast<uint16_t>(i);
  auto f = SafetensorsFile::from_bytes(serialize_safetensors({{"a", a.view()}}), "mem");
  EXPECT_EQ(f->label(), "mem");
  EXPECT_EQ(std::memcmp(f->view("a").data, a.data(), a.bytes()), 0);
}

}  // namespace
}  // namespace hyrt::weights

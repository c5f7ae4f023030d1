// The ProgramCache's on-disk records: round trip, device-signature versioning, corrupt
// and truncated files dropped with a warning, unwritable directories degrading to memory,
// and two processes flushing into one store at once.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "backend/program_cache.h"
#include "test_util.h"

using namespace hyrt;
using backend::DiskStoreOptions;
using backend::ProgramCache;
namespace fs = std::filesystem;

namespace {

class ProgramCacheDisk : public testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::temp_directory_path() / ("hyrt_program_cache_test_" + std::to_string(::getpid()) + "_" +
                                     testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::permissions(dir_ / "ro", fs::perms::owner_all, ec);
    fs::remove_all(dir_, ec);
  }
  DiskStoreOptions options(std::string signature = "Test GPU|driver 1") const {
    return {dir_, std::move(signature), "programs"};
  }
  static std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  static void write(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  }
  // Writes two records through one cache and returns the store's path.
  fs::path write_two() {
    ProgramCache c;
    c.open_disk_store(options());
    c.put_record("gemm m=64 n=320 k=320", R"({"chosen":"w8a8","us":9.8})");
    c.put_record("gemm m=64 n=2560 k=320", R"({"chosen":"f16","us":21.5})");
    EXPECT_TRUE(c.flush());
    return c.disk_store_path();
  }
  fs::path dir_;
};

TEST_F(ProgramCacheDisk, RoundTrip) {
  const fs::path path = write_two();
  ASSERT_TRUE(fs::exists(path));
  EXPECT_EQ(path.parent_path(), dir_);
  ProgramCache c;
  testing::internal::CaptureStderr();
  EXPECT_EQ(c.open_disk_store(options()), 2u);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");  // a valid file: no warning
  EXPECT_EQ(c.find_record("gemm m=64 n=320 k=320"), R"({"chosen":"w8a8","us":9.8})");
  EXPECT_EQ(c.find_record("gemm m=64 n=2560 k=320"), R"({"chosen":"f16","us":21.5})");
  EXPECT_FALSE(c.find_record("gemm m=1 n=1 k=1"));
  // Binary blobs and overwrites survive too; the destructor flushes.
  const std::string blob("\0\xff\x01 bin", 7);
  c.put_record("gemm m=64 n=320 k=320", blob);
  c.put_record("empty", "");
  {
    ProgramCache tmp;  // nothing opened: destructor is a no-op
  }
  {
    ProgramCache d;
    d.open_disk_store(options());
    d.put_record("from d", "x");
  }
  EXPECT_TRUE(c.flush());
  ProgramCache e;
  EXPECT_EQ(e.open_disk_store(options()), 4u);
  EXPECT_EQ(e.find_record("gemm m=64 n=320 k=320"), blob);
  EXPECT_EQ(e.find_record("empty"), "");
  EXPECT_EQ(e.find_record("from d"), "x");  // merged, not clobbered, by c's flush
}

TEST_F(ProgramCacheDisk, AnotherDeviceSignatureNeverReadsTheRecords) {
  const fs::path path = write_two();
  ProgramCache other;
  EXPECT_EQ(other.open_disk_store(options("Other GPU|driver 1")), 0u);
  EXPECT_NE(other.disk_store_path(), path);
  EXPECT_FALSE(other.find_record("gemm m=64 n=320 k=320"));
  // A file of the right name but another signature inside (a hash collision, a copy):
  // stale — warned about, ignored, rewritten at the next flush.
  fs::copy_file(path, other.disk_store_path(), fs::copy_options::overwrite_existing);
  ProgramCache stale;
  testing::internal::CaptureStderr();
  EXPECT_EQ(stale.open_disk_store(options("Other GPU|driver 1")), 0u);
  const std::string warning = testing::internal::GetCapturedStderr();
  EXPECT_NE(warning.find("stale"), std::string::npos) << warning;
  EXPECT_EQ(std::count(warning.begin(), warning.end(), '\n'), 1) << warning;
  EXPECT_FALSE(stale.find_record("gemm m=64 n=320 k=320"));
  EXPECT_TRUE(stale.flush());  // nothing new, but the stale file is replaced
  ProgramCache again;
  testing::internal::CaptureStderr();
  EXPECT_EQ(again.open_disk_store(options("Other GPU|driver 1")), 0u);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
}

TEST_F(ProgramCacheDisk, FlippedByteDropsOnlyThatRecord) {
  const fs::path path = write_two();
  std::string bytes = read(path);
  // Records are sorted by key: "gemm m=64 n=2560 ..." first. Flip a byte of its blob.
  const size_t at = bytes.find("f16");
  ASSERT_NE(at, std::string::npos);
  bytes[at] ^= 0x20;
  write(path, bytes);
  ProgramCache c;
  testing::internal::CaptureStderr();
  EXPECT_EQ(c.open_disk_store(options()), 1u);
  const std::string warning = testing::internal::GetCapturedStderr();
  EXPECT_NE(warning.find("bad checksum"), std::string::npos) << warning;
  EXPECT_FALSE(c.find_record("gemm m=64 n=2560 k=320"));
  EXPECT_EQ(c.find_record("gemm m=64 n=320 k=320"), R"({"chosen":"w8a8","us":9.8})");
  // The rebuilt record goes back; the file is whole again.
  c.put_record("gemm m=64 n=2560 k=320", "retuned");
  EXPECT_TRUE(c.flush());
  ProgramCache d;
  testing::internal::CaptureStderr();
  EXPECT_EQ(d.open_disk_store(options()), 2u);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(d.find_record("gemm m=64 n=2560 k=320"), "retuned");
}

TEST_F(ProgramCacheDisk, EveryFlippedByteIsCaughtAndNeverCrashes) {
  const fs::path path = write_two();
  const std::string good = read(path);
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bytes = good;
    bytes[i] ^= 0x01;
    write(path, bytes);
    ProgramCache c;
    testing::internal::CaptureStderr();
    const size_t n = c.open_disk_store(options());
    const std::string warning = testing::internal::GetCapturedStderr();
    EXPECT_LT(n, 2u) << "byte " << i;
    EXPECT_NE(warning, "") << "byte " << i;
    // Whatever survived is exactly what was written.
    if (auto r = c.find_record("gemm m=64 n=320 k=320")) {
      EXPECT_EQ(*r, R"({"chosen":"w8a8","us":9.8})");
    }
    if (auto r = c.find_record("gemm m=64 n=2560 k=320")) {
      EXPECT_EQ(*r, R"({"chosen":"f16","us":21.5})");
    }
  }
}

TEST_F(ProgramCacheDisk, TruncatedFileKeepsWholeRecords) {
  const fs::path path = write_two();
  const std::string good = read(path);
  int silent = 0;
  for (size_t len = 0; len < good.size(); ++len) {
    write(path, good.substr(0, len));
    ProgramCache c;
    testing::internal::CaptureStderr();
    const size_t n = c.open_disk_store(options());
    const std::string warning = testing::internal::GetCapturedStderr();
    EXPECT_LT(n, 2u) << "length " << len;
    // A cut exactly after the header or after the first record is a valid, shorter store
    // (the missing record is simply retuned); every other cut is reported in one line.
    if (warning.empty())
      ++silent;
    else
      EXPECT_EQ(std::count(warning.begin(), warning.end(), '\n'), 1) << warning;
    if (auto r = c.find_record("gemm m=64 n=2560 k=320")) {
      EXPECT_EQ(*r, R"({"chosen":"f16","us":21.5})");
    }
  }
  EXPECT_EQ(silent, 2);
  // The first record survives a cut inside the second.
  write(path, good.substr(0, good.size() - 3));
  ProgramCache c;
  testing::internal::CaptureStderr();
  EXPECT_EQ(c.open_disk_store(options()), 1u);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("truncated"), std::string::npos);
}

TEST_F(ProgramCacheDisk, UnwritableDirectoryWarnsOnceAndKeepsRecordsInMemory) {
  fs::create_directories(dir_);
  // A "directory" below a regular file cannot be created, even by root.
  write(dir_ / "file", "x");
  std::vector<fs::path> unwritable{dir_ / "file" / "hyrt"};
  if (::geteuid() != 0) {  // root ignores permission bits
    fs::create_directories(dir_ / "ro");
    fs::permissions(dir_ / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    unwritable.push_back(dir_ / "ro");
    unwritable.push_back(dir_ / "ro" / "sub");
  }
  DiskStoreOptions o = options();
  for (const fs::path& where : unwritable) {
    SCOPED_TRACE(where.string());
    o.dir = where;
    std::string warning;
    {
      ProgramCache c;
      c.open_disk_store(o);
      c.put_record("k", "v");
      testing::internal::CaptureStderr();
      EXPECT_FALSE(c.flush());
      c.put_record("k2", "v2");
      EXPECT_FALSE(c.flush());
      EXPECT_EQ(c.find_record("k"), "v");
      EXPECT_EQ(c.find_record("k2"), "v2");
    }  // the destructor's flush stays quiet too: one warning per store
    warning = testing::internal::GetCapturedStderr();
    EXPECT_EQ(std::count(warning.begin(), warning.end(), '\n'), 1) << warning;
    EXPECT_NE(warning.find("records stay in memory only"), std::string::npos) << warning;
  }
}

TEST_F(ProgramCacheDisk, DefaultDirectoryFollowsTheEnvironment) {
  // Each restored as it was when the test ends.
  const test::ScopedEnv cache_dir("HYRT_CACHE_DIR", nullptr), xdg("XDG_CACHE_HOME", "/x/cache"),
      home("HOME", "/home/u");
  EXPECT_EQ(backend::default_cache_dir(), fs::path("/x/cache/hyrt"));
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(backend::default_cache_dir(), fs::path("/home/u/.cache/hyrt"));
  ::setenv("HYRT_CACHE_DIR", dir_.c_str(), 1);
  EXPECT_EQ(backend::default_cache_dir(), dir_);
  ProgramCache c;  // dir left empty: the default, here dir_
  c.open_disk_store({{}, "sig", "programs"});
  c.put_record("a", "b");
  EXPECT_TRUE(c.flush());
  EXPECT_EQ(c.disk_store_path().parent_path(), dir_);
}

TEST_F(ProgramCacheDisk, TwoProcessesFlushingAtOnceKeepEveryRecord) {
  fs::create_directories(dir_);
  constexpr int kRecords = 40;
  pid_t children[2];
  for (int p = 0; p < 2; ++p) {
    children[p] = ::fork();
    ASSERT_GE(children[p], 0);
    if (children[p] == 0) {
      // Child: flush after every record, racing the other child. Exit without running
      // gtest's teardown (only _exit is safe after fork).
      int status = 0;
      {
        ProgramCache c;
        c.open_disk_store(options());
        for (int i = 0; i < kRecords; ++i) {
          c.put_record("p" + std::to_string(p) + "." + std::to_string(i),
                       std::string(100 + i, 'a' + p));
          if (!c.flush()) status = 1;
        }
      }
      ::_exit(status);
    }
  }
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  ProgramCache c;
  testing::internal::CaptureStderr();
  EXPECT_EQ(c.open_disk_store(options()), 2u * kRecords);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  for (int p = 0; p < 2; ++p)
    for (int i = 0; i < kRecords; ++i)
      EXPECT_EQ(c.find_record("p" + std::to_string(p) + "." + std::to_string(i)),
                std::string(100 + i, 'a' + p));
  // No temporary files are left behind.
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(ProgramCache, RecordsWithoutADiskStoreStayInMemory) {
  ProgramCache c;
  EXPECT_TRUE(c.disk_store_path().empty());
  c.put_record("k", "v");
  EXPECT_TRUE(c.flush());  // nothing to write to: not a failure
  EXPECT_EQ(c.find_record("k"), "v");
  EXPECT_EQ(c.record_count(), 1u);
  // Programs and records are separate: clear() drops programs only.
  auto p = c.get_or_create<int>("prog", [] { return std::make_shared<int>(3); });
  EXPECT_EQ(*p, 3);
  c.clear();
  EXPECT_EQ(c.size(), 0u);
  EXPECT_EQ(c.record_count(), 1u);
}

}  // namespace

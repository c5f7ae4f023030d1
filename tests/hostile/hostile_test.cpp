// Hostile input (issue 19): model folders, files, configs and arguments edited the way broken
// downloads and hand-edited configs look, each built at run time from the golden tiny model
// (nothing large is committed). The CLI runs in a child process under a time limit and a
// 4 GiB address-space limit; every case must end with exit 1 or 2 and a short message that
// says what is wrong: never a signal, a timeout, a dumped value or a damaged input file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/config.h"
#include "pipeline/image_io.h"
#include "temp_dir_test.h"
#include "test_util.h"
#include "weights/safetensors.h"

namespace hyrt::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;  // ASan reserves terabytes of shadow: no RLIMIT_AS there
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

struct Outcome {
  int exit_code = -1;  // -1 unless the child exited
  int signal = 0;      // the signal that ended it, if one did
  bool timed_out = false;
  double seconds = 0;
  std::string output;  // stdout + stderr
};

// Runs build/tools/hyrt with `args` (no shell) under RLIMIT_AS = `as_limit` (4 GiB; not under
// ASan, whose shadow memory reserves terabytes of address space) and `timeout_s`.
Outcome run_limited(const std::vector<std::string>& args, const fs::path& log, int timeout_s = 20,
                    uint64_t as_limit = 4ull << 30) {
  const std::string exe = std::string(HYRT_BINARY_DIR) + "/tools/hyrt";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!kSanitized) {
      rlimit as{};
      as.rlim_cur = as.rlim_max = as_limit;
      ::setrlimit(RLIMIT_AS, &as);
    }
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  Outcome o;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(timeout_s)) {
      o.timed_out = true;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!o.timed_out) {
    if (WIFEXITED(status)) o.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) o.signal = WTERMSIG(status);
  }
  std::ifstream in(log, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  o.output = ss.str();
  return o;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i)
    s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

std::string nested(size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

uint32_t crc32(const std::string& bytes) {
  uint32_t c = 0xffffffffu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string png_chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}

// Bytes per element of a safetensors dtype name.
size_t dtype_bytes(const std::string& d) {
  if (d == "F64" || d == "I64") return 8;
  if (d == "F32" || d == "I32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16") return 2;
  return 1;
}

// Rewrites a safetensors file: `edit` may erase entries of the header or change their dtype
// or shape; each kept tensor's bytes are copied (cut, or padded with zeros, to its new
// size). `sparse_tail`: the data section is written as a hole past the copied bytes, so a
// tensor declared gigabytes large costs no disk space (the file still maps and reads).
void rewrite_safetensors(const fs::path& in, const fs::path& out,
                         const std::function<void(json&)>& edit) {
  const std::string bytes = read_bytes(in);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  json header = json::parse(bytes.substr(8, n));
  const std::string data = bytes.substr(8 + n);
  std::map<std::string, std::string> old;
  for (auto& [k, v] : header.items())
    if (k != "__metadata__")
      old[k] = data.substr(v["data_offsets"][0].get<size_t>(),
                           v["data_offsets"][1].get<size_t>() - v["data_offsets"][0].get<size_t>());
  edit(header);
  json out_header = json::object();
  std::vector<std::pair<uint64_t, std::string>> blobs;  // offset, bytes to write there
  uint64_t offset = 0;
  for (auto& [k, v] : header.items()) {
    if (k == "__metadata__") {
      out_header[k] = v;
      continue;
    }
    uint64_t size = dtype_bytes(v["dtype"]);
    for (const auto& d : v["shape"])
      size *= d.get<uint64_t>();
    std::string b = old.count(k) ? old[k] : "";
    b.resize(std::min<uint64_t>(b.size(), size));
    out_header[k] = {
        {"dtype", v["dtype"]}, {"shape", v["shape"]}, {"data_offsets", {offset, offset + size}}};
    blobs.emplace_back(offset, b);
    offset += size;
  }
  std::string h = out_header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  const fs::path tmp = out.string() + ".part";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(le64(h.size()).data(), 8);
    f.write(h.data(), static_cast<std::streamsize>(h.size()));
    const uint64_t base = 8 + h.size();
    for (const auto& [o, b] : blobs) {
      f.seekp(static_cast<std::streamoff>(base + o));
      f.write(b.data(), static_cast<std::streamsize>(b.size()));
    }
  }
  fs::resize_file(tmp, 8 + h.size() + offset);  // the rest is a hole: zeros, no disk blocks
  fs::rename(tmp, out);
}

// Erases every header entry whose name starts with `prefix`.
std::function<void(json&)> drop(const std::string& prefix) {
  return [prefix](json& h) {
    std::vector<std::string> names;
    for (auto& [k, v] : h.items())
      if (k.rfind(prefix, 0) == 0) names.push_back(k);
    for (const auto& k : names)
      h.erase(k);
  };
}

std::function<void(json&)> reshape(const std::string& name, const std::vector<int64_t>& shape) {
  return [name, shape](json& h) { h[name]["shape"] = shape; };
}

// A PNG of `w` x `h` RGB pixels, every sample `value`.
std::string make_png(int w, int h, uint8_t value = 128) {
  pipeline::Image8 image{w, h, 3, std::vector<uint8_t>(static_cast<size_t>(w) * h * 3, value)};
  const std::vector<uint8_t> bytes = pipeline::encode_png(image);
  return {bytes.begin(), bytes.end()};
}

class Hostile : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    auto g = golden_dir();
    if (!g) GTEST_SKIP() << "../shared/golden is absent";
    golden_ = *g;
  }

  // A copy of the golden diffusers folder, to be damaged.
  fs::path model_copy(const std::string& name = "model") {
    const fs::path m = dir_ / name;
    fs::copy(golden_ / "model", m, fs::copy_options::recursive);
    return m;
  }

  // Sets one field of a JSON file (the value given as JSON text).
  static void set_field(const fs::path& file, const std::string& key, const std::string& value) {
    json j = json::parse(read_bytes(file));
    j[key] = json::parse(value);
    write_bytes(file, j.dump());
  }

  // Runs and checks the contract: exit 1 or 2, no signal, no timeout, the message present,
  // short output (no dumped values).
  Outcome refuse(const std::vector<std::string>& args, const std::string& expect,
                 int timeout_s = 20, uint64_t as_limit = 4ull << 30) {
    const Outcome o = run_limited(args, dir_ / "log.txt", timeout_s, as_limit);
    std::string cmd;
    for (const auto& a : args)
      cmd += a.substr(0, 80) + " ";
    EXPECT_FALSE(o.timed_out) << cmd << "ran past " << timeout_s << " s";
    EXPECT_EQ(o.signal, 0) << cmd << "died of signal " << o.signal << ": "
                           << o.output.substr(0, 2000);
    EXPECT_TRUE(o.exit_code == 1 || o.exit_code == 2)
        << cmd << "exit " << o.exit_code << ": " << o.output.substr(0, 2000);
    EXPECT_NE(o.output.find(expect), std::string::npos)
        << cmd << "expected '" << expect << "' in: " << o.output.substr(0, 2000);
    EXPECT_LT(o.output.size(), 4096u) << cmd << "a message should not dump its input";
    return o;
  }

  std::vector<std::string> generate(const fs::path& model, std::vector<std::string> extra = {}) {
    std::vector<std::string> a{
        "generate",    "-m",  model.string(), "-p", "x", "-o", (dir_ / "out.png").string(),
        "--placement", "host"};
    if (std::find(extra.begin(), extra.end(), "--steps") == extra.end())
      extra.insert(extra.end(), {"--steps", "1"});
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  fs::path golden_;
};

// ---- parsers bounded by construction ----

TEST_F(Hostile, DeeplyNestedSafetensorsHeader) {
  const std::string header =
      R"({"a":{"dtype":"F32","shape":)" + nested(100000) + R"(,"data_offsets":[0,0]}})";
  write_bytes(dir_ / "deep.safetensors", le64(header.size()) + header);
  refuse({"info", (dir_ / "deep.safetensors").string()}, "nested deeper than");
}

TEST_F(Hostile, DeeplyNestedConfigValues) {
  for (const char* component : {"unet", "text_encoder", "vae"}) {
    const fs::path m = model_copy(std::string("m_") + component);
    const fs::path cfg = m / component / "config.json";
    std::string text = read_bytes(cfg);
    text.insert(text.rfind('}'), R"(, "x": )" + nested(50000));
    write_bytes(cfg, text);
    refuse({"info", m.string()}, "nested deeper than");
  }
  const fs::path m = model_copy("m_sched");
  std::string text = read_bytes(m / "scheduler/scheduler_config.json");
  text.insert(text.rfind('}'), R"(, "x": )" + nested(50000));
  write_bytes(m / "scheduler/scheduler_config.json", text);
  refuse(generate(m), "nested deeper than");
}

TEST_F(Hostile, HeaderWith40000EntriesIsQuick) {
  std::string header = "{";
  for (int i = 0; i < 40000; ++i)
    header += (i ? "," : "") + std::string("\"t") + std::to_string(i) +
              R"(":{"dtype":"F32","shape":[1],"data_offsets":[)" + std::to_string(4 * i) + "," +
              std::to_string(4 * i + 4) + "]}";
  header += "}";
  write_bytes(dir_ / "many.safetensors", le64(header.size()) + header + std::string(160000, '\0'));
  const Outcome o = refuse({"info", (dir_ / "many.safetensors").string()}, "40000 tensors", 10);
  EXPECT_LT(o.seconds, 5.0) << "the header parse must be linear";
}

TEST_F(Hostile, DuplicateTensorNameIsNamed) {
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  write_bytes(dir_ / "dup.safetensors", le64(header.size()) + header + std::string(8, '\0'));
  refuse({"info", (dir_ / "dup.safetensors").string()}, "duplicate tensor name 'w'");
}

TEST_F(Hostile, HugeValuesAreNotDumped) {
  const fs::path m = model_copy();
  set_field(m / "unet/config.json", "norm_eps", "\"" + std::string(1 << 20, 'e') + "\"");
  refuse(generate(m), "`norm_eps` must be a number");
  // A 1 MiB tensor name in a header.
  const std::string name(1 << 20, 'n');
  const std::string header =
      R"({")" + name + R"(":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})";
  write_bytes(dir_ / "long.safetensors", le64(header.size()) + header + std::string(8, '\0'));
  refuse({"info", (dir_ / "long.safetensors").string()}, "byte length");
}

TEST_F(Hostile, ModelPathMustBeAFileOrFolder) {
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  refuse({"info", fifo.string()}, "FIFO", 10);
  refuse(generate(fifo), "FIFO", 10);
  refuse({"info", "/dev/zero"}, "character device", 10);
  refuse({"check-shapes", "/dev/zero"}, "character device", 10);
  // A weight file inside a folder that is a FIFO.
  const fs::path m = model_copy();
  fs::remove(m / "vae/diffusion_pytorch_model.safetensors");
  ASSERT_EQ(::mkfifo((m / "vae/diffusion_pytorch_model.safetensors").c_str(), 0600), 0);
  // The folder reader skips what is not a regular file: the VAE has no weights then.
  const Outcome o = run_limited({"info", m.string()}, dir_ / "log.txt", 10);
  EXPECT_FALSE(o.timed_out);
  EXPECT_EQ(o.signal, 0);
}

TEST_F(Hostile, PngDimensionsAreCappedBeforeAllocating) {
  // 65535 x 65535 RGBA (16 GiB decoded) in a few dozen bytes.
  std::string ihdr = be32(65535) + be32(65535) + std::string{8, 6, 0, 0, 0};
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) +
                          png_chunk("IDAT", std::string("\x78\x9c\x03\x00\x00\x00\x00\x01", 8)) +
                          png_chunk("IEND", "");
  write_bytes(dir_ / "huge.png", png);
  refuse({"check-shapes", (dir_ / "huge.png").string()}, "too large");
  // 20000 x 1: past the side limit too.
  ihdr = be32(20000) + be32(1) + std::string{8, 2, 0, 0, 0};
  write_bytes(dir_ / "wide.png", std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) +
                                     png_chunk("IEND", ""));
  refuse({"check-shapes", (dir_ / "wide.png").string()}, "too large");
  refuse(generate(golden_ / "model", {"--init-image", (dir_ / "huge.png").string()}),
         "--init-image");
}

// ---- config values out of range, configs that contradict each other or the weights ----

TEST_F(Hostile, ConfigValuesOutOfRange) {
  struct Case {
    const char* file;
    const char* field;
    const char* value;
    const char* expect;
  };
  const Case cases[] = {
      {"unet/config.json", "downsample_padding", "100",
       "`downsample_padding` = 100 is out of range"},
      {"unet/config.json", "norm_eps", "-1", "`norm_eps` = -1 is out of range"},
      // Above 0 as a double, 0 as the float it is kept in (config_json_fuzz, 2026-12-03).
      {"text_encoder/config.json", "layer_norm_eps", "1e-85",
       "`layer_norm_eps` = 1e-85 is out of range (0, 1] as a 32-bit float"},
      {"unet/config.json", "block_out_channels", "[32, 64, 64, 99999999]", "out of range"},
      {"unet/config.json", "layers_per_block", "4294967297", "out of range"},
      {"vae/config.json", "scaling_factor", "0", "`scaling_factor` = 0 is out of range"},
      {"text_encoder/config.json", "layer_norm_eps", "0", "`layer_norm_eps` = 0 is out of range"},
      {"text_encoder/config.json", "num_attention_heads", "-4", "out of range"},
      {"scheduler/scheduler_config.json", "beta_start", "5", "`beta_start` = 5 is out of range"},
      {"scheduler/scheduler_config.json", "num_train_timesteps", "300000000",
       "`num_train_timesteps` = 300000000 is out of range"},
      {"scheduler/scheduler_config.json", "num_train_timesteps", "4294968296",
       "`num_train_timesteps` = 4294968296 is out of range"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const fs::path m = model_copy("m" + std::to_string(i++));
    set_field(m / c.file, c.field, c.value);
    refuse(generate(m), c.expect);
  }
}

TEST_F(Hostile, ContradictingConfigsAndWeights) {
  struct Case {
    const char* file;
    const char* field;
    const char* value;
    const char* expect;
  };
  const Case cases[] = {
      {"text_encoder/config.json", "hidden_size", "128",
       "`hidden_size` is 128 but the weights have 64 (tensor "
       "'text_encoder.text_model.embeddings.token_embedding.weight' has shape [49408, 64])"},
      {"vae/config.json", "latent_channels", "8", "`latent_channels` is 8 but the weights have 4"},
      {"text_encoder/config.json", "intermediate_size", "100",
       "text_model.encoder.layers.0.mlp.fc1.weight' has shape [256, 64]"},
      {"unet/config.json", "block_out_channels", "[32, 64, 64, 128]",
       "`block_out_channels` is [32, 64, 64, 128] but the weights have [32, 64, 64, 64]"},
      {"unet/config.json", "layers_per_block", "1",
       "`layers_per_block` is 1 but the weights have 2"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const fs::path m = model_copy("m" + std::to_string(i++));
    set_field(m / c.file, c.field, c.value);
    refuse(generate(m), c.expect);
  }
  // Both sides of the cross-attention edited alike still contradict the tensors.
  const fs::path m = model_copy("both");
  set_field(m / "text_encoder/config.json", "hidden_size", "128");
  set_field(m / "unet/config.json", "cross_attention_dim", "128");
  refuse(generate(m), "the config does not belong to these weights");
}

// Configs that each match their own tensors but not each other (weights mixed from two
// models): checked in the library, as no golden folder is built that way.
TEST(HostileConfigs, ConfigsThatContradictEachOther) {
  models::ModelConfigs c;
  c.text_encoder = models::ClipTextConfig{};
  c.unet = models::UNetConfig{};
  c.vae = models::VaeConfig{};
  c.text_encoder->hidden_size = 768;
  c.unet->cross_attention_dim = 768;
  EXPECT_NO_THROW(models::check_config_consistency(c));
  c.unet->cross_attention_dim = 1024;
  try {
    models::check_config_consistency(c);
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cross_attention_dim is 1024"), std::string::npos)
        << e.what();
  }
  c.unet->cross_attention_dim = 768;
  c.vae->latent_channels = 16;
  EXPECT_THROW(models::check_config_consistency(c), Error);
  c.vae->latent_channels = c.unet->out_channels;
  c.unet->in_channels = 2 * c.unet->out_channels + 1;  // an inpainting UNet
  EXPECT_NO_THROW(models::check_config_consistency(c));
}

// ---- quantize never overwrites what it reads ----

TEST_F(Hostile, QuantizeRefusesToOverwriteItsInput) {
  const fs::path single = dir_ / "ldm.safetensors";
  fs::copy_file(golden_ / "model-ldm.safetensors", single);
  const fs::path link = dir_ / "link.safetensors";
  fs::create_symlink(single, link);
  const fs::path hard = dir_ / "hard.safetensors";
  fs::create_hard_link(single, hard);
  const std::string before = read_bytes(single);
  refuse({"quantize", single.string(), single.string()}, "would overwrite the model itself");
  refuse({"quantize", single.string(), link.string()}, "would overwrite the model itself");
  refuse({"quantize", single.string(), hard.string()}, "would overwrite the model itself");
  EXPECT_TRUE(read_bytes(single) == before) << "the input was changed";

  const fs::path m = model_copy();
  const fs::path unet = m / "unet/diffusion_pytorch_model.safetensors";
  const std::string unet_before = read_bytes(unet);
  refuse({"quantize", m.string(), unet.string()}, "an input of this command");
  refuse({"quantize", m.string(), (m / "unet/config.json").string()}, "an input of this command");
  EXPECT_TRUE(read_bytes(unet) == unet_before) << "the input was changed";
  for (const auto& e : fs::recursive_directory_iterator(dir_))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << "left behind: " << e.path();
}

TEST_F(Hostile, Int8FileWithoutScalesIsRefused) {
  const fs::path q = dir_ / "q.safetensors";
  const Outcome ok =
      run_limited({"quantize", (golden_ / "model").string(), q.string()}, dir_ / "log.txt", 60);
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  // Rename one `.scale` entry in the header (same length, so offsets stay valid).
  std::string bytes = read_bytes(q);
  const size_t at = bytes.find(".scale\"");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 6, ".sca1e");
  write_bytes(dir_ / "noscale.safetensors", bytes);
  refuse({"info", (dir_ / "noscale.safetensors").string()}, "scale");
}

// ---- arguments ----

TEST_F(Hostile, BadCliNumbers) {
  const fs::path m = golden_ / "model";
  refuse(generate(m, {"-W", "-8"}), "--width");
  refuse(generate(m, {"-H", "-1"}), "--height");
  refuse(generate(m, {"--steps", "0"}), "steps must be");
  refuse(generate(m, {"-s", "99999999999999999999"}), "--seed");
  refuse(generate(m, {"-s", "-2"}), "--seed");
  refuse(generate(m, {"-t", "-1"}), "--threads");
  refuse(generate(m, {"--cfg-scale", "nan"}), "--cfg-scale");
  refuse(generate(m, {"-b", "0"}), "--batch-count");
  refuse(generate(m, {"-W", "100000", "-H", "64"}), "larger than");
}

TEST_F(Hostile, LongPromptIsBoundedInWorkAndNotEchoed) {
  // Near the kernel's 128 KiB limit for one argument: one endless word (quadratic BPE), then
  // many words. Both draw (the tail is truncated) with a short warning, within seconds.
  std::string words;
  for (int i = 0; words.size() < 120000; ++i)
    words += "word" + std::to_string(i) + " ";
  for (const std::string& prompt : {std::string(120000, 'x'), words}) {
    const Outcome o =
        run_limited({"generate", "-m", (golden_ / "model").string(), "-p", prompt, "--steps", "1",
                     "--placement", "host", "-o", (dir_ / "p.png").string()},
                    dir_ / "log.txt", 30);
    EXPECT_EQ(o.exit_code, 0) << o.output.substr(0, 2000);
    EXPECT_LT(o.seconds, 20.0);
    EXPECT_NE(o.output.find("ignored"), std::string::npos) << o.output.substr(0, 2000);
    EXPECT_LT(o.output.size(), 4096u) << "the warning should not echo the whole prompt";
  }
}

TEST_F(Hostile, ThreadCountIsCappedToTheMachine) {
  const Outcome o =
      run_limited({"-v", "generate", "-m", (golden_ / "model").string(), "-p", "x", "--steps", "1",
                   "-t", "65536", "--placement", "host", "-o", (dir_ / "t.png").string()},
                  dir_ / "log.txt", 60);
  EXPECT_EQ(o.signal, 0) << o.output.substr(0, 2000);
  EXPECT_EQ(o.exit_code, 0) << o.output.substr(0, 2000);
  EXPECT_NE(o.output.find("65536 asked for"), std::string::npos) << o.output.substr(0, 2000);
}

// ---- info: a model it cannot fully read is an error, after what it could read ----

TEST_F(Hostile, InfoExitsNonZeroOnABrokenModel) {
  const fs::path m = model_copy();
  set_field(m / "unet/config.json", "norm_eps", "-1");
  Outcome o = refuse({"info", m.string()}, "`norm_eps` = -1 is out of range");
  EXPECT_NE(o.output.find("format:"), std::string::npos) << "what could be read is printed first";
  const fs::path t = model_copy("tok");
  write_bytes(t / "tokenizer/vocab.json", "{\"a\": 1, ");
  o = refuse({"info", t.string()}, "vocab.json");
  EXPECT_NE(o.output.find("cannot be read"), std::string::npos) << o.output;
}

// ---- SDXL: SGM single files (conditioner.embedders.*) and diffusers folders ----

class HostileSdxl : public Hostile {
 protected:
  void SetUp() override {
    Hostile::SetUp();
    if (IsSkipped()) return;
    auto xl = golden_dir("sdxl-tiny");
    if (!xl) GTEST_SKIP() << "../shared/golden/sdxl-tiny is absent";
    xl_ = *xl;
  }
  fs::path xl_copy(const std::string& name) {
    const fs::path m = dir_ / name;
    fs::copy(xl_ / "model", m, fs::copy_options::recursive);
    return m;
  }
  std::vector<std::string> generate_xl(const fs::path& model) {
    return generate(model, {"-W", "64", "-H", "64"});
  }
  fs::path xl_;
};

TEST_F(HostileSdxl, SgmSingleFiles) {
  // The tokenizers an SGM file finds beside it.
  fs::copy(xl_ / "model/tokenizer", dir_ / "tokenizer", fs::copy_options::recursive);
  fs::copy(xl_ / "model/tokenizer_2", dir_ / "tokenizer_2", fs::copy_options::recursive);
  const std::string te2 = "conditioner.embedders.1.model.";
  const std::string in_proj = te2 + "transformer.resblocks.0.attn.in_proj_weight";
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    std::string expect;
  };
  const Case cases[] = {
      {"no_te2", drop("conditioner.embedders.1."), "there is no second text encoder"},
      {"no_te1", drop("conditioner.embedders.0."), "has no text encoder"},
      {"no_unet", drop("model.diffusion_model."), "has no UNet"},
      {"no_vae", drop("first_stage_model."), "has no VAE"},
      {"no_in_proj", drop(in_proj), "self_attn.q_proj.weight"},
      {"in_proj_191", reshape(in_proj, {191, 64}), "has shape [191, 64]; it holds q, k and v"},
      {"in_proj_rank1", reshape(in_proj, {12288}), "must be [3C, C]"},
      {"in_proj_96", reshape(in_proj, {96, 64}),
       "expected [64, 64], found [32, 64] (stored as '" + in_proj + "'"},
      {"in_proj_384", reshape(in_proj, {384, 64}), "expected [64, 64], found [128, 64]"},
      {"in_proj_bias", reshape(te2 + "transformer.resblocks.0.attn.in_proj_bias", {191}),
       "must be [3C]"},
      {"projection", reshape(te2 + "text_projection", {48, 64}), "text_projection"},
      {"projection_rank3", reshape(te2 + "text_projection", {64, 48, 1}), "must be rank 2"},
      {"positions", reshape(te2 + "positional_embedding", {77}), "expected rank 2"},
      {"layer_gap", drop(te2 + "transformer.resblocks.1."), "is missing but"},
      {"te1_width",
       reshape("conditioner.embedders.0.transformer.embeddings.token_embedding.weight",
               {49408, 48}),
       "cross_attention_dim"},
  };
  for (const Case& c : cases) {
    const fs::path f = dir_ / (std::string(c.name) + ".safetensors");
    rewrite_safetensors(xl_ / "model-sgm.safetensors", f, c.edit);
    refuse(generate_xl(f), c.expect);
  }
  // info reads the same file: a wrong shape or a missing tensor is an error there too.
  refuse({"info", (dir_ / "in_proj_96.safetensors").string()}, "expected [64, 64], found [32, 64]");
  refuse({"info", (dir_ / "no_in_proj.safetensors").string()}, "weights are missing");
}

TEST_F(HostileSdxl, FoldersWithABrokenSecondEncoderOrTokenizer) {
  struct Case {
    const char* name;
    std::function<void(const fs::path&)> damage;
    const char* expect;
  };
  const std::string te2 = "text_encoder_2/model.safetensors";
  const Case cases[] = {
      {"no_te2", [](const fs::path& m) { fs::remove_all(m / "text_encoder_2"); },
       "there is no second text encoder"},
      {"no_te2_weights", [&](const fs::path& m) { fs::remove(m / te2); },
       "text_encoder_2/ holds no weights"},
      {"te2_truncated",
       [&](const fs::path& m) {
         const std::string b = read_bytes(m / te2);
         write_bytes(m / te2, b.substr(0, b.size() / 2));
       },
       "truncated file?"},
      {"te2_config_json",
       [](const fs::path& m) {
         write_bytes(m / "text_encoder_2/config.json", "{\"hidden_size\": ");
       },
       "text_encoder_2/config.json: not valid JSON"},
      {"te2_config_width",
       [](const fs::path& m) { set_field(m / "text_encoder_2/config.json", "hidden_size", "128"); },
       "`hidden_size` is 128 but the weights have 64"},
      {"te2_no_projection",
       [&](const fs::path& m) {
         rewrite_safetensors(xl_ / "model" / te2, m / te2, drop("text_projection"));
       },
       "text_projection"},
      {"te2_fc1",
       [&](const fs::path& m) {
         rewrite_safetensors(xl_ / "model" / te2, m / te2,
                             reshape("text_model.encoder.layers.1.mlp.fc1.weight", {100, 64}));
       },
       "layers.1.mlp.fc1.weight: expected [256, 64], found [100, 64]"},
      {"no_tokenizer_2", [](const fs::path& m) { fs::remove_all(m / "tokenizer_2"); },
       "tokenizer_2/vocab.json"},
      {"no_merges_2", [](const fs::path& m) { fs::remove(m / "tokenizer_2/merges.txt"); },
       "tokenizer_2/vocab.json + merges.txt"},
      {"vocab_2_json",
       [](const fs::path& m) { write_bytes(m / "tokenizer_2/vocab.json", "{\"a\": 1, "); },
       "tokenizer_2/vocab.json: not valid JSON"},
      {"vocab_2_list",
       [](const fs::path& m) { write_bytes(m / "tokenizer_2/vocab.json", "[1, 2, 3]"); },
       "tokenizer_2/vocab.json: expected a non-empty JSON object"},
      {"merges_2",
       [](const fs::path& m) {
         write_bytes(m / "tokenizer_2/merges.txt", std::string("#version\nzz qq\n\x01 x y z\n"));
       },
       "tokenizer_2/merges.txt:3"},
      {"tokenizer_2_config",
       [](const fs::path& m) {
         write_bytes(m / "tokenizer_2/tokenizer_config.json", "{\"pad_token\": 7}");
       },
       "`pad_token` must be a string"},
  };
  for (const Case& c : cases) {
    const fs::path m = xl_copy(c.name);
    c.damage(m);
    refuse(generate_xl(m), c.expect);
  }
  // info reads the second tokenizer too.
  refuse({"info", (dir_ / "vocab_2_json").string()}, "tokenizer_2/vocab.json: not valid JSON");
}

// ---- img2img and inpainting: pictures, masks and strengths ----

TEST_F(Hostile, InitImagesAndMasks) {
  const fs::path m = golden_ / "model";
  const std::string pic = make_png(32, 32);
  write_bytes(dir_ / "pic.png", pic);
  write_bytes(dir_ / "mask.png", make_png(32, 32, 255));
  write_bytes(dir_ / "truncated.png", pic.substr(0, pic.size() / 2));
  write_bytes(dir_ / "header_only.png", pic.substr(0, 33));
  write_bytes(dir_ / "text.png", "not a picture\n");
  write_bytes(dir_ / "empty.png", "");
  std::string bad_crc = pic;
  bad_crc[bad_crc.size() - 20] ^= 0x5a;  // inside the last IDAT
  write_bytes(dir_ / "bad_crc.png", bad_crc);
  const std::string p = (dir_ / "pic.png").string();
  for (const char* flag : {"--init-image", "--mask"}) {
    auto args = [&](const std::string& file) {
      return std::string(flag) == "--mask"
                 ? generate(m, {"--steps", "2", "--init-image", p, "--mask", file})
                 : generate(m, {"--steps", "2", "--init-image", file});
    };
    refuse(args((dir_ / "truncated.png").string()), "truncated");
    refuse(args((dir_ / "header_only.png").string()), flag);
    refuse(args((dir_ / "text.png").string()), "not a PNG");
    refuse(args((dir_ / "empty.png").string()), "not a PNG");
    refuse(args((dir_ / "bad_crc.png").string()), flag);
    refuse(args((dir_ / "none.png").string()), "not found");
    refuse(args(dir_.string()), "is a folder");
  }
  // Strengths: out of range, or leaving no step to run; flags that need --init-image.
  refuse(generate(m, {"--steps", "2", "--init-image", p, "--strength", "0"}),
         "strength must be in (0, 1]");
  refuse(generate(m, {"--steps", "2", "--init-image", p, "--strength", "-0.5"}), "--strength");
  refuse(generate(m, {"--steps", "2", "--init-image", p, "--strength", "1.5"}), "--strength");
  refuse(generate(m, {"--steps", "2", "--init-image", p, "--strength", "nan"}), "--strength");
  refuse(generate(m, {"--init-image", p, "--strength", "0.01", "--steps", "4"}),
         "leaves no step to run");
  refuse(generate(m, {"--steps", "2", "--strength", "0.5"}), "--strength needs --init-image");
  refuse(generate(m, {"--steps", "2", "--mask", (dir_ / "mask.png").string()}),
         "--mask needs --init-image");
  // A mask of another shape than the picture: drawn (both are resized to the output, as
  // diffusers does), with a warning that says so.
  write_bytes(dir_ / "wide_mask.png", make_png(64, 16, 255));
  const Outcome o = run_limited(
      generate(m, {"--steps", "2", "--init-image", p, "--mask", (dir_ / "wide_mask.png").string()}),
      dir_ / "log.txt", 30);
  EXPECT_EQ(o.exit_code, 0) << o.output.substr(0, 2000);
  EXPECT_NE(o.output.find("--mask is 64x16 but --init-image is 32x32"), std::string::npos)
      << o.output.substr(0, 2000);
  EXPECT_NE(o.output.find("stretched differently"), std::string::npos) << o.output.substr(0, 2000);

  // A 9-channel inpainting UNet needs a picture and a mask.
  if (auto inpaint = golden_dir("sd15-tiny-inpaint")) {
    const fs::path im = *inpaint / "model";
    refuse(generate(im), "needs a picture and a mask");
    refuse(generate(im, {"--steps", "2", "--init-image", p}), "needs a picture and a mask");
    refuse(generate(im, {"--steps", "2", "--init-image", p, "--mask",
                         (dir_ / "truncated.png").string()}),
           "--mask");
  }
}

// ---- LoRAs: files that are not LoRAs, LoRAs for another model, bad tags ----

TEST_F(Hostile, LorasThatDoNotFit) {
  const fs::path m = golden_ / "model";
  const fs::path lora = golden_ / "lora" / "tiny-lora.safetensors";
  if (!fs::exists(lora)) GTEST_SKIP() << lora << " is absent";
  const std::string bytes = read_bytes(lora);
  write_bytes(dir_ / "truncated.safetensors", bytes.substr(0, bytes.size() / 2));
  write_bytes(dir_ / "text.safetensors", "not a LoRA\n");
  auto lora_file = [&](const std::string& name,
                       const std::vector<std::pair<std::string, TensorView>>& tensors) {
    weights::write_safetensors(dir_ / name, tensors);
    return (dir_ / name).string();
  };
  const Tensor down_1280 = Tensor::zeros(DType::kF16, {4, 1280}),
               up_1280 = Tensor::zeros(DType::kF16, {1280, 4}),
               down_768 = Tensor::zeros(DType::kF16, {4, 768}),
               up_768 = Tensor::zeros(DType::kF16, {768, 4}),
               square = Tensor::zeros(DType::kF16, {4, 4});
  // Keys of another architecture (SDXL's kohya names on the SD 1.5 model): named, a few.
  const std::string other =
      lora_file("sdxl.safetensors",
                {{"lora_unet_input_blocks_7_1_transformer_blocks_9_attn1_to_q.lora_down.weight",
                  down_1280.view()},
                 {"lora_unet_input_blocks_7_1_transformer_blocks_9_attn1_to_q.lora_up.weight",
                  up_1280.view()}});
  // A matching name with the shapes of a wider layer.
  const std::string wide = lora_file(
      "wide.safetensors",
      {{"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", down_768.view()},
       {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", up_768.view()}});
  const std::string loha =
      lora_file("loha.safetensors", {{"lora_unet_conv_in.hada_w1_a", square.view()}});
  refuse(generate(m, {"--lora", other}), "matches no layer");
  refuse(generate(m, {"--lora", other}),
         "lora_unet_input_blocks_7_1_transformer_blocks_9_attn1_to_q");
  refuse(generate(m, {"--lora", wide}), "do not fit the layer's weight");
  refuse(generate(m, {"--lora", loha}), "LoHa");
  refuse(generate(m, {"--lora", (dir_ / "truncated.safetensors").string()}), "truncated");
  refuse(generate(m, {"--lora", (dir_ / "text.safetensors").string()}), "not a safetensors");
  refuse(generate(m, {"--lora", (dir_ / "none.safetensors").string()}), "no such file");
  refuse(generate(m, {"--lora", lora.string() + ":abc"}), "is not a multiplier");
  refuse(generate(m, {"--lora", lora.string() + ":nan"}), "is not a multiplier");
  // Prompt tags: no folder to look in, a name not there, a malformed multiplier.
  auto tagged = [&](const std::string& prompt, std::vector<std::string> extra) {
    std::vector<std::string> a = generate(m, std::move(extra));
    *std::find(a.begin(), a.end(), "x") = prompt;
    return a;
  };
  refuse(tagged("a cat <lora:tiny-lora:0.5>", {}), "no --lora-dir");
  refuse(tagged("a cat <lora:absent>", {"--lora-dir", (golden_ / "lora").string()}),
         "absent.safetensors");
  refuse(tagged("a cat <lora:tiny-lora:x>", {"--lora-dir", (golden_ / "lora").string()}),
         "is not a multiplier");
  refuse(tagged("a cat (word:abc)", {}), "(word:abc)");
}

// ---- out of memory: named, with its size, never a bare std::bad_alloc ----

TEST_F(Hostile, OutOfMemoryNamesTheAllocation) {
  if (kSanitized) GTEST_SKIP() << "no address-space limit under ASan: nothing runs out";
  // An SGM file's OpenCLIP text_projection is stored [in, out] and copied transposed when
  // the file is opened. Declared 64 x 20,000,000 f16 (2.4 GiB, a hole on disk), the copy
  // does not fit beside the file's mapping under 4 GiB.
  if (auto xl = golden_dir("sdxl-tiny")) {
    const fs::path f = dir_ / "huge_projection.safetensors";
    rewrite_safetensors(*xl / "model-sgm.safetensors", f,
                        reshape("conditioner.embedders.1.model.text_projection", {64, 20000000}));
    for (const auto& args :
         {std::vector<std::string>{"info", f.string()},
          std::vector<std::string>{"quantize", f.string(), (dir_ / "q.safetensors").string()}}) {
      const Outcome o =
          refuse(args,
                 "out of memory allocating 2.4 GiB (2560000000 bytes) for a transposed copy of "
                 "'conditioner.embedders.1.model.text_projection'");
      EXPECT_EQ(o.output.find("bad_alloc"), std::string::npos) << o.output;
    }
  }
  // A text encoder whose vocabulary is declared 20,000,000 tokens (an LDM file carries no
  // config: the sizes come from the tensors): its f32 copy for the CPU does not fit.
  const fs::path ldm = dir_ / "big_vocab.safetensors";
  rewrite_safetensors(
      golden_ / "model-ldm.safetensors", ldm,
      reshape("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
              {20000000, 64}));
  fs::copy(golden_ / "model/tokenizer", dir_ / "tokenizer", fs::copy_options::recursive);
  const Outcome o = refuse(generate(ldm), "out of memory allocating");
  EXPECT_NE(o.output.find("token_embedding.weight"), std::string::npos) << o.output;
  EXPECT_EQ(o.output.find("bad_alloc"), std::string::npos) << o.output;
}

}  // namespace
}  // namespace hyrt::test

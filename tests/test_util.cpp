#include "test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>

#include "core/error.h"
#include "weights/checkpoint.h"
#include "weights/safetensors.h"

namespace hyrt::test {

std::vector<float> random_floats(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v)
    x = dist(rng);
  return v;
}

Tensor random_tensor(Shape shape, uint64_t seed, float scale) {
  Tensor t(DType::kF32, shape);
  auto v = random_floats(static_cast<size_t>(t.numel()), seed, scale);
  std::memcpy(t.data(), v.data(), v.size() * sizeof(float));
  return t;
}

void mark_random_outputs(ir::Graph& g, const std::function<int(int)>& pick, int one_in) {
  std::vector<int> uses(g.values().size(), 0);
  for (const ir::Node& n : g.nodes())
    for (ir::ValueId in : n.inputs)
      ++uses[in];
  for (const ir::Value& v : g.values())
    if (v.kind == ir::ValueKind::kIntermediate && (uses[v.id] == 0 || pick(one_in) == 0))
      g.mark_output(v.id);
}

double relative_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return std::numeric_limits<double>::infinity();
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  if (den == 0) return num == 0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(num / den);
}

void poison(void* data, size_t bytes) {
  std::memset(data, 0xff, bytes);
}  // 0xffffffff = NaN

std::optional<std::filesystem::path> shared_dir() {
  std::filesystem::path p = HYRT_SHARED_DIR;
  if (std::filesystem::is_directory(p)) return p;
  return std::nullopt;
}

std::optional<std::filesystem::path> golden_dir(const char* model) {
  auto s = shared_dir();
  if (!s) return std::nullopt;
  auto p = *s / "golden" / model;
  if (std::filesystem::is_directory(p)) return p;
  return std::nullopt;
}

void expect_only_range_written(const std::vector<uint8_t>& bytes, size_t offset, size_t size) {
  const auto poisoned = [](uint8_t b) { return b == 0xff; };
  EXPECT_TRUE(std::all_of(bytes.begin(), bytes.begin() + offset, poisoned))
      << "written before the workspace";
  EXPECT_TRUE(std::all_of(bytes.begin() + offset + size, bytes.end(), poisoned))
      << "written after the workspace";
  EXPECT_FALSE(std::all_of(bytes.begin() + offset, bytes.begin() + offset + size, poisoned))
      << "the workspace was not used";
}

void write_test_lora(const std::filesystem::path& model, const std::filesystem::path& out) {
  auto ck = weights::Checkpoint::open(model);
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint64_t seed = 12345;
  for (weights::Component c : {weights::Component::kUNet, weights::Component::kTextEncoder}) {
    for (const std::string& n : ck->names(c)) {
      const bool attn = n.find(".to_q.weight") != std::string::npos ||
                        n.find(".to_v.weight") != std::string::npos ||
                        n.find(".q_proj.weight") != std::string::npos;
      if (!attn) continue;
      const Shape s = ck->info(n).shape;
      const std::string module = n.substr(0, n.size() - 7);  // no ".weight"
      const std::string comp(weights::component_name(c));
      std::string key = (c == weights::Component::kUNet ? "lora_unet_" : "lora_te_") +
                        module.substr(comp.size() + 1);
      std::replace(key.begin(), key.end(), '.', '_');
      tensors.emplace_back(key + ".lora_down.weight", random_tensor({2, s[1]}, seed++, 0.5f));
      tensors.emplace_back(key + ".lora_up.weight", random_tensor({s[0], 2}, seed++, 0.5f));
    }
  }
  std::vector<std::pair<std::string, TensorView>> views;
  for (const auto& [n, t] : tensors)
    views.emplace_back(n, t.view());
  HYRT_CHECK(!views.empty(), kInvalidArgument, model.string(), " has no attention projections");
  weights::write_safetensors(out, views);
}

std::function<void(const Tensor&)> keep_last_latents(std::optional<Tensor>* last) {
  return [last](const Tensor& latents) {
    last->emplace(DType::kF32, latents.shape(), "the last step's latents");
    std::memcpy((*last)->data(), latents.data(), latents.bytes());
  };
}

ScopedEnv::ScopedEnv(const char* name, const char* value) : name_(name) {
  if (const char* v = std::getenv(name)) before_ = v;
  if (value)
    ::setenv(name, value, 1);
  else
    ::unsetenv(name);
}

ScopedEnv::~ScopedEnv() {
  if (before_)
    ::setenv(name_.c_str(), before_->c_str(), 1);
  else
    ::unsetenv(name_.c_str());
}

}  // namespace hyrt::test

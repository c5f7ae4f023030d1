// Helpers shared by hyrt's tests: random tensors, relative L2 error, golden-data paths.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ir/graph.h"

namespace hyrt::test {

// Deterministic uniform(-scale, scale) floats.
std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f);
// Fills an f32 tensor with random values.
Tensor random_tensor(Shape shape, uint64_t seed, float scale = 1.0f);
// ‖a − b‖₂ / ‖b‖₂ computed in double; +inf if any value of `a` is not finite.
double relative_l2(const float* a, const float* b, size_t n);

// The end of a random graph for the planner tests: every unused intermediate value becomes
// a graph output, and each used one too where pick(one_in) == 0 (asked only for used values).
void mark_random_outputs(ir::Graph& g, const std::function<int(int)>& pick, int one_in);
// Fills memory with a NaN pattern so an unwritten output cannot pass a comparison.
void poison(void* data, size_t bytes);
// `bytes` (a buffer filled with 0xff, read back after a run) were written only inside
// [offset, offset + size) — a kernel's workspace — and something was written there.
void expect_only_range_written(const std::vector<uint8_t>& bytes, size_t offset, size_t size);

// Writes a random kohya LoRA (rank 2, values in ±0.5) on every to_q, to_v (UNet) and q_proj
// (text encoder) of the checkpoint `model` to `out`: enough to change its pictures visibly.
void write_test_lora(const std::filesystem::path& model, const std::filesystem::path& out);

// ../shared (HYRT_SHARED_DIR) if it exists; tests that need it GTEST_SKIP() otherwise.
std::optional<std::filesystem::path> shared_dir();
std::optional<std::filesystem::path> golden_dir(const char* model = "sd15-tiny");

// Sets environment variable `name` to `value` (null: unsets it) while in scope, then restores
// what it was (or unsets it). Not thread-safe (setenv): for tests of knobs read as objects are
// made.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> before_;
};

// A txt2img on_latents callback that keeps a copy of the latents of the last step in `*last`.
std::function<void(const Tensor&)> keep_last_latents(std::optional<Tensor>* last);

}  // namespace hyrt::test

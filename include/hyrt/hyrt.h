// hyrt public API: load a Stable Diffusion 1.5 model and generate images.
//
//   hyrt::Runtime rt;                                   // host threads, program cache
//   hyrt::Model model = rt.load("v1-5.safetensors");    // diffusers folder or single file
//   hyrt::GenerateOptions o;
//   o.prompt = "a red circle on a blue background";
//   hyrt::Image img = model.generate(o).front();       // RGB8, o.width x o.height
//
// Errors are thrown as hyrt::Error (hyrt/error.h). Ownership: a Model keeps its Runtime's
// internals alive; both are movable, not copyable. Thread safety: one call at a time per
// Model (they share the Runtime's host threads).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hyrt/error.h"

namespace hyrt {

struct RuntimeOptions {
  int num_threads = 0;  // 0: every core the process may use
};

struct LoadOptions {
  // For single-file checkpoints: a diffusers-layout folder with component configs and
  // tokenizer/ (what tensor shapes cannot tell).
  std::string config_dir;
};

struct GenerateOptions {
  std::string prompt;
  std::string negative_prompt;
  int width = 0;  // 0: the model's native size (512 for SD 1.5)
  int height = 0;
  int steps = 20;
  float cfg_scale = 7.0f;
  uint64_t seed = 0;
  std::string sampler = "euler_a";  // euler_a, euler, ddim, dpmpp_2m, dpmpp_2m_karras
  int batch = 1;
  std::function<void(int step, int total)> on_step;  // progress callback
};

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major
  // The generation parameters in AUTOMATIC1111's text format (what PNGs embed).
  std::string parameters;
};

class Model;

class Runtime {
 public:
  explicit Runtime(const RuntimeOptions& options = {});
  ~Runtime();
  Runtime(Runtime&&) noexcept;
  Runtime& operator=(Runtime&&) noexcept;

  Model load(const std::string& path, const LoadOptions& options = {});

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

class Model {
 public:
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  std::vector<Image> generate(const GenerateOptions& options);
  // Writes `image` as a PNG with its parameters embedded.
  static void save_png(const Image& image, const std::string& path);

  struct Impl;

 private:
  friend class Runtime;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hyrt

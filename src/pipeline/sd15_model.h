// Sd15Model — a loaded Stable Diffusion 1.5 checkpoint with its three components ready to
// run: text encoder, UNet (noise prediction) and VAE decoder, each compiled by the
// exec::Engine for the shapes asked for and cached per shape, so a second call at the
// same resolution costs only kernel time and a new resolution costs a graph build and a
// plan — no recompilation of programs the cache already holds.
//
// Tensors in and out are host f32, channels-last: latents [B, h, w, 4], images
// [B, H, W, 3], text states [B, T, C] (core/tensor.h).
//
// Lifetime: owns the checkpoint (mmapped weights); the Engine must outlive it.
// Thread safety: none — one call at a time.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "core/tensor.h"
#include "exec/engine.h"
#include "models/sd15/config.h"
#include "models/sd15/sd15.h"
#include "pipeline/clip_tokenizer.h"
#include "pipeline/scheduler.h"
#include "weights/checkpoint.h"
#include "weights/memory_weights.h"
#include "weights/quantizing_source.h"

namespace hyrt::pipeline {

struct Sd15ModelOptions {
  // Diffusers-layout folder whose <component>/config.json override the configs (for LDM
  // single files, whose configs cannot all be read off tensor shapes).
  std::optional<std::filesystem::path> config_dir;
  // Quantize the 16/32-bit weights to "8-bit S" int8 as they are first used ("quantize
  // on load"); weights already stored as int8 are used as they are.
  bool quantize_int8 = false;
  // Which tensors quantize on load (its `keep` patterns stay 16/32-bit).
  weights::QuantizePolicy quantize_policy;
  // How the VAE decoder's 8-bit S convolutions run, whatever the engine's int8 mode.
  // Weight-only by default: the decoder's last convolutions write almost straight into
  // pixels, and W8A8's per-sample activation scales there show as blotchy noise on flat
  // areas (seen on the bundled shapes model: f32/int8 checker agreement 89.7% with a
  // W8A8 VAE, 98.7% with W8). nullopt: the engine's mode.
  std::optional<backend::Int8Mode> vae_int8_mode = backend::Int8Mode::kW8;
  // Build a batched UNet as one chain of nodes per sample (models::sd15::UNetShape::
  // independent_samples), so the host and the accelerator can each work on one CFG half at
  // a time. nullopt: when the engine places GEMMs on an accelerator and the rest on the
  // host (placement hybrid, overlap on) — one batched chain is faster everywhere else.
  std::optional<bool> unet_per_sample;
};

// Scratch and weight memory of the compiled executables (for --verbose and benchmarks).
struct MemoryReport {
  std::string component;  // "text_encoder", "unet", "vae_decoder"
  std::string shape;      // e.g. "b2 64x64"
  int64_t arena_bytes = 0;
  int64_t arena_lower_bound = 0;
  double prepare_ms = 0;
  std::string placement;           // plan::Placement::summary(): where each op kind ran, copies
  int64_t device_arena_bytes = 0;  // the accelerator's arena, if any node runs there
  int64_t copy_bytes = 0;          // bytes copied between host and accelerator per run
  int captured_steps = 0;          // steps replayed as a captured unit (after 2 runs)
  std::vector<exec::OpProfile> prepare_by_op;  // where prepare_ms went
};

class Sd15Model {
 public:
  // Opens a diffusers folder or an LDM single file; throws hyrt::Error naming what is
  // missing (a component, a config) or malformed.
  static std::unique_ptr<Sd15Model> open(const std::filesystem::path& path, exec::Engine& engine,
                                         const Sd15ModelOptions& options = {});
  // A model whose weights are already in memory (random-weight benchmarks, tests): no
  // tokenizer unless `tokenizer_dir` is given; SD 1.5's scheduler defaults. Of `options`,
  // the int8 ones apply (config_dir is not read: `configs` are given).
  static std::unique_ptr<Sd15Model> from_memory(std::unique_ptr<weights::MemoryWeights> weights,
                                                models::sd15::Sd15Configs configs,
                                                exec::Engine& engine,
                                                const Sd15ModelOptions& options = {});
  ~Sd15Model();

  // The weights every component reads (a Checkpoint, or MemoryWeights).
  const weights::WeightSource& weights() const { return *weights_; }
  // True if the weights the graphs read include 8-bit S tensors (stored or quantized on load).
  bool int8_weights() const;
  const models::sd15::ClipTextConfig& text_config() const { return *configs_.text_encoder; }
  const models::sd15::UNetConfig& unet_config() const { return *configs_.unet; }
  const models::sd15::VaeConfig& vae_config() const { return *configs_.vae; }
  // Latent downscale factor of the VAE (8 for SD 1.5).
  int vae_scale_factor() const;
  // The CLIP tokenizer (loaded on first use) from the first of: the checkpoint's
  // tokenizer/ folder, <config_dir>/tokenizer, a tokenizer/ folder beside a single file.
  // Throws kNotFound listing every place looked in.
  const ClipTokenizer& tokenizer();
  // The model's scheduler/scheduler_config.json (or <config_dir>/scheduler/...), else SD 1.5's
  // defaults.
  const SchedulerConfig& scheduler_config() const { return scheduler_config_; }

  // ids: batch × seq token ids -> last_hidden_state [batch, seq, hidden].
  Tensor encode_text(std::span<const int32_t> ids, int batch);

  // The UNet: sample [B, h, w, C], one timestep per batch item, context [B, T, Cc] ->
  // predicted noise [B, h, w, C]. With `taps`, also returns the named block outputs
  // (time_embedding, conv_in, down_blocks.k, mid_block, up_blocks.k) in order.
  Tensor predict_noise(const TensorView& sample, std::span<const float> timesteps,
                       const TensorView& context,
                       std::vector<std::pair<std::string, Tensor>>* taps = nullptr);

  // latent [B, h, w, 4] -> image [B, 8h, 8w, 3] in about [-1, 1]. `unscale` divides by the
  // VAE scaling factor first (what the txt2img pipeline does).
  Tensor decode_latents(const TensorView& latent, bool unscale);

  std::vector<MemoryReport> memory_report() const;
  // Frees the compiled executables of `component` ("text_encoder", "unet",
  // "vae_decoder"): their packed weights and programs. A later call recompiles (seconds
  // at real size), so this is for one-shot jobs that are done with a stage. Reports
  // of released executables stay in memory_report().
  void release(std::string_view component);
  // Per-op-kind run times of each compiled executable (EngineOptions::profile must be on).
  std::vector<std::pair<std::string, std::vector<exec::OpProfile>>> op_profiles() const;
  // Bytes of the stored weights of all three components (mapped files or memory).
  int64_t weight_bytes() const { return weight_bytes_; }

 private:
  Sd15Model() = default;
  struct Compiled {
    std::unique_ptr<exec::Executable> exe;
    MemoryReport report;
    std::vector<std::string> tap_names;  // outputs 1..n, when the graph has taps
  };
  // The compiled executable for `key`, building it with build() on first use.
  Compiled& executable(const std::string& key,
                       const std::function<models::sd15::BuiltGraph()>& build,
                       const std::string& component, const std::string& shape,
                       std::optional<backend::Int8Mode> int8_mode = std::nullopt);

  exec::Engine* engine_ = nullptr;
  // Applies the int8 options (weights to use, the VAE's int8 mode) once stored_ is set.
  void use_options(const Sd15ModelOptions& options);

  std::unique_ptr<weights::WeightSource> stored_;     // the checkpoint (or memory)
  const weights::Checkpoint* checkpoint_ = nullptr;   // stored_, when it is a checkpoint
  bool stored_int8_ = false;                          // the stored weights include s8
  std::unique_ptr<weights::WeightSource> quantizer_;  // quantize-on-load view of it, if asked
  const weights::WeightSource* weights_ = nullptr;    // what the graphs read: one of the two
  int64_t weight_bytes_ = 0;
  models::sd15::Sd15Configs configs_;
  std::vector<std::filesystem::path> tokenizer_candidates_;
  std::unique_ptr<ClipTokenizer> tokenizer_;
  SchedulerConfig scheduler_config_;
  std::map<std::string, Compiled> compiled_;
  std::map<std::string, MemoryReport> released_reports_;  // by key, after release()
  std::optional<backend::Int8Mode> vae_int8_mode_;        // Sd15ModelOptions::vae_int8_mode
  std::optional<bool> unet_per_sample_;                   // Sd15ModelOptions::unet_per_sample
};

// Copies `src` into the executable input `dst` (shapes must match in element count).
void copy_into(const TensorView& dst, const TensorView& src);
// Copies an executable output into a new tensor.
Tensor copy_out(const TensorView& v);

}  // namespace hyrt::pipeline

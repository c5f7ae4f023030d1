// Stage benchmarks of a model (what `hyrt bench` prints): load, text encoder, one UNet
// step at a given size and batch, VAE decode — each warmed up, then timed over repeated
// runs (median, min, max) — with the machine, the configuration, scratch arena and weight
// bytes and the peak RSS, as one JSON document.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/diffusion_model.h"

namespace hyrt::pipeline {

struct BenchOptions {
  // A model path (diffusers folder or single file), or "random:sd15" / "random:tiny" for a
  // random-weight model of that size built in memory (f16 weights; no download, no file).
  std::string model;
  int width = 512;
  int height = 512;
  int unet_batch = 2;  // 2 = one image with classifier-free guidance
  int runs = 5;
  int warmup = 1;
  bool text_encoder = true;
  bool unet = true;
  bool vae = true;
  // Per-op-kind times: "op_profile_all_runs" (every run, the warm-up's included) and
  // "op_profile_per_timed_run" (the timed runs of the text encoder, UNet and VAE stages only,
  // per run). Device steps are not replayed as CUDA graphs while profiling.
  bool profile = false;
  // With profile: each op kind apart per shape (exec::ExecOptions::profile_shapes).
  bool profile_shapes = false;
  int threads = 0;
  backend::Int8Mode int8_mode = backend::Int8Mode::kW8A8;  // how 8-bit S weights run
  // How the host multiplies float operands (exec::EngineOptions::float_precision).
  backend::FloatPrecision float_precision = backend::FloatPrecision::kF32;
  // config_dir, quantize-on-load, the VAE's int8 mode (config_dir only for files).
  ModelOptions model_options;
  // Side-by-side mode: when non-empty, the selected stages run for every variant ("f32" /
  // "bf16": the weights as stored, products in that precision; "w8" / "w8a8": quantized on
  // load and run in that int8 mode, float products in `float_precision`)
  // at every size in `sizes` (WIDTHxHEIGHT pixels; empty = width x height), each with a
  // fresh engine and model, in this one process; the JSON gains "comparison" rows and
  // each variant's speed-up over "f32" at the same size (when "f32" is among them).
  std::vector<std::string> variants;
  std::vector<std::array<int, 2>> sizes;  // {width, height}
  // Where nodes run (plan/placement.h); the JSON names the accelerator found, if any.
  plan::PlacementMode placement = plan::PlacementMode::kAuto;
  // Side by side over placement modes too ("host", "hybrid", "device", "auto"): every
  // variant (or the configured weights) runs in each mode, each with a fresh engine.
  std::vector<std::string> placements;
  // Resolution changes: with `sizes` and neither variants nor placements, one engine and
  // model run the UNet step at each size in turn; each size reports its first call (graph
  // build + placement + memory plan + program lookups + the step) and
  // shape_change_ms = first call - median step, the cost of the new shape (in place of the
  // single-size "unet_step" stage).
  bool resize = false;
  // With resize: milliseconds the bench idles before each size's first call, as a user's pause
  // between pictures would (an accelerator may lower its clocks meanwhile); 0: none.
  int idle_ms = 0;
  // Time GEMM candidates on the accelerator on first use (exec::EngineOptions::autotune).
  bool autotune = false;
  // Host and accelerator work at once where the placement allows (exec::EngineOptions::
  // overlap); false = the serial executor, for comparison.
  bool overlap = true;
  // Keep the UNet's run-invariant work (the text's cross-attention keys and values) across
  // steps (exec::EngineOptions::reuse_invariant); false = computed in every step.
  bool reuse_invariant = true;
  // Fused GEMM epilogues (exec::EngineOptions::fuse_epilogues); false = separate nodes.
  bool fuse_epilogues = true;
  // exec::EngineOptions::device_residual_fusion.
  bool device_residual_fusion = false;
  // LoRA cost (issue 17): > 0 adds, after the plain UNet step, the step with a random LoRA of
  // this rank on every attention projection (to_q/k/v/out) and feed-forward linear of the UNet
  // ("unet_step_lora": its steady step and ratio over the plain step measured in the same run,
  // and both timed in alternation), what switching costs before the next step (to it, to
  // another multiplier, to another LoRA of that rank: setting the LoRAs + compiling the adapted
  // UNet, and the first step's extra), and the LoRA's bytes beside the resident-set growth.
  int lora_rank = 0;
  // A TAESD decoder (weights::TinyAutoencoderWeights): with the VAE stage, also times its
  // decode of the same latents ("tiny_vae_decode", beside "vae_decode" in the same run, and
  // the ratio of the two medians).
  std::string taesd;
};

nlohmann::json run_bench(const BenchOptions& options);

}  // namespace hyrt::pipeline

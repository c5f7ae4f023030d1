// DiffusionModel — a loaded SD 1.5- or SDXL-family checkpoint with its components ready to
// run: text encoder(s), UNet (noise prediction), VAE encoder (img2img, inpainting) and VAE
// decoder, each compiled by the exec::Engine for the shapes asked for and cached per shape,
// so a second call at the same resolution costs only kernel time and a new resolution costs a graph
// build and a plan — no recompilation of programs the cache already holds.
//
// Tensors in and out are host f32, channels-last: latents [B, h, w, 4], images
// [B, H, W, 3], text states [B, T, C] (core/tensor.h). An inpainting UNet (in_channels
// 2·latent + 1: latents, mask, masked-picture latents) is recognised from its config / its
// conv_in weight like any other; predict_noise then takes [B, h, w, 9].
//
// The family (models::model_family) decides how a prompt becomes conditioning
// (encode_prompts): SD 1.5 conditions on the text encoder's last_hidden_state; SDXL on both
// encoders' penultimate states concatenated along channels, plus the second encoder's pooled,
// projected output and six micro-conditioning values (UNetConditioning).
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
#include "models/components.h"
#include "models/config.h"
#include "pipeline/clip_tokenizer.h"
#include "pipeline/scheduler.h"
#include "weights/checkpoint.h"
#include "weights/lora.h"
#include "weights/memory_weights.h"
#include "weights/quantizing_source.h"
#include "weights/tiny_autoencoder.h"

namespace hyrt::pipeline {

struct ModelOptions {
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
  // Build a batched UNet as one chain of nodes per sample (models::UNetShape::
  // independent_samples), so the host and the accelerator can each work on one CFG half at
  // a time. nullopt: when the engine places GEMMs on an accelerator and the rest on the
  // host (placement hybrid, overlap on) — one batched chain is faster everywhere else.
  std::optional<bool> unet_per_sample;
  // Byte budget of the compiled per-shape executables (their kernels' packed weights and
  // tables, Executable::held_bytes): after compiling a new one, the least recently used
  // others are dropped until the total fits (the newest is always kept). A dropped shape is
  // rebuilt when asked for again. 0: unbounded.
  int64_t cache_bytes = 0;
};

// What the UNet is conditioned on, for B rows (under CFG the negative rows come first).
struct UNetConditioning {
  TensorView context = {};      // [B, T, cross_attention_dim]
  TensorView text_embeds = {};  // SDXL: pooled text embedding [B, pooled_text_dim]; else empty
  // SDXL: B × 6 values (original h, w; crop top, left; target h, w); else empty.
  std::span<const float> time_ids = {};
  // LCM models (UNetConfig::time_cond_proj_dim): each row's guidance scale, embedded by the UNet
  // (no classifier-free guidance batch); else empty.
  std::span<const float> guidance_scale = {};
};

// Prompts encoded for the UNet (host tensors).
struct PromptConditioning {
  Tensor context;                     // [N, T, cross_attention_dim], T = 77 · chunks
  std::optional<Tensor> pooled;       // SDXL: [N, pooled_text_dim]
  std::vector<std::string> warnings;  // e.g. a prompt longer than kMaxPromptChunks chunks
};

// One text encoder's outputs for a batch of token sequences.
struct TextEncoderOutput {
  // What the family conditions on: SD 1.5 last_hidden_state; SDXL the penultimate state.
  Tensor hidden;                 // [N, T, C]
  std::optional<Tensor> pooled;  // the projected pooled output, for an encoder with one [N, P]
};

// Scratch and weight memory of the compiled executables (for --verbose and benchmarks).
struct MemoryReport {
  std::string component;  // "text_encoder", "text_encoder_2", "unet", "vae_decoder"
  std::string shape;      // e.g. "b2 64x64"
  int64_t arena_bytes = 0;
  int64_t arena_lower_bound = 0;
  double prepare_ms = 0;
  std::string placement;           // plan::Placement::summary(): where each op kind ran, copies
  int64_t device_arena_bytes = 0;  // the accelerator's arena, if any node runs there
  int64_t copy_bytes = 0;          // bytes copied between host and accelerator per run
  int captured_steps = 0;          // steps replayed as a captured unit (after 2 runs)
  int invariant_steps = 0;         // steps kept across runs (exec::Executable::invariant_steps)
  int reused_runs = 0;             // runs that skipped them
  std::vector<exec::OpProfile> prepare_by_op;  // where prepare_ms went
};

// diffusers DiagonalGaussianDistribution, the VAE encoder's output (host, channels-last).
struct LatentDistribution {
  Tensor mean;    // [B, h, w, latent_channels]
  Tensor logvar;  // same shape, clamped to [-30, 20] as diffusers does
  // exp(0.5 · logvar), in f32 as diffusers computes it.
  Tensor std() const;
};

class DiffusionModel {
 public:
  // Opens a diffusers folder or an LDM single file; throws hyrt::Error naming what is
  // missing (a component, a config) or malformed.
  static std::unique_ptr<DiffusionModel> open(const std::filesystem::path& path,
                                              exec::Engine& engine,
                                              const ModelOptions& options = {});
  // A model whose weights are already in memory (random-weight benchmarks, tests): no
  // tokenizer unless `tokenizer_dir` is given; SD 1.5's scheduler defaults. Of `options`,
  // the int8 ones apply (config_dir is not read: `configs` are given).
  static std::unique_ptr<DiffusionModel> from_memory(
      std::unique_ptr<weights::MemoryWeights> weights, models::ModelConfigs configs,
      exec::Engine& engine, const ModelOptions& options = {});
  ~DiffusionModel();

  // The weights every component reads (a Checkpoint, or MemoryWeights).
  const weights::WeightSource& weights() const { return *weights_; }
  // True if the weights the graphs read include 8-bit S tensors (stored or quantized on load).
  bool int8_weights() const;
  // SD 1.5 or SDXL (from the configs; see models::model_family).
  models::ModelFamily family() const { return family_; }
  const models::ModelConfigs& configs() const { return configs_; }
  const models::ClipTextConfig& text_config() const { return *configs_.text_encoder; }
  // Number of text encoders (1 for SD 1.5, 2 for SDXL) and the config of encoder `index`.
  int num_text_encoders() const { return configs_.text_encoder_2 ? 2 : 1; }
  const models::ClipTextConfig& text_config(int index) const;
  const models::UNetConfig& unet_config() const { return *configs_.unet; }
  const models::VaeConfig& vae_config() const { return *configs_.vae; }
  // Latent downscale factor of the VAE (8 for SD 1.5 and SDXL).
  int vae_scale_factor() const;
  // The image side the model was trained at: the UNet's sample_size × the VAE factor (512
  // for SD 1.5, 1024 for SDXL base) — the default width and height of a picture.
  int default_image_size() const;
  // diffusers' `force_zeros_for_empty_prompt` (model_index.json; SDXL's default, true, for
  // files without one; false for SD 1.5): with no negative prompt at all, the negative
  // conditioning is zeros instead of the encoding of "".
  bool force_zeros_for_empty_prompt() const;
  // The VAE decoder's activations must not be held in f16 (SDXL with the config's
  // force_upcast, as diffusers' SDXL pipeline upcasts): its graph is built wide-range, so
  // placement runs it only where activations are f32/bf16 — today the host when the
  // accelerator holds f16 (ir::Value::wide_range).
  bool vae_wide_range() const;
  // The CLIP tokenizer (loaded on first use) from the first of: the checkpoint's
  // tokenizer/ folder, <config_dir>/tokenizer, a tokenizer/ folder beside a single file.
  // Throws kNotFound listing every place looked in.
  const ClipTokenizer& tokenizer() { return tokenizer(0); }
  // The tokenizer of text encoder `index` (SDXL's second: tokenizer_2/, which pads with "!").
  const ClipTokenizer& tokenizer(int index);
  // The model's scheduler/scheduler_config.json (or <config_dir>/scheduler/...), else SD 1.5's
  // defaults.
  const SchedulerConfig& scheduler_config() const { return scheduler_config_; }

  // ids: batch × seq token ids -> text encoder 0's hidden states [batch, seq, hidden] (the
  // state the family conditions on: SD 1.5 last_hidden_state, SDXL the penultimate).
  Tensor encode_text(std::span<const int32_t> ids, int batch) {
    return encode_tokens(0, ids, batch).hidden;
  }
  // Text encoder `index` on batch × seq token ids: the conditioning state and, for an encoder
  // with a projection, the pooled output (taken at each sequence's first end-of-text token, as
  // transformers does). `clip_skip` is A1111's "Clip skip" (CLIP_stop_at_last_layers): 1 the
  // family's usual state; s > 1 the state s − 1 layers earlier — on SD 1.x still through
  // final_layer_norm (diffusers' clip_skip = s − 1), on SDXL the hidden state s − 1 layers before
  // the penultimate. The pooled output stays the last layer's. kInvalidArgument for s < 1 or
  // s beyond the encoder's layers.
  TextEncoderOutput encode_tokens(int index, std::span<const int32_t> ids, int batch,
                                  int clip_skip = 1);
  // Tokenizes and encodes `prompts` (one row each) as the family conditions on them, reading
  // A1111's prompt syntax (pipeline/prompt_syntax.h): emphasis weights, applied to each
  // encoder's states with A1111's mean-restoring rescale, BREAK, and prompts of more than 75
  // tokens as chunks of 77 encoded separately and concatenated along the sequence. Every row
  // gets the chunk count of the longest prompt (the others padded with the encoding of ""), so
  // context is [N, 77·chunks, C]; SDXL's pooled output is the first chunk's. A prompt of at most
  // 75 tokens without syntax is encoded exactly as before (T = 77). Throws kNotFound without a
  // tokenizer, kInvalidArgument for a syntax error (a malformed weight); text past
  // kMaxPromptChunks chunks is dropped with a warning.
  // `clip_skip` as encode_tokens', for every encoder.
  PromptConditioning encode_prompts(std::span<const std::string> prompts, int clip_skip = 1);

  // The UNet: sample [B, h, w, C], one timestep per batch item, conditioning for B rows ->
  // predicted noise [B, h, w, C]. With `taps`, also returns the named block outputs
  // (time_embedding, add_embedding, conv_in, down_blocks.k, mid_block, up_blocks.k) in order.
  // kInvalidArgument if an SDXL UNet lacks text_embeds / time_ids (or SD 1.5 gets them).
  Tensor predict_noise(const TensorView& sample, std::span<const float> timesteps,
                       const UNetConditioning& conditioning,
                       std::vector<std::pair<std::string, Tensor>>* taps = nullptr);
  Tensor predict_noise(const TensorView& sample, std::span<const float> timesteps,
                       const TensorView& context,
                       std::vector<std::pair<std::string, Tensor>>* taps = nullptr) {
    return predict_noise(sample, timesteps, UNetConditioning{.context = context}, taps);
  }

  // latent [B, h, w, 4] -> image [B, 8h, 8w, 3] in about [-1, 1]. `unscale` divides by the
  // VAE scaling factor first (what the txt2img pipeline does).
  Tensor decode_latents(const TensorView& latent, bool unscale);

  // The VAE encoder (AutoencoderKL.encode): image [B, H, W, 3] in [-1, 1], H and W multiples
  // of the VAE factor -> the latent distribution at [B, H/8, W/8, 4] (before the scaling
  // factor). Compiled per shape as "vae_encoder"; wide-range as the decoder is
  // (vae_wide_range), since diffusers upcasts the whole VAE.
  LatentDistribution encode_image(const TensorView& image);

  // A TAESD decoder (weights::TinyAutoencoderWeights) to decode with instead of the VAE where a
  // call asks for it (decode_latents_tiny, Txt2ImgParams::tiny_vae): ~20x less work and a
  // small fraction of the VAE's memory, for a softer picture — previews, and fast pictures on
  // the CPU. Checked against the model: its latent channels and upscale must be the VAE's.
  // Null removes it. Throws kInvalidArgument naming the file when it does not fit.
  void set_tiny_vae(std::shared_ptr<const weights::TinyAutoencoderWeights> tiny);
  bool has_tiny_vae() const { return tiny_vae_ != nullptr; }
  const weights::TinyAutoencoderWeights* tiny_vae() const { return tiny_vae_.get(); }
  // latent [B, h, w, C] as the UNet makes it (no unscaling: TAESD's scaling factor is 1) ->
  // image [B, f·h, f·w, 3] in about [-1, 1], as decode_latents'. Compiled per shape as
  // "tiny_vae_decoder". kInvalidArgument without set_tiny_vae.
  Tensor decode_latents_tiny(const TensorView& latent);

  // LoRAs (weights/lora.h) applied from the next call on, to the text encoder(s) and the UNet:
  // each adapted layer gets a low-rank side path beside its GEMM, the stored weights stay as
  // they are (an int8 model stays int8) and are shared with the model without LoRAs. An empty
  // list removes them. Setting the same files and multipliers again changes nothing; another
  // set compiles the adapted components again at their next use (programs and packed or
  // resident base weights come from the caches: only the adapters are new), and drops the
  // executables compiled for the set before (those without LoRAs stay). Throws
  // kInvalidArgument for a LoRA that does not fit the model or whose values would not be finite
  // (weights::LoraWeights), leaving the LoRAs in use as they were.
  void set_loras(std::span<const weights::LoraUse> loras);
  // The LoRAs in use (as last set).
  const std::vector<weights::LoraUse>& loras() const { return lora_uses_; }
  // Milliseconds the last compile of an executable took (graph build, placement, memory plan,
  // kernel preparation): what a new shape or a new LoRA set costs before its first run.
  double last_compile_ms() const { return last_compile_ms_; }
  // Bytes of memory the LoRAs in use add (weights::LoraWeights::bytes).
  size_t lora_bytes() const { return lora_ ? lora_->bytes() : 0; }

  std::vector<MemoryReport> memory_report() const;
  // Bytes the compiled executables hold now (what ModelOptions::cache_bytes bounds).
  int64_t cached_bytes() const;
  // Frees the compiled executables of `component` ("text_encoder", "text_encoder_2", "unet",
  // "vae_encoder", "vae_decoder", "tiny_vae_decoder"): their packed weights and programs. A later
  // call recompiles (seconds at real size), so this is for one-shot jobs that are done with a
  // stage. Reports of released executables stay in memory_report().
  void release(std::string_view component);
  // Waits until every compiled executable's kernels have their final programs
  // (exec::Executable::settle: a library's plans built in the background; until then they run
  // fallbacks). For benchmarks of the steady state; generation never waits for this.
  void settle();
  // Per-op-kind run times of each compiled executable (EngineOptions::profile must be on).
  std::vector<std::pair<std::string, std::vector<exec::OpProfile>>> op_profiles() const;
  // Bytes of the stored weights of all three components (mapped files or memory).
  int64_t weight_bytes() const { return weight_bytes_; }

 private:
  DiffusionModel() = default;
  struct Compiled {
    std::unique_ptr<exec::Executable> exe;
    MemoryReport report;
    std::vector<std::string> tap_names;  // outputs 1..n, when the graph has taps
    // exe->held_bytes() after create, plus the resident-set growth of its second (capture) run.
    int64_t held_bytes = 0;
    uint64_t last_used = 0;  // use_clock_ at the last lookup
    int runs = 0;
    std::string key;  // its key in compiled_
    // With LoRAs: the overlay its graph was built from and bound to (kept alive while the
    // executable is), and the key without the LoRA tag.
    std::shared_ptr<const weights::WeightSource> lora_weights;
    std::string base_key;
  };
  // The weights a component's graph reads: the LoRA overlay for the text encoders and the UNet
  // while LoRAs are set, else weights_.
  const weights::WeightSource& weights_for(std::string_view component) const;
  const weights::LoraTargetIndex& lora_targets();
  // A decoder's run on `latent` [B, h, w, C]: its executable per shape ("<what> b<B> <h>x<w>",
  // built by build(B, h, w)), the latent copied in, the picture copied out.
  Tensor decode_with(const std::string& what, const std::string& component,
                     const TensorView& latent,
                     const std::function<models::BuiltGraph(int, int, int)>& build,
                     std::optional<backend::Int8Mode> int8_mode = std::nullopt);
  // Runs `c`, adding what its capture run adds to memory to its held_bytes.
  void run(Compiled& c);
  // Drops least recently used executables other than `keep` until the cache fits its budget.
  void evict_beyond_budget(const std::string& keep);
  // The compiled executable for `key`, building it with build() on first use.
  Compiled& executable(const std::string& key, const std::function<models::BuiltGraph()>& build,
                       const std::string& component, const std::string& shape,
                       std::optional<backend::Int8Mode> int8_mode = std::nullopt);

  exec::Engine* engine_ = nullptr;
  // Applies the int8 options (weights to use, the VAE's int8 mode) once stored_ is set.
  void use_options(const ModelOptions& options);

  std::unique_ptr<weights::WeightSource> stored_;     // the checkpoint (or memory)
  const weights::Checkpoint* checkpoint_ = nullptr;   // stored_, when it is a checkpoint
  bool stored_int8_ = false;                          // the stored weights include s8
  std::unique_ptr<weights::WeightSource> quantizer_;  // quantize-on-load view of it, if asked
  const weights::WeightSource* weights_ = nullptr;    // what the graphs read: one of the two
  int64_t weight_bytes_ = 0;
  models::ModelConfigs configs_;
  models::ModelFamily family_ = models::ModelFamily::kSd15;
  std::optional<bool> force_zeros_;  // model_index.json's, when there is one
  // Folders that may hold tokenizer/ and tokenizer_2/ (the model, the config folder, beside a
  // single file).
  std::vector<std::filesystem::path> tokenizer_roots_;
  std::unique_ptr<ClipTokenizer> tokenizers_[2];
  SchedulerConfig scheduler_config_;
  std::map<std::string, Compiled> compiled_;
  std::vector<weights::LoraUse> lora_uses_;
  std::shared_ptr<const weights::LoraWeights> lora_;  // null without adapters
  // The last overlay's adapter tensors, for the next set_loras to write into when the shapes
  // agree (weights::LoraWeights: a switch then touches no fresh pages).
  std::shared_ptr<weights::LoraStorage> lora_storage_;
  std::unique_ptr<weights::LoraTargetIndex> lora_targets_;           // built on first set_loras
  std::map<std::string, MemoryReport> released_reports_;             // by key, after release()
  std::shared_ptr<const weights::TinyAutoencoderWeights> tiny_vae_;  // set_tiny_vae
  std::optional<backend::Int8Mode> vae_int8_mode_;                   // ModelOptions::vae_int8_mode
  std::optional<bool> unet_per_sample_;  // ModelOptions::unet_per_sample
  int64_t cache_bytes_ = 0;              // ModelOptions::cache_bytes
  uint64_t use_clock_ = 0;               // ticks once per executable lookup
  double last_compile_ms_ = 0;
};

// Copies `src` into the executable input `dst` (shapes must match in element count).
void copy_into(const TensorView& dst, const TensorView& src);
// Copies an executable output into a new tensor.
Tensor copy_out(const TensorView& v);

}  // namespace hyrt::pipeline

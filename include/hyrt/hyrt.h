// hyrt public API: load a Stable Diffusion 1.5 or SDXL model and generate images.
//
//   hyrt::Runtime rt;                                   // host threads, accelerator, caches
//   hyrt::Model model = rt.load("v1-5.safetensors");    // diffusers folder or single file
//   hyrt::GenerateOptions o;
//   o.prompt = "a red circle on a blue background";
//   hyrt::Image img = model.generate(o).front();       // RGB8, o.width x o.height
//
// Errors are thrown as hyrt::Error (hyrt/error.h); a cancelled call throws hyrt::Cancelled.
//
// Ownership and lifetime: a Model keeps its Runtime's internals alive (a Model may outlive
// the Runtime object it came from); both are movable, not copyable. Destroying a Model
// returns its host and accelerator memory (weights, compiled executables, packed weights).
//
// Thread safety: any number of threads may call generate() on one Model or on different
// Models of one Runtime, and load or destroy Models, at the same time. The calls of one
// Runtime share its executor (host threads, accelerator stream, scratch arenas): one worker
// thread per Runtime runs them in arrival order (first come, first served), and calls that
// queued together and are compatible may run as one batch (RuntimeOptions::max_batch); each
// returns what it would return if it were the only call, bit for bit (for the one caveat of
// batching on CUDA see RuntimeOptions::max_batch). Runtimes are independent.
// A moved-from Runtime or Model may only be destroyed or assigned to.
//
// Failure: an exception from any stage of generate() (a bad option, out of memory at a new
// size, a throwing on_step callback, a cancel) leaves the Model healthy — the next call
// returns what a fresh process would.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hyrt/error.h"

namespace hyrt {

struct RuntimeOptions {
  int num_threads = 0;  // host threads; 0: every core the process may use
  // Where the model's work runs: "auto" (an accelerator if one is usable, else the host),
  // "host", "hybrid" (GEMMs on the accelerator, the rest on the host) or "device".
  std::string placement = "auto";
  int device = 0;  // CUDA device index
  // Arithmetic (what `hyrt generate --precision` takes): "f32" (the reference; int8 weights run
  // weight-only), "bf16" (host products on bf16 operands with f32 accumulation, where the CPU
  // has AVX-512 BF16 or AMX), "int8" (every Model loaded quantized to 8-bit S, int8 x int8 GEMMs
  // in the text encoders and UNet, the rest as bf16) or "auto" (int8 files as int8, float ones
  // as bf16, nothing quantized on load). The GPU keeps its f16 arithmetic under f32 and bf16.
  std::string precision = "auto";
  // Byte budget of each Model's per-shape compiled state (executables: their kernels' tables,
  // weights packed in a layout only that shape uses, recorded CUDA graphs; weights packed or
  // uploaded once are shared by every shape and not counted): beyond it the least recently used
  // shapes are dropped and rebuilt when asked for again (from the program cache: no
  // recompilation). 0: a quarter of the machine's memory, at least 4 GiB. The shape in use is
  // never dropped.
  int64_t cache_bytes = 0;
  // Request batching: generate() calls on one Model that wait for the executor together and
  // agree on size, steps, sampler and guidance on/off run as one UNet batch of up to this many
  // images, each call still with its own prompts, seed, scale, callbacks and cancel (a call
  // with an init image runs alone). 1: every call runs alone (the default: batching trades the
  // first call's latency for throughput, which pays on an accelerator, little on the host). A
  // batched call returns exactly what it returns alone: every kernel computes a sample
  // independently of the others, and the GEMM choices follow the rows per sample, not the batch
  // (tests/library, on the host and in CUDA device and hybrid placement; on hosts without
  // AVX-512, whose oneDNN GEMMs depend on their row count and threads, the host's GEMMs run per
  // sample and attention's products on one thread each for it). One exception on CUDA:
  // cuBLASLt picks its f16 algorithm per GEMM size, so a 16-bit (not 8-bit S) model could differ in
  // the last bits batched — not seen in our tests, not excluded. Gains:
  // bench/results/library_throughput_h200.json.
  int max_batch = 1;
  // How long a batch that still has room waits for more calls before it starts, in ms. 0: no
  // added latency; batches form from the calls that queued while the previous one ran.
  int batch_wait_ms = 0;
  // Where the prompt's LoRA tags, <lora:NAME:MULT>, find NAME.safetensors (empty: tags are
  // refused).
  std::string lora_dir;
};

// What a Runtime's executor has done so far (for monitoring, e.g. hyrt serve's /metrics).
struct RuntimeStats {
  int64_t calls = 0;      // generate() calls finished (succeeded or failed)
  int64_t batches = 0;    // denoising loops run (a lone call is a batch of one)
  int largest_batch = 0;  // most calls that shared one batch
  int waiting = 0;        // calls queued now, not yet running
  // Accelerator memory held after the last batch, load or unload (resident weights, shared
  // scratch arena, workspaces); 0 without an accelerator.
  int64_t accelerator_bytes = 0;
};

struct LoadOptions {
  // For single-file checkpoints: a diffusers-layout folder with component configs and
  // tokenizer/ (what tensor shapes cannot tell).
  std::string config_dir;
  // Quantize 16/32-bit weights to "8-bit S" int8 as they are loaded (int8 files are used
  // as stored either way). RuntimeOptions::precision "int8" quantizes every load.
  bool quantize_int8 = false;
  // A TAESD decoder to keep beside the model's VAE (a diffusers AutoencoderTiny folder or
  // file, or taesd_decoder.safetensors: taesd for SD 1.x, taesdxl for SDXL); calls choose it
  // with GenerateOptions::taesd. One made for another latent space throws InvalidArgument.
  std::string taesd;
};

// Stops a generate() call from any thread. Copies share one flag: keep a copy, pass one in
// GenerateOptions, call cancel() — the call ends at its next step boundary (before each
// denoising step, before the VAE) by throwing hyrt::Cancelled. A token stays cancelled.
class CancelToken {
 public:
  CancelToken() : flag_(std::make_shared<std::atomic<bool>>(false)) {}
  void cancel() const noexcept { flag_->store(true, std::memory_order_relaxed); }
  bool cancelled() const noexcept { return flag_->load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<std::atomic<bool>> flag_;
};

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3, row-major
  // The generation parameters in AUTOMATIC1111's text format (what PNGs embed); img2img adds
  // "Denoising strength: S" as A1111 does.
  std::string parameters;
  uint64_t seed = 0;  // the seed this image was drawn with
};

struct GenerateOptions {
  std::string prompt;
  // nullopt: no negative prompt (SDXL models then use zero negative conditioning, as
  // diffusers does); "" is encoded like any prompt.
  std::optional<std::string> negative_prompt;
  int width = 0;  // 0: the model's native size (512 for SD 1.5, 1024 for SDXL base)
  int height = 0;
  int steps = 20;
  float cfg_scale = 7.0f;
  uint64_t seed = 0;
  // euler_a, euler, heun, ddim, dpmpp_2m, dpmpp_2m_sde, lcm, euler_a_karras,
  // euler_karras, heun_karras, dpmpp_2m_karras, dpmpp_2m_sde_karras (or A1111's names: "Euler a",
  // ...)
  std::string sampler = "euler_a";
  int batch = 1;
  // A1111's "Clip skip": 1 conditions on the text encoder's usual state; s > 1 on the state s − 1
  // layers earlier (what many SD 1.5 fine-tunes were trained with, usually 2). Image::parameters
  // records "Clip skip: s" when s > 1.
  int clip_skip = 1;
  // Called after each denoising step, on the calling thread (while the runtime's worker may
  // already run the next step). An exception it throws ends the call at once and reaches the
  // caller unchanged. Once `cancel` is cancelled it is not called again (nor on_preview), even
  // for steps the worker finished before it saw the cancel.
  std::function<void(int step, int total)> on_step;
  // Live previews: every `preview_every` steps and after the last, the picture the model
  // predicts at that step (the clean image it aims at, not the noisy latents), for the first
  // image of the call; Image::parameters is empty. Decoded with the TAESD decoder when the
  // model has one (LoadOptions::taesd: milliseconds), else with its VAE (as long as the final
  // decode: choose a larger preview_every). Called on the calling thread after that step's
  // on_step; a preview the caller was too slow for is replaced by a later one. An exception it
  // throws ends the call as on_step's does.
  std::function<void(const Image& preview, int step, int total)> on_preview;
  int preview_every = 1;  // >= 1
  CancelToken cancel;     // a fresh token: never cancelled unless someone holds a copy

  // LoRAs for this call: .safetensors files in the kohya / A1111 or diffusers / PEFT format,
  // each with its multiplier, applied at run time beside the model's weights (which stay as
  // stored: an int8 model stays int8). The prompt's A1111 tags <lora:NAME:MULT> (MULT default
  // 1) add RuntimeOptions::lora_dir/NAME.safetensors; the tags are not encoded but stay in
  // Image::parameters. Files are read once and kept while the Runtime lives (a changed file is
  // read again). A LoRA that does not fit the model (another architecture) throws
  // InvalidArgument naming it. Calls batch together only with the same LoRAs.
  struct Lora {
    std::string path;
    float multiplier = 1.0f;
  };
  std::vector<Lora> loras;

  // img2img and inpainting (diffusers' StableDiffusionImg2ImgPipeline and
  // StableDiffusionInpaintPipeline; what `hyrt generate --init-image --strength --mask` does).
  // The picture to start from (RGB8: width, height and rgb are read, the rest is ignored).
  // It is resized to width x height as Pillow's LANCZOS resize does (diffusers' image
  // processor; the CLI resizes the same way); with width/height 0 the size is the picture's
  // own, rounded down to a multiple of the VAE factor (8 for SD 1.5 and SDXL). Every image of
  // `batch` starts from it. Absent: text to image.
  std::optional<Image> init_image;
  // Inpainting: what to repaint, white = repaint, black = keep (RGB8, read as grayscale,
  // resized like the picture and binarised at 0.5). Needs init_image. An inpainting model
  // (UNet with 9 input channels) needs a mask; any other model keeps the picture's latents
  // outside it after every step.
  std::optional<Image> mask;
  // How much of the picture is repainted, in (0, 1]: steps x strength of the denoising steps
  // run (diffusers' `strength`, A1111's denoising_strength), so steps x strength must be at
  // least 1. 1 starts from noise. Only read with init_image.
  double strength = 0.8;
  // A1111's hires fix (text to image only; such a call runs alone, not in a batch): the picture
  // drawn at width x height, resized by Lanczos in 8 bits to the hires size and drawn again
  // from it as img2img with the same seed: exactly what saving it and calling again with
  // init_image gives. on_step counts on into the second pass (the total grows when it starts).
  // Image::parameters records "Denoising strength", "Hires upscale" (or "Hires resize"),
  // "Hires steps" and "Hires upscaler: Lanczos" as A1111 does; Size stays the first pass's.
  struct Hires {
    // "Lanczos" (the picture resized), "Latent" (the first pass's latents resized bilinearly
    // and given to img2img as latents: no decode and encode between the passes) or "Latent
    // (nearest)"; InvalidArgument for another.
    std::string upscaler = "Lanczos";
    double scale = 2.0;     // the hires size: width x height times this (A1111's hr_scale), ...
    int width = 0;          // ... unless given (hr_resize_x / hr_resize_y; one alone keeps the
    int height = 0;         // aspect ratio); rounded down to the VAE factor
    int steps = 0;          // the second pass's steps; 0: `steps`
    double strength = 0.7;  // the second pass's denoising strength, (0, 1]
  };
  std::optional<Hires> hires;
  // Decode with the TAESD decoder loaded with the model (LoadOptions::taesd) instead of its
  // VAE: ~20x less work for a slightly softer picture (Image::parameters says "VAE: <file>").
  // InvalidArgument when the model was loaded without one.
  bool taesd = false;
  // Errors (hyrt::Error, kInvalidArgument): a mask without init_image, a strength outside
  // (0, 1] or leaving no step to run, an image whose rgb size is not width x height x 3, a
  // picture over 16384 pixels a side or 64 Mpixel. Calls with an init image always run
  // alone, never in a batch with other calls (RuntimeOptions::max_batch).
};

class Model;

class Runtime {
 public:
  explicit Runtime(const RuntimeOptions& options = {});
  ~Runtime();
  Runtime(Runtime&&) noexcept;
  Runtime& operator=(Runtime&&) noexcept;

  Model load(const std::string& path, const LoadOptions& options = {});
  // "cuda: NVIDIA H200 (...)", or why no accelerator is in use.
  std::string accelerator() const;
  RuntimeStats stats() const;

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
  // "sd15" or "sdxl".
  std::string family() const;
  // The default image side (512 for SD 1.5, 1024 for SDXL base).
  int native_size() const;
  // Bytes of compiled per-shape state this Model holds now (see RuntimeOptions::cache_bytes).
  int64_t cached_bytes() const;
  // Loads a TAESD decoder for GenerateOptions::taesd (as LoadOptions::taesd; "" removes it).
  // Waits for the calls running on the model's runtime. InvalidArgument for one made for
  // another latent space (the model keeps the one it had), Io/InvalidModel for a bad file.
  void set_taesd(const std::string& path);
  // The name a TAESD decoder goes by, as A1111 names VAEs: its file's name (extension kept) or
  // its folder's. The PNG parameters' "VAE" and hyrt serve's VAE list both use it.
  static std::string taesd_name(const std::string& path);
  // Writes `image` as a PNG with its parameters embedded.
  static void save_png(const Image& image, const std::string& path);

  struct Impl;

 private:
  friend class Runtime;
  explicit Model(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hyrt

// `hyrt generate` — text to image, img2img (--init-image, --strength) and inpainting (--mask)
// (pipeline/txt2img.h), with the flags people know from stable-diffusion.cpp and AUTOMATIC1111.
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "pipeline/image_io.h"
#include "pipeline/init_image.h"
#include "pipeline/precision.h"
#include "pipeline/prompt_syntax.h"
#include "pipeline/txt2img.h"
#include "progress.h"
#include "weights/lora.h"
#include "weights/tiny_autoencoder.h"

namespace hyrt::cli {
namespace {

struct GenerateArgs {
  std::string model;
  std::string config_dir;
  std::string prompt;
  std::string negative;
  bool has_negative = false;  // -n given (even as ""): SDXL's zero negative needs none given
  int steps = 20;
  float cfg_scale = 7.0f;
  int clip_skip = -1;  // <= 0: unset (1), as stable-diffusion.cpp's flag
  int width = 0;       // 0: the model's native size (UNet sample_size x VAE factor; 512 for SD 1.5)
  int height = 0;
  int64_t seed = -1;
  std::string sampler = "euler_a";
  bool has_sampler = false;  // --sampler given; else an LCM model's scheduler picks lcm
  int batch = 1;
  std::string output = "output.png";
  int threads = 0;
  std::string weights = "stored";
  std::string precision = "auto";
  Int8Choice int8;
  std::string placement = "auto";
  bool autotune = false;
  std::vector<int> original_size;  // SDXL micro-conditioning: HEIGHT,WIDTH
  std::vector<int> crop_top_left;  // TOP,LEFT
  std::vector<int> target_size;    // HEIGHT,WIDTH
  std::string init_image;          // img2img / inpainting picture (PNG)
  std::string mask;                // inpainting mask (PNG, white = repaint)
  double strength = 0.8;           // diffusers' default
  bool has_strength = false;
  std::vector<std::string> loras;   // --lora FILE[:MULT]
  std::string lora_dir;             // where <lora:NAME:MULT> prompt tags are looked up
  std::string taesd;                // decode with this TAESD decoder instead of the VAE
  bool taesd_preview_only = false;  // ... for --preview tae only, the picture with the VAE
  std::string preview = "none";     // live previews: none, tae (--taesd) or vae
  std::string preview_path = "preview.png";
  int preview_interval = 1;  // steps between previews (the last step always writes one)
  pipeline::HiresFix hires;  // A1111's hires fix, when any --hires-* flag is given
  std::string hires_upscaler = "Lanczos";
  bool has_hires = false;
};

// The LoRAs of --lora FILE[:MULT] and of the prompt's <lora:NAME:MULT> tags (looked up in
// --lora-dir as NAME.safetensors), opened; `prompt` loses its tags. `labels` gets
// "name:multiplier" per --lora flag, for the PNG parameters.
std::vector<weights::LoraUse> open_loras(const GenerateArgs& a, std::string& prompt,
                                         std::vector<std::string>& labels) {
  namespace fs = std::filesystem;
  std::vector<weights::LoraUse> uses;
  for (const std::string& arg : a.loras) {
    std::string file = arg;
    float mult = 1.0f;
    // FILE:MULT, unless the whole argument names a file (a path may hold a colon).
    const size_t colon = arg.rfind(':');
    if (!fs::exists(arg) && colon != std::string::npos) {
      const std::string number = arg.substr(colon + 1);
      char* end = nullptr;
      const double v = std::strtod(number.c_str(), &end);
      HYRT_CHECK(!number.empty() && *end == '\0' && std::isfinite(v) && std::abs(v) < 1e6,
                 kInvalidArgument, "--lora '", arg, "': '", number,
                 "' is not a multiplier (write FILE or FILE:MULT, e.g. style.safetensors:0.8)");
      file = arg.substr(0, colon);
      mult = static_cast<float>(v);
    }
    if (!fs::exists(file) && !a.lora_dir.empty()) {
      for (const fs::path& c :
           {fs::path(a.lora_dir) / file, fs::path(a.lora_dir) / (file + ".safetensors")})
        if (fs::exists(c)) {
          file = c.string();
          break;
        }
    }
    uses.push_back({weights::LoraFile::open(file), mult});
    labels.push_back(str_cat(fs::path(file).stem().string(), ":", mult));
  }
  pipeline::PromptLoras tags = pipeline::extract_lora_tags(prompt);
  for (const pipeline::LoraTag& t : tags.loras) {
    const fs::path file = pipeline::lora_tag_file(a.lora_dir, t, "--lora-dir (or $HYRT_LORA_DIR)");
    uses.push_back({weights::LoraFile::open(file), t.multiplier});
  }
  prompt = std::move(tags.prompt);
  return uses;
}

// A number in [lo, hi] that is not NaN (CLI::Range lets NaN through: it fails no comparison).
CLI::Validator finite_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(s.c_str(), &end);
        if (end == s.c_str() || *end != '\0' || !std::isfinite(v) || v < lo || v > hi)
          return str_cat("value ", s, " not in range [", lo, " - ", hi, "]");
        return "";
      },
      str_cat("FLOAT in [", lo, " - ", hi, "]"));
}

// An integer in [lo, hi] written as such: CLI11 clamps a number past 64 bits to the largest
// int64 instead of refusing it.
CLI::Validator int64_in_range(int64_t lo, int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& s) -> std::string {
        errno = 0;
        char* end = nullptr;
        const long long v = std::strtoll(s.c_str(), &end, 10);
        if (end == s.c_str() || *end != '\0' || errno == ERANGE || v < lo || v > hi)
          return str_cat("value ", s, " not in range [", lo, " - ", hi, "]");
        return "";
      },
      str_cat("INT in [", lo, " - ", hi, "]"));
}

// A PNG read for --init-image / --mask, with the flag named in any error.
pipeline::Image8 read_input_png(const std::string& path, const char* flag) {
  try {
    return pipeline::read_png(path).image;
  } catch (const Error& e) {
    fail(e.code(), flag, " '", path, "': ", e.what());
  }
}

std::filesystem::path output_path(const std::filesystem::path& base, int index) {
  if (index == 0) return base;
  auto p = base;
  p.replace_filename(str_cat(base.stem().string(), "_", index + 1, base.extension().string()));
  return p;
}

// Fails before any work if the output cannot be written.
void check_output_writable(const std::filesystem::path& out) {
  const auto dir = out.has_parent_path() ? out.parent_path() : std::filesystem::path(".");
  HYRT_CHECK(std::filesystem::is_directory(dir), kIo, "cannot write '", out.string(), "': folder '",
             dir.string(), "' does not exist");
  HYRT_CHECK(access(dir.c_str(), W_OK) == 0, kIo, "cannot write '", out.string(), "': folder '",
             dir.string(), "' is not writable");
  HYRT_CHECK(!std::filesystem::is_directory(out), kIo, "cannot write '", out.string(),
             "': it is a folder");
}

}  // namespace

// The model hyrt ships (models/shapes-int8.safetensors: a small SD 1.5-architecture
// model trained on procedural shapes, see train/README.md), used when no -m is given.
// Looked for in $HYRT_MODEL, then beside the executable (an install's share/hyrt, or the
// checkout two levels up from build/tools), then in the checkout this binary was built
// from.
constexpr const char* kBundledModel = "shapes-int8.safetensors";

std::string find_bundled_model() {
  if (const char* env = std::getenv("HYRT_MODEL"); env && *env) return env;
  namespace fs = std::filesystem;
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / "../share/hyrt" / kBundledModel);
    candidates.push_back(exe.parent_path() / "../../models" / kBundledModel);
  }
  candidates.push_back(fs::path(HYRT_SOURCE_MODELS_DIR) / kBundledModel);
  std::string looked;
  for (const fs::path& c : candidates) {
    if (fs::is_regular_file(c, ec)) return fs::weakly_canonical(c, ec).string();
    looked += "\n  " + c.lexically_normal().string();
  }
  fail(ErrorCode::kNotFound, "no -m/--model given and the bundled model was not found; looked in",
       looked, "\n(set HYRT_MODEL or pass -m MODEL)");
}

namespace {

void run(const GenerateArgs& a_in) {
  using namespace pipeline;
  GenerateArgs a = a_in;
  if (a.model.empty()) a.model = find_bundled_model();
  const auto t_start = std::chrono::steady_clock::now();
  SamplerKind sampler = parse_sampler_kind(a.sampler);  // lists valid names on error
  Txt2ImgParams p;
  p.prompt = a.prompt;
  // LoRAs are opened (and the prompt's tags removed) before the model loads: a bad file or tag
  // fails at once.
  std::vector<std::string> lora_labels;
  const std::vector<weights::LoraUse> loras = open_loras(a, p.prompt, lora_labels);
  std::shared_ptr<const weights::TinyAutoencoderWeights> taesd;
  HYRT_CHECK(a.preview != "tae" || !a.taesd.empty(), kInvalidArgument,
             "--preview tae decodes the previews with the --taesd decoder: give one");
  HYRT_CHECK(!a.taesd_preview_only || !a.taesd.empty(), kInvalidArgument,
             "--taesd-preview-only needs --taesd");
  if (!a.taesd.empty()) taesd = weights::TinyAutoencoderWeights::open(a.taesd);  // fail early
  if (a.has_negative) p.negative_prompt = a.negative;
  if (!a.original_size.empty()) p.original_size = {a.original_size[0], a.original_size[1]};
  if (!a.crop_top_left.empty()) p.crop_top_left = {a.crop_top_left[0], a.crop_top_left[1]};
  if (!a.target_size.empty()) p.target_size = {a.target_size[0], a.target_size[1]};
  p.steps = a.steps;
  p.cfg_scale = a.cfg_scale;
  p.clip_skip = a.clip_skip > 0 ? a.clip_skip : 1;
  if (a.has_hires) {
    p.hires = a.hires;
    p.hires->upscaler = parse_hires_upscaler(a.hires_upscaler);
  }
  p.width = a.width > 0 ? a.width : 512;  // checked again with the model's defaults below
  p.height = a.height > 0 ? a.height : 512;
  p.batch = a.batch;
  p.sampler = sampler;
  p.seed = a.seed >= 0 ? static_cast<uint64_t>(a.seed) : std::random_device{}() & 0xffffffffu;
  validate_txt2img_params(p, 8);
  HYRT_CHECK(a.mask.empty() || !a.init_image.empty(), kInvalidArgument,
             "--mask needs --init-image (the picture to repaint)");
  HYRT_CHECK(!a.has_strength || !a.init_image.empty(), kInvalidArgument,
             "--strength needs --init-image");
  // Read the pictures before loading the model, so a bad file fails at once.
  std::optional<Image8> init_png, mask_png;
  if (!a.init_image.empty()) {
    init_png = read_input_png(a.init_image, "--init-image");
    (void)first_img2img_step(p.steps, a.strength);  // strength and steps leave a step to run
  }
  if (!a.mask.empty()) mask_png = read_input_png(a.mask, "--mask");
  if (mask_png && (mask_png->width != init_png->width || mask_png->height != init_png->height)) {
    // Both are resized to the output size, as diffusers does; a mask of another shape is
    // stretched differently from the picture, which is rarely what was meant.
    const double picture_aspect = static_cast<double>(init_png->width) / init_png->height;
    const double mask_aspect = static_cast<double>(mask_png->width) / mask_png->height;
    std::fprintf(stderr,
                 "hyrt: warning: --mask is %dx%d but --init-image is %dx%d; both are resized to "
                 "the output size%s\n",
                 mask_png->width, mask_png->height, init_png->width, init_png->height,
                 std::abs(mask_aspect / picture_aspect - 1.0) > 0.01
                     ? ", so the mask is stretched differently from the picture"
                     : "");
  }
  const std::filesystem::path out = a.output;
  check_output_writable(out);

  const PrecisionSettings ps = precision_settings(parse_precision(a.precision));
  exec::EngineOptions eo;
  eo.num_threads = a.threads;
  eo.int8_mode = a.int8.mode_or(ps.int8_mode);
  eo.float_precision = ps.float_precision;
  eo.placement = plan::parse_placement_mode(a.placement);
  eo.autotune = a.autotune;
  exec::Engine engine(eo);
  ModelOptions mo;
  if (!a.config_dir.empty()) mo.config_dir = a.config_dir;
  mo.quantize_int8 = a.weights == "int8" || ps.quantize_int8;
  mo.vae_int8_mode = a.int8.vae_mode();
  HYRT_LOG(kInfo) << "precision " << precision_name(parse_precision(a.precision))
                  << ": host products "
                  << backend::float_precision_name(engine.host_float_precision())
                  << ", int8 weights " << backend::int8_mode_name(eo.int8_mode)
                  << (mo.quantize_int8 ? ", quantized on load" : "");
  auto t0 = std::chrono::steady_clock::now();
  auto model = DiffusionModel::open(a.model, engine, mo);
  for (int i = 0; i < model->num_text_encoders(); ++i)
    model->tokenizer(i);    // fail before any work if a tokenizer is missing
  model->set_loras(loras);  // refuses a LoRA that does not fit the model
  if (!a.has_sampler && model->scheduler_config().class_name == "LCMScheduler") {
    sampler = SamplerKind::kLcm;  // an LCM model: its own few-step sampler
    p.sampler = sampler;
    std::fprintf(stderr, "hyrt: the model's scheduler is LCMScheduler: sampling with lcm\n");
  }
  if (taesd) {
    model->set_tiny_vae(taesd);  // refuses one made for another latent space
    p.tiny_vae = !a.taesd_preview_only;
  }
  const int native = model->default_image_size();
  const int f = model->vae_scale_factor();
  // img2img without -W/-H: the picture's size rounded down to the VAE factor (diffusers'
  // get_default_height_width); else the model's native size.
  if (a.width <= 0) p.width = init_png ? std::max(f, init_png->width / f * f) : native;
  if (a.height <= 0) p.height = init_png ? std::max(f, init_png->height / f * f) : native;
  if (init_png) {
    InitImage init;
    init.image = picture_tensor(*init_png, p.width, p.height);
    init.strength = a.strength;
    if (mask_png) init.mask = mask_tensor(*mask_png, p.width, p.height);
    p.init = std::move(init);
  }
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  ProgressBar bar("sampling");
  p.on_step = [&](int done, int total) { bar.update(done, total); };
  if (a.preview != "none") {
    // Live previews: the first image's predicted picture, rewritten every interval steps.
    p.on_denoised = [&](int done, int total, const Tensor& x0) {
      if (done % a.preview_interval != 0 && done != total) return;
      write_png(a.preview_path, preview_image8(*model, x0, a.preview == "tae"));
    };
  }
  p.release_stages = true;  // one job per process: free each stage when it is done
  validate_txt2img_params(p, model->vae_scale_factor());
  const Txt2ImgResult r = txt2img(*model, model->scheduler_config(), p);
  bar.finish();
  for (const auto& w : r.warnings)
    std::fprintf(stderr, "hyrt: warning: %s\n", w.c_str());

  GenerationParameters gp = generation_parameters(
      *model, p, a.taesd.empty() ? "" : weights::TinyAutoencoderWeights::display_name(a.taesd));
  gp.prompt = a.prompt;  // verbatim, <lora:...> tags included (as A1111 records it)
  gp.model = std::filesystem::path(a.model).filename().string();
  if (!lora_labels.empty()) {
    std::string list;
    for (const std::string& l : lora_labels)
      list += (list.empty() ? "" : ", ") + l;
    gp.extra.emplace_back("LoRA", list);  // the --lora flags (prompt tags stay in the prompt)
  }
  gp.extra.emplace_back("Version", "hyrt");
  // The pictures' size: the hires fix's second pass makes them larger than -W x -H.
  const int out_h = static_cast<int>(r.images.shape()[1]),
            out_w = static_cast<int>(r.images.shape()[2]);
  const int64_t pixels = static_cast<int64_t>(out_w) * out_h * 3;
  for (int i = 0; i < p.batch; ++i) {
    // One seed per batch (the latents of item i follow item i-1's): gp.seed is p.seed.
    if (p.batch > 1) gp.extra.emplace_back("Batch index", std::to_string(i));
    const Image8 img = float_to_image8(
        {r.images.as<float>() + i * pixels, static_cast<size_t>(pixels)}, out_h, out_w);
    const auto path = output_path(out, i);
    write_png(path, img, {{kParametersKeyword, format_a1111_parameters(gp)}});
    if (p.batch > 1) gp.extra.pop_back();
    std::printf("wrote %s (%dx%d, seed %llu)\n", path.c_str(), out_w, out_h,
                static_cast<unsigned long long>(p.seed));
  }
  const double total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_start).count();
  const int steps = p.init ? p.steps - first_img2img_step(p.steps, p.init->strength) : p.steps;
  std::printf(
      "timings: load %.0f ms, text encoder %.0f ms, sampling %.0f ms (%.1f ms/step; first step "
      "%.0f ms incl. prepare), VAE decode %.0f ms, total %.0f ms\n",
      load_ms, r.timings.text_ms, r.timings.denoise_ms, r.timings.denoise_ms / steps,
      r.timings.first_step_ms, r.timings.decode_ms, total_ms);
  if (log_level() <= LogLevel::kInfo) {
    for (const auto& m : model->memory_report())
      std::printf(
          "memory: %-14s %-18s scratch arena %10lld bytes (%.1f MiB; lower bound %.1f MiB), "
          "device arena %.1f MiB, %.1f MiB copied per run, prepared in %.0f ms\n",
          m.component.c_str(), m.shape.c_str(), static_cast<long long>(m.arena_bytes),
          m.arena_bytes / 1048576.0, m.arena_lower_bound / 1048576.0,
          m.device_arena_bytes / 1048576.0, m.copy_bytes / 1048576.0, m.prepare_ms);
    std::printf("accelerator: %s\n", engine.accelerator_status().c_str());
    std::printf("memory: stored weights %.1f MiB (mapped), peak RSS %.1f MiB\n",
                model->weight_bytes() / 1048576.0, peak_rss_bytes() / 1048576.0);
    for (const auto& m : model->memory_report())
      std::printf("placement: %s %s\n%s", m.component.c_str(), m.shape.c_str(),
                  m.placement.c_str());
  }
}

CommandRegistrar reg(10, [](CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* c = app.add_subcommand(
      "generate",
      "Generate images from a text prompt (txt2img), a picture (img2img) or repaint "
      "part of one (inpainting)");
  c->add_option(
      "-m,--model", a->model,
      "Model: an SD 1.5 or SDXL diffusers folder, single-file .safetensors checkpoint (LDM / "
      "SGM layout) or hyrt int8 file (default: the bundled shapes model, "
      "models/shapes-int8.safetensors, or $HYRT_MODEL)");
  c->add_option("--config-dir", a->config_dir,
                "Diffusers-layout folder with component configs and tokenizer/ (for single files)");
  c->add_option("-p,--prompt", a->prompt, "What to draw")->required();
  c->add_option("-n,--negative-prompt", a->negative,
                "What not to draw (guidance pushes away from it). Not given: SD 1.5 uses \"\"; "
                "SDXL models (force_zeros_for_empty_prompt) use zero negative conditioning, "
                "which differs from -n \"\"")
      ->each([a](const std::string&) { a->has_negative = true; });
  // Steps and the upper bound of -W/-H are checked with the model (validate_txt2img_params).
  c->add_option("--steps", a->steps, "Denoising steps")->capture_default_str();
  c->add_option("--cfg-scale", a->cfg_scale,
                "Classifier-free guidance scale, -100 to 100 (<= 1 disables guidance)")
      ->check(finite_range(-100.0, 100.0))
      ->capture_default_str();
  const auto hires_on = [a](const auto&) { a->has_hires = true; };
  c->add_option("--hires-scale", a->hires.scale,
                "Hires fix (A1111's): draw at -W x -H, resize the picture by this factor "
                "(Lanczos) and draw it again as img2img (default 2 with any --hires-* flag)")
      ->check(CLI::Range(1.0, 8.0))
      ->each(hires_on);
  c->add_option("--hires-upscaler", a->hires_upscaler,
                "Hires fix: Lanczos (the picture resized), Latent (the latents resized "
                "bilinearly, as A1111's default) or \"Latent (nearest)\"")
      ->each(hires_on)
      ->capture_default_str();
  c->add_option("--hires-width", a->hires.width,
                "Hires fix: the second pass's width instead of the scale (alone: keeps the aspect)")
      ->check(CLI::Range(8, 16384))
      ->each(hires_on);
  c->add_option("--hires-height", a->hires.height, "Hires fix: the second pass's height")
      ->check(CLI::Range(8, 16384))
      ->each(hires_on);
  c->add_option("--hires-steps", a->hires.steps,
                "Hires fix: the second pass's steps (default --steps); it runs steps x strength")
      ->check(CLI::Range(1, 10000))
      ->each(hires_on);
  c->add_option("--hires-strength", a->hires.strength,
                "Hires fix: the second pass's denoising strength in (0, 1] (default 0.7)")
      ->check(finite_range(0.0, 1.0))
      ->each(hires_on);
  c->add_option("--clip-skip", a->clip_skip,
                "A1111's Clip skip: condition on the text encoder's state N - 1 layers before its "
                "usual one (2 for the many SD 1.5 fine-tunes trained so); 1, 0 or -1: none")
      ->check(CLI::Range(-1, 64))
      ->capture_default_str();
  c->add_option(
       "-W,--width", a->width,
       "Image width in pixels, a multiple of 8 (default: the model's native size, 512 for SD 1.5, "
       "1024 for SDXL)")
      ->check(int64_in_range(0, std::numeric_limits<int>::max()));
  c->add_option("-H,--height", a->height,
                "Image height in pixels, a multiple of 8 (default: the model's native size)")
      ->check(int64_in_range(0, std::numeric_limits<int>::max()));
  c->add_option("-s,--seed", a->seed,
                "Random seed, 0 to 2^63-1 (-1: pick one); the same seed gives the same image")
      ->check(int64_in_range(-1, std::numeric_limits<int64_t>::max()))
      ->capture_default_str();
  c->add_option(
       "--sampler", a->sampler,
       "Sampler: euler_a, euler, heun (2 UNet calls per step), ddim, dpmpp_2m, dpmpp_2m_sde, lcm "
       "(LCM-LoRA and LCM models: 2-8 steps, --cfg-scale 1-2), and the Karras noise "
       "schedule as euler_a_karras, euler_karras, heun_karras, dpmpp_2m_karras, "
       "dpmpp_2m_sde_karras "
       "(A1111 names work too: \"DPM++ 2M Karras\"). Default euler_a, or lcm for a model whose "
       "scheduler config is LCMScheduler")
      ->capture_default_str()
      ->each([a](const std::string&) { a->has_sampler = true; });
  c->add_option("-b,--batch-count", a->batch, "Images to generate in one batch, 1 to 64")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  c->add_option(
       "-o,--output", a->output,
       "Output PNG (batch: NAME_2.png, ... for the others); generation parameters are embedded")
      ->capture_default_str();
  c->add_option("-t,--threads", a->threads,
                "Host threads (default and 0: all cores; more than the machine has is capped)")
      ->check(CLI::Range(0, 1 << 20));
  c->add_option("--weights", a->weights,
                "stored: use the weights as the file stores them; int8: quantize 16/32-bit "
                "weights to 8-bit S (int8, per-row scale) on load")
      ->check(CLI::IsMember({"stored", "int8"}))
      ->capture_default_str();
  c->add_option("--original-size", a->original_size,
                "SDXL size conditioning: HEIGHT,WIDTH of the 'original' picture (default: the "
                "image size)")
      ->expected(2)
      ->delimiter(',')
      ->check(CLI::Range(1, 16384));
  c->add_option("--crop-top-left", a->crop_top_left,
                "SDXL crop conditioning: TOP,LEFT in pixels (default 0,0)")
      ->expected(2)
      ->delimiter(',')
      ->check(CLI::Range(0, 16384));
  c->add_option("--target-size", a->target_size,
                "SDXL size conditioning: HEIGHT,WIDTH of the target (default: the image size)")
      ->expected(2)
      ->delimiter(',')
      ->check(CLI::Range(1, 16384));
  c->add_option("--init-image", a->init_image,
                "img2img: start from this PNG, resized to -W/-H (default: its own size rounded "
                "down to a multiple of the VAE factor, 8)");
  c->add_option("--strength", a->strength,
                "img2img: how much of the picture is repainted, (0, 1]; steps x strength of the "
                "steps run (default 0.8)")
      ->check(finite_range(0.0, 1.0))
      ->each([a](const std::string&) { a->has_strength = true; });
  c->add_option("--mask", a->mask,
                "Inpainting: PNG mask, white = repaint, resized like --init-image (any model; "
                "an inpainting model also sees the mask)");
  c->add_option("--lora", a->loras,
                "LoRA file (kohya/A1111 or diffusers/PEFT .safetensors) with an optional "
                "multiplier, FILE or FILE:MULT (default 1); repeatable. Applied at run time "
                "beside the model's weights, which stay as stored (int8 stays int8)");
  c->add_option(
       "--taesd", a->taesd,
       "Decode with a TAESD decoder (a diffusers AutoencoderTiny folder or .safetensors, or "
       "taesd_decoder.safetensors: taesd for SD 1.x, taesdxl for SDXL) instead of the "
       "model's VAE: ~20x less work, a softer picture")
      ->check(CLI::ExistingPath);
  c->add_flag("--taesd-preview-only", a->taesd_preview_only,
              "Use the --taesd decoder for --preview tae only; the picture is decoded by the VAE");
  c->add_option("--preview", a->preview,
                "Live previews of the picture the model aims at, written to --preview-path "
                "while sampling: none, tae (decoded by the --taesd decoder: milliseconds) or vae "
                "(by the model's VAE: as long as the final decode each time)")
      ->check(CLI::IsMember({"none", "tae", "vae"}))
      ->capture_default_str();
  c->add_option("--preview-path", a->preview_path, "Where --preview writes its PNG")
      ->capture_default_str();
  c->add_option("--preview-interval", a->preview_interval,
                "Steps between --preview pictures (the last step always writes one)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  c->add_option("--lora-dir", a->lora_dir,
                "Folder where the prompt's <lora:NAME:MULT> tags find NAME.safetensors (default "
                "$HYRT_LORA_DIR); --lora also looks there")
      ->envname("HYRT_LORA_DIR");
  add_precision_option(c, &a->precision);
  add_int8_mode_option(c, &a->int8);
  add_placement_option(c, &a->placement);
  add_autotune_option(c, &a->autotune);
  c->callback([a] { run(*a); });
});

}  // namespace
}  // namespace hyrt::cli

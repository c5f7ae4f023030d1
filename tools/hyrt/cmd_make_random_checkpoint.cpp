// `hyrt make-random-checkpoint OUT.safetensors [--arch sd15|sdxl] [--size base|tiny]
//  [--seed N] [--dtype f16|f32|bf16] [--tokenizer DIR] [--tokenizer-2 DIR]`: writes an
// untrained model — SD 1.5 as an LDM single file (models/sd15/random_checkpoint.h), SDXL as
// an SGM single file (models/sdxl/random_checkpoint.h) — for benchmarks, memory
// measurements and quantization at real size without a download. Images it generates are
// noise.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "models/sd15/random_checkpoint.h"
#include "models/sd15/random_weights.h"
#include "models/sdxl/configs.h"
#include "models/sdxl/random_checkpoint.h"

namespace hyrt::cli {
namespace {

struct MakeRandomOptions {
  std::string out;
  uint64_t seed = 0;
  std::string dtype = "f16";
  std::string arch = "sd15";
  std::string size = "base";
  std::string tokenizer;
  std::string tokenizer_2;
};

void run_make_random(const MakeRandomOptions& opt) {
  using namespace models;
  const auto dtype = parse_dtype(opt.dtype);
  HYRT_CHECK(dtype && dtype_is_float(*dtype), kInvalidArgument,
             "--dtype: expected f16, f32 or bf16, got '", opt.dtype, "'");
  const bool sdxl = opt.arch == "sdxl";
  HYRT_CHECK(sdxl || opt.arch == "sd15", kInvalidArgument, "--arch: expected sd15 or sdxl, got '",
             opt.arch, "'");
  // `--size sd15` is what this command took before --arch existed: the SD 1.5 base size.
  const bool tiny = opt.size == "tiny";
  HYRT_CHECK(tiny || opt.size == "base" || (!sdxl && opt.size == "sd15"), kInvalidArgument,
             "--size: expected base or tiny", sdxl ? "" : " (or sd15, the same as base)", ", got '",
             opt.size, "'");
  HYRT_CHECK(sdxl || opt.tokenizer_2.empty(), kInvalidArgument,
             "--tokenizer-2: only SDXL (--arch sdxl) has a second tokenizer");
  // SDXL base: the counts are known before writing 7 GB, so a drift fails here, not after.
  if (sdxl && !tiny) sdxl::check_base_parameter_counts();

  ModelConfigs configs;
  if (sdxl) {
    configs = tiny ? sdxl::tiny_configs() : sdxl::base_configs();
  } else {
    configs.text_encoder = tiny ? sd15::tiny_clip_text_config() : ClipTextConfig{};
    configs.unet = tiny ? sd15::tiny_unet_config() : UNetConfig{};
    configs.vae = tiny ? sd15::tiny_vae_config() : VaeConfig{};
  }
  const char* arch_name = sdxl ? "SDXL" : "SD 1.5";
  std::printf("writing %s: %s %s size, %s, seed %llu (random weights: images will be noise)\n",
              opt.out.c_str(), arch_name, tiny ? "tiny" : "base",
              std::string(dtype_name(*dtype)).c_str(), static_cast<unsigned long long>(opt.seed));
  std::fflush(stdout);

  // On a terminal the line redraws in place; in a log, one line per quarter.
  const bool tty = isatty(2) != 0;
  int last_shown = -1;
  auto progress = [&](uint64_t done, uint64_t total) {
    const int pct = total ? static_cast<int>(done * 100 / total) : 100;
    if (tty ? pct == last_shown : pct / 25 == last_shown / 25 && last_shown >= 0) return;
    last_shown = pct;
    std::fprintf(stderr, "%swriting %.0f / %.0f MB (%d%%)%s", tty ? "\r" : "  ", done / 1e6,
                 total / 1e6, pct, tty ? "" : "\n");
    std::fflush(stderr);
  };
  const auto t0 = std::chrono::steady_clock::now();
  const RandomCheckpointSummary s =
      sdxl ? sdxl::write_random_sgm_checkpoint(opt.out, configs, opt.seed, *dtype, progress)
           : sd15::write_random_ldm_checkpoint(opt.out, *configs.text_encoder, *configs.unet,
                                               *configs.vae, opt.seed, *dtype, progress);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tty) std::fputc('\n', stderr);

  std::printf("  text encoder        %9.2f M parameters\n", s.text_encoder_parameters / 1e6);
  if (sdxl)
    std::printf("  second text encoder %9.2f M parameters\n", s.text_encoder_2_parameters / 1e6);
  std::printf("  UNet                %9.2f M parameters\n", s.unet_parameters / 1e6);
  std::printf("  VAE                 %9.2f M parameters (encoder included)\n",
              s.vae_parameters / 1e6);
  std::printf("  total               %9.2f M parameters (%lld)\n", s.total_parameters() / 1e6,
              static_cast<long long>(s.total_parameters()));
  if (sdxl && !tiny) {
    const sdxl::ParameterCounts written = {s.text_encoder_parameters, s.text_encoder_2_parameters,
                                           s.unet_parameters, s.vae_parameters};
    HYRT_CHECK(written == sdxl::kDiffusersBaseParameterCounts, kInternal,
               "the written file's parameter counts differ from diffusers' SDXL base (",
               written.total(), " vs ", sdxl::kDiffusersBaseParameterCounts.total(), ")");
    std::printf("  parameter counts match diffusers' SDXL base, component by component\n");
  }
  std::printf("wrote %zu tensors, %llu bytes (%.2f GiB) in %.1f s\n", s.tensors,
              static_cast<unsigned long long>(s.file_bytes), s.file_bytes / double(1ull << 30),
              secs);
  if (!opt.tokenizer.empty()) {
    const auto dest = copy_tokenizer_beside(opt.tokenizer, opt.out, "tokenizer");
    std::printf("tokenizer: %s (copied from %s)\n", dest.string().c_str(), opt.tokenizer.c_str());
  }
  if (!opt.tokenizer_2.empty()) {
    const auto dest = copy_tokenizer_beside(opt.tokenizer_2, opt.out, "tokenizer_2");
    std::printf("second tokenizer: %s (copied from %s)\n", dest.string().c_str(),
                opt.tokenizer_2.c_str());
  }
  if (opt.tokenizer.empty() || (sdxl && opt.tokenizer_2.empty()))
    std::printf(
        "hint: to generate with this file, pass --tokenizer DIR%s (CLIP tokenizer folders: "
        "vocab.json, merges.txt) to copy %s beside it, where hyrt looks for a single "
        "file's tokenizer%s\n",
        sdxl ? " and --tokenizer-2 DIR" : "",
        sdxl ? "them into tokenizer/ and tokenizer_2/" : "it into tokenizer/", sdxl ? "s" : "");
}

CommandRegistrar reg(80, [](CLI::App& app) {
  auto opt = std::make_shared<MakeRandomOptions>();
  auto* c = app.add_subcommand(
      "make-random-checkpoint",
      "Write an untrained (random-weight) model as a single .safetensors file (SD 1.5: LDM "
      "layout; SDXL: SGM layout), for benchmarks and memory measurements at real size "
      "without a download");
  c->add_option("OUT", opt->out, "Output .safetensors file")->required();
  c->add_option("--arch", opt->arch, "Architecture: sd15 or sdxl")
      ->check(CLI::IsMember({"sd15", "sdxl"}))
      ->capture_default_str();
  c->add_option("--size", opt->size,
                "base: the real sizes (SD 1.5 ~1.07 G parameters, SDXL base ~3.47 G); tiny: "
                "the small test sizes. sd15 is accepted as base for --arch sd15")
      ->check(CLI::IsMember({"base", "tiny", "sd15"}))
      ->capture_default_str();
  c->add_option("--seed", opt->seed, "Random seed (same seed, same bytes)")->capture_default_str();
  c->add_option("--dtype", opt->dtype, "Stored dtype: f16, f32 or bf16")
      ->check(CLI::IsMember({"f16", "f32", "bf16"}))
      ->capture_default_str();
  c->add_option("--tokenizer", opt->tokenizer,
                "CLIP tokenizer folder (vocab.json, merges.txt) to copy into tokenizer/ beside "
                "the output, where hyrt looks for a single file's tokenizer");
  c->add_option("--tokenizer-2", opt->tokenizer_2,
                "SDXL: the second text encoder's tokenizer folder, copied into tokenizer_2/ "
                "beside the output");
  c->callback([opt] { run_make_random(*opt); });
});

}  // namespace
}  // namespace hyrt::cli

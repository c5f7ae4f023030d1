// `hyrt make-random-checkpoint OUT.safetensors [--seed N] [--dtype f16|f32|bf16]
//  [--size sd15|tiny] [--tokenizer DIR]`: writes an untrained SD 1.5 model in the LDM
// single-file layout (models/sd15/random_checkpoint.h), for benchmarks and memory
// measurements at real size without a download. Images it generates are noise.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "commands.h"
#include "core/error.h"
#include "models/sd15/random_checkpoint.h"
#include "models/sd15/random_weights.h"

namespace hyrt::cli {
namespace {

struct MakeRandomOptions {
  std::string out;
  uint64_t seed = 0;
  std::string dtype = "f16";
  std::string size = "sd15";
  std::string tokenizer;
};

void run_make_random(const MakeRandomOptions& opt) {
  using namespace models;
  using namespace models::sd15;
  const auto dtype = parse_dtype(opt.dtype);
  HYRT_CHECK(dtype && dtype_is_float(*dtype), kInvalidArgument,
             "--dtype: expected f16, f32 or bf16, got '", opt.dtype, "'");
  const bool tiny = opt.size == "tiny";
  HYRT_CHECK(tiny || opt.size == "sd15", kInvalidArgument, "--size: expected sd15 or tiny, got '",
             opt.size, "'");
  const ClipTextConfig clip = tiny ? tiny_clip_text_config() : ClipTextConfig{};
  const UNetConfig unet = tiny ? tiny_unet_config() : UNetConfig{};
  const VaeConfig vae = tiny ? tiny_vae_config() : VaeConfig{};

  std::printf("writing %s: %s size, %s, seed %llu (random weights: images will be noise)\n",
              opt.out.c_str(), tiny ? "tiny" : "SD 1.5", std::string(dtype_name(*dtype)).c_str(),
              static_cast<unsigned long long>(opt.seed));
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
      write_random_ldm_checkpoint(opt.out, clip, unet, vae, opt.seed, *dtype, progress);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tty) std::fputc('\n', stderr);

  const int64_t total = s.text_encoder_parameters + s.unet_parameters + s.vae_parameters;
  std::printf("  text encoder %9.2f M parameters\n", s.text_encoder_parameters / 1e6);
  std::printf("  UNet         %9.2f M parameters\n", s.unet_parameters / 1e6);
  std::printf("  VAE          %9.2f M parameters (encoder included)\n", s.vae_parameters / 1e6);
  std::printf("  total        %9.2f M parameters\n", total / 1e6);
  std::printf("wrote %zu tensors, %llu bytes (%.2f GiB) in %.1f s\n", s.tensors,
              static_cast<unsigned long long>(s.file_bytes), s.file_bytes / double(1ull << 30),
              secs);
  if (!opt.tokenizer.empty()) {
    const auto dest = copy_tokenizer_beside(opt.tokenizer, opt.out);
    std::printf("tokenizer: %s (copied from %s)\n", dest.string().c_str(), opt.tokenizer.c_str());
  }
}

CommandRegistrar reg(80, [](CLI::App& app) {
  auto opt = std::make_shared<MakeRandomOptions>();
  auto* c = app.add_subcommand(
      "make-random-checkpoint",
      "Write an untrained (random-weight) SD 1.5 model as an LDM single .safetensors file, for "
      "benchmarks and memory measurements at real size without a download");
  c->add_option("OUT", opt->out, "Output .safetensors file")->required();
  c->add_option("--seed", opt->seed, "Random seed (same seed, same bytes)")->capture_default_str();
  c->add_option("--dtype", opt->dtype, "Stored dtype: f16, f32 or bf16")
      ->check(CLI::IsMember({"f16", "f32", "bf16"}))
      ->capture_default_str();
  c->add_option("--size", opt->size,
                "sd15: the real SD 1.5 sizes (~1.07 G parameters); tiny: the small test sizes")
      ->check(CLI::IsMember({"sd15", "tiny"}))
      ->capture_default_str();
  c->add_option("--tokenizer", opt->tokenizer,
                "CLIP tokenizer folder (vocab.json, merges.txt) to copy into tokenizer/ beside "
                "the output, where hyrt looks for a single file's tokenizer");
  c->callback([opt] { run_make_random(*opt); });
});

}  // namespace
}  // namespace hyrt::cli

// `hyrt parity GOLDEN_DIR` — recompute a golden folder and compare (pipeline/parity.h).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "pipeline/parity.h"
#include "pipeline/precision.h"

namespace hyrt::cli {
namespace {

struct ParityArgs {
  std::string golden_dir;
  int threads = 0;
  bool no_taps = false;
  bool int8 = false;
  double int8_tolerance = 0;  // 0: the target of the int8 mode
  Int8Choice int8_choice;
  std::string precision = "f32";
  std::vector<std::string> keep;
  std::string placement = "auto";
  std::vector<std::string> layouts = {"folder", "single"};
};

void run(const ParityArgs& a) {
  const pipeline::PrecisionSettings ps =
      pipeline::precision_settings(pipeline::parse_precision(a.precision));
  const bool int8 = a.int8 || ps.quantize_int8;
  // --int8 means W8A8 unless --int8-mode says otherwise (as before --precision existed).
  const backend::Int8Mode int8_mode =
      a.int8_choice.mode_or(a.int8 ? backend::Int8Mode::kW8A8 : ps.int8_mode);
  exec::EngineOptions eo;
  eo.num_threads = a.threads;
  eo.int8_mode = int8_mode;
  eo.float_precision = ps.float_precision;
  eo.placement = plan::parse_placement_mode(a.placement);
  exec::Engine engine(eo);
  std::printf("host products: %s\n", backend::float_precision_name(engine.host_float_precision()));
  std::printf("accelerator: %s\n", engine.accelerator_status().c_str());
  pipeline::ParityOptions o;
  o.golden_dir = a.golden_dir;
  o.taps = !a.no_taps;
  o.diffusers_folder = std::find(a.layouts.begin(), a.layouts.end(), "folder") != a.layouts.end();
  o.single_file = std::find(a.layouts.begin(), a.layouts.end(), "single") != a.layouts.end();
  o.model.quantize_int8 = int8;
  o.reduced_precision = engine.accelerator() != nullptr ||
                        engine.host_float_precision() == backend::FloatPrecision::kBF16;
  o.model.quantize_policy.keep = a.keep;
  o.model.vae_int8_mode = a.int8_choice.vae_mode();
  o.int8_unet_tolerance = a.int8_tolerance > 0                    ? a.int8_tolerance
                          : int8_mode == backend::Int8Mode::kW8A8 ? 5e-2
                                                                  : 2e-2;
  o.on_item = [](const pipeline::ParityItem& it) {
    std::printf("%-4s %-62s rel_l2 %.3e  (tol %.0e)",
                it.informational ? "info" : (it.pass ? "ok" : "FAIL"), it.name.c_str(), it.error,
                it.tolerance);
    if (it.psnr_db > 0) std::printf("  PSNR %.1f dB", it.psnr_db);
    std::printf("\n");
    std::fflush(stdout);
  };
  const auto items = pipeline::run_parity(o, engine);
  int failed = 0, counted = 0;
  for (const auto& it : items) {
    if (it.informational) continue;
    ++counted;
    if (!it.pass) ++failed;
  }
  std::printf("parity: %d of %d items passed\n", counted - failed, counted);
  HYRT_CHECK(failed == 0 && counted > 0, kInvalidModel, failed, " of ", counted,
             " parity items failed (see the FAIL lines above)");
}

CommandRegistrar reg(30, [](CLI::App& app) {
  auto args = std::make_shared<ParityArgs>();
  auto* c = app.add_subcommand(
      "parity",
      "Recompute every item of a golden folder (diffusers/transformers reference outputs) and "
      "compare: one line per item with its relative L2 error; exits non-zero if any fails");
  c->add_option("GOLDEN_DIR", args->golden_dir,
                "Folder with golden.safetensors, model/ and optionally model-ldm.safetensors")
      ->required()
      ->check(CLI::ExistingDirectory);
  c->add_option("-t,--threads", args->threads, "Host threads (default: all cores)")
      ->check(CLI::Range(0, 1 << 20));
  c->add_flag("--no-taps", args->no_taps, "Skip the per-block UNet comparisons");
  c->add_option("--layouts", args->layouts,
                "Which checkpoint layouts to check: folder (model/), single (the LDM/SGM file "
                "beside it, with model/'s configs and tokenizers); default both")
      ->delimiter(',')
      ->check(CLI::IsMember({"folder", "single"}));
  c->add_flag("--int8", args->int8,
              "Quantize the weights to 8-bit S on load and report the errors against the f32 "
              "reference (the UNet output is held to --int8-tolerance)");
  c->add_option("--int8-tolerance", args->int8_tolerance,
                "UNet relative L2 target with --int8 (default: the mode's target, w8a8 5e-2, "
                "w8 2e-2)");
  add_int8_mode_option(c, &args->int8_choice);
  c->add_option("--precision", args->precision,
                "Arithmetic to check (pipeline/precision.h): f32 (default; the 1e-4 / 1e-3 "
                "tolerances), bf16 (host products on bf16 operands; model outputs held to 1e-2), "
                "int8 (as --int8, float products in bf16), auto")
      ->transform(CLI::IsMember({"auto", "f32", "bf16", "int8"}, CLI::ignore_case))
      ->capture_default_str();
  add_placement_option(c, &args->placement);  // with a GPU: f16 tolerances (1e-2)
  c->add_option("--keep", args->keep,
                "With --int8: keep weights whose name matches PATTERN in 16/32-bit (repeatable; "
                "'*' and '?' wildcards, or a substring such as attn2), to measure which layers "
                "the error comes from");
  c->callback([args] { run(*args); });
});

}  // namespace
}  // namespace hyrt::cli

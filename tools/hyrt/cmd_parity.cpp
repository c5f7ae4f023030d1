// `hyrt parity GOLDEN_DIR` — recompute a golden folder and compare (pipeline/parity.h).
#include <cstdio>

#include "commands.h"
#include "core/error.h"
#include "pipeline/parity.h"

namespace hyrt::cli {
namespace {

struct ParityArgs {
  std::string golden_dir;
  int threads = 0;
  bool no_taps = false;
};

void run(const ParityArgs& a) {
  exec::EngineOptions eo;
  eo.num_threads = a.threads;
  exec::Engine engine(eo);
  pipeline::ParityOptions o;
  o.golden_dir = a.golden_dir;
  o.taps = !a.no_taps;
  o.on_item = [](const pipeline::ParityItem& it) {
    std::printf("%-4s %-62s rel_l2 %.3e  (tol %.0e)%s\n",
                it.informational ? "info" : (it.pass ? "ok" : "FAIL"), it.name.c_str(), it.error,
                it.tolerance, it.informational ? "" : "");
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
  c->add_option("-t,--threads", args->threads, "Host threads (default: all cores)");
  c->add_flag("--no-taps", args->no_taps, "Skip the per-block UNet comparisons");
  c->callback([args] { run(*args); });
});

}  // namespace
}  // namespace hyrt::cli

// hyrt — command-line entry point. Flag parsing and printing only: the work lives in the
// library. Subcommands are in cmd_*.cpp and register through commands.h.
#include <algorithm>
#include <cstdio>
#include <map>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"

namespace hyrt::cli {

static std::vector<std::pair<int, CommandSetup>>& registry() {
  static std::vector<std::pair<int, CommandSetup>> r;
  return r;
}

CommandRegistrar::CommandRegistrar(int order, CommandSetup setup) {
  registry().emplace_back(order, std::move(setup));
}

backend::Int8Mode Int8Choice::mode() const {
  return index == 1 ? backend::Int8Mode::kW8 : backend::Int8Mode::kW8A8;
}

backend::Int8Mode Int8Choice::mode_or(backend::Int8Mode implied) const {
  return option && option->count() > 0 ? mode() : implied;
}

std::optional<backend::Int8Mode> Int8Choice::vae_mode() const {
  return index == 2 ? backend::Int8Mode::kW8A8 : backend::Int8Mode::kW8;
}

void add_int8_mode_option(CLI::App* command, Int8Choice* choice) {
  const std::map<std::string, int> names = {{"w8a8", 0}, {"w8", 1}, {"w8a8-all", 2}};
  choice->option =
      command
          ->add_option(
              "--int8-mode", choice->index,
              "How 8-bit S (int8) weights run on the CPU, overriding what --precision "
              "implies: w8a8 = text encoder and UNet quantize activations per row too (int8 "
              "x int8 GEMMs, fastest), VAE decoder weight-only; w8 = everything weight-only "
              "(float activations, most accurate); w8a8-all = the VAE decoder W8A8 too "
              "(fastest decode, visible noise on flat areas)")
          ->transform(CLI::CheckedTransformer(names, CLI::ignore_case))
          ->default_str("w8a8; w8 under --precision f32 or bf16");
}

void add_precision_option(CLI::App* command, std::string* precision) {
  command
      ->add_option("--precision", *precision,
                   "Arithmetic: f32 (the reference; int8 weights weight-only); bf16 (products on "
                   "bf16 operands, f32 accumulation, where the CPU has AVX-512 BF16 or AMX); "
                   "int8 (16/32-bit weights quantized to 8-bit S on load, int8 x int8 GEMMs in "
                   "the text encoder and UNet, the rest as bf16); auto (int8 files as int8, "
                   "float ones as bf16, nothing quantized on load). The GPU keeps f16 under f32 "
                   "and bf16.")
      ->transform(CLI::IsMember({"auto", "f32", "bf16", "int8"}, CLI::ignore_case))
      ->default_str("auto");
}

void add_placement_option(CLI::App* command, std::string* placement) {
  command
      ->add_option("--placement", *placement,
                   "Where nodes run: host; hybrid (linear, convolution and attention on the GPU, "
                   "the rest on the host, copies at each cut); device (everything on the GPU); "
                   "auto (a cost model picks, and falls back to the host without a usable GPU)")
      ->check(CLI::IsMember({"host", "hybrid", "device", "auto"}))
      ->default_str("auto");
}

void add_autotune_option(CLI::App* command, bool* autotune) {
  command->add_flag("--autotune", *autotune,
                    "Time the GPU's GEMM candidates for each new shape (slower first step; the "
                    "choices are kept in the disk cache, $HYRT_CACHE_DIR or ~/.cache/hyrt)");
}

}  // namespace hyrt::cli

int main(int argc, char** argv) {
  CLI::App app{"hyrt " HYRT_VERSION_STRING
               " — a diffusion-model inference runtime (Stable Diffusion 1.5 and SDXL).\n"
               "Run `hyrt COMMAND --help` for a command's options."};
  app.require_subcommand(1);
  app.fallthrough();  // `hyrt generate --verbose` as well as `hyrt --verbose generate`
  app.set_version_flag("--version", "hyrt " HYRT_VERSION_STRING);
  int verbose = 0;  // how many times -v was given
  app.add_flag("-v,--verbose", verbose,
               "Print progress details and diagnostics (-vv: also debug details, e.g. each "
               "GEMM program's measured candidates)");
  app.parse_complete_callback([&] {
    if (verbose >= 2)
      hyrt::set_log_level(hyrt::LogLevel::kDebug);
    else if (verbose == 1)
      hyrt::set_log_level(hyrt::LogLevel::kInfo);
  });

  auto& reg = hyrt::cli::registry();
  std::stable_sort(reg.begin(), reg.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, setup] : reg)
    setup(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; a bad flag or value is a usage error: 2, as other tools.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const hyrt::Error& e) {
    std::fprintf(stderr, "hyrt: error (%s): %s\n", hyrt::error_code_name(e.code()), e.what());
    if (e.code() == hyrt::ErrorCode::kOutOfMemory)
      std::fprintf(stderr,
                   "hyrt: try a smaller image (-W/-H), fewer images (-b) or "
                   "--weights int8, or free memory\n");
    return 1;
  } catch (const std::bad_alloc&) {
    // Allocations hyrt sizes itself (arenas, tensors, weights, pictures) fail as hyrt::Error
    // naming what and how much; this is a small one inside a library or a container, so the
    // process was already at its limit.
    std::fprintf(stderr,
                 "hyrt: error (out of memory): the system refused a memory allocation (peak "
                 "memory use was %.0f MiB; check `ulimit -v` and free memory). Try a smaller "
                 "image (-W/-H), fewer images (-b) or --weights int8\n",
                 hyrt::peak_rss_bytes() / 1048576.0);
    return 1;
  } catch (const std::length_error& e) {
    std::fprintf(stderr, "hyrt: error (out of memory): a size is too large (%s)\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hyrt: error: %s\n", e.what());
    return 1;
  }
  return 0;
}

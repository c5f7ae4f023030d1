// `hyrt selfcheck` — system report plus an end-to-end run of a small random-weight model
// of the SD 1.5 architecture (pipeline/selfcheck.h). Needs no model file.
#include <cstdio>

#include "commands.h"
#include "core/build_info.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/sysinfo.h"
#include "pipeline/selfcheck.h"
#ifdef HYRT_HAVE_CUDA
#include "backend/cuda/cuda_device.h"
#endif

namespace hyrt::cli {
namespace {

void run(int threads) {
  exec::EngineOptions eo;
  eo.num_threads = threads;
  exec::Engine engine(eo);
  const HostCpu host = host_cpu();
  std::printf("hyrt %s self-check\n", HYRT_VERSION_STRING);
  std::printf("  host    %s, %d logical cores, %d threads used\n", host.model.c_str(),
              host.logical_cores, num_threads());
  std::printf("  isa     %s\n  gemm    %s\n", host.isa.c_str(), engine.host().library().c_str());
#ifdef HYRT_HAVE_CUDA
  std::string why;
  const auto devices = backend::cuda::list_devices(&why);
  std::printf("  cuda    %s; ", backend::cuda::runtime_version_string().c_str());
  if (devices.empty()) std::printf("no device (%s)\n", why.c_str());
  for (const auto& d : devices)
    std::printf("[%d] %s, sm_%d%d, %.1f GiB\n", d.index, d.name.c_str(), d.compute_major,
                d.compute_minor, d.total_memory / double(1 << 30));
#else
  std::printf("  cuda    not built (no CUDA toolkit at build time)\n");
#endif
  int failed = 0;
  for (const auto& s : pipeline::run_selfcheck(engine)) {
    std::printf("  %-4s %-42s %7.1f ms  %s\n", s.ok ? "ok" : "FAIL", s.name.c_str(), s.ms,
                s.detail.c_str());
    failed += !s.ok;
  }
  HYRT_CHECK(failed == 0, kInternal, "self-check failed");
  std::printf("self-check passed\n");
}

CommandRegistrar reg(90, [](CLI::App& app) {
  auto threads = std::make_shared<int>(0);
  auto* c = app.add_subcommand(
      "selfcheck",
      "Report the host (CPU, ISA, GEMM library, CUDA devices) and run a small random-weight "
      "SD 1.5-architecture model end to end; needs no model file");
  c->add_option("-t,--threads", *threads, "Host threads (default: all cores)")
      ->check(CLI::Range(0, 1 << 20));
  c->callback([threads] { run(*threads); });
});

}  // namespace
}  // namespace hyrt::cli

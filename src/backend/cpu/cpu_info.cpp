#include "backend/cpu/cpu_info.h"

#include <dnnl.hpp>
#include <fstream>

#include "core/error.h"
#include "core/parallel.h"

namespace hyrt::backend {

HostInfo host_info() {
  HostInfo h;
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) h.cpu_model = line.substr(colon + 2);
      break;
    }
  }
  h.logical_cores = hardware_threads();
  __builtin_cpu_init();
  struct Feature {
    const char* name;
    bool on;
  };
  const Feature features[] = {
      {"avx2", __builtin_cpu_supports("avx2") != 0},
      {"fma", __builtin_cpu_supports("fma") != 0},
      {"avx512f", __builtin_cpu_supports("avx512f") != 0},
      {"avx512bw", __builtin_cpu_supports("avx512bw") != 0},
      {"avx512_vnni", __builtin_cpu_supports("avx512vnni") != 0},
      {"avx512_bf16", __builtin_cpu_supports("avx512bf16") != 0},
  };
  for (const auto& ft : features)
    if (ft.on) h.isa += (h.isa.empty() ? "" : " ") + std::string(ft.name);
  const dnnl_version_t* v = dnnl_version();
  const char* runtime = v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other";
  h.onednn = str_cat("oneDNN ", v->major, ".", v->minor, ".", v->patch, " (", runtime, ")");
  return h;
}

}  // namespace hyrt::backend

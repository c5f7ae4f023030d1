// What the host CPU is and offers, for reports and benchmark JSON.
#pragma once

#include <string>

namespace hyrt::backend {

struct HostInfo {
  std::string cpu_model;  // /proc/cpuinfo "model name"
  int logical_cores = 0;  // usable by this process
  std::string isa;        // "avx2 fma f16c avx512f avx512bw avx512_vnni avx512_bf16 amx"
  std::string onednn;     // "oneDNN 2.6.3 (OpenMP)"
};

HostInfo host_info();

}  // namespace hyrt::backend

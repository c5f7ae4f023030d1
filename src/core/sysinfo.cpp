#include "core/sysinfo.h"

#include <sys/resource.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <fstream>
#include <utility>

#include "core/parallel.h"

namespace hyrt {

int64_t peak_rss_bytes() {
  rusage u{};
  if (getrusage(RUSAGE_SELF, &u) != 0) return 0;
  return static_cast<int64_t>(u.ru_maxrss) * 1024;  // Linux reports KiB
}

int64_t current_rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(f >> size >> resident)) return 0;
  return resident * sysconf(_SC_PAGESIZE);
}

int64_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

void return_free_heap_to_system() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

namespace {

// CPUID leaf 7's EDX bit: AVX512-FP16 and the AMX tiles, asked directly because not every
// compiler's __builtin_cpu_supports knows their names (clang 14 does not).
bool leaf7_edx_bit(int bit) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return ((edx >> bit) & 1u) != 0;
#else
  (void)bit;
  return false;
#endif
}

}  // namespace

HostCpu host_cpu() {
  HostCpu h;
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) h.model = line.substr(colon + 2);
      break;
    }
  }
  h.logical_cores = hardware_threads();
  __builtin_cpu_init();
  const std::pair<const char*, bool> features[] = {
      {"avx2", __builtin_cpu_supports("avx2") != 0},
      {"fma", __builtin_cpu_supports("fma") != 0},
      {"avx512f", __builtin_cpu_supports("avx512f") != 0},
      {"avx512bw", __builtin_cpu_supports("avx512bw") != 0},
      {"avx512_vnni", __builtin_cpu_supports("avx512vnni") != 0},
      {"avx512_bf16", __builtin_cpu_supports("avx512bf16") != 0},
      {"avx512_fp16", leaf7_edx_bit(23)},
      {"amx_bf16", leaf7_edx_bit(22)},
      {"amx_int8", leaf7_edx_bit(25)},
  };
  for (const auto& [name, on] : features)
    if (on) h.isa += (h.isa.empty() ? "" : " ") + std::string(name);
  return h;
}

}  // namespace hyrt

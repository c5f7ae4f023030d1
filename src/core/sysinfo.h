// Process resource figures and what the host is, for reports and benchmarks (Linux).
#pragma once

#include <cstdint>
#include <string>

namespace hyrt {

// Peak resident set size of this process so far, in bytes (getrusage).
int64_t peak_rss_bytes();
// Current resident set size, in bytes (/proc/self/statm); 0 if unavailable.
int64_t current_rss_bytes();
// Physical memory of the machine, in bytes (sysconf); 0 if unavailable.
int64_t physical_memory_bytes();
// Hands the C heap's free pages back to the system (glibc malloc_trim; a no-op elsewhere):
// after a large part of the process is freed (a model stage), so the resident set falls with
// it instead of staying at its high-water mark.
void return_free_heap_to_system();

// What the host CPU is, for reports and benchmark JSON (the compute library each backend uses
// is Backend::library()).
struct HostCpu {
  std::string model;      // /proc/cpuinfo "model name"
  int logical_cores = 0;  // usable by this process
  std::string isa;        // e.g. "avx2 fma avx512f ... avx512_bf16 avx512_fp16 amx_bf16 amx_int8"
};
HostCpu host_cpu();

}  // namespace hyrt

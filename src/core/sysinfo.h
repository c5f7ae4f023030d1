// Process resource figures for reports and benchmarks (Linux).
#pragma once

#include <cstdint>

namespace hyrt {

// Peak resident set size of this process so far, in bytes (getrusage).
int64_t peak_rss_bytes();
// Current resident set size, in bytes (/proc/self/statm); 0 if unavailable.
int64_t current_rss_bytes();

}  // namespace hyrt

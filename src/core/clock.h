// Wall-clock timing for logs and benchmarks: one monotonic clock and its milliseconds.
#pragma once

#include <chrono>

namespace hyrt {

using Clock = std::chrono::steady_clock;

// Milliseconds from `a` to `b`.
inline double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Milliseconds from `t0` to now.
inline double ms_since(Clock::time_point t0) {
  return ms_between(t0, Clock::now());
}

}  // namespace hyrt

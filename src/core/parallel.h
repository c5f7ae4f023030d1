// Host threading. hyrt's own kernels and oneDNN share one OpenMP thread team (Debian's
// oneDNN is built with GNU OpenMP), so the two never oversubscribe the cores.
#pragma once

#include <cstdint>
#include <functional>

namespace hyrt {

// Sets the number of host threads for hyrt kernels and oneDNN. n <= 0 means "all cores"; more
// than hardware_threads() is capped to it (logged at kInfo).
void set_num_threads(int n);
int num_threads();
// Number of hardware threads the process may use.
int hardware_threads();

// Runs fn(begin, end) over [0, n) split into contiguous chunks of at least `grain` items,
// on the OpenMP team. fn must be safe to call concurrently on disjoint ranges. If fn throws,
// the other chunks still finish and the first exception is rethrown on the caller's thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace hyrt

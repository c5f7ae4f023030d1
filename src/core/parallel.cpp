#include "core/parallel.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <thread>

#include "core/log.h"

namespace hyrt {

int hardware_threads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

void set_num_threads(int n) {
  // More threads than cores only oversubscribes, and each OpenMP thread reserves a stack:
  // tens of thousands of them exhaust the address space. Cap to what the process may use.
  const int cores = hardware_threads();
  static std::atomic<int> last_capped{0};  // say it once, not at every engine or stage
  if (n > cores && last_capped.exchange(n) != n)
    HYRT_LOG(kInfo) << "threads: " << n << " asked for, the machine gives this process " << cores
                    << ": using " << cores;
  omp_set_num_threads(n > 0 ? std::min(n, cores) : cores);
}

int num_threads() {
  return omp_get_max_threads();
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int threads = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (threads <= 1 || omp_in_parallel()) {
    fn(0, n);
    return;
  }
  // An exception must not leave an OpenMP region (the runtime calls std::terminate): the
  // first one thrown is kept and rethrown on the calling thread once every thread is done.
  std::exception_ptr error;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num();
    const int64_t nt = omp_get_num_threads();
    const int64_t begin = n * t / nt;
    const int64_t end = n * (t + 1) / nt;
    try {
      if (begin < end) fn(begin, end);
    } catch (...) {
      if (!failed.exchange(true)) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace hyrt

// Checked host allocations outside AlignedBuffer: vectors, strings and containers sized by
// input (decoded pictures, weight conversions, quantizer rows, file contents). A failed
// allocation (std::bad_alloc, or std::length_error for a size past max_size()) becomes
// hyrt::Error(kOutOfMemory) naming what was being allocated and how many bytes, so it reaches
// the user as a message rather than a bare "std::bad_alloc". Header-only, so the fuzz targets'
// instrumented copies of the parsers need no extra source.
//
// Thread safety: free functions without state. Inside an OpenMP region use them only under
// parallel_for (core/parallel.h), which carries an exception out of the region.
#pragma once

#include <cstdint>
#include <cstdio>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace hyrt {

// "3.0 GiB (3221225472 bytes)", "12.5 MiB (13107200 bytes)", "512 bytes".
inline std::string format_bytes(uint64_t bytes) {
  constexpr const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " bytes";
  double v = static_cast<double>(bytes) / 1024.0;
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f %s (%llu bytes)", v, units[u],
                static_cast<unsigned long long>(bytes));
  return buf;
}

// Throws hyrt::Error(kOutOfMemory): "out of memory allocating <bytes> for <what>".
[[noreturn]] inline void fail_out_of_memory(std::string_view what, uint64_t bytes) {
  fail(ErrorCode::kOutOfMemory, "out of memory allocating ", format_bytes(bytes), " for ", what);
}

// n * size, saturating at UINT64_MAX (a size that large cannot be allocated anyway).
inline uint64_t bytes_of(uint64_t n, uint64_t size) {
  uint64_t r;
  return __builtin_mul_overflow(n, size, &r) ? UINT64_MAX : r;
}

// Calls make() and returns what it returns; a std::bad_alloc or std::length_error thrown by it
// becomes kOutOfMemory naming `what` and `bytes` (what make() was asked to allocate).
template <class F>
decltype(auto) checked_alloc(std::string_view what, uint64_t bytes, F&& make) {
  try {
    return make();
  } catch (const std::bad_alloc&) {
    fail_out_of_memory(what, bytes);
  } catch (const std::length_error&) {
    fail_out_of_memory(what, bytes);
  }
}

// A vector of n value-initialised T (or copies of `fill`).
template <class T>
std::vector<T> checked_vector(size_t n, std::string_view what, const T& fill = T()) {
  return checked_alloc(what, bytes_of(n, sizeof(T)), [&] { return std::vector<T>(n, fill); });
}

// v.resize(n) (new elements copies of `fill`).
template <class T>
void checked_resize(std::vector<T>& v, size_t n, std::string_view what, const T& fill = T()) {
  checked_alloc(what, bytes_of(n, sizeof(T)), [&] { v.resize(n, fill); });
}

// v.reserve(n).
template <class C>
void checked_reserve(C& v, size_t n, std::string_view what) {
  checked_alloc(what, bytes_of(n, sizeof(typename C::value_type)), [&] { v.reserve(n); });
}

}  // namespace hyrt

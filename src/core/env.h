// Reading hyrt's environment switches (HYRT_* variables that pick a form for comparison).
// Thread safety: reads the environment; call it once and keep the answer (the callers keep it
// in a function-local static), not while another thread may change the environment.
#pragma once

#include <cstdlib>
#include <optional>
#include <string_view>

namespace hyrt {

// Whether environment variable `name` is set to exactly `value`.
inline bool env_is(const char* name, std::string_view value) {
  const char* v = std::getenv(name);
  return v && std::string_view(v) == value;
}

// The whole number environment variable `name` holds when it is one in [lo, hi]; nullopt when
// it is unset or holds anything else.
inline std::optional<long> env_int(const char* name, long lo, long hi) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < lo || n > hi) return std::nullopt;
  return n;
}

}  // namespace hyrt

// Reading hyrt's environment switches (HYRT_* variables that pick a form for comparison).
// Thread safety: reads the environment; call it once and keep the answer (the callers keep it
// in a function-local static), not while another thread may change the environment.
#pragma once

#include <cstdlib>
#include <string_view>

namespace hyrt {

// Whether environment variable `name` is set to exactly `value`.
inline bool env_is(const char* name, std::string_view value) {
  const char* v = std::getenv(name);
  return v && std::string_view(v) == value;
}

}  // namespace hyrt

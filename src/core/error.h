// Error helpers used throughout hyrt: build a message from pieces and throw hyrt::Error.
#pragma once

#include <sstream>
#include <string>
#include <utility>

#include "hyrt/error.h"

namespace hyrt {

// Concatenates anything streamable into one string: str_cat("node ", id, ": ", msg).
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(ErrorCode code, Args&&... args) {
  throw Error(code, str_cat(std::forward<Args>(args)...));
}

}  // namespace hyrt

// HYRT_CHECK(cond, code, message pieces...) — throws hyrt::Error(code, message) if !cond.
#define HYRT_CHECK(cond, code, ...)                       \
  do {                                                    \
    if (!(cond)) ::hyrt::fail(::hyrt::ErrorCode::code, __VA_ARGS__); \
  } while (0)

// HYRT_ASSERT(cond, message pieces...) — an internal invariant; failure is a bug in hyrt.
#define HYRT_ASSERT(cond, ...)                                                          \
  do {                                                                                  \
    if (!(cond))                                                                        \
      ::hyrt::fail(::hyrt::ErrorCode::kInternal, __FILE__, ":", __LINE__, ": assertion `", \
                   #cond, "` failed: ", ##__VA_ARGS__);                                 \
  } while (0)

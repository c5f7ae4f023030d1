// Minimal leveled logging to stderr. Thread-safe (one write per message).
//   HYRT_LOG(kInfo) << "loaded " << n << " tensors";
#pragma once

#include <sstream>

namespace hyrt {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kSilent = 4 };

void set_log_level(LogLevel level);
LogLevel log_level();

class LogMessage {
 public:
  explicit LogMessage(LogLevel level) : level_(level) {}
  ~LogMessage();
  template <class T>
  LogMessage& operator<<(const T& v) {
    os_ << v;
    return *this;
  }

 private:
  LogLevel level_;
  std::ostringstream os_;
};

}  // namespace hyrt

#define HYRT_LOG(level)                                           \
  if (::hyrt::LogLevel::level < ::hyrt::log_level()) {            \
  } else                                                          \
    ::hyrt::LogMessage(::hyrt::LogLevel::level)

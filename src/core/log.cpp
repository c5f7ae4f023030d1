#include "core/log.h"

#include <atomic>
#include <cstdio>

namespace hyrt {

static std::atomic<LogLevel> g_level{LogLevel::kWarning};

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

LogMessage::~LogMessage() {
  static const char* names[] = {"debug", "info", "warning", "error", ""};
  std::string s = std::string("hyrt ") + names[static_cast<int>(level_)] + ": " + os_.str() + "\n";
  std::fputs(s.c_str(), stderr);
}

}  // namespace hyrt

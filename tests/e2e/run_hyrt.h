// Runs the built `hyrt` binary as a user would, for the end-to-end tests.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace hyrt::test {

struct HyrtRun {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

// `args` is appended to the binary's path and run through the shell (quote as needed).
inline HyrtRun run_hyrt(const std::string& args) {
  const std::string cmd = std::string(HYRT_BINARY_DIR) + "/tools/hyrt " + args + " 2>&1";
  HyrtRun r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0)
    r.output.append(buf.data(), n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace hyrt::test

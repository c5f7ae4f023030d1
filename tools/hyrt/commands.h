// The hyrt CLI's subcommands register themselves here: each tools/hyrt/cmd_*.cpp defines
// a static CommandRegistrar whose setup function adds a CLI11 subcommand and its callback.
// Callbacks report failure by throwing hyrt::Error; main() prints it and exits non-zero.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "backend/cpu/cpu_backend.h"

namespace hyrt::cli {

using CommandSetup = std::function<void(CLI::App& app)>;

struct CommandRegistrar {
  // `order` sorts subcommands in --help.
  CommandRegistrar(int order, CommandSetup setup);
};

// Adds `--int8-mode w8a8|w8` (how the host runs 8-bit S weights) writing to `mode`.
void add_int8_mode_option(CLI::App* command, backend::Int8Mode* mode);

}  // namespace hyrt::cli

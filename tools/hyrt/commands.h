// The hyrt CLI's subcommands register themselves here: each tools/hyrt/cmd_*.cpp defines
// a static CommandRegistrar whose setup function adds a CLI11 subcommand and its callback.
// Callbacks report failure by throwing hyrt::Error; main() prints it and exits non-zero.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "backend/backend.h"

namespace hyrt::cli {

using CommandSetup = std::function<void(CLI::App& app)>;

struct CommandRegistrar {
  // `order` sorts subcommands in --help.
  CommandRegistrar(int order, CommandSetup setup);
};

// `--int8-mode`: how the host runs 8-bit S weights.
//   w8a8      text encoder and UNet W8A8, VAE decoder weight-only (the default)
//   w8        everything weight-only
//   w8a8-all  everything W8A8, the VAE decoder too (fastest decode; flat areas get
//             visible quantization noise)
struct Int8Choice {
  int index = 0;                  // into the list above
  CLI::Option* option = nullptr;  // set by add_int8_mode_option
  backend::Int8Mode mode() const;
  // The mode given with --int8-mode, else `implied` (what --precision implies).
  backend::Int8Mode mode_or(backend::Int8Mode implied) const;
  std::optional<backend::Int8Mode> vae_mode() const;
};
void add_int8_mode_option(CLI::App* command, Int8Choice* choice);

// `--precision auto|f32|bf16|int8` (default auto) into `*precision`, for
// pipeline::parse_precision (pipeline/precision.h says what each means).
void add_precision_option(CLI::App* command, std::string* precision);

// The bundled model (models/shapes-int8.safetensors) for commands run without -m: looked
// for in $HYRT_MODEL, beside the executable, then in the source checkout (cmd_generate.cpp).
// Throws kNotFound listing where it looked.
std::string find_bundled_model();

// `--placement host|hybrid|device|auto` (default auto) into `*placement`, for
// plan::parse_placement_mode.
void add_placement_option(CLI::App* command, std::string* placement);
// --autotune (exec::EngineOptions::autotune), shared by generate and bench.
void add_autotune_option(CLI::App* command, bool* autotune);

}  // namespace hyrt::cli

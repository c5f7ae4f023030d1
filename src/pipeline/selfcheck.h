// The CLI's self-check: proves a fresh build works end to end without any model file.
// Builds a small random-weight model of the exact SD 1.5 architecture in memory, runs the
// text encoder, a CFG-batch UNet step and the VAE decoder through the real graph
// builders, planner, executor and kernels, and checks the outputs are finite, repeatable
// and input-dependent.
#pragma once

#include <string>
#include <vector>

#include "exec/engine.h"

namespace hyrt::pipeline {

struct SelfCheckStep {
  std::string name;
  bool ok = false;
  double ms = 0;
  std::string detail;
};

std::vector<SelfCheckStep> run_selfcheck(exec::Engine& engine);

}  // namespace hyrt::pipeline

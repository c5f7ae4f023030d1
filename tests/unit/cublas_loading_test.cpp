// cuBLAS and cuBLASLt are opened by the CUDA backend on its first call
// (backend/cuda/cublas_loader.cpp), not linked: a process that never makes an accelerator
// backend must not have them mapped (linked, they hold ~150 MiB resident from the start).
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "exec/engine.h"

namespace hyrt {
namespace {

bool cublas_lt_mapped() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find("libcublasLt") != std::string::npos) return true;
  return false;
}

TEST(CublasLoading, MappedOnlyOnceAnAcceleratorIsMade) {
  const bool before = cublas_lt_mapped();
  {
    exec::EngineOptions host_only;
    host_only.placement = plan::PlacementMode::kHost;
    exec::Engine engine(host_only);
    EXPECT_EQ(engine.accelerator(), nullptr);
    EXPECT_EQ(cublas_lt_mapped(), before) << "a host-only engine opened cuBLASLt";
  }
  exec::Engine engine;  // kAuto: the CUDA backend where the build has it and a GPU is present
  if (before) {
    // Mapped before this test made anything: only an earlier accelerator in this process may
    // have opened it.
    EXPECT_NE(engine.accelerator(), nullptr)
        << "libcublasLt is mapped in a process without an accelerator ("
        << engine.accelerator_status() << "): linked, not opened on use";
  } else {
    EXPECT_EQ(cublas_lt_mapped(), engine.accelerator() != nullptr)
        << "accelerator: " << engine.accelerator_status();
  }
}

}  // namespace
}  // namespace hyrt

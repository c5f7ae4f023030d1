// The host backend: every IR op on the CPU. GEMM-class ops go through oneDNN (f32 weights,
// or "8-bit S" s8 weights for linear/conv2d, see Int8Mode); the rest are hyrt's own
// vectorised, OpenMP-parallel kernels, one file per op family in this folder.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace hyrt::backend {

struct CpuBackendOptions {
  int num_threads = 0;  // 0: all cores the process may use
  Int8Mode int8_mode = Int8Mode::kW8A8;
};

// Whether oneDNN's int8 GEMMs on this CPU use an int8 dot-product ISA (AVX-512 VNNI, or
// AMX). Without one, oneDNN 2.6 sums pairs of u8·s8 products in saturating int16
// (vpmaddubsw), which overflows on full-range 8-bit weights (measured: 10–20 % relative
// error); a backend asked for kW8A8 then runs "8-bit S" nodes as kW8 instead.
// Honours DNNL_MAX_CPU_ISA.
bool cpu_has_int8_dot_product();

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options = {});

}  // namespace hyrt::backend

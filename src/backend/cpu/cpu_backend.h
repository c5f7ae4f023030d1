// The host backend: every IR op on the CPU. GEMM-class ops go through oneDNN (f32 weights,
// or "8-bit S" s8 weights for linear/conv2d, see Int8Mode); the rest are hyrt's own
// vectorised, OpenMP-parallel kernels, one file per op family in this folder.
#pragma once

#include <memory>

#include "backend/backend.h"

namespace hyrt::backend {

// How linear and conv2d nodes with "8-bit S" weights (s8 + per-row f32 scales from
// WeightSource::scale) run. Either way the int8 weights stay resident as int8 (packed by
// oneDNN); no dequantized f32 copy of a layer is kept.
enum class Int8Mode {
  // Activations quantized to s8 at run time (linear: one scale per row/token, exact;
  // conv2d: one dynamic scale per sample), s8·s8 -> s32 in oneDNN, dequantized with
  // activation × weight scales plus bias in our epilogue. Fastest (int8 GEMM ~4x f32);
  // adds activation rounding error (~6e-3 relative L2 on random data, op tests).
  kW8A8,
  // Activations stay f32; the layer's int8 weights are widened to f32 into a scratch
  // buffer reused across layers at each run, then an f32 GEMM/conv and a per-channel
  // scale epilogue. Only the weight quantization error; f32 speed minus the widening.
  // Also what kW8A8 becomes where cpu_has_int8_dot_product() is false.
  kW8,
};

// "w8a8" / "w8": the names the CLI and benchmark JSON use.
const char* int8_mode_name(Int8Mode mode);

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

// The host backend: every IR op on the CPU. GEMM-class ops go through oneDNN (f32 weights,
// or "8-bit S" s8 weights for linear/conv2d, see Int8Mode); the rest are hyrt's own
// vectorised, OpenMP-parallel kernels, one file per op family in this folder.
//
// Weights: kernels keep the weights they need packed (GEMMs) or converted to f32, in buffers
// shared by every kernel of the backend that needs the same weight in the same form
// (cpu/weight_cache.h) — so a second executable of a model (another resolution or batch)
// packs nothing it already has. Those buffers are counted once, by resident_weight_bytes();
// a kernel's held_bytes() counts only a pack it made in a further layout for its own shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "backend/backend.h"

namespace hyrt::backend {

struct CpuBackendOptions {
  int num_threads = 0;  // 0: all cores the process may use
  Int8Mode int8_mode = Int8Mode::kW8A8;
  // kBF16: linear and conv2d with float weights, W8's widened 8-bit S weights, and attention
  // over 256² scores or more multiply bf16 operands (AMX or AVX-512 BF16), accumulating in f32;
  // activations stay f32 between nodes. Where cpu_has_bf16_dot_product() is false, kF32.
  FloatPrecision float_precision = FloatPrecision::kF32;
};

// Whether oneDNN's int8 GEMMs on this CPU use an int8 dot-product ISA (AVX-512 VNNI, or
// AMX). Without one, oneDNN 2.6 sums pairs of u8·s8 products in saturating int16
// (vpmaddubsw), which overflows on full-range 8-bit weights (measured: 10–20 % relative
// error); a backend asked for kW8A8 then runs "8-bit S" nodes as kW8 instead.
// Honours DNNL_MAX_CPU_ISA.
bool cpu_has_int8_dot_product();

// Whether oneDNN's bf16 products on this CPU use bf16 dot-product instructions (AVX-512 BF16 or
// AMX-BF16) rather than emulating them. Honours DNNL_MAX_CPU_ISA.
bool cpu_has_bf16_dot_product();

std::unique_ptr<Backend> make_cpu_backend(const CpuBackendOptions& options = {});

// The CPU backend's shared weights (cpu/weight_cache.h), for tests and reports: how many
// kernel weight lookups found a buffer already held in the form they needed (hits) or made
// one (misses, since the backend was made; extra_layouts of them packed a weight in a second
// layout for a new shape, the bytes kernels count in held_bytes()), and the buffers alive now
// (bytes = resident_weight_bytes()). Throws kInvalidArgument when `backend` is not a CPU
// backend.
struct CpuWeightCacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t extra_layouts = 0;
  size_t entries = 0;
  size_t bytes = 0;
};
CpuWeightCacheStats cpu_weight_cache_stats(const Backend& backend);

}  // namespace hyrt::backend

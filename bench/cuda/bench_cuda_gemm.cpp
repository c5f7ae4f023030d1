// bench_cuda_gemm: the CUDA backend's two GEMM candidates for linear layers at SD 1.5 UNet
// shapes, printing JSON that names the card.
//
//   bench_cuda_gemm [--reps N] [--out FILE] [--breakdown]
//
// --breakdown: instead, the W8A8 node's parts at SD 1.5's and SDXL's 1024² shapes and SD 1.5's
// 512² convs (batch 2), each timed alone as above (gpu_us): the activation quantizer
// (launch_quantize_rows_s8, or launch_im2col_quantize_s8 for a 3x3 conv), the fused Hopper GEMM
// on the quantized operand with each tile (gemm_s8_fused.h), the whole W8A8 candidate as the
// backend runs it, and the f16 GEMM on f16-stored weights (cuBLASLt) for scale; for a 3x3 conv
// also the implicit GEMM (its per-image quantizer, the kernel on each tile width, the tile
// rule's pick). Run once as is and once under $HYRT_CUDA_QUANTIZE=twopass to put the quantizers
// side by side.
//
// Shapes are M·N·K for 512x512 images, batch 2 (CFG): M = latent tokens × 2, i.e. 8192 at
// 64x64, 2048 at 32x32, 512 at 16x16, 128 at 8x8; convolutions appear as the GEMM of their
// implicit-GEMM form (K = 9·Cin). Activations f16, weights "8-bit S" (random s8 + per-row
// scales), bias on. For each shape and candidate:
//   gpu_us   median GPU time per call, events around each call, a spin kernel queued first
//            so the host enqueues all calls before the GPU reaches them (what a CUDA graph
//            replay would see);
//   wall_us  wall clock of `reps` back-to-back calls / reps, synchronised at the end
//            (includes host launch overhead where that is the bottleneck: no CUDA graphs);
//   gemm_us  the cuBLASLt call alone, from the autotuning record (median of tune_reps).
// f16w is the f16 GEMM on weights stored f16 (no per-layer dequantization) for reference.
// The autotuner's pick for the key (auto) and the time to prepare the first node of each
// key (upload + tuning) are reported too.
//
// Convolutions (the "convs" array): SD 1.5's 3x3 convs at batch 2 run as this backend runs
// them (cuda_gemm.h, make_conv2d_kernel): f16 — im2col into scratch, then the GEMM; W8A8 —
// the fused im2col + quantize pass, the int8 GEMM, the rescale. Next to them: the GEMM alone
// (a linear of the same M·N·K on an activation matrix already in place) and the plain im2col
// pass alone, so the gather's share is visible. Same candidates and timing as above. The conv
// kernels run on a CudaContext of the bench's own (its own stream).
#ifdef HYRT_HAVE_CUDA

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_gemm.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/gemm_s8_fused.h"
#include "core/env.h"
#include "core/error.h"
#include "core/half.h"
#include "weights/memory_weights.h"

namespace {

using namespace hyrt;
using backend::cuda::CudaBackend;
using backend::cuda::CudaGemmKernel;
using backend::cuda::GemmCandidate;
using Clock = std::chrono::steady_clock;

struct ShapeSpec {
  int64_t m, n, k;
  const char* what;
};

const ShapeSpec kShapes[] = {
    {8192, 320, 320, "attention q/k/v/out and proj_in/out, 64x64"},
    {8192, 2560, 320, "GEGLU input projection, 64x64"},
    {8192, 320, 1280, "feed-forward output, 64x64"},
    {8192, 320, 2880, "conv 3x3 320ch as GEMM, 64x64"},
    {2048, 640, 640, "attention projection, 32x32"},
    {2048, 5120, 640, "GEGLU input projection, 32x32"},
    {2048, 640, 2560, "feed-forward output, 32x32"},
    {2048, 640, 5760, "conv 3x3 640ch as GEMM, 32x32"},
    {512, 1280, 1280, "attention projection, 16x16"},
    {512, 10240, 1280, "GEGLU input projection, 16x16"},
    {512, 1280, 5120, "feed-forward output, 16x16"},
    {512, 1280, 11520, "conv 3x3 1280ch as GEMM, 16x16"},
    {128, 1280, 11520, "conv 3x3 1280ch as GEMM, 8x8"},
    {154, 320, 768, "cross-attention K/V, 77 tokens x2, 320"},
    {154, 1280, 768, "cross-attention K/V, 77 tokens x2, 1280"},
    {8192, 8192, 8192, "large square (peak)"},
};

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

struct Timing {
  double gpu_us = NAN, wall_us = NAN;
};

// See the file comment for what the two numbers mean.
template <class F>
Timing time_calls(cudaStream_t s, int reps, F&& call) {
  for (int i = 0; i < 3; ++i)
    call();  // warm-up
  HYRT_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<cudaEvent_t> ev(static_cast<size_t>(reps) + 1);
  for (auto& e : ev)
    HYRT_CUDA_CHECK(cudaEventCreate(&e));
  HYRT_CUDA_CHECK(backend::cuda::launch_spin(80.0 * reps, s));
  HYRT_CUDA_CHECK(cudaEventRecord(ev[0], s));
  for (int i = 0; i < reps; ++i) {
    call();
    HYRT_CUDA_CHECK(cudaEventRecord(ev[static_cast<size_t>(i) + 1], s));
  }
  HYRT_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<double> us;
  for (int i = 0; i < reps; ++i) {
    float ms = 0;
    HYRT_CUDA_CHECK(
        cudaEventElapsedTime(&ms, ev[static_cast<size_t>(i)], ev[static_cast<size_t>(i) + 1]));
    us.push_back(1000.0 * ms);
  }
  for (auto e : ev)
    cudaEventDestroy(e);
  Timing t;
  t.gpu_us = median(us);
  const auto t0 = Clock::now();
  for (int i = 0; i < reps; ++i)
    call();
  HYRT_CUDA_CHECK(cudaStreamSynchronize(s));
  t.wall_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / reps;
  return t;
}

struct Layer {
  ir::Graph graph{DType::kF16};
  weights::MemoryWeights weights;
  std::unique_ptr<CudaGemmKernel> kernel;
  double prepare_ms = 0;
};

void build_layer(Layer& l, CudaBackend& b, backend::ProgramCache& cache, const ShapeSpec& s,
                 DType wtype, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const size_t nk = static_cast<size_t>(s.n * s.k);
  if (wtype == DType::kS8) {
    Tensor q(DType::kS8, Shape{s.n, s.k}), scale(DType::kF32, Shape{s.n});
    std::uniform_int_distribution<int> qd(-127, 127);
    for (size_t i = 0; i < nk; ++i)
      q.as<int8_t>()[i] = static_cast<int8_t>(qd(rng));
    std::uniform_real_distribution<float> sd(0.5f / 127, 1.5f / 127);
    for (int64_t i = 0; i < s.n; ++i)
      scale.as<float>()[i] = sd(rng) * 0.1f;
    l.weights.add_quantized("w", std::move(q), std::move(scale));
  } else {
    std::vector<float> f(nk);
    std::uniform_real_distribution<float> wd(-0.1f, 0.1f);
    for (float& v : f)
      v = wd(rng);
    Tensor w(DType::kF16, Shape{s.n, s.k});
    convert_from_f32(f.data(), DType::kF16, w.data(), nk);
    l.weights.add("w", std::move(w));
  }
  Tensor bias(DType::kF32, Shape{s.n});
  std::uniform_real_distribution<float> bd(-1.0f, 1.0f);
  for (int64_t i = 0; i < s.n; ++i)
    bias.as<float>()[i] = bd(rng);
  l.weights.add("b", std::move(bias));
  const ir::ValueId x = l.graph.add_input("x", DType::kF16, Shape{s.m, s.k});
  const ir::ValueId w = l.graph.add_weight("w", wtype, Shape{s.n, s.k});
  const ir::ValueId bv = l.graph.add_weight("b", DType::kF32, Shape{s.n});
  l.graph.mark_output(l.graph.add_node(ir::OpKind::kLinear, {x, w, bv}, {}, "linear"));
  const auto t0 = Clock::now();
  std::unique_ptr<backend::Kernel> k = b.prepare(l.graph, l.graph.nodes()[0], l.weights, cache);
  l.prepare_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  l.kernel.reset(dynamic_cast<CudaGemmKernel*>(k.release()));
  HYRT_ASSERT(l.kernel != nullptr);
}

std::string num(double v, int digits = 2) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::vector<float> fetch(CudaBackend& b, const TensorView& y) {
  std::vector<uint16_t> raw(static_cast<size_t>(y.numel()));
  b.copy_to_host(raw.data(), y.data, raw.size() * 2);
  std::vector<float> out(raw.size());
  convert_to_f32(DType::kF16, raw.data(), out.data(), out.size());
  return out;
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i]) || !std::isfinite(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

struct ConvSpec {
  int64_t batch, size, cin, cout;
  int kernel, stride, padding;
  const char* what;
};

// SD 1.5 UNet 3x3 convs at 512x512, batch 2 (CFG).
const ConvSpec kConvShapes[] = {
    {2, 64, 320, 320, 3, 1, 1, "resnet conv 3x3 320ch, 64x64"},
    {2, 32, 640, 640, 3, 1, 1, "resnet conv 3x3 640ch, 32x32"},
    {2, 16, 1280, 1280, 3, 1, 1, "resnet conv 3x3 1280ch, 16x16"},
    {2, 8, 1280, 1280, 3, 1, 1, "resnet conv 3x3 1280ch, 8x8"},
    {2, 64, 320, 320, 3, 2, 1, "downsampler 3x3 stride 2 320ch, 64x64 -> 32x32"},
};

struct ConvLayer {
  ir::Graph graph{DType::kF16};
  weights::MemoryWeights weights;
  std::unique_ptr<CudaGemmKernel> kernel;
  double prepare_ms = 0;
};

void build_conv(ConvLayer& l, backend::cuda::CudaContext& ctx,
                const backend::cuda::CudaBackendOptions& options, backend::ProgramCache& cache,
                const ConvSpec& s, DType wtype, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  const Shape ws{s.cout, s.cin, s.kernel, s.kernel};
  const size_t nw = static_cast<size_t>(ws.numel());
  if (wtype == DType::kS8) {
    Tensor q(DType::kS8, ws), scale(DType::kF32, Shape{s.cout});
    std::uniform_int_distribution<int> qd(-127, 127);
    for (size_t i = 0; i < nw; ++i)
      q.as<int8_t>()[i] = static_cast<int8_t>(qd(rng));
    std::uniform_real_distribution<float> sd(0.5f / 127, 1.5f / 127);
    for (int64_t i = 0; i < s.cout; ++i)
      scale.as<float>()[i] = sd(rng) * 0.03f;
    l.weights.add_quantized("w", std::move(q), std::move(scale));
  } else {
    std::vector<float> f(nw);
    std::uniform_real_distribution<float> wd(-0.03f, 0.03f);
    for (float& v : f)
      v = wd(rng);
    Tensor w(DType::kF16, ws);
    convert_from_f32(f.data(), DType::kF16, w.data(), nw);
    l.weights.add("w", std::move(w));
  }
  Tensor bias(DType::kF32, Shape{s.cout});
  std::uniform_real_distribution<float> bd(-1.0f, 1.0f);
  for (int64_t i = 0; i < s.cout; ++i)
    bias.as<float>()[i] = bd(rng);
  l.weights.add("b", std::move(bias));
  const ir::ValueId x = l.graph.add_input("x", DType::kF16, Shape{s.batch, s.size, s.size, s.cin});
  const ir::ValueId w = l.graph.add_weight("w", wtype, ws);
  const ir::ValueId bv = l.graph.add_weight("b", DType::kF32, Shape{s.cout});
  l.graph.mark_output(l.graph.add_node(ir::OpKind::kConv2d, {x, w, bv},
                                       ir::Conv2dAttrs{s.stride, s.padding}, "conv"));
  const auto t0 = Clock::now();
  l.kernel = backend::cuda::make_conv2d_kernel(ctx, options, l.graph, l.graph.nodes()[0], l.weights,
                                               cache);
  l.prepare_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Prints the JSON and writes it to out_path when given: the exit status.
int emit(const std::string& json, const std::string& out_path) {
  std::fputs(json.c_str(), stdout);
  if (out_path.empty()) return 0;
  std::ofstream f(out_path);
  f << json;
  if (f) return 0;
  std::fprintf(stderr, "bench_cuda_gemm: cannot write %s\n", out_path.c_str());
  return 1;
}

struct BreakdownShape {
  const char* model;
  int64_t m, n, k;           // a linear; for a conv: batch·size², cout, 9·cin
  int64_t batch, size, cin;  // a 3x3 conv (stride 1, padding 1) when cin > 0
  const char* what;
};

// SD 1.5 and SDXL at 1024² (latent 128², batch 2): the GEMM shapes that carry most of the step
// (bench/results/unet_shapes_profile_h100.json).
const BreakdownShape kBreakdown[] = {
    {"sdxl", 2048, 1280, 1280, 0, 0, 0, "attention q/k/v/out, 32x32"},
    {"sdxl", 2048, 10240, 1280, 0, 0, 0, "GEGLU projection, 32x32"},
    {"sdxl", 2048, 1280, 5120, 0, 0, 0, "feed-forward output, 32x32"},
    {"sdxl", 8192, 640, 640, 0, 0, 0, "attention q/k/v/out, 64x64"},
    {"sdxl", 8192, 5120, 640, 0, 0, 0, "GEGLU projection, 64x64"},
    {"sdxl", 8192, 640, 2560, 0, 0, 0, "feed-forward output, 64x64"},
    {"sd15", 32768, 320, 320, 0, 0, 0, "attention q/k/v/out, 128x128"},
    {"sd15", 32768, 2560, 320, 0, 0, 0, "GEGLU projection, 128x128"},
    {"sd15", 32768, 320, 1280, 0, 0, 0, "feed-forward output, 128x128"},
    {"both", 32768, 320, 2880, 2, 128, 320, "resnet conv 3x3 320ch, 128x128"},
    {"both", 32768, 320, 5760, 2, 128, 640, "up-block conv 3x3 640->320ch, 128x128"},
    {"both", 8192, 640, 5760, 2, 64, 640, "resnet conv 3x3 640ch, 64x64"},
    {"both", 2048, 1280, 11520, 2, 32, 1280, "resnet conv 3x3 1280ch, 32x32"},
    // SD 1.5 at 512² (latent 64²): where the implicit conv's tile rule draws its line.
    {"sd15", 8192, 320, 2880, 2, 64, 320, "resnet conv 3x3 320ch, 64x64 (512²)"},
    {"sd15", 2048, 640, 5760, 2, 32, 640, "resnet conv 3x3 640ch, 32x32 (512²)"},
    {"sd15", 512, 1280, 11520, 2, 16, 1280, "resnet conv 3x3 1280ch, 16x16 (512²)"},
    {"sd15", 128, 1280, 11520, 2, 8, 1280, "resnet conv 3x3 1280ch, 8x8 (512²)"},
};

int run_breakdown(CudaBackend& b, int reps, const std::string& out_path) {
  namespace cu = backend::cuda;
  const auto& d = b.device_info();
  const bool fused = cu::fused_s8_gemm_available(d.compute_major, d.compute_minor);
  backend::ProgramCache cache;
  cudaStream_t st = b.stream();
  std::string json = str_cat("{\n  \"bench\": \"cuda_gemm_breakdown\",\n  \"card\": \"", d.name,
                             "\",\n  \"multiprocessors\": ", d.multiprocessors, ",\n  \"cuda\": \"",
                             cu::runtime_version_string(), "\",\n  \"quantizer\": \"",
                             env_is("HYRT_CUDA_QUANTIZE", "twopass") ? "twopass" : "resident",
                             "\",\n  \"reps\": ", reps, ",\n  \"shapes\": [\n");
  std::fprintf(stderr, "%-5s %-6s %-6s %-6s | %8s %8s %8s %8s %8s | %8s %8s %5s | %s\n", "model",
               "M", "N", "K", "quant", "gemm64", "gemm128", "w8a8", "f16", "f16w", "TOPS", "pick",
               "what");
  uint64_t seed = 7;
  bool first = true;
  for (const BreakdownShape& s : kBreakdown) {
    const bool conv = s.cin > 0;
    const int64_t x_elems = conv ? s.batch * s.size * s.size * s.cin : s.m * s.k;
    cu::DeviceBuffer x(static_cast<size_t>(x_elems) * 2, "breakdown x");
    cu::DeviceBuffer wx(static_cast<size_t>(s.n * s.k) * 2, "breakdown w f16");
    cu::DeviceBuffer q(static_cast<size_t>(s.m * s.k), "breakdown a s8");
    cu::DeviceBuffer a_scale(static_cast<size_t>(s.m) * 4, "breakdown a scales");
    cu::DeviceBuffer w(static_cast<size_t>(s.n * s.k), "breakdown w s8");
    cu::DeviceBuffer w_scale(static_cast<size_t>(s.n) * 4, "breakdown w scales");
    cu::DeviceBuffer bias(static_cast<size_t>(s.n) * 4, "breakdown bias");
    cu::DeviceBuffer y(static_cast<size_t>(s.m * s.n) * 2, "breakdown y");
    HYRT_CUDA_CHECK(
        cu::launch_fill_random(x.data(), cu::FloatType::kF16, x_elems, seed++, 1.0f, st));
    HYRT_CUDA_CHECK(
        cu::launch_fill_random(wx.data(), cu::FloatType::kF16, s.n * s.k, seed++, 0.05f, st));
    HYRT_CUDA_CHECK(
        cu::launch_fill_random(bias.data(), cu::FloatType::kF32, s.n, seed++, 1.0f, st));
    HYRT_CUDA_CHECK(cu::launch_quantize_rows_s8(wx.data(), cu::FloatType::kF16, s.n, s.k, s.k,
                                                w.as<int8_t>(), w_scale.as<float>(), st));
    auto quantize = [&] {
      if (conv)
        HYRT_CUDA_CHECK(cu::launch_im2col_quantize_s8(
            x.data(), cu::FloatType::kF16, s.batch, s.size, s.size, s.cin, 3, 3, 1, 1, s.size,
            s.size, 0, s.m, s.k, q.as<int8_t>(), a_scale.as<float>(), st));
      else
        HYRT_CUDA_CHECK(cu::launch_quantize_rows_s8(x.data(), cu::FloatType::kF16, s.m, s.k, s.k,
                                                    q.as<int8_t>(), a_scale.as<float>(), st));
    };
    const Timing tq = time_calls(st, reps, quantize);
    auto gemm = [&](cu::FusedS8Tile tile) {
      if (!fused) return Timing{};
      return time_calls(st, reps, [&] {
        HYRT_CUDA_CHECK(cu::launch_fused_s8_gemm(
            q.as<int8_t>(), s.k, w.as<int8_t>(), s.k, a_scale.as<float>(), w_scale.as<float>(),
            bias.as<float>(), nullptr, static_cast<__half*>(y.data()), s.m, s.n, s.k, tile,
            d.multiprocessors, st));
      });
    };
    // Every tile configuration, and the one kAuto takes.
    std::vector<std::pair<cu::FusedS8Tile, Timing>> tiles;
    for (cu::FusedS8Tile tile : cu::kFusedS8Tiles)
      tiles.emplace_back(tile, gemm(tile));
    const auto tile_us = [&](cu::FusedS8Tile want) {
      for (const auto& [tile, t] : tiles)
        if (tile == want) return t.gpu_us;
      return 0.0;
    };
    const Timing t64{.gpu_us = tile_us(cu::FusedS8Tile::kSmall)},
        t128{.gpu_us = tile_us(cu::FusedS8Tile::kLarge)};
    const cu::FusedS8Tile auto_tile = cu::fused_s8_auto_tile(s.m, s.n, s.k, d.multiprocessors);
    // The whole candidate as the backend runs it, and the f16 GEMM on f16-stored weights.
    Timing tw8, tf16, tf16c;  // W8A8, f16-stored weights, the f16 candidate (weights widened)
    backend::GemmKey key;     // the 8-bit S layer's (the untimed choice's input)
    // A conv as the implicit GEMM (gemm_s8_fused.h): the per-image quantizer, then the kernel on
    // each tile width; the rule's pick (0: the im2col path).
    Timing timg;
    std::string implicit_by_tile;
    int implicit_rule = 0;
    if (conv && fused) {
      cu::ImplicitConvS8Shape cs;
      cs.batch = s.batch, cs.height = cs.width = cs.out_h = cs.out_w = s.size;
      cs.channels = s.cin, cs.out_channels = s.n, cs.kernel_h = cs.kernel_w = 3;
      cs.stride = 1, cs.padding = 1;
      implicit_rule = cu::implicit_s8_conv_auto_tile(cs, d.multiprocessors);
      cu::DeviceBuffer qi(static_cast<size_t>(x_elems) + 16, "breakdown x s8 per image");
      cu::DeviceBuffer rows(static_cast<size_t>(s.m + s.batch) * 4, "breakdown row scales");
      auto* row_scales = rows.as<float>();
      timg = time_calls(st, reps, [&] {
        HYRT_CUDA_CHECK(cu::launch_quantize_images_s8(
            x.data(), cu::FloatType::kF16, s.batch, s.size * s.size * s.cin, qi.as<int8_t>(),
            row_scales + s.m, s.size * s.size, row_scales, d.multiprocessors, st));
      });
      for (int tile : cu::kImplicitConvTileN) {
        const Timing t = time_calls(st, reps, [&] {
          HYRT_CUDA_CHECK(cu::launch_implicit_s8_conv(
              qi.as<int8_t>(), w.as<int8_t>(), s.k, row_scales, w_scale.as<float>(),
              bias.as<float>(), nullptr, static_cast<__half*>(y.data()), cs, tile, st));
        });
        implicit_by_tile +=
            str_cat(implicit_by_tile.empty() ? "" : ", ", "\"", tile, "\": ", num(t.gpu_us));
        std::fprintf(stderr, "        implicit %-5d %8.1f us (+ quantize %.1f us)\n", tile,
                     t.gpu_us, timg.gpu_us);
      }
    }
    if (conv) {
      backend::cuda::CudaBackendOptions options;
      options.autotune = true;
      backend::cuda::CudaContext ctx(d, options.workspace_bytes);
      backend::ProgramCache conv_cache;
      const ConvSpec cs{s.batch, s.size, s.cin, s.n, 3, 1, 1, s.what};
      ConvLayer c8, c16;
      build_conv(c8, ctx, options, conv_cache, cs, DType::kS8, seed++);
      build_conv(c16, ctx, options, conv_cache, cs, DType::kF16, seed++);
      const std::vector<TensorView> ins{
          TensorView{x.data(), DType::kF16, Shape{s.batch, s.size, s.size, s.cin}}};
      const TensorView yv{y.data(), DType::kF16, Shape{s.batch, s.size, s.size, s.n}};
      tw8 = time_calls(ctx.stream(), reps,
                       [&] { c8.kernel->run_candidate(GemmCandidate::kW8A8, ins, yv); });
      tf16c = time_calls(ctx.stream(), reps,
                         [&] { c8.kernel->run_candidate(GemmCandidate::kF16, ins, yv); });
      key = c8.kernel->tuning().key;
      tf16 = time_calls(ctx.stream(), reps, [&] { c16.kernel->run(ins, yv); });
    } else {
      const ShapeSpec ls{s.m, s.n, s.k, s.what};
      Layer l8, l16;
      build_layer(l8, b, cache, ls, DType::kS8, seed++);
      build_layer(l16, b, cache, ls, DType::kF16, seed++);
      const TensorView xv{x.data(), DType::kF16, Shape{s.m, s.k}};
      const TensorView yv{y.data(), DType::kF16, Shape{s.m, s.n}};
      const std::vector<TensorView> ins{xv, l8.weights.get("w"), l8.weights.get("b")};
      const std::vector<TensorView> ins16{xv, l16.weights.get("w"), l16.weights.get("b")};
      tw8 = time_calls(st, reps, [&] { l8.kernel->run_candidate(GemmCandidate::kW8A8, ins, yv); });
      tf16c = time_calls(st, reps, [&] { l8.kernel->run_candidate(GemmCandidate::kF16, ins, yv); });
      key = l8.kernel->tuning().key;
      tf16 = time_calls(st, reps, [&] { l16.kernel->run(ins16, yv); });
    }
    const double ops = 2.0 * s.m * s.n * s.k;
    const char* untimed = cu::gemm_roofline_us(key, GemmCandidate::kF16) <=
                                  cu::gemm_roofline_us(key, GemmCandidate::kW8A8, fused)
                              ? "f16"
                              : "w8a8";
    double best = 0.0;
    std::string best_tile = "-", by_tile;
    for (const auto& [tile, t] : tiles) {
      if (t.gpu_us > 0.0 && (best == 0.0 || t.gpu_us < best)) {
        best = t.gpu_us;
        best_tile = cu::fused_s8_tile_name(tile);
      }
      by_tile += str_cat(by_tile.empty() ? "" : ", ", "\"", cu::fused_s8_tile_name(tile),
                         "\": ", num(t.gpu_us));
      std::fprintf(stderr, "        %-14s %8.1f us\n", cu::fused_s8_tile_name(tile), t.gpu_us);
    }
    // Bytes the quantizer must move at least: its input once (a conv's: the NHWC tensor) and
    // the s8 matrix.
    const double q_bytes = 2.0 * x_elems + static_cast<double>(s.m * s.k);
    std::fprintf(
        stderr,
        "%-5s %-6lld %-6lld %-6lld | %8.1f %8.1f %8.1f %8.1f %8.1f | %8.1f %8.0f %5s | %s\n",
        s.model, static_cast<long long>(s.m), static_cast<long long>(s.n),
        static_cast<long long>(s.k), tq.gpu_us, t64.gpu_us, t128.gpu_us, tw8.gpu_us, tf16c.gpu_us,
        tf16.gpu_us, ops / (best * 1e-6) / 1e12, untimed, s.what);
    json += str_cat(
        first ? "" : ",\n", "    {\"model\": \"", s.model, "\", \"what\": \"", s.what,
        "\", \"m\": ", s.m, ", \"n\": ", s.n, ", \"k\": ", s.k,
        ", \"conv3x3\": ", conv ? "true" : "false", ",\n     \"quantize_us\": ", num(tq.gpu_us),
        ", \"quantize_gbytes_per_s\": ", num(q_bytes / (tq.gpu_us * 1e-6) / 1e9, 0),
        ", \"gemm_64x128_us\": ", num(t64.gpu_us), ", \"gemm_128x128_us\": ", num(t128.gpu_us),
        ", \"gemm_best_tops\": ", num(ops / (best * 1e-6) / 1e12, 0),
        ",\n     \"gemm_us_by_tile\": {", by_tile, "}, \"best_tile\": \"", best_tile,
        "\", \"auto_tile\": \"", cu::fused_s8_tile_name(auto_tile), "\"",
        ",\n     \"w8a8_candidate_us\": ", num(tw8.gpu_us),
        ", \"f16_candidate_us\": ", num(tf16c.gpu_us),
        ", \"f16_weights_gemm_us\": ", num(tf16.gpu_us), ", \"untimed_choice\": \"", untimed, "\"",
        conv ? str_cat(",\n     \"implicit_quantize_us\": ", num(timg.gpu_us),
                       ", \"implicit_us_by_tile\": {", implicit_by_tile,
                       "}, \"implicit_rule_tile\": ", implicit_rule)
             : std::string(),
        "}");
    first = false;
  }
  json += "\n  ]\n}\n";
  return emit(json, out_path);
}

int run(int argc, char** argv) {
  int reps = 50;
  bool breakdown = false;
  std::string out_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--out" && i + 1 < argc)
      out_path = argv[++i];
    else if (a == "--breakdown")
      breakdown = true;
    else {
      std::fprintf(stderr, "usage: bench_cuda_gemm [--reps N] [--out FILE] [--breakdown]\n");
      return 2;
    }
  }
  std::string why;
  std::unique_ptr<CudaBackend> b = backend::cuda::try_make_cuda_backend({.autotune = true}, &why);
  if (!b) {
    std::fprintf(stderr, "bench_cuda_gemm: no usable CUDA device: %s\n", why.c_str());
    return 1;
  }
  if (breakdown) return run_breakdown(*b, reps, out_path);
  const auto& d = b->device_info();
  backend::ProgramCache cache;
  std::string json = str_cat(
      "{\n  \"bench\": \"cuda_gemm\",\n  \"card\": \"", d.name, "\",\n  \"compute_capability\": \"",
      d.compute_major, ".", d.compute_minor, "\",\n  \"multiprocessors\": ", d.multiprocessors,
      ",\n  \"memory_gib\": ", num(d.total_memory / 1073741824.0, 1), ",\n  \"cuda\": \"",
      backend::cuda::runtime_version_string(), "\",\n  \"activations\": \"f16\",\n",
      "  \"weights\": \"8-bit S (s8 + per-row f32 scale); f16w: f16-stored weights\",\n",
      "  \"bias\": true,\n  \"reps\": ", reps, ",\n  \"shapes\": [\n");
  std::fprintf(stderr, "%-6s %-6s %-6s | %9s %9s %9s | %9s %9s %9s | %9s | %-5s %8s\n", "M", "N",
               "K", "f16 us", "f16w us", "w8a8 us", "f16 TF/s", "f16w TF/s", "w8a8 TOPS",
               "w8a8 gemm", "auto", "prep ms");
  bool first = true;
  uint64_t seed = 1;
  for (const ShapeSpec& s : kShapes) {
    Layer q8, f16w;
    build_layer(q8, *b, cache, s, DType::kS8, seed++);
    build_layer(f16w, *b, cache, s, DType::kF16, seed++);
    auto x = b->allocate(static_cast<size_t>(s.m * s.k) * 2, "bench x");
    auto y = b->allocate(static_cast<size_t>(s.m * s.n) * 2, "bench y");
    HYRT_CUDA_CHECK(backend::cuda::launch_fill_random(x->data(), backend::cuda::FloatType::kF16,
                                                      s.m * s.k, seed++, 1.0f, b->stream()));
    const TensorView xv{x->data(), DType::kF16, Shape{s.m, s.k}};
    const TensorView yv{y->data(), DType::kF16, Shape{s.m, s.n}};
    const std::vector<TensorView> ins{xv, q8.weights.get("w"), q8.weights.get("b")};
    const std::vector<TensorView> ins16{xv, f16w.weights.get("w"), f16w.weights.get("b")};
    const int r = s.m * s.n * s.k > (int64_t{1} << 34) ? std::max(5, reps / 5) : reps;

    const Timing t16 =
        time_calls(b->stream(), r, [&] { q8.kernel->run_candidate(GemmCandidate::kF16, ins, yv); });
    const std::vector<float> y16 = fetch(*b, yv);
    const Timing t8 = time_calls(b->stream(), r,
                                 [&] { q8.kernel->run_candidate(GemmCandidate::kW8A8, ins, yv); });
    const std::vector<float> y8 = fetch(*b, yv);
    const Timing tw = time_calls(b->stream(), r, [&] { f16w.kernel->run(ins16, yv); });
    const double agree = rel_l2(y8, y16);

    const auto& tune = q8.kernel->tuning();
    const double flops = 2.0 * s.m * s.n * s.k;
    auto rate = [&](double us) { return flops / (us * 1e-6) / 1e12; };
    const char* chosen = backend::cuda::candidate_name(tune.chosen);
    std::fprintf(stderr,
                 "%-6lld %-6lld %-6lld | %9.1f %9.1f %9.1f | %9.0f %9.0f %9.0f | %9.1f | %-5s "
                 "%8.1f\n",
                 static_cast<long long>(s.m), static_cast<long long>(s.n),
                 static_cast<long long>(s.k), t16.gpu_us, tw.gpu_us, t8.gpu_us, rate(t16.gpu_us),
                 rate(tw.gpu_us), rate(t8.gpu_us), tune.w8a8.gemm_us, chosen, q8.prepare_ms);
    json += str_cat(
        first ? "" : ",\n", "    {\"m\": ", s.m, ", \"n\": ", s.n, ", \"k\": ", s.k,
        ", \"what\": \"", s.what, "\",\n", "     \"f16\": {\"gpu_us\": ", num(t16.gpu_us),
        ", \"wall_us\": ", num(t16.wall_us), ", \"gemm_us\": ", num(tune.f16.gemm_us),
        ", \"tflops\": ", num(rate(t16.gpu_us), 1), "},\n",
        "     \"w8a8\": {\"gpu_us\": ", num(t8.gpu_us), ", \"wall_us\": ", num(t8.wall_us),
        ", \"gemm_us\": ", num(tune.w8a8.gemm_us), ", \"tops\": ", num(rate(t8.gpu_us), 1), "},\n",
        "     \"f16w\": {\"gpu_us\": ", num(tw.gpu_us), ", \"wall_us\": ", num(tw.wall_us),
        ", \"gemm_us\": ", num(f16w.kernel->tuning().f16.gemm_us),
        ", \"tflops\": ", num(rate(tw.gpu_us), 1), "},\n", "     \"faster\": \"",
        t8.gpu_us < t16.gpu_us ? "w8a8" : "f16",
        "\", \"w8a8_speedup\": ", num(t16.gpu_us / t8.gpu_us, 2), ", \"auto_choice\": \"", chosen,
        "\", \"tuned_f16_us\": ", num(tune.f16.total_us),
        ", \"tuned_w8a8_us\": ", num(tune.w8a8.total_us),
        ", \"prepare_ms\": ", num(q8.prepare_ms, 1), ", \"w8a8_vs_f16_rel_l2\": ", num(agree, 5),
        "}");
    first = false;
  }
  json += "\n  ],\n  \"convs\": [\n";
  std::fprintf(stderr,
               "\nconv (B=2)                 M·N·K              | conv f16  w8a8  f16w | gemm f16  "
               "w8a8  f16w | im2col us | auto\n");
  backend::cuda::CudaBackendOptions conv_options;
  conv_options.autotune = true;
  backend::cuda::CudaContext ctx(d, conv_options.workspace_bytes);
  backend::ProgramCache conv_cache;
  first = true;
  for (const ConvSpec& s : kConvShapes) {
    ConvLayer q8, f16w;
    build_conv(q8, ctx, conv_options, conv_cache, s, DType::kS8, seed++);
    build_conv(f16w, ctx, conv_options, conv_cache, s, DType::kF16, seed++);
    const backend::GemmKey& key = q8.kernel->tuning().key;
    const int64_t out = q8.graph.value(q8.graph.nodes()[0].output).shape[1];
    // The GEMM alone: a linear of the same M·N·K (backend stream, backend cache).
    const ShapeSpec gs{key.m, key.n, key.k, s.what};
    Layer g8, g16;
    build_layer(g8, *b, cache, gs, DType::kS8, seed++);
    build_layer(g16, *b, cache, gs, DType::kF16, seed++);

    const int64_t x_elems = s.batch * s.size * s.size * s.cin;
    backend::cuda::DeviceBuffer x(static_cast<size_t>(x_elems) * 2, "bench conv x");
    backend::cuda::DeviceBuffer y(static_cast<size_t>(key.m * key.n) * 2, "bench conv y");
    backend::cuda::DeviceBuffer col(static_cast<size_t>(key.m * key.k) * 2, "bench im2col");
    HYRT_CUDA_CHECK(backend::cuda::launch_fill_random(x.data(), backend::cuda::FloatType::kF16,
                                                      x_elems, seed++, 1.0f, ctx.stream()));
    HYRT_CUDA_CHECK(backend::cuda::launch_fill_random(col.data(), backend::cuda::FloatType::kF16,
                                                      key.m * key.k, seed++, 1.0f, b->stream()));
    HYRT_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
    HYRT_CUDA_CHECK(cudaStreamSynchronize(b->stream()));
    const TensorView xv{x.data(), DType::kF16, Shape{s.batch, s.size, s.size, s.cin}};
    const TensorView yv{y.data(), DType::kF16, Shape{s.batch, out, out, s.cout}};
    const TensorView cv{col.data(), DType::kF16, Shape{key.m, key.k}};
    const TensorView gy{y.data(), DType::kF16, Shape{key.m, key.n}};
    const std::vector<TensorView> ins{xv}, gins{cv};

    const Timing c16 = time_calls(ctx.stream(), reps,
                                  [&] { q8.kernel->run_candidate(GemmCandidate::kF16, ins, yv); });
    const std::vector<float> y16 = fetch(*b, yv);
    const Timing c8 = time_calls(ctx.stream(), reps,
                                 [&] { q8.kernel->run_candidate(GemmCandidate::kW8A8, ins, yv); });
    const std::vector<float> y8 = fetch(*b, yv);
    const Timing cw = time_calls(ctx.stream(), reps, [&] { f16w.kernel->run(ins, yv); });
    const Timing g16t = time_calls(
        b->stream(), reps, [&] { g8.kernel->run_candidate(GemmCandidate::kF16, gins, gy); });
    const Timing g8t = time_calls(
        b->stream(), reps, [&] { g8.kernel->run_candidate(GemmCandidate::kW8A8, gins, gy); });
    const Timing gwt = time_calls(b->stream(), reps, [&] { g16.kernel->run(gins, gy); });
    const Timing im = time_calls(ctx.stream(), reps, [&] {
      HYRT_CUDA_CHECK(backend::cuda::launch_im2col(x.data(), backend::cuda::FloatType::kF16,
                                                   s.batch, s.size, s.size, s.cin, s.kernel,
                                                   s.kernel, s.stride, s.padding, out, out, 0,
                                                   s.batch * out * out, col.data(), ctx.stream()));
    });
    // The plain im2col pass reads the input (at least once) and writes the M·K matrix.
    const double im_bytes = 2.0 * static_cast<double>(x_elems + key.m * key.k);
    const double agree = rel_l2(y8, y16);
    const auto& tune = q8.kernel->tuning();
    const char* chosen = backend::cuda::candidate_name(tune.chosen);
    std::fprintf(
        stderr, "%-26.26s %5lld·%4lld·%5lld | %8.1f %5.1f %5.1f | %8.1f %5.1f %5.1f | %9.1f | %s\n",
        s.what, static_cast<long long>(key.m), static_cast<long long>(key.n),
        static_cast<long long>(key.k), c16.gpu_us, c8.gpu_us, cw.gpu_us, g16t.gpu_us, g8t.gpu_us,
        gwt.gpu_us, im.gpu_us, chosen);
    auto timing = [](const Timing& t) {
      return str_cat("{\"gpu_us\": ", num(t.gpu_us), ", \"wall_us\": ", num(t.wall_us), "}");
    };
    json += str_cat(
        first ? "" : ",\n", "    {\"what\": \"", s.what, "\", \"batch\": ", s.batch,
        ", \"h\": ", s.size, ", \"w\": ", s.size, ", \"cin\": ", s.cin, ", \"cout\": ", s.cout,
        ", \"kernel\": ", s.kernel, ", \"stride\": ", s.stride, ", \"padding\": ", s.padding,
        ", \"m\": ", key.m, ", \"n\": ", key.n, ", \"k\": ", key.k, ",\n",
        "     \"conv_f16\": ", timing(c16), ", \"conv_w8a8\": ", timing(c8),
        ", \"conv_f16w\": ", timing(cw), ",\n", "     \"gemm_alone_f16\": ", timing(g16t),
        ", \"gemm_alone_w8a8\": ", timing(g8t), ", \"gemm_alone_f16w\": ", timing(gwt), ",\n",
        "     \"im2col\": {\"gpu_us\": ", num(im.gpu_us),
        ", \"gbytes_per_s\": ", num(im_bytes / (im.gpu_us * 1e-6) / 1e9, 0), "},",
        " \"im2col_share_f16\": ", num((c16.gpu_us - g16t.gpu_us) / c16.gpu_us, 3),
        ", \"auto_choice\": \"", chosen, "\", \"tuned_f16_us\": ", num(tune.f16.total_us),
        ", \"tuned_w8a8_us\": ", num(tune.w8a8.total_us),
        ", \"prepare_ms\": ", num(q8.prepare_ms, 1), ", \"w8a8_vs_f16_rel_l2\": ", num(agree, 5),
        "}");
    first = false;
  }
  json += "\n  ]\n}\n";
  return emit(json, out_path);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_gemm: %s\n", e.what());
    return 1;
  }
}

#else

#include <cstdio>

int main() {
  std::fprintf(stderr, "bench_cuda_gemm: built without the CUDA toolkit\n");
  return 1;
}

#endif

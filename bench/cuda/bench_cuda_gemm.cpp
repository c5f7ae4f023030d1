// bench_cuda_gemm: the CUDA backend's two GEMM candidates for linear layers at SD 1.5 UNet
// shapes, printing JSON that names the card.
//
//   bench_cuda_gemm [--reps N] [--out FILE]
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
#ifdef HYRT_HAVE_CUDA

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_kernels.h"
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
Timing time_calls(CudaBackend& b, int reps, F&& call) {
  cudaStream_t s = b.stream();
  for (int i = 0; i < 3; ++i)
    call();  // warm-up
  b.synchronize();
  std::vector<cudaEvent_t> ev(static_cast<size_t>(reps) + 1);
  for (auto& e : ev)
    HYRT_CUDA_CHECK(cudaEventCreate(&e));
  HYRT_CUDA_CHECK(backend::cuda::launch_spin(80.0 * reps, s));
  HYRT_CUDA_CHECK(cudaEventRecord(ev[0], s));
  for (int i = 0; i < reps; ++i) {
    call();
    HYRT_CUDA_CHECK(cudaEventRecord(ev[static_cast<size_t>(i) + 1], s));
  }
  b.synchronize();
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
  b.synchronize();
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

int run(int argc, char** argv) {
  int reps = 50;
  std::string out_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--out" && i + 1 < argc)
      out_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_cuda_gemm [--reps N] [--out FILE]\n");
      return 2;
    }
  }
  std::string why;
  std::unique_ptr<CudaBackend> b = backend::cuda::try_make_cuda_backend({}, &why);
  if (!b) {
    std::fprintf(stderr, "bench_cuda_gemm: no usable CUDA device: %s\n", why.c_str());
    return 1;
  }
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
        time_calls(*b, r, [&] { q8.kernel->run_candidate(GemmCandidate::kF16, ins, yv); });
    const std::vector<float> y16 = fetch(*b, yv);
    const Timing t8 =
        time_calls(*b, r, [&] { q8.kernel->run_candidate(GemmCandidate::kW8A8, ins, yv); });
    const std::vector<float> y8 = fetch(*b, yv);
    const Timing tw = time_calls(*b, r, [&] { f16w.kernel->run(ins16, yv); });
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
  json += "\n  ]\n}\n";
  std::fputs(json.c_str(), stdout);
  if (!out_path.empty()) {
    std::ofstream f(out_path);
    f << json;
    if (!f) {
      std::fprintf(stderr, "bench_cuda_gemm: cannot write %s\n", out_path.c_str());
      return 1;
    }
  }
  return 0;
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

// bench_cuda_attention: the CUDA backend's attention programs — hyrt's fused kernel in its
// forms and cuDNN's SDPA plan (cudnn_attention.h) — at SD 1.5 and SDXL shapes, printing JSON
// that names the card and the cuDNN it found.
//
//   bench_cuda_attention [--reps N] [--out FILE]
//
// 512x512 SD 1.5 images, batch 2 (CFG): self attention over the latent tokens (4096 at 64x64
// with 8 heads of 40, 1024 at 32x32 of 80, 256 at 16x16 and 64 at 8x8 of 160), cross
// attention of those queries over 77 text tokens, and CLIP's causal 77-token attention (12
// heads of 64); SD 1.5 at 1024² (16384 tokens of 8 x 40) and SDXL's 1024² levels (heads of 64).
// q, k, v, out dense f16 [B, T, H·D], random values. For each shape and form of the kernel:
//   gpu_us   median GPU time per call, events around each call, a spin kernel queued first
//            so the host enqueues all calls before the GPU reaches them;
//   tflops   4·B·H·Tq·Tk·D (halved for causal) / gpu_us — useful FLOPs, unpadded;
//   est_us   estimate_attention_us (the placement cost model) for comparison;
//   rel_l2   relative L2 distance of the output from the first form's;
//   cuDNN's form also gives plan_ms, the time to build its plan (heuristics + finalisation), and
//   the engine it chose; a shape cuDNN refuses gets its reason instead.
#ifdef HYRT_HAVE_CUDA

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "backend/cuda/attention_kernels.h"
#include "backend/cuda/cuda_attention.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_context.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cudnn_api.h"
#include "backend/cuda/cudnn_attention.h"
#include "core/error.h"
#include "core/half.h"
#include "ir/graph.h"

namespace {

using namespace hyrt;
using backend::cuda::CudaContext;
using backend::cuda::DeviceBuffer;
using backend::cuda::FlashAttentionParams;

struct ShapeSpec {
  int64_t batch, tq, tk;
  int heads, d;
  bool causal;
  const char* what;
};

const ShapeSpec kShapes[] = {
    {2, 4096, 4096, 8, 40, false, "self attention, 64x64"},
    {2, 4096, 77, 8, 40, false, "cross attention, 64x64"},
    {2, 1024, 1024, 8, 80, false, "self attention, 32x32"},
    {2, 1024, 77, 8, 80, false, "cross attention, 32x32"},
    {2, 256, 256, 8, 160, false, "self attention, 16x16"},
    {2, 256, 77, 8, 160, false, "cross attention, 16x16"},
    {2, 64, 64, 8, 160, false, "self attention, 8x8"},
    {2, 77, 77, 12, 64, true, "CLIP causal self attention"},
    {2, 16384, 16384, 8, 40, false, "SD 1.5 1024²: self, 128x128"},
    {2, 4096, 4096, 8, 80, false, "SD 1.5 1024²: self, 64x64"},
    {2, 4096, 4096, 10, 64, false, "SDXL 1024²: self, 64x64"},
    {2, 1024, 1024, 20, 64, false, "SDXL 1024²: self, 32x32"},
    {2, 4096, 77, 10, 64, false, "SDXL 1024²: cross, 64x64"},
};

// Forms of the kernel (FlashAttentionParams' rows_per_warp, rescale_slack, uncapped_registers);
// the first is the kernel as it was before the register cap, and the reference the others'
// outputs are compared with. Then cuDNN's plan (non-causal shapes only) and Hopper's kernel
// (launch_flash_attention_sm90, its shapes on sm_90) in its forms, at the default slack.
struct Form {
  const char* name;
  int rows_per_warp;
  float rescale_slack;
  bool uncapped_registers;
  bool cudnn = false;
  int sm90_groups = 0;  // Hopper's kernel (launch_flash_attention_sm90) with this many groups
  int sm90_key_tile = 0;
  int sm90_poly_exp_every = 0;
  int sm90_turns = 0;
  bool sm90_no_proxy_fence = false;
  bool sm90_no_fold = false;
  int sm90_deep = 0;
};
const Form kForms[] = {
    {"default (capped, rows by waves, slack 8)", 0, -1.0f, false},
    {"capped, 32 rows/warp", 32, -1.0f, false},
    {"cudnn", 0, 0.0f, false, true},
    // The kernel's default form first: run_attention_on_gpu.sh's `profile` takes the first launch.
    // Its default is the deep schedule at head 40 beyond two key tiles; "shallow" forms ask for
    // the one-tile schedule (sm90_deep -1), whose warp groups take turns at head 40.
    {"hopper, 3 warp groups", 0, -1.0f, false, false, 3, 64},
    {"hopper, 3 warp groups, shallow", 0, -1.0f, false, false, 3, 64, 0, 0, false, false, -1},
    {"hopper, 3 warp groups, shallow, turns", 0, -1.0f, false, false, 3, 64, 0, 1, false, false,
     -1},
    {"hopper, 3 warp groups, shallow, no turns", 0, -1.0f, false, false, 3, 64, 0, 2, false, false,
     -1},
    {"hopper, 3 warp groups, no proxy fence", 0, -1.0f, false, false, 3, 64, 0, 0, true},
    {"hopper, 2 warp groups", 0, -1.0f, false, false, 2, 64},
    {"hopper, 2 warp groups, 128 keys", 0, -1.0f, false, false, 2, 128},
    {"hopper, 3 warp groups, poly exp 1/4", 0, -1.0f, false, false, 3, 64, 4},
    {"hopper, 3 warp groups, no fold", 0, -1.0f, false, false, 3, 64, 0, 0, false, true},
    {"hopper, 3 warp groups, deep 4", 0, -1.0f, false, false, 3, 64, 0, 0, false, false, 4},
};

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

template <class F>
double gpu_us(const CudaContext& ctx, int reps, F&& call) {
  cudaStream_t s = ctx.stream();
  for (int i = 0; i < 3; ++i)
    call();  // warm-up
  HYRT_CUDA_CHECK(cudaStreamSynchronize(s));
  std::vector<cudaEvent_t> ev(static_cast<size_t>(reps) + 1);
  for (auto& e : ev)
    HYRT_CUDA_CHECK(cudaEventCreate(&e));
  HYRT_CUDA_CHECK(backend::cuda::launch_spin(30.0 * reps, s));
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
  return median(us);
}

std::string num(double v, int digits = 2) {
  if (!std::isfinite(v)) return "null";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

double estimate(const ShapeSpec& s) {
  ir::Graph g(DType::kF32);
  const ir::ValueId q = g.add_input("q", DType::kF32, Shape{s.batch, s.tq, s.heads * s.d});
  const ir::ValueId k = g.add_input("k", DType::kF32, Shape{s.batch, s.tk, s.heads * s.d});
  const ir::ValueId v = g.add_input("v", DType::kF32, Shape{s.batch, s.tk, s.heads * s.d});
  g.mark_output(g.add_node(ir::OpKind::kAttention, {q, k, v},
                           ir::AttentionAttrs{s.heads, 0.0f, s.causal}, "attn"));
  return backend::cuda::estimate_attention_us(g, g.nodes().back());
}

// --plans: what building cuDNN's plans costs when a UNet meets a new resolution: SD 1.5's six
// attention shapes (b2; self and cross at its three attention levels) per size, built one
// after another, then the next size's built on one thread each at once. Printed, not JSON.
void plan_costs(const backend::cuda::CudaContext& ctx) {
  using backend::cuda::CudnnAttentionPlan;
  using backend::cuda::CudnnAttentionShape;
  const auto shapes_at = [](int64_t side) {
    std::vector<CudnnAttentionShape> v;
    for (int level = 0; level < 3; ++level) {
      const int64_t t = (side / 8 >> level) * (side / 8 >> level), d = 40 << level;
      for (int64_t tk : {t, int64_t{77}}) {
        CudnnAttentionShape s;
        s.batch = 2, s.heads = 8, s.tq = t, s.tk = tk, s.d = s.dv = d;
        s.scale = 1.0f / std::sqrt(static_cast<float>(d));
        v.push_back(s);
      }
    }
    return v;
  };
  const auto ms_since = [](auto t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  for (int64_t side : {512, 1024, 768}) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const auto& s : shapes_at(side)) {
      CudnnAttentionPlan plan(s, ctx.stream());
      std::fprintf(stderr, "plan %s: %.1f ms (handle %.1f, heuristics %.1f)\n", s.key().c_str(),
                   plan.build_ms(), plan.handle_ms(), plan.heuristics_ms());
    }
    std::fprintf(stderr, "%lld²: six plans one after another: %.1f ms\n",
                 static_cast<long long>(side), ms_since(t0));
  }
  for (int64_t side : {640, 896}) {
    const auto shapes = shapes_at(side);
    std::vector<double> each(shapes.size());
    std::vector<std::string> errors(shapes.size());
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (size_t i = 0; i < shapes.size(); ++i)
      threads.emplace_back([&, i] {
        try {
          CudnnAttentionPlan plan(shapes[i], ctx.stream());
          each[i] = plan.build_ms();
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    for (auto& t : threads)
      t.join();
    std::fprintf(stderr, "%lld²: six plans on six threads at once: %.1f ms (each:",
                 static_cast<long long>(side), ms_since(t0));
    for (size_t i = 0; i < shapes.size(); ++i)
      std::fprintf(stderr, " %.1f%s", each[i], errors[i].empty() ? "" : errors[i].c_str());
    std::fprintf(stderr, ")\n");
  }
}

// Whether `name` holds one of the '|'-separated parts of `only` (bench --only).
bool names_match(std::string_view name, std::string_view only) {
  for (size_t start = 0; start <= only.size();) {
    const size_t end = std::min(only.find('|', start), only.size());
    if (name.find(only.substr(start, end - start)) != std::string_view::npos) return true;
    start = end + 1;
  }
  return false;
}

int run(int argc, char** argv) {
  int reps = 50;
  bool plans = false;
  std::string out_path;
  std::string only;  // --only A|B: the forms whose name holds A or B (and the reference form)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--plans")
      plans = true;
    else if (a == "--reps" && i + 1 < argc)
      reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--out" && i + 1 < argc)
      out_path = argv[++i];
    else if (a == "--only" && i + 1 < argc)
      only = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_cuda_attention [--reps N] [--out FILE] [--only TEXT] [--plans]\n");
      return 2;
    }
  }
  std::string why;
  const auto devices = backend::cuda::list_devices(&why);
  if (devices.empty()) {
    std::fprintf(stderr, "bench_cuda_attention: no CUDA device: %s\n", why.c_str());
    return 1;
  }
  const auto& d = devices[0];
  CudaContext ctx(d, 0);
  if (plans) {
    plan_costs(ctx);
    return 0;
  }
  std::string json = str_cat("{\n  \"bench\": \"cuda_attention\",\n  \"card\": \"", d.name,
                             "\",\n  \"compute_capability\": \"", d.compute_major, ".",
                             d.compute_minor, "\",\n  \"multiprocessors\": ", d.multiprocessors,
                             ",\n  \"cuda\": \"", backend::cuda::runtime_version_string(),
                             "\",\n  \"reps\": ", reps, ",\n  \"results\": [");
  std::fprintf(stderr, "%-28s %5s %5s %5s %3s %4s %9s %7s %7s %7s  %s\n", "shape", "B", "Tq", "Tk",
               "H", "D", "gpu_us", "TFLOP/s", "est_us", "rel_l2", "form");
  bool first = true;
  for (const ShapeSpec& s : kShapes) {
    const size_t nq = static_cast<size_t>(s.batch * s.tq * s.heads * s.d);
    const size_t nk = static_cast<size_t>(s.batch * s.tk * s.heads * s.d);
    DeviceBuffer q(nq * 2, "q"), k(nk * 2, "k"), v(nk * 2, "v"), out(nq * 2, "out");
    using backend::cuda::FloatType;
    HYRT_CUDA_CHECK(backend::cuda::launch_fill_random(
        q.data(), FloatType::kF16, static_cast<int64_t>(nq), 1, 1.0f, ctx.stream()));
    HYRT_CUDA_CHECK(backend::cuda::launch_fill_random(
        k.data(), FloatType::kF16, static_cast<int64_t>(nk), 2, 1.0f, ctx.stream()));
    HYRT_CUDA_CHECK(backend::cuda::launch_fill_random(
        v.data(), FloatType::kF16, static_cast<int64_t>(nk), 3, 1.0f, ctx.stream()));
    const double est = estimate(s);
    const double flops =
        4.0 * s.batch * s.heads * static_cast<double>(s.tq) * s.tk * s.d * (s.causal ? 0.5 : 1.0);
    std::vector<float> ref;
    for (const Form& f : kForms) {
      if (!only.empty() && &f != &kForms[0] && !names_match(f.name, only)) continue;
      std::unique_ptr<backend::cuda::CudnnAttentionPlan> plan;
      DeviceBuffer work;
      std::string extra;
      if (f.cudnn) {
        if (s.causal) continue;
        backend::cuda::CudnnAttentionShape cs;
        cs.batch = s.batch, cs.heads = s.heads, cs.tq = s.tq, cs.tk = s.tk, cs.d = cs.dv = s.d;
        cs.scale = 1.0f / std::sqrt(static_cast<float>(s.d));
        try {
          plan = std::make_unique<backend::cuda::CudnnAttentionPlan>(cs, ctx.stream());
        } catch (const std::exception& e) {
          std::fprintf(stderr, "%-28s cudnn refused: %s\n", s.what, e.what());
          continue;
        }
        if (plan->workspace_bytes() > 0) work = DeviceBuffer(plan->workspace_bytes(), "work");
        std::string engine = plan->engine();
        for (char& c : engine)
          if (c == '"' || c == '\\' || c == '\n') c = '\'';
        extra = str_cat(", \"plan_ms\": ", num(plan->build_ms()), ", \"engine\": \"", engine, "\"");
        std::fprintf(stderr, "%-28s cudnn plan %.1f ms (heuristics %.1f), workspace %zu: %s\n",
                     s.what, plan->build_ms(), plan->heuristics_ms(), plan->workspace_bytes(),
                     plan->engine().substr(0, 300).c_str());
      }
      FlashAttentionParams p;
      p.q = q.as<uint16_t>(), p.k = k.as<uint16_t>(), p.v = v.as<uint16_t>();
      p.out = out.as<uint16_t>();
      p.batch = s.batch, p.tq = s.tq, p.tk = s.tk, p.heads = s.heads, p.d = p.dv = s.d;
      p.ld_q = p.ld_k = p.ld_v = p.ld_out = s.heads * s.d;
      p.scale = 1.0f / std::sqrt(static_cast<float>(s.d));
      p.causal = s.causal;
      p.rows_per_warp = f.rows_per_warp, p.rescale_slack = f.rescale_slack;
      p.uncapped_registers = f.uncapped_registers;
      p.multiprocessors = d.multiprocessors;
      p.sm90_warp_groups = f.sm90_groups;
      p.sm90_key_tile = f.sm90_key_tile;
      p.sm90_poly_exp_every = f.sm90_poly_exp_every;
      p.sm90_turns = f.sm90_turns;
      p.sm90_no_proxy_fence = f.sm90_no_proxy_fence;
      p.sm90_no_fold = f.sm90_no_fold;
      p.sm90_deep = f.sm90_deep;
      if (f.sm90_groups &&
          (!backend::cuda::flash_attention_sm90_available(d.compute_major, d.compute_minor) ||
           !backend::cuda::flash_attention_sm90_takes(p)))
        continue;
      // Poisoned (f16 NaN) so that a form that writes nothing cannot pass for the last one.
      HYRT_CUDA_CHECK(cudaMemsetAsync(out.data(), 0xff, nq * 2, ctx.stream()));
      const double us = gpu_us(ctx, reps, [&] {
        if (plan)
          plan->run(q.data(), k.data(), v.data(), out.data(), work.data());
        else if (f.sm90_groups)
          HYRT_CUDA_CHECK(backend::cuda::launch_flash_attention_sm90(p, ctx.stream()));
        else
          HYRT_CUDA_CHECK(backend::cuda::launch_flash_attention(p, ctx.stream()));
      });
      // The output against the first form's (the run above left it in `out`).
      std::vector<uint16_t> bits(nq);
      HYRT_CUDA_CHECK(cudaMemcpy(bits.data(), out.data(), nq * 2, cudaMemcpyDeviceToHost));
      std::vector<float> got(nq);
      convert_to_f32(DType::kF16, bits.data(), got.data(), nq);
      double err = 0;
      if (ref.empty()) {
        ref = got;
      } else {
        double num = 0, den = 0;
        for (size_t i = 0; i < nq; ++i) {
          num += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
          den += static_cast<double>(ref[i]) * ref[i];
        }
        err = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
      }
      const double tflops = flops / us * 1e-6;
      std::fprintf(stderr, "%-28s %5lld %5lld %5lld %3d %4d %9.1f %7.1f %7.1f %.1e  %s\n", s.what,
                   static_cast<long long>(s.batch), static_cast<long long>(s.tq),
                   static_cast<long long>(s.tk), s.heads, s.d, us, tflops, est, err, f.name);
      json += str_cat(first ? "\n" : ",\n", "    {\"what\": \"", s.what, "\", \"batch\": ", s.batch,
                      ", \"tq\": ", s.tq, ", \"tk\": ", s.tk, ", \"heads\": ", s.heads,
                      ", \"d\": ", s.d, ", \"causal\": ", s.causal ? "true" : "false",
                      ", \"form\": \"", f.name, "\", \"gpu_us\": ", num(us),
                      ", \"tflops\": ", num(tflops), ", \"est_us\": ", num(est),
                      ", \"rel_l2_vs_first_form\": ", num(err, 6), extra, "}");
      first = false;
    }
  }
  json += "\n  ]\n}\n";
  std::printf("%s", json.c_str());
  if (!out_path.empty()) std::ofstream(out_path) << json;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda_attention: %s\n", e.what());
    return 1;
  }
}

#else

#include <cstdio>

int main() {
  std::fprintf(stderr, "bench_cuda_attention: built without CUDA\n");
  return 1;
}

#endif

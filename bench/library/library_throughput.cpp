// Images per second through the public API (include/hyrt/hyrt.h) when several threads call
// generate() on one Model at once, beside one thread calling it alone, in one process:
//
//   serial       one thread, one image per call, `images` calls one after another
//   threads      `threads` threads, one image per call, `images` calls in all, batched by the
//                runtime up to --max-batch images (RuntimeOptions::max_batch, default 8)
//   one_call     one thread, calls of batch `threads` (the same seed's rows; what request
//                batching can at best reach: one UNet batch of every waiting call)
//
// Each mode is warmed up (its shapes compiled), then timed `runs` times; the JSON reports
// the median images/s of each, the machine and the accelerator.
//
//   library_throughput --model M [--placement auto] [--size 512] [--steps 20]
//                      [--threads 4] [--images 8] [--runs 3] [--max-batch 8] [--json FILE]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/sysinfo.h"
#include "hyrt/hyrt.h"

namespace {

struct Args {
  std::string model;
  std::string placement = "auto";
  int size = 512;
  int steps = 20;
  int threads = 4;
  int images = 8;
  int runs = 3;
  int max_batch = 8;  // RuntimeOptions::max_batch for the threads mode's runtime
  std::string json;
};

// CLI11, as the hyrt tool: ranges checked, --help generated; exits on a bad command line.
Args parse(int argc, char** argv) {
  Args a;
  CLI::App app{"Images per second of threads calling hyrt's public API at once beside one thread"};
  app.add_option("--model", a.model, "Model path")->required();
  app.add_option("--placement", a.placement, "host, hybrid, device or auto")->capture_default_str();
  app.add_option("--size", a.size, "Square image side")
      ->check(CLI::Range(8, 4096))
      ->capture_default_str();
  app.add_option("--steps", a.steps, "DDIM steps")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--threads", a.threads, "Threads of the threads mode, batch of one_call")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--images", a.images, "Images per timed run")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--runs", a.runs, "Timed runs per mode")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--max-batch", a.max_batch, "RuntimeOptions::max_batch")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--json", a.json, "Also write the JSON to this file");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  return a;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

hyrt::GenerateOptions options(const Args& a, uint64_t seed, int batch) {
  hyrt::GenerateOptions o;
  o.prompt = "a red circle on a blue background";
  o.negative_prompt = "";
  o.width = o.height = a.size;
  o.steps = a.steps;
  o.cfg_scale = 7.0f;
  o.seed = seed;
  o.sampler = "ddim";
  o.batch = batch;
  return o;
}

// Seconds for `images` images made by `threads` threads, `batch` per call.
double timed(hyrt::Model& model, const Args& a, int threads, int batch) {
  const int calls = (a.images + batch - 1) / batch;
  std::atomic<int> next{0};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (int c; (c = next.fetch_add(1)) < calls;)
        model.generate(options(a, 1000 + static_cast<uint64_t>(c), batch));
    });
  for (auto& th : pool)
    th.join();
  return seconds_since(t0);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  const Args a = parse(argc, argv);
  hyrt::RuntimeOptions ro;
  ro.placement = a.placement;
  ro.max_batch = a.max_batch;  // the serial and one_call modes never have two calls waiting
  hyrt::Runtime rt(ro);
  const auto t_load = std::chrono::steady_clock::now();
  hyrt::Model model = rt.load(a.model);
  const double load_s = seconds_since(t_load);

  struct Mode {
    const char* name;
    int threads, batch;
    std::vector<double> images_per_s;
  };
  std::vector<Mode> modes = {
      {"serial", 1, 1, {}}, {"threads", a.threads, 1, {}}, {"one_call", 1, a.threads, {}}};
  for (Mode& m : modes)  // warm-up: compile every shape the mode runs
    model.generate(options(a, 1, m.batch));
  for (int r = 0; r < a.runs; ++r)
    for (Mode& m : modes) {
      const int calls = (a.images + m.batch - 1) / m.batch;
      m.images_per_s.push_back(calls * m.batch / timed(model, a, m.threads, m.batch));
    }

  const hyrt::HostCpu cpu = hyrt::host_cpu();
  std::string out = "{\n";
  out += "  \"bench\": \"library_throughput\",\n";
  out += "  \"host\": \"" + cpu.model + ", " + std::to_string(cpu.logical_cores) + " cores\",\n";
  out += "  \"accelerator\": \"" + rt.accelerator() + "\",\n";
  out += "  \"model\": \"" + a.model + "\",\n";
  out += "  \"placement\": \"" + a.placement + "\",\n";
  out += "  \"max_batch\": " + std::to_string(a.max_batch) + ",\n";
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "  \"size\": %d, \"steps\": %d, \"sampler\": \"ddim\", \"cfg_scale\": 7,\n"
                "  \"images_per_run\": %d, \"runs\": %d, \"load_s\": %.3f,\n",
                a.size, a.steps, a.images, a.runs, load_s);
  out += buf;
  out += "  \"modes\": {\n";
  const double base = median(modes[0].images_per_s);
  for (size_t i = 0; i < modes.size(); ++i) {
    const Mode& m = modes[i];
    std::string runs;
    for (double v : m.images_per_s)
      runs += (runs.empty() ? "" : ", ") + std::to_string(v);
    std::snprintf(buf, sizeof buf,
                  "    \"%s\": {\"threads\": %d, \"batch_per_call\": %d, \"images_per_s\": %.3f, "
                  "\"vs_serial\": %.3f, \"runs\": [%s]}%s\n",
                  m.name, m.threads, m.batch, median(m.images_per_s), median(m.images_per_s) / base,
                  runs.c_str(), i + 1 < modes.size() ? "," : "");
    out += buf;
  }
  out += "  }\n}\n";
  std::fputs(out.c_str(), stdout);
  if (!a.json.empty()) std::ofstream(a.json) << out;
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "library_throughput: %s\n", e.what());
  return 1;
}

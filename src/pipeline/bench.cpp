#include "pipeline/bench.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <thread>
#include <tuple>

#include "core/build_info.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"
#include "core/sysinfo.h"
#include "models/keys.h"
#include "models/sd15/random_weights.h"
#include "models/sdxl/configs.h"
#include "pipeline/diffusion_model.h"

namespace hyrt::pipeline {

namespace {

nlohmann::json stats(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  const double median = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  return {{"median_ms", median}, {"min_ms", ms.front()}, {"max_ms", ms.back()}, {"runs", n}};
}

// Times fn() `warmup` + `runs` times; the first call's time is reported separately (it
// includes building and preparing the executable for this shape). `settle` (optional) is
// called after the warmup runs: it waits until the kernels have their final programs
// (DiffusionModel::settle; until then they may run fallbacks), and one more untimed run then
// records the final programs' CUDA graphs, so that the timed runs measure the steady state.
// `timed` (optional) is called with true before the timed runs and false after them.
nlohmann::json time_stage(int warmup, int runs, const std::function<void()>& fn,
                          const std::function<void()>& settle,
                          const std::function<void(bool)>& timed = nullptr) {
  auto t0 = Clock::now();
  fn();
  const double first = ms_since(t0);
  for (int i = 1; i < warmup; ++i)
    fn();
  double settle_ms = 0.0;
  if (settle) {
    t0 = Clock::now();
    settle();
    settle_ms = ms_since(t0);
    fn();
  }
  if (timed) timed(true);
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    t0 = Clock::now();
    fn();
    ms.push_back(ms_since(t0));
  }
  if (timed) timed(false);
  nlohmann::json j = stats(ms);
  j["first_call_ms"] = first;
  if (settle) j["settle_wait_ms"] = settle_ms;  // after the warmup runs
  return j;
}

Tensor random_tensor(Shape s, uint64_t seed) {
  Tensor t(DType::kF32, s);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  for (int64_t i = 0; i < t.numel(); ++i)
    t.as<float>()[i] = d(rng);
  return t;
}

}  // namespace

// One model, one size, one weight variant.
// A random LoRA of `rank` on every attention projection and feed-forward linear of the UNet
// (kohya names), f16 as LoRAs ship, small values.
std::shared_ptr<const weights::LoraFile> random_unet_lora(const models::UNetConfig& unet, int rank,
                                                          uint64_t seed) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const models::ExpectedTensor& e : models::expected_unet_tensors(unet)) {
    const std::string& n = e.name;
    const bool attn =
        n.find(".attn1.to_") != std::string::npos || n.find(".attn2.to_") != std::string::npos;
    const bool ff =
        n.find(".ff.net.0.proj.") != std::string::npos || n.find(".ff.net.2.") != std::string::npos;
    if (!(attn || ff) || e.shape.rank() != 2 || n.substr(n.size() - 7) != ".weight") continue;
    std::string key = "lora_unet_" + n.substr(5, n.size() - 5 - 7);
    std::replace(key.begin(), key.end(), '.', '_');
    const int64_t out = e.shape[0], in = e.shape[1];
    for (auto [suffix, shape, scale] :
         {std::tuple{".lora_down.weight", Shape{rank, in}, 1.0f / std::sqrt(float(in))},
          std::tuple{".lora_up.weight", Shape{out, rank}, 0.01f}}) {
      const Tensor r = random_tensor(shape, seed++);
      Tensor h(DType::kF16, shape, "a random LoRA");
      for (int64_t i = 0; i < r.numel(); ++i)
        h.as<uint16_t>()[i] = f32_to_f16(r.as<float>()[i] * scale);
      tensors.emplace_back(key + suffix, std::move(h));
    }
  }
  std::vector<std::pair<std::string, TensorView>> views;
  for (const auto& [n, t] : tensors)
    views.emplace_back(n, t.view());
  return weights::LoraFile::from_file(
      weights::SafetensorsFile::from_bytes(weights::serialize_safetensors(views), "random LoRA"),
      str_cat("random rank-", rank, " LoRA"));
}

// issue 17's LoRA figures (BenchOptions::lora_rank); `step` runs one UNet step, `plain` is the
// step without LoRAs measured just before. The step with and without the LoRA is also timed in
// alternation (a steady step after each switch), so a noisy machine affects both alike.
nlohmann::json bench_lora(DiffusionModel& model, const BenchOptions& o,
                          const std::function<void()>& step, const nlohmann::json& plain) {
  const auto a = random_unet_lora(model.unet_config(), o.lora_rank, 100);
  const auto b = random_unet_lora(model.unet_config(), o.lora_rank, 200);
  const int64_t rss_before = current_rss_bytes();
  // A switch: set the LoRAs, run the first step (compiling the adapted UNet, base weights from
  // the caches), the second (where an accelerator records its CUDA graphs), then — once the new
  // kernels have settled (settle_ms: e.g. cuDNN's attention plans, built in the background,
  // which the first steps run without; time_stage waits for them too) and one more step has
  // recorded its graphs with them — a steady one. switch_ms = setting + the compile;
  // first_step_extra_ms = first step - steady step (the compile and the first run's one-time
  // work, e.g. uploads).
  auto timed = [&](const std::shared_ptr<const weights::LoraFile>& f, float mult) {
    const weights::LoraUse use{f, mult};
    nlohmann::json j;
    auto t0 = Clock::now();
    model.set_loras(f ? std::span<const weights::LoraUse>(&use, 1)
                      : std::span<const weights::LoraUse>{});
    j["set_loras_ms"] = ms_since(t0);
    t0 = Clock::now();
    step();
    const double first = ms_since(t0);
    j["compile_ms"] = model.last_compile_ms();
    t0 = Clock::now();
    step();
    j["second_step_ms"] = ms_since(t0);
    t0 = Clock::now();
    model.settle();
    j["settle_ms"] = ms_since(t0);
    step();  // (where kernels settled since the capture, this step records its graphs again)
    t0 = Clock::now();
    step();
    const double steady = ms_since(t0);
    j["first_step_ms"] = first;
    j["steady_step_ms"] = steady;
    j["first_step_extra_ms"] = first - steady;
    j["switch_ms"] = j["set_loras_ms"].get<double>() + model.last_compile_ms();
    return j;
  };
  nlohmann::json out = timed(a, 1.0f);
  out["rank"] = o.lora_rank;
  out["layers"] = a->modules().size();
  out["lora_file_bytes"] = a->bytes();
  out["adapter_bytes"] = model.lora_bytes();
  out["rss_growth_bytes"] = current_rss_bytes() - rss_before;
  const nlohmann::json steady = time_stage(o.warmup, o.runs, step, [&] { model.settle(); });
  out["step"] = steady;
  if (plain.contains("median_ms"))
    out["ratio_to_plain_step"] =
        steady["median_ms"].get<double>() / plain["median_ms"].get<double>();
  out["multiplier_switch"] = timed(a, 0.5f);
  out["lora_switch"] = timed(b, 1.0f);
  out["rss_growth_after_switches_bytes"] = current_rss_bytes() - rss_before;
  // Alternation: plain, LoRA, plain, LoRA... (each a steady step after its switch).
  // Each switch back to the LoRA is one more sample of a switch's cost (set + compile; the
  // adapted UNet is compiled anew each time), and of set_loras alone.
  std::vector<double> with, without, ratios, switches, sets;
  for (int i = 0; i < std::max(3, o.runs); ++i) {
    without.push_back(timed(nullptr, 0.0f)["steady_step_ms"].get<double>());
    const nlohmann::json back = timed(a, 1.0f);
    with.push_back(back["steady_step_ms"].get<double>());
    switches.push_back(back["switch_ms"].get<double>());
    sets.push_back(back["set_loras_ms"].get<double>());
    ratios.push_back(with.back() / without.back());
  }
  nlohmann::json ratio = stats(ratios);
  for (const char* k : {"median_ms", "min_ms", "max_ms"}) {  // ratios, not milliseconds
    ratio[std::string(k).substr(0, std::string(k).size() - 3)] = ratio[k];
    ratio.erase(k);
  }
  out["alternating"] = {{"plain", stats(without)},
                        {"lora", stats(with)},
                        {"ratio", ratio},
                        {"switch_to_lora", stats(switches)},
                        {"set_loras", stats(sets)}};
  model.set_loras({});
  return out;
}

static nlohmann::json run_single(const BenchOptions& o) {
  HYRT_CHECK(o.runs >= 1 && o.warmup >= 1, kInvalidArgument, "runs and warmup must be >= 1");
  exec::EngineOptions eo;
  eo.num_threads = o.threads;
  eo.profile = o.profile;
  eo.profile_shapes = o.profile_shapes;
  eo.int8_mode = o.int8_mode;
  eo.float_precision = o.float_precision;
  eo.placement = o.placement;
  eo.autotune = o.autotune;
  eo.overlap = o.overlap;
  eo.reuse_invariant = o.reuse_invariant;
  eo.fuse_epilogues = o.fuse_epilogues;
  eo.device_residual_fusion = o.device_residual_fusion;
  exec::Engine engine(eo);
  const HostCpu host = host_cpu();
  nlohmann::json out;
  out["hyrt_version"] = HYRT_VERSION_STRING;
  out["machine"] = {{"cpu", host.model},
                    {"logical_cores", host.logical_cores},
                    {"threads", num_threads()},
                    {"isa", host.isa},
                    {"gemm_library", engine.host().library()}};
  out["config"] = {
      {"model", o.model},
      {"width", o.width},
      {"height", o.height},
      {"unet_batch", o.unet_batch},
      {"runs", o.runs},
      {"warmup", o.warmup},
      {"placement", plan::placement_mode_name(o.placement)},
      {"autotune", o.autotune},
      {"overlap", o.overlap},
      {"reuse_invariant", o.reuse_invariant},
      {"fuse_epilogues", o.fuse_epilogues},
      {"device_residual_fusion", o.device_residual_fusion},
      {"accelerator", engine.accelerator() ? engine.accelerator_status() : "none"},
      {"activations", engine.accelerator() ? "f32 host, f16 device" : "f32"},
      {"weights", o.model_options.quantize_int8 ? "int8 (quantized on load)" : "as stored"},
      {"int8_mode", backend::int8_mode_name(o.int8_mode)},
      {"host_float_precision", backend::float_precision_name(engine.host_float_precision())},
      {"vae_int8_mode",
       backend::int8_mode_name(o.model_options.vae_int8_mode.value_or(o.int8_mode))}};

  auto t0 = Clock::now();
  std::unique_ptr<DiffusionModel> model;
  if (o.model.rfind("random:", 0) == 0) {
    const std::string size = o.model.substr(7);
    HYRT_CHECK(size == "sd15" || size == "tiny" || size == "sdxl" || size == "sdxl-tiny",
               kInvalidArgument, "unknown random model '", o.model,
               "' (random:sd15, random:tiny, random:sdxl or random:sdxl-tiny)");
    models::ModelConfigs c;
    if (size == "sdxl") {
      c = models::sdxl::base_configs();
    } else if (size == "sdxl-tiny") {
      c = models::sdxl::tiny_configs();
    } else {
      using namespace models::sd15;
      c.text_encoder = size == "tiny" ? tiny_clip_text_config() : models::ClipTextConfig{};
      c.unet = size == "tiny" ? tiny_unet_config() : models::UNetConfig{};
      c.vae = size == "tiny" ? tiny_vae_config() : models::VaeConfig{};
    }
    auto w = std::make_unique<weights::MemoryWeights>();
    using models::sd15::add_random_weights;
    add_random_weights(models::expected_text_encoder_tensors(*c.text_encoder), 1, DType::kF16, *w);
    if (c.text_encoder_2)
      add_random_weights(models::expected_text_encoder_tensors(*c.text_encoder_2,
                                                               weights::Component::kTextEncoder2),
                         4, DType::kF16, *w);
    add_random_weights(models::expected_unet_tensors(*c.unet), 2, DType::kF16, *w);
    add_random_weights(models::expected_vae_tensors(*c.vae, /*decoder_only=*/true), 3, DType::kF16,
                       *w);
    model = DiffusionModel::from_memory(std::move(w), std::move(c), engine, o.model_options);
  } else {
    model = DiffusionModel::open(o.model, engine, o.model_options);
  }
  out["load_ms"] = ms_since(t0);
  out["stored_weight_bytes"] = model->weight_bytes();
  if (!model->int8_weights()) {  // the int8 modes do not apply to a 16/32-bit run
    out["config"]["int8_mode"] = "none";
    out["config"]["vae_int8_mode"] = "none";
  }

  const int f = model->vae_scale_factor();
  HYRT_CHECK(o.width % f == 0 && o.height % f == 0, kInvalidArgument, "size must be a multiple of ",
             f);
  const int lh = o.height / f, lw = o.width / f;
  const auto& uc = model->unet_config();
  const auto& tc = model->text_config();
  nlohmann::json stages;
  // --profile: each executable's op times over a stage's timed runs only, per run (the
  // warm-up's first call also times one-time work: first launches, lazily made programs).
  nlohmann::json per_run_profile = nlohmann::json::object();
  std::vector<std::pair<std::string, std::vector<exec::OpProfile>>> before_timed;
  const auto settle = [&] { model->settle(); };
  auto profile_window = [&](bool starting) {
    if (!o.profile) return;
    if (starting) {
      before_timed = model->op_profiles();
      return;
    }
    for (const auto& [exe, ops] : model->op_profiles())
      for (const exec::OpProfile& op : ops) {
        int calls = op.count;
        double ms = op.total_ms;
        for (const auto& [exe0, ops0] : before_timed)
          if (exe0 == exe)
            for (const exec::OpProfile& op0 : ops0)
              if (op0.op == op.op) {
                calls -= op0.count;
                ms -= op0.total_ms;
              }
        if (calls > 0)
          per_run_profile[exe][op.op] = {{"calls", static_cast<double>(calls) / o.runs},
                                         {"ms", ms / o.runs}};
      }
  };

  if (o.text_encoder) {
    std::vector<int32_t> ids(static_cast<size_t>(o.unet_batch) * tc.max_position_embeddings,
                             tc.eos_token_id);
    for (int b = 0; b < o.unet_batch; ++b)
      ids[static_cast<size_t>(b) * tc.max_position_embeddings] = tc.bos_token_id;
    // Every text encoder the model has (SDXL: both, and the second's pooled projection).
    stages["text_encoder"] = time_stage(
        o.warmup, o.runs,
        [&] {
          for (int e = 0; e < model->num_text_encoders(); ++e)
            model->encode_tokens(e, ids, o.unet_batch);
        },
        settle, profile_window);
  }
  if (o.unet) {
    const Tensor x = random_tensor({o.unet_batch, lh, lw, uc.in_channels}, 1);
    const Tensor ctx =
        random_tensor({o.unet_batch, tc.max_position_embeddings, uc.cross_attention_dim}, 2);
    std::vector<float> t(static_cast<size_t>(o.unet_batch), 500.0f);
    // SDXL's added conditioning: a pooled embedding and the default size micro-conditioning.
    UNetConditioning cond{.context = ctx.view()};
    Tensor pooled;
    std::vector<float> time_ids;
    if (uc.text_time_embedding()) {
      pooled = random_tensor({o.unet_batch, uc.pooled_text_dim()}, 5);
      for (int b = 0; b < o.unet_batch; ++b)
        for (int v : {o.height, o.width, 0, 0, o.height, o.width})
          time_ids.push_back(static_cast<float>(v));
      cond.text_embeds = pooled.view();
      cond.time_ids = time_ids;
    }
    if (!o.resize || o.sizes.empty())
      stages["unet_step"] = time_stage(
          o.warmup, o.runs, [&] { model->predict_noise(x.view(), t, cond); }, settle,
          profile_window);
    if (o.lora_rank > 0)
      stages["unet_step_lora"] = bench_lora(
          *model, o, [&] { model->predict_noise(x.view(), t, cond); }, stages["unet_step"]);
    if (o.resize) {
      nlohmann::json sizes = nlohmann::json::array();
      for (const auto& [sw, sh] : o.sizes) {
        HYRT_CHECK(sw % f == 0 && sh % f == 0, kInvalidArgument, "size must be a multiple of ", f);
        const Tensor xs = random_tensor({o.unet_batch, sh / f, sw / f, uc.in_channels}, 4);
        // The size conditioning follows the resolution, as a pipeline's would.
        std::vector<float> size_ids;
        UNetConditioning scond = cond;
        if (uc.text_time_embedding()) {
          for (int b = 0; b < o.unet_batch; ++b)
            for (int v : {sh, sw, 0, 0, sh, sw})
              size_ids.push_back(static_cast<float>(v));
          scond.time_ids = size_ids;
        }
        if (o.idle_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o.idle_ms));
        nlohmann::json j = time_stage(
            o.warmup, o.runs, [&] { model->predict_noise(xs.view(), t, scond); }, settle);
        if (o.idle_ms > 0) j["idle_before_ms"] = o.idle_ms;
        j["size"] = std::to_string(sw) + "x" + std::to_string(sh);
        j["shape_change_ms"] = j["first_call_ms"].get<double>() - j["median_ms"].get<double>();
        sizes.push_back(std::move(j));
      }
      stages["unet_step_resize"] = sizes;
    }
  }
  if (o.vae) {
    const Tensor z = random_tensor({1, lh, lw, model->vae_config().latent_channels}, 3);
    stages["vae_decode"] = time_stage(
        o.warmup, o.runs, [&] { model->decode_latents(z.view(), true); }, settle, profile_window);
    if (!o.taesd.empty()) {
      model->set_tiny_vae(weights::TinyAutoencoderWeights::open(o.taesd));
      nlohmann::json tiny = time_stage(
          o.warmup, o.runs, [&] { model->decode_latents_tiny(z.view()); }, settle, profile_window);
      tiny["taesd"] = o.taesd;
      tiny["speedup_over_vae"] =
          stages["vae_decode"]["median_ms"].get<double>() / tiny["median_ms"].get<double>();
      stages["tiny_vae_decode"] = std::move(tiny);
    }
  }
  out["stages"] = stages;
  nlohmann::json arenas = nlohmann::json::array();
  for (const auto& m : model->memory_report()) {
    nlohmann::json prep;
    for (const auto& op : m.prepare_by_op)
      prep[op.op] = {{"nodes", op.count}, {"ms", op.total_ms}};
    arenas.push_back({{"component", m.component},
                      {"prepare_ms_by_op", prep},
                      {"shape", m.shape},
                      {"arena_bytes", m.arena_bytes},
                      {"arena_lower_bound_bytes", m.arena_lower_bound},
                      {"device_arena_bytes", m.device_arena_bytes},
                      {"copy_bytes_per_run", m.copy_bytes},
                      {"captured_steps", m.captured_steps},
                      {"invariant_steps", m.invariant_steps},
                      {"reused_runs", m.reused_runs},
                      {"prepare_ms", m.prepare_ms},
                      {"placement", m.placement}});
  }
  out["scratch_arenas"] = arenas;
  if (o.profile) {
    nlohmann::json prof;
    for (const auto& [exe, ops] : model->op_profiles()) {
      nlohmann::json e;
      for (const auto& op : ops)
        e[op.op] = {{"calls", op.count}, {"total_ms", op.total_ms}};
      prof[exe] = e;
    }
    out["op_profile_all_runs"] = prof;
    out["op_profile_per_timed_run"] = per_run_profile;
    out["op_profile_method"] =
        "host ops: a clock read around each (synchronous kernels); device ops: timestamps in the "
        "device's queue around each (CUDA events), read after the run: no wait per op, no "
        "CUDA-graph replay while profiling";
  }
  if (backend::Backend* a = engine.accelerator())
    out["accelerator_memory"] = {{"scratch_bytes", a->scratch_bytes()},
                                 {"resident_weight_bytes", a->resident_weight_bytes()}};
  out["peak_rss_bytes"] = peak_rss_bytes();
  out["rss_bytes"] = current_rss_bytes();
  // Asked last: naming a library may open it (cuDNN), which neither the timed steps nor the
  // memory figures should pay for where the backend would open it off the first step or not at
  // all.
  if (const backend::Backend* a = engine.accelerator())
    out["machine"]["accelerator_libraries"] = a->library();
  return out;
}

// The 1-, 5- and 15-minute load averages: a benchmark on a busy machine says so.
static nlohmann::json load_average() {
  double l[3] = {0, 0, 0};
  if (FILE* f = std::fopen("/proc/loadavg", "r")) {
    if (std::fscanf(f, "%lf %lf %lf", &l[0], &l[1], &l[2]) != 3) l[0] = l[1] = l[2] = -1;
    std::fclose(f);
  }
  return {l[0], l[1], l[2]};
}

nlohmann::json run_bench(const BenchOptions& o) {
  if (o.variants.empty() && o.placements.empty()) {
    nlohmann::json out = run_single(o);
    out["machine"]["load_average_end"] = load_average();
    return out;
  }
  for (const std::string& v : o.variants)
    HYRT_CHECK(v == "f32" || v == "bf16" || v == "w8" || v == "w8a8", kInvalidArgument,
               "unknown variant '", v, "' (f32, bf16, w8 or w8a8)");
  // "" = the weights and mode as configured; the configured placement likewise.
  const std::vector<std::string> variants =
      o.variants.empty() ? std::vector<std::string>{""} : o.variants;
  std::vector<plan::PlacementMode> placements;
  for (const std::string& p : o.placements)
    placements.push_back(plan::parse_placement_mode(p));
  if (placements.empty()) placements.push_back(o.placement);
  nlohmann::json out;
  const nlohmann::json load_start = load_average();
  nlohmann::json rows = nlohmann::json::array(), speedups;
  std::vector<std::pair<int, int>> wh;
  for (const auto& s : o.sizes)
    wh.emplace_back(s[0], s[1]);
  if (wh.empty()) wh.emplace_back(o.width, o.height);
  // A row's name in the speed-ups: the variant, the placement, or both when both vary.
  auto label_of = [&](const std::string& v, plan::PlacementMode pm) {
    const std::string pname(plan::placement_mode_name(pm));
    if (v.empty()) return pname;
    return placements.size() > 1 ? v + "/" + pname : v;
  };
  for (const auto& [w, h] : wh) {
    const std::string size = std::to_string(w) + "x" + std::to_string(h);
    std::map<std::string, double> unet_median;
    for (const std::string& v : variants)
      for (plan::PlacementMode pm : placements) {
        BenchOptions one = o;
        one.width = w;
        one.height = h;
        one.placement = pm;
        one.resize = false;
        if (!v.empty()) {
          one.model_options.quantize_int8 = v == "w8" || v == "w8a8";
          one.int8_mode = v == "w8" ? backend::Int8Mode::kW8 : backend::Int8Mode::kW8A8;
          if (v == "f32") one.float_precision = backend::FloatPrecision::kF32;
          if (v == "bf16") one.float_precision = backend::FloatPrecision::kBF16;
        }
        const std::string pname(plan::placement_mode_name(pm));
        const std::string label = label_of(v, pm);
        nlohmann::json r = run_single(one);
        if (!out.contains("machine")) {
          out["hyrt_version"] = r["hyrt_version"];
          out["machine"] = r["machine"];
        }
        nlohmann::json row = {
            {"size", size},
            {"variant", v.empty() ? "as configured" : v},
            {"placement", pname},
            {"config", r["config"]},
            {"load_ms", r["load_ms"]},
            {"stages", r["stages"]},
            {"scratch_arenas", r["scratch_arenas"]},
            {"accelerator_memory", r.value("accelerator_memory", nlohmann::json())},
            {"peak_rss_bytes", r["peak_rss_bytes"]},
            {"rss_bytes", r["rss_bytes"]}};
        if (r.contains("op_profile_all_runs"))
          row["op_profile_all_runs"] = r["op_profile_all_runs"];
        if (r["stages"].contains("unet_step"))
          unet_median[label] = r["stages"]["unet_step"]["median_ms"].get<double>();
        rows.push_back(std::move(row));
        std::fprintf(stderr, "bench: %s %s done\n", size.c_str(), label.c_str());
      }
    // Speed-ups over the first variant (f32 when given) / placement (host when given).
    const std::string base = label_of(variants[0], placements[0]);
    if (unet_median.count(base))
      for (const auto& [v, ms] : unet_median)
        if (v != base) speedups[size][v + " vs " + base] = unet_median[base] / ms;
  }
  out["machine"]["load_average_start"] = load_start;
  out["machine"]["load_average_end"] = load_average();
  out["comparison"] = rows;
  out["unet_step_speedup"] = speedups;
  out["note"] =
      "peak_rss_bytes is the process's peak so far: rows after the first include earlier ones";
  return out;
}

}  // namespace hyrt::pipeline

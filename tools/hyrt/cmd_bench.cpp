// `hyrt bench` — stage timings as JSON (pipeline/bench.h).
#include <cstdio>
#include <fstream>

#include "commands.h"
#include "core/error.h"
#include "pipeline/bench.h"
#include "pipeline/precision.h"

namespace hyrt::cli {
namespace {

CommandRegistrar reg(40, [](CLI::App& app) {
  auto o = std::make_shared<pipeline::BenchOptions>();
  auto out = std::make_shared<std::string>();
  auto only = std::make_shared<std::string>();
  auto* c = app.add_subcommand(
      "bench",
      "Time the stages of a model (load, text encoder, UNet step, VAE decode): warm-up, then the "
      "median/min/max of repeated runs, with machine details, arena bytes and peak RSS, as JSON");
  c->add_option("-m,--model", o->model,
                "Model path, or random:sd15 / random:tiny for random weights built in memory")
      ->required();
  auto config_dir = std::make_shared<std::string>();
  c->add_option("--config-dir", *config_dir, "Config folder for single-file checkpoints");
  c->add_option("-W,--width", o->width, "Image width")
      ->check(CLI::Range(8, 16384))
      ->capture_default_str();
  c->add_option("-H,--height", o->height, "Image height")
      ->check(CLI::Range(8, 16384))
      ->capture_default_str();
  c->add_option("-b,--batch", o->unet_batch, "UNet batch (2 = one image with CFG)")
      ->check(CLI::Range(1, 128))
      ->capture_default_str();
  c->add_option("--runs", o->runs, "Timed runs per stage")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  c->add_option("--warmup", o->warmup, "Untimed runs first (the first also prepares)")
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  c->add_option("--only", *only, "Comma-separated stages: text,unet,vae");
  c->add_flag("--profile", o->profile,
              "Add per-op-kind times (summed over all runs) to the JSON: host ops by the clock, "
              "GPU ops by CUDA events in the stream (no wait per op; CUDA graphs off)");
  c->add_flag("--profile-shapes", o->profile_shapes,
              "With --profile: each op kind apart per shape (GEMM, convolution and attention "
              "shapes, weight dtypes), to see which layers the time goes to");
  c->add_option("-t,--threads", o->threads, "Host threads (default: all cores)")
      ->check(CLI::Range(0, 1 << 20));
  auto precision = std::make_shared<std::string>("auto");
  add_precision_option(c, precision.get());
  c->add_flag("--int8", o->model_options.quantize_int8,
              "Quantize 16-bit weights to 8-bit S (int8) on load");
  auto int8 = std::make_shared<Int8Choice>();
  add_int8_mode_option(c, int8.get());
  c->add_option("--compare", o->variants,
                "Side by side in one run: f32,bf16,w8,w8a8 (weights as stored in f32 or bf16 "
                "arithmetic, or quantized on load and run as W8 / W8A8), each with a fresh model; "
                "reports speed-ups over the first")
      ->delimiter(',');
  auto sizes = std::make_shared<std::vector<std::string>>();
  c->add_option("--sizes", *sizes,
                "With --compare/--placements (or --resize): sizes in pixels, square (512) or "
                "WIDTHxHEIGHT (832x1216), e.g. 512,768,832x1216")
      ->delimiter(',')
      ->each([o, sizes](const std::string& v) {  // `sizes` must outlive parsing
        const size_t x = v.find('x');
        try {
          size_t used = 0;
          const int w = std::stoi(v.substr(0, x), &used);
          const int h = x == std::string::npos ? w : std::stoi(v.substr(x + 1));
          if (w <= 0 || h <= 0 || w > 8192 || h > 8192) throw std::out_of_range(v);
          o->sizes.push_back({w, h});
        } catch (const std::exception&) {
          throw CLI::ValidationError("--sizes", "expected N or WIDTHxHEIGHT, got '" + v + "'");
        }
      });
  auto placement = std::make_shared<std::string>("auto");
  add_placement_option(c, placement.get());
  c->add_option("--placements", o->placements,
                "Side by side in one run: e.g. host,hybrid,device,auto (fresh engine each)")
      ->delimiter(',');
  c->add_option("--lora-rank", o->lora_rank,
                "Also time the UNet step with a random LoRA of this rank on every attention and "
                "feed-forward layer (beside the plain step, in the same run), and what switching "
                "to another multiplier or another LoRA costs before the next step")
      ->check(CLI::Range(0, 1024));
  c->add_option("--taesd", o->taesd,
                "Also time this TAESD decoder's decode beside the VAE's (the vae stage)")
      ->check(CLI::ExistingPath);
  c->add_flag("--resize", o->resize,
              "With --sizes: one engine runs the UNet step at each size in turn and reports "
              "what each new shape cost before its first step (shape_change_ms)");
  c->add_option("--idle-ms", o->idle_ms,
                "With --resize: idle this long before each size's first call, as a pause "
                "between pictures would (the first call then starts from an idle accelerator)")
      ->check(CLI::Range(0, 60000));
  add_autotune_option(c, &o->autotune);
  c->add_flag("!--no-overlap", o->overlap,
              "Run host and accelerator work one after another (no asynchronous copies, no "
              "per-sample UNet chains in hybrid placement): the baseline for what overlap gains");
  c->add_flag("!--no-reuse", o->reuse_invariant,
              "Compute the UNet's text-only work (cross-attention keys and values) in every "
              "step instead of once while the prompt stays the same: the baseline for what "
              "keeping it gains");
  c->add_flag("!--no-fusion", o->fuse_epilogues,
              "Run the activation and residual add after each linear/conv as separate nodes "
              "instead of fused into the GEMM: the baseline for what fusion gains");
  c->add_flag("--device-residual-fusion", o->device_residual_fusion,
              "Also fold residual adds into the GPU's GEMMs (cuBLASLt beta·C): ~1 % faster steps "
              "and a smaller arena, but a slower first step at each new resolution");
  c->add_option("--json", *out, "Also write the JSON to this file");
  c->callback([o, out, only, int8, config_dir, placement, precision] {
    o->placement = plan::parse_placement_mode(*placement);
    const pipeline::PrecisionSettings ps =
        pipeline::precision_settings(pipeline::parse_precision(*precision));
    o->float_precision = ps.float_precision;
    o->model_options.quantize_int8 |= ps.quantize_int8;
    o->int8_mode = int8->mode_or(ps.int8_mode);
    o->model_options.vae_int8_mode = int8->vae_mode();
    if (!config_dir->empty()) o->model_options.config_dir = *config_dir;
    if (!only->empty()) {
      o->text_encoder = only->find("text") != std::string::npos;
      o->unet = only->find("unet") != std::string::npos;
      o->vae = only->find("vae") != std::string::npos;
    }
    const auto j = pipeline::run_bench(*o);
    const std::string text = j.dump(2);
    std::printf("%s\n", text.c_str());
    if (!out->empty()) {
      std::ofstream f(*out);
      f << text << "\n";
      HYRT_CHECK(f.good(), kIo, "cannot write ", *out);
    }
  });
});

}  // namespace
}  // namespace hyrt::cli

// `hyrt quantize IN OUT [--config-dir DIR] [--refit-iterations N] [--keep PATTERN]...
//  [--verbose]`: writes IN (a diffusers folder, an LDM single file or a hyrt file) as one
// hyrt model file with "8-bit S" int8 weights (weights/hyrt_format.h, weights/quantize.h):
// configs, scheduler config and tokenizer inside, so OUT is all `hyrt generate` needs.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "models/config.h"
#include "models/keys.h"
#include "weights/checkpoint.h"
#include "weights/hyrt_format.h"

namespace hyrt::cli {
namespace {

namespace fs = std::filesystem;
using weights::Component;

struct QuantizeOptions {
  std::string in;
  std::string out;
  std::string config_dir;
  int refit_iterations = weights::kDefaultRefitIterations;
  std::vector<std::string> keep;
  bool verbose = false;
};

// Places a tokenizer or scheduler config may be, as DiffusionModel looks: the model itself (its
// own copy, via the Checkpoint), the config folder, beside a single file.
std::vector<fs::path> side_roots(const weights::Checkpoint& ck, const QuantizeOptions& opt) {
  std::vector<fs::path> roots;
  if (!opt.config_dir.empty()) roots.emplace_back(opt.config_dir);
  if (ck.format() != weights::CheckpointFormat::kDiffusersFolder) {
    const fs::path parent = fs::path(opt.in).parent_path();
    roots.push_back(parent.empty() ? "." : parent);
  }
  return roots;
}

std::string megabytes(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f MB", bytes / 1e6);
  return buf;
}

void run_quantize(const QuantizeOptions& opt) {
  const auto ck = weights::Checkpoint::open(opt.in);
  std::optional<fs::path> config_dir;
  if (!opt.config_dir.empty()) config_dir = opt.config_dir;
  const models::ModelConfigs configs = models::load_configs(*ck, config_dir);
  const auto keys = models::check_checkpoint_keys(*ck, configs);
  if (!keys.ok())
    std::fprintf(stderr,
                 "warning: %s: %zu missing, %zu shape-mismatched, %zu unexpected keys "
                 "(`hyrt info` lists them); writing what is there\n",
                 opt.in.c_str(), keys.missing.size(), keys.shape_mismatch.size(),
                 keys.unexpected.size());

  weights::HyrtWriteOptions w;
  w.refit_iterations = opt.refit_iterations;
  w.policy.keep = opt.keep;
  const auto texts = models::configs_to_json_texts(configs);
  for (size_t i = 0; i < texts.size(); ++i)
    w.configs[i] = texts[i];

  std::string tokenizer_from =
      ck->tokenizer_dir() ? ck->tokenizer_dir()->string() : opt.in + " (embedded)";
  w.tokenizer = ck->tokenizer_files();
  const bool sdxl = ck->has(weights::Component::kTextEncoder2);
  std::string tokenizer_2_from =
      ck->tokenizer_dir(weights::Component::kTextEncoder2)
          ? ck->tokenizer_dir(weights::Component::kTextEncoder2)->string()
          : opt.in + " (embedded)";
  if (sdxl) w.tokenizer_2 = ck->tokenizer_files(weights::Component::kTextEncoder2);
  if (auto index = ck->model_index()) w.model_index = index->dump();
  w.scheduler_config = ck->scheduler_config_text();
  std::string scheduler_from = ck->format() == weights::CheckpointFormat::kDiffusersFolder
                                   ? (fs::path(opt.in) / "scheduler").string()
                                   : opt.in + " (embedded)";
  for (const fs::path& r : side_roots(*ck, opt)) {
    if (!w.tokenizer && (w.tokenizer = weights::read_tokenizer_files(r / "tokenizer")))
      tokenizer_from = (r / "tokenizer").string();
    if (sdxl && !w.tokenizer_2 &&
        (w.tokenizer_2 = weights::read_tokenizer_files(r / "tokenizer_2")))
      tokenizer_2_from = (r / "tokenizer_2").string();
    const fs::path sched = r / "scheduler" / "scheduler_config.json";
    std::error_code ec;
    if (!w.scheduler_config && fs::is_regular_file(sched, ec)) {
      std::ifstream in(sched, std::ios::binary);
      HYRT_CHECK(in, kIo, sched.string(), ": cannot open");
      w.scheduler_config = std::string(std::istreambuf_iterator<char>(in), {});
      scheduler_from = sched.string();
    }
  }

  std::printf("quantizing %s (%s) -> %s\n", opt.in.c_str(),
              std::string(weights::checkpoint_format_name(ck->format())).c_str(), opt.out.c_str());
  std::printf("  8-bit S: int8 per output row, least-squares refit (up to %d iterations)%s\n",
              opt.refit_iterations, opt.keep.empty() ? "" : "; keeping --keep matches in 16-bit");
  if ((ck->format() == weights::CheckpointFormat::kLdmSingleFile ||
       ck->format() == weights::CheckpointFormat::kSgmSingleFile) &&
      !config_dir)
    std::printf(
        "  configs: sizes from tensor shapes, the rest %s defaults (pass --config-dir for "
        "a model that is not shaped like the base model)\n",
        sdxl ? "SDXL" : "SD 1.5");
  std::printf("  tokenizer: %s\n", w.tokenizer ? tokenizer_from.c_str()
                                               : "NOT FOUND: generate will need --config-dir "
                                                 "with tokenizer/");
  if (sdxl)
    std::printf("  tokenizer_2: %s\n", w.tokenizer_2 ? tokenizer_2_from.c_str()
                                                     : "NOT FOUND: generate will need "
                                                       "--config-dir with tokenizer_2/");
  std::printf("  scheduler: %s\n",
              w.scheduler_config ? scheduler_from.c_str() : "none (SD 1.5 defaults)");
  std::fflush(stdout);

  const bool tty = isatty(2) != 0;
  auto progress = [&](const weights::HyrtTensorReport& r, size_t done, size_t total) {
    if (opt.verbose) {
      std::printf("  %-84s %-5s -> %-5s %-22s", r.name.c_str(),
                  std::string(dtype_name(r.source_dtype)).c_str(),
                  std::string(dtype_name(r.stored_dtype)).c_str(), r.shape.to_string().c_str());
      if (r.quantized && r.source_dtype != DType::kS8)
        std::printf(" rel.err %.5f (worst row %.5f)", r.rel_error, r.worst_row_rel_error);
      std::printf("\n");
    } else if (tty) {
      std::fprintf(stderr, "\r  %zu / %zu tensors", done, total);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  const auto report = weights::write_hyrt_file(*ck, opt.out, w, progress);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (tty && !opt.verbose) std::fputc('\n', stderr);

  std::printf("\n%-19s %9s %6s %12s %12s  %s\n", "component", "quantized", "kept", "before",
              "after", "rel. error: median / worst (tensor)");
  for (Component c : weights::kAllComponents) {
    if (!ck->has(c)) continue;
    const auto& cr = report.components[static_cast<size_t>(c)];
    std::vector<double> errs;
    for (const auto& t : report.tensors)
      if (t.component == c && t.quantized) errs.push_back(t.rel_error);
    std::string err = "-";
    if (!errs.empty()) {
      std::sort(errs.begin(), errs.end());
      char buf[64];
      std::snprintf(buf, sizeof(buf), "%.5f / %.5f ", errs[errs.size() / 2], cr.worst_rel_error);
      err = buf + cr.worst_tensor;
    }
    std::printf("%-19s %9d %6d %12s %12s  %s\n", std::string(weights::component_title(c)).c_str(),
                cr.quantized, cr.kept, megabytes(cr.bytes_before).c_str(),
                megabytes(cr.bytes_after).c_str(), err.c_str());
  }
  std::printf("\nwrote %s: %s in %.1f s\n", opt.out.c_str(), megabytes(report.file_bytes).c_str(),
              secs);
}

CommandRegistrar reg(35, [](CLI::App& app) {
  auto opt = std::make_shared<QuantizeOptions>();
  auto* c = app.add_subcommand(
      "quantize", "Write a model as one hyrt file with 8-bit S (int8, per-row scale) weights");
  c->add_option("IN", opt->in,
                "A diffusers folder, an LDM/CompVis single .safetensors file or a hyrt file")
      ->required();
  c->add_option("OUT", opt->out, "The hyrt file to write (.safetensors)")->required();
  c->add_option("--config-dir", opt->config_dir,
                "Folder with {text_encoder,unet,vae}/config.json (and tokenizer/, scheduler/) "
                "for an LDM file, as for `hyrt info`");
  c->add_option("--refit-iterations", opt->refit_iterations,
                "Least-squares scale refits per row (0: plain absmax/127)")
      ->check(CLI::Range(0, 64));
  c->add_option("--keep", opt->keep,
                "Keep matching tensors in their 16/32-bit dtype (repeatable): a glob over the "
                "canonical name (`*`, `?`), or without wildcards a substring, e.g. attn2")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_flag("--verbose", opt->verbose, "Print every tensor with its relative error");
  c->callback([opt] { run_quantize(*opt); });
});

}  // namespace
}  // namespace hyrt::cli

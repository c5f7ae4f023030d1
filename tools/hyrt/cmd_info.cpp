// `hyrt info MODEL [--keys] [--config-dir DIR]`: what a checkpoint contains — layout,
// components with parameter counts and dtypes, the configs hyrt will use, and how its
// keys compare with the SD 1.5 architecture.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "models/config.h"
#include "models/keys.h"
#include "pipeline/clip_tokenizer.h"
#include "weights/checkpoint.h"

namespace hyrt::cli {
namespace {

using models::ModelConfigs;
using weights::Checkpoint;
using weights::Component;

struct InfoOptions {
  std::string model;
  std::string config_dir;
  bool keys = false;
};

template <class T>
std::string list(const std::vector<T>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? ", " : "") + str_cat(v[i]);
  return s + "]";
}

std::string config_summary(Component c, const ModelConfigs& cfg) {
  switch (c) {
    case Component::kTextEncoder:
    case Component::kTextEncoder2: {
      const auto& opt = c == Component::kTextEncoder ? cfg.text_encoder : cfg.text_encoder_2;
      if (!opt) return "";
      const auto& t = *opt;
      return str_cat("CLIP width ", t.hidden_size, ", ", t.num_hidden_layers, " layers, ",
                     t.num_attention_heads, " heads, MLP ", t.intermediate_size, ", vocab ",
                     t.vocab_size, ", ", t.max_position_embeddings, " positions, ", t.hidden_act,
                     t.projection_dim > 0 ? str_cat(", projection ", t.projection_dim) : "");
    }
    case Component::kUNet: {
      if (!cfg.unet) return "";
      const auto& u = *cfg.unet;
      int cross = 0;
      for (const auto& t : u.down_block_types)
        cross += t == "CrossAttnDownBlock2D";
      return str_cat(
          "channels ", list(u.block_out_channels), ", ", u.layers_per_block, " layers/block, ",
          cross, " of ", u.down_block_types.size(), " levels with cross-attention, heads ",
          list(u.num_attention_heads), ", context ", u.cross_attention_dim, ", in/out ",
          u.in_channels, "/", u.out_channels, ", groups ", u.norm_num_groups,
          u.use_linear_projection ? ", linear proj" : "", ", transformer depth ",
          list(u.transformer_layers_per_block),
          u.text_time_embedding() ? str_cat(", text_time embedding (pooled ", u.pooled_text_dim(),
                                            ", time ids 6 x ", u.addition_time_embed_dim, ")")
                                  : "",
          u.time_cond_proj_dim > 0
              ? str_cat(", LCM: guidance embedded (time_cond_proj_dim ", u.time_cond_proj_dim, ")")
              : "");
    }
    case Component::kVae: {
      if (!cfg.vae) return "";
      const auto& v = *cfg.vae;
      return str_cat("channels ", list(v.block_out_channels), ", ", v.layers_per_block,
                     " layers/block, latent ", v.latent_channels, ", scaling ", v.scaling_factor,
                     ", groups ", v.norm_num_groups, v.force_upcast ? ", force_upcast" : "");
    }
  }
  return "";
}

void print_names(const char* title, const std::vector<std::string>& names, bool all) {
  if (names.empty()) return;
  const size_t shown = all ? names.size() : std::min<size_t>(names.size(), 5);
  std::printf("  %s (%zu):\n", title, names.size());
  for (size_t i = 0; i < shown; ++i)
    std::printf("    %s\n", names[i].c_str());
  if (shown < names.size())
    std::printf("    ... %zu more (--keys lists all)\n", names.size() - shown);
}

void run_info(const InfoOptions& opt) {
  auto ck = Checkpoint::open(opt.model);
  // The first problem found (a config or tokenizer that cannot be read): reported, with exit
  // status 1, after everything that could be read is printed.
  std::optional<Error> first_error;
  std::printf("model:      %s\n", ck->root().string().c_str());
  std::printf("format:     %s\n",
              std::string(weights::checkpoint_format_name(ck->format())).c_str());
  const bool hyrt_file = ck->format() == weights::CheckpointFormat::kHyrtFile;
  if (hyrt_file) {
    const auto& meta = ck->metadata();
    auto get = [&](const char* k) {
      auto it = meta.find(k);
      return it == meta.end() ? std::string("?") : it->second;
    };
    std::printf("version:    %s %s\n", get("format").c_str(), get("format_version").c_str());
    std::printf("weights:    %s\n", get("quantization").c_str());
    std::printf("tokenizer:  %s\n", ck->tokenizer_files() ? "embedded" : "(none)");
    if (ck->has(Component::kTextEncoder2))
      std::printf("tokenizer_2: %s\n",
                  ck->tokenizer_files(Component::kTextEncoder2) ? "embedded" : "(none)");
  } else {
    // A tokenizer folder is read as generate would read it: a damaged one is an error.
    for (Component c : {Component::kTextEncoder, Component::kTextEncoder2}) {
      if (c == Component::kTextEncoder2 && !ck->has(c)) continue;
      const auto dir = ck->tokenizer_dir(c);
      std::string state;
      if (dir) {
        try {
          (void)pipeline::ClipTokenizer::load(*dir);
        } catch (const Error& e) {
          if (!first_error) first_error = e;
          state = " (cannot be read: the error follows)";
        }
      }
      std::printf("%-11s %s%s\n", c == Component::kTextEncoder ? "tokenizer:" : "tokenizer_2:",
                  dir ? dir->string().c_str() : "(none)", state.c_str());
    }
  }

  std::optional<std::filesystem::path> config_dir;
  if (!opt.config_dir.empty()) config_dir = opt.config_dir;
  ModelConfigs cfg;
  std::string config_error;
  try {
    cfg = models::load_configs(*ck, config_dir);
  } catch (const Error& e) {
    config_error = e.what();
    if (!first_error) first_error = e;
  }

  if (config_error.empty() && (cfg.unet || cfg.text_encoder_2)) {
    std::string why;
    const models::ModelFamily family = models::model_family(cfg, &why);
    std::printf("family:     %s (%s)\n", std::string(models::model_family_name(family)).c_str(),
                why.c_str());
  }
  for (Component c : weights::kAllComponents) {
    const std::string title(weights::component_title(c));
    if (!ck->has(c)) {
      if (c == Component::kTextEncoder2) continue;  // only SDXL-family models have one
      std::printf("\n%-13s not found\n", title.c_str());
      continue;
    }
    int64_t params = 0;
    uint64_t bytes = 0;  // as stored (and resident once mapped): int8 values plus their scales
    std::map<std::string, int> dtypes;
    for (const auto& name : ck->names(c)) {
      const auto& w = ck->info(name);
      params += w.shape.numel();
      bytes += w.bytes() + (w.scale ? w.scale->bytes : 0);
      ++dtypes[std::string(dtype_name(w.dtype))];
    }
    std::string hist;
    for (const auto& [d, n] : dtypes)
      hist += str_cat(hist.empty() ? "" : ", ", d, " x", n);
    std::printf("\n%-13s %.2f M parameters in %zu tensors (%s)\n", title.c_str(), params / 1e6,
                ck->names(c).size(), hist.c_str());
    std::printf("  weights:  %.2f MB (%.2f bytes/parameter)\n", bytes / 1e6,
                params ? static_cast<double>(bytes) / params : 0.0);
    for (const auto& f : ck->weight_files(c))
      std::printf("  file:     %s\n", f.string().c_str());
    const std::string summary = config_summary(c, cfg);
    if (!summary.empty()) {
      std::string source = str_cat(
          "sizes: tensor shapes; heads, groups, eps: ", cfg.text_encoder_2 ? "SDXL" : "SD 1.5",
          " defaults; --config-dir overrides");
      auto override_path =
          config_dir ? std::optional(*config_dir / weights::component_name(c) / "config.json")
                     : std::nullopt;
      std::error_code ec;
      if (override_path && std::filesystem::is_regular_file(*override_path, ec))
        source = "from " + override_path->string();
      else if (hyrt_file)
        source = "from the file's metadata";
      else if (ck->config_path(c))
        source = "from " + ck->config_path(c)->string();
      std::printf("  config:   %s\n            (%s)\n", summary.c_str(), source.c_str());
    }
    if (opt.keys)
      for (const auto& name : ck->names(c)) {
        const auto& w = ck->info(name);
        std::printf("    %-80s %-5s %s\n", name.c_str(), std::string(dtype_name(w.dtype)).c_str(),
                    w.shape.to_string().c_str());
      }
  }

  std::printf("\n");
  if (!config_error.empty()) {
    std::printf("configs:    cannot be read (the error follows)\n");
    std::printf("keys:       %zu unexpected, %zu ignored (architecture check skipped)\n",
                ck->unexpected_keys().size(), ck->ignored_keys().size());
    print_names("unexpected", ck->unexpected_keys(), opt.keys);
  } else {
    const auto report = models::check_checkpoint_keys(*ck, cfg);
    std::printf("keys:       %zu missing, %zu shape-mismatched, %zu unexpected, %zu ignored\n",
                report.missing.size(), report.shape_mismatch.size(), report.unexpected.size(),
                ck->ignored_keys().size());
    print_names("missing", report.missing, opt.keys);
    print_names("shape-mismatched", report.shape_mismatch, opt.keys);
    if (!first_error && !report.missing.empty())
      first_error =
          Error(ErrorCode::kInvalidModel,
                str_cat(ck->root().string(), ": ", report.missing.size(), " weight",
                        report.missing.size() > 1 ? "s are" : " is", " missing (the first: '",
                        report.missing.front(), "'): an incomplete or damaged model"));
    print_names("unexpected", report.unexpected, opt.keys);
  }
  print_names("ignored", ck->ignored_keys(), opt.keys);
  if (!ck->notes().empty()) {
    std::printf("notes:\n");
    for (const auto& n : ck->notes())
      std::printf("  %s\n", n.c_str());
  }
  if (first_error) {
    std::fflush(stdout);
    throw *first_error;
  }
}

CommandRegistrar reg(20, [](CLI::App& app) {
  auto opt = std::make_shared<InfoOptions>();
  auto* c = app.add_subcommand(
      "info", "Describe a model: layout, components, parameters, configs, key check");
  c->add_option("MODEL", opt->model,
                "A diffusers folder or an LDM/CompVis single .safetensors file")
      ->required();
  c->add_flag("--keys", opt->keys, "List every weight (name, dtype, shape) and every key problem");
  c->add_option("--config-dir", opt->config_dir,
                "Folder with {text_encoder,unet,vae}/config.json overriding the model's "
                "(e.g. the diffusers folder matching an LDM file)");
  c->callback([opt] { run_info(*opt); });
});

}  // namespace
}  // namespace hyrt::cli

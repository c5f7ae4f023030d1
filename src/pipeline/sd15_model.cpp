#include "pipeline/sd15_model.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/log.h"
#include "models/sd15/sd15.h"

namespace hyrt::pipeline {

using models::sd15::BuiltGraph;

void copy_into(const TensorView& dst, const TensorView& src) {
  HYRT_CHECK(dst.numel() == src.numel() && dst.dtype == src.dtype, kInvalidArgument, "input of ",
             dtype_name(src.dtype), src.shape.to_string(), " does not fit ", dtype_name(dst.dtype),
             dst.shape.to_string());
  std::memcpy(dst.data, src.data, src.bytes());
}

Tensor copy_out(const TensorView& v) {
  Tensor t(v.dtype, v.shape);
  std::memcpy(t.data(), v.data, v.bytes());
  return t;
}

std::unique_ptr<Sd15Model> Sd15Model::open(const std::filesystem::path& path, exec::Engine& engine,
                                           const Sd15ModelOptions& options) {
  std::unique_ptr<Sd15Model> m(new Sd15Model());
  m->engine_ = &engine;
  auto checkpoint = weights::Checkpoint::open(path);
  const weights::Checkpoint& ck = *checkpoint;
  for (weights::Component c :
       {weights::Component::kTextEncoder, weights::Component::kUNet, weights::Component::kVae})
    HYRT_CHECK(ck.has(c), kNotFound, "model '", path.string(), "' has no ",
               weights::component_title(c), " (looked for ",
               ck.format() == weights::CheckpointFormat::kDiffusersFolder
                   ? std::string(weights::component_name(c)) + "/ with a .safetensors file"
                   : std::string("its tensors in the single file"),
               ")");
  m->configs_ = models::sd15::load_configs(ck, options.config_dir);
  for (weights::Component c : weights::kAllComponents)
    for (const std::string& n : ck.names(c)) {
      const auto& i = ck.info(n);
      m->weight_bytes_ += i.shape.numel() * static_cast<int64_t>(dtype_size(i.dtype));
      if (i.scale) m->weight_bytes_ += static_cast<int64_t>(i.scale->bytes);  // "8-bit S" scales
    }

  // Where a tokenizer and a scheduler config may be: the model itself, the config folder,
  // beside a single file.
  std::vector<std::filesystem::path> roots;
  if (ck.format() == weights::CheckpointFormat::kDiffusersFolder) roots.push_back(path);
  if (options.config_dir) roots.push_back(*options.config_dir);
  if (ck.format() != weights::CheckpointFormat::kDiffusersFolder)
    roots.push_back(path.parent_path().empty() ? "." : path.parent_path());
  for (const auto& r : roots)
    m->tokenizer_candidates_.push_back(r / "tokenizer");
  m->scheduler_config_ = SchedulerConfig::sd15_defaults();
  // A hyrt file carries its scheduler config (and tokenizer, see tokenizer()) inside.
  const auto embedded_scheduler = ck.format() == weights::CheckpointFormat::kHyrtFile
                                      ? ck.scheduler_config_text()
                                      : std::nullopt;
  if (embedded_scheduler)
    m->scheduler_config_ = SchedulerConfig::from_json(
        *embedded_scheduler, str_cat(path.string(), " (metadata 'config.scheduler')"));
  else
    for (const auto& r : roots)
      if (std::filesystem::exists(r / "scheduler" / "scheduler_config.json")) {
        m->scheduler_config_ = SchedulerConfig::load_or_default(r);
        break;
      }
  for (weights::Component c : weights::kAllComponents)
    for (const std::string& n : ck.names(c))
      m->stored_int8_ |= ck.info(n).dtype == DType::kS8;
  m->checkpoint_ = checkpoint.get();
  m->stored_ = std::move(checkpoint);
  m->use_options(options);
  return m;
}

void Sd15Model::use_options(const Sd15ModelOptions& options) {
  vae_int8_mode_ = options.vae_int8_mode;
  unet_per_sample_ = options.unet_per_sample;
  if (options.quantize_int8) {
    quantizer_ = std::make_unique<weights::QuantizingWeights>(*stored_, options.quantize_policy);
    weights_ = quantizer_.get();
  } else {
    weights_ = stored_.get();
  }
}

bool Sd15Model::int8_weights() const {
  return stored_int8_ || quantizer_ != nullptr;
}

std::unique_ptr<Sd15Model> Sd15Model::from_memory(std::unique_ptr<weights::MemoryWeights> weights,
                                                  models::sd15::Sd15Configs configs,
                                                  exec::Engine& engine,
                                                  const Sd15ModelOptions& options) {
  HYRT_CHECK(configs.text_encoder && configs.unet && configs.vae, kInvalidArgument,
             "Sd15Model::from_memory needs all three component configs");
  std::unique_ptr<Sd15Model> m(new Sd15Model());
  m->engine_ = &engine;
  m->configs_ = std::move(configs);
  m->weight_bytes_ = static_cast<int64_t>(weights->bytes());
  m->stored_ = std::move(weights);
  m->use_options(options);
  m->scheduler_config_ = SchedulerConfig::sd15_defaults();
  return m;
}

const ClipTokenizer& Sd15Model::tokenizer() {
  if (tokenizer_) return *tokenizer_;
  // A hyrt file's embedded tokenizer comes first: the file is meant to be self-sufficient.
  if (const weights::Checkpoint* ck = checkpoint_;
      ck && ck->format() == weights::CheckpointFormat::kHyrtFile) {
    if (auto files = ck->tokenizer_files()) {
      tokenizer_ = std::make_unique<ClipTokenizer>(ClipTokenizer::from_strings(
          files->vocab_json, files->merges_txt, files->tokenizer_config_json, ck->root().string()));
      return *tokenizer_;
    }
  }
  std::string looked;
  for (const auto& dir : tokenizer_candidates_) {
    if (std::filesystem::exists(dir / "vocab.json") &&
        std::filesystem::exists(dir / "merges.txt")) {
      tokenizer_ = std::make_unique<ClipTokenizer>(ClipTokenizer::load(dir));
      return *tokenizer_;
    }
    looked += "\n  " + (dir / "vocab.json").string() + " + merges.txt";
  }
  fail(
      ErrorCode::kNotFound, "no CLIP tokenizer files (vocab.json and merges.txt) found; looked in:",
      looked.empty() ? std::string("\n  (nowhere: pass a config folder with tokenizer/)") : looked);
}

Sd15Model::~Sd15Model() = default;

int Sd15Model::vae_scale_factor() const {
  return 1 << (static_cast<int>(vae_config().block_out_channels.size()) - 1);
}

Sd15Model::Compiled& Sd15Model::executable(const std::string& key,
                                           const std::function<models::sd15::BuiltGraph()>& build,
                                           const std::string& component, const std::string& shape,
                                           std::optional<backend::Int8Mode> int8_mode) {
  auto it = compiled_.find(key);
  if (it != compiled_.end()) return it->second;
  Compiled c;
  models::sd15::BuiltGraph built = build();
  std::shared_ptr<ir::Graph> graph = built.graph;
  for (const auto& [name, value] : built.taps)
    c.tap_names.push_back(name);
  c.exe = engine_->compile(graph, *weights_, int8_mode);
  c.report = MemoryReport{};
  c.report.component = component;
  c.report.shape = shape;
  c.report.arena_bytes = c.exe->memory_plan().arena_bytes;
  c.report.arena_lower_bound = c.exe->memory_plan().lower_bound;
  c.report.prepare_ms = c.exe->prepare_ms();
  c.report.placement = c.exe->placement().summary();
  if (c.exe->memory_plans().size() > 1)
    c.report.device_arena_bytes = c.exe->memory_plans()[1].arena_bytes;
  c.report.copy_bytes = static_cast<int64_t>(c.exe->placement().copy_bytes);
  c.report.prepare_by_op = c.exe->prepare_profile();
  HYRT_LOG(kInfo) << component << " " << shape << ": " << c.exe->graph().nodes().size()
                  << " nodes, scratch arena " << c.report.arena_bytes << " bytes, prepared in "
                  << c.report.prepare_ms << " ms";
  return compiled_.emplace(key, std::move(c)).first->second;
}

Tensor Sd15Model::encode_text(std::span<const int32_t> ids, int batch) {
  HYRT_CHECK(batch >= 1 && ids.size() % static_cast<size_t>(batch) == 0, kInvalidArgument,
             "encode_text: ", ids.size(), " ids do not split into ", batch, " sequences");
  const int seq = static_cast<int>(ids.size()) / batch;
  for (int32_t id : ids)
    HYRT_CHECK(id >= 0 && id < text_config().vocab_size, kInvalidArgument, "token id ", id,
               " outside the vocabulary of ", text_config().vocab_size);
  exec::Executable& exe =
      *executable(
           str_cat("clip b", batch, " t", seq),
           [&] {
             return models::sd15::build_clip_text_encoder(text_config(), *weights_, batch, seq);
           },
           "text_encoder", str_cat("b", batch, " t", seq))
           .exe;
  std::memcpy(exe.input("input_ids").data, ids.data(), ids.size() * sizeof(int32_t));
  auto* pos = exe.input("position_ids").as<int32_t>();
  std::iota(pos, pos + seq, 0);
  exe.run();
  return copy_out(exe.output(0));
}

Tensor Sd15Model::predict_noise(const TensorView& sample, std::span<const float> timesteps,
                                const TensorView& context,
                                std::vector<std::pair<std::string, Tensor>>* taps) {
  HYRT_CHECK(sample.shape.rank() == 4 && context.shape.rank() == 3 &&
                 context.shape[0] == sample.shape[0] &&
                 timesteps.size() == static_cast<size_t>(sample.shape[0]),
             kInvalidArgument, "predict_noise: sample ", sample.shape.to_string(), ", context ",
             context.shape.to_string(), " and ", timesteps.size(), " timesteps do not agree");
  models::sd15::UNetShape shape;
  shape.batch = static_cast<int>(sample.shape[0]);
  shape.latent_height = static_cast<int>(sample.shape[1]);
  shape.latent_width = static_cast<int>(sample.shape[2]);
  shape.context_tokens = static_cast<int>(context.shape[1]);
  shape.taps = taps != nullptr;
  const exec::EngineOptions& eo = engine_->options();
  shape.independent_samples =
      !shape.taps && shape.batch > 1 &&
      unet_per_sample_.value_or(engine_->accelerator() != nullptr &&
                                eo.placement == plan::PlacementMode::kHybrid && eo.overlap);
  const std::string dims = str_cat("b", shape.batch, " ", shape.latent_height, "x",
                                   shape.latent_width, " t", shape.context_tokens);
  Compiled& compiled = executable(
      str_cat("unet ", dims, shape.taps ? " taps" : "",
              shape.independent_samples ? " per-sample" : ""),
      [&] { return models::sd15::build_unet(unet_config(), *weights_, shape); }, "unet", dims);
  exec::Executable& exe = *compiled.exe;
  copy_into(exe.input("sample"), sample);
  std::memcpy(exe.input("timestep").data, timesteps.data(), timesteps.size() * sizeof(float));
  copy_into(exe.input("encoder_hidden_states"), context);
  exe.run();
  if (taps) {
    taps->clear();
    for (size_t k = 0; k < compiled.tap_names.size(); ++k)
      taps->emplace_back(compiled.tap_names[k], copy_out(exe.output(k + 1)));
  }
  return copy_out(exe.output(0));
}

Tensor Sd15Model::decode_latents(const TensorView& latent, bool unscale) {
  HYRT_CHECK(latent.shape.rank() == 4, kInvalidArgument,
             "decode: latent must be [B, h, w, C], got ", latent.shape.to_string());
  const int b = static_cast<int>(latent.shape[0]), h = static_cast<int>(latent.shape[1]),
            w = static_cast<int>(latent.shape[2]);
  const std::string dims = str_cat("b", b, " ", h, "x", w);
  exec::Executable& exe =
      *executable(
           str_cat("vae ", dims, unscale ? " unscale" : ""),
           [&] {
             return models::sd15::build_vae_decoder(vae_config(), *weights_, b, h, w, unscale);
           },
           "vae_decoder", dims, vae_int8_mode_)
           .exe;
  copy_into(exe.input("latent"), latent);
  exe.run();
  return copy_out(exe.output(0));
}

std::vector<MemoryReport> Sd15Model::memory_report() const {
  std::map<std::string, MemoryReport> all = released_reports_;
  for (const auto& [key, c] : compiled_) {
    all[key] = c.report;
    all[key].captured_steps = c.exe->captured_steps();
  }
  std::vector<MemoryReport> r;
  for (const auto& [key, report] : all)
    r.push_back(report);
  return r;
}

void Sd15Model::release(std::string_view component) {
  for (auto it = compiled_.begin(); it != compiled_.end();) {
    if (it->second.report.component == component) {
      released_reports_[it->first] = it->second.report;
      it = compiled_.erase(it);
    } else {
      ++it;
    }
  }
}

std::vector<std::pair<std::string, std::vector<exec::OpProfile>>> Sd15Model::op_profiles() const {
  std::vector<std::pair<std::string, std::vector<exec::OpProfile>>> r;
  for (const auto& [key, c] : compiled_)
    r.emplace_back(key, c.exe->profile());
  return r;
}

}  // namespace hyrt::pipeline

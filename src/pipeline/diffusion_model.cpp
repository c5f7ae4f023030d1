#include "pipeline/diffusion_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/log.h"
#include "core/sysinfo.h"
#include "models/components.h"
#include "models/random_checkpoint.h"
#include "pipeline/prompt_syntax.h"
#include "weights/json_text.h"

namespace hyrt::pipeline {

using models::BuiltGraph;

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

std::unique_ptr<DiffusionModel> DiffusionModel::open(const std::filesystem::path& path,
                                                     exec::Engine& engine,
                                                     const ModelOptions& options) {
  std::unique_ptr<DiffusionModel> m(new DiffusionModel());
  m->engine_ = &engine;
  auto checkpoint = weights::Checkpoint::open(path);
  const weights::Checkpoint& ck = *checkpoint;
  // Every family has these three; SDXL also a second text encoder (checked below, once the
  // configs say which family this is).
  auto require = [&](weights::Component c) {
    HYRT_CHECK(ck.has(c), kNotFound, "model '", path.string(), "' has no ",
               weights::component_title(c), " (looked for ",
               ck.format() == weights::CheckpointFormat::kDiffusersFolder
                   ? std::string(weights::component_name(c)) + "/ with a .safetensors file"
                   : std::string("its tensors in the single file"),
               ")");
  };
  for (weights::Component c :
       {weights::Component::kTextEncoder, weights::Component::kUNet, weights::Component::kVae})
    require(c);
  m->configs_ = models::load_configs(ck, options.config_dir);
  m->family_ = models::model_family(m->configs_);
  if (m->family_ == models::ModelFamily::kSdxl) require(weights::Component::kTextEncoder2);
  if (auto index = ck.model_index(); index && index->is_object()) {
    auto it = index->find("force_zeros_for_empty_prompt");
    if (it != index->end() && it->is_boolean()) m->force_zeros_ = it->get<bool>();
  }
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
  m->tokenizer_roots_ = roots;
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

void DiffusionModel::use_options(const ModelOptions& options) {
  vae_int8_mode_ = options.vae_int8_mode;
  unet_per_sample_ = options.unet_per_sample;
  cache_bytes_ = options.cache_bytes;
  if (options.quantize_int8) {
    quantizer_ = std::make_unique<weights::QuantizingWeights>(*stored_, options.quantize_policy);
    weights_ = quantizer_.get();
  } else {
    weights_ = stored_.get();
  }
}

const weights::WeightSource& DiffusionModel::weights_for(std::string_view component) const {
  if (component == "tiny_vae_decoder") {
    HYRT_CHECK(tiny_vae_, kInvalidArgument, "this model has no TAESD decoder (set_tiny_vae)");
    return *tiny_vae_;
  }
  const bool adaptable = component.substr(0, 12) == "text_encoder" || component == "unet";
  return lora_ && adaptable ? *lora_ : *weights_;
}

const weights::LoraTargetIndex& DiffusionModel::lora_targets() {
  if (lora_targets_) return *lora_targets_;
  std::vector<weights::LoraTarget> targets;
  auto add = [&](const std::string& name, const Shape& shape) {
    // Linear and convolution weights of the adaptable components; not the text encoders'
    // embedding tables (rank 2 too, but lookups, not GEMMs).
    constexpr std::string_view suffix = ".weight";
    if (shape.rank() != 2 && shape.rank() != 4) return;
    if (name.size() <= suffix.size() || name.compare(name.size() - 7, 7, suffix) != 0) return;
    if (name.find(".embeddings.") != std::string::npos) return;
    for (weights::Component c : {weights::Component::kTextEncoder,
                                 weights::Component::kTextEncoder2, weights::Component::kUNet}) {
      const std::string prefix = str_cat(weights::component_name(c), ".");
      if (name.compare(0, prefix.size(), prefix) == 0) {
        targets.push_back({name.substr(0, name.size() - suffix.size()), c, shape});
        return;
      }
    }
  };
  if (checkpoint_) {
    for (weights::Component c : weights::kAllComponents)
      for (const std::string& n : checkpoint_->names(c))
        add(n, checkpoint_->info(n).shape);
  } else if (const auto* mem = dynamic_cast<const weights::MemoryWeights*>(stored_.get())) {
    for (const auto& [n, t] : mem->tensors())
      add(n, t.shape());
  }
  lora_targets_ = std::make_unique<weights::LoraTargetIndex>(
      std::move(targets), models::ldm_structure(unet_config(), vae_config()),
      num_text_encoders() == 2);
  return *lora_targets_;
}

void DiffusionModel::set_loras(std::span<const weights::LoraUse> loras) {
  const bool same = loras.size() == lora_uses_.size() &&
                    std::equal(loras.begin(), loras.end(), lora_uses_.begin(),
                               [](const weights::LoraUse& a, const weights::LoraUse& b) {
                                 return a.file == b.file && a.multiplier == b.multiplier;
                               });
  if (same) return;
  std::shared_ptr<const weights::LoraWeights> overlay;
  if (!loras.empty()) {
    // Exact f32 adapters for a 16/32-bit model; f16 beside int8 weights, whose own rounding is
    // far larger (downs as the file stores them either way: about the file's size in all).
    const DType adapter_dtype = int8_weights() ? DType::kF16 : DType::kF32;
    // Into the last overlay's tensors where the shapes agree (weights::LoraWeights writes only
    // once nothing can fail, so a set that throws leaves them as they were). Executables are
    // per overlay generation: none runs with the outgoing overlay's values again.
    auto w = std::make_shared<weights::LoraWeights>(*weights_, loras, lora_targets(), adapter_dtype,
                                                    lora_storage_);
    lora_storage_ = w->storage();
    if (w->adapted_modules() > 0) overlay = std::move(w);  // all multipliers 0: no adapters
  }
  lora_uses_.assign(loras.begin(), loras.end());
  lora_ = std::move(overlay);
}

bool DiffusionModel::int8_weights() const {
  return stored_int8_ || quantizer_ != nullptr;
}

std::unique_ptr<DiffusionModel> DiffusionModel::from_memory(
    std::unique_ptr<weights::MemoryWeights> weights, models::ModelConfigs configs,
    exec::Engine& engine, const ModelOptions& options) {
  HYRT_CHECK(configs.text_encoder && configs.unet && configs.vae, kInvalidArgument,
             "DiffusionModel::from_memory needs all three component configs");
  std::unique_ptr<DiffusionModel> m(new DiffusionModel());
  m->engine_ = &engine;
  m->family_ = models::model_family(configs);
  HYRT_CHECK(m->family_ == models::ModelFamily::kSd15 || configs.text_encoder_2, kInvalidArgument,
             "DiffusionModel::from_memory: an SDXL model needs the second text encoder's config");
  m->configs_ = std::move(configs);
  m->weight_bytes_ = static_cast<int64_t>(weights->bytes());
  m->stored_ = std::move(weights);
  m->use_options(options);
  m->scheduler_config_ = SchedulerConfig::sd15_defaults();
  return m;
}

const models::ClipTextConfig& DiffusionModel::text_config(int index) const {
  HYRT_CHECK(index >= 0 && index < num_text_encoders(), kInvalidArgument, "text encoder ", index,
             " of ", num_text_encoders());
  return index == 0 ? *configs_.text_encoder : *configs_.text_encoder_2;
}

const ClipTokenizer& DiffusionModel::tokenizer(int index) {
  HYRT_CHECK(index >= 0 && index < num_text_encoders(), kInvalidArgument, "tokenizer ", index,
             " of ", num_text_encoders());
  if (tokenizers_[index]) return *tokenizers_[index];
  const weights::Component which =
      index == 0 ? weights::Component::kTextEncoder : weights::Component::kTextEncoder2;
  const std::string folder = index == 0 ? "tokenizer" : "tokenizer_2";
  // A hyrt file's embedded tokenizer comes first: the file is meant to be self-sufficient.
  if (const weights::Checkpoint* ck = checkpoint_;
      ck && ck->format() == weights::CheckpointFormat::kHyrtFile) {
    if (auto files = ck->tokenizer_files(which)) {
      tokenizers_[index] = std::make_unique<ClipTokenizer>(ClipTokenizer::from_strings(
          files->vocab_json, files->merges_txt, files->tokenizer_config_json, ck->root().string()));
      return *tokenizers_[index];
    }
  }
  std::string looked;
  for (const auto& root : tokenizer_roots_) {
    const auto dir = root / folder;
    if (std::filesystem::exists(dir / "vocab.json") &&
        std::filesystem::exists(dir / "merges.txt")) {
      tokenizers_[index] = std::make_unique<ClipTokenizer>(ClipTokenizer::load(dir));
      return *tokenizers_[index];
    }
    looked += "\n  " + (dir / "vocab.json").string() + " + merges.txt";
  }
  fail(ErrorCode::kNotFound, "no CLIP tokenizer files (vocab.json and merges.txt) found for the ",
       weights::component_title(which), "; looked in:",
       looked.empty() ? str_cat("\n  (nowhere: pass a config folder with ", folder, "/)") : looked);
}

int DiffusionModel::default_image_size() const {
  return unet_config().sample_size * vae_scale_factor();
}

bool DiffusionModel::vae_wide_range() const {
  // As diffusers: only the SDXL pipeline reads force_upcast (SD 1.5's VAE runs in f16 there).
  return family_ == models::ModelFamily::kSdxl && vae_config().force_upcast;
}

bool DiffusionModel::force_zeros_for_empty_prompt() const {
  return force_zeros_.value_or(family_ == models::ModelFamily::kSdxl);
}

DiffusionModel::~DiffusionModel() = default;

int DiffusionModel::vae_scale_factor() const {
  return 1 << (static_cast<int>(vae_config().block_out_channels.size()) - 1);
}

DiffusionModel::Compiled& DiffusionModel::executable(
    const std::string& key, const std::function<models::BuiltGraph()>& build,
    const std::string& component, const std::string& shape,
    std::optional<backend::Int8Mode> int8_mode) {
  // With LoRAs, the adapted components' executables are per LoRA set (the overlay's
  // generation tags the key).
  const bool adapted = lora_ && &weights_for(component) == lora_.get();
  const std::string tagged = adapted ? str_cat(key, " lora#", lora_->generation()) : key;
  auto it = compiled_.find(tagged);
  if (it != compiled_.end()) {
    it->second.last_used = ++use_clock_;
    return it->second;
  }
  Compiled c;
  const auto t_compile = std::chrono::steady_clock::now();
  models::BuiltGraph built = build();
  std::shared_ptr<ir::Graph> graph = built.graph;
  for (const auto& [name, value] : built.taps)
    c.tap_names.push_back(name);
  c.exe = engine_->compile(graph, weights_for(component), int8_mode);
  if (adapted) c.lora_weights = lora_;
  c.base_key = key;
  last_compile_ms_ =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_compile)
          .count();
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
  c.held_bytes = static_cast<int64_t>(c.exe->held_bytes());
  HYRT_LOG(kInfo) << component << " " << shape << ": " << c.exe->graph().nodes().size()
                  << " nodes, scratch arena " << c.report.arena_bytes << " bytes, kernels hold "
                  << (c.held_bytes >> 20) << " MiB, prepared in " << c.report.prepare_ms << " ms"
                  << (c.exe->invariant_steps()
                          ? str_cat(", ", c.exe->invariant_steps(),
                                    " text-only nodes run once per conditioning")
                          : std::string());
  c.last_used = ++use_clock_;
  c.key = tagged;
  // The same shape compiled for an earlier LoRA set is not run again until that set comes
  // back: drop it (it was made before this one, so the base weights' packs stay shared).
  for (auto e = compiled_.begin(); e != compiled_.end();)
    if (e->second.base_key == key && e->second.lora_weights && e->second.lora_weights != lora_)
      e = compiled_.erase(e);
    else
      ++e;
  Compiled& made = compiled_.emplace(tagged, std::move(c)).first->second;
  evict_beyond_budget(tagged);
  return made;
}

void DiffusionModel::run(Compiled& c) {
  if (c.runs != 1) {
    ++c.runs;
    c.exe->run();
    return;
  }
  // The second run is where an accelerator records its replays (CUDA graphs), which hold
  // host and device memory the kernels do not report: count what it adds to the resident
  // set. (The first run's growth is mostly the shared arena's first touch, which no one
  // executable owns.)
  const int64_t before = current_rss_bytes();
  ++c.runs;
  c.exe->run();
  const int64_t grown = current_rss_bytes() - before;
  if (grown > 0) {
    c.held_bytes += grown;
    evict_beyond_budget(c.key);
  }
}

void DiffusionModel::evict_beyond_budget(const std::string& keep) {
  if (cache_bytes_ <= 0) return;
  bool evicted = false;
  while (cached_bytes() > cache_bytes_) {
    auto victim = compiled_.end();
    for (auto it = compiled_.begin(); it != compiled_.end(); ++it)
      if (it->first != keep &&
          (victim == compiled_.end() || it->second.last_used < victim->second.last_used))
        victim = it;
    if (victim == compiled_.end()) break;  // only the newest is left
    HYRT_LOG(kInfo) << "cache budget " << (cache_bytes_ >> 20) << " MiB: dropping " << victim->first
                    << " (" << (victim->second.held_bytes >> 20) << " MiB)";
    released_reports_[victim->first] = victim->second.report;
    compiled_.erase(victim);
    evicted = true;
  }
  if (evicted) return_free_heap_to_system();
}

int64_t DiffusionModel::cached_bytes() const {
  int64_t total = 0;
  for (const auto& [key, c] : compiled_)
    total += c.held_bytes;
  return total;
}

TextEncoderOutput DiffusionModel::encode_tokens(int index, std::span<const int32_t> ids, int batch,
                                                int clip_skip) {
  const models::ClipTextConfig& cfg = text_config(index);
  const bool sdxl = family_ == models::ModelFamily::kSdxl;
  // SDXL conditions on hidden_states[-2] (diffusers' StableDiffusionXLPipeline.encode_prompt).
  const int skip = (sdxl ? 1 : 0) + clip_skip - 1;
  HYRT_CHECK(clip_skip >= 1 && skip < cfg.num_hidden_layers, kInvalidArgument, "clip skip ",
             clip_skip, " is outside [1, ", cfg.num_hidden_layers - (sdxl ? 1 : 0),
             "] for this text encoder (", cfg.num_hidden_layers, " layers)");
  HYRT_CHECK(batch >= 1 && ids.size() % static_cast<size_t>(batch) == 0, kInvalidArgument,
             "encode_text: ", ids.size(), " ids do not split into ", batch, " sequences");
  const int seq = static_cast<int>(ids.size()) / batch;
  for (int32_t id : ids)
    HYRT_CHECK(id >= 0 && id < cfg.vocab_size, kInvalidArgument, "token id ", id,
               " outside the vocabulary of ", cfg.vocab_size);
  const weights::Component which =
      index == 0 ? weights::Component::kTextEncoder : weights::Component::kTextEncoder2;
  const std::string component(weights::component_name(which));
  models::TextEncoderShape shape;
  shape.batch = batch;
  shape.seq = seq;
  shape.skip_layers = skip;
  shape.norm_skipped = !sdxl;  // SD 1.x's CLIP skip: the earlier state through final_layer_norm
  shape.last_hidden = cfg.projection_dim > 0;
  const std::string skip_key = clip_skip > 1 ? str_cat(" skip", clip_skip) : std::string();
  Compiled& encoder = executable(
      str_cat(component, " b", batch, " t", seq, skip_key),
      [&] { return models::build_clip_text_encoder(cfg, weights_for(component), shape, which); },
      component, str_cat("b", batch, " t", seq, skip_key));
  exec::Executable& exe = *encoder.exe;
  std::memcpy(exe.input("input_ids").data, ids.data(), ids.size() * sizeof(int32_t));
  auto* pos = exe.input("position_ids").as<int32_t>();
  std::iota(pos, pos + seq, 0);
  run(encoder);
  TextEncoderOutput out;
  out.hidden = copy_out(exe.output(0));
  if (!shape.last_hidden) return out;

  // Pooled: the last layer's state at each sequence's end-of-text token — transformers takes
  // the first position holding eos_token_id (the argmax of the ids for configs whose
  // eos_token_id is the legacy 2) — then final_layer_norm and text_projection.
  const TensorView last = exe.output(1);  // [B, T, C]
  const int64_t width = cfg.hidden_size;
  Tensor gathered(DType::kF32, {batch, width}, "the pooled text embeddings");
  for (int b = 0; b < batch; ++b) {
    const std::span<const int32_t> row = ids.subspan(static_cast<size_t>(b) * seq, seq);
    int pos_eos = 0;
    if (cfg.eos_token_id == 2) {
      pos_eos = static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
    } else {
      const auto it = std::find(row.begin(), row.end(), cfg.eos_token_id);
      pos_eos = it == row.end() ? 0 : static_cast<int>(it - row.begin());
    }
    std::memcpy(gathered.as<float>() + b * width,
                last.as<float>() + (static_cast<int64_t>(b) * seq + pos_eos) * width,
                static_cast<size_t>(width) * sizeof(float));
  }
  Compiled& projection = executable(
      str_cat(component, " projection b", batch),
      [&] {
        return models::build_text_pooled_projection(cfg, weights_for(component), batch, which);
      },
      component, str_cat("b", batch, " pooled"));
  exec::Executable& proj = *projection.exe;
  copy_into(proj.input("hidden"), gathered.view());
  run(projection);
  out.pooled = copy_out(proj.output(0));
  return out;
}

PromptConditioning DiffusionModel::encode_prompts(std::span<const std::string> prompts,
                                                  int clip_skip) {
  HYRT_CHECK(!prompts.empty(), kInvalidArgument, "encode_prompts: no prompts");
  const int n = static_cast<int>(prompts.size());
  const int encoders = num_text_encoders();
  PromptConditioning out;
  // A1111's syntax and chunks of 75 tokens (prompt_syntax.h), per tokenizer; every prompt, and
  // every encoder, is padded with empty chunks to the longest, so all rows share one length.
  std::vector<std::vector<PromptChunks>> chunked(encoders);
  int num_chunks = 1;
  for (int e = 0; e < encoders; ++e) {
    for (const std::string& p : prompts) {
      PromptChunks c = chunk_prompt(tokenizer(e), p);
      // Both tokenizers split a prompt alike; report a truncation once.
      if (e == 0 && (c.num_truncated_tokens != 0 || !c.truncated_text.empty()))
        out.warnings.push_back(str_cat(
            "the prompt \"", weights::excerpt(p, 40), "\" is longer than ", kMaxPromptChunks,
            " chunks of ", c.chunk_length - 2, " tokens; ignored: \"", c.truncated_text, "\""));
      num_chunks = std::max(num_chunks, c.num_chunks);
      chunked[e].push_back(std::move(c));
    }
  }
  std::vector<Tensor> hidden;
  for (int e = 0; e < encoders; ++e) {
    const ClipTokenizer& tok = tokenizer(e);
    const int length = tok.model_max_length();
    for (PromptChunks& c : chunked[e])
      pad_prompt_chunks(c, tok, num_chunks);
    // One chunk at a time, all prompts as a batch: the executable of a 77-token batch serves
    // every prompt length, and a prompt of one chunk is encoded exactly as before.
    Tensor states;
    for (int k = 0; k < num_chunks; ++k) {
      std::vector<int32_t> ids;
      ids.reserve(static_cast<size_t>(n) * length);
      for (const PromptChunks& c : chunked[e])
        ids.insert(ids.end(), c.ids.begin() + static_cast<ptrdiff_t>(k) * length,
                   c.ids.begin() + static_cast<ptrdiff_t>(k + 1) * length);
      TextEncoderOutput enc = encode_tokens(e, ids, n, clip_skip);
      if (k == 0 && enc.pooled) out.pooled = std::move(enc.pooled);  // SDXL: the first chunk's
      const int64_t width = enc.hidden.shape()[2];
      if (num_chunks == 1 && std::none_of(chunked[e].begin(), chunked[e].end(),
                                          [](const PromptChunks& c) { return c.weighted(); })) {
        states = std::move(enc.hidden);
        break;
      }
      if (k == 0)
        states = Tensor(DType::kF32, {n, int64_t{num_chunks} * length, width},
                        "the prompts' hidden states");
      const int64_t chunk_values = int64_t{length} * width;
      for (int p = 0; p < n; ++p) {
        float* dst = states.as<float>() + (int64_t{p} * num_chunks + k) * chunk_values;
        std::memcpy(dst, enc.hidden.as<float>() + p * chunk_values,
                    static_cast<size_t>(chunk_values) * sizeof(float));
        apply_emphasis(std::span<float>(dst, static_cast<size_t>(chunk_values)),
                       std::span<const float>(chunked[e][p].weights)
                           .subspan(static_cast<size_t>(k) * length, length),
                       width);
      }
    }
    hidden.push_back(std::move(states));
  }
  if (hidden.size() == 1) {
    out.context = std::move(hidden[0]);
    return out;
  }
  // SDXL: the encoders' states concatenated along channels, [N, T, C1 + C2].
  const Shape& s0 = hidden[0].shape();
  int64_t channels = 0;
  for (const Tensor& h : hidden) {
    HYRT_CHECK(h.shape()[0] == s0[0] && h.shape()[1] == s0[1], kInvalidModel,
               "the text encoders' outputs ", s0.to_string(), " and ", h.shape().to_string(),
               " do not line up");
    channels += h.shape()[2];
  }
  out.context = Tensor(DType::kF32, {s0[0], s0[1], channels}, "the text conditioning");
  float* dst = out.context.as<float>();
  for (int64_t row = 0; row < s0[0] * s0[1]; ++row)
    for (const Tensor& h : hidden) {
      const int64_t c = h.shape()[2];
      std::memcpy(dst, h.as<float>() + row * c, static_cast<size_t>(c) * sizeof(float));
      dst += c;
    }
  return out;
}

Tensor DiffusionModel::predict_noise(const TensorView& sample, std::span<const float> timesteps,
                                     const UNetConditioning& cond,
                                     std::vector<std::pair<std::string, Tensor>>* taps) {
  const TensorView& context = cond.context;
  HYRT_CHECK(sample.shape.rank() == 4 && context.shape.rank() == 3 &&
                 context.shape[0] == sample.shape[0] &&
                 timesteps.size() == static_cast<size_t>(sample.shape[0]),
             kInvalidArgument, "predict_noise: sample ", sample.shape.to_string(), ", context ",
             context.shape.to_string(), " and ", timesteps.size(), " timesteps do not agree");
  const models::UNetConfig& ucfg = unet_config();
  const int64_t batch = sample.shape[0];
  if (ucfg.text_time_embedding()) {
    HYRT_CHECK(cond.text_embeds.data &&
                   cond.text_embeds.shape == Shape({batch, ucfg.pooled_text_dim()}) &&
                   cond.time_ids.size() == static_cast<size_t>(batch) * 6,
               kInvalidArgument, "predict_noise: this UNet (SDXL) needs text_embeds [", batch, ", ",
               ucfg.pooled_text_dim(), "] and ", batch, " x 6 time_ids; got text_embeds ",
               cond.text_embeds.data ? cond.text_embeds.shape.to_string() : std::string("none"),
               " and ", cond.time_ids.size(), " time_ids");
  } else {
    HYRT_CHECK(!cond.text_embeds.data && cond.time_ids.empty(), kInvalidArgument,
               "predict_noise: this UNet takes no text_embeds or time_ids");
  }
  if (ucfg.time_cond_proj_dim > 0) {
    HYRT_CHECK(cond.guidance_scale.size() == static_cast<size_t>(batch), kInvalidArgument,
               "predict_noise: this UNet (an LCM model) embeds the guidance scale: it needs ",
               batch, " guidance values, got ", cond.guidance_scale.size());
  } else {
    HYRT_CHECK(cond.guidance_scale.empty(), kInvalidArgument,
               "predict_noise: this UNet takes no guidance values (not an LCM model)");
  }
  models::UNetShape shape;
  shape.batch = static_cast<int>(batch);
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
      [&] { return models::build_unet(ucfg, weights_for("unet"), shape); }, "unet", dims);
  exec::Executable& exe = *compiled.exe;
  copy_into(exe.input("sample"), sample);
  std::memcpy(exe.input("timestep").data, timesteps.data(), timesteps.size() * sizeof(float));
  copy_into(exe.input("encoder_hidden_states"), context);
  if (ucfg.time_cond_proj_dim > 0) {
    // The embedding takes w = scale − 1, as LatentConsistencyModelPipeline passes it.
    float* w = static_cast<float*>(exe.input("guidance_scale").data);
    for (int64_t i = 0; i < batch; ++i)
      w[i] = cond.guidance_scale[static_cast<size_t>(i)] - 1.0f;
  }
  if (ucfg.text_time_embedding()) {
    copy_into(exe.input("text_embeds"), cond.text_embeds);
    std::memcpy(exe.input("time_ids").data, cond.time_ids.data(),
                cond.time_ids.size() * sizeof(float));
  }
  run(compiled);
  if (taps) {
    taps->clear();
    for (size_t k = 0; k < compiled.tap_names.size(); ++k)
      taps->emplace_back(compiled.tap_names[k], copy_out(exe.output(k + 1)));
  }
  return copy_out(exe.output(0));
}

Tensor DiffusionModel::decode_with(const std::string& what, const std::string& component,
                                   const TensorView& latent,
                                   const std::function<models::BuiltGraph(int, int, int)>& build,
                                   std::optional<backend::Int8Mode> int8_mode) {
  HYRT_CHECK(latent.shape.rank() == 4, kInvalidArgument,
             "decode: latent must be [B, h, w, C], got ", latent.shape.to_string());
  const int b = static_cast<int>(latent.shape[0]), h = static_cast<int>(latent.shape[1]),
            w = static_cast<int>(latent.shape[2]);
  const std::string dims = str_cat("b", b, " ", h, "x", w);
  Compiled& decoder = executable(
      str_cat(what, " ", dims), [&] { return build(b, h, w); }, component, dims, int8_mode);
  exec::Executable& exe = *decoder.exe;
  copy_into(exe.input("latent"), latent);
  run(decoder);
  return copy_out(exe.output(0));
}

Tensor DiffusionModel::decode_latents(const TensorView& latent, bool unscale) {
  return decode_with(
      unscale ? "vae unscale" : "vae", "vae_decoder", latent,
      [&](int b, int h, int w) {
        return models::build_vae_decoder(vae_config(), *weights_, b, h, w, unscale,
                                         vae_wide_range());
      },
      vae_int8_mode_);
}

void DiffusionModel::set_tiny_vae(std::shared_ptr<const weights::TinyAutoencoderWeights> tiny) {
  if (tiny) {
    const models::TinyVaeDecoderLayout l = models::inspect_tiny_vae_decoder(*tiny);
    HYRT_CHECK(l.latent_channels == vae_config().latent_channels &&
                   l.upscale == vae_scale_factor() && l.out_channels == vae_config().out_channels,
               kInvalidArgument, "the TAESD decoder '", tiny->label(), "' takes ",
               l.latent_channels, "-channel latents to ", l.out_channels, "-channel pictures ",
               l.upscale, "x their size; this model's VAE takes ", vae_config().latent_channels,
               " channels to ", vae_config().out_channels, " at ", vae_scale_factor(),
               "x (taesd is for SD 1.x/2.x, taesdxl for SDXL)");
  }
  release("tiny_vae_decoder");  // executables of the previous one read its weights
  tiny_vae_ = std::move(tiny);
}

Tensor DiffusionModel::decode_latents_tiny(const TensorView& latent) {
  HYRT_CHECK(tiny_vae_, kInvalidArgument, "this model has no TAESD decoder (set_tiny_vae)");
  return decode_with("tiny_vae", "tiny_vae_decoder", latent, [&](int b, int h, int w) {
    return models::build_tiny_vae_decoder(*tiny_vae_, b, h, w);
  });
}

Tensor LatentDistribution::std() const {
  Tensor out(DType::kF32, logvar.shape(), "the latent distribution's std");
  const float* lv = logvar.as<float>();
  float* o = out.as<float>();
  for (int64_t i = 0; i < out.numel(); ++i)
    o[i] = std::exp(0.5f * lv[i]);
  return out;
}

LatentDistribution DiffusionModel::encode_image(const TensorView& image) {
  HYRT_CHECK(image.shape.rank() == 4 && image.shape[3] == vae_config().in_channels,
             kInvalidArgument, "encode: image must be [B, H, W, ", vae_config().in_channels,
             "], got ", image.shape.to_string());
  const int b = static_cast<int>(image.shape[0]), h = static_cast<int>(image.shape[1]),
            w = static_cast<int>(image.shape[2]);
  const int f = vae_scale_factor();
  HYRT_CHECK(h % f == 0 && w % f == 0 && h > 0 && w > 0, kInvalidArgument, "encode: image size ", h,
             "x", w, " is not a multiple of ", f);
  const std::string dims = str_cat("b", b, " ", h, "x", w);
  Compiled& encoder = executable(
      str_cat("vae_encoder ", dims),
      [&] { return models::build_vae_encoder(vae_config(), *weights_, b, h, w, vae_wide_range()); },
      "vae_encoder", dims, vae_int8_mode_);
  exec::Executable& exe = *encoder.exe;
  copy_into(exe.input("image"), image);
  run(encoder);
  const Tensor moments = copy_out(exe.output(0));  // [B, h, w, 2C]
  const int64_t c2 = moments.shape()[3], c = c2 / 2;
  const Shape half{moments.shape()[0], moments.shape()[1], moments.shape()[2], c};
  LatentDistribution d{Tensor(DType::kF32, half, "the latent mean"),
                       Tensor(DType::kF32, half, "the latent log-variance")};
  const int64_t pixels = half.numel() / c;
  const float* m = moments.as<float>();
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t k = 0; k < c; ++k) {
      d.mean.as<float>()[p * c + k] = m[p * c2 + k];
      d.logvar.as<float>()[p * c + k] = std::clamp(m[p * c2 + c + k], -30.0f, 20.0f);
    }
  return d;
}

std::vector<MemoryReport> DiffusionModel::memory_report() const {
  std::map<std::string, MemoryReport> all = released_reports_;
  for (const auto& [key, c] : compiled_) {
    all[key] = c.report;
    all[key].captured_steps = c.exe->captured_steps();
    all[key].invariant_steps = static_cast<int>(c.exe->invariant_steps());
    all[key].reused_runs = c.exe->reused_runs();
  }
  std::vector<MemoryReport> r;
  for (const auto& [key, report] : all)
    r.push_back(report);
  return r;
}

void DiffusionModel::release(std::string_view component) {
  for (auto it = compiled_.begin(); it != compiled_.end();) {
    if (it->second.report.component == component) {
      released_reports_[it->first] = it->second.report;
      it = compiled_.erase(it);
    } else {
      ++it;
    }
  }
  return_free_heap_to_system();  // what the stage's kernels took from malloc (oneDNN's too)
}

void DiffusionModel::settle() {
  for (auto& [key, c] : compiled_)
    if (c.exe) c.exe->settle();
}

std::vector<std::pair<std::string, std::vector<exec::OpProfile>>> DiffusionModel::op_profiles()
    const {
  std::vector<std::pair<std::string, std::vector<exec::OpProfile>>> r;
  for (const auto& [key, c] : compiled_)
    r.emplace_back(key, c.exe->profile());
  return r;
}

}  // namespace hyrt::pipeline

#include "weights/hyrt_format.h"

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <map>
#include <unordered_map>

#include "core/error.h"
#include "weights/json_text.h"

namespace hyrt::weights {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kVocabFile = "vocab.json";
constexpr std::string_view kMergesFile = "merges.txt";
constexpr std::string_view kTokenizerConfigFile = "tokenizer_config.json";

std::optional<Component> component_of(std::string_view name) {
  for (Component c : kAllComponents) {
    const std::string_view prefix = component_name(c);
    if (name.size() > prefix.size() && name.starts_with(prefix) && name[prefix.size()] == '.')
      return c;
  }
  return std::nullopt;
}

std::string tensor_text(const SafetensorsFile& file, const TensorInfo& t) {
  const TensorView v = file.view(t);
  return std::string(static_cast<const char*>(v.data), v.bytes());
}

// Scales are read with memcpy: a foreign writer need not align them.
void check_scales(const SafetensorsFile& file, const TensorInfo& weight, const TensorInfo& scale) {
  const std::string& f = file.label();
  HYRT_CHECK(scale.dtype == DType::kF32, kInvalidModel, f, ": scale tensor '", scale.name, "' is ",
             dtype_name(scale.dtype), "; per-row scales must be F32");
  HYRT_CHECK(scale.shape.rank() == 1, kInvalidModel, f, ": scale tensor '", scale.name,
             "' has shape ", scale.shape.to_string(), "; per-row scales must be rank 1 [rows]");
  HYRT_CHECK(scale.shape[0] == weight.shape[0], kInvalidModel, f, ": scale tensor '", scale.name,
             "' has ", scale.shape[0], " entries but '", weight.name, "' ",
             weight.shape.to_string(), " has ", weight.shape[0], " rows");
  const auto* p = static_cast<const uint8_t*>(file.view(scale).data);
  for (int64_t r = 0; r < scale.shape[0]; ++r) {
    float s;
    std::memcpy(&s, p + r * 4, 4);
    HYRT_CHECK(std::isfinite(s) && s >= 0, kInvalidModel, f, ": scale tensor '", scale.name,
               "' has the invalid value ", s, " at row ", r, " (scales must be finite and >= 0)");
  }
}

nlohmann::json parse_json_object(const SafetensorsFile& file, std::string_view key,
                                 const std::string& text) {
  const nlohmann::json j =
      parse_json_bounded(text, str_cat(file.label(), ": metadata '", excerpt(key), "'"));
  HYRT_CHECK(j.is_object(), kInvalidModel, file.label(), ": metadata '", key,
             "' is not a JSON object");
  return j;
}

uint64_t bytes_of(DType t, const Shape& s) {
  return static_cast<uint64_t>(s.numel()) * dtype_size(t);
}

}  // namespace

std::string hyrt_config_key(Component c) {
  return str_cat("config.", component_name(c));
}

std::string_view hyrt_tokenizer_prefix(Component c) {
  switch (c) {
    case Component::kTextEncoder:
      return kTokenizerPrefix;
    case Component::kTextEncoder2:
      return kTokenizer2Prefix;
    case Component::kUNet:
    case Component::kVae:
      break;
  }
  return "";
}

bool is_hyrt_file(const SafetensorsFile& file) {
  auto it = file.metadata().find(std::string(kMetaFormat));
  return it != file.metadata().end() && it->second.starts_with("hyrt-");
}

HyrtContents read_hyrt_contents(const SafetensorsFile& file) {
  const std::string& f = file.label();
  const auto& meta = file.metadata();
  auto meta_get = [&](std::string_view key) -> const std::string* {
    auto it = meta.find(std::string(key));
    return it == meta.end() ? nullptr : &it->second;
  };
  const std::string* format = meta_get(kMetaFormat);
  HYRT_CHECK(format && (*format == kHyrtFormat || *format == kHyrtFormatSdxl), kUnsupported, f,
             ": a hyrt file of format '", format ? *format : "", "'; this build reads '",
             kHyrtFormat, "' (Stable Diffusion 1.5) and '", kHyrtFormatSdxl, "' (SDXL)");
  const std::string* version = meta_get(kMetaFormatVersion);
  HYRT_CHECK(version, kInvalidModel, f, ": hyrt file without a '", kMetaFormatVersion,
             "' metadata entry");
  HYRT_CHECK(*version == kHyrtFormatVersion, kUnsupported, f, ": hyrt file format_version '",
             *version, "'; this build reads version ", kHyrtFormatVersion,
             " (re-create the file with this build's `hyrt quantize`)");

  HyrtContents out;
  // By Component: vocab, merges, config.
  const TensorInfo* tokenizer[kNumComponents][3] = {};
  std::unordered_map<std::string_view, const TensorInfo*> scales;  // keyed by the weight's name
  auto tokenizer_of = [](std::string_view name) -> std::optional<Component> {
    for (Component c : {Component::kTextEncoder, Component::kTextEncoder2})
      if (name.starts_with(hyrt_tokenizer_prefix(c))) return c;
    return std::nullopt;
  };
  for (const TensorInfo& t : file.tensors()) {
    const std::string_view name = t.name;
    if (const auto tc = tokenizer_of(name)) {
      const std::string_view which = name.substr(hyrt_tokenizer_prefix(*tc).size());
      const int slot = which == kVocabFile             ? 0
                       : which == kMergesFile          ? 1
                       : which == kTokenizerConfigFile ? 2
                                                       : -1;
      if (slot < 0) {
        out.unexpected.push_back(t.name);
        continue;
      }
      HYRT_CHECK(t.dtype == DType::kU8 && t.shape.rank() == 1, kInvalidModel, f,
                 ": tokenizer tensor '", t.name, "' is ", dtype_name(t.dtype), t.shape.to_string(),
                 "; expected U8 [bytes]");
      tokenizer[static_cast<size_t>(*tc)][slot] = &t;
      continue;
    }
    if (name.ends_with(kScaleSuffix)) {
      const std::string_view base = name.substr(0, name.size() - kScaleSuffix.size());
      const TensorInfo* w = file.find(base);
      HYRT_CHECK(w, kInvalidModel, f, ": scale tensor '", t.name, "' has no tensor '", base,
                 "' to go with it");
      HYRT_CHECK(w->dtype == DType::kS8, kInvalidModel, f, ": scale tensor '", t.name,
                 "' belongs to '", base, "', which is ", dtype_name(w->dtype),
                 ", not I8 (only quantized weights have scales)");
      scales.emplace(w->name, &t);
      continue;
    }
    const auto c = component_of(name);
    if (!c) {
      out.unexpected.push_back(t.name);
      continue;
    }
    out.weights.push_back({&t, *c, nullptr});
  }
  for (HyrtWeight& w : out.weights) {
    if (w.tensor->dtype != DType::kS8) continue;
    HYRT_CHECK(w.tensor->shape.rank() >= 2, kInvalidModel, f, ": I8 tensor '", w.tensor->name,
               "' has shape ", w.tensor->shape.to_string(),
               "; quantized weights have one scale per row (rank >= 2)");
    auto it = scales.find(w.tensor->name);
    HYRT_CHECK(it != scales.end(), kInvalidModel, f, ": I8 tensor '", w.tensor->name, "' has no '",
               w.tensor->name, kScaleSuffix, "' (per-row scales)");
    check_scales(file, *w.tensor, *it->second);
    w.scale = it->second;
  }

  bool has[kNumComponents] = {};
  for (const HyrtWeight& w : out.weights)
    has[static_cast<size_t>(w.component)] = true;
  const bool sdxl = *format == kHyrtFormatSdxl;
  HYRT_CHECK(has[static_cast<size_t>(Component::kTextEncoder2)] == sdxl, kInvalidModel, f, ": a '",
             *format, "' file ", sdxl ? "without" : "with", " text_encoder_2 weights (",
             kHyrtFormatSdxl, " is exactly the format of files that have them)");
  for (Component c : kAllComponents) {
    const std::string key = hyrt_config_key(c);
    const std::string* text = meta_get(key);
    HYRT_CHECK(text || !has[static_cast<size_t>(c)], kInvalidModel, f, ": the ", component_title(c),
               " has weights but the metadata has no '", key, "' config");
    if (text) out.configs[static_cast<size_t>(c)] = parse_json_object(file, key, *text);
  }
  if (const std::string* s = meta_get(kMetaSchedulerConfig)) {
    parse_json_object(file, kMetaSchedulerConfig, *s);
    out.scheduler_config = *s;
  }
  if (const std::string* s = meta_get(kMetaModelIndex))
    out.model_index = parse_json_object(file, kMetaModelIndex, *s);
  for (Component c : {Component::kTextEncoder, Component::kTextEncoder2}) {
    const TensorInfo* const* tok = tokenizer[static_cast<size_t>(c)];
    const std::string_view prefix = hyrt_tokenizer_prefix(c);
    HYRT_CHECK(!tok[0] == !tok[1], kInvalidModel, f, ": the embedded tokenizer '", prefix, "' has ",
               tok[0] ? kVocabFile : kMergesFile, " but no ", tok[0] ? kMergesFile : kVocabFile,
               " (tensor '", prefix, tok[0] ? kMergesFile : kVocabFile, "')");
    if (!tok[0]) continue;
    TokenizerFiles tf;
    tf.vocab_json = tensor_text(file, *tok[0]);
    tf.merges_txt = tensor_text(file, *tok[1]);
    if (tok[2]) tf.tokenizer_config_json = tensor_text(file, *tok[2]);
    out.tokenizers[static_cast<size_t>(c)] = std::move(tf);
  }
  return out;
}

namespace {

// Every file a checkpoint reads, for refuse_overwriting_inputs().
std::vector<fs::path> input_files(const Checkpoint& ck) {
  std::vector<fs::path> files{ck.root()};
  for (Component c : kAllComponents) {
    for (const auto& f : ck.weight_files(c))
      files.push_back(f);
    if (auto p = ck.config_path(c)) files.push_back(*p);
    if (auto d = ck.tokenizer_dir(c))
      for (const char* name : {"vocab.json", "merges.txt", "tokenizer_config.json"})
        files.push_back(*d / name);
  }
  if (ck.format() == CheckpointFormat::kDiffusersFolder) {
    files.push_back(ck.root() / "model_index.json");
    files.push_back(ck.root() / "scheduler" / "scheduler_config.json");
  }
  return files;
}

}  // namespace

void refuse_overwriting_inputs(const Checkpoint& source, const fs::path& out) {
  // Device and inode, not names: a symlink, a hard link or "./a/../model.safetensors" is the
  // same file under another name.
  // The writer's temporary file is unlinked first (SafetensorsWriter): it must not be an
  // input either.
  fs::path tmp = out;
  tmp += ".tmp";
  for (const fs::path& target : {out, tmp}) {
    struct stat out_st {};
    if (::stat(target.c_str(), &out_st) != 0) continue;  // a new file overwrites nothing
    for (const fs::path& in : input_files(source)) {
      struct stat in_st {};
      if (::stat(in.c_str(), &in_st) != 0) continue;
      HYRT_CHECK(in_st.st_dev != out_st.st_dev || in_st.st_ino != out_st.st_ino, kInvalidArgument,
                 "output ", target.string(), " would overwrite ",
                 in == source.root() ? "the model itself" : in.string(),
                 ", an input of this command: choose another output file");
    }
  }
}

HyrtWriteReport write_hyrt_file(
    const Checkpoint& source, const fs::path& out, const HyrtWriteOptions& options,
    const std::function<void(const HyrtTensorReport&, size_t, size_t)>& progress) {
  for (Component c : kAllComponents)
    HYRT_CHECK(!source.has(c) || options.configs[static_cast<size_t>(c)], kInvalidArgument,
               "write_hyrt_file: no config given for the ", component_title(c));
  refuse_overwriting_inputs(source, out);
  const bool sdxl = source.has(Component::kTextEncoder2);
  HYRT_CHECK(!options.tokenizer_2 || sdxl, kInvalidArgument,
             "write_hyrt_file: a second tokenizer for a model without a second text encoder");

  std::map<std::string, std::string> meta;
  meta[std::string(kMetaFormat)] = sdxl ? kHyrtFormatSdxl : kHyrtFormat;
  meta[std::string(kMetaFormatVersion)] = kHyrtFormatVersion;
  meta[std::string(kMetaQuantization)] = kHyrtQuantization;
  for (Component c : kAllComponents)
    if (const auto& cfg = options.configs[static_cast<size_t>(c)]) meta[hyrt_config_key(c)] = *cfg;
  if (options.scheduler_config) meta[std::string(kMetaSchedulerConfig)] = *options.scheduler_config;
  if (options.model_index) {
    bool object = false;
    try {
      object = parse_json_bounded(*options.model_index, "model_index").is_object();
    } catch (const Error&) {
    }
    HYRT_CHECK(object, kInvalidArgument, "write_hyrt_file: model_index is not a JSON object");
    meta[std::string(kMetaModelIndex)] = *options.model_index;
  }

  // The plan: what each weight becomes. Decided from names and shapes alone, so the file's
  // layout is fixed before any tensor is quantized (the writer streams).
  HyrtWriteReport report;
  std::vector<TensorDecl> decls;
  for (Component c : kAllComponents)
    for (const std::string& name : source.names(c)) {
      const WeightInfo& w = source.info(name);
      HyrtTensorReport r;
      r.name = name;
      r.component = c;
      r.source_dtype = w.dtype;
      r.shape = w.shape;
      const bool already = w.scale != nullptr;  // an s8 weight of a hyrt source
      r.quantized = already || (dtype_is_float(w.dtype) && options.policy.quantize(name, w.shape));
      r.stored_dtype = r.quantized ? DType::kS8 : w.dtype;
      r.bytes_before =
          bytes_of(w.dtype, w.shape) + (already ? bytes_of(DType::kF32, Shape{w.shape[0]}) : 0);
      r.bytes_after = bytes_of(r.stored_dtype, w.shape) +
                      (r.quantized ? bytes_of(DType::kF32, Shape{w.shape[0]}) : 0);
      decls.push_back({name, r.stored_dtype, w.shape});
      if (r.quantized)
        decls.push_back({name + std::string(kScaleSuffix), DType::kF32, Shape{w.shape[0]}});
      report.tensors.push_back(std::move(r));
    }
  std::vector<std::pair<std::string, std::string_view>> tok_blobs;
  for (const auto& [prefix, tok] : {std::pair(kTokenizerPrefix, &options.tokenizer),
                                    std::pair(kTokenizer2Prefix, &options.tokenizer_2)}) {
    if (!*tok) continue;
    const std::string p(prefix);
    tok_blobs.emplace_back(p + std::string(kVocabFile), (*tok)->vocab_json);
    tok_blobs.emplace_back(p + std::string(kMergesFile), (*tok)->merges_txt);
    if (!(*tok)->tokenizer_config_json.empty())
      tok_blobs.emplace_back(p + std::string(kTokenizerConfigFile), (*tok)->tokenizer_config_json);
  }
  for (const auto& [name, blob] : tok_blobs)
    decls.push_back({name, DType::kU8, Shape{static_cast<int64_t>(blob.size())}});

  SafetensorsWriter writer(out, std::move(decls), meta);
  for (size_t i = 0; i < report.tensors.size(); ++i) {
    HyrtTensorReport& r = report.tensors[i];
    const WeightInfo& w = source.info(r.name);
    const TensorView v = source.get(r.name);
    const std::string scale_name = r.name + std::string(kScaleSuffix);
    if (w.scale) {
      writer.write(r.name, v.data);
      writer.write(scale_name, source.scale(r.name)->data);
    } else if (r.quantized) {
      QuantizedTensor q;
      try {
        q = quantize_per_row(v, options.refit_iterations);
      } catch (const Error& e) {
        fail(e.code(), source.root().string(), ": weight '", r.name, "': ", e.what());
      }
      r.rel_error = q.rel_error;
      r.worst_row_rel_error = q.worst_row_rel_error;
      writer.write(r.name, q.q.data());
      writer.write(scale_name, q.scale.data());
    } else {
      writer.write(r.name, v.data);
    }
    HyrtComponentReport& cr = report.components[static_cast<size_t>(r.component)];
    (r.quantized ? cr.quantized : cr.kept) += 1;
    cr.bytes_before += r.bytes_before;
    cr.bytes_after += r.bytes_after;
    if (r.quantized && (cr.worst_tensor.empty() || r.rel_error > cr.worst_rel_error)) {
      cr.worst_rel_error = r.rel_error;
      cr.worst_tensor = r.name;
    }
    if (progress) progress(r, i + 1, report.tensors.size());
  }
  for (const auto& [name, blob] : tok_blobs)
    writer.write(name, blob.data());
  writer.finish();
  report.file_bytes = writer.file_size();
  return report;
}

}  // namespace hyrt::weights

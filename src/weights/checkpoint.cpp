#include "weights/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "core/alloc.h"
#include "core/error.h"
#include "weights/hyrt_format.h"
#include "weights/json_text.h"

namespace hyrt::weights {
namespace fs = std::filesystem;

namespace {

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}
bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

nlohmann::json read_json_file(const fs::path& path) {
  return read_json_file_bounded(path);
}

std::vector<fs::path> files_with_suffix(const fs::path& dir, std::string_view suffix) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file(ec) && name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool trailing_1x1(const Shape& s) {
  return s.rank() == 4 && s[2] == 1 && s[3] == 1;
}

Shape squeeze_1x1(const Shape& s) {
  return Shape{s[0], s[1]};
}

std::string read_text(const fs::path& path) {
  return read_small_file(path);
}

}  // namespace

std::string_view checkpoint_format_name(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kDiffusersFolder:
      return "diffusers folder";
    case CheckpointFormat::kLdmSingleFile:
      return "LDM single file";
    case CheckpointFormat::kHyrtFile:
      return "hyrt file";
    case CheckpointFormat::kSgmSingleFile:
      return "SGM single file";
  }
  return "?";
}

std::string_view tokenizer_folder_name(Component c) {
  switch (c) {
    case Component::kTextEncoder:
      return "tokenizer";
    case Component::kTextEncoder2:
      return "tokenizer_2";
    case Component::kUNet:
    case Component::kVae:
      break;
  }
  return "";
}

std::unique_ptr<Checkpoint> Checkpoint::open(const fs::path& path) {
  std::error_code ec;
  HYRT_CHECK(fs::exists(path, ec), kNotFound, path.string(), ": no such file or directory");
  // Before anything is opened: a FIFO would block forever, /dev/zero never ends.
  require_regular_file(path, /*allow_dir=*/true);
  std::unique_ptr<Checkpoint> ck(new Checkpoint());
  ck->root_ = path;
  if (is_dir(path)) {
    ck->format_ = CheckpointFormat::kDiffusersFolder;
    ck->open_diffusers();
  } else {
    ck->open_single_file();
  }
  return ck;
}

void Checkpoint::add(const SafetensorsFile& file, const TensorInfo& t, const KeyMapping& m) {
  switch (m.kind) {
    case KeyMapping::Kind::kIgnored:
      ignored_.push_back(t.name);
      return;
    case KeyMapping::Kind::kUnexpected:
      unexpected_.push_back(t.name);
      return;
    case KeyMapping::Kind::kMapped:
      break;
  }
  WeightInfo w;
  w.name = m.canonical;
  w.component = m.component;
  w.dtype = t.dtype;
  w.shape = m.squeeze_1x1 && trailing_1x1(t.shape) ? squeeze_1x1(t.shape) : t.shape;
  w.file = &file;
  w.tensor = &t;
  if (!m.split_rows.empty()) {
    // q, k, v stacked along dim 0: three views of consecutive row ranges.
    const bool bias = m.split_rows.front().ends_with(".bias");
    const int rank = bias ? 1 : 2;
    HYRT_CHECK(m.split_rows.size() == 3 && t.shape.rank() == rank && t.shape[0] % 3 == 0,
               kInvalidModel, root_.string(), ": '", t.name, "' in ", file.label(), " has shape ",
               t.shape.to_string(), "; it holds q, k and v stacked along dim 0, so it must be ",
               bias ? "[3C]" : "[3C, C]", " (rank ", rank, ", dim 0 a multiple of 3)");
    Shape part = t.shape;
    part[0] = t.shape[0] / 3;
    const uint64_t part_bytes = static_cast<uint64_t>(part.numel()) * dtype_size(t.dtype);
    for (size_t i = 0; i < 3; ++i) {
      WeightInfo p = w;
      p.name = m.split_rows[i];
      p.shape = part;
      p.byte_offset = i * part_bytes;
      add_weight(std::move(p));
    }
    return;
  }
  if (m.transpose) {
    // Stored [in, out]; exposed as the Linear weight [out, in]: a transposed copy, element
    // by element with memcpy (the stored bytes may be unaligned; the tensor is small).
    HYRT_CHECK(t.shape.rank() == 2, kInvalidModel, root_.string(), ": '", t.name, "' in ",
               file.label(), " has shape ", t.shape.to_string(),
               "; a projection stored transposed must be rank 2 [in, out]");
    const int64_t rows = t.shape[0], cols = t.shape[1];
    const size_t es = dtype_size(t.dtype);
    auto copy = std::make_unique<Tensor>(t.dtype, Shape{cols, rows},
                                         str_cat("a transposed copy of '", t.name, "'"));
    const auto* src = static_cast<const uint8_t*>(file.view(t).data);
    auto* dst = static_cast<uint8_t*>(copy->data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        std::memcpy(dst + (c * rows + r) * es, src + (r * cols + c) * es, es);
    w.shape = copy->shape();
    w.materialized = copy.get();
    owned_.push_back(std::move(copy));
  }
  add_weight(std::move(w));
}

void Checkpoint::add_weight(WeightInfo w) {
  if (auto it = by_name_.find(w.name); it != by_name_.end()) {
    const WeightInfo& prev = weights_[it->second];
    fail(ErrorCode::kInvalidModel, root_.string(), ": '", w.tensor->name, "' in ", w.file->label(),
         " and '", prev.tensor->name, "' in ", prev.file->label(), " both map to weight '", w.name,
         "'");
  }
  by_name_.emplace(w.name, weights_.size());
  names_[index(w.component)].push_back(w.name);
  weights_.push_back(std::move(w));
}

void Checkpoint::open_single_file() {
  const std::string ext = root_.extension().string();
  HYRT_CHECK(ext != ".ckpt" && ext != ".bin" && ext != ".pt" && ext != ".pth", kUnsupported,
             root_.string(),
             ": pickle checkpoints are not supported (they can run code when loaded); "
             "convert the file to .safetensors");
  files_.push_back(SafetensorsFile::open(root_));
  const SafetensorsFile& file = *files_.back();
  if (is_hyrt_file(file)) {
    format_ = CheckpointFormat::kHyrtFile;
    open_hyrt(file);
  } else {
    open_ldm(file);  // sets kLdmSingleFile or kSgmSingleFile
  }
  for (Component c : kAllComponents)
    if (has(c)) component_files_[index(c)].push_back(root_);
}

void Checkpoint::open_hyrt(const SafetensorsFile& file) {
  HyrtContents contents = read_hyrt_contents(file);
  for (const HyrtWeight& w : contents.weights) {
    KeyMapping m;
    m.kind = KeyMapping::Kind::kMapped;
    m.canonical = w.tensor->name;  // already canonical
    m.component = w.component;
    add(file, *w.tensor, m);
    weights_.back().scale = w.scale;
  }
  unexpected_ = std::move(contents.unexpected);
  for (Component c : kAllComponents) {
    configs_[index(c)] = std::move(contents.configs[index(c)]);
    if (configs_[index(c)]) config_paths_[index(c)] = root_;
    embedded_tokenizers_[index(c)] = std::move(contents.tokenizers[index(c)]);
  }
  embedded_scheduler_ = std::move(contents.scheduler_config);
  model_index_ = std::move(contents.model_index);
  if (!embedded_tokenizers_[index(Component::kTextEncoder)])
    notes_.push_back("no embedded tokenizer (pass a config folder with tokenizer/)");
  if (has(Component::kTextEncoder2) && !embedded_tokenizers_[index(Component::kTextEncoder2)])
    notes_.push_back("no embedded second tokenizer (pass a config folder with tokenizer_2/)");
  HYRT_CHECK(!weights_.empty(), kInvalidModel, root_.string(),
             ": hyrt file without any text_encoder., text_encoder_2., unet. or vae. weights");
}

void Checkpoint::open_ldm(const SafetensorsFile& file) {
  std::vector<std::string> keys;
  keys.reserve(file.tensors().size());
  for (const auto& t : file.tensors())
    keys.push_back(t.name);
  LdmKeyMap map(keys);
  format_ = map.is_sgm() ? CheckpointFormat::kSgmSingleFile : CheckpointFormat::kLdmSingleFile;
  for (const auto& t : file.tensors())
    add(file, t, map.map(t.name));

  if (weights_.empty())
    fail(ErrorCode::kInvalidModel, root_.string(),
         ": not a Stable Diffusion checkpoint: expected an LDM/CompVis or SGM single file (keys "
         "model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.* or "
         "conditioner.embedders.*) or a diffusers folder; this file has ",
         file.tensors().size(), " tensors", keys.empty() ? "" : ", the first named '",
         keys.empty() ? "" : keys.front(), keys.empty() ? "" : "'");
}

void Checkpoint::load_component_files(Component c, const fs::path& dir) {
  const std::string base = is_text_encoder(c) ? "model" : "diffusion_pytorch_model";
  std::vector<fs::path> picked;
  // Preference: full precision, then the fp16 variant, then sharded files through their
  // index, then whatever .safetensors files the folder has.
  for (const std::string& name : {base + ".safetensors", base + ".fp16.safetensors"}) {
    if (is_file(dir / name)) {
      picked.push_back(dir / name);
      break;
    }
  }
  if (picked.empty()) {
    for (const std::string& name :
         {base + ".safetensors.index.json", base + ".fp16.safetensors.index.json"}) {
      const fs::path index_path = dir / name;
      if (!is_file(index_path)) continue;
      nlohmann::json idx = read_json_file(index_path);
      auto wm = idx.find("weight_map");
      HYRT_CHECK(wm != idx.end() && wm->is_object(), kInvalidModel, index_path.string(),
                 ": missing object \"weight_map\"");
      std::set<std::string> shards;
      for (const auto& [k, v] : wm->items()) {
        HYRT_CHECK(v.is_string(), kInvalidModel, index_path.string(), ": weight_map['", excerpt(k),
                   "'] is not a file name");
        const std::string shard = v.get<std::string>();
        HYRT_CHECK(fs::path(shard).filename() == fs::path(shard), kInvalidModel,
                   index_path.string(), ": shard '", excerpt(shard), "' is not a plain file name");
        shards.insert(shard);
      }
      for (const auto& s : shards)
        picked.push_back(dir / s);
      break;
    }
  }
  if (picked.empty()) picked = files_with_suffix(dir, ".safetensors");
  if (picked.empty()) {
    const auto bins = files_with_suffix(dir, ".bin");
    notes_.push_back(str_cat(component_name(c), "/: no .safetensors weights",
                             bins.empty()
                                 ? ""
                                 : str_cat(" (found ", bins.front().filename().string(),
                                           ": pickle weights are not supported; convert to "
                                           "safetensors)")));
    return;
  }
  for (const auto& p : picked) {
    files_.push_back(SafetensorsFile::open(p));
    const SafetensorsFile& file = *files_.back();
    for (const auto& t : file.tensors())
      add(file, t, map_diffusers_key(c, t.name, t.shape.rank(), trailing_1x1(t.shape)));
    component_files_[index(c)].push_back(p);
  }
}

void Checkpoint::open_diffusers() {
  const bool has_index = is_file(root_ / "model_index.json");
  bool any_dir = false;
  for (Component c : kAllComponents)
    any_dir = any_dir || is_dir(root_ / component_name(c));
  HYRT_CHECK(has_index || any_dir, kInvalidModel, root_.string(),
             ": not a model: a diffusers folder needs model_index.json and text_encoder/, "
             "unet/, vae/ sub-folders; an LDM checkpoint is a single .safetensors file");
  if (has_index) {
    const fs::path p = root_ / "model_index.json";
    model_index_ = read_json_file(p);  // malformed is an error
    HYRT_CHECK(model_index_->is_object(), kInvalidModel, p.string(), ": not a JSON object");
  }

  for (Component c : kAllComponents) {
    const fs::path dir = root_ / component_name(c);
    if (!is_dir(dir)) {
      // SD 1.5 has no second text encoder: not worth a note.
      if (c != Component::kTextEncoder2) notes_.push_back(str_cat(component_name(c), "/: missing"));
      continue;
    }
    load_component_files(c, dir);
    if (is_file(dir / "config.json")) {
      config_paths_[index(c)] = dir / "config.json";
      configs_[index(c)] = read_json_file(dir / "config.json");
      HYRT_CHECK(configs_[index(c)]->is_object(), kInvalidModel, (dir / "config.json").string(),
                 ": not a JSON object");
    } else if (has(c)) {
      notes_.push_back(str_cat(component_name(c),
                               "/config.json: missing (sizes will be read from tensor shapes)"));
    }
  }
  for (Component c : kAllComponents)
    if (is_text_encoder(c) && is_dir(root_ / tokenizer_folder_name(c)))
      tokenizer_dirs_[index(c)] = root_ / tokenizer_folder_name(c);
  bool any = false;
  for (Component c : kAllComponents)
    any = any || has(c);
  if (!any) {
    std::string why;
    for (const auto& n : notes_)
      why += "; " + n;
    fail(ErrorCode::kInvalidModel, root_.string(),
         ": diffusers folder without any text_encoder/, unet/ or vae/ weights", why);
  }
}

const WeightInfo* Checkpoint::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &weights_[it->second];
}

const WeightInfo& Checkpoint::info(std::string_view name) const {
  const WeightInfo* w = find(name);
  HYRT_CHECK(w, kNotFound, root_.string(), ": no weight named '", name, "'");
  return *w;
}

TensorView Checkpoint::get(std::string_view name) const {
  const WeightInfo& w = info(name);
  if (w.materialized) return w.materialized->view();
  TensorView v = w.file->view(*w.tensor);
  // The squeezed or split shape, where one applies; a split starts at its own rows.
  v.data = static_cast<uint8_t*>(v.data) + w.byte_offset;
  v.shape = w.shape;
  return v;
}

std::optional<TensorView> Checkpoint::scale(std::string_view name) const {
  const WeightInfo& w = info(name);
  if (!w.scale) return std::nullopt;
  return w.file->view(*w.scale);
}

void Checkpoint::release_stored(std::string_view name) const {
  const WeightInfo* w = find(name);
  if (!w || w->materialized) return;  // a materialised copy has no file pages
  w->file->drop_pages(*w->tensor, w->byte_offset, w->bytes());
  if (w->scale) w->file->drop_pages(*w->scale);
}

std::optional<TokenizerFiles> Checkpoint::tokenizer_files(Component c) const {
  if (embedded_tokenizers_[index(c)]) return embedded_tokenizers_[index(c)];
  if (!tokenizer_dirs_[index(c)]) return std::nullopt;
  return read_tokenizer_files(*tokenizer_dirs_[index(c)]);
}

std::optional<TokenizerFiles> read_tokenizer_files(const fs::path& dir) {
  if (!is_file(dir / "vocab.json") || !is_file(dir / "merges.txt")) return std::nullopt;
  TokenizerFiles t;
  t.vocab_json = read_text(dir / "vocab.json");
  t.merges_txt = read_text(dir / "merges.txt");
  if (is_file(dir / "tokenizer_config.json"))
    t.tokenizer_config_json = read_text(dir / "tokenizer_config.json");
  return t;
}

std::optional<std::string> Checkpoint::scheduler_config_text() const {
  if (format_ == CheckpointFormat::kHyrtFile) return embedded_scheduler_;
  if (format_ == CheckpointFormat::kDiffusersFolder) {
    const fs::path p = root_ / "scheduler" / "scheduler_config.json";
    if (is_file(p)) return read_text(p);
  }
  return std::nullopt;
}

const std::map<std::string, std::string>& Checkpoint::metadata() const {
  static const std::map<std::string, std::string> kNone;
  return format_ == CheckpointFormat::kDiffusersFolder || files_.empty()
             ? kNone
             : files_.front()->metadata();
}

std::optional<nlohmann::json> Checkpoint::config_json(Component c) const {
  return configs_[index(c)];
}

std::optional<fs::path> Checkpoint::config_path(Component c) const {
  return config_paths_[index(c)];
}

std::vector<fs::path> Checkpoint::weight_files(Component c) const {
  return component_files_[index(c)];
}

}  // namespace hyrt::weights

#include "weights/tiny_autoencoder.h"

#include <cctype>
#include <optional>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace hyrt::weights {
namespace {

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

// "<digits>.<rest>" -> {index, rest}; nullopt otherwise.
std::optional<std::pair<int, std::string_view>> indexed(std::string_view key) {
  size_t i = 0;
  while (i < key.size() && std::isdigit(static_cast<unsigned char>(key[i])))
    ++i;
  if (i == 0 || i > 4 || i + 1 >= key.size() || key[i] != '.') return std::nullopt;
  return std::pair{std::stoi(std::string(key.substr(0, i))), key.substr(i + 1)};
}

// The safetensors file a path names: itself, or a diffusers folder's model file.
std::filesystem::path model_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    HYRT_CHECK(std::filesystem::is_regular_file(path, ec), kIo, "cannot read the TAESD file '",
               path.string(), "': no such file");
    return path;
  }
  for (const auto& candidate :
       {path / "diffusion_pytorch_model.safetensors",
        path / "vae" / "diffusion_pytorch_model.safetensors", path / "taesd_decoder.safetensors"})
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate;
  fail(ErrorCode::kIo, "the folder '", path.string(),
       "' holds no TAESD weights (diffusion_pytorch_model.safetensors, vae/… or "
       "taesd_decoder.safetensors)");
}

}  // namespace

std::shared_ptr<const TinyAutoencoderWeights> TinyAutoencoderWeights::open(
    const std::filesystem::path& path) {
  const std::filesystem::path file = model_file(path);
  return from_file(SafetensorsFile::open(file), file.string());
}

std::shared_ptr<const TinyAutoencoderWeights> TinyAutoencoderWeights::from_file(
    std::unique_ptr<SafetensorsFile> file, std::string label) {
  std::shared_ptr<TinyAutoencoderWeights> w(new TinyAutoencoderWeights());
  w->label_ = std::move(label);
  bool diffusers = false;
  for (const TensorInfo& t : file->tensors())
    diffusers |= starts_with(t.name, "decoder.layers.") || starts_with(t.name, "encoder.layers.");
  w->format_ = diffusers ? "diffusers" : "taesd";
  for (const TensorInfo& t : file->tensors()) {
    std::string_view key = t.name;
    int offset = 0;
    if (diffusers) {
      if (!starts_with(key, "decoder.layers.")) continue;  // the encoder, if any
      key.remove_prefix(std::string_view("decoder.layers.").size());
    } else {
      offset = -1;  // taesd's own decoder: index 0 is its Clamp, which has no weights
    }
    const auto parts = indexed(key);
    HYRT_CHECK(parts, kInvalidModel, "'", w->label_, "' is not a TAESD decoder: key '", t.name,
               "' is neither `decoder.layers.<i>.…` (diffusers AutoencoderTiny) nor `<i>.…` "
               "(taesd_decoder.safetensors)");
    HYRT_CHECK(parts->first + offset >= 0, kInvalidModel, "'", w->label_,
               "' is a TAESD encoder (its layer 0 is a convolution; a decoder's is its clamp): "
               "hyrt decodes with taesd_decoder, not taesd_encoder");
    HYRT_CHECK(dtype_is_float(t.dtype), kInvalidModel, "'", w->label_, "': tensor '", t.name,
               "' is ", dtype_name(t.dtype), ", not a float type");
    w->tensors_.emplace(std::string(kPrefix) + std::to_string(parts->first + offset) + "." +
                            std::string(parts->second),
                        &t);
  }
  HYRT_CHECK(
      !w->tensors_.empty(), kInvalidModel, "'", w->label_,
      "' holds no TAESD decoder weights (an AutoencoderTiny file without `decoder.layers.`)");
  w->file_ = std::move(file);
  return w;
}

size_t TinyAutoencoderWeights::bytes() const {
  size_t total = 0;
  for (const auto& [name, info] : tensors_)
    total += info->bytes;
  return total;
}

TensorView TinyAutoencoderWeights::get(std::string_view name) const {
  const auto it = tensors_.find(name);
  HYRT_CHECK(it != tensors_.end(), kNotFound, "the TAESD file '", label_, "' has no tensor '", name,
             "'");
  return file_->view(*it->second);
}

bool TinyAutoencoderWeights::contains(std::string_view name) const {
  return tensors_.find(name) != tensors_.end();
}

std::string TinyAutoencoderWeights::display_name(const std::filesystem::path& path) {
  const std::filesystem::path p = path.lexically_normal();
  return (p.has_filename() ? p : p.parent_path()).filename().string();
}

}  // namespace hyrt::weights

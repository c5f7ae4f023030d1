// TinyAutoencoderWeights: a TAESD decoder ("tiny autoencoder", madebyollin/taesd; diffusers'
// AutoencoderTiny) read from its file, for decoding latents at a fraction of the VAE's cost.
//
// Files read (safetensors):
//   diffusers AutoencoderTiny  `decoder.layers.<i>.<rest>` (the encoder's keys are ignored) —
//                              a file, or a folder holding diffusion_pytorch_model.safetensors
//                              (directly or under vae/): taesd, taesdxl, taesd3, taef1
//   taesd's own decoder file   `<i>.<rest>` with index 0 its Clamp (taesd_decoder.safetensors);
//                              its encoder file (`0.weight`: a convolution first) is refused
// Every weight is exposed under `taesd.decoder.layers.<i>.<rest>` with the diffusers index i
// (the own file's index − 1), zero-copy, in its stored dtype.
//
// Ownership and lifetime: owns the mapped file; views stay valid while it lives. Thread safety:
// immutable after open(); const methods may be called concurrently.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "weights/safetensors.h"
#include "weights/weight_source.h"

namespace hyrt::weights {

class TinyAutoencoderWeights final : public WeightSource {
 public:
  // The prefix of every name this source holds.
  static constexpr std::string_view kPrefix = "taesd.decoder.layers.";

  // Throws kIo (unreadable, no file in a folder), kInvalidModel (not safetensors, no decoder
  // keys, an encoder-only file, a non-float tensor) naming the path.
  static std::shared_ptr<const TinyAutoencoderWeights> open(const std::filesystem::path& path);
  // The same from a parsed file (tests); `label` names it in messages.
  static std::shared_ptr<const TinyAutoencoderWeights> from_file(
      std::unique_ptr<SafetensorsFile> file, std::string label);
  // The name a decoder at `path` goes by, as A1111 names VAEs: its file's name, extension kept,
  // or its folder's name (a trailing '/' or "." ignored). The PNG parameters' "VAE" field.
  static std::string display_name(const std::filesystem::path& path);

  const std::string& label() const { return label_; }
  std::string_view format() const { return format_; }  // "diffusers" or "taesd"
  size_t bytes() const;                                // the decoder tensors as stored

  TensorView get(std::string_view name) const override;
  bool contains(std::string_view name) const override;

 private:
  TinyAutoencoderWeights() = default;
  std::unique_ptr<SafetensorsFile> file_;
  std::string label_;
  std::string format_;
  std::map<std::string, const TensorInfo*, std::less<>> tensors_;  // by canonical name
};

}  // namespace hyrt::weights

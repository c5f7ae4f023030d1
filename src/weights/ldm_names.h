// Key maps from checkpoint layouts to hyrt's canonical weight names.
//
// Canonical name = `<component>.<diffusers key>`, component in {text_encoder, unet, vae}:
//   unet.down_blocks.0.resnets.0.conv1.weight
//   text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight   (always text_model.)
//   vae.decoder.mid_block.attentions.0.to_q.weight                     (current attn names)
//
// LDM/CompVis single files (`model.diffusion_model.*`, `first_stage_model.*`,
// `cond_stage_model.transformer.*`) are mapped by structure, not by a fixed table: the
// number of UNet levels, layers per level and VAE levels are read off the keys present, so
// checkpoints of any SD-1.5-shaped size map (the golden tiny model included).
//
// Pure functions / immutable objects: thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hyrt::weights {

enum class Component { kTextEncoder, kUNet, kVae };
inline constexpr Component kAllComponents[] = {Component::kTextEncoder, Component::kUNet,
                                               Component::kVae};
// "text_encoder", "unet", "vae": the canonical prefix and the diffusers sub-folder.
std::string_view component_name(Component c);
// "text encoder", "UNet", "VAE": for messages.
std::string_view component_title(Component c);

// What happens to one key of a source file.
struct KeyMapping {
  enum class Kind {
    kMapped,      // -> canonical name (plus optional shape squeeze)
    kIgnored,     // a known non-weight (DDPM schedule buffers, EMA copies, position_ids)
    kUnexpected,  // not understood: reported, not an error
  };
  Kind kind = Kind::kUnexpected;
  std::string canonical;
  Component component = Component::kUNet;
  // LDM stores the VAE attention projections as 1x1 convolutions [C, C, 1, 1]; diffusers
  // (and hyrt) use linear [C, C]. Same bytes: the view just drops the trailing 1s.
  bool squeeze_1x1 = false;
};

// Maps the keys of an LDM single file. Construct once from all the file's keys (the UNet
// and VAE maps depend on how many levels/layers are present), then map each key.
class LdmKeyMap {
 public:
  explicit LdmKeyMap(const std::vector<std::string>& keys);
  KeyMapping map(std::string_view key) const;

  int unet_layers_per_block() const { return unet_layers_per_block_; }
  int vae_decoder_max_up_index() const { return vae_max_up_; }

 private:
  std::optional<std::string> map_unet(std::string_view key) const;
  std::optional<std::string> map_vae(std::string_view key, bool* squeeze) const;

  int unet_layers_per_block_ = 2;
  int vae_max_up_ = -1;  // LDM decoder `up.{i}` is reversed: diffusers index = max - i
};

// Maps a key of a diffusers component file (the component is known from the folder):
// adds `text_model.` where recent transformers dropped it, renames the old VAE attention
// names (query/key/value/proj_attn) and squeezes [C, C, 1, 1] VAE attention weights.
KeyMapping map_diffusers_key(Component component, std::string_view key, int rank,
                             bool trailing_1x1);

// True for keys every loader should skip: *.position_ids buffers and similar.
bool is_ignorable_buffer(std::string_view key);

}  // namespace hyrt::weights

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

// ---- the reverse direction: canonical names -> LDM keys (for writing LDM files) ----

// What the LDM numbering depends on beyond the canonical name itself. Defaults: SD 1.5.
struct LdmStructure {
  // UNet resnets per down level (up levels have one more). LDM numbers input_blocks and
  // output_blocks consecutively across levels, so the index of a block needs this.
  int unet_layers_per_block = 2;
  // Per diffusers up_blocks index: whether that level has cross-attention. An up level's
  // upsampler sits after its last resnet (and attention), at `output_blocks.N.1` without
  // attention and `output_blocks.N.2` with it.
  std::vector<bool> unet_up_attention = {false, true, true, true};
  // Number of VAE levels (len(block_out_channels)): LDM numbers the decoder's `up.{i}` in
  // the reverse of diffusers' up_blocks order.
  int vae_levels = 4;
  // The LDM index of diffusers' decoder up_blocks.0, counting down from there; -1 means
  // vae_levels - 1, which is what LDM's own Decoder writes. diffusers'
  // convert_diffusers_to_original_stable_diffusion.py always writes `up.{3 - k}` (it
  // assumes SD's four levels), so a smaller VAE converted by it — the golden sd15-tiny
  // model-ldm.safetensors — starts at 3. LdmKeyMap reads either (it takes the top index
  // off the keys). Must be >= vae_levels - 1.
  int vae_decoder_top_up_index = -1;
};

// The LDM/CompVis key of a canonical weight name: the exact inverse of LdmKeyMap::map()
// for a file holding every weight of the given structure, e.g.
//   unet.down_blocks.1.attentions.0.proj_in.weight ->
//   model.diffusion_model.input_blocks.4.1.proj_in.weight
//   vae.decoder.up_blocks.0.resnets.1.conv1.bias   ->
//   first_stage_model.decoder.up.3.block.1.conv1.bias
//   text_encoder.text_model.final_layer_norm.weight
//                              -> cond_stage_model.transformer.text_model.final_layer_norm.weight
// Throws kInvalidArgument naming the weight if it has no LDM counterpart (an unknown
// component or block, an index outside `structure`).
std::string ldm_key_for(std::string_view canonical_name, const LdmStructure& structure = {});

// True for the VAE attention projection weights (to_q/to_k/to_v/to_out.0 .weight) that
// LDM files store as 1x1 convolutions: a writer stores their [C, C] as [C, C, 1, 1]
// (the same bytes). The inverse of KeyMapping::squeeze_1x1.
bool ldm_stores_as_1x1_conv(std::string_view canonical_name);

// Maps a key of a diffusers component file (the component is known from the folder):
// adds `text_model.` where recent transformers dropped it, renames the old VAE attention
// names (query/key/value/proj_attn) and squeezes [C, C, 1, 1] VAE attention weights.
KeyMapping map_diffusers_key(Component component, std::string_view key, int rank,
                             bool trailing_1x1);

// True for keys every loader should skip: *.position_ids buffers and similar.
bool is_ignorable_buffer(std::string_view key);

}  // namespace hyrt::weights

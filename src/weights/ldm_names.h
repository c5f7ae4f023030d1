// Key maps from checkpoint layouts to hyrt's canonical weight names.
//
// Canonical name = `<component>.<diffusers key>`, component in {text_encoder,
// text_encoder_2, unet, vae}:
//   unet.down_blocks.0.resnets.0.conv1.weight
//   text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight   (always text_model.)
//   text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.weight (SDXL's OpenCLIP)
//   text_encoder_2.text_projection.weight                              (no text_model.)
//   vae.decoder.mid_block.attentions.0.to_q.weight                     (current attn names)
//
// LDM/CompVis single files (`model.diffusion_model.*`, `first_stage_model.*`,
// `cond_stage_model.transformer.*`) are mapped by structure, not by a fixed table: the
// number of UNet levels, layers per level and VAE levels are read off the keys present, so
// checkpoints of any SD-1.5-shaped size map (the golden tiny model included). The same map
// reads SDXL's UNet (levels without attention, transformer depth > 1, `label_emb`).
//
// SGM single files (SDXL as shared by A1111/ComfyUI; generative-models' `sgm` package) are
// LDM files whose text encoders sit under `conditioner.embedders.{i}.`:
//   `conditioner.embedders.{i}.transformer.[text_model.]X` (a HF CLIPTextModel, SDXL's
//       CLIP ViT-L)            -> text_encoder.text_model.X
//   `conditioner.embedders.{i}.model.X` (an OpenCLIP text tower, SDXL's bigG)
//                              -> text_encoder_2.* with OpenCLIP's names translated; its
//       `attn.in_proj_weight/_bias` hold q, k, v stacked along dim 0 (split into three
//       views, KeyMapping::split_rows) and `text_projection` is stored [width, proj], the
//       transpose of the Linear weight (KeyMapping::transpose).
// The encoder is recognised by its kind (`transformer.` / `model.`), not by {i}: the base
// model has both as 0 and 1, the refiner only the OpenCLIP one, as embedders.0.
//
// Pure functions / immutable objects: thread-safe.
#pragma once

#include <cstddef>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hyrt::weights {

// The value of a Component indexes per-component arrays (`T x[kNumComponents]`,
// `x[static_cast<size_t>(c)]`). kTextEncoder2 comes last so that the SD 1.5 components keep
// their indices 0..2 (arrays sized for three stay valid for them).
enum class Component { kTextEncoder, kUNet, kVae, kTextEncoder2 };
inline constexpr size_t kNumComponents = 4;
// Every component, in the order models list them (text encoders first). Not index order.
inline constexpr Component kAllComponents[] = {Component::kTextEncoder, Component::kTextEncoder2,
                                               Component::kUNet, Component::kVae};
static_assert(std::size(kAllComponents) == kNumComponents);
// "text_encoder", "text_encoder_2", "unet", "vae": the canonical prefix and the diffusers
// sub-folder.
std::string_view component_name(Component c);
// "text encoder", "second text encoder", "UNet", "VAE": for messages.
std::string_view component_title(Component c);
// True for kTextEncoder and kTextEncoder2 (the components that have a tokenizer).
inline constexpr bool is_text_encoder(Component c) {
  return c == Component::kTextEncoder || c == Component::kTextEncoder2;
}

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
  // OpenCLIP's fused attention input projection (`attn.in_proj_weight` [3C, C] /
  // `in_proj_bias` [3C]): when non-empty it holds exactly three canonical names — q, k, v —
  // and `canonical` is empty. Rows [0, R/3), [R/3, 2R/3), [2R/3, R) of the stored tensor are
  // those weights (contiguous rows: zero-copy views). The reader checks R % 3 == 0.
  std::vector<std::string> split_rows;
  // A rank-2 tensor stored transposed against its canonical Linear weight (OpenCLIP's
  // `text_projection` [width, proj] -> `text_projection.weight` [proj, width]). The reader
  // materialises the transpose (it is small) and checks the rank.
  bool transpose = false;
};

// Maps the keys of an LDM single file. Construct once from all the file's keys (the UNet
// and VAE maps depend on how many levels/layers are present), then map each key.
// SGM files (above) map through the same object.
class LdmKeyMap {
 public:
  explicit LdmKeyMap(const std::vector<std::string>& keys);
  KeyMapping map(std::string_view key) const;

  int unet_layers_per_block() const { return unet_layers_per_block_; }
  int vae_decoder_max_up_index() const { return vae_max_up_; }
  // True if any key lies under `conditioner.embedders.` (an SGM file).
  bool is_sgm() const { return sgm_; }

 private:
  std::optional<std::string> map_unet(std::string_view key) const;
  std::optional<std::string> map_vae(std::string_view key, bool* squeeze) const;

  int unet_layers_per_block_ = 2;
  int vae_max_up_ = -1;  // LDM decoder `up.{i}` is reversed: diffusers index = max - i
  bool sgm_ = false;
};

// ---- the reverse direction: canonical names -> LDM keys (for writing LDM files) ----

// What the LDM numbering depends on beyond the canonical name itself. Defaults: SD 1.5.
struct LdmStructure {
  // UNet resnets per down level (up levels have one more). LDM numbers input_blocks and
  // output_blocks consecutively across levels, so the index of a block needs this.
  int unet_layers_per_block = 2;
  // Per diffusers up_blocks index: whether that level has cross-attention. An up level's
  // upsampler sits after its last resnet (and attention), at `output_blocks.N.1` without
  // attention and `output_blocks.N.2` with it. SDXL: {true, true, false}. (Down levels need
  // no flags: a down attention is always `input_blocks.N.1` and the downsampler has an
  // entry of its own.)
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
//   unet.add_embedding.linear_1.weight -> model.diffusion_model.label_emb.0.0.weight (SDXL)
// Throws kInvalidArgument naming the weight if it has no LDM counterpart (an unknown
// component or block, an index outside `structure`).
std::string ldm_key_for(std::string_view canonical_name, const LdmStructure& structure = {});

// ---- the reverse direction for SGM (SDXL) files ----

// Where a canonical weight goes in an SGM single file (sgm_key_for).
struct SgmKey {
  std::string key;
  // text_encoder_2's q/k/v projections (weight and bias): the file stores the three stacked
  // along dim 0 in one `attn.in_proj_weight` / `attn.in_proj_bias`; `stacked_part` is 0 for
  // q, 1 for k, 2 for v. A writer declares `key` once with dim 0 three times the canonical
  // one and writes the three canonical tensors' bytes one after another in part order (rows
  // are contiguous, so that is a plain concatenation). -1: not stacked.
  int stacked_part = -1;
  // text_encoder_2.text_projection.weight [proj, width]: stored transposed, [width, proj].
  bool transposed = false;
  // A VAE attention projection stored as a [C, C, 1, 1] convolution (same bytes).
  bool as_1x1_conv = false;
};

// The SGM key of a canonical weight name: the exact inverse of LdmKeyMap::map() on an SGM
// file holding every weight of the given structure (stacked keys map back to the three
// names in split_rows). The text encoders are written as SDXL base does:
//   text_encoder.text_model.X   -> conditioner.embedders.0.transformer.text_model.X
//   text_encoder_2.text_model.encoder.layers.3.self_attn.k_proj.weight
//       -> conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_weight, part 1
//   text_encoder_2.text_projection.weight -> conditioner.embedders.1.model.text_projection
// UNet and VAE names are as ldm_key_for. Throws kInvalidArgument naming the weight if it has
// no SGM counterpart.
SgmKey sgm_key_for(std::string_view canonical_name, const LdmStructure& structure);

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

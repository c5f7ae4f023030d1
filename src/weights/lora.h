// LoRA: low-rank adapters read from their files and laid over a model's weights at run time,
// without touching the model's stored (e.g. int8) weights.
//
// A LoRA adapts a layer with weight W ([out, in] linear, [out, in, kh, kw] convolution) as
//   W' = W + multiplier · (alpha / rank) · up · down
// (down [rank, in] or [rank, in, kh, kw] — a convolution's down keeps its kernel, stride and
// padding; up [out, rank] or [out, rank, 1, 1]). hyrt never forms W': the graph builder adds a
// side path y += up·(down·x) next to the layer's GEMM (models/graph_builder.h), so the base
// weights stay as stored and are shared with the model without LoRAs, and changing LoRAs or
// multipliers re-quantizes and re-packs nothing but the adapters themselves.
//
// File formats read (safetensors; detected from the keys):
//   kohya / A1111  `<prefix><module path with _>.lora_down.weight`, `.lora_up.weight`,
//                  `.alpha` (scalar; absent = rank). Prefixes: `lora_unet_`, `lora_te_` (SD 1.5's
//                  text encoder), `lora_te1_` / `lora_te2_` (SDXL's two). UNet modules may be
//                  named as diffusers names them (down_blocks_0_attentions_0_...) or as LDM/SGM
//                  files do (input_blocks_4_1_transformer_blocks_0_attn1_to_q, kohya's SDXL).
//   PEFT / diffusers  `unet.<module>.lora_A.weight` (down), `.lora_B.weight` (up), optional
//                  `.alpha`; `text_encoder.` / `text_encoder_2.` for the text encoders; also
//                  diffusers' older `.lora.down.weight` / `.lora.up.weight` and attention-
//                  processor names (`attn1.processor.to_q_lora.down.weight`).
// Other adapter kinds (LoHa `hada_*`, LoKr `lokr_*`, DoRA `dora_scale`, full `diff`) are refused
// with a message naming the kind.
//
// Thread safety: LoraFile and LoraWeights are immutable after construction (const methods may
// be called concurrently).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "weights/ldm_names.h"
#include "weights/safetensors.h"
#include "weights/weight_source.h"

namespace hyrt::weights {

// One adapted module of a LoRA file, under the file's own name for it.
struct LoraModule {
  std::string key;  // e.g. "lora_unet_down_blocks_0_attentions_0_proj_in" or "unet.down_blocks…"
  TensorView down;  // [rank, in] or [rank, in, kh, kw], stored dtype (views into the file)
  TensorView up;    // [out, rank] or [out, rank, 1, 1]
  std::optional<float> alpha;  // absent: alpha = rank (scale 1)
  // The largest magnitude among the down's and the up's values: +inf when one is not finite
  // (NaN or infinity). Measured once when the file is opened, so a LoraWeights can check that
  // its scaled copies will be finite before it writes any.
  float down_max_abs = 0.0f, up_max_abs = 0.0f;
  int64_t rank() const { return down.shape[0]; }
};

// A LoRA file, opened and checked (every module has a down and an up of matching rank).
// Owns the file mapping: the modules' views stay valid while it lives.
class LoraFile {
 public:
  // Throws kIo (unreadable), kInvalidModel (not safetensors, no LoRA keys, an unsupported
  // adapter kind, a module missing its down or up, ranks that disagree) naming the file.
  static std::shared_ptr<const LoraFile> open(const std::filesystem::path& path);
  // The same from a parsed file (tests); `label` names it in messages.
  static std::shared_ptr<const LoraFile> from_file(std::unique_ptr<SafetensorsFile> file,
                                                   std::string label);

  const std::string& label() const { return label_; }  // the path as given
  std::string_view format() const { return format_; }  // "kohya", "peft", "diffusers"
  const std::vector<LoraModule>& modules() const { return modules_; }
  size_t bytes() const;  // bytes of the down and up tensors as stored

 private:
  LoraFile() = default;
  std::unique_ptr<SafetensorsFile> file_;
  std::string label_;
  std::string format_;
  std::vector<LoraModule> modules_;
};

// A layer of the model a LoRA may adapt: a linear or convolution weight.
struct LoraTarget {
  std::string module;  // canonical, "unet.down_blocks.0.attentions.0.proj_in" (no ".weight")
  Component component = Component::kUNet;
  Shape weight_shape;  // [out, in] or [out, in, kh, kw]
};

// Every name a LoRA file may use for each target (see the top of this file). `sdxl_naming`:
// the model has two text encoders (kohya's `lora_te1_`/`lora_te2_`); `structure`: how the
// model's UNet is numbered in LDM/SGM files (for kohya's SGM-named UNet modules).
class LoraTargetIndex {
 public:
  LoraTargetIndex(std::vector<LoraTarget> targets, const LdmStructure& structure, bool sdxl_naming);
  // The target a file's module key names, or null.
  const LoraTarget* find(std::string_view key) const;
  size_t size() const { return targets_.size(); }

 private:
  std::vector<LoraTarget> targets_;
  std::map<std::string, size_t, std::less<>> by_alias_;
};

// One LoRA in use, with its multiplier.
struct LoraUse {
  std::shared_ptr<const LoraFile> file;
  float multiplier = 1.0f;
};

// Names of the adapter tensors LoraWeights adds for a module: "<module>.lora_side.down" and
// ".up" (no ".weight" suffix, so nothing takes them for model weights).
std::string lora_down_name(std::string_view module);
std::string lora_up_name(std::string_view module);
// True for a weight name lora_up_name made: the up projection of a LoRA side path (a GEMM with
// K = rank, whose output is added to the layer's).
bool is_lora_up_name(std::string_view weight_name);
// True for a weight name lora_down_name made.
bool is_lora_down_name(std::string_view weight_name);

// The memory of a LoraWeights' adapters: one tensor per down (unless the file's own is used)
// and up, in the overlay's module order.
struct LoraStorage {
  std::vector<Tensor> tensors;
};

// The model's weights with the LoRAs in use laid over them: every name of `base` as it is
// (same view, same scales, same generation_of — so packed and resident copies are shared
// with the plain model), plus per adapted module an f32 down and up tensor: the LoRAs on that
// module stacked along the rank (down rows, up columns), each up scaled by its multiplier ·
// alpha / rank. Shapes follow the target: a linear's down [R, in] and up [out,
// R]; a convolution's down [R, in, kh, kw] (the LoRA's kernel: 1×1 or the layer's own) and up [out,
// R, 1, 1]. A module whose LoRAs all have multiplier 0 is left out.
//
// Throws kInvalidArgument when a LoRA's keys match no layer of the model (naming a few),
// when some do not match (naming them: a LoRA for another architecture), or when a matched
// module's shapes disagree with the layer (naming it and both shapes).
//
// Lifetime: `base` and the LoraFiles' mappings (kept alive by the shared_ptrs) must outlive it.
class LoraWeights final : public WeightSource {
 public:
  // `adapter_dtype` (f32 or f16) is what scaled ups and stacked or converted downs are kept in:
  // f32 is exact; f16 (for an int8 model) halves their memory, its rounding far below the
  // model's own. A down used as the file stores it (one LoRA on the layer, f16 or f32) keeps
  // the file's dtype.
  //
  // `storage`: the tensors to keep the adapters in, used when they have exactly the shapes
  // needed — an earlier overlay's (storage()) that no executable will run with again: a switch
  // of multiplier, or to a LoRA of the same layers and ranks, then writes into pages already
  // touched instead of faulting in fresh ones (each a measurable cost on a VM: ~15 µs, and a
  // rank-32 SD 1.5 set is ~3300 pages). Every value is checked and everything else allocated
  // before any is written, so a constructor that throws leaves them as they were. Null or
  // other shapes: new tensors.
  LoraWeights(const WeightSource& base, std::span<const LoraUse> loras,
              const LoraTargetIndex& targets, DType adapter_dtype = DType::kF32,
              std::shared_ptr<LoraStorage> storage = nullptr);

  TensorView get(std::string_view name) const override;
  bool contains(std::string_view name) const override;
  std::optional<TensorView> scale(std::string_view name) const override {
    return adapters_.count(name) ? std::nullopt : base_.scale(name);
  }
  uint64_t generation_of(std::string_view name) const override {
    return adapters_.count(name) ? generation() : base_.generation_of(name);
  }
  void release_stored(std::string_view name) const override {
    if (!adapters_.count(name)) base_.release_stored(name);
  }

  // The adapted modules with their stacked rank: equal for two LoraWeights whose graphs are
  // the same (only the adapter values differ). "" without adapters.
  const std::string& signature() const { return signature_; }
  size_t adapted_modules() const { return adapters_.size() / 2; }
  // Bytes of the adapters held in memory (scaled ups, stacked or converted downs); a down used
  // as the file stores it is a view into the file's mapping and not counted.
  size_t bytes() const;
  // The tensors the adapters are in (shared with a later overlay that was given them).
  const std::shared_ptr<LoraStorage>& storage() const { return storage_; }

 private:
  const WeightSource& base_;
  std::vector<std::shared_ptr<const LoraFile>> files_;       // kept alive (their views)
  std::map<std::string, TensorView, std::less<>> adapters_;  // into storage_ or a file
  std::shared_ptr<LoraStorage> storage_;                     // the adapters' values
  std::string signature_;
};

}  // namespace hyrt::weights

// Random-weight SDXL checkpoints on disk, in the SGM single-file layout SDXL releases use
// (`model.diffusion_model.*`, `first_stage_model.*`, `conditioner.embedders.0.transformer.*`
// for CLIP ViT-L, `conditioner.embedders.1.model.*` for OpenCLIP bigG: weights::sgm_key_for)
// — so benchmarks, memory measurements and quantization can run a model of the real SDXL
// base size (base_configs()) or any SDXL-shaped size without downloading one.
//
// The file holds every weight of the four components (the full VAE, encoder included) with
// SGM's storage quirks: the second text encoder's q/k/v projections stacked into one
// `attn.in_proj_weight` / `in_proj_bias` (the three canonical tensors concatenated along dim
// 0), its `text_projection` stored [width, proj] (the canonical Linear weight transposed),
// VAE attention projections as [C, C, 1, 1] convolutions, and the first encoder's
// `position_ids` buffer (I64 [1, positions]). `__metadata__` marks it random as SD 1.5's
// writer does.
//
// Values (models/random_checkpoint.h): in canonical layout every tensor equals
// add_random_weights(expected_*_tensors(component config), seed', dtype) with seed' = seed
// for the text encoder, seed + 1 for the UNet, seed + 2 for the VAE, seed + 3 for the second
// text encoder. Same arguments -> the same bytes.
//
// Memory: one tensor at a time; peak about two copies of the largest stored tensor (bigG's
// token embedding, 126 MB in f16), not the ~7 GB file.
//
// Pure functions apart from the files they write; safe to call concurrently for different
// output paths.
#pragma once

#include <cstdint>
#include <filesystem>

#include "core/dtype.h"
#include "models/config.h"
#include "models/random_checkpoint.h"

namespace hyrt::models::sdxl {

// Parameters (weights, buffers excluded) per component.
struct ParameterCounts {
  int64_t text_encoder = 0;
  int64_t text_encoder_2 = 0;
  int64_t unet = 0;
  int64_t vae = 0;  // encoder included
  int64_t total() const { return text_encoder + text_encoder_2 + unet + vae; }
  bool operator==(const ParameterCounts&) const = default;
};

// SDXL base 1.0 as diffusers/transformers count it: sum(p.numel() for p in
// model.parameters()) of CLIPTextModel (768 wide, 3072, 12 layers, 12 heads, quick_gelu — set
// explicitly: CLIPTextConfig's defaults are ViT-B's 512-wide text tower, 63,165,952),
// CLIPTextModelWithProjection (1280, 5120, 32 layers, 20 heads, gelu, projection 1280),
// UNet2DConditionModel and AutoencoderKL built with base_configs()' settings, instantiated
// under `torch.device("meta")` with torch 2.15.0, diffusers 0.42.1 and transformers 5.24.0
// from PyPI. The reference that base_configs() and models/keys.h must reproduce.
inline constexpr ParameterCounts kDiffusersBaseParameterCounts = {
    .text_encoder = 123'060'480,
    .text_encoder_2 = 694'659'840,
    .unet = 2'567'463'684,
    .vae = 83'653'863,
};

// The counts of the tensors models/keys.h lists for `configs` (components without a config
// count 0).
ParameterCounts parameter_counts(const ModelConfigs& configs);

// Throws kInternal naming every component whose count for base_configs() differs from
// kDiffusersBaseParameterCounts (models/keys.h or base_configs() has drifted from diffusers).
void check_base_parameter_counts();

// Writes the checkpoint to `out` (through `<out>.tmp`, renamed when complete). `configs`
// must hold all four components (kInvalidArgument otherwise), the second text encoder with a
// projection (projection_dim > 0). `dtype`: f16, f32 or bf16 (kInvalidArgument otherwise).
// kInvalidArgument for configs the SGM layout cannot name, kIo naming the path if writing
// fails (no partial file is left under `out`).
RandomCheckpointSummary write_random_sgm_checkpoint(const std::filesystem::path& out,
                                                    const ModelConfigs& configs, uint64_t seed,
                                                    DType dtype = DType::kF16,
                                                    const ProgressFn& progress = {});

}  // namespace hyrt::models::sdxl

// Random-weight SD 1.5 checkpoints on disk, in the LDM/CompVis single-file layout that
// real SD 1.5 releases use (`model.diffusion_model.*`, `first_stage_model.*`,
// `cond_stage_model.transformer.*`) — so benchmarks and memory measurements can run a
// model of the real size (or any SD-1.5-shaped size) without downloading one.
//
// The file holds every weight of the three components (the full VAE: encoder, quant_conv,
// post_quant_conv, decoder), with LDM's storage quirks (VAE attention projections as
// [C, C, 1, 1] convolutions, the CLIP `position_ids` buffer as I64 [1, positions]), and
// `__metadata__` marking it random: {"random": "true", "seed", "dtype", "generator"}.
//
// Values come from RandomWeightStream (random_weights.h): the text encoder's tensors equal
// add_random_weights(expected_text_encoder_tensors(clip), seed, dtype), the UNet's use
// seed + 1, the VAE's (full, expected_vae_tensors(vae)) seed + 2. Same arguments -> the
// same bytes.
//
// Memory: tensors are generated and written one at a time (models::write_random_checkpoint,
// which this is a layout for); peak memory is about two copies of the largest tensor in
// `dtype` (76 MB in f16 for SD 1.5's token embedding), not the ~2 GB file.
//
// Pure functions apart from the files they write; safe to call concurrently for
// different output paths.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "core/dtype.h"
#include "models/config.h"
#include "models/random_checkpoint.h"
#include "weights/ldm_names.h"

namespace hyrt::models::sd15 {

// The family-neutral pieces (models/random_checkpoint.h), under their SD 1.5 names.
// text_encoder_2_parameters is 0 here.
using models::copy_tokenizer_beside;
using models::ldm_structure;
using models::ProgressFn;
using models::RandomCheckpointSummary;

// Writes the checkpoint to `out` (through `<out>.tmp`, renamed when complete). `dtype`:
// f16, f32 or bf16 (kInvalidArgument otherwise). Throws kInvalidArgument for configs the
// SD 1.5 architecture cannot take, kIo naming the path if writing fails (no partial file
// is left under `out`).
RandomCheckpointSummary write_random_ldm_checkpoint(const std::filesystem::path& out,
                                                    const ClipTextConfig& clip,
                                                    const UNetConfig& unet, const VaeConfig& vae,
                                                    uint64_t seed, DType dtype = DType::kF16,
                                                    const ProgressFn& progress = {});

}  // namespace hyrt::models::sd15

// What every random-weight checkpoint writer shares (sd15/random_checkpoint.h writes LDM
// files, sdxl/random_checkpoint.h SGM files): a layout is a list of canonical tensors, each
// with the key, shape and transform it is stored under; write_random_checkpoint() streams
// their values into one .safetensors file, so a family's writer only says where each
// tensor goes.
//
// Values: one RandomWeightStream (sd15/random_weights.h) per component, seeded by
// random_stream_seed(). A component's tensors must be listed in the order of its
// expected_*_tensors() list (that order defines the values), so each canonical tensor equals
// add_random_weights(that list, random_stream_seed(seed, component), dtype)'s.
//
// Memory: tensors are generated and written one at a time (weights::SafetensorsWriter); peak
// memory is about two copies of the largest stored tensor, not the file.
//
// Pure functions apart from the files they write; safe to call concurrently for different
// output paths.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"
#include "models/config.h"
#include "models/keys.h"
#include "weights/ldm_names.h"

namespace hyrt::models {

struct RandomCheckpointSummary {
  int64_t text_encoder_parameters = 0;
  int64_t text_encoder_2_parameters = 0;  // 0 for families with one text encoder (SD 1.5)
  int64_t unet_parameters = 0;
  int64_t vae_parameters = 0;
  size_t tensors = 0;       // keys in the file, buffers (position_ids) included
  uint64_t file_bytes = 0;  // size of the written file

  int64_t total_parameters() const {
    return text_encoder_parameters + text_encoder_2_parameters + unet_parameters + vae_parameters;
  }
};

// The structure LDM and SGM key numbering needs (weights::ldm_key_for, sgm_key_for) for
// these configs.
weights::LdmStructure ldm_structure(const UNetConfig& unet, const VaeConfig& vae);

// Called after each stored tensor with the tensor bytes written so far and their total.
using ProgressFn = std::function<void(uint64_t done_bytes, uint64_t total_bytes)>;

// The seed of a component's value stream: text encoder `seed`, UNet `seed + 1`, VAE
// `seed + 2`, second text encoder `seed + 3` (after the SD 1.5 three, so SD 1.5 files keep
// their values).
uint64_t random_stream_seed(uint64_t seed, weights::Component component);

// Where one canonical tensor is stored.
struct RandomTensorPlacement {
  ExpectedTensor canonical;                                  // generated with this name and shape
  weights::Component component = weights::Component::kUNet;  // whose stream and count
  std::string key;                                           // the stored key
  Shape stored_shape;  // of the whole key (for a stacked key: all its parts)
  // >= 0: the key holds `parts` canonical tensors of one shape stacked along dim 0, this one
  // at index `part` (stored_shape[0] = parts x canonical.shape[0]). Every part must be listed,
  // each once; the key is written when its last part has been generated. -1: the key holds
  // this tensor alone (stored_shape has its numel: a reshape, or transposed).
  int part = -1;
  int parts = 1;
  bool transposed = false;  // rank 2: stored as the transpose, stored_shape = {d1, d0}
};

// A tensor stored as given (buffers such as position_ids).
struct RawTensor {
  std::string key;
  DType dtype = DType::kS64;
  Shape shape;
  std::vector<uint8_t> bytes;  // shape.numel() x dtype_size(dtype)
};

// transformers' `embeddings.position_ids` buffer, I64 [1, positions] = 0..positions-1: real
// single files carry it (loaders ignore it).
RawTensor position_ids_tensor(std::string key, int64_t positions);

// Writes `tensors` then `extra` to `out` (through `<out>.tmp`, renamed when complete). The
// header lists keys in that order (a stacked key where its first-listed part is). Metadata:
// {"format": "pt", "random": "true", "seed", "dtype", "generator": `generator`}. `dtype`: f16,
// f32 or bf16 (kInvalidArgument otherwise). kInvalidArgument for an inconsistent placement
// (shapes that do not match, a missing or repeated part), kIo naming the path if writing
// fails (no partial file is left under `out`).
RandomCheckpointSummary write_random_checkpoint(const std::filesystem::path& out,
                                                const std::vector<RandomTensorPlacement>& tensors,
                                                const std::vector<RawTensor>& extra, uint64_t seed,
                                                DType dtype, std::string_view generator,
                                                const ProgressFn& progress = {});

// Copies a CLIP tokenizer (vocab.json, merges.txt, and tokenizer_config.json when present)
// from `tokenizer_dir` into a folder `folder` beside `checkpoint_file` — where hyrt looks
// for the tokenizers of a single-file model (`tokenizer/`, SDXL's second `tokenizer_2/`:
// weights::tokenizer_folder_name). Returns that folder. kNotFound naming the file if
// vocab.json or merges.txt is missing, kIo if copying fails.
std::filesystem::path copy_tokenizer_beside(const std::filesystem::path& tokenizer_dir,
                                            const std::filesystem::path& checkpoint_file,
                                            std::string_view folder = "tokenizer");

}  // namespace hyrt::models

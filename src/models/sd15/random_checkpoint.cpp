#include "models/sd15/random_checkpoint.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "models/keys.h"
#include "models/sd15/random_weights.h"
#include "weights/safetensors.h"

namespace hyrt::models::sd15 {
namespace fs = std::filesystem;

weights::LdmStructure ldm_structure(const UNetConfig& unet, const VaeConfig& vae) {
  weights::LdmStructure s;
  s.unet_layers_per_block = unet.layers_per_block;
  s.unet_up_attention.clear();
  for (const auto& t : unet.up_block_types)
    s.unet_up_attention.push_back(t == "CrossAttnUpBlock2D");
  s.vae_levels = static_cast<int>(vae.block_out_channels.size());
  return s;
}

namespace {

// One tensor of the file: where its values come from and how it is stored.
struct Entry {
  ExpectedTensor canonical;  // name and shape as the stream generates them
  int stream = 0;            // index into the per-component streams
};

}  // namespace

RandomCheckpointSummary write_random_ldm_checkpoint(const fs::path& out, const ClipTextConfig& clip,
                                                    const UNetConfig& unet, const VaeConfig& vae,
                                                    uint64_t seed, DType dtype,
                                                    const ProgressFn& progress) {
  HYRT_CHECK(dtype == DType::kF16 || dtype == DType::kF32 || dtype == DType::kBF16,
             kInvalidArgument, "random checkpoint: dtype must be f16, f32 or bf16, not ",
             dtype_name(dtype));
  HYRT_CHECK(clip.max_position_embeddings > 0, kInvalidArgument,
             "random checkpoint: max_position_embeddings must be positive");

  RandomCheckpointSummary summary;
  const std::vector<ExpectedTensor> lists[3] = {expected_text_encoder_tensors(clip),
                                                expected_unet_tensors(unet),
                                                expected_vae_tensors(vae, /*decoder_only=*/false)};
  int64_t* params[3] = {&summary.text_encoder_parameters, &summary.unet_parameters,
                        &summary.vae_parameters};
  const weights::LdmStructure structure = ldm_structure(unet, vae);

  // Declare everything first: the header (and so every offset) is fixed before any data.
  std::vector<weights::TensorDecl> decls;
  std::vector<Entry> entries;
  for (int c = 0; c < 3; ++c)
    for (const ExpectedTensor& e : lists[c]) {
      Shape stored = e.shape;
      if (weights::ldm_stores_as_1x1_conv(e.name)) {
        stored.push_back(1);
        stored.push_back(1);
      }
      decls.push_back({weights::ldm_key_for(e.name, structure), dtype, stored});
      entries.push_back({e, c});
      *params[c] += e.shape.numel();
    }
  // transformers registers position_ids as a buffer and LDM files carry it; loaders
  // ignore it, but a file without it would not look like the real thing.
  const std::string position_ids =
      "cond_stage_model.transformer.text_model.embeddings.position_ids";
  decls.push_back({position_ids, DType::kS64, {1, clip.max_position_embeddings}});

  const std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"random", "true"},
      {"seed", std::to_string(seed)},
      {"dtype", std::string(dtype_name(dtype))},
      {"generator",
       "hyrt models::sd15::write_random_ldm_checkpoint: untrained weights, PyTorch-like "
       "uniform init (RandomWeightStream, mt19937_64); text encoder seed, UNet seed+1, "
       "VAE seed+2"},
  };

  uint64_t total = 0, largest = 0;
  for (const auto& d : decls) {
    const uint64_t b = static_cast<uint64_t>(d.shape.numel()) * dtype_size(d.dtype);
    total += b;
    largest = std::max(largest, b);
  }
  weights::SafetensorsWriter writer(out, decls, metadata);

  RandomWeightStream streams[3] = {RandomWeightStream(seed), RandomWeightStream(seed + 1),
                                   RandomWeightStream(seed + 2)};
  std::vector<uint8_t> bytes(static_cast<size_t>(largest));
  for (size_t i = 0; i < entries.size(); ++i) {
    streams[entries[i].stream].next(entries[i].canonical, dtype, bytes.data());
    writer.write(decls[i].name, bytes.data());
    if (progress) progress(writer.bytes_written(), total);
  }
  std::vector<int64_t> ids(static_cast<size_t>(clip.max_position_embeddings));
  std::iota(ids.begin(), ids.end(), int64_t{0});
  writer.write(position_ids, ids.data());
  if (progress) progress(writer.bytes_written(), total);
  writer.finish();

  summary.tensors = decls.size();
  summary.file_bytes = writer.file_size();
  return summary;
}

fs::path copy_tokenizer_beside(const fs::path& tokenizer_dir, const fs::path& checkpoint_file) {
  for (const char* required : {"vocab.json", "merges.txt"}) {
    std::error_code ec;
    HYRT_CHECK(fs::is_regular_file(tokenizer_dir / required, ec), kNotFound,
               (tokenizer_dir / required).string(),
               ": no such file (a CLIP tokenizer folder "
               "holds vocab.json and merges.txt)");
  }
  fs::path parent = checkpoint_file.parent_path();
  if (parent.empty()) parent = ".";
  const fs::path dest = parent / "tokenizer";
  std::error_code ec;
  fs::create_directories(dest, ec);
  HYRT_CHECK(!ec, kIo, dest.string(), ": cannot create: ", ec.message());
  for (const char* name : {"vocab.json", "merges.txt", "tokenizer_config.json"}) {
    const fs::path src = tokenizer_dir / name;
    if (!fs::is_regular_file(src, ec)) continue;  // only the optional config can be absent here
    // Sources are often read-only (a shared cache); copy_file keeps their permissions, so
    // replace rather than overwrite, and leave the copy writable by its owner.
    fs::remove(dest / name, ec);
    if (!ec) fs::copy_file(src, dest / name, ec);
    if (!ec) fs::permissions(dest / name, fs::perms::owner_write, fs::perm_options::add, ec);
    HYRT_CHECK(!ec, kIo, (dest / name).string(), ": cannot copy from ", src.string(), ": ",
               ec.message());
  }
  return dest;
}

}  // namespace hyrt::models::sd15

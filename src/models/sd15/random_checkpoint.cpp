#include "models/sd15/random_checkpoint.h"

#include <vector>

#include "core/error.h"
#include "models/keys.h"

namespace hyrt::models::sd15 {
namespace fs = std::filesystem;

RandomCheckpointSummary write_random_ldm_checkpoint(const fs::path& out, const ClipTextConfig& clip,
                                                    const UNetConfig& unet, const VaeConfig& vae,
                                                    uint64_t seed, DType dtype,
                                                    const ProgressFn& progress) {
  HYRT_CHECK(clip.max_position_embeddings > 0, kInvalidArgument,
             "random checkpoint: max_position_embeddings must be positive");
  const weights::LdmStructure structure = ldm_structure(unet, vae);
  std::vector<RandomTensorPlacement> placements;
  auto place = [&](const std::vector<ExpectedTensor>& list, weights::Component c) {
    for (const ExpectedTensor& e : list) {
      Shape stored = e.shape;
      if (weights::ldm_stores_as_1x1_conv(e.name)) {
        stored.push_back(1);
        stored.push_back(1);
      }
      placements.push_back({e, c, weights::ldm_key_for(e.name, structure), stored});
    }
  };
  place(expected_text_encoder_tensors(clip), weights::Component::kTextEncoder);
  place(expected_unet_tensors(unet), weights::Component::kUNet);
  place(expected_vae_tensors(vae, /*decoder_only=*/false), weights::Component::kVae);
  // transformers registers position_ids as a buffer and LDM files carry it; loaders
  // ignore it, but a file without it would not look like the real thing.
  const std::vector<RawTensor> extra = {
      position_ids_tensor("cond_stage_model.transformer.text_model.embeddings.position_ids",
                          clip.max_position_embeddings)};
  return write_random_checkpoint(
      out, placements, extra, seed, dtype,
      "hyrt models::sd15::write_random_ldm_checkpoint: untrained weights, PyTorch-like "
      "uniform init (RandomWeightStream, mt19937_64); text encoder seed, UNet seed+1, "
      "VAE seed+2",
      progress);
}

}  // namespace hyrt::models::sd15

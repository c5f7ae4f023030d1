#include "models/sdxl/random_checkpoint.h"

#include <string>
#include <vector>

#include "core/error.h"
#include "models/keys.h"
#include "models/sdxl/configs.h"

namespace hyrt::models::sdxl {
namespace fs = std::filesystem;
using weights::Component;

namespace {

int64_t numel_sum(const std::vector<ExpectedTensor>& v) {
  int64_t n = 0;
  for (const auto& e : v)
    n += e.shape.numel();
  return n;
}

}  // namespace

ParameterCounts parameter_counts(const ModelConfigs& c) {
  ParameterCounts n;
  if (c.text_encoder) n.text_encoder = numel_sum(expected_text_encoder_tensors(*c.text_encoder));
  if (c.text_encoder_2)
    n.text_encoder_2 =
        numel_sum(expected_text_encoder_tensors(*c.text_encoder_2, Component::kTextEncoder2));
  if (c.unet) n.unet = numel_sum(expected_unet_tensors(*c.unet));
  if (c.vae) n.vae = numel_sum(expected_vae_tensors(*c.vae, /*decoder_only=*/false));
  return n;
}

void check_base_parameter_counts() {
  const ParameterCounts got = parameter_counts(base_configs());
  const ParameterCounts& want = kDiffusersBaseParameterCounts;
  std::string diff;
  auto compare = [&](const char* what, int64_t g, int64_t w) {
    if (g != w)
      diff += std::string(diff.empty() ? "" : "; ") + what + " " + std::to_string(g) +
              " (diffusers: " + std::to_string(w) + ")";
  };
  compare("text encoder", got.text_encoder, want.text_encoder);
  compare("second text encoder", got.text_encoder_2, want.text_encoder_2);
  compare("UNet", got.unet, want.unet);
  compare("VAE", got.vae, want.vae);
  HYRT_CHECK(diff.empty(), kInternal,
             "SDXL base parameter counts differ from diffusers' (models/keys.h or "
             "sdxl::base_configs() has drifted): ",
             diff);
}

RandomCheckpointSummary write_random_sgm_checkpoint(const fs::path& out,
                                                    const ModelConfigs& configs, uint64_t seed,
                                                    DType dtype, const ProgressFn& progress) {
  HYRT_CHECK(configs.text_encoder && configs.text_encoder_2 && configs.unet && configs.vae,
             kInvalidArgument,
             "random SDXL checkpoint: needs configs for both text encoders, the UNet and "
             "the VAE");
  HYRT_CHECK(configs.text_encoder_2->projection_dim > 0, kInvalidArgument,
             "random SDXL checkpoint: the second text encoder needs a projection "
             "(projection_dim > 0)");
  HYRT_CHECK(configs.text_encoder->max_position_embeddings > 0, kInvalidArgument,
             "random SDXL checkpoint: max_position_embeddings must be positive");
  const weights::LdmStructure structure = ldm_structure(*configs.unet, *configs.vae);

  std::vector<RandomTensorPlacement> placements;
  auto place = [&](const std::vector<ExpectedTensor>& list, Component c) {
    for (const ExpectedTensor& e : list) {
      const weights::SgmKey k = weights::sgm_key_for(e.name, structure);
      RandomTensorPlacement p{e, c, k.key, e.shape};
      if (k.stacked_part >= 0) {
        p.part = k.stacked_part;
        p.parts = 3;
        if (p.stored_shape.rank() > 0) p.stored_shape[0] *= 3;
      } else if (k.transposed && e.shape.rank() == 2) {
        p.transposed = true;
        p.stored_shape = {e.shape[1], e.shape[0]};
      } else if (k.as_1x1_conv) {
        p.stored_shape.push_back(1);
        p.stored_shape.push_back(1);
      }
      placements.push_back(std::move(p));
    }
  };
  // Text encoders first, as SDXL files and models list them.
  place(expected_text_encoder_tensors(*configs.text_encoder), Component::kTextEncoder);
  place(expected_text_encoder_tensors(*configs.text_encoder_2, Component::kTextEncoder2),
        Component::kTextEncoder2);
  place(expected_unet_tensors(*configs.unet), Component::kUNet);
  place(expected_vae_tensors(*configs.vae, /*decoder_only=*/false), Component::kVae);
  // The HF CLIP text model's position_ids buffer, as SDXL base's file has it (OpenCLIP's
  // tower has no persistent buffers). Loaders ignore it.
  const std::vector<RawTensor> extra = {
      position_ids_tensor("conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
                          configs.text_encoder->max_position_embeddings)};
  return write_random_checkpoint(
      out, placements, extra, seed, dtype,
      "hyrt models::sdxl::write_random_sgm_checkpoint: untrained weights, PyTorch-like "
      "uniform init (RandomWeightStream, mt19937_64); text encoder seed, UNet seed+1, "
      "VAE seed+2, text encoder 2 seed+3",
      progress);
}

}  // namespace hyrt::models::sdxl

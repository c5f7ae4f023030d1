// libFuzzer target for the JSON configs a model folder brings: the input is read as a
// text-encoder, UNet, VAE and scheduler config in turn (the bounded parse of
// weights/json_text, then the typed readers with their ranges). Only hyrt::Error may escape;
// nothing may crash, recurse without bound or hit undefined behaviour, and an accepted
// config's numbers must lie in the documented ranges.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "models/config.h"
#include "pipeline/scheduler.h"
#include "weights/json_text.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j;
  try {
    j = hyrt::weights::parse_json_bounded(text, "fuzz");
  } catch (const hyrt::Error&) {
    return 0;
  }
  try {
    const auto c = hyrt::models::parse_clip_text_config(j, "fuzz");
    if (c.hidden_size < 1 || c.num_attention_heads < 1 || !(c.layer_norm_eps > 0)) __builtin_trap();
  } catch (const hyrt::Error&) {
  }
  try {
    const auto c = hyrt::models::parse_unet_config(j, "fuzz");
    if (c.block_out_channels.empty() || c.norm_num_groups < 1 || !(c.norm_eps > 0) ||
        c.num_attention_heads.size() != c.block_out_channels.size())
      __builtin_trap();
  } catch (const hyrt::Error&) {
  }
  try {
    const auto c = hyrt::models::parse_vae_config(j, "fuzz");
    if (!(c.scaling_factor > 0) || c.latent_channels < 1) __builtin_trap();
  } catch (const hyrt::Error&) {
  }
  try {
    const auto c = hyrt::pipeline::SchedulerConfig::from_json(text, "fuzz");
    if (c.num_train_timesteps < 2 || c.num_train_timesteps > hyrt::pipeline::kMaxTrainTimesteps ||
        !(c.beta_start > 0) || !(c.beta_end < 1))
      __builtin_trap();
  } catch (const hyrt::Error&) {
  }
  return 0;
}

// libFuzzer target for TAESD decoder files (weights/tiny_autoencoder.h, models::
// build_tiny_vae_decoder): arbitrary bytes read as safetensors, then as a TAESD decoder in either
// layout, its layout inspected and its graph built for a 2x3 latent (shape inference checks every
// convolution against its input). Only hyrt::Error may escape.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "models/components.h"
#include "weights/safetensors.h"
#include "weights/tiny_autoencoder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hyrt;
  try {
    auto file =
        weights::SafetensorsFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz");
    const auto tiny = weights::TinyAutoencoderWeights::from_file(std::move(file), "fuzz");
    const models::TinyVaeDecoderLayout l = models::inspect_tiny_vae_decoder(*tiny);
    if (l.upscale < 1 || l.latent_channels < 0) __builtin_trap();
    (void)models::build_tiny_vae_decoder(*tiny, 1, 2, 3);
  } catch (const Error&) {
  }
  return 0;
}

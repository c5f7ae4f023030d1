// libFuzzer target for the PNG reader (init images, masks, check-shapes): arbitrary bytes ->
// pipeline::decode_png. Only hyrt::Error may escape; a decoded image must have the size its
// header declared, within the limits of image_io.h, and is read end to end under ASan.
#include <cstddef>
#include <cstdint>
#include <span>

#include "core/error.h"
#include "pipeline/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto png = hyrt::pipeline::decode_png(std::span<const uint8_t>(data, size));
    const auto& im = png.image;
    if (im.width < 1 || im.height < 1 ||
        static_cast<uint64_t>(im.width) > hyrt::pipeline::kMaxPngSide ||
        static_cast<uint64_t>(im.height) > hyrt::pipeline::kMaxPngSide ||
        im.pixels.size() != static_cast<size_t>(im.width) * im.height * im.channels)
      __builtin_trap();
    unsigned sum = 0;
    for (uint8_t v : im.pixels)
      sum += v;
    for (const auto& [k, v] : png.text)
      sum += static_cast<unsigned>(k.size() + v.size());
    volatile unsigned sink = sum;
    (void)sink;
  } catch (const hyrt::Error&) {
  }
  return 0;
}

// libFuzzer target for `hyrt serve`'s request bodies (serve/a1111_api.h): the first byte picks
// the parser — POST /sdapi/v1/txt2img, /sdapi/v1/img2img (base64 PNG pictures and masks inside
// the JSON) or /sdapi/v1/png-info — and the rest is the body. Only ApiError may escape (a body
// the server answers 400/422); an accepted request must hold what the server relies on: sizes
// 0 or positive multiples of 8 within the limits, steps, batch and images within theirs, a
// known sampler, finite numbers, and img2img pictures of consistent sizes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "serve/a1111_api.h"

namespace {

using hyrt::serve::ApiError;

// Small limits, so that accepted pictures stay cheap to decode and resize.
constexpr hyrt::serve::Limits kLimits{.max_side = 256,
                                      .max_pixels = 256 * 192,
                                      .max_steps = 40,
                                      .max_batch_size = 4,
                                      .max_images = 8};

std::optional<std::string> resolve(const std::string& name) {
  if (name == "tiny" || name == "tiny.safetensors") return std::string("tiny");
  return std::nullopt;
}

bool size_ok(int v) {
  return v == 0 || (v >= 8 && v % 8 == 0 && v <= kLimits.max_side);
}

void check(const hyrt::serve::Txt2ImgRequest& r, bool img2img) {
  if (!size_ok(r.width) || !size_ok(r.height)) __builtin_trap();
  if (int64_t{r.width} * r.height > kLimits.max_pixels) __builtin_trap();
  if (r.steps < 1 || r.steps > kLimits.max_steps) __builtin_trap();
  if (r.batch_size < 1 || r.batch_size > kLimits.max_batch_size || r.n_iter < 1 ||
      r.batch_size * r.n_iter > kLimits.max_images)
    __builtin_trap();
  if (!std::isfinite(r.cfg_scale) || r.clip_skip < 1 || r.sampler.empty()) __builtin_trap();
  if (!r.model.empty() && r.model != "tiny") __builtin_trap();
  if (r.hires) {
    if (img2img || !std::isfinite(r.hires->scale) || !(r.hires->strength > 0) ||
        r.hires->strength > 1)
      __builtin_trap();
  }
  if (img2img != r.img2img.has_value()) __builtin_trap();
  if (r.img2img) {
    const auto& in = *r.img2img;
    // The picture's own size may differ (the server resizes it); a size is always set.
    if (r.width == 0 || r.height == 0) __builtin_trap();
    if (in.picture.width < 1 || in.picture.height < 1 ||
        in.picture.rgb.size() != size_t(in.picture.width) * in.picture.height * 3)
      __builtin_trap();
    if (in.mask && in.mask->rgb.size() != size_t(in.mask->width) * in.mask->height * 3)
      __builtin_trap();
    if (!(in.denoising_strength > 0) || in.denoising_strength > 1) __builtin_trap();
    if (static_cast<int>(r.steps * in.denoising_strength) < 1) __builtin_trap();
  }
  (void)r.parameters.dump();  // echoed back: must serialise
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 3) {
      case 0:
        check(hyrt::serve::parse_txt2img(body, kLimits, resolve), false);
        break;
      case 1:
        check(hyrt::serve::parse_img2img(body, kLimits, resolve), true);
        break;
      default: {
        const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
        if (j.is_discarded()) return 0;  // the server answers 400 before png_info
        const nlohmann::json info = hyrt::serve::png_info(j);
        if (!info.contains("info") || !info["info"].is_string()) __builtin_trap();
        (void)info.dump();
        break;
      }
    }
  } catch (const ApiError&) {
  }
  return 0;
}

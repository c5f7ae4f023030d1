// The hires fix's pure parts (pipeline/txt2img.h, HiresFix): the second pass's size, the
// upscalers' names and the A1111 parameters it adds. Kept apart from txt2img.cpp so that what
// parses requests (serve's fuzz target) needs none of the generation.
#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

#include "core/error.h"
#include "pipeline/txt2img.h"

namespace hyrt::pipeline {

std::array<int, 2> hires_size(const HiresFix& hires, int width, int height, int m) {
  double w = width * hires.scale, h = height * hires.scale;
  if (hires.width > 0 && hires.height > 0) {
    w = hires.width;
    h = hires.height;
  } else if (hires.width > 0) {
    w = hires.width;
    h = static_cast<double>(hires.width) * height / width;
  } else if (hires.height > 0) {
    h = hires.height;
    w = static_cast<double>(hires.height) * width / height;
  }
  const auto round_down = [m](double v) {
    return std::max(m, static_cast<int>(std::min(v, 1e9)) / m * m);
  };
  return {round_down(w), round_down(h)};
}

std::string_view hires_upscaler_name(HiresFix::Upscaler u) {
  switch (u) {
    case HiresFix::Upscaler::kLanczos:
      return "Lanczos";
    case HiresFix::Upscaler::kLatent:
      return "Latent";
    case HiresFix::Upscaler::kLatentNearest:
      return "Latent (nearest)";
  }
  return "Lanczos";
}

HiresFix::Upscaler parse_hires_upscaler(std::string_view name) {
  const auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  };
  for (const auto u : {HiresFix::Upscaler::kLanczos, HiresFix::Upscaler::kLatent,
                       HiresFix::Upscaler::kLatentNearest})
    if (lower(name) == lower(hires_upscaler_name(u))) return u;
  fail(ErrorCode::kInvalidArgument, "unknown hires upscaler \"", name,
       "\" (hyrt has \"Lanczos\", \"Latent\" and \"Latent (nearest)\")");
}

void add_hires_parameters(const HiresFix& hires, GenerationParameters& gp) {
  gp.extra.emplace_back("Denoising strength", str_cat(hires.strength));
  if (hires.width > 0 || hires.height > 0)
    gp.extra.emplace_back("Hires resize", str_cat(hires.width, "x", hires.height));
  else
    gp.extra.emplace_back("Hires upscale", str_cat(hires.scale));
  if (hires.steps > 0) gp.extra.emplace_back("Hires steps", str_cat(hires.steps));
  gp.extra.emplace_back("Hires upscaler", std::string(hires_upscaler_name(hires.upscaler)));
}

}  // namespace hyrt::pipeline

#include "serve/a1111_api.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <limits>
#include <map>

#include "core/build_info.h"
#include "core/error.h"
#include "pipeline/image_io.h"
#include "pipeline/scheduler.h"
#include "pipeline/txt2img.h"

namespace hyrt::serve {

using nlohmann::json;

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 422:
      return "Unprocessable Entity";
    case 503:
      return "Service Unavailable";
    default:
      return status >= 500 ? "Internal Server Error" : "Error";
  }
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// Field readers: absent or null keeps the default, as pydantic's Optional fields do. Types
// are strict (no "20" for 20): a client that sends a string for a number has a bug worth
// reporting, and A1111's own clients send proper JSON types.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::string read_string(const json& body, const char* name, std::string fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_string()) throw ApiError(422, name, std::string(name) + " must be a string");
  return v->get<std::string>();
}

// An integer: a JSON integer, or a number with an integral value (20.0), in [lo, hi].
int64_t read_int(const json& body, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return fallback;
  int64_t x = 0;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() &&
        v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      x = std::numeric_limits<int64_t>::max();
    else
      x = v->get<int64_t>();
  } else if (v->is_number_float()) {
    const double d = v->get<double>();
    if (d != std::floor(d) || !(std::abs(d) < 9.0e18))
      throw ApiError(422, name, std::string(name) + " must be an integer");
    x = static_cast<int64_t>(d);
  } else {
    throw ApiError(422, name, std::string(name) + " must be an integer");
  }
  if (x < lo || x > hi)
    throw ApiError(422, name,
                   std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                       std::to_string(hi) + "], got " + std::to_string(x));
  return x;
}

double read_number(const json& body, const char* name, double fallback, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) throw ApiError(422, name, std::string(name) + " must be a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw ApiError(422, name,
                   std::string(name) + " must be in [" + json(lo).dump() + ", " + json(hi).dump() +
                       "], got " + json(x).dump());
  return x;
}

bool read_bool(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean()) throw ApiError(422, name, std::string(name) + " must be true or false");
  return v->get<bool>();
}

[[noreturn]] void refuse(const char* name, const std::string& what) {
  throw ApiError(422, name, std::string("hyrt serve does not support ") + what + " (" + name + ")");
}

// Fields of A1111's txt2img and img2img that ask for a feature hyrt does not have. A client
// sending the default (false, "", [], {}, 0) is fine; anything else is refused by name.
void refuse_unsupported(const json& body) {
  if (read_bool(body, "restore_faces", false)) refuse("restore_faces", "face restoration");
  if (read_bool(body, "tiling", false)) refuse("tiling", "tiling");
  if (!read_string(body, "script_name", "").empty()) refuse("script_name", "scripts");
  if (const json* v = field(body, "alwayson_scripts"); v && !v->empty())
    refuse("alwayson_scripts", "extension scripts");
  if (const json* v = field(body, "styles"); v && !v->empty()) refuse("styles", "saved styles");
  if (read_number(body, "subseed_strength", 0.0, 0.0, 1.0) != 0.0)
    refuse("subseed_strength", "variation seeds");
  if (!read_string(body, "refiner_checkpoint", "").empty())
    refuse("refiner_checkpoint", "a refiner model");
}

// A1111's sampler plus its newer separate `scheduler` field ("Automatic", "Karras", ...).
// Returns {display name, hyrt name}.
std::pair<std::string, std::string> resolve_sampler(const json& body) {
  std::string name = read_string(body, "sampler_name", "");
  const char* name_field = "sampler_name";
  if (name.empty()) {
    name = read_string(body, "sampler_index", "Euler a");  // the pre-1.0 field
    name_field = "sampler_index";
  }
  const SamplerName* found = nullptr;
  for (const SamplerName& s : samplers()) {
    if (lower(name) == lower(s.a1111) || lower(name) == s.hyrt) found = &s;
    for (const std::string& a : s.aliases)
      if (lower(name) == lower(a)) found = &s;
  }
  if (!found) {
    std::string valid;
    for (const SamplerName& s : samplers())
      valid += std::string(valid.empty() ? "" : ", ") + '"' + s.a1111 + '"';
    throw ApiError(422, name_field, "unknown sampler \"" + name + "\"; hyrt has " + valid);
  }
  const std::string scheduler = lower(read_string(body, "scheduler", "automatic"));
  if (scheduler == "karras") {
    const auto karras = pipeline::karras_variant(pipeline::parse_sampler_kind(found->hyrt));
    if (!karras)
      throw ApiError(422, "scheduler",
                     std::string("\"") + found->a1111 + "\" has no Karras schedule in hyrt");
    return {std::string(pipeline::sampler_display_name(*karras)),
            std::string(pipeline::sampler_id(*karras))};
  }
  if (scheduler != "automatic" && scheduler != "uniform" && scheduler != "normal")
    throw ApiError(422, "scheduler",
                   "unknown scheduler \"" + read_string(body, "scheduler", "") +
                       "\"; hyrt has \"Automatic\" and \"Karras\"");
  return {found->a1111, found->hyrt};
}

int64_t unix_millis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

json error_json(int status, const std::string& field, const std::string& message) {
  return {{"error", reason_phrase(status)}, {"detail", message}, {"field", field}};
}

const std::vector<SamplerName>& samplers() {
  // Every hyrt sampler under its A1111 display name (a Karras kind as A1111's older combined
  // name, "DPM++ 2M Karras"), with the k-diffusion names old API clients send.
  static const std::vector<SamplerName> list = [] {
    const std::map<std::string_view, std::vector<std::string>> aliases = {
        {"euler_a", {"k_euler_a", "k_euler_ancestral"}},
        {"euler", {"k_euler"}},
        {"heun", {"k_heun"}},
        {"dpmpp_2m", {"k_dpmpp_2m"}},
        {"dpmpp_2m_karras", {"k_dpmpp_2m_ka"}},
        {"dpmpp_2m_sde", {"k_dpmpp_2m_sde"}},
        {"dpmpp_2m_sde_karras", {"k_dpmpp_2m_sde_ka"}},
        {"lcm", {"k_lcm"}},
    };
    std::vector<SamplerName> out;
    for (pipeline::SamplerKind kind : pipeline::all_sampler_kinds()) {
      const std::string_view id = pipeline::sampler_id(kind);
      const auto a = aliases.find(id);
      out.push_back({pipeline::sampler_display_name(kind).data(), id.data(),
                     a == aliases.end() ? std::vector<std::string>{} : a->second});
    }
    return out;
  }();
  return list;
}

json samplers_json() {
  json out = json::array();
  for (const SamplerName& s : samplers()) {
    json options = json::object();
    if (pipeline::karras_variant(pipeline::parse_sampler_kind(s.hyrt)) ==
        pipeline::parse_sampler_kind(s.hyrt))
      options["scheduler"] = "karras";
    out.push_back({{"name", s.a1111}, {"aliases", s.aliases}, {"options", options}});
  }
  return out;
}

namespace {

json parse_object(std::string_view text) {
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) throw ApiError(400, "", "the request body is not valid JSON");
  if (!body.is_object()) throw ApiError(400, "", "the request body must be a JSON object");
  return body;
}

void check_pixels(int width, int height, const Limits& limits, const char* field,
                  const std::string& hint) {
  if (int64_t(width) * height > limits.max_pixels)
    throw ApiError(
        422, field,
        "width x height must be at most " + std::to_string(limits.max_pixels) + " pixels" + hint);
}

// The fields txt2img and img2img share (A1111's StableDiffusionProcessing), read from a body
// refuse_unsupported accepted. width/height 0 stay 0 (the caller's default).
Txt2ImgRequest parse_common(const json& body, const Limits& limits,
                            const ResolveModel& resolve_model) {
  Txt2ImgRequest r;
  r.prompt = read_string(body, "prompt", "");
  r.negative_prompt = read_string(body, "negative_prompt", "");
  r.steps = static_cast<int>(read_int(body, "steps", r.steps, 1, limits.max_steps));
  r.cfg_scale = static_cast<float>(read_number(body, "cfg_scale", r.cfg_scale, 0.0, 100.0));
  r.width = static_cast<int>(read_int(body, "width", 0, 0, limits.max_side));
  r.height = static_cast<int>(read_int(body, "height", 0, 0, limits.max_side));
  for (const char* name : {"width", "height"}) {
    const int v = name[0] == 'w' ? r.width : r.height;
    if (v != 0 && (v < 8 || v % 8 != 0))
      throw ApiError(
          422, name,
          std::string(name) + " must be a positive multiple of 8, got " + std::to_string(v));
  }
  check_pixels(r.width, r.height, limits, "width", "");
  r.seed = read_int(body, "seed", -1, -1, std::numeric_limits<int64_t>::max());
  std::tie(r.sampler_a1111, r.sampler) = resolve_sampler(body);
  r.batch_size = static_cast<int>(read_int(body, "batch_size", 1, 1, limits.max_batch_size));
  r.n_iter = static_cast<int>(read_int(body, "n_iter", 1, 1, limits.max_images));
  if (r.batch_size * r.n_iter > limits.max_images)
    throw ApiError(422, "n_iter",
                   "batch_size x n_iter must be at most " + std::to_string(limits.max_images));
  r.send_images = read_bool(body, "send_images", true);

  if (const json* o = field(body, "override_settings")) {
    if (!o->is_object())
      throw ApiError(422, "override_settings", "override_settings must be an object");
    const std::string ckpt = read_string(*o, "sd_model_checkpoint", "");
    if (!ckpt.empty()) {
      const auto name = resolve_model(ckpt);
      if (!name)
        throw ApiError(422, "override_settings.sd_model_checkpoint",
                       "unknown model \"" + ckpt + "\" (GET /sdapi/v1/sd-models lists them)");
      r.model = *name;
    }
    // A1111's VAE choice: "Automatic" and "None" mean the model's own.
    const std::string vae = read_string(*o, "sd_vae", "");
    if (vae != "Automatic" && vae != "None") r.sd_vae = vae;
    r.clip_skip = static_cast<int>(read_int(*o, "CLIP_stop_at_last_layers", 1, 1, 12));
  }

  // The echo: what was sent, with the values this request runs with filled in (A1111
  // echoes the whole request model, defaults included).
  r.parameters = body;
  r.parameters["prompt"] = r.prompt;
  r.parameters["negative_prompt"] = r.negative_prompt;
  r.parameters["steps"] = r.steps;
  r.parameters["cfg_scale"] = r.cfg_scale;
  r.parameters["seed"] = r.seed;
  r.parameters["sampler_name"] = r.sampler_a1111;
  r.parameters["batch_size"] = r.batch_size;
  r.parameters["n_iter"] = r.n_iter;
  return r;
}

}  // namespace

pipeline::DecodedPng decode_png_field(const json& v, const char* name) {
  if (!v.is_string())
    throw ApiError(422, name, std::string(name) + " must hold base64-encoded PNG pictures");
  std::string_view text = v.get_ref<const std::string&>();
  if (text.rfind("http://", 0) == 0 || text.rfind("https://", 0) == 0)
    throw ApiError(422, name,
                   std::string(name) +
                       ": hyrt serve does not fetch pictures from URLs; send the PNG itself, "
                       "base64-encoded");
  if (text.rfind("data:", 0) == 0) {  // "data:image/png;base64,...."
    const size_t comma = text.find(',');
    if (comma == std::string_view::npos ||
        text.substr(0, comma).find(";base64") == std::string_view::npos)
      throw ApiError(422, name,
                     std::string(name) + ": a data URL must be \"data:image/png;base64,...\"");
    text.remove_prefix(comma + 1);
  }
  // Python's b64decode, which A1111 uses, skips line breaks and spaces; so do we.
  std::string b64;
  b64.reserve(text.size() + 3);
  for (char c : text)
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') b64 += c;
  if (b64.empty()) throw ApiError(422, name, std::string(name) + ": the picture is empty");
  if (b64.size() % 4 == 2 || b64.size() % 4 == 3) b64.append(4 - b64.size() % 4, '=');
  std::vector<uint8_t> bytes;
  try {
    bytes = base64_decode(b64);
  } catch (const std::invalid_argument& e) {
    throw ApiError(422, name, std::string(name) + " is not valid base64 (" + e.what() + ")");
  }
  auto starts = [&](std::string_view magic, size_t at = 0) {
    return bytes.size() >= at + magic.size() &&
           std::equal(magic.begin(), magic.end(), bytes.begin() + at);
  };
  const char* other = starts("\xff\xd8\xff")                ? "a JPEG"
                      : starts("RIFF") && starts("WEBP", 8) ? "a WebP"
                      : starts("GIF8")                      ? "a GIF"
                                                            : nullptr;
  if (other)
    throw ApiError(422, name,
                   std::string(name) + " is " + other +
                       " picture; hyrt reads PNG only: convert it to PNG first");
  try {
    return pipeline::decode_png(bytes);
  } catch (const Error& e) {
    throw ApiError(422, name, std::string(name) + " is not a readable PNG: " + e.what());
  }
}

namespace {

// A picture field of img2img (`name`: "init_images" or "mask"), decoded.
pipeline::Image8 decode_picture(const json& v, const char* name) {
  return decode_png_field(v, name).image;
}

// An RGB8 or RGBA8 picture as the public API's RGB8 Image (alpha dropped).
Image rgb_image(const pipeline::Image8& in) {
  Image out;
  out.width = in.width;
  out.height = in.height;
  if (in.channels == 3) {
    out.rgb = in.pixels;
    return out;
  }
  out.rgb.resize(size_t(in.width) * in.height * 3);
  for (size_t i = 0, j = 0; j < out.rgb.size(); i += in.channels, j += 3)
    for (int c = 0; c < 3; ++c)
      out.rgb[j + c] = in.pixels[i + c];
  return out;
}

// A1111's create_binary_mask: a mask whose alpha channel is not all opaque is its alpha
// (> 128: repaint); else its colours (read as grayscale by the pipeline).
Image mask_image(const pipeline::Image8& in) {
  if (in.channels != 4) return rgb_image(in);
  bool opaque = true;
  for (size_t i = 3; i < in.pixels.size() && opaque; i += 4)
    opaque = in.pixels[i] == 255;
  if (opaque) return rgb_image(in);
  Image out;
  out.width = in.width;
  out.height = in.height;
  out.rgb.resize(size_t(in.width) * in.height * 3);
  for (size_t i = 0; i < size_t(in.width) * in.height; ++i)
    std::fill_n(out.rgb.begin() + i * 3, 3, in.pixels[i * 4 + 3] > 128 ? 255 : 0);
  return out;
}

}  // namespace

Txt2ImgRequest parse_txt2img(std::string_view text, const Limits& limits,
                             const ResolveModel& resolve_model) {
  const json body = parse_object(text);
  refuse_unsupported(body);
  if (const json* v = field(body, "init_images"); v && !v->empty())
    throw ApiError(422, "init_images",
                   "txt2img takes no init_images: POST them to /sdapi/v1/img2img");
  Txt2ImgRequest r = parse_common(body, limits, resolve_model);
  if (read_bool(body, "enable_hr", false)) {
    // The hires fix: the library's upscalers (pipeline::parse_hires_upscaler: "Lanczos",
    // "Latent", "Latent (nearest)"), "None" taken as Lanczos; the model-based upscalers (ESRGAN
    // and kin) are refused by name.
    GenerateOptions::Hires h;
    const std::string upscaler = read_string(body, "hr_upscaler", "Lanczos");
    if (upscaler != "None") {
      try {
        h.upscaler =
            std::string(pipeline::hires_upscaler_name(pipeline::parse_hires_upscaler(upscaler)));
      } catch (const Error& e) {
        throw ApiError(422, "hr_upscaler", e.what());
      }
    }
    h.scale = read_number(body, "hr_scale", 2.0, 1.0, 4.0);
    h.width = static_cast<int>(read_int(body, "hr_resize_x", 0, 0, limits.max_side));
    h.height = static_cast<int>(read_int(body, "hr_resize_y", 0, 0, limits.max_side));
    h.steps = static_cast<int>(read_int(body, "hr_second_pass_steps", 0, 0, limits.max_steps));
    h.strength = read_number(body, "denoising_strength", 0.75, 0.0, 1.0);
    if (h.strength <= 0)
      throw ApiError(422, "denoising_strength",
                     "the hires fix needs denoising_strength in (0, 1], got 0");
    if (static_cast<int>((h.steps > 0 ? h.steps : r.steps) * h.strength) < 1)
      throw ApiError(422, "hr_second_pass_steps",
                     "the hires pass's steps x denoising_strength must be >= 1");
    r.hires = h;
    r.parameters["enable_hr"] = true;
  }
  return r;
}

Txt2ImgRequest parse_img2img(std::string_view text, const Limits& limits,
                             const ResolveModel& resolve_model) {
  const json body = parse_object(text);
  refuse_unsupported(body);
  if (read_bool(body, "enable_hr", false)) refuse("enable_hr", "the hires fix in img2img");
  if (read_int(body, "resize_mode", 0, 0, 3) != 0)
    refuse("resize_mode", "resize modes other than 0 (just resize)");
  if (read_number(body, "initial_noise_multiplier", 1.0, 0.0, 1e6) != 1.0)
    refuse("initial_noise_multiplier", "an initial noise multiplier other than 1");
  if (const json* v = field(body, "latent_mask"); v && !(v->is_string() && v->empty()))
    refuse("latent_mask", "a separate latent mask");
  Txt2ImgRequest r = parse_common(body, limits, resolve_model);

  InitPictures in;
  const json* pictures = field(body, "init_images");
  if (!pictures || (pictures->is_array() && pictures->empty()))
    throw ApiError(422, "init_images",
                   "img2img needs init_images: a list holding one base64-encoded PNG");
  if (!pictures->is_array())
    throw ApiError(422, "init_images", "init_images must be a list of base64-encoded PNGs");
  if (pictures->size() > 1)
    throw ApiError(
        422, "init_images",
        "hyrt serve takes one picture in init_images, got " + std::to_string(pictures->size()));
  const pipeline::Image8 picture = decode_picture(pictures->front(), "init_images");
  in.picture = rgb_image(picture);

  in.denoising_strength = read_number(body, "denoising_strength", 0.75, 0.0, 1.0);
  if (in.denoising_strength <= 0)
    throw ApiError(422, "denoising_strength", "denoising_strength must be in (0, 1], got 0");
  // diffusers' get_timesteps (pipeline::first_img2img_step): int(steps x strength) steps run.
  if (static_cast<int>(r.steps * in.denoising_strength) < 1)
    throw ApiError(422, "denoising_strength",
                   "denoising_strength " + json(in.denoising_strength).dump() + " with " +
                       std::to_string(r.steps) +
                       " steps leaves no step to run (steps x denoising_strength must be >= 1)");

  const bool invert = read_int(body, "inpainting_mask_invert", 0, 0, 1) == 1;
  if (!read_string(body, "mask", "").empty()) {
    in.mask = mask_image(decode_picture(*field(body, "mask"), "mask"));
    if (invert)
      for (uint8_t& v : in.mask->rgb)
        v = static_cast<uint8_t>(255 - v);
  }

  // No size: the picture's, rounded down to a multiple of 8.
  const std::string hint = " (the init image is " + std::to_string(picture.width) + "x" +
                           std::to_string(picture.height) +
                           "; pass a smaller width and height to scale it down)";
  for (const char* name : {"width", "height"}) {
    int& v = name[0] == 'w' ? r.width : r.height;
    if (v != 0) continue;
    v = std::max(8, (name[0] == 'w' ? picture.width : picture.height) / 8 * 8);
    if (v > limits.max_side)
      throw ApiError(
          422, "init_images",
          std::string(name) + " must be at most " + std::to_string(limits.max_side) + hint);
  }
  check_pixels(r.width, r.height, limits, "init_images", hint);

  const bool include = read_bool(body, "include_init_images", false);
  r.parameters["denoising_strength"] = in.denoising_strength;
  if (!include) {
    r.parameters["init_images"] = nullptr;
    r.parameters["mask"] = nullptr;
  }
  r.img2img = std::move(in);
  return r;
}

uint64_t iteration_seed(uint64_t seed, int batch_size, int iter) {
  return seed + static_cast<uint64_t>(batch_size) * static_cast<uint64_t>(iter);
}

std::string base64_encode(const std::vector<uint8_t>& bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = bytes[i] << 16 | bytes[i + 1] << 8 | bytes[i + 2];
    for (int s = 18; s >= 0; s -= 6)
      out += kAlphabet[v >> s & 63];
  }
  if (const size_t rest = bytes.size() - i; rest > 0) {
    const uint32_t v = bytes[i] << 16 | (rest == 2 ? bytes[i + 1] << 8 : 0);
    out += kAlphabet[v >> 18 & 63];
    out += kAlphabet[v >> 12 & 63];
    out += rest == 2 ? kAlphabet[v >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

std::vector<uint8_t> base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) throw std::invalid_argument("base64: length not a multiple of 4");
  std::vector<uint8_t> out;
  for (size_t i = 0; i < text.size(); i += 4) {
    uint32_t v = 0;
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        ++pad;
        v <<= 6;
        continue;
      }
      const int d = value(c);
      if (d < 0 || pad) throw std::invalid_argument("base64: bad character");
      v = v << 6 | d;
    }
    out.push_back(v >> 16 & 255);
    if (pad < 2) out.push_back(v >> 8 & 255);
    if (pad < 1) out.push_back(v & 255);
  }
  return out;
}

std::string encode_png_base64(const Image& image) {
  // TODO(public API): hyrt.h has Model::save_png (a file) but no in-memory encoder; the
  // pipeline's encode_png is the same code save_png uses, without the file.
  const pipeline::Image8 img{image.width, image.height, 3, image.rgb};
  if (image.parameters.empty()) return base64_encode(pipeline::encode_png(img, {}));  // previews
  return base64_encode(
      pipeline::encode_png(img, {{pipeline::kParametersKeyword, image.parameters}}));
}

json txt2img_response(const Txt2ImgRequest& r, uint64_t seed, const std::vector<Image>& images,
                      const std::string& model_name, bool interrupted) {
  json out;
  out["images"] = json::array();
  if (r.send_images)
    for (const Image& img : images)
      out["images"].push_back(encode_png_base64(img));
  out["parameters"] = r.parameters;

  json all_seeds = json::array(), infotexts = json::array(), prompts = json::array(),
       negatives = json::array(), subseeds = json::array();
  for (const Image& img : images) {
    all_seeds.push_back(img.seed);
    subseeds.push_back(-1);
    infotexts.push_back(img.parameters);
    prompts.push_back(r.prompt);
    negatives.push_back(r.negative_prompt);
  }
  char stamp[32] = "";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
  const json info = {
      {"prompt", r.prompt},
      {"all_prompts", prompts},
      {"negative_prompt", r.negative_prompt},
      {"all_negative_prompts", negatives},
      {"seed", seed},
      {"all_seeds", all_seeds},
      {"subseed", -1},
      {"all_subseeds", subseeds},
      {"subseed_strength", 0},
      {"width", images.empty() ? r.width : images.front().width},
      {"height", images.empty() ? r.height : images.front().height},
      {"sampler_name", r.sampler_a1111},
      {"cfg_scale", r.cfg_scale},
      {"steps", r.steps},
      {"batch_size", r.batch_size},
      {"restore_faces", false},
      {"face_restoration_model", nullptr},
      {"sd_model_name", model_name},
      {"sd_model_hash", nullptr},
      {"seed_resize_from_w", -1},
      {"seed_resize_from_h", -1},
      {"denoising_strength", r.img2img ? json(r.img2img->denoising_strength) : json(nullptr)},
      {"extra_generation_params", json::object()},
      {"index_of_first_image", 0},
      {"infotexts", infotexts},
      {"styles", json::array()},
      {"job_timestamp", stamp},
      {"clip_skip", r.clip_skip},
      {"is_using_inpainting_conditioning", false},
      {"version", "hyrt " HYRT_VERSION_STRING},
      {"interrupted", interrupted},  // hyrt's: the images before an interrupt
      {"job_unix_ms", unix_millis()},
  };
  out["info"] = info.dump();
  return out;
}

namespace {

// A1111's parse_generation_parameters, the part a client reads back: the prompt lines, the
// "Negative prompt: " lines, and the last line's "Key: value" pairs (a value may be quoted, with
// backslash escapes, when it holds commas).
json parse_parameters(const std::string& text) {
  std::vector<std::string> lines;
  size_t at = 0;
  while (at <= text.size()) {
    const size_t end = std::min(text.find('\n', at), text.size());
    lines.push_back(text.substr(at, end - at));
    at = end + 1;
  }
  json out = json::object();
  std::string last;
  if (lines.size() > 1 && lines.back().find("Steps: ") != std::string::npos) {
    last = lines.back();
    lines.pop_back();
  }
  std::string prompt, negative;
  bool in_negative = false;
  for (const std::string& l : lines) {
    if (l.rfind("Negative prompt: ", 0) == 0) {
      in_negative = true;
      negative = l.substr(17);
      continue;
    }
    std::string& to = in_negative ? negative : prompt;
    to += (to.empty() ? "" : "\n") + l;
  }
  out["Prompt"] = prompt;
  out["Negative prompt"] = negative;
  size_t i = 0;
  while (i < last.size()) {
    while (i < last.size() && (last[i] == ' ' || last[i] == ','))
      ++i;
    const size_t colon = last.find(": ", i);
    if (colon == std::string::npos) break;
    const std::string key = last.substr(i, colon - i);
    i = colon + 2;
    std::string value;
    if (i < last.size() && last[i] == '"') {  // a quoted value: up to the closing quote
      for (++i; i < last.size() && last[i] != '"'; ++i) {
        if (last[i] == '\\' && i + 1 < last.size()) ++i;
        value += last[i];
      }
      ++i;
    } else {
      const size_t comma = std::min(last.find(", ", i), last.size());
      value = last.substr(i, comma - i);
      i = comma;
    }
    out[key] = value;
  }
  if (out.contains("Size")) {
    const std::string size = out["Size"].get<std::string>();
    if (const size_t x = size.find('x'); x != std::string::npos) {
      out["Size-1"] = size.substr(0, x);
      out["Size-2"] = size.substr(x + 1);
    }
  }
  return out;
}

}  // namespace

json png_info(const json& body) {
  const json* image = field(body, "image");
  if (!image) throw ApiError(422, "image", "png-info needs image: a base64-encoded PNG");
  const pipeline::DecodedPng png = decode_png_field(*image, "image");
  std::string info;
  json items = json::object();
  for (const auto& [key, value] : png.text) {
    if (key == pipeline::kParametersKeyword)
      info = value;
    else
      items[key] = value;
  }
  return {{"info", info}, {"items", items}, {"parameters", parse_parameters(info)}};
}

}  // namespace hyrt::serve

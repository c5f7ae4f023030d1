// The AUTOMATIC1111 web API's request and response bodies (the `/sdapi/v1/...` JSON that
// front-ends, bots and scripts speak), mapped to and from hyrt's public API.
//
// Parsing follows what A1111 (FastAPI + pydantic) accepts: unknown fields are ignored, a JSON
// null means "the default", and the fields A1111 clients always send with their defaults
// (enable_hr false, styles [], alwayson_scripts {}...) are accepted. A feature hyrt lacks,
// when actually asked for, is refused instead of silently dropped.
//
// Everything here is a pure function of its arguments: thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hyrt/hyrt.h"
#include "pipeline/image_io.h"

namespace hyrt::serve {

// A request the server refuses: the HTTP status (4xx), the JSON field at fault ("" when the
// body as a whole is), and a message for a person.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string field, const std::string& message)
      : std::runtime_error(message), status_(status), field_(std::move(field)) {}
  int status() const { return status_; }
  const std::string& field() const { return field_; }

 private:
  int status_;
  std::string field_;
};

// {"error": <reason phrase>, "detail": <message>, "field": <field>} — `detail` is what
// FastAPI (and so A1111) puts its message in, which clients print.
nlohmann::json error_json(int status, const std::string& field, const std::string& message);

// What one request may ask for. Sizes beyond these are refused with 422 before any work.
struct Limits {
  int max_side = 2048;  // width and height, pixels
  int max_pixels = 2048 * 2048;
  int max_steps = 150;
  int max_batch_size = 8;  // images per UNet batch
  int max_images = 32;     // batch_size x n_iter
};

// A1111 sampler names with hyrt's name for each, in the order /sdapi/v1/samplers lists them.
struct SamplerName {
  const char* a1111;  // "Euler a"
  const char* hyrt;   // "euler_a" (GenerateOptions::sampler)
  std::vector<std::string> aliases;
};
const std::vector<SamplerName>& samplers();
// The /sdapi/v1/samplers body: [{"name", "aliases", "options"}].
nlohmann::json samplers_json();

// The pictures of an img2img request, decoded and checked.
struct InitPictures {
  Image picture;                     // the first of init_images, RGB8 (an alpha channel dropped)
  std::optional<Image> mask;         // inpainting: RGB8, white = repaint; inverted already when
                                     // inpainting_mask_invert is 1
  double denoising_strength = 0.75;  // (0, 1]; steps x strength >= 1
};

// A parsed and validated POST /sdapi/v1/txt2img or /sdapi/v1/img2img.
struct Txt2ImgRequest {
  std::string prompt;
  std::string negative_prompt;
  int steps = 20;
  float cfg_scale = 7.0f;
  int width = 0;  // 0: the model's native size (filled in by the server)
  int height = 0;
  int64_t seed = -1;                      // -1: a random seed (drawn by the server)
  std::string sampler_a1111 = "Euler a";  // display name, as echoed back
  std::string sampler = "euler_a";        // hyrt's name
  int batch_size = 1;
  int n_iter = 1;
  std::string model;   // a name resolve_model returned; "" = the server's default
  std::string sd_vae;  // override_settings.sd_vae; "" = the model's VAE
  int clip_skip = 1;   // override_settings.CLIP_stop_at_last_layers
  std::optional<GenerateOptions::Hires> hires;  // txt2img's enable_hr (a Lanczos upscale)
  bool send_images = true;                      // false: the response's `images` is empty
  nlohmann::json parameters;            // the request as sent, with defaults filled: echoed back
  std::optional<InitPictures> img2img;  // img2img: the pictures; absent for txt2img
};

// Maps a checkpoint name as a client sends it (title, model name or file name) to the
// server's name for it; nullopt when there is no such model.
using ResolveModel = std::function<std::optional<std::string>(const std::string&)>;

// Parses a txt2img body. Throws ApiError: 400 for JSON that does not parse or is not an
// object, 422 naming the field for a wrong type, a value out of range (sizes that are not
// multiples of 8 or exceed `limits`, steps, batch), an unknown sampler, scheduler or model,
// or a feature hyrt lacks (enable_hr, restore_faces, tiling, scripts, styles, subseeds,
// a refiner).
Txt2ImgRequest parse_txt2img(std::string_view body, const Limits& limits,
                             const ResolveModel& resolve_model);

// Parses an img2img body (A1111's StableDiffusionImg2ImgProcessingAPI): the txt2img fields as
// parse_txt2img reads them, plus
// - init_images: a list of one base64 PNG (a "data:image/png;base64," prefix and line breaks
//   allowed; hyrt reads PNG only); more than one picture, a URL, JPEG or WebP is refused.
//   width/height absent or 0: the picture's size rounded down to a multiple of 8 (A1111
//   itself defaults to 512x512; the picture's size is what diffusers and `hyrt generate`
//   use); the picture is then resized to width x height (resize_mode 0, "Just resize", with
//   Lanczos as A1111 does; the other resize modes are refused).
// - mask: a base64 PNG, white = repaint; a mask with a (not fully opaque) alpha channel is
//   read from its alpha, as A1111 does; a mask of another size than the picture is resized
//   to width x height like the picture (as A1111 and `hyrt generate --mask` do).
//   inpainting_mask_invert 1 swaps repaint and keep.
// - denoising_strength: (0, 1], default 0.75 (A1111's); steps x strength must be >= 1.
// - include_init_images: echo the pictures in `parameters` (else init_images and mask are
//   null there, as A1111 does).
// Accepted and ignored (hyrt inpaints the whole picture from its own content under the
// mask, with the mask binarised rather than blurred): mask_blur, mask_blur_x, mask_blur_y,
// mask_round, inpainting_fill, inpaint_full_res, inpaint_full_res_padding, image_cfg_scale
// (instruct-pix2pix only). Refused when not their default: initial_noise_multiplier (1),
// latent_mask. Errors are ApiErrors as in parse_txt2img, 422 naming the field: no picture,
// not base64, not a PNG, a picture whose own size exceeds `limits` without width/height, a
// strength out of range.
Txt2ImgRequest parse_img2img(std::string_view body, const Limits& limits,
                             const ResolveModel& resolve_model);

// The `seed` of iteration `iter` (0-based) of a request whose first seed is `seed`: A1111
// advances by batch_size per iteration.
uint64_t iteration_seed(uint64_t seed, int batch_size, int iter);

// A picture field (`name`, for errors): base64 of a PNG, perhaps as a data URL, decoded with
// its text chunks. ApiError 422 naming the field for anything else (a URL, a JPEG, bad base64,
// an unreadable or oversized PNG).
pipeline::DecodedPng decode_png_field(const nlohmann::json& value, const char* name);

// POST /sdapi/v1/png-info's reply for {"image": base64 PNG}: {"info": the `parameters` text
// ("" without one), "items": the other text chunks, "parameters": the text parsed as A1111's
// parse_generation_parameters does — "Prompt", "Negative prompt", every "Key: value" of the
// last line (quoted values unquoted), "Size-1"/"Size-2" from "Size"}.
nlohmann::json png_info(const nlohmann::json& body);

// One generated picture as the response carries it: a base64 PNG with the A1111
// `parameters` text chunk (image.parameters).
std::string encode_png_base64(const Image& image);
std::string base64_encode(const std::vector<uint8_t>& bytes);
// Inverse of base64_encode; throws std::invalid_argument on a malformed string (tests).
std::vector<uint8_t> base64_decode(std::string_view text);

// The txt2img and img2img response body: {"images": [...], "parameters": {...},
// "info": "<json>"}.
// `seed` is the request's first seed after -1 was resolved; `images` are in order (batch
// within iteration); `model_name` is the checkpoint that drew them.
nlohmann::json txt2img_response(const Txt2ImgRequest& request, uint64_t seed,
                                const std::vector<Image>& images, const std::string& model_name,
                                bool interrupted);

}  // namespace hyrt::serve

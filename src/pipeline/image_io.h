// Image output: float images to 8-bit pixels (as diffusers' image processor rounds them),
// PNG files with an AUTOMATIC1111-style "parameters" text chunk (libspng), and PNG reading
// for tests and tools.
//
// Layout: Image8 holds interleaved 8-bit samples, row-major [height, width, channels] with
// channels 3 (RGB) or 4 (RGBA), no row padding — the same order as hyrt's NHWC images for one
// batch element. Everything here is a pure function of its arguments: thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace hyrt::pipeline {

struct Image8 {
  int width = 0;
  int height = 0;
  int channels = 3;             // 3: RGB8, 4: RGBA8
  std::vector<uint8_t> pixels;  // [height, width, channels]
};

// What the float samples mean: [0, 1] (diffusers' output_type "np"/"pil", golden `.image`) or
// [-1, 1] (the raw VAE decoder output, mapped by x / 2 + 0.5 first).
enum class FloatRange { kZeroToOne, kMinusOneToOne };

// [height, width, channels] floats -> Image8, as diffusers' VaeImageProcessor does: map to
// [0, 1] if needed, clamp, then round(x · 255) with ties to even (numpy's round); NaN becomes
// 0. `pixels.size()` must be height · width · channels (kInvalidArgument otherwise).
Image8 float_to_image8(std::span<const float> pixels, int height, int width, int channels = 3,
                       FloatRange range = FloatRange::kZeroToOne);

// A text chunk: keyword (1–79 Latin-1 characters) and UTF-8 text.
using PngText = std::pair<std::string, std::string>;

// Encodes a PNG in memory. Text that is pure ASCII goes in a tEXt chunk; other text in an
// uncompressed iTXt chunk (UTF-8), as Pillow does, so readers see the right characters.
// Throws kInvalidArgument for a malformed image or keyword, kInternal if libspng fails.
std::vector<uint8_t> encode_png(const Image8& image, const std::vector<PngText>& text = {});
// encode_png() written to `path` (replacing it). Failure to create or write the file throws
// kIo naming the path.
void write_png(const std::filesystem::path& path, const Image8& image,
               const std::vector<PngText>& text = {});

struct DecodedPng {
  Image8 image;               // RGB8 for PNGs without alpha, else RGBA8
  std::vector<PngText> text;  // tEXt (Latin-1, returned as UTF-8), zTXt and iTXt chunks
};
// Limits checked from the header before anything is decoded or allocated: a PNG of a few
// bytes can declare 65535 x 65535 pixels (16 GiB as RGBA), and ancillary chunks can inflate
// without bound. Far above any picture a diffusion model takes or makes.
inline constexpr uint32_t kMaxPngSide = 16384;
inline constexpr uint64_t kMaxPngPixels = 64ull << 20;          // 64 Mpixel: 256 MiB as RGBA8
inline constexpr uint64_t kMaxPngChunkBytes = 64ull << 20;      // one chunk, as stored
inline constexpr uint64_t kMaxPngAncillaryBytes = 64ull << 20;  // text etc. kept in memory
inline constexpr uint64_t kMaxPngFileBytes = 512ull << 20;

// Decodes a PNG of any colour type / bit depth into 8-bit RGB or RGBA. Bytes that are not a
// valid PNG, or a PNG past the limits above, throw kInvalidArgument with the reason.
DecodedPng decode_png(std::span<const uint8_t> bytes);
// kNotFound if the path does not exist; kInvalidArgument if it is not a regular file (a FIFO,
// a device) or is larger than kMaxPngFileBytes; kIo, naming the path, if it cannot be read or
// decoded.
DecodedPng read_png(const std::filesystem::path& path);

// Pillow's Image.resize(size, Image.LANCZOS) on 8-bit images — what diffusers'
// VaeImageProcessor does to a PIL picture or mask before encoding it (resample "lanczos"):
// a separable Lanczos-3 filter widened by the scale factor when shrinking, horizontal pass
// then vertical, with Pillow's 22-bit fixed-point coefficients and clamping between passes.
// Any channel count; the same size returns a copy. kInvalidArgument for a non-positive size.
Image8 resize_lanczos(const Image8& image, int width, int height);
// Pillow's convert("L"): one channel, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (alpha
// ignored); a one-channel image is returned as it is.
Image8 to_grayscale(const Image8& image);

// Generation settings, in the form AUTOMATIC1111's web UI stores them ("infotext"), which
// many tools read back from the PNG's "parameters" chunk.
struct GenerationParameters {
  std::string prompt;
  std::string negative_prompt;  // its line is omitted when empty
  int steps = 0;
  std::string sampler;  // display name, e.g. "Euler a" (sampler_display_name)
  double cfg_scale = 7.0;
  uint64_t seed = 0;
  int width = 0;
  int height = 0;
  std::string model;       // omitted when empty
  std::string model_hash;  // omitted when empty
  // Further "Key: value" pairs appended in order (e.g. {"Version", "hyrt 0.1.0"}).
  std::vector<std::pair<std::string, std::string>> extra;
};

// "prompt\nNegative prompt: ...\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42,
//  Size: 512x512, Model hash: ..., Model: ..., <extra>". Numbers use the shortest form
// ("7", "7.5"); values containing ',', ':' or a newline are JSON-quoted, as A1111 does.
std::string format_a1111_parameters(const GenerationParameters& params);
inline constexpr const char* kParametersKeyword = "parameters";

}  // namespace hyrt::pipeline

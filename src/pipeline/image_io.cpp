// Image conversion and PNG I/O (see image_io.h). The float -> uint8 rule mirrors diffusers'
// VaeImageProcessor.postprocess + numpy_to_pil; the infotext mirrors AUTOMATIC1111's
// create_infotext.
#include "pipeline/image_io.h"

#include <spng.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>

#include "core/alloc.h"
#include "core/error.h"
#include "weights/json_text.h"

namespace hyrt::pipeline {
namespace {

struct SpngContextDeleter {
  void operator()(spng_ctx* ctx) const { spng_ctx_free(ctx); }
};
using SpngContext = std::unique_ptr<spng_ctx, SpngContextDeleter>;

void check_image(const Image8& image) {
  HYRT_CHECK(image.width > 0 && image.height > 0, kInvalidArgument, "PNG image size ", image.width,
             "x", image.height, " is empty");
  HYRT_CHECK(image.channels == 3 || image.channels == 4, kInvalidArgument,
             "PNG images have 3 (RGB) or 4 (RGBA) channels, got ", image.channels);
  const size_t expected =
      static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * image.channels;
  HYRT_CHECK(image.pixels.size() == expected, kInvalidArgument, "image of ", image.width, "x",
             image.height, "x", image.channels, " needs ", expected, " bytes, has ",
             image.pixels.size());
}

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

std::string latin1_to_utf8(std::string_view s) {
  std::string out;
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x80) {
      out += c;
    } else {
      out += static_cast<char>(0xC0 | (b >> 6));
      out += static_cast<char>(0x80 | (b & 0x3F));
    }
  }
  return out;
}

// Shortest decimal form that reads back as the same double: 7 -> "7", 7.5 -> "7.5".
std::string shortest_number(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return ec == std::errc() ? std::string(buf, end) : std::to_string(v);
}

// A1111 quotes a value with json.dumps when it contains ',', ':' or a newline.
std::string quote_if_needed(const std::string& value) {
  if (value.find_first_of(",:\n") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += c;
    }
  }
  return out + "\"";
}

}  // namespace

Image8 float_to_image8(std::span<const float> pixels, int height, int width, int channels,
                       FloatRange range) {
  HYRT_CHECK(height > 0 && width > 0 && (channels == 3 || channels == 4), kInvalidArgument,
             "float_to_image8: bad image shape [", height, ", ", width, ", ", channels, "]");
  const size_t count = static_cast<size_t>(height) * static_cast<size_t>(width) * channels;
  HYRT_CHECK(pixels.size() == count, kInvalidArgument, "float_to_image8: [", height, ", ", width,
             ", ", channels, "] needs ", count, " values, got ", pixels.size());
  Image8 image{width, height, channels, checked_vector<uint8_t>(count, "the output picture")};
  for (size_t i = 0; i < count; ++i) {
    float v = pixels[i];
    // diffusers: (x / 2 + 0.5).clamp(0, 1) for [-1, 1] data, then (x * 255).round() in float32.
    if (range == FloatRange::kMinusOneToOne) v = v / 2.0f + 0.5f;
    if (!(v >= 0.0f)) v = 0.0f;  // also maps NaN to 0
    if (v > 1.0f) v = 1.0f;
    image.pixels[i] = static_cast<uint8_t>(std::nearbyint(v * 255.0f));  // ties to even
  }
  return image;
}

std::vector<uint8_t> encode_png(const Image8& image, const std::vector<PngText>& text) {
  check_image(image);
  SpngContext ctx(spng_ctx_new(SPNG_CTX_ENCODER));
  HYRT_CHECK(ctx, kOutOfMemory, "libspng: cannot create an encoder");
  spng_set_option(ctx.get(), SPNG_ENCODE_TO_BUFFER, 1);

  spng_ihdr ihdr{};
  ihdr.width = static_cast<uint32_t>(image.width);
  ihdr.height = static_cast<uint32_t>(image.height);
  ihdr.bit_depth = 8;
  ihdr.color_type =
      image.channels == 4 ? SPNG_COLOR_TYPE_TRUECOLOR_ALPHA : SPNG_COLOR_TYPE_TRUECOLOR;
  int err = spng_set_ihdr(ctx.get(), &ihdr);
  HYRT_CHECK(err == 0, kInternal, "libspng: set_ihdr: ", spng_strerror(err));

  // spng_text holds non-const pointers into these strings; they outlive the encode call.
  std::vector<std::string> storage;
  storage.reserve(text.size());
  std::vector<spng_text> chunks(text.size());
  static char empty[] = "";
  for (size_t i = 0; i < text.size(); ++i) {
    const auto& [keyword, value] = text[i];
    HYRT_CHECK(!keyword.empty() && keyword.size() < sizeof(chunks[i].keyword), kInvalidArgument,
               "PNG text keyword '", keyword, "' must have 1 to 79 characters");
    spng_text& chunk = chunks[i];
    std::copy(keyword.begin(), keyword.end(), chunk.keyword);
    chunk.keyword[keyword.size()] = '\0';
    chunk.type = is_ascii(value) ? SPNG_TEXT : SPNG_ITXT;
    storage.push_back(value);
    chunk.text = storage.back().data();
    chunk.length = storage.back().size();
    chunk.compression_flag = 0;
    chunk.compression_method = 0;
    chunk.language_tag = empty;
    chunk.translated_keyword = empty;
  }
  if (!chunks.empty()) {
    err = spng_set_text(ctx.get(), chunks.data(), static_cast<uint32_t>(chunks.size()));
    HYRT_CHECK(err == 0, kInvalidArgument,
               "libspng: PNG text chunk rejected: ", spng_strerror(err));
  }

  err = spng_encode_image(ctx.get(), image.pixels.data(), image.pixels.size(), SPNG_FMT_PNG,
                          SPNG_ENCODE_FINALIZE);
  HYRT_CHECK(err == 0, kInternal, "libspng: encode: ", spng_strerror(err));
  size_t size = 0;
  void* buffer = spng_get_png_buffer(ctx.get(), &size, &err);
  HYRT_CHECK(buffer != nullptr && err == 0, kInternal,
             "libspng: no encoded buffer: ", spng_strerror(err));
  std::vector<uint8_t> bytes(static_cast<uint8_t*>(buffer), static_cast<uint8_t*>(buffer) + size);
  std::free(buffer);  // libspng hands the buffer over, allocated with malloc
  return bytes;
}

void write_png(const std::filesystem::path& path, const Image8& image,
               const std::vector<PngText>& text) {
  const std::vector<uint8_t> bytes = encode_png(image, text);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  HYRT_CHECK(out, kIo, "cannot create PNG file ", path.string());
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  HYRT_CHECK(!out.fail(), kIo, "error writing PNG file ", path.string());
}

namespace {

// libspng's message, with what "end of stream" means to a user.
std::string spng_message(int err) {
  std::string m = spng_strerror(err);
  if (err == SPNG_EOF) m += " (the file ends early: truncated or incompletely downloaded?)";
  return m;
}

}  // namespace

DecodedPng decode_png(std::span<const uint8_t> bytes) {
  SpngContext ctx(spng_ctx_new(0));
  HYRT_CHECK(ctx, kOutOfMemory, "libspng: cannot create a decoder");
  // libspng's defaults allow 2^31-1 pixels a side and chunks of any size.
  int err = spng_set_image_limits(ctx.get(), kMaxPngSide, kMaxPngSide);
  if (err == 0) err = spng_set_chunk_limits(ctx.get(), kMaxPngChunkBytes, kMaxPngAncillaryBytes);
  HYRT_CHECK(err == 0, kInternal, "libspng: cannot set limits: ", spng_strerror(err));
  err = spng_set_png_buffer(ctx.get(), bytes.data(), bytes.size());
  HYRT_CHECK(err == 0, kInvalidArgument, "not a PNG: ", spng_message(err));
  spng_ihdr ihdr{};
  err = spng_get_ihdr(ctx.get(), &ihdr);
  if (err == SPNG_EUSER_WIDTH || err == SPNG_EUSER_HEIGHT || err == SPNG_EWIDTH ||
      err == SPNG_EHEIGHT)
    fail(ErrorCode::kInvalidArgument, "PNG: image too large (", spng_strerror(err),
         "; hyrt reads at most ", kMaxPngSide, " pixels a side)");
  HYRT_CHECK(err == 0, kInvalidArgument, "not a PNG: ", spng_message(err));
  HYRT_CHECK(static_cast<uint64_t>(ihdr.width) * ihdr.height <= kMaxPngPixels, kInvalidArgument,
             "PNG: image of ", ihdr.width, "x", ihdr.height,
             " pixels is too large (hyrt reads at most ", kMaxPngPixels, " pixels)");

  const bool has_alpha = ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA ||
                         ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA;
  // Palette images may carry transparency in tRNS; decode those as RGBA too.
  spng_trns trns{};
  const bool has_trns = spng_get_trns(ctx.get(), &trns) == 0;
  const int fmt = (has_alpha || has_trns) ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
  size_t size = 0;
  err = spng_decoded_image_size(ctx.get(), fmt, &size);
  HYRT_CHECK(err == 0, kInvalidArgument, "PNG: ", spng_message(err));

  DecodedPng out;
  out.image.width = static_cast<int>(ihdr.width);
  out.image.height = static_cast<int>(ihdr.height);
  out.image.channels = fmt == SPNG_FMT_RGBA8 ? 4 : 3;
  checked_resize(out.image.pixels, size,
                 str_cat("a decoded ", ihdr.width, "x", ihdr.height, " PNG"));
  err = spng_decode_image(ctx.get(), out.image.pixels.data(), size, fmt,
                          (has_alpha || has_trns) ? SPNG_DECODE_TRNS : 0);
  HYRT_CHECK(err == 0, kInvalidArgument, "PNG: ", spng_message(err));

  uint32_t n_text = 0;
  if (spng_get_text(ctx.get(), nullptr, &n_text) == 0 && n_text > 0) {
    std::vector<spng_text> chunks(n_text);
    err = spng_get_text(ctx.get(), chunks.data(), &n_text);
    HYRT_CHECK(err == 0, kInvalidArgument, "PNG text chunks: ", spng_strerror(err));
    for (const spng_text& chunk : chunks) {
      std::string value(chunk.text, chunk.length);
      if (chunk.type != SPNG_ITXT) value = latin1_to_utf8(value);  // tEXt / zTXt are Latin-1
      out.text.emplace_back(chunk.keyword, std::move(value));
    }
  }
  return out;
}

DecodedPng read_png(const std::filesystem::path& path) {
  std::error_code ec;
  HYRT_CHECK(std::filesystem::exists(path, ec), kNotFound, "PNG file not found: ", path.string());
  weights::require_regular_file(path);  // a FIFO would block, /dev/zero never end
  const uint64_t file_bytes = std::filesystem::file_size(path, ec);
  HYRT_CHECK(
      !ec && file_bytes <= kMaxPngFileBytes, kInvalidArgument, path.string(), ": ",
      ec ? ec.message()
         : str_cat(file_bytes, " bytes is too large for a PNG (limit ", kMaxPngFileBytes, ")"));
  std::ifstream in(path, std::ios::binary);
  HYRT_CHECK(in, kIo, "cannot open PNG file ", path.string());
  std::vector<uint8_t> bytes =
      checked_vector<uint8_t>(static_cast<size_t>(file_bytes), "the PNG file's contents");
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<size_t>(in.gcount()));  // a file that shrank since the size check
  HYRT_CHECK(!in.bad(), kIo, "error reading PNG file ", path.string());
  try {
    return decode_png(bytes);
  } catch (const Error& e) {
    fail(ErrorCode::kIo, path.string(), ": ", e.what());
  }
}

std::string format_a1111_parameters(const GenerationParameters& p) {
  std::string out = p.prompt;
  if (!p.negative_prompt.empty()) out += "\nNegative prompt: " + p.negative_prompt;
  std::vector<std::pair<std::string, std::string>> fields = {
      {"Steps", std::to_string(p.steps)},
      {"Sampler", p.sampler},
      {"CFG scale", shortest_number(p.cfg_scale)},
      {"Seed", std::to_string(p.seed)},
      {"Size", std::to_string(p.width) + "x" + std::to_string(p.height)},
  };
  if (!p.model_hash.empty()) fields.emplace_back("Model hash", p.model_hash);
  if (!p.model.empty()) fields.emplace_back("Model", p.model);
  fields.insert(fields.end(), p.extra.begin(), p.extra.end());
  out += '\n';
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i > 0) out += ", ";
    out += fields[i].first + ": " + quote_if_needed(fields[i].second);
  }
  return out;
}

namespace {

double lanczos3(double x) {
  auto sinc = [](double v) {
    if (v == 0.0) return 1.0;
    v *= M_PI;
    return std::sin(v) / v;
  };
  return (x > -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
}

// Pillow's precompute_coeffs (Resample.c) for one axis: per output index, the first input
// index and its fixed-point weights.
struct AxisCoeffs {
  std::vector<int> first;
  std::vector<std::vector<int32_t>> weights;
};

constexpr int kPrecisionBits = 32 - 8 - 2;

AxisCoeffs axis_coeffs(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 3.0 * filterscale;
  AxisCoeffs c;
  c.first.resize(static_cast<size_t>(out_size));
  c.weights.resize(static_cast<size_t>(out_size));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    std::vector<double> k(static_cast<size_t>(std::max(xmax, 0)));
    double ww = 0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = lanczos3((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    auto& w = c.weights[xx];
    for (double v : k) {
      const double kn = ww != 0.0 ? v / ww : 0.0;
      w.push_back(static_cast<int32_t>(kn * (1 << kPrecisionBits) + (kn < 0 ? -0.5 : 0.5)));
    }
    c.first[xx] = xmin;
  }
  return c;
}

uint8_t clip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255));
}

}  // namespace

Image8 resize_lanczos(const Image8& image, int width, int height) {
  HYRT_CHECK(width > 0 && height > 0, kInvalidArgument, "resize: bad size ", width, "x", height);
  HYRT_CHECK(
      image.width > 0 && image.height > 0 && image.channels > 0 &&
          image.pixels.size() == static_cast<size_t>(image.width) * image.height * image.channels,
      kInvalidArgument, "resize: malformed image");
  const int ch = image.channels;
  Image8 cur =
      checked_alloc("a copy of the picture to resize", image.pixels.size(), [&] { return image; });
  if (cur.width != width) {  // horizontal pass
    const AxisCoeffs c = axis_coeffs(cur.width, width);
    Image8 out{width, cur.height, ch,
               checked_vector<uint8_t>(static_cast<size_t>(width) * cur.height * ch,
                                       "the resized picture")};
    for (int y = 0; y < cur.height; ++y)
      for (int x = 0; x < width; ++x)
        for (int k = 0; k < ch; ++k) {
          int64_t ss = int64_t{1} << (kPrecisionBits - 1);
          const auto& w = c.weights[x];
          for (size_t i = 0; i < w.size(); ++i)
            ss += static_cast<int64_t>(
                      cur.pixels[(static_cast<size_t>(y) * cur.width + c.first[x] + i) * ch + k]) *
                  w[i];
          out.pixels[(static_cast<size_t>(y) * width + x) * ch + k] = clip8(ss);
        }
    cur = std::move(out);
  }
  if (cur.height != height) {  // vertical pass
    const AxisCoeffs c = axis_coeffs(cur.height, height);
    Image8 out{cur.width, height, ch,
               checked_vector<uint8_t>(static_cast<size_t>(cur.width) * height * ch,
                                       "the resized picture")};
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < cur.width; ++x)
        for (int k = 0; k < ch; ++k) {
          int64_t ss = int64_t{1} << (kPrecisionBits - 1);
          const auto& w = c.weights[y];
          for (size_t i = 0; i < w.size(); ++i)
            ss += static_cast<int64_t>(cur.pixels[((c.first[y] + i) * cur.width + x) * ch + k]) *
                  w[i];
          out.pixels[(static_cast<size_t>(y) * cur.width + x) * ch + k] = clip8(ss);
        }
    cur = std::move(out);
  }
  return cur;
}

Image8 to_grayscale(const Image8& image) {
  if (image.channels == 1) return image;
  HYRT_CHECK(image.channels >= 3, kInvalidArgument, "to_grayscale: ", image.channels, " channels");
  Image8 out{image.width, image.height, 1,
             checked_vector<uint8_t>(static_cast<size_t>(image.width) * image.height,
                                     "the grayscale mask")};
  for (size_t i = 0; i < out.pixels.size(); ++i) {
    const uint8_t* p = &image.pixels[i * image.channels];
    out.pixels[i] =
        static_cast<uint8_t>((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 0x8000u) >> 16);
  }
  return out;
}

}  // namespace hyrt::pipeline

// Judging generated images of the "shapes" world (train/shapes_data.py) by plain image
// analysis, so a test can score prompts x seeds of the bundled shapes model without a second
// neural network: what background colour, which colour and shape the objects have, and how
// many there are. Also the caption grammar of that world, to compare a verdict with a prompt.
//
// Colour names come from a Palette read from train/palette.json, the same file the Python
// generator draws with (passed in, not embedded: the CLI finds it with find_palette() or
// takes --palette; tests read it from the source tree).
//
// Everything here is a pure function of its arguments: thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/image_io.h"

namespace hyrt::eval {

struct PaletteColour {
  std::string name;
  std::array<uint8_t, 3> rgb{};
};
using Palette = std::vector<PaletteColour>;

// {"colours": {"red": [220, 30, 30], ...}} -> the colours in file order. Throws
// kInvalidArgument for malformed JSON, a value that is not three 0-255 integers, or no colours.
Palette parse_palette(std::string_view json_text);
// parse_palette() of a file; kNotFound / kIo naming the path.
Palette load_palette(const std::filesystem::path& path);
// The first `train/palette.json` found in `start` or one of its ancestors (a checkout holds
// it at its root, and build folders live inside the checkout); nullopt if none.
std::optional<std::filesystem::path> find_palette(const std::filesystem::path& start);

// CIE76 colour difference between two sRGB colours (CIELAB, D65): ~2.3 is "just noticeable";
// the palette's colours are >= 40 apart.
double delta_e(const std::array<uint8_t, 3>& a, const std::array<uint8_t, 3>& b);

// One connected object found in the image.
struct ShapeComponent {
  std::string colour;                  // nearest palette colour to the object's core pixels
  std::string shape;                   // "circle", "square" or "triangle"
  int area = 0;                        // pixels in the object's mask
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // bounding box, inclusive
  // Features the shape is read from, each computed on soft coverage (0..1 per pixel, how far
  // a pixel lies from the background towards the object colour) so blur barely moves them:
  double fill = 0;          // coverage / bounding-box area: square 1, circle pi/4, triangle 1/2
  double corner_fill = 0;   // mean coverage of the four corner quarter-boxes
  double taper = 0;         // row width at 1/4 of the height / at 3/4: apex-up triangle 1/3, else 1
  double shape_margin = 0;  // 1 - best/second-best prototype distance: 0 ambiguous, 1 clear
};

struct ShapeVerdict {
  std::string background;  // palette name of the border's dominant colour
  std::string colour;      // the colour covering the most object area ("" if no object)
  std::string shape;       // majority shape among the counted objects ("" if none)
  int count = 0;           // significant objects of `colour`
  double confidence = 0;   // mean shape_margin of the counted objects, times their agreement
  std::vector<ShapeComponent> components;  // all significant objects, largest first
  int other_objects = 0;                   // significant objects not counted (other colours)
};

struct CheckOptions {
  // A pixel is foreground when its CIE76 distance to the background exceeds this. Far below
  // the palette's spacing, far above the noise a VAE leaves on a flat area.
  double mask_delta_e = 20.0;
  // Objects smaller than this fraction of the image are specks and are ignored.
  double min_area_fraction = 0.004;
  // An object of the dominant colour counts only if it has at least this fraction of the
  // largest such object's area (a VAE's stray blob next to a shape is not a second shape).
  double min_relative_area = 0.2;
};

// Analyses an RGB or RGBA image (alpha ignored). Throws kInvalidArgument for an empty image,
// an empty palette, or channels other than 3 / 4.
ShapeVerdict check_shapes(const pipeline::Image8& image, const Palette& palette,
                          const CheckOptions& options = {});

// What a caption of the shapes grammar asks for (see train/shapes_data.py). Fields a caption
// does not state stay empty / nullopt.
struct CaptionSpec {
  std::optional<int> count;  // "a"/"an"/"one" 1, "two" 2, "three" 3; singular noun alone: 1
  std::string size;          // "small" | "large"
  std::string colour;
  std::string shape;  // singular form
  std::string background;
  std::string position;  // e.g. "top left", "center"
};
// Parses e.g. "two small green squares on a yellow background". Case-insensitive; words
// outside the grammar are skipped. Throws kInvalidArgument if it names no shape or no colour.
CaptionSpec parse_caption(std::string_view caption, const Palette& palette);

struct CaptionMatch {
  bool colour = false, shape = false, count = false, background = false;
  bool all() const { return colour && shape && count && background; }
};
// Compares a verdict with what a caption asks for; a field the caption leaves open matches
// (a plural without a number, "green squares", asks for two or more).
CaptionMatch match_caption(const ShapeVerdict& verdict, const CaptionSpec& spec);

}  // namespace hyrt::eval

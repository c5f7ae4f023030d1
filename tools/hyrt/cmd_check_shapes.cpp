// `hyrt check-shapes IMAGE.png... [--expect CAPTION] [--palette FILE] [--details]`: what a
// picture of the shapes world shows (background, colour, shape, count), judged by
// eval/shape_check.h, and with --expect whether that is what the caption asked for. Any
// mismatch makes the command fail, so scripts can score prompts x seeds by exit status.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include "commands.h"
#include "core/error.h"
#include "eval/shape_check.h"
#include "pipeline/image_io.h"

namespace hyrt::cli {
namespace {

struct CheckShapesOptions {
  std::vector<std::string> images;
  std::string expect;
  std::string palette;
  bool details = false;
};

// --palette, else train/palette.json above the working folder, else above the executable
// (a build folder inside the checkout).
eval::Palette resolve_palette(const std::string& flag) {
  if (!flag.empty()) return eval::load_palette(flag);
  auto found = eval::find_palette(std::filesystem::current_path());
  if (!found) {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) found = eval::find_palette(exe.parent_path());
  }
  HYRT_CHECK(found, kNotFound,
             "no train/palette.json above the working folder or the hyrt executable; pass "
             "--palette");
  return eval::load_palette(*found);
}

void run_check_shapes(const CheckShapesOptions& opt) {
  const eval::Palette palette = resolve_palette(opt.palette);
  std::optional<eval::CaptionSpec> spec;
  if (!opt.expect.empty()) spec = eval::parse_caption(opt.expect, palette);

  int mismatches = 0;
  for (const auto& path : opt.images) {
    const auto verdict = eval::check_shapes(pipeline::read_png(path).image, palette);
    std::printf("%s: %d %s %s on %s (confidence %.2f%s)", path.c_str(), verdict.count,
                verdict.colour.empty() ? "-" : verdict.colour.c_str(),
                verdict.shape.empty() ? "-" : verdict.shape.c_str(), verdict.background.c_str(),
                verdict.confidence,
                verdict.other_objects
                    ? str_cat(", ", verdict.other_objects, " other object(s)").c_str()
                    : "");
    if (spec) {
      const auto m = eval::match_caption(verdict, *spec);
      if (m.all()) {
        std::printf("  match\n");
      } else {
        ++mismatches;
        std::printf("  MISMATCH:%s%s%s%s\n", m.count ? "" : " count", m.colour ? "" : " colour",
                    m.shape ? "" : " shape", m.background ? "" : " background");
      }
    } else {
      std::printf("\n");
    }
    if (opt.details)
      for (const auto& c : verdict.components)
        std::printf(
            "    %-8s %-6s area %4d box (%d,%d)-(%d,%d) fill %.3f corners %.3f taper %.3f "
            "margin %.2f\n",
            c.shape.c_str(), c.colour.c_str(), c.area, c.x0, c.y0, c.x1, c.y1, c.fill,
            c.corner_fill, c.taper, c.shape_margin);
  }
  if (spec) {
    std::printf("%zu of %zu images match \"%s\"\n", opt.images.size() - mismatches,
                opt.images.size(), opt.expect.c_str());
    HYRT_CHECK(mismatches == 0, kInvalidArgument, mismatches, " image(s) do not match");
  }
}

CommandRegistrar reg(60, [](CLI::App& app) {
  auto opt = std::make_shared<CheckShapesOptions>();
  auto* c = app.add_subcommand("check-shapes",
                               "Judge shapes-world images: background, colour, shape and count");
  c->add_option("IMAGE", opt->images, "PNG files")->required();
  c->add_option("--expect", opt->expect,
                "A caption (\"two small green squares on a yellow background\"): report "
                "whether each image matches its colour, shape, count and background; fail "
                "if any does not");
  c->add_option("--palette", opt->palette,
                "Colour palette JSON (default: train/palette.json found above the working "
                "folder or the hyrt executable)");
  c->add_flag("--details", opt->details, "Print every object's features");
  c->callback([opt] { run_check_shapes(*opt); });
});

}  // namespace
}  // namespace hyrt::cli

#include "eval/shape_check.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "weights/json_text.h"

namespace hyrt::eval {
namespace {

using Rgb = std::array<uint8_t, 3>;
struct Lab {
  double l, a, b;
};

double srgb_to_linear(int v) {
  // A table: called per pixel, and pow() dominates otherwise.
  static const std::array<double, 256> table = [] {
    std::array<double, 256> t{};
    for (int i = 0; i < 256; ++i) {
      const double c = i / 255.0;
      t[i] = c <= 0.04045 ? c / 12.92 : std::pow((c + 0.055) / 1.055, 2.4);
    }
    return t;
  }();
  return table[v];
}

Lab to_lab(const Rgb& c) {
  const double r = srgb_to_linear(c[0]), g = srgb_to_linear(c[1]), b = srgb_to_linear(c[2]);
  const double x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
  const double y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  const double z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
  auto f = [](double t) { return t > 0.008856 ? std::cbrt(t) : 7.787 * t + 16.0 / 116.0; };
  return {116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z))};
}

double lab_distance(const Lab& p, const Lab& q) {
  return std::sqrt((p.l - q.l) * (p.l - q.l) + (p.a - q.a) * (p.a - q.a) +
                   (p.b - q.b) * (p.b - q.b));
}

const PaletteColour& nearest(const Palette& palette, const Rgb& c) {
  const Lab lab = to_lab(c);
  const PaletteColour* best = &palette.front();
  double best_d = 1e300;
  for (const auto& p : palette) {
    const double d = lab_distance(lab, to_lab(p.rgb));
    if (d < best_d) best_d = d, best = &p;
  }
  return *best;
}

// Per-channel median: robust to the blended pixels along an object's edge.
Rgb median_rgb(std::vector<Rgb> px) {
  Rgb m{};
  for (int ch = 0; ch < 3; ++ch) {
    auto mid = px.begin() + px.size() / 2;
    std::nth_element(px.begin(), mid, px.end(),
                     [ch](const Rgb& a, const Rgb& b) { return a[ch] < b[ch]; });
    m[ch] = (*mid)[ch];
  }
  return m;
}

struct Pixels {
  int w, h;
  std::vector<Rgb> rgb;
  std::vector<Lab> lab;
  const Rgb& at(int x, int y) const { return rgb[static_cast<size_t>(y) * w + x]; }
};

// The dominant colour of a 2-pixel border ring: the border pixel with the most others close
// to it (objects touching the edge cover a minority of the ring), averaged with those others.
Rgb border_colour(const Pixels& im) {
  std::vector<size_t> ring;
  for (int y = 0; y < im.h; ++y)
    for (int x = 0; x < im.w; ++x)
      if (x < 2 || y < 2 || x >= im.w - 2 || y >= im.h - 2)
        ring.push_back(static_cast<size_t>(y) * im.w + x);
  // Quadratic in the ring's size: keep at most ~600 samples for large images.
  const size_t stride = std::max<size_t>(1, ring.size() / 600);
  std::vector<size_t> s;
  for (size_t i = 0; i < ring.size(); i += stride)
    s.push_back(ring[i]);
  constexpr double kSame = 12.0;
  size_t best = 0, best_n = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    size_t n = 0;
    for (size_t j = 0; j < s.size(); ++j)
      n += lab_distance(im.lab[s[i]], im.lab[s[j]]) < kSame;
    if (n > best_n) best_n = n, best = i;
  }
  std::array<double, 3> sum{};
  for (size_t j = 0; j < s.size(); ++j)
    if (lab_distance(im.lab[s[best]], im.lab[s[j]]) < kSame)
      for (int ch = 0; ch < 3; ++ch)
        sum[ch] += im.rgb[s[j]][ch];
  Rgb c{};
  for (int ch = 0; ch < 3; ++ch)
    c[ch] = static_cast<uint8_t>(std::lround(sum[ch] / best_n));
  return c;
}

// An object's colour: the median of the half of its pixels farthest from the background,
// away from the edge pixels a blur blends with it.
Rgb core_colour(const Pixels& im, const std::vector<int>& pix, const Lab& bg_lab) {
  std::vector<std::pair<double, int>> by_dist;
  for (int p : pix)
    by_dist.emplace_back(lab_distance(im.lab[p], bg_lab), p);
  std::sort(by_dist.begin(), by_dist.end(), std::greater<>());
  std::vector<Rgb> core;
  for (size_t i = 0; i < std::max<size_t>(1, by_dist.size() / 2); ++i)
    core.push_back(im.rgb[by_dist[i].second]);
  return median_rgb(std::move(core));
}

// Coverage of pixel `p` by an object of colour `fg` on `bg`: its projection onto the
// bg->fg segment in RGB, where a blur is linear, so a blurred edge keeps its coverage.
double project(const Rgb& p, const Rgb& bg, const Rgb& fg) {
  double t = 0, dd = 0;
  for (int ch = 0; ch < 3; ++ch) {
    const double d = double(fg[ch]) - bg[ch];
    t += (double(p[ch]) - bg[ch]) * d;
    dd += d * d;
  }
  return t / std::max(dd, 1.0);
}

// 3x3 majority vote: isolated noisy pixels vanish, shapes keep their outline.
std::vector<uint8_t> majority(const std::vector<uint8_t>& raw, int w, int h) {
  std::vector<uint8_t> out(raw.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      int votes = 0, cells = 0;
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          const int xx = x + dx, yy = y + dy;
          if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
          ++cells;
          votes += raw[size_t(yy) * w + xx];
        }
      out[size_t(y) * w + x] = 2 * votes > cells;
    }
  return out;
}

// 4-connected components of `mask` (values > 0): labels 1..n written to `label`, returns the
// pixel lists. 4-connectivity so two shapes whose blurred edges meet diagonally stay apart.
std::vector<std::vector<int>> components(const std::vector<uint8_t>& mask, int w, int h,
                                         std::vector<int>& label) {
  label.assign(mask.size(), 0);
  std::vector<std::vector<int>> out;
  std::vector<int> stack;
  for (int start = 0; start < w * h; ++start) {
    if (!mask[start] || label[start]) continue;
    out.emplace_back();
    const int id = static_cast<int>(out.size());
    stack.assign(1, start);
    label[start] = id;
    while (!stack.empty()) {
      const int p = stack.back();
      stack.pop_back();
      out.back().push_back(p);
      const int x = p % w, y = p / w;
      const int nb[4][2] = {{x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}};
      for (const auto& [nx, ny] : nb) {
        if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
        const int q = ny * w + nx;
        if (mask[q] && !label[q]) label[q] = id, stack.push_back(q);
      }
    }
  }
  return out;
}

struct Prototype {
  const char* name;
  double fill, corner, taper;
};
// Ideal features of the generator's shapes (analytic: a disc covers 31.5% of each corner
// quarter-box and is as wide at 1/4 as at 3/4 of its height; an apex-up triangle covers 0% of
// the top corner boxes, 75% of the bottom ones, and is a third as wide at 1/4 as at 3/4).
constexpr Prototype kPrototypes[] = {
    {"square", 1.0, 1.0, 1.0},
    {"circle", M_PI / 4, 0.315, 1.0},
    {"triangle", 0.5, 0.375, 1.0 / 3},
};

// Measures one object: its colour from the core pixels, then soft coverage t in [0, 1] per
// pixel (projection of the pixel onto the background->object colour segment, in RGB where a
// blur is linear, so a blurred edge keeps the coverage it had).
ShapeComponent measure(const Pixels& im, const std::vector<int>& pix, const std::vector<int>& label,
                       int id, const Rgb& bg, const Palette& palette) {
  const Rgb fg = core_colour(im, pix, to_lab(bg));
  ShapeComponent c;
  c.colour = nearest(palette, fg).name;
  c.area = static_cast<int>(pix.size());

  auto coverage = [&](int x, int y) {
    if (x < 0 || y < 0 || x >= im.w || y >= im.h) return 0.0;
    const int q = y * im.w + x;
    if (label[q] && label[q] != id) return 0.0;  // another object's pixels
    // Slightly beyond [0, 1] so zero-mean noise on flat areas mostly cancels out.
    return std::clamp(project(im.rgb[q], bg, fg), -0.25, 1.25);
  };

  // Bounding box where coverage passes one half: a blurred straight edge stays put there.
  int x0 = im.w, y0 = im.h, x1 = -1, y1 = -1;
  int bx0 = im.w, by0 = im.h, bx1 = -1, by1 = -1;
  for (int p : pix) {
    const int x = p % im.w, y = p / im.w;
    bx0 = std::min(bx0, x), by0 = std::min(by0, y), bx1 = std::max(bx1, x), by1 = std::max(by1, y);
  }
  for (int y = std::max(0, by0 - 2); y <= std::min(im.h - 1, by1 + 2); ++y)
    for (int x = std::max(0, bx0 - 2); x <= std::min(im.w - 1, bx1 + 2); ++x)
      if (coverage(x, y) > 0.5)
        x0 = std::min(x0, x), y0 = std::min(y0, y), x1 = std::max(x1, x), y1 = std::max(y1, y);
  if (x1 < 0) x0 = bx0, y0 = by0, x1 = bx1, y1 = by1;
  c.x0 = x0, c.y0 = y0, c.x1 = x1, c.y1 = y1;
  const int bw = x1 - x0 + 1, bh = y1 - y0 + 1;

  // Coverage that a blur pushed just outside the box still belongs to the object: sum a
  // 3-pixel ring too. Row sums are widths, which a blur keeps (it only moves mass along the
  // row), so the taper of a triangle survives where its thin apex fades.
  constexpr int kRing = 3;
  double total = 0;
  std::vector<double> row(bh + 2 * kRing, 0.0);
  for (int y = y0 - kRing; y <= y1 + kRing; ++y)
    for (int x = x0 - kRing; x <= x1 + kRing; ++x) {
      const double t = coverage(x, y);
      total += t;
      row[y - y0 + kRing] += t;
    }
  auto width_at = [&](double frac) {  // mean row sum over the middle third of a band
    const int a = static_cast<int>(std::floor(frac * bh - bh / 12.0));
    const int b = std::max(a, static_cast<int>(std::ceil(frac * bh + bh / 12.0)) - 1);
    double s = 0;
    for (int y = a; y <= b; ++y)
      s += row[std::clamp(y, 0, bh - 1) + kRing];
    return s / (b - a + 1);
  };
  const int cw = std::max(1, static_cast<int>(std::lround(bw / 4.0)));
  const int ch = std::max(1, static_cast<int>(std::lround(bh / 4.0)));
  double corner = 0;
  for (int y = 0; y < ch; ++y)
    for (int x = 0; x < cw; ++x)
      corner += std::clamp(coverage(x0 + x, y0 + y), 0.0, 1.0) +
                std::clamp(coverage(x1 - x, y0 + y), 0.0, 1.0) +
                std::clamp(coverage(x0 + x, y1 - y), 0.0, 1.0) +
                std::clamp(coverage(x1 - x, y1 - y), 0.0, 1.0);
  c.fill = total / (double(bw) * bh);
  c.corner_fill = corner / (4.0 * cw * ch);
  const double bottom = width_at(0.75);
  c.taper = bottom > 0 ? std::clamp(width_at(0.25) / bottom, 0.0, 2.0) : 1.0;

  // Nearest prototype, each feature scaled by how far it may drift under blur and noise.
  double best = 1e300, second = 1e300;
  for (const auto& pr : kPrototypes) {
    const double df = (c.fill - pr.fill) / 0.12, dc = (c.corner_fill - pr.corner) / 0.25,
                 dt = (c.taper - pr.taper) / 0.2;
    const double dist = std::sqrt(df * df + dc * dc + dt * dt);
    if (dist < best)
      second = best, best = dist, c.shape = pr.name;
    else if (dist < second)
      second = dist;
  }
  c.shape_margin = second > 0 ? 1.0 - best / second : 0.0;
  return c;
}

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : text) {
    if (std::isalpha(static_cast<unsigned char>(ch))) {
      cur += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace

Palette parse_palette(std::string_view json_text) {
  const nlohmann::ordered_json j = weights::parse_json_bounded<nlohmann::ordered_json>(
      json_text, "palette", ErrorCode::kInvalidArgument);
  HYRT_CHECK(j.is_object() && j.contains("colours") && j["colours"].is_object(), kInvalidArgument,
             "palette: expected {\"colours\": {name: [r, g, b], ...}}");
  Palette p;
  for (const auto& [name, v] : j["colours"].items()) {
    HYRT_CHECK(v.is_array() && v.size() == 3, kInvalidArgument, "palette: ", name,
               " is not [r, g, b]");
    PaletteColour c{name, {}};
    for (int ch = 0; ch < 3; ++ch) {
      HYRT_CHECK(v[ch].is_number_integer() && v[ch] >= 0 && v[ch] <= 255, kInvalidArgument,
                 "palette: ", name, " has a component outside 0..255");
      c.rgb[ch] = static_cast<uint8_t>(v[ch].get<int>());
    }
    p.push_back(std::move(c));
  }
  HYRT_CHECK(!p.empty(), kInvalidArgument, "palette: no colours");
  return p;
}

Palette load_palette(const std::filesystem::path& path) {
  std::error_code ec;
  HYRT_CHECK(std::filesystem::exists(path, ec), kNotFound, "palette not found: ", path.string());
  std::ifstream in(path);
  HYRT_CHECK(in, kIo, "cannot read ", path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return parse_palette(ss.str());
  } catch (const Error& e) {
    fail(ErrorCode::kInvalidArgument, path.string(), ": ", e.what());
  }
}

std::optional<std::filesystem::path> find_palette(const std::filesystem::path& start) {
  std::error_code ec;
  auto dir = std::filesystem::absolute(start, ec);
  if (ec) return std::nullopt;
  for (;;) {
    const auto candidate = dir / "train" / "palette.json";
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate;
    if (!dir.has_parent_path() || dir.parent_path() == dir) return std::nullopt;
    dir = dir.parent_path();
  }
}

double delta_e(const std::array<uint8_t, 3>& a, const std::array<uint8_t, 3>& b) {
  return lab_distance(to_lab(a), to_lab(b));
}

ShapeVerdict check_shapes(const pipeline::Image8& image, const Palette& palette,
                          const CheckOptions& options) {
  HYRT_CHECK(image.width > 0 && image.height > 0, kInvalidArgument, "check_shapes: empty image");
  HYRT_CHECK(image.channels == 3 || image.channels == 4, kInvalidArgument,
             "check_shapes: expected RGB or RGBA, got ", image.channels, " channels");
  HYRT_CHECK(image.pixels.size() == size_t(image.width) * image.height * image.channels,
             kInvalidArgument, "check_shapes: pixel buffer does not match the size");
  HYRT_CHECK(!palette.empty(), kInvalidArgument, "check_shapes: empty palette");

  Pixels im{image.width, image.height, {}, {}};
  const size_t n = size_t(im.w) * im.h;
  im.rgb.resize(n);
  im.lab.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &image.pixels[i * image.channels];
    im.rgb[i] = {p[0], p[1], p[2]};
    im.lab[i] = to_lab(im.rgb[i]);
  }

  ShapeVerdict v;
  const Rgb bg = border_colour(im);
  v.background = nearest(palette, bg).name;
  const Lab bg_lab = to_lab(bg);

  // Foreground: far from the background, cleaned by a majority vote. Then, per region, only
  // the pixels more than half covered by the region's own colour: the faint bridge a blur
  // lays between two close shapes falls below one half, so they separate again.
  std::vector<uint8_t> raw(n);
  for (size_t i = 0; i < n; ++i)
    raw[i] = lab_distance(im.lab[i], bg_lab) > options.mask_delta_e;
  std::vector<int> label;
  std::vector<uint8_t> covered(n, 0);
  for (const auto& region : components(majority(raw, im.w, im.h), im.w, im.h, label)) {
    const Rgb fg = core_colour(im, region, bg_lab);
    for (int p : region)
      covered[p] = project(im.rgb[p], bg, fg) > 0.5;
  }
  auto comps = components(majority(covered, im.w, im.h), im.w, im.h, label);
  const double min_area = options.min_area_fraction * double(n);
  std::vector<std::pair<ShapeComponent, int>> found;
  for (size_t k = 0; k < comps.size(); ++k)
    if (double(comps[k].size()) >= min_area)
      found.emplace_back(measure(im, comps[k], label, int(k) + 1, bg, palette), 0);
  std::stable_sort(found.begin(), found.end(),
                   [](const auto& a, const auto& b) { return a.first.area > b.first.area; });
  for (auto& f : found)
    v.components.push_back(std::move(f.first));
  if (v.components.empty()) return v;

  std::map<std::string, int> area_by_colour;
  for (const auto& c : v.components)
    area_by_colour[c.colour] += c.area;
  v.colour = std::max_element(area_by_colour.begin(), area_by_colour.end(),
                              [](const auto& a, const auto& b) { return a.second < b.second; })
                 ->first;
  int largest = 0;
  for (const auto& c : v.components)
    if (c.colour == v.colour) largest = std::max(largest, c.area);
  std::map<std::string, int> votes;
  double margin = 0;
  for (const auto& c : v.components) {
    if (c.colour == v.colour && c.area >= options.min_relative_area * largest) {
      ++v.count;
      ++votes[c.shape];
      margin += c.shape_margin;
    } else {
      ++v.other_objects;
    }
  }
  // Majority shape; a tie goes to the largest object's (components are largest first).
  int best_votes = 0;
  for (const auto& c : v.components)
    if (c.colour == v.colour && votes[c.shape] > best_votes)
      best_votes = votes[c.shape], v.shape = c.shape;
  v.confidence = margin / v.count * best_votes / v.count;
  return v;
}

CaptionSpec parse_caption(std::string_view caption, const Palette& palette) {
  static const std::map<std::string, int> kNumbers = {
      {"a", 1}, {"an", 1}, {"one", 1}, {"two", 2}, {"three", 3}};
  static const char* kShapes[] = {"circle", "square", "triangle"};
  static const char* kPositions[] = {"top", "bottom", "left", "right", "center"};
  auto is_colour = [&](const std::string& w) {
    return std::any_of(palette.begin(), palette.end(),
                       [&](const PaletteColour& c) { return c.name == w; });
  };

  CaptionSpec s;
  bool plural = false;
  const auto w = words(caption);
  for (size_t i = 0; i < w.size(); ++i) {
    const std::string& t = w[i];
    if (auto it = kNumbers.find(t); it != kNumbers.end() && !s.count && s.shape.empty()) {
      s.count = it->second;
    } else if (t == "small" || t == "large") {
      s.size = t;
    } else if (is_colour(t)) {
      // The colour right before "background" is the background's; the first other one is
      // the objects'.
      if (i + 1 < w.size() && w[i + 1] == "background")
        s.background = t;
      else if (s.colour.empty())
        s.colour = t;
    } else if (t == "centre" || t == "middle" ||
               std::find(std::begin(kPositions), std::end(kPositions), t) != std::end(kPositions)) {
      s.position += (s.position.empty() ? "" : " ") +
                    (t == "centre" || t == "middle" ? std::string("center") : t);
    } else if (s.shape.empty()) {
      for (const char* shape : kShapes)
        if (t == shape || t == std::string(shape) + "s") {
          s.shape = shape;
          plural = t.back() == 's';
        }
    }
  }
  HYRT_CHECK(!s.shape.empty(), kInvalidArgument,
             "caption names no shape (circle, square, "
             "triangle): \"",
             caption, "\"");
  HYRT_CHECK(!s.colour.empty(), kInvalidArgument, "caption names no palette colour: \"", caption,
             "\"");
  if (!s.count && !plural) s.count = 1;  // "red circle": one; "red circles": unknown
  return s;
}

CaptionMatch match_caption(const ShapeVerdict& verdict, const CaptionSpec& spec) {
  CaptionMatch m;
  m.colour = spec.colour.empty() || spec.colour == verdict.colour;
  m.shape = spec.shape.empty() || spec.shape == verdict.shape;
  m.count = spec.count ? *spec.count == verdict.count : verdict.count >= 2;
  m.background = spec.background.empty() || spec.background == verdict.background;
  return m;
}

}  // namespace hyrt::eval

#include "weights/lora.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/half.h"
#include "core/parallel.h"

namespace hyrt::weights {
namespace {

// Calls f(block, k0, nb) for values [first, first + n) of `v` converted to f32 in blocks of
// kF32Block (block[i] is value first + k0 + i; f may change it): passes over a LoRA's values that
// stay in L1 instead of going through whole f32 copies.
constexpr int64_t kF32Block = 2048;
template <class F>
void in_f32_blocks(const TensorView& v, int64_t first, int64_t n, F&& f) {
  float block[kF32Block];
  const size_t elem = dtype_size(v.dtype);
  const auto* from = static_cast<const uint8_t*>(v.data) + static_cast<size_t>(first) * elem;
  for (int64_t k0 = 0; k0 < n; k0 += kF32Block) {
    const int64_t nb = std::min(kF32Block, n - k0);
    convert_to_f32(v.dtype, from + static_cast<size_t>(k0) * elem, block, static_cast<size_t>(nb));
    f(block, k0, nb);
  }
}

bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}
bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

std::string underscored(std::string_view dotted) {
  std::string s(dotted);
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

std::string shape_text(const Shape& s) {
  return s.to_string();
}

// What one key of a LoRA file is.
enum class Part { kDown, kUp, kAlpha };
struct KeyPart {
  std::string module;
  Part part;
};

// Adapter kinds hyrt does not run, by a marker in their keys.
std::optional<std::string_view> unsupported_kind(std::string_view key) {
  static const std::pair<std::string_view, std::string_view> kinds[] = {
      {"hada_w", "LoHa (hada_*)"},
      {"lokr_w", "LoKr (lokr_*)"},
      {"dora_scale", "DoRA (dora_scale)"},
      {"lora_mid", "LoCon with a Tucker mid (lora_mid)"}};
  for (const auto& [marker, name] : kinds)
    if (key.find(marker) != std::string_view::npos) return name;
  if (ends_with(key, ".diff") || ends_with(key, ".diff_b"))
    return "a full weight difference (.diff)";
  return std::nullopt;
}

std::optional<KeyPart> parse_key(std::string_view key) {
  static const std::pair<std::string_view, Part> suffixes[] = {{".lora_down.weight", Part::kDown},
                                                               {".lora_up.weight", Part::kUp},
                                                               {".lora_A.weight", Part::kDown},
                                                               {".lora_B.weight", Part::kUp},
                                                               {".lora.down.weight", Part::kDown},
                                                               {".lora.up.weight", Part::kUp},
                                                               {".alpha", Part::kAlpha}};
  for (const auto& [suffix, part] : suffixes) {
    if (!ends_with(key, suffix)) continue;
    std::string module(key.substr(0, key.size() - suffix.size()));
    // diffusers' attention-processor names: "<attn>.processor.to_q_lora" -> "<attn>.to_q",
    // "to_out_lora" -> "to_out.0".
    if (const size_t p = module.find(".processor."); p != std::string::npos) {
      std::string proj = module.substr(p + 11);
      if (!ends_with(proj, "_lora")) return std::nullopt;
      proj.resize(proj.size() - 5);
      if (proj == "to_out") proj = "to_out.0";
      module = module.substr(0, p) + "." + proj;
    }
    return KeyPart{std::move(module), part};
  }
  return std::nullopt;
}

float scalar_value(const TensorView& v, const std::string& what) {
  HYRT_CHECK(v.shape.numel() == 1, kInvalidModel, what, " should be a scalar but is ",
             shape_text(v.shape));
  float out = 0;
  convert_to_f32(v.dtype, v.data, &out, 1);
  return out;
}

bool is_float(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16;
}

}  // namespace

// ---- LoraFile ----

std::shared_ptr<const LoraFile> LoraFile::open(const std::filesystem::path& path) {
  HYRT_CHECK(std::filesystem::is_regular_file(path), kIo, "cannot read the LoRA file '",
             path.string(), "': ", std::filesystem::exists(path) ? "not a file" : "no such file");
  return from_file(SafetensorsFile::open(path), path.string());
}

std::shared_ptr<const LoraFile> LoraFile::from_file(std::unique_ptr<SafetensorsFile> file,
                                                    std::string label) {
  std::shared_ptr<LoraFile> lora(new LoraFile());
  lora->label_ = std::move(label);
  const std::string& name = lora->label_;
  struct Parts {
    std::optional<TensorView> down, up;
    std::optional<float> alpha;
  };
  std::map<std::string, Parts> parts;
  bool kohya = false, peft = false;
  for (const TensorInfo& t : file->tensors()) {
    if (auto kind = unsupported_kind(t.name))
      fail(ErrorCode::kInvalidModel, "the LoRA file '", name, "' is ", *kind,
           ", an adapter kind hyrt does not run (key '", t.name, "')");
    std::optional<KeyPart> kp = parse_key(t.name);
    HYRT_CHECK(kp, kInvalidModel, "'", name, "' is not a LoRA file hyrt reads: key '", t.name,
               "' is none of .lora_down/.lora_up/.alpha (kohya), .lora_A/.lora_B (PEFT) or "
               ".lora.down/.lora.up (diffusers)");
    kohya |= starts_with(t.name, "lora_");
    peft |= t.name.find(".lora_A.") != std::string::npos ||
            t.name.find(".lora_B.") != std::string::npos;
    const TensorView v = file->view(t);
    HYRT_CHECK(is_float(v.dtype), kInvalidModel, "LoRA '", name, "': tensor '", t.name, "' is ",
               dtype_name(v.dtype), ", not a float type");
    Parts& p = parts[kp->module];
    switch (kp->part) {
      case Part::kDown:
        p.down = v;
        break;
      case Part::kUp:
        p.up = v;
        break;
      case Part::kAlpha:
        p.alpha = scalar_value(v, str_cat("LoRA '", name, "': '", t.name, "'"));
        break;
    }
  }
  HYRT_CHECK(!parts.empty(), kInvalidModel, "the LoRA file '", name, "' holds no tensors");
  for (auto& [module, p] : parts) {
    HYRT_CHECK(p.down && p.up, kInvalidModel, "LoRA '", name, "': module '", module, "' has ",
               p.down ? "a down but no up" : (p.up ? "an up but no down" : "only an alpha"),
               " weight");
    const Shape &d = p.down->shape, &u = p.up->shape;
    HYRT_CHECK((d.rank() == 2 || d.rank() == 4) && (u.rank() == 2 || u.rank() == 4) && d[0] > 0 &&
                   u[1] == d[0] && (u.rank() == 2 || (u[2] == 1 && u[3] == 1)),
               kInvalidModel, "LoRA '", name, "': module '", module, "' has down ", shape_text(d),
               " and up ", shape_text(u),
               ": expected down [rank, in(, kh, kw)] and up [out, rank(, 1, 1)]");
    if (p.alpha)
      HYRT_CHECK(std::isfinite(*p.alpha), kInvalidModel, "LoRA '", name, "': module '", module,
                 "' has a non-finite alpha");
    lora->modules_.push_back(LoraModule{module, *p.down, *p.up, p.alpha});
  }
  // Each module's largest magnitudes (LoraModule::down_max_abs), one module per task.
  const auto max_abs = [](const TensorView& v) {
    float m = 0.0f;
    bool finite = true;
    in_f32_blocks(v, 0, v.numel(), [&](const float* block, int64_t, int64_t nb) {
      int bad = 0;
      for (int64_t k = 0; k < nb; ++k) {
        bad |= !(std::abs(block[k]) <= std::numeric_limits<float>::max());  // inf and NaN
        m = std::max(m, std::abs(block[k]));
      }
      finite &= bad == 0;
    });
    return finite ? m : std::numeric_limits<float>::infinity();
  };
  parallel_for(static_cast<int64_t>(lora->modules_.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      LoraModule& m = lora->modules_[static_cast<size_t>(i)];
      m.down_max_abs = max_abs(m.down);
      m.up_max_abs = max_abs(m.up);
    }
  });
  lora->format_ = kohya ? "kohya" : (peft ? "peft" : "diffusers");
  lora->file_ = std::move(file);
  return lora;
}

size_t LoraFile::bytes() const {
  size_t n = 0;
  for (const LoraModule& m : modules_)
    n += m.down.bytes() + m.up.bytes();
  return n;
}

// ---- LoraTargetIndex ----

LoraTargetIndex::LoraTargetIndex(std::vector<LoraTarget> targets, const LdmStructure& structure,
                                 bool sdxl_naming)
    : targets_(std::move(targets)) {
  for (size_t i = 0; i < targets_.size(); ++i) {
    const LoraTarget& t = targets_[i];
    const std::string comp(component_name(t.component));
    const std::string rest = t.module.substr(comp.size() + 1);
    by_alias_.emplace(t.module, i);  // PEFT / diffusers: the canonical module name
    switch (t.component) {
      case Component::kUNet: {
        by_alias_.emplace("lora_unet_" + underscored(rest), i);
        // kohya's SGM-named UNet (SDXL): the LDM key of the weight.
        try {
          std::string k = ldm_key_for(t.module + ".weight", structure);
          const std::string_view prefix = "model.diffusion_model.", suffix = ".weight";
          if (starts_with(k, prefix) && ends_with(k, suffix))
            by_alias_.emplace(
                "lora_unet_" + underscored(std::string_view(k).substr(
                                   prefix.size(), k.size() - prefix.size() - suffix.size())),
                i);
        } catch (const Error&) {
          // no LDM counterpart: only the diffusers name applies
        }
        break;
      }
      case Component::kTextEncoder:
        by_alias_.emplace((sdxl_naming ? "lora_te1_" : "lora_te_") + underscored(rest), i);
        break;
      case Component::kTextEncoder2:
        by_alias_.emplace("lora_te2_" + underscored(rest), i);
        break;
      case Component::kVae:
        break;
    }
  }
}

const LoraTarget* LoraTargetIndex::find(std::string_view key) const {
  auto it = by_alias_.find(key);
  return it == by_alias_.end() ? nullptr : &targets_[it->second];
}

// ---- LoraWeights ----

std::string lora_down_name(std::string_view module) {
  return std::string(module) + ".lora_side.down";
}
std::string lora_up_name(std::string_view module) {
  return std::string(module) + ".lora_side.up";
}
bool is_lora_up_name(std::string_view weight_name) {
  return ends_with(weight_name, ".lora_side.up");
}
bool is_lora_down_name(std::string_view weight_name) {
  return ends_with(weight_name, ".lora_side.down");
}

LoraWeights::LoraWeights(const WeightSource& base, std::span<const LoraUse> loras,
                         const LoraTargetIndex& targets, DType adapter_dtype,
                         std::shared_ptr<LoraStorage> storage)
    : base_(base) {
  HYRT_CHECK(adapter_dtype == DType::kF32 || adapter_dtype == DType::kF16, kInvalidArgument,
             "LoRA adapters are kept in f32 or f16, not ", dtype_name(adapter_dtype));
  // Per target module: the (down, up, scale) of each LoRA on it, in the order given.
  struct Piece {
    const LoraModule* m;
    float scale;
    const LoraFile* file;
  };
  std::map<std::string, std::pair<const LoraTarget*, std::vector<Piece>>> by_module;
  for (const LoraUse& use : loras) {
    HYRT_CHECK(use.file, kInvalidArgument, "a LoRA in use has no file");
    HYRT_CHECK(std::isfinite(use.multiplier), kInvalidArgument, "LoRA '", use.file->label(),
               "': the multiplier is not a finite number");
    files_.push_back(use.file);
    const LoraFile& f = *use.file;
    std::vector<std::string> unmatched;
    for (const LoraModule& m : f.modules()) {
      const LoraTarget* t = targets.find(m.key);
      if (!t) {
        unmatched.push_back(m.key);
        continue;
      }
      const Shape& w = t->weight_shape;
      const Shape &d = m.down.shape, &u = m.up.shape;
      const bool conv = w.rank() == 4;
      const int64_t dk_h = d.rank() == 4 ? d[2] : 1, dk_w = d.rank() == 4 ? d[3] : 1;
      const bool kernel_ok = conv ? ((dk_h == 1 && dk_w == 1) || (dk_h == w[2] && dk_w == w[3]))
                                  : (dk_h == 1 && dk_w == 1);
      HYRT_CHECK(d[1] == w[1] && u[0] == w[0] && kernel_ok, kInvalidArgument, "LoRA '", f.label(),
                 "': module '", m.key, "' (layer ", t->module, ") has down ", shape_text(d),
                 " and up ", shape_text(u), ", which do not fit the layer's weight ", shape_text(w),
                 " (a LoRA for another model architecture?)");
      if (use.multiplier == 0.0f) continue;
      const float alpha = m.alpha.value_or(static_cast<float>(m.rank()));
      auto& entry = by_module[t->module];
      entry.first = t;
      entry.second.push_back(Piece{&m, use.multiplier * alpha / static_cast<float>(m.rank()), &f});
    }
    if (!unmatched.empty()) {
      std::string some;
      for (size_t i = 0; i < unmatched.size() && i < 4; ++i)
        some += (i ? ", '" : "'") + unmatched[i] + "'";
      if (unmatched.size() > 4) some += ", …";
      HYRT_CHECK(unmatched.size() != f.modules().size(), kInvalidArgument, "the LoRA '", f.label(),
                 "' matches no layer of this model (its modules are named ", some,
                 "): it is for another model architecture, or in a naming hyrt does not read");
      fail(ErrorCode::kInvalidArgument, "the LoRA '", f.label(), "': ", unmatched.size(), " of ",
           f.modules().size(), " modules match no layer of this model: ", some,
           " (a LoRA for another model architecture?)");
    }
  }
  // The stacked adapters, one module per task (a rank-32 LoRA on SD 1.5 is ~12 M values: a
  // switch between LoRAs should cost milliseconds). A module with one LoRA whose down is stored
  // in f16 or f32 uses the file's down as it is (a view: exact, no copy, no conversion); ups are
  // always scaled into memory of their own, in adapter_dtype.
  struct Built {
    const std::string* module = nullptr;
    const std::vector<Piece>* pieces = nullptr;
    const LoraTarget* target = nullptr;
    TensorView down_view;  // what get() returns for the down (into storage_ or the file)
    TensorView up_view;    // into storage_
    bool down_is_file = false;
    int64_t rank = 0, kh = 1, kw = 1;
  };
  std::vector<Built> built;
  for (auto& [module, entry] : by_module) {
    Built b;
    b.module = &module;
    b.target = entry.first;
    b.pieces = &entry.second;
    const Shape& d0 = entry.second.front().m->down.shape;
    b.kh = d0.rank() == 4 ? d0[2] : 1;
    b.kw = d0.rank() == 4 ? d0[3] : 1;
    for (const Piece& p : entry.second) {
      const Shape& d = p.m->down.shape;
      HYRT_CHECK((d.rank() == 4 ? d[2] : 1) == b.kh && (d.rank() == 4 ? d[3] : 1) == b.kw,
                 kInvalidArgument, "LoRAs '", entry.second.front().file->label(), "' and '",
                 p.file->label(), "' adapt layer ", module,
                 " with different down kernels; hyrt stacks LoRAs on one layer only when they "
                 "agree");
      b.rank += p.m->rank();
    }
    const bool conv = b.target->weight_shape.rank() == 4;
    const int64_t in = b.target->weight_shape[1], out = b.target->weight_shape[0];
    const Shape down_shape = conv ? Shape{b.rank, in, b.kh, b.kw} : Shape{b.rank, in};
    const TensorView& file_down = entry.second.front().m->down;
    if (entry.second.size() == 1 &&
        (file_down.dtype == DType::kF16 || file_down.dtype == DType::kF32)) {
      b.down_view = TensorView{file_down.data, file_down.dtype, down_shape};  // same bytes
      b.down_is_file = true;
    } else {
      b.down_view = TensorView{nullptr, adapter_dtype, down_shape};
    }
    b.up_view =
        TensorView{nullptr, adapter_dtype, conv ? Shape{out, b.rank, 1, 1} : Shape{out, b.rank}};
    built.push_back(std::move(b));
  }
  // Every value this overlay will hold is checked before any is written (from the maxima the
  // file measured when opened): a set that fails leaves a reused storage untouched.
  const float limit = adapter_dtype == DType::kF16 ? 65504.0f : 3.4e38f;
  for (const Built& b : built)
    for (const Piece& p : *b.pieces) {
      // The down is copied unscaled (into adapter_dtype's range) unless the file's own is
      // used; the up is scaled (a NaN product fails the comparison too).
      const bool fits = std::isfinite(p.m->down_max_abs) &&
                        (b.down_is_file || p.m->down_max_abs <= limit) &&
                        p.m->up_max_abs * std::abs(p.scale) <= limit;
      HYRT_CHECK(fits, kInvalidArgument, "a LoRA on layer ", *b.module,
                 " holds a non-finite value (NaN or infinity), or its multiplier makes one");
    }
  // The adapters' tensors, in order (each module's down when it is not the file's, then its
  // up): the given storage's when it holds exactly these shapes (a multiplier changed, or
  // another LoRA of the same layers and rank), else new ones.
  std::vector<TensorView*> slots;
  for (Built& b : built) {
    if (!b.down_is_file) slots.push_back(&b.down_view);
    slots.push_back(&b.up_view);
  }
  const bool reusable = storage && storage->tensors.size() == slots.size() &&
                        std::equal(slots.begin(), slots.end(), storage->tensors.begin(),
                                   [](const TensorView* v, const Tensor& t) {
                                     return t.dtype() == v->dtype && t.shape() == v->shape;
                                   });
  if (!reusable) {
    storage = std::make_shared<LoraStorage>();
    for (const TensorView* v : slots)
      storage->tensors.emplace_back(v->dtype, v->shape, "a LoRA adapter");
  }
  storage_ = std::move(storage);
  for (size_t i = 0; i < slots.size(); ++i)
    slots[i]->data = storage_->tensors[i].data();
  // Everything that allocates is done before the values are written: from here nothing throws,
  // so reused tensors are only ever overwritten by a set that succeeds.
  for (const Built& b : built) {
    signature_ += str_cat(*b.module, ":", b.rank, "x", b.kh, "x", b.kw, ";");
    adapters_.emplace(lora_down_name(*b.module), b.down_view);
    adapters_.emplace(lora_up_name(*b.module), b.up_view);
  }
  const size_t elem = dtype_size(adapter_dtype);
  parallel_for(static_cast<int64_t>(built.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Built& b = built[static_cast<size_t>(i)];
      const int64_t out = b.target->weight_shape[0];
      const int64_t per_rank = b.target->weight_shape[1] * b.kh * b.kw;  // down values per row
      // dst[0, n) (adapter_dtype) = scale · src's values [first, first + n).
      auto store_scaled = [&](const TensorView& src, int64_t first, int64_t n, float scale,
                              uint8_t* dst) {
        in_f32_blocks(src, first, n, [&](float* block, int64_t k0, int64_t nb) {
          if (scale != 1.0f)
            for (int64_t k = 0; k < nb; ++k)
              block[k] *= scale;
          convert_from_f32(block, adapter_dtype, dst + static_cast<size_t>(k0) * elem,
                           static_cast<size_t>(nb));
        });
      };
      int64_t r0 = 0;
      for (const Piece& p : *b.pieces) {
        const int64_t r = p.m->rank();
        // down rows r0..r0+r: the file's down, as stored (same element order).
        if (!b.down_is_file)
          store_scaled(p.m->down, 0, r * per_rank, 1.0f,
                       static_cast<uint8_t*>(b.down_view.data) + r0 * per_rank * elem);
        // up columns r0..r0+r, scaled: all at once for a single LoRA, else row by row.
        auto* up = static_cast<uint8_t*>(b.up_view.data);
        if (r == b.rank) {
          store_scaled(p.m->up, 0, out * r, p.scale, up);
        } else {
          for (int64_t o = 0; o < out; ++o)
            store_scaled(p.m->up, o * r, r, p.scale, up + (o * b.rank + r0) * elem);
        }
        r0 += r;
      }
    }
  });
}

TensorView LoraWeights::get(std::string_view name) const {
  if (auto it = adapters_.find(name); it != adapters_.end()) return it->second;
  return base_.get(name);
}

bool LoraWeights::contains(std::string_view name) const {
  return adapters_.count(name) || base_.contains(name);
}

size_t LoraWeights::bytes() const {
  size_t n = 0;
  for (const Tensor& t : storage_->tensors)
    n += t.bytes();
  return n;
}

}  // namespace hyrt::weights

// hyrt._hyrt — the nanobind extension behind the `hyrt` Python package (python/hyrt/).
//
// A thin layer over the public C++ API (include/hyrt/hyrt.h) and nothing else: the Python
// package adds the diffusers-style names and PIL images on top. Two rules shape it:
//
// - The GIL is released whenever hyrt may block (loading, generating, destroying a Model,
//   which waits for the Runtime's executor). A Python thread calling generate() waits for
//   the executor without the GIL, so other threads' callbacks, which need it, can run: no
//   lock-order deadlock between the GIL and the executor.
// - A Python exception never travels through hyrt as a Python object. The step callback
//   keeps it in an exception_ptr and throws a plain C++ exception through the pipeline;
//   the caller rethrows the original once it holds the GIL again (its reference count is
//   only ever touched with the GIL held).
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "hyrt/hyrt.h"

namespace nb = nanobind;

namespace {

// Thrown through the pipeline in place of a Python exception raised by a step callback.
struct CallbackRaised : std::exception {
  const char* what() const noexcept override { return "hyrt: the step callback raised"; }
};

// The Python exception class for each hyrt::ErrorCode (by error_code_name), looked up in
// hyrt._errors: pure Python, so the classes can also derive from ValueError and the like.
void raise_hyrt_error(const hyrt::Error& e) {
  nb::object cls =
      nb::module_::import_("hyrt._errors").attr("class_for")(hyrt::error_code_name(e.code()));
  PyErr_SetString(cls.ptr(), e.what());
}

// None, or a (width, height, rgb bytes) tuple as an RGB8 Image (copied).
std::optional<hyrt::Image> image_of(const nb::object& o) {
  if (o.is_none()) return std::nullopt;
  const auto t = nb::cast<nb::tuple>(o);
  hyrt::Image im;
  im.width = nb::cast<int>(t[0]);
  im.height = nb::cast<int>(t[1]);
  const auto rgb = nb::cast<nb::bytes>(t[2]);
  const auto* p = static_cast<const uint8_t*>(rgb.data());
  im.rgb.assign(p, p + rgb.size());
  return im;
}

// A Model plus the Runtime it came from. The Model keeps the Runtime's internals alive on
// its own; the Runtime is kept for accelerator().
class PyModel {
 public:
  PyModel(const hyrt::RuntimeOptions& ro, const std::string& path, const hyrt::LoadOptions& lo) {
    nb::gil_scoped_release release;
    runtime_ = std::make_unique<hyrt::Runtime>(ro);
    model_ = std::make_unique<hyrt::Model>(runtime_->load(path, lo));
  }
  // Destroying a Model waits for the executor, which a generating thread may hold while it
  // waits for the GIL (its callback): release the GIL first.
  ~PyModel() { close(); }

  void close() {
    if (!model_ && !runtime_) return;
    std::unique_ptr<hyrt::Model> model = std::move(model_);
    std::unique_ptr<hyrt::Runtime> runtime = std::move(runtime_);
    if (PyGILState_Check()) {
      nb::gil_scoped_release release;
      model.reset();
      runtime.reset();
    }
  }

  hyrt::Model& model() {
    if (!model_) throw std::runtime_error("hyrt: this Pipeline was closed");
    return *model_;
  }
  std::string accelerator() {
    if (!runtime_) throw std::runtime_error("hyrt: this Pipeline was closed");
    return runtime_->accelerator();
  }

  // Returns a list of (width, height, rgb bytes, parameters, seed) tuples. `image` and `mask`
  // are None or (width, height, RGB8 bytes) tuples (img2img, inpainting).
  nb::list generate(const std::string& prompt, std::optional<std::string> negative_prompt,
                    int width, int height, int steps, float cfg_scale, uint64_t seed,
                    const std::string& sampler, int batch, nb::object callback,
                    std::optional<hyrt::CancelToken> cancel, nb::object image, nb::object mask,
                    double strength, bool taesd, nb::object preview, int preview_every,
                    int clip_skip,
                    std::optional<std::tuple<std::string, double, int, int, int, double>> hires) {
    hyrt::Model& m = model();
    hyrt::GenerateOptions o;
    o.clip_skip = clip_skip;
    if (hires) {
      hyrt::GenerateOptions::Hires h;
      std::tie(h.upscaler, h.scale, h.width, h.height, h.steps, h.strength) = *hires;
      o.hires = h;
    }
    o.taesd = taesd;
    o.init_image = image_of(image);
    o.mask = image_of(mask);
    o.strength = strength;
    o.prompt = prompt;
    o.negative_prompt = std::move(negative_prompt);
    o.width = width;
    o.height = height;
    o.steps = steps;
    o.cfg_scale = cfg_scale;
    o.seed = seed;
    o.sampler = sampler;
    o.batch = batch;
    if (cancel) o.cancel = *cancel;
    std::exception_ptr raised;
    // Always installed: besides the user's callback it lets Ctrl-C (a pending signal on
    // the main thread) end the call at a step boundary, which a released GIL would delay
    // until the whole generation finished.
    o.on_step = [&callback, &raised](int step, int total) {
      nb::gil_scoped_acquire acquire;
      try {
        if (PyErr_CheckSignals() != 0) throw nb::python_error();
        if (!callback.is_none()) callback(step, total);
      } catch (nb::python_error&) {
        raised = std::current_exception();
        throw CallbackRaised();
      }
    };
    if (!preview.is_none()) {
      // preview(width, height, rgb bytes, step, total); the Python side makes a PIL image.
      o.preview_every = preview_every;
      o.on_preview = [&preview, &raised](const hyrt::Image& im, int step, int total) {
        nb::gil_scoped_acquire acquire;
        try {
          preview(im.width, im.height,
                  nb::bytes(reinterpret_cast<const char*>(im.rgb.data()), im.rgb.size()), step,
                  total);
        } catch (nb::python_error&) {
          raised = std::current_exception();
          throw CallbackRaised();
        }
      };
    }
    std::vector<hyrt::Image> images;
    try {
      nb::gil_scoped_release release;
      images = m.generate(o);
    } catch (const CallbackRaised&) {
      std::rethrow_exception(raised);  // the GIL is held again here
    }
    nb::list out;
    for (const hyrt::Image& im : images)
      out.append(
          nb::make_tuple(im.width, im.height,
                         nb::bytes(reinterpret_cast<const char*>(im.rgb.data()), im.rgb.size()),
                         im.parameters, im.seed));
    return out;
  }

 private:
  std::unique_ptr<hyrt::Runtime> runtime_;
  std::unique_ptr<hyrt::Model> model_;
};

}  // namespace

NB_MODULE(_hyrt, m) {
  m.doc() = "hyrt's C++ runtime (include/hyrt/hyrt.h); use the hyrt package, not this module";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const hyrt::Error& e) {
      raise_hyrt_error(e);
    }
  });

  nb::class_<hyrt::CancelToken>(m, "CancelToken",
                                "Stops a generation from any thread at its next step boundary.")
      .def(nb::init<>())
      .def("cancel", &hyrt::CancelToken::cancel,
           "Ends the call(s) using this token; it stays cancelled.")
      .def_prop_ro("cancelled", &hyrt::CancelToken::cancelled);

  nb::class_<PyModel>(m, "Model")
      .def(
          "__init__",
          [](PyModel* self, const std::string& path, const std::string& placement, int threads,
             int device, int64_t cache_bytes, const std::string& config_dir, bool quantize_int8,
             int max_batch, int batch_wait_ms, const std::string& precision,
             const std::string& taesd) {
            hyrt::RuntimeOptions ro;
            ro.precision = precision;
            ro.max_batch = max_batch;
            ro.batch_wait_ms = batch_wait_ms;
            ro.placement = placement;
            ro.num_threads = threads;
            ro.device = device;
            ro.cache_bytes = cache_bytes;
            hyrt::LoadOptions lo;
            lo.config_dir = config_dir;
            lo.quantize_int8 = quantize_int8;
            lo.taesd = taesd;
            new (self) PyModel(ro, path, lo);
          },
          nb::arg("path"), nb::arg("placement"), nb::arg("threads"), nb::arg("device"),
          nb::arg("cache_bytes"), nb::arg("config_dir"), nb::arg("quantize_int8"),
          nb::arg("max_batch") = 1, nb::arg("batch_wait_ms") = 0, nb::arg("precision") = "auto",
          nb::arg("taesd") = "")
      .def("generate", &PyModel::generate, nb::arg("prompt"), nb::arg("negative_prompt").none(),
           nb::arg("width"), nb::arg("height"), nb::arg("steps"), nb::arg("cfg_scale"),
           nb::arg("seed"), nb::arg("sampler"), nb::arg("batch"), nb::arg("callback").none(),
           nb::arg("cancel").none(), nb::arg("image").none() = nb::none(),
           nb::arg("mask").none() = nb::none(), nb::arg("strength") = 0.8, nb::arg("taesd") = false,
           nb::arg("preview").none() = nb::none(), nb::arg("preview_every") = 1,
           nb::arg("clip_skip") = 1, nb::arg("hires").none() = nb::none())
      .def("close", &PyModel::close)
      .def_prop_ro("family", [](PyModel& s) { return s.model().family(); })
      .def_prop_ro("native_size", [](PyModel& s) { return s.model().native_size(); })
      .def_prop_ro("cached_bytes",
                   [](PyModel& s) {
                     hyrt::Model& model = s.model();
                     nb::gil_scoped_release release;  // waits for the executor
                     return model.cached_bytes();
                   })
      .def_prop_ro("accelerator", &PyModel::accelerator);

  m.def(
      "save_png",
      [](int width, int height, nb::bytes rgb, const std::string& parameters,
         const std::string& path) {
        hyrt::Image im;
        im.width = width;
        im.height = height;
        const auto* p = static_cast<const uint8_t*>(rgb.data());
        im.rgb.assign(p, p + rgb.size());
        im.parameters = parameters;
        nb::gil_scoped_release release;
        hyrt::Model::save_png(im, path);
      },
      nb::arg("width"), nb::arg("height"), nb::arg("rgb"), nb::arg("parameters"), nb::arg("path"));
}

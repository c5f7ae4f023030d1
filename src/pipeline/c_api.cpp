// The C API (include/hyrt/hyrt_c.h) over the C++ one (include/hyrt/hyrt.h): handles own
// the C++ objects, every entry point catches everything and turns it into a status and a
// thread-local message.
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "core/build_info.h"
#include "hyrt/hyrt.h"
#include "hyrt/hyrt_c.h"

struct hyrt_runtime {
  hyrt::Runtime runtime;
  std::string accelerator;  // what hyrt_runtime_accelerator returns
};

struct hyrt_model {
  hyrt::Model model;
};

struct hyrt_cancel {
  hyrt::CancelToken token;
};

namespace {

thread_local std::string last_error;

// hyrt_status is ErrorCode shifted by one (HYRT_OK = 0): one table of names serves both.
static_assert(HYRT_INVALID_ARGUMENT == static_cast<int>(hyrt::ErrorCode::kInvalidArgument) + 1 &&
              HYRT_INTERNAL == static_cast<int>(hyrt::ErrorCode::kInternal) + 1 &&
              HYRT_CANCELLED == static_cast<int>(hyrt::ErrorCode::kCancelled) + 1);
hyrt_status status_of(hyrt::ErrorCode code) {
  return static_cast<hyrt_status>(static_cast<int>(code) + 1);
}

hyrt_status fail(hyrt_status status, std::string message) {
  last_error = std::move(message);
  return status;
}

// Runs `body`, mapping every exception to a status and this thread's message.
template <class F>
hyrt_status guarded(F&& body) {
  try {
    last_error.clear();
    body();
    return HYRT_OK;
  } catch (const hyrt::Error& e) {
    return fail(status_of(e.code()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(HYRT_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(HYRT_INTERNAL, e.what());
  } catch (...) {
    return fail(HYRT_INTERNAL, "unknown exception");
  }
}

// Whether a caller-sized struct includes `member` (fields are only ever appended).
#define HYRT_HAS_FIELD(ptr, member) \
  ((ptr)->struct_size >=            \
   offsetof(std::remove_pointer_t<decltype(ptr)>, member) + sizeof((ptr)->member))

// A caller's picture as the C++ API takes it (`name` for errors).
hyrt::Image image_of(const hyrt_image& image, const char* name) {
  if (!image.rgb)
    throw hyrt::Error(hyrt::ErrorCode::kInvalidArgument,
                      std::string("hyrt_generate: ") + name + "->rgb is NULL");
  // hyrt.h's limits, checked before the copy.
  if (image.width <= 0 || image.height <= 0 || image.width > 16384 || image.height > 16384 ||
      static_cast<int64_t>(image.width) * image.height > int64_t{64} << 20)
    throw hyrt::Error(hyrt::ErrorCode::kInvalidArgument,
                      std::string("hyrt_generate: ") + name + " is " + std::to_string(image.width) +
                          "x" + std::to_string(image.height) +
                          ": each side must be in [1, 16384] and the picture at most 64 Mpixel");
  hyrt::Image im;
  im.width = image.width;
  im.height = image.height;
  im.rgb.assign(image.rgb, image.rgb + static_cast<size_t>(im.width) * im.height * 3);
  return im;
}

// The progress callback asked to stop: distinct from an error, reported as HYRT_CANCELLED.
struct StopRequested {};

}  // namespace

extern "C" {

const char* hyrt_status_name(hyrt_status status) {
  if (status == HYRT_OK) return "ok";
  if (status < HYRT_OK || status > HYRT_CANCELLED) return "unknown status";
  return hyrt::error_code_name(static_cast<hyrt::ErrorCode>(status - 1));
}

const char* hyrt_last_error(void) {
  return last_error.c_str();
}

const char* hyrt_version(void) {
  return HYRT_VERSION_STRING;
}

void hyrt_runtime_options_init(hyrt_runtime_options* options) {
  if (!options) return;
  *options = {};
  options->struct_size = sizeof(*options);
  options->placement = "auto";
  options->max_batch = 1;
  options->precision = "auto";
}

hyrt_status hyrt_runtime_create(const hyrt_runtime_options* options, hyrt_runtime** out) {
  if (!out) return fail(HYRT_INVALID_ARGUMENT, "hyrt_runtime_create: out is NULL");
  *out = nullptr;
  return guarded([&] {
    hyrt::RuntimeOptions ro;
    if (options) {
      if (HYRT_HAS_FIELD(options, num_threads)) ro.num_threads = options->num_threads;
      if (HYRT_HAS_FIELD(options, placement) && options->placement)
        ro.placement = options->placement;
      if (HYRT_HAS_FIELD(options, device)) ro.device = options->device;
      if (HYRT_HAS_FIELD(options, cache_bytes)) ro.cache_bytes = options->cache_bytes;
      if (HYRT_HAS_FIELD(options, max_batch) && options->max_batch != 0)
        ro.max_batch = options->max_batch;
      if (HYRT_HAS_FIELD(options, batch_wait_ms)) ro.batch_wait_ms = options->batch_wait_ms;
      if (HYRT_HAS_FIELD(options, precision) && options->precision)
        ro.precision = options->precision;
    }
    auto r = std::make_unique<hyrt_runtime>(hyrt_runtime{hyrt::Runtime(ro), {}});
    r->accelerator = r->runtime.accelerator();
    *out = r.release();
  });
}

void hyrt_runtime_destroy(hyrt_runtime* runtime) {
  delete runtime;
}

const char* hyrt_runtime_accelerator(hyrt_runtime* runtime) {
  return runtime ? runtime->accelerator.c_str() : "";
}

hyrt_status hyrt_model_load(hyrt_runtime* runtime, const char* path, const char* config_dir,
                            hyrt_model** out) {
  if (!out) return fail(HYRT_INVALID_ARGUMENT, "hyrt_model_load: out is NULL");
  *out = nullptr;
  if (!runtime || !path)
    return fail(HYRT_INVALID_ARGUMENT, "hyrt_model_load: runtime or path is NULL");
  return guarded([&] {
    hyrt::LoadOptions lo;
    if (config_dir) lo.config_dir = config_dir;
    *out = new hyrt_model{runtime->runtime.load(path, lo)};
  });
}

void hyrt_model_destroy(hyrt_model* model) {
  delete model;
}

const char* hyrt_model_family(const hyrt_model* model) {
  if (!model) return "";
  return model->model.family() == "sdxl" ? "sdxl" : "sd15";
}

int hyrt_model_native_size(const hyrt_model* model) {
  return model ? model->model.native_size() : 0;
}

hyrt_status hyrt_model_set_taesd(hyrt_model* model, const char* path) {
  if (!model) return fail(HYRT_INVALID_ARGUMENT, "hyrt_model_set_taesd: model is NULL");
  return guarded([&] { model->model.set_taesd(path ? path : ""); });
}

hyrt_status hyrt_cancel_create(hyrt_cancel** out) {
  if (!out) return fail(HYRT_INVALID_ARGUMENT, "hyrt_cancel_create: out is NULL");
  return guarded([&] { *out = new hyrt_cancel{}; });
}

void hyrt_cancel_trigger(hyrt_cancel* cancel) {
  if (cancel) cancel->token.cancel();
}

int hyrt_cancel_is_set(const hyrt_cancel* cancel) {
  return cancel && cancel->token.cancelled();
}

void hyrt_cancel_destroy(hyrt_cancel* cancel) {
  delete cancel;
}

void hyrt_generate_options_init(hyrt_generate_options* options) {
  if (!options) return;
  *options = {};
  options->struct_size = sizeof(*options);
  options->steps = 20;
  options->cfg_scale = 7.0f;
  options->sampler = "euler_a";
  options->batch = 1;
  options->strength = 0.8;
  options->preview_every = 1;
  options->clip_skip = 1;
  options->hires_strength = 0.7;
}

hyrt_status hyrt_generate(hyrt_model* model, const hyrt_generate_options* options,
                          hyrt_image** images, int* count) {
  if (!images || !count)
    return fail(HYRT_INVALID_ARGUMENT, "hyrt_generate: images or count is NULL");
  *images = nullptr;
  *count = 0;
  if (!model || !options)
    return fail(HYRT_INVALID_ARGUMENT, "hyrt_generate: model or options is NULL");
  if (options->struct_size < offsetof(hyrt_generate_options, cancel) + sizeof(options->cancel))
    return fail(HYRT_INVALID_ARGUMENT,
                "hyrt_generate: options were not initialised with hyrt_generate_options_init");
  if (!options->prompt) return fail(HYRT_INVALID_ARGUMENT, "hyrt_generate: prompt is NULL");
  bool stopped_by_callback = false;
  const hyrt_status status = guarded([&] {
    hyrt::GenerateOptions o;
    o.prompt = options->prompt;
    if (options->negative_prompt) o.negative_prompt = std::string(options->negative_prompt);
    o.width = options->width;
    o.height = options->height;
    o.steps = options->steps;
    o.cfg_scale = options->cfg_scale;
    o.seed = options->seed;
    if (options->sampler) o.sampler = options->sampler;
    o.batch = options->batch;
    if (options->cancel) o.cancel = options->cancel->token;
    if (HYRT_HAS_FIELD(options, init_image) && options->init_image)
      o.init_image = image_of(*options->init_image, "init_image");
    if (HYRT_HAS_FIELD(options, mask) && options->mask) o.mask = image_of(*options->mask, "mask");
    if (HYRT_HAS_FIELD(options, strength)) o.strength = options->strength;
    if (HYRT_HAS_FIELD(options, taesd)) o.taesd = options->taesd != 0;
    if (HYRT_HAS_FIELD(options, clip_skip)) o.clip_skip = options->clip_skip;
    if (HYRT_HAS_FIELD(options, hires_strength) &&
        (options->hires_scale > 0 || options->hires_width > 0 || options->hires_height > 0)) {
      hyrt::GenerateOptions::Hires h;
      h.scale = options->hires_scale > 0 ? options->hires_scale : 2.0;
      h.width = options->hires_width;
      h.height = options->hires_height;
      h.steps = options->hires_steps;
      h.strength = options->hires_strength;
      if (HYRT_HAS_FIELD(options, hires_upscaler) && options->hires_upscaler)
        h.upscaler = options->hires_upscaler;
      o.hires = h;
    }
    if (options->on_step) {
      const hyrt_progress_fn fn = options->on_step;
      void* user = options->user_data;
      o.on_step = [fn, user](int step, int total) {
        if (fn(user, step, total) != 0) throw StopRequested{};
      };
    }
    if (HYRT_HAS_FIELD(options, preview_every) && options->on_preview) {
      const hyrt_preview_fn fn = options->on_preview;
      void* user = options->user_data;
      o.preview_every = options->preview_every;
      o.on_preview = [fn, user](const hyrt::Image& preview, int step, int total) {
        hyrt_image c{preview.width, preview.height, const_cast<uint8_t*>(preview.rgb.data()),
                     const_cast<char*>(""), 0};
        if (fn(user, &c, step, total) != 0) throw StopRequested{};
      };
    }
    std::vector<hyrt::Image> made;
    try {
      made = model->model.generate(o);
    } catch (const StopRequested&) {
      stopped_by_callback = true;
      return;
    }
    auto* out = static_cast<hyrt_image*>(std::calloc(made.size(), sizeof(hyrt_image)));
    if (!out) throw std::bad_alloc();
    int filled = 0;
    try {
      for (const hyrt::Image& im : made) {
        hyrt_image& c = out[filled];
        c.width = im.width;
        c.height = im.height;
        c.seed = im.seed;
        c.rgb = static_cast<uint8_t*>(std::malloc(im.rgb.size()));
        c.parameters = static_cast<char*>(std::malloc(im.parameters.size() + 1));
        ++filled;
        if (!c.rgb || !c.parameters) throw std::bad_alloc();
        std::memcpy(c.rgb, im.rgb.data(), im.rgb.size());
        std::memcpy(c.parameters, im.parameters.c_str(), im.parameters.size() + 1);
      }
    } catch (...) {
      hyrt_images_free(out, filled);
      throw;
    }
    *images = out;
    *count = filled;
  });
  if (stopped_by_callback) return fail(HYRT_CANCELLED, "stopped by the progress callback");
  return status;
}

void hyrt_images_free(hyrt_image* images, int count) {
  if (!images) return;
  for (int i = 0; i < count; ++i) {
    std::free(images[i].rgb);
    std::free(images[i].parameters);
  }
  std::free(images);
}

hyrt_status hyrt_image_save_png(const hyrt_image* image, const char* path) {
  if (!image || !path || !image->rgb)
    return fail(HYRT_INVALID_ARGUMENT, "hyrt_image_save_png: image, its pixels or path is NULL");
  return guarded([&] {
    hyrt::Image im;
    im.width = image->width;
    im.height = image->height;
    if (im.width <= 0 || im.height <= 0 || im.width > 65535 || im.height > 65535)
      throw hyrt::Error(hyrt::ErrorCode::kInvalidArgument, "hyrt_image_save_png: bad image size");
    im.rgb.assign(image->rgb, image->rgb + static_cast<size_t>(im.width) * im.height * 3);
    if (image->parameters) im.parameters = image->parameters;
    im.seed = image->seed;
    hyrt::Model::save_png(im, path);
  });
}

}  // extern "C"

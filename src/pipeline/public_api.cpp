// The public API (include/hyrt/hyrt.h) as a thin facade over exec::Engine,
// pipeline::DiffusionModel and pipeline::txt2img.
//
// Concurrency: a Runtime is one executor (host thread team, accelerator stream, shared
// scratch arenas, program cache), so everything that touches its engine — loading, every
// generate() of every Model, destroying a Model — holds the Runtime's FifoMutex. Calls
// therefore run one at a time in arrival order, and each sees the engine exactly as a
// lone call would: results equal those of the same calls made one after another.
#include <algorithm>
#include <filesystem>
#include <mutex>

#include "core/error.h"
#include "core/fifo_mutex.h"
#include "core/sysinfo.h"
#include "hyrt/hyrt.h"
#include "pipeline/image_io.h"
#include "pipeline/txt2img.h"

namespace hyrt {

struct Runtime::Impl {
  exec::Engine engine;
  int64_t cache_bytes = 0;
  FifoMutex executor;  // held by every call that uses `engine`
  explicit Impl(const exec::EngineOptions& o) : engine(o) {}
};

struct Model::Impl {
  std::shared_ptr<Runtime::Impl> runtime;  // keeps the engine alive
  std::unique_ptr<pipeline::DiffusionModel> model;
  std::string name;
  ~Impl() {
    if (!model) return;
    // Freeing executables and resident weights touches the engine's backends.
    std::lock_guard<FifoMutex> lock(runtime->executor);
    model.reset();
    runtime->engine.trim();  // scratch sized for its shapes, its now idle programs
    return_free_heap_to_system();
  }
};

namespace {

// A quarter of the machine's memory, at least 4 GiB.
int64_t default_cache_bytes() {
  return std::max<int64_t>(physical_memory_bytes() / 4, int64_t{4} << 30);
}

}  // namespace

Runtime::Runtime(const RuntimeOptions& options) {
  HYRT_CHECK(options.num_threads >= 0, kInvalidArgument,
             "RuntimeOptions::num_threads must be >= 0, got ", options.num_threads);
  HYRT_CHECK(options.cache_bytes >= 0, kInvalidArgument,
             "RuntimeOptions::cache_bytes must be >= 0, got ", options.cache_bytes);
  exec::EngineOptions eo;
  eo.num_threads = options.num_threads;
  eo.placement = plan::parse_placement_mode(options.placement);
  eo.device = options.device;
  impl_ = std::make_shared<Impl>(eo);
  impl_->cache_bytes = options.cache_bytes > 0 ? options.cache_bytes : default_cache_bytes();
}
Runtime::~Runtime() = default;
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;

std::string Runtime::accelerator() const {
  return impl_->engine.accelerator_status();
}

Model Runtime::load(const std::string& path, const LoadOptions& options) {
  auto impl = std::make_unique<Model::Impl>();
  impl->runtime = impl_;
  pipeline::ModelOptions mo;
  if (!options.config_dir.empty()) mo.config_dir = options.config_dir;
  mo.quantize_int8 = options.quantize_int8;
  mo.cache_bytes = impl_->cache_bytes;
  {
    std::lock_guard<FifoMutex> lock(impl_->executor);
    impl->model = pipeline::DiffusionModel::open(path, impl_->engine, mo);
  }
  impl->name = std::filesystem::path(path).filename().string();
  return Model(std::move(impl));
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

std::string Model::family() const {
  return impl_->model->family() == models::ModelFamily::kSdxl ? "sdxl" : "sd15";
}

int Model::native_size() const {
  return impl_->model->default_image_size();
}

int64_t Model::cached_bytes() const {
  std::lock_guard<FifoMutex> lock(impl_->runtime->executor);
  return impl_->model->cached_bytes();
}

std::vector<Image> Model::generate(const GenerateOptions& o) {
  pipeline::DiffusionModel& m = *impl_->model;
  HYRT_CHECK(o.width >= 0 && o.height >= 0, kInvalidArgument,
             "width and height must be >= 0 (0: the model's native size), got ", o.width, "x",
             o.height);
  pipeline::Txt2ImgParams p;
  p.prompt = o.prompt;
  p.negative_prompt = o.negative_prompt;
  p.width = o.width > 0 ? o.width : m.default_image_size();
  p.height = o.height > 0 ? o.height : m.default_image_size();
  p.steps = o.steps;
  p.cfg_scale = o.cfg_scale;
  p.seed = o.seed;
  p.sampler = pipeline::parse_sampler_kind(o.sampler);
  p.batch = o.batch;
  p.on_step = o.on_step;
  const CancelToken cancel = o.cancel;
  p.cancelled = [cancel] { return cancel.cancelled(); };
  pipeline::validate_txt2img_params(p, m.vae_scale_factor());  // before waiting for the executor

  pipeline::Txt2ImgResult r;
  {
    std::lock_guard<FifoMutex> lock(impl_->runtime->executor);
    r = pipeline::txt2img(m, m.scheduler_config(), p);
  }

  pipeline::GenerationParameters gp;
  gp.prompt = p.prompt;
  gp.negative_prompt = p.negative_prompt.value_or("");
  gp.steps = p.steps;
  gp.sampler = std::string(pipeline::sampler_display_name(p.sampler));
  gp.cfg_scale = p.cfg_scale;
  gp.seed = p.seed;
  gp.width = p.width;
  gp.height = p.height;
  gp.model = impl_->name;
  gp.extra.emplace_back("Version", "hyrt");
  const size_t pixels = static_cast<size_t>(p.width) * p.height * 3;
  std::vector<Image> out;
  for (int i = 0; i < p.batch; ++i) {
    // One seed per batch: the latents of item i follow item i-1's in the generator.
    if (p.batch > 1) gp.extra.emplace_back("Batch index", std::to_string(i));
    const pipeline::Image8 img =
        pipeline::float_to_image8({r.images.as<float>() + i * pixels, pixels}, p.height, p.width);
    out.push_back({p.width, p.height, img.pixels, pipeline::format_a1111_parameters(gp), p.seed});
    if (p.batch > 1) gp.extra.pop_back();
  }
  return out;
}

void Model::save_png(const Image& image, const std::string& path) {
  HYRT_CHECK(image.rgb.size() == static_cast<size_t>(image.width) * image.height * 3,
             kInvalidArgument, "save_png: image buffer does not match ", image.width, "x",
             image.height);
  pipeline::Image8 img{image.width, image.height, 3, image.rgb};
  pipeline::write_png(path, img, {{pipeline::kParametersKeyword, image.parameters}});
}

}  // namespace hyrt

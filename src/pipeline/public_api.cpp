// The public API (include/hyrt/hyrt.h) as a thin facade over exec::Engine,
// pipeline::DiffusionModel and pipeline::txt2img.
#include <filesystem>

#include "core/error.h"
#include "hyrt/hyrt.h"
#include "pipeline/image_io.h"
#include "pipeline/txt2img.h"

namespace hyrt {

struct Runtime::Impl {
  exec::Engine engine;
  explicit Impl(const exec::EngineOptions& o) : engine(o) {}
};

struct Model::Impl {
  std::shared_ptr<Runtime::Impl> runtime;  // keeps the engine alive
  std::unique_ptr<pipeline::DiffusionModel> model;
  std::string name;
};

Runtime::Runtime(const RuntimeOptions& options) {
  exec::EngineOptions eo;
  eo.num_threads = options.num_threads;
  impl_ = std::make_shared<Impl>(eo);
}
Runtime::~Runtime() = default;
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;

Model Runtime::load(const std::string& path, const LoadOptions& options) {
  auto impl = std::make_unique<Model::Impl>();
  impl->runtime = impl_;
  pipeline::ModelOptions mo;
  if (!options.config_dir.empty()) mo.config_dir = options.config_dir;
  impl->model = pipeline::DiffusionModel::open(path, impl_->engine, mo);
  impl->name = std::filesystem::path(path).filename().string();
  return Model(std::move(impl));
}

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;
Model::Model(Model&&) noexcept = default;
Model& Model::operator=(Model&&) noexcept = default;

std::vector<Image> Model::generate(const GenerateOptions& o) {
  pipeline::DiffusionModel& m = *impl_->model;
  const int native = m.unet_config().sample_size * m.vae_scale_factor();
  pipeline::Txt2ImgParams p;
  p.prompt = o.prompt;
  p.negative_prompt = o.negative_prompt;
  p.width = o.width > 0 ? o.width : native;
  p.height = o.height > 0 ? o.height : native;
  p.steps = o.steps;
  p.cfg_scale = o.cfg_scale;
  p.seed = o.seed;
  p.sampler = pipeline::parse_sampler_kind(o.sampler);
  p.batch = o.batch;
  p.on_step = o.on_step;
  const pipeline::Txt2ImgResult r = pipeline::txt2img(m, m.scheduler_config(), p);

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
  const size_t pixels = static_cast<size_t>(p.width) * p.height * 3;
  std::vector<Image> out;
  for (int i = 0; i < p.batch; ++i) {
    const pipeline::Image8 img =
        pipeline::float_to_image8({r.images.as<float>() + i * pixels, pixels}, p.height, p.width);
    out.push_back({p.width, p.height, img.pixels, pipeline::format_a1111_parameters(gp)});
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

// The public API (include/hyrt/hyrt.h) as a thin facade over exec::Engine,
// pipeline::DiffusionModel and pipeline::txt2img_batch.
//
// Concurrency: a Runtime is one executor (host thread team, accelerator stream, shared
// scratch arenas, program cache). generate() queues a Call and waits; one worker thread per
// Runtime takes the oldest waiting call together with the waiting calls that can share its
// denoising loop (same Model, pipeline::can_batch_together, up to max_batch images) and runs
// them as one pipeline::txt2img_batch, holding the Runtime's FifoMutex — which loading and
// destroying a Model take too. Every row of a batch is computed independently of the others,
// so each call gets exactly what it would get alone, as if the calls ran one after another.
// Progress goes back to the calling thread, which runs the user's on_step there.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/fifo_mutex.h"
#include "core/sysinfo.h"
#include "hyrt/hyrt.h"
#include "pipeline/image_io.h"
#include "pipeline/init_image.h"
#include "pipeline/precision.h"
#include "pipeline/prompt_syntax.h"
#include "pipeline/txt2img.h"
#include "weights/tiny_autoencoder.h"

namespace hyrt {

namespace {

// One generate() call, from the moment it is queued until its caller has the outcome. Shared
// by the caller and the worker; `params`' callbacks point back at it.
struct Call {
  Model::Impl* model = nullptr;  // alive: its caller waits in generate(), or ~Model waits for
                                 // the executor the worker holds
  pipeline::Txt2ImgParams params;
  std::string prompt;                  // as given, LoRA tags included (for the parameters)
  std::vector<std::string> lora_list;  // "name:multiplier" of GenerateOptions::loras
  std::atomic<bool> abandoned{false};  // the caller has left (its on_step threw)

  std::mutex mutex;
  std::condition_variable changed;
  int steps_done = 0;  // guarded by mutex
  int steps_total = 0;
  std::optional<Image> preview;  // the latest live preview not yet handed over, and its step
  int preview_step = 0;
  bool done = false;
  pipeline::Txt2ImgOutcome outcome;
};

// An RGB8 Image as the pipeline's 8-bit image, its size checked (what `name` is, for errors).
pipeline::Image8 image8_of(const Image& image, const char* name) {
  HYRT_CHECK(image.width > 0 && image.height > 0 && image.width <= 16384 && image.height <= 16384 &&
                 static_cast<int64_t>(image.width) * image.height <= int64_t{64} << 20,
             kInvalidArgument, name, " is ", image.width, "x", image.height,
             ": each side must be in [1, 16384] and the picture at most 64 Mpixel");
  HYRT_CHECK(image.rgb.size() == static_cast<size_t>(image.width) * image.height * 3,
             kInvalidArgument, name, " has ", image.rgb.size(), " bytes of rgb, but ", image.width,
             "x", image.height, " RGB8 takes ",
             static_cast<size_t>(image.width) * image.height * 3);
  return {image.width, image.height, 3, image.rgb};
}

bool is_out_of_memory(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    return err.code() == ErrorCode::kOutOfMemory;
  } catch (const std::bad_alloc&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace

struct Runtime::Impl {
  exec::Engine engine;
  int64_t cache_bytes = 0;
  bool quantize_on_load = false;  // RuntimeOptions::precision "int8"
  int max_batch = 1;              // images per batch of calls
  std::chrono::milliseconds batch_wait{0};
  FifoMutex executor;  // held by every use of `engine`: a batch, load, unload

  std::mutex queue_mutex;
  std::condition_variable queue_changed;
  std::deque<std::shared_ptr<Call>> queue;  // guarded by queue_mutex
  RuntimeStats stats;                       // guarded by queue_mutex
  bool stopping = false;                    // guarded by queue_mutex
  std::thread worker;                       // started by the first generate()

  // LoRA files read so far, by path, with the size and time they had then (a changed file is
  // read again). Guarded by lora_mutex.
  std::string lora_dir;
  struct LoraEntry {
    std::shared_ptr<const weights::LoraFile> file;
    std::uintmax_t size = 0;
    std::filesystem::file_time_type mtime;
  };
  std::mutex lora_mutex;
  std::map<std::string, LoraEntry> loras;

  std::shared_ptr<const weights::LoraFile> lora_file(const std::string& path) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    const auto mtime = std::filesystem::last_write_time(path, ec);
    std::lock_guard<std::mutex> lock(lora_mutex);
    auto it = loras.find(path);
    if (!ec && it != loras.end() && it->second.size == size && it->second.mtime == mtime)
      return it->second.file;
    auto file = weights::LoraFile::open(path);
    if (!ec) loras[path] = {file, size, mtime};
    return file;
  }

  explicit Impl(const exec::EngineOptions& o) : engine(o) {}
  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(queue_mutex);
      stopping = true;
    }
    queue_changed.notify_all();
    if (worker.joinable()) worker.join();
  }

  void submit(const std::shared_ptr<Call>& call) {
    {
      std::lock_guard<std::mutex> lock(queue_mutex);
      if (!worker.joinable()) worker = std::thread([this] { work(); });
      queue.push_back(call);
    }
    queue_changed.notify_all();
  }

  // Records the engine's accelerator memory for stats() (executor held: sizes change only
  // under it, and stats() must not wait a whole batch for the lock).
  void note_accelerator_bytes() {
    const auto bytes = static_cast<int64_t>(engine.accelerator_bytes());
    std::lock_guard<std::mutex> lock(queue_mutex);
    stats.accelerator_bytes = bytes;
  }

  // Takes `call` out of the queue if it has not started; false once the worker has it.
  bool withdraw(const std::shared_ptr<Call>& call) {
    std::lock_guard<std::mutex> lock(queue_mutex);
    const auto it = std::find(queue.begin(), queue.end(), call);
    if (it == queue.end()) return false;
    queue.erase(it);
    return true;
  }

 private:
  // The oldest call and the queued calls that can join it (queue_mutex held), oldest first.
  void take_compatible(std::vector<std::shared_ptr<Call>>& batch, int& images);

  void work() {
    std::unique_lock<std::mutex> lock(queue_mutex);
    for (;;) {
      queue_changed.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping: no caller is left
      std::vector<std::shared_ptr<Call>> batch{queue.front()};
      queue.pop_front();
      int images = batch.front()->params.batch;
      take_compatible(batch, images);
      if (batch_wait.count() > 0 && images < max_batch) {
        const auto until = std::chrono::steady_clock::now() + batch_wait;
        while (images < max_batch && !stopping &&
               queue_changed.wait_until(lock, until) != std::cv_status::timeout)
          take_compatible(batch, images);
        take_compatible(batch, images);
      }
      lock.unlock();
      run(batch);
      lock.lock();
    }
  }

  // Runs one batch of calls and hands each its outcome.
  void run(const std::vector<std::shared_ptr<Call>>& batch);
};

struct Model::Impl {
  std::shared_ptr<Runtime::Impl> runtime;  // keeps the engine alive
  std::unique_ptr<pipeline::DiffusionModel> model;
  std::string name;
  std::string taesd_name;  // the TAESD's file or folder name, for the PNG's "VAE"

  // Caller holds the runtime's executor.
  void set_taesd(const std::string& path) {
    if (path.empty()) {
      model->set_tiny_vae(nullptr);
      taesd_name.clear();
      return;
    }
    model->set_tiny_vae(weights::TinyAutoencoderWeights::open(path));
    taesd_name = Model::taesd_name(path);
  }
  ~Impl() {
    if (!model) return;
    // Freeing executables and resident weights touches the engine's backends.
    std::lock_guard<FifoMutex> lock(runtime->executor);
    model.reset();
    runtime->engine.trim();  // scratch sized for its shapes, its now idle programs
    runtime->note_accelerator_bytes();
    return_free_heap_to_system();
  }
};

void Runtime::Impl::take_compatible(std::vector<std::shared_ptr<Call>>& batch, int& images) {
  const Call& head = *batch.front();
  for (auto it = queue.begin(); it != queue.end();) {
    Call& c = **it;
    // The model's configuration is fixed once loaded: reading it needs no executor.
    if (c.model == head.model && images + c.params.batch <= max_batch &&
        pipeline::can_batch_together(*head.model->model, head.params, c.params)) {
      images += c.params.batch;
      batch.push_back(*it);
      it = queue.erase(it);
    } else {
      ++it;
    }
  }
}

void Runtime::Impl::run(const std::vector<std::shared_ptr<Call>>& batch) {
  std::vector<const pipeline::Txt2ImgParams*> params;
  for (const auto& c : batch)
    params.push_back(&c->params);
  std::vector<pipeline::Txt2ImgOutcome> outcomes(batch.size());
  {
    std::lock_guard<FifoMutex> lock(executor);
    pipeline::DiffusionModel& model = *batch.front()->model->model;
    try {
      outcomes = pipeline::txt2img_batch(model, model.scheduler_config(), params);
    } catch (...) {
      for (auto& o : outcomes)
        o.error = std::current_exception();
    }
    // A batch too big for memory at this size: each call alone may still fit.
    const bool all_oom = std::all_of(outcomes.begin(), outcomes.end(), [](const auto& o) {
      return o.error && is_out_of_memory(o.error);
    });
    if (batch.size() > 1 && all_oom)
      for (size_t i = 0; i < batch.size(); ++i)
        outcomes[i] =
            std::move(pipeline::txt2img_batch(model, model.scheduler_config(), {&params[i], 1})[0]);
    note_accelerator_bytes();
  }
  {
    std::lock_guard<std::mutex> lock(queue_mutex);
    stats.calls += static_cast<int64_t>(batch.size());
    stats.batches += 1;
    stats.largest_batch = std::max(stats.largest_batch, static_cast<int>(batch.size()));
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Call& c = *batch[i];
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      c.outcome = std::move(outcomes[i]);
      c.done = true;
    }
    c.changed.notify_all();
  }
}

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
  HYRT_CHECK(options.max_batch >= 1 && options.max_batch <= 256, kInvalidArgument,
             "RuntimeOptions::max_batch must be in [1, 256], got ", options.max_batch);
  HYRT_CHECK(options.batch_wait_ms >= 0 && options.batch_wait_ms <= 60000, kInvalidArgument,
             "RuntimeOptions::batch_wait_ms must be in [0, 60000], got ", options.batch_wait_ms);
  const pipeline::PrecisionSettings ps =
      pipeline::precision_settings(pipeline::parse_precision(options.precision));
  exec::EngineOptions eo;
  eo.num_threads = options.num_threads;
  eo.placement = plan::parse_placement_mode(options.placement);
  eo.device = options.device;
  eo.int8_mode = ps.int8_mode;
  eo.float_precision = ps.float_precision;
  impl_ = std::make_shared<Impl>(eo);
  impl_->quantize_on_load = ps.quantize_int8;
  impl_->cache_bytes = options.cache_bytes > 0 ? options.cache_bytes : default_cache_bytes();
  impl_->max_batch = options.max_batch;
  impl_->batch_wait = std::chrono::milliseconds(options.batch_wait_ms);
  impl_->lora_dir = options.lora_dir;
}
Runtime::~Runtime() = default;
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;

std::string Runtime::accelerator() const {
  return impl_->engine.accelerator_status();
}

RuntimeStats Runtime::stats() const {
  std::lock_guard<std::mutex> lock(impl_->queue_mutex);
  RuntimeStats s = impl_->stats;
  s.waiting = static_cast<int>(impl_->queue.size());
  return s;
}

Model Runtime::load(const std::string& path, const LoadOptions& options) {
  auto impl = std::make_unique<Model::Impl>();
  impl->runtime = impl_;
  pipeline::ModelOptions mo;
  if (!options.config_dir.empty()) mo.config_dir = options.config_dir;
  mo.quantize_int8 = options.quantize_int8 || impl_->quantize_on_load;
  mo.cache_bytes = impl_->cache_bytes;
  {
    std::lock_guard<FifoMutex> lock(impl_->executor);
    impl->model = pipeline::DiffusionModel::open(path, impl_->engine, mo);
    if (!options.taesd.empty()) impl->set_taesd(options.taesd);
    impl_->note_accelerator_bytes();
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

void Model::set_taesd(const std::string& path) {
  std::lock_guard<FifoMutex> lock(impl_->runtime->executor);
  impl_->set_taesd(path);
}

std::string Model::taesd_name(const std::string& path) {
  return weights::TinyAutoencoderWeights::display_name(path);
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
  HYRT_CHECK(!o.mask || o.init_image, kInvalidArgument,
             "a mask needs an init_image (the picture to repaint)");
  pipeline::Txt2ImgParams p;
  // LoRAs: the options' and the prompt's tags (read here, on the calling thread).
  pipeline::PromptLoras tags = pipeline::extract_lora_tags(o.prompt);
  p.prompt = std::move(tags.prompt);
  std::vector<weights::LoraUse> loras;
  std::vector<std::string> lora_list;
  for (const GenerateOptions::Lora& l : o.loras) {
    HYRT_CHECK(std::isfinite(l.multiplier), kInvalidArgument, "LoRA '", l.path,
               "': the multiplier is not a finite number");
    HYRT_CHECK(std::filesystem::is_regular_file(l.path), kInvalidArgument, "LoRA '", l.path,
               "': no such file");
    loras.push_back({impl_->runtime->lora_file(l.path), l.multiplier});
    lora_list.push_back(str_cat(std::filesystem::path(l.path).stem().string(), ":", l.multiplier));
  }
  for (const pipeline::LoraTag& t : tags.loras) {
    const std::filesystem::path file =
        pipeline::lora_tag_file(impl_->runtime->lora_dir, t, "RuntimeOptions::lora_dir");
    loras.push_back({impl_->runtime->lora_file(file.string()), t.multiplier});
  }
  p.loras = std::move(loras);
  p.negative_prompt = o.negative_prompt;
  // img2img without a size: the picture's, rounded down to the VAE factor (diffusers'
  // get_default_height_width, as `hyrt generate --init-image` does).
  const int f = m.vae_scale_factor();
  const int native = m.default_image_size();
  std::optional<pipeline::Image8> picture;
  if (o.init_image) picture = image8_of(*o.init_image, "init_image");
  p.width = o.width > 0 ? o.width : picture ? std::max(f, picture->width / f * f) : native;
  p.height = o.height > 0 ? o.height : picture ? std::max(f, picture->height / f * f) : native;
  p.steps = o.steps;
  p.cfg_scale = o.cfg_scale;
  p.seed = o.seed;
  p.sampler = pipeline::parse_sampler_kind(o.sampler);
  p.batch = o.batch;
  p.clip_skip = o.clip_skip;
  if (o.hires)
    p.hires = pipeline::HiresFix{.upscaler = pipeline::parse_hires_upscaler(o.hires->upscaler),
                                 .scale = o.hires->scale,
                                 .width = o.hires->width,
                                 .height = o.hires->height,
                                 .steps = o.hires->steps,
                                 .strength = o.hires->strength};
  p.tiny_vae = o.taesd;
  HYRT_CHECK(!o.taesd || m.has_tiny_vae(), kInvalidArgument,
             "GenerateOptions::taesd: the model was loaded without a TAESD decoder "
             "(LoadOptions::taesd)");
  const CancelToken cancel = o.cancel;
  pipeline::validate_txt2img_params(p, f);  // sizes first: the resize below allocates by them
  if (picture) {
    // Resized here, on the calling thread, not on the executor's.
    pipeline::InitImage init;
    init.strength = o.strength;
    (void)pipeline::first_img2img_step(p.steps, o.strength);  // a clear error before the resize
    init.image = pipeline::picture_tensor(*picture, p.width, p.height);
    picture.reset();
    if (o.mask) init.mask = pipeline::mask_tensor(image8_of(*o.mask, "mask"), p.width, p.height);
    p.init = std::move(init);
    pipeline::validate_txt2img_params(p, f);
  }

  auto call = std::make_shared<Call>();
  call->model = impl_.get();
  call->prompt = o.prompt;
  call->lora_list = std::move(lora_list);
  Call* c = call.get();  // the worker holds `call` while params' callbacks can run
  p.on_step = [c](int step, int total) {
    {
      std::lock_guard<std::mutex> lock(c->mutex);
      c->steps_done = step;
      c->steps_total = total;
    }
    c->changed.notify_all();
  };
  p.cancelled = [c, cancel] { return cancel.cancelled() || c->abandoned.load(); };
  if (o.on_preview) {
    HYRT_CHECK(o.preview_every >= 1, kInvalidArgument,
               "GenerateOptions::preview_every must be at least 1 (got ", o.preview_every, ")");
    // On the worker, which holds the executor: decode the first image's prediction.
    p.on_denoised = [c, every = o.preview_every, tiny = m.has_tiny_vae(), &m](int step, int total,
                                                                              const Tensor& x0) {
      if (step % every != 0 && step != total) return;
      pipeline::Image8 img = pipeline::preview_image8(m, x0, tiny);
      {
        std::lock_guard<std::mutex> lock(c->mutex);
        c->preview = Image{img.width, img.height, std::move(img.pixels), "", 0};
        c->preview_step = step;
      }
      c->changed.notify_all();
    };
  }
  call->params = std::move(p);
  Runtime::Impl& runtime = *impl_->runtime;
  runtime.submit(call);

  // Wait, running the user's on_step here for every step the worker reports. A cancel while
  // still queued withdraws the call at once; once running, the worker stops it at its next
  // step boundary.
  int reported = 0;
  std::unique_lock<std::mutex> lock(call->mutex);
  for (;;) {
    call->changed.wait_for(lock, std::chrono::milliseconds(20), [&] {
      return call->done || call->steps_done > reported || call->preview.has_value();
    });
    while (reported < call->steps_done && !(call->done && call->outcome.error) &&
           !cancel.cancelled()) {
      const int step = ++reported, total = call->steps_total;
      lock.unlock();
      try {
        if (o.on_step) o.on_step(step, total);
      } catch (...) {
        call->abandoned = true;
        throw;
      }
      lock.lock();
    }
    // Once cancelled, the steps the worker finished meanwhile are not reported (nor their
    // previews): the caller asked for the call to end, and a callback after its cancel would
    // only mislead it.
    if (cancel.cancelled()) {
      reported = call->steps_done;
      call->preview.reset();
    }
    // A preview once its step has been reported (the worker decodes it after that step).
    if (call->preview && call->preview_step <= reported && !(call->done && call->outcome.error)) {
      const Image preview = std::move(*call->preview);
      const int at = call->preview_step, total = call->steps_total;
      call->preview.reset();
      lock.unlock();
      try {
        o.on_preview(preview, at, total);
      } catch (...) {
        call->abandoned = true;
        throw;
      }
      lock.lock();
    }
    if (call->done && (!call->preview || call->outcome.error)) break;
    if (cancel.cancelled() && runtime.withdraw(call))
      throw Cancelled("cancelled before it started (it was waiting for the executor)");
  }
  lock.unlock();
  if (call->outcome.error) std::rethrow_exception(call->outcome.error);
  const pipeline::Txt2ImgParams& q = call->params;
  const pipeline::Txt2ImgResult& r = call->outcome.result;

  pipeline::GenerationParameters gp =
      pipeline::generation_parameters(*impl_->model, q, impl_->taesd_name);
  gp.prompt = call->prompt;  // verbatim, LoRA tags included (as A1111 records it)
  gp.model = impl_->name;
  if (!call->lora_list.empty()) {
    std::string list;
    for (const std::string& l : call->lora_list)
      list += (list.empty() ? "" : ", ") + l;
    gp.extra.emplace_back("LoRA", list);  // GenerateOptions::loras (tags stay in the prompt)
  }
  gp.extra.emplace_back("Version", "hyrt");
  // The pictures' size: the hires fix's second pass makes them larger than q.width x q.height.
  const int out_h = static_cast<int>(r.images.shape()[1]),
            out_w = static_cast<int>(r.images.shape()[2]);
  const size_t pixels = static_cast<size_t>(out_w) * out_h * 3;
  std::vector<Image> out;
  for (int i = 0; i < q.batch; ++i) {
    // One seed per batch: the latents of item i follow item i-1's in the generator.
    if (q.batch > 1) gp.extra.emplace_back("Batch index", std::to_string(i));
    const pipeline::Image8 img =
        pipeline::float_to_image8({r.images.as<float>() + i * pixels, pixels}, out_h, out_w);
    out.push_back({out_w, out_h, img.pixels, pipeline::format_a1111_parameters(gp), q.seed});
    if (q.batch > 1) gp.extra.pop_back();
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

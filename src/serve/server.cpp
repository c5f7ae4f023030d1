#include "serve/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <httplib.h>

#include "core/build_info.h"
#include "core/sysinfo.h"
#include "pipeline/txt2img.h"
#include "serve/job_queue.h"
#include "serve/metrics.h"

namespace hyrt::serve {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Whether the client of `req` has closed its connection while we work on its answer.
// cpp-httplib 0.14 and later (Debian 13 has 0.18) say so through
// Request::is_connection_closed. Debian 12's 0.11 gives a handler no way to reach its
// socket, so we find it among the process's descriptors by its two port numbers and peek at
// it: a peer that closed reads as end of file. When the socket cannot be found the client
// counts as present: a wrong "gone" would cancel someone's picture.
template <class Request>
bool connection_closed(const Request& req) {
  if constexpr (requires { req.is_connection_closed(); }) {
    return req.is_connection_closed();
  } else {
    DIR* dir = opendir("/proc/self/fd");
    if (!dir) return false;
    bool closed = false;
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
      const int fd = std::atoi(e->d_name);
      sockaddr_storage local{}, peer{};
      socklen_t local_len = sizeof local, peer_len = sizeof peer;
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) != 0 ||
          getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0)
        continue;
      auto port_of = [](const sockaddr_storage& a) -> int {
        if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
        if (a.ss_family == AF_INET6)
          return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
        return -1;
      };
      if (port_of(local) != req.local_port || port_of(peer) != req.remote_port) continue;
      char byte;
      const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
      break;
    }
    closedir(dir);
    return closed;
  }
}

// A model the server offers: its A1111 names and where it is.
struct ModelEntry {
  std::string name;      // model_name: the file name without .safetensors, or the folder's
  std::string filename;  // the path as given
  std::string title;     // what A1111 shows and clients send back: the file or folder name
};

ModelEntry make_entry(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p = fs::path(path).lexically_normal();
  std::string title = (p.has_filename() ? p : p.parent_path()).filename().string();
  std::string name = title;
  if (fs::path(title).extension() == ".safetensors") name = fs::path(title).stem().string();
  return {name, path, title};
}

// Where a running job is, for GET /sdapi/v1/progress.
struct Progress {
  int step = 0;  // steps done in the current iteration
  int steps = 0;
  int iteration = 0;  // 0-based
  int iterations = 0;
  Clock::time_point started;
  const char* job = "txt2img";  // or "img2img", as A1111's state.job says
  std::string current_image;    // the latest live preview, base64 PNG; "" for none yet
};

}  // namespace

struct Server::Impl {
  ServerOptions opt;
  Runtime runtime;
  Metrics metrics;
  httplib::Server http;
  std::thread listener;
  std::atomic<bool> stopped{false};
  int bound_port = 0;
  Clock::time_point started_at = Clock::now();

  std::mutex models_mu;  // guards the fields below
  std::vector<ModelEntry> catalogue;
  std::map<std::string, Model> loaded;  // by name; generate() is called by the worker only
  // By model name: its TAESD's name (Model::taesd_name, as the PNG parameters write it), or "".
  std::map<std::string, std::string> taesd_of;
  std::string default_model;

  std::mutex load_mu;  // one model load at a time: two workers never load the same model twice

  std::mutex progress_mu;  // guards the fields below
  // The running jobs by start order (begin(): the oldest, which /progress reports).
  std::map<uint64_t, Progress> running;
  uint64_t started_jobs = 0;
  bool interrupted = false;     // the last job to start was interrupted since; as A1111 keeps it
  std::string timestamp = "0";  // when the last job started (A1111's job_timestamp)

  std::mutex rng_mu;
  std::mt19937_64 rng{std::random_device{}()};

  std::unique_ptr<JobQueue> queue;  // last: its worker uses everything above

  explicit Impl(ServerOptions o) : opt(std::move(o)), runtime(opt.runtime) {
    check_options();
    refresh_catalogue();
    default_model = catalogue.front().name;
    model(default_model);  // load now: a bad model fails the start, not the first request
    // max_batch counts images, and most requests are one image: as many workers as a batch
    // holds lets the Runtime fill it.
    queue = std::make_unique<JobQueue>(
        opt.queue_capacity, [this](Job& job) { run(job); },
        size_t(std::max(1, opt.runtime.max_batch)));
    routes();
  }

  void check_options() {
    if (opt.models.empty() && opt.models_dir.empty())
      throw Error(ErrorCode::kInvalidArgument, "hyrt serve: no model given");
  }

  // The models named on the command line, then those in models_dir (sorted, names not
  // already taken).
  void refresh_catalogue() {
    std::vector<ModelEntry> list;
    auto add = [&](const std::string& path) {
      ModelEntry e = make_entry(path);
      for (const ModelEntry& x : list)
        if (x.name == e.name) return;
      list.push_back(std::move(e));
    };
    for (const std::string& m : opt.models)
      add(m);
    if (!opt.models_dir.empty()) {
      namespace fs = std::filesystem;
      std::error_code ec;
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(opt.models_dir, ec)) {
        if ((e.is_regular_file() && e.path().extension() == ".safetensors") ||
            (e.is_directory() && fs::exists(e.path() / "model_index.json")))
          found.push_back(e.path().string());
      }
      if (ec)
        throw Error(ErrorCode::kNotFound, "--models-dir '" + opt.models_dir + "': " + ec.message());
      std::sort(found.begin(), found.end());
      for (const std::string& f : found)
        add(f);
    }
    if (list.empty())
      throw Error(ErrorCode::kNotFound, "no models in --models-dir '" + opt.models_dir + "'");
    std::lock_guard<std::mutex> lock(models_mu);
    catalogue = std::move(list);
  }

  // A checkpoint name as clients send it: title, name, the path, or A1111's "title [hash]".
  std::optional<std::string> resolve(std::string s) {
    if (auto bracket = s.find(" ["); bracket != std::string::npos) s.resize(bracket);
    std::lock_guard<std::mutex> lock(models_mu);
    for (const ModelEntry& e : catalogue)
      if (s == e.name || s == e.title || s == e.filename) return e.name;
    return std::nullopt;
  }

  // The loaded model called `name`, loading it first if needed.
  Model& model(const std::string& name) {
    auto find = [&]() -> Model* {
      std::lock_guard<std::mutex> lock(models_mu);
      auto it = loaded.find(name);
      return it == loaded.end() ? nullptr : &it->second;
    };
    if (Model* m = find()) return *m;
    std::lock_guard<std::mutex> load_lock(load_mu);
    if (Model* m = find()) return *m;  // another worker loaded it meanwhile
    std::string path;
    {
      std::lock_guard<std::mutex> lock(models_mu);
      for (const ModelEntry& e : catalogue)
        if (e.name == name) path = e.filename;
    }
    if (path.empty()) throw ApiError(422, "sd_model_checkpoint", "unknown model \"" + name + "\"");
    const auto t0 = Clock::now();
    LoadOptions lo = opt.load;
    lo.taesd.clear();  // offered below: each model takes the first that fits
    Model m = runtime.load(path, lo);
    std::string taesd;
    for (const std::string& t : opt.taesd) {
      try {
        m.set_taesd(t);
        taesd = Model::taesd_name(t);
        break;
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kInvalidArgument) throw;  // an unreadable file: not silently
      }
    }
    if (!opt.taesd.empty())
      log_line("model " + name + ": " +
               (taesd.empty() ? "no --taesd decoder fits its latent space" : "TAESD " + taesd));
    metrics.count("hyrt_model_loads_total");
    log_line("loaded model " + name + " (" + path + ") in " +
             std::to_string(static_cast<int>(seconds_since(t0) * 1000)) + " ms");
    std::lock_guard<std::mutex> lock(models_mu);
    taesd_of[name] = taesd;
    return loaded.emplace(name, std::move(m)).first->second;
  }

  void log_line(const std::string& line) {
    if (opt.log)
      opt.log(line);
    else
      std::fprintf(stderr, "hyrt serve: %s\n", line.c_str());
  }

  // A worker: runs one job's iterations, keeping the images done before an interrupt.
  void run(Job& job) {
    const Txt2ImgRequest& r = job.request;
    Model& m = model(job.model);
    GenerateOptions o;
    o.prompt = r.prompt;
    o.negative_prompt = r.negative_prompt;
    o.width = r.width > 0 ? r.width : m.native_size();
    o.height = r.height > 0 ? r.height : m.native_size();
    o.steps = r.steps;
    o.cfg_scale = r.cfg_scale;
    o.sampler = r.sampler;
    o.batch = r.batch_size;
    o.clip_skip = r.clip_skip;
    if (r.hires) {
      // Bound the second pass's size as the first's (its rounding only makes it smaller).
      const double w2 = r.hires->width > 0 ? r.hires->width : o.width * r.hires->scale;
      const double h2 = r.hires->height > 0 ? r.hires->height : o.height * r.hires->scale;
      if (w2 * h2 > static_cast<double>(opt.limits.max_pixels))
        throw ApiError(
            422, "hr_scale",
            "the hires size must be at most " + std::to_string(opt.limits.max_pixels) + " pixels");
      o.hires = r.hires;
    }
    o.cancel = job.cancel;
    if (!r.sd_vae.empty()) {
      std::string has;
      {
        std::lock_guard<std::mutex> lock(models_mu);
        has = taesd_of[job.model];
      }
      // A1111's names keep the extension; clients that leave it off are understood too.
      const auto stem = [](const std::string& n) {
        return n.ends_with(".safetensors") ? n.substr(0, n.size() - 12) : n;
      };
      if (has.empty() || (has != r.sd_vae && stem(has) != r.sd_vae))
        throw ApiError(422, "override_settings.sd_vae",
                       "model \"" + job.model + "\" " +
                           (has.empty() ? std::string("has no TAESD decoder")
                                        : "decodes with \"" + has + "\"") +
                           ", not \"" + r.sd_vae + "\"");
      o.taesd = true;
    }
    if (r.img2img) {
      o.init_image = r.img2img->picture;
      o.mask = r.img2img->mask;
      o.strength = r.img2img->denoising_strength;
    }
    metrics.queue_wait_seconds().observe(seconds_since(job.submitted));
    uint64_t id = 0;
    {
      std::lock_guard<std::mutex> lock(progress_mu);
      id = started_jobs++;
      Progress& p = running[id];
      p.steps = r.steps;
      p.iterations = r.n_iter;
      p.started = Clock::now();
      p.job = r.img2img ? "img2img" : "txt2img";
      interrupted = false;
      char stamp[32];
      const std::time_t now = std::time(nullptr);
      std::tm tm{};
      gmtime_r(&now, &tm);
      std::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
      timestamp = stamp;
    }
    struct Done {  // the job leaves the progress however it ends
      Impl* s;
      uint64_t id;
      ~Done() {
        std::lock_guard<std::mutex> lock(s->progress_mu);
        s->running.erase(id);
      }
    } done{this, id};
    // on_step runs on this thread (hyrt.h), also when the Runtime batches this call.
    Clock::time_point step_start;
    o.on_step = [&](int step, int total) {
      metrics.step_seconds().observe(seconds_since(step_start));
      step_start = Clock::now();
      std::lock_guard<std::mutex> lock(progress_mu);
      Progress& p = running[id];
      p.step = step;
      p.steps = total;
    };
    if (opt.preview_every > 0) {
      o.preview_every = opt.preview_every;
      o.on_preview = [&](const Image& preview, int, int) {
        std::string png;
        try {
          png = encode_png_base64(preview);
        } catch (const std::exception& e) {  // a preview is not worth the job
          log_line(std::string("live preview not encoded: ") + e.what());
          return;
        }
        std::lock_guard<std::mutex> lock(progress_mu);
        running[id].current_image = std::move(png);
      };
    }
    for (int iter = 0; iter < r.n_iter; ++iter) {
      {
        std::lock_guard<std::mutex> lock(progress_mu);
        Progress& p = running[id];
        p.iteration = iter;
        p.step = 0;
      }
      o.seed = iteration_seed(job.seed, r.batch_size, iter);
      step_start = Clock::now();
      try {
        for (Image& img : m.generate(o))
          job.images.push_back(std::move(img));
      } catch (const Cancelled&) {
        job.interrupted = true;
        break;
      }
      metrics.count("hyrt_images_generated_total", r.batch_size);
    }
  }

  // The oldest running job's progress; job_count counts the running and the waiting jobs.
  json progress_json(bool skip_current_image) {
    std::lock_guard<std::mutex> lock(progress_mu);
    const bool active = !running.empty();
    const Progress p = active ? running.begin()->second : Progress{};
    const size_t waiting = queue->waiting();
    double fraction = 0, eta = 0;
    if (active && p.steps > 0 && p.iterations > 0) {
      fraction = (p.iteration * p.steps + p.step) / double(p.iterations * p.steps);
      const double elapsed = seconds_since(p.started);
      if (fraction > 0) eta = elapsed / fraction - elapsed;
    }
    return {
        {"progress", fraction},
        {"eta_relative", eta},
        {"state",
         {{"skipped", false},
          {"interrupted", interrupted},
          {"stopping_generation", false},
          {"job", active ? p.job : ""},
          {"job_count", running.size() + waiting},
          {"job_timestamp", timestamp},
          {"job_no", p.iteration},
          {"sampling_step", active ? p.step : 0},
          {"sampling_steps", active ? p.steps : 0},
          {"queue_length", waiting}}},
        {"current_image", active && !skip_current_image && !p.current_image.empty()
                              ? json(p.current_image)
                              : json(nullptr)},
        {"textinfo", nullptr},
        {"current_task", nullptr},
    };
  }

  json models_json() {
    std::lock_guard<std::mutex> lock(models_mu);
    json out = json::array();
    for (const ModelEntry& e : catalogue)
      out.push_back({{"title", e.title},
                     {"model_name", e.name},
                     {"hash", nullptr},
                     {"sha256", nullptr},
                     {"filename", e.filename},
                     {"config", nullptr}});
    return out;
  }

  json options_json() {
    std::lock_guard<std::mutex> lock(models_mu);
    std::string title = default_model;
    for (const ModelEntry& e : catalogue)
      if (e.name == default_model) title = e.title;
    return {{"sd_model_checkpoint", title},
            {"samples_format", "png"},
            {"CLIP_stop_at_last_layers", 1},  // per request: override_settings
            {"sd_checkpoints_limit", catalogue.size()},
            {"enable_pnginfo", true}};
  }

  static void reply(httplib::Response& res, int status, const json& body) {
    res.status = status;
    res.set_content(body.dump(), "application/json");
  }
  static void reply_error(httplib::Response& res, int status, const std::string& field,
                          const std::string& message) {
    reply(res, status, error_json(status, field, message));
  }

  // Parses a JSON object body for the small endpoints.
  static json object_body(const httplib::Request& req) {
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded()) throw ApiError(400, "", "the request body is not valid JSON");
    if (!body.is_object()) throw ApiError(400, "", "the request body must be a JSON object");
    return body;
  }

  // POST /sdapi/v1/txt2img and /sdapi/v1/img2img: one job, queued and waited for.
  void generate(const httplib::Request& req, httplib::Response& res, bool img2img) {
    const auto t0 = Clock::now();
    auto job = std::make_shared<Job>();
    const auto resolve_model = [this](const std::string& s) { return resolve(s); };
    job->request = img2img ? parse_img2img(req.body, opt.limits, resolve_model)
                           : parse_txt2img(req.body, opt.limits, resolve_model);
    {
      std::lock_guard<std::mutex> lock(models_mu);
      job->model = job->request.model.empty() ? default_model : job->request.model;
    }
    if (job->request.seed >= 0) {
      job->seed = static_cast<uint64_t>(job->request.seed);
    } else {
      std::lock_guard<std::mutex> lock(rng_mu);
      job->seed = rng() & 0xffffffffu;  // A1111 draws 32-bit seeds
    }
    if (!queue->submit(job)) {
      metrics.count("hyrt_queue_rejected_total");
      // A guess at when a place frees up: the mean job time so far (at least a second).
      const uint64_t n = metrics.request_seconds().count();
      const double mean = n ? metrics.request_seconds().sum() / n : 1.0;
      res.set_header("Retry-After", std::to_string(std::max(1, int(std::ceil(mean)))));
      reply_error(res, 503, "",
                  "the queue is full (" + std::to_string(queue->capacity()) +
                      " jobs waiting); retry later");
      return;
    }
    while (!queue->wait(*job, std::chrono::milliseconds(100))) {
      if (connection_closed(req)) {
        queue->withdraw(job);
        metrics.count("hyrt_jobs_abandoned_total");
        queue->wait(*job, std::chrono::hours(1));  // a running job stops at its next step
        res.status = 499;                          // nginx's "client closed request", for the log
        return;
      }
    }
    if (stopped) {
      reply_error(res, 503, "", "the server is shutting down");
      return;
    }
    if (job->error_status) {
      metrics.count("hyrt_jobs_failed_total");
      reply_error(res, job->error_status, job->error_field, job->error_message);
      return;
    }
    metrics.count(job->interrupted ? "hyrt_jobs_interrupted_total" : "hyrt_jobs_completed_total");
    reply(res, 200,
          txt2img_response(job->request, job->seed, job->images, job->model, job->interrupted));
    metrics.request_seconds().observe(seconds_since(t0));
  }

  std::string metrics_text() {
    std::map<std::string, std::pair<std::string, double>> gauges;
    gauges["hyrt_queue_length"] = {"txt2img and img2img jobs waiting", double(queue->waiting())};
    gauges["hyrt_queue_capacity"] = {"txt2img and img2img jobs that may wait",
                                     double(queue->capacity())};
    gauges["hyrt_jobs_running"] = {"txt2img and img2img jobs running (at most hyrt_workers)",
                                   double(queue->running())};
    gauges["hyrt_workers"] = {"txt2img and img2img jobs that may run at once (--max-batch)",
                              double(queue->workers())};
    const RuntimeStats rs = runtime.stats();
    gauges["hyrt_batch_size_max"] = {
        "Most generate() calls that ran as one UNet batch (largest batch so far)",
        double(rs.largest_batch)};
    gauges["hyrt_runtime_waiting_calls"] = {"generate() calls queued in the runtime, not running",
                                            double(rs.waiting)};
    std::map<std::string, std::pair<std::string, double>> counters;
    counters["hyrt_batches_total"] = {"Denoising loops run (a lone call is a batch of one)",
                                      double(rs.batches)};
    counters["hyrt_batched_calls_total"] = {
        "generate() calls finished (hyrt_batched_calls_total / hyrt_batches_total: mean batch)",
        double(rs.calls)};
    {
      std::lock_guard<std::mutex> lock(models_mu);
      gauges["hyrt_models_loaded"] = {"Models resident in memory", double(loaded.size())};
    }
    const double rss = double(current_rss_bytes());
    gauges["process_resident_memory_bytes"] = {"Resident memory of the process", rss};
    gauges["hyrt_resident_memory_bytes"] = {
        "Resident host memory of the process (accelerator memory not included)", rss};
    gauges["hyrt_accelerator_memory_bytes"] = {
        "Accelerator memory the runtime held after its last batch, load or unload (0 without "
        "one)",
        double(rs.accelerator_bytes)};
    gauges["hyrt_uptime_seconds"] = {"Seconds since the server started", seconds_since(started_at)};
    return metrics.render(gauges, counters);
  }

  // Wraps a handler: ApiError and other exceptions become JSON errors.
  template <class F>
  httplib::Server::Handler handler(F f) {
    return [this, f](const httplib::Request& req, httplib::Response& res) {
      try {
        f(req, res);
      } catch (const ApiError& e) {
        reply_error(res, e.status(), e.field(), e.what());
      } catch (const Error& e) {
        const bool caller = e.code() == ErrorCode::kInvalidArgument;
        reply_error(res, caller ? 422 : 500, "", e.what());
      } catch (const std::exception& e) {
        reply_error(res, 500, "", e.what());
      }
    };
  }

  void routes() {
    http.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(web_page(), "text/html; charset=utf-8");
    });
    http.Get("/healthz", handler([this](const httplib::Request&, httplib::Response& res) {
               reply(res, stopped ? 503 : 200,
                     {{"status", stopped ? "stopping" : "ok"}, {"version", HYRT_VERSION_STRING}});
             }));
    http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });
    http.Post("/sdapi/v1/txt2img",
              handler([this](const auto& req, auto& res) { generate(req, res, false); }));
    http.Post("/sdapi/v1/img2img",
              handler([this](const auto& req, auto& res) { generate(req, res, true); }));
    http.Get("/sdapi/v1/progress", handler([this](const auto& req, auto& res) {
               const std::string skip = req.get_param_value("skip_current_image");
               reply(res, 200, progress_json(skip == "true" || skip == "True" || skip == "1"));
             }));
    http.Post("/sdapi/v1/interrupt", handler([this](const auto&, auto& res) {
                if (queue->interrupt()) {  // every running job
                  std::lock_guard<std::mutex> lock(progress_mu);
                  interrupted = true;
                }
                reply(res, 200, json::object());
              }));
    http.Get("/sdapi/v1/sd-models",
             handler([this](const auto&, auto& res) { reply(res, 200, models_json()); }));
    // A1111's VAE list: the --taesd decoders (override_settings.sd_vae picks one).
    http.Get("/sdapi/v1/sd-vae", handler([this](const auto&, auto& res) {
               json list = json::array();
               for (const std::string& t : opt.taesd)
                 list.push_back({{"model_name", Model::taesd_name(t)}, {"filename", t}});
               reply(res, 200, list);
             }));
    http.Post("/sdapi/v1/refresh-checkpoints", handler([this](const auto&, auto& res) {
                refresh_catalogue();
                reply(res, 200, json::object());
              }));
    // A1111's Lora extension: the LoRAs prompts may name (<lora:NAME:MULT>).
    http.Get("/sdapi/v1/loras", handler([this](const auto&, auto& res) {
               json list = json::array();
               const std::string& dir = opt.runtime.lora_dir;
               std::error_code ec;
               if (!dir.empty() && std::filesystem::is_directory(dir, ec)) {
                 std::vector<std::filesystem::path> files;
                 for (const auto& e : std::filesystem::directory_iterator(dir, ec))
                   if (e.path().extension() == ".safetensors") files.push_back(e.path());
                 std::sort(files.begin(), files.end());
                 for (const auto& f : files)
                   list.push_back({{"name", f.stem().string()},
                                   {"alias", f.stem().string()},
                                   {"path", f.string()},
                                   {"metadata", json::object()}});
               }
               reply(res, 200, list);
             }));
    http.Post("/sdapi/v1/refresh-loras",
              handler([](const auto&, auto& res) { reply(res, 200, json::object()); }));
    http.Get("/sdapi/v1/samplers",
             handler([](const auto&, auto& res) { reply(res, 200, samplers_json()); }));
    http.Get(
        "/sdapi/v1/schedulers", handler([](const auto&, auto& res) {
          reply(res, 200,
                json::array({{{"name", "automatic"}, {"label", "Automatic"}, {"aliases", nullptr}},
                             {{"name", "karras"}, {"label", "Karras"}, {"aliases", nullptr}}}));
        }));
    // The hires fix's upscalers (txt2img's hr_upscaler): the pixel resize and the latent modes.
    http.Get("/sdapi/v1/upscalers", handler([](const auto&, auto& res) {
               json list = json::array();
               for (const char* name : {"None", "Lanczos"})
                 list.push_back({{"name", name},
                                 {"model_name", nullptr},
                                 {"model_path", nullptr},
                                 {"model_url", nullptr},
                                 {"scale", 4}});
               reply(res, 200, list);
             }));
    http.Get("/sdapi/v1/latent-upscale-modes", handler([](const auto&, auto& res) {
               json modes = json::array();
               for (auto u : {pipeline::HiresFix::Upscaler::kLatent,
                              pipeline::HiresFix::Upscaler::kLatentNearest})
                 modes.push_back({{"name", pipeline::hires_upscaler_name(u)}});
               reply(res, 200, modes);
             }));
    http.Post("/sdapi/v1/png-info", handler([](const httplib::Request& req, auto& res) {
                reply(res, 200, png_info(object_body(req)));
              }));
    http.Get("/sdapi/v1/options",
             handler([this](const auto&, auto& res) { reply(res, 200, options_json()); }));
    http.Post(
        "/sdapi/v1/options", handler([this](const httplib::Request& req, auto& res) {
          const json body = object_body(req);
          if (auto it = body.find("sd_model_checkpoint"); it != body.end() && !it->is_null()) {
            if (!it->is_string())
              throw ApiError(422, "sd_model_checkpoint", "sd_model_checkpoint must be a string");
            const auto name = resolve(it->get<std::string>());
            if (!name)
              throw ApiError(422, "sd_model_checkpoint",
                             "unknown model \"" + it->get<std::string>() +
                                 "\" (GET /sdapi/v1/sd-models lists them)");
            std::lock_guard<std::mutex> lock(models_mu);
            default_model = *name;
          }
          reply(res, 200, json::object());  // other options are accepted and ignored
        }));

    // Errors httplib answers itself (no route: 404, a body over the limit: 413) get a JSON
    // body like ours; ours already have one.
    http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413)
        reply_error(res, 413, "body", "the request body is larger than the server accepts");
      else if (res.status == 404)
        reply_error(res, 404, "", "no endpoint " + req.method + " " + req.path);
      else
        reply_error(res, res.status, "", "request refused");
    });
    http.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
          reply_error(res, 500, "", "internal error");
        });
    http.set_payload_max_length(opt.max_body_bytes);
    // Waiting txt2img and img2img requests each hold a pool thread, so the pool has room for a full
    // queue plus the running jobs, and more for progress, interrupt and the rest to stay answered.
    const size_t threads = opt.queue_capacity + queue->workers() + 8;
    http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };

    static thread_local Clock::time_point request_start;
    http.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
      request_start = Clock::now();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const double ms =
          std::chrono::duration<double, std::milli>(Clock::now() - request_start).count();
      std::string route = "other";
      static const char* kRoutes[] = {"/",
                                      "/healthz",
                                      "/metrics",
                                      "/sdapi/v1/txt2img",
                                      "/sdapi/v1/img2img",
                                      "/sdapi/v1/progress",
                                      "/sdapi/v1/interrupt",
                                      "/sdapi/v1/sd-models",
                                      "/sdapi/v1/sd-vae",
                                      "/sdapi/v1/samplers",
                                      "/sdapi/v1/schedulers",
                                      "/sdapi/v1/upscalers",
                                      "/sdapi/v1/png-info",
                                      "/sdapi/v1/latent-upscale-modes",
                                      "/sdapi/v1/options",
                                      "/sdapi/v1/refresh-checkpoints"};
      for (const char* r : kRoutes)
        if (req.path == r) route = r;
      metrics.count_request(route, res.status);
      // Progress polling (twice a second per open page) would drown the log.
      if (route == "/sdapi/v1/progress" && res.status == 200) return;
      char line[512];
      std::snprintf(line, sizeof line, "%s %s %d %.0f ms %zu bytes %s", req.method.c_str(),
                    req.path.c_str(), res.status, ms, res.body.size(), req.remote_addr.c_str());
      log_line(line);
    });
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Server::~Server() {
  stop();
}

void Server::start() {
  Impl& s = *impl_;
  if (s.opt.port == 0) {
    s.bound_port = s.http.bind_to_any_port(s.opt.host);
  } else {
    s.bound_port = s.http.bind_to_port(s.opt.host, s.opt.port) ? s.opt.port : -1;
  }
  if (s.bound_port <= 0)
    throw Error(ErrorCode::kIo, "cannot listen on " + s.opt.host + ":" +
                                    std::to_string(s.opt.port) +
                                    " (in use, or not an address of this machine)");
  // bind_to_port already listens: connections made from here on wait in the backlog until
  // the thread below accepts them.
  s.listener = std::thread([&s] { s.http.listen_after_bind(); });
  // httplib's stop() does nothing until the listener runs (and it would then accept
  // forever): return only once it does.
  while (!s.http.is_running())
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void Server::stop() {
  Impl& s = *impl_;
  if (s.stopped.exchange(true)) return;
  s.queue->shutdown();  // waiting handlers return first, so the pool can drain
  s.http.stop();
  if (s.listener.joinable()) s.listener.join();
}

int Server::port() const {
  return impl_->bound_port;
}

}  // namespace hyrt::serve

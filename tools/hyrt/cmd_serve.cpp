// `hyrt serve` — the AUTOMATIC1111 web API, a web page, /healthz and /metrics
// (serve/server.h). Runs until SIGINT or SIGTERM.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "commands.h"
#include "serve/server.h"

namespace hyrt::cli {
namespace {

struct ServeArgs {
  std::vector<std::string> models;
  std::string models_dir;
  std::string config_dir;
  std::string host = "127.0.0.1";
  int port = 7860;
  int threads = 0;
  std::string placement = "auto";
  std::string precision = "auto";
  int device = 0;
  size_t queue = 16;
  size_t max_body_kib = 1024;
  int max_side = 2048;
  int max_steps = 150;
  int max_batch = 1;
  int batch_wait_ms = 0;
  std::string lora_dir;
  std::vector<std::string> taesd;
  int live_previews = 0;
};

void run(const ServeArgs& a) {
  serve::ServerOptions o;
  o.models = a.models;
  o.models_dir = a.models_dir;
  if (o.models.empty() && o.models_dir.empty()) o.models.push_back(find_bundled_model());
  o.host = a.host;
  o.port = a.port;
  o.runtime.num_threads = a.threads;
  o.runtime.placement = a.placement;
  o.runtime.precision = a.precision;
  o.runtime.device = a.device;
  o.runtime.max_batch = a.max_batch;
  o.runtime.batch_wait_ms = a.batch_wait_ms;
  o.runtime.lora_dir = a.lora_dir;
  o.taesd = a.taesd;
  o.preview_every = a.live_previews;
  o.load.config_dir = a.config_dir;
  o.queue_capacity = a.queue;
  o.max_body_bytes = a.max_body_kib * 1024;
  o.limits.max_side = a.max_side;
  o.limits.max_pixels = a.max_side * a.max_side;
  o.limits.max_steps = a.max_steps;

  // SIGINT/SIGTERM are taken by sigwait below, so every thread the server starts must have
  // them blocked: block them here, before any thread exists, and the threads inherit that.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  serve::Server server(o);
  server.start();
  std::fprintf(stderr, "hyrt serve: listening on http://%s:%d/ (A1111 API at /sdapi/v1/)\n",
               a.host.c_str(), server.port());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "hyrt serve: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server.stop();
}

CommandRegistrar reg(15, [](CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto* c = app.add_subcommand(
      "serve",
      "Serve the AUTOMATIC1111 web API (/sdapi/v1/txt2img, progress, interrupt, models, "
      "samplers, options), a web page at /, /healthz and /metrics; models stay loaded");
  c->add_option("-m,--model", a->models,
                "A model to serve (repeat for more; the first is the default). Default: the "
                "bundled shapes model, or $HYRT_MODEL");
  c->add_option("--models-dir", a->models_dir,
                "Also offer every *.safetensors file and diffusers folder in this folder "
                "(loaded on first use)");
  c->add_option("--config-dir", a->config_dir,
                "Diffusers-layout folder with component configs and tokenizer/ (for single files)");
  c->add_option("--host", a->host, "Address to listen on (0.0.0.0: every interface)")
      ->capture_default_str();
  c->add_option("--port", a->port, "TCP port (0: any free port)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  c->add_option("-t,--threads", a->threads, "Host threads (default: all cores)");
  add_placement_option(c, &a->placement);
  c->add_option("--device", a->device, "CUDA device index")->capture_default_str();
  add_precision_option(c, &a->precision);
  c->add_option("--queue", a->queue,
                "txt2img requests that may wait while others run; more get 503 + Retry-After")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  c->add_option("--max-body-kib", a->max_body_kib, "Largest request body accepted (KiB)")
      ->capture_default_str();
  c->add_option("--max-size", a->max_side, "Largest width or height a request may ask for")
      ->check(CLI::Range(8, 16384))
      ->capture_default_str();
  c->add_option("--max-steps", a->max_steps, "Most denoising steps a request may ask for")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  c->add_option("--lora-dir", a->lora_dir,
                "Folder of LoRA .safetensors files that prompts name as <lora:NAME:MULT> (A1111's "
                "syntax); GET /sdapi/v1/loras lists them (default $HYRT_LORA_DIR)")
      ->envname("HYRT_LORA_DIR");
  c->add_option("--taesd", a->taesd,
                "TAESD decoder (diffusers AutoencoderTiny folder or file, or taesd_decoder."
                "safetensors) offered as a VAE: requests pick it with override_settings.sd_vae = "
                "its name (GET /sdapi/v1/sd-vae); repeatable (taesd for SD 1.x, taesdxl for SDXL: "
                "each model takes the first that fits)")
      ->check(CLI::ExistingPath);
  c->add_option("--live-previews", a->live_previews,
                "Every N steps (and after the last) the running job's predicted picture becomes "
                "/sdapi/v1/progress's current_image, as A1111's live previews: decoded with the "
                "model's --taesd decoder when it has one, else with its VAE (slow on a CPU); "
                "0 = off")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--max-batch", a->max_batch,
                "Run up to this many txt2img jobs at once and let requests that wait together "
                "(same model, size, steps, sampler, guidance on/off) share one UNet batch of up "
                "to this many images. 1: one job at a time. On the host batched pictures equal "
                "lone ones; on CUDA they may differ in the last bits")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  c->add_option("--batch-wait-ms", a->batch_wait_ms,
                "How long a batch with room waits for more requests before it starts (ms; 0: "
                "batches form only from requests that queued while the previous one ran)")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  c->callback([a] { run(*a); });
});

}  // namespace
}  // namespace hyrt::cli

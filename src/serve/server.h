// `hyrt serve`: an HTTP server speaking the AUTOMATIC1111 web API (/sdapi/v1/...) over hyrt's
// public API, with a small web page at `/`, GET /healthz and GET /metrics.
//
// Shape: one hyrt::Runtime and one JobQueue (a bounded FIFO with max(1,
// runtime.max_batch) worker threads, which alone call generate() on the loaded Models, so
// that the Runtime can batch the jobs that run at once); HTTP requests are served by
// cpp-httplib's thread pool, whose txt2img and img2img handlers queue a job and wait for it.
// Models load once and stay resident: the default model when the Server is constructed, the
// others on first use.
//
// Thread safety: start(), stop() and port() may be called from any thread; the destructor
// stops the server.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hyrt/hyrt.h"
#include "serve/a1111_api.h"

namespace hyrt::serve {

struct ServerOptions {
  // Model paths (as Runtime::load takes them); the first is the default. Each is known by its
  // file or folder name without .safetensors (A1111's model_name).
  std::vector<std::string> models;
  // A folder whose *.safetensors files and diffusers folders (with model_index.json) are
  // offered too, loaded on first use; "" for none.
  std::string models_dir;
  std::string host = "127.0.0.1";
  int port = 7860;  // 0: any free port (see port())
  RuntimeOptions runtime;
  LoadOptions load;
  // TAESD decoders offered as A1111 VAEs (GET /sdapi/v1/sd-vae; a request picks one with
  // override_settings.sd_vae, by its name: Model::taesd_name, with or without .safetensors). Each
  // model gets the first that fits its latent space (taesd for SD 1.x, taesdxl for SDXL); a request
  // naming one its model did not get is refused (422).
  std::vector<std::string> taesd;
  // Live previews: every this many steps (and after the last) the running job's predicted
  // picture becomes GET /sdapi/v1/progress's current_image (A1111's live previews; a base64
  // PNG, left out with ?skip_current_image=true). Decoded with the model's TAESD decoder when it
  // has one (milliseconds), else with its VAE (as long as the final decode). 0: none.
  int preview_every = 0;
  size_t queue_capacity = 16;        // txt2img and img2img jobs that may wait; more get 503
  size_t max_body_bytes = 1u << 20;  // larger request bodies get 413
  Limits limits;
  // One line per request (method, path, status, milliseconds, bytes, client); default: stderr.
  std::function<void(const std::string&)> log;
};

class Server {
 public:
  // Loads the default model (throws hyrt::Error: kInvalidArgument without any model,
  // whatever Runtime::load throws for a bad one).
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and serves on a thread of its own; returns once requests are accepted.
  // Throws hyrt::Error (kIo) if the address cannot be bound.
  void start();
  // Interrupts the running job, drops the waiting ones (their clients get 503) and stops
  // serving; idempotent.
  void stop();
  // The bound port (after start()).
  int port() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The web page served at `/` (HTML with its script inline), compiled into the binary.
const char* web_page();

}  // namespace hyrt::serve

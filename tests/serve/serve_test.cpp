// `hyrt serve` over real HTTP: a Server on an ephemeral port with the bundled model, spoken
// to with cpp-httplib's client as an A1111 client would. Small pictures (64x64) and few steps
// keep each test well under a second of generation on two cores.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "e2e/run_hyrt.h"
#include "pipeline/image_io.h"
#include "serve/a1111_api.h"
#include "serve/server.h"
#include "test_util.h"

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

const std::string kModelFile = HYRT_SOURCE_DIR "/models/shapes-int8.safetensors";
const std::string kModelFolder = HYRT_SOURCE_DIR "/models/shapes";

// An answer, kept past its httplib::Result (which cannot be default-constructed).
struct Reply {
  int status = 0;
  std::string body;
  httplib::Headers headers;
  bool has_header(const std::string& k) const { return headers.count(k) > 0; }
  std::string get_header_value(const std::string& k) const {
    auto it = headers.find(k);
    return it == headers.end() ? "" : it->second;
  }
};
std::optional<Reply> keep(const httplib::Result& r) {
  if (!r) return std::nullopt;
  return Reply{r->status, r->body, r->headers};
}

// A folder of its own for one test, removed after it.
struct TempDir {
  std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("hyrt_serve_test_" + std::to_string(::getpid()));
  TempDir() { std::filesystem::create_directories(path); }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override { start({}); }

  // max_batch > 1: that many jobs run at once and the Runtime may batch them.
  void start(size_t queue_capacity, int max_batch = 1, int batch_wait_ms = 0) {
    hyrt::serve::ServerOptions o;
    o.models = {kModelFile, kModelFolder};
    o.port = 0;
    o.runtime.num_threads = 2;
    o.runtime.max_batch = max_batch;
    o.runtime.batch_wait_ms = batch_wait_ms;
    o.queue_capacity = queue_capacity ? queue_capacity : 4;
    o.max_body_bytes = 64 * 1024;
    o.limits.max_side = 512;
    o.limits.max_pixels = 512 * 512;
    o.log = [this](const std::string& line) {
      log_lines_++;
      (void)line;
    };
    server_ = std::make_unique<hyrt::serve::Server>(o);
    server_->start();
  }

  httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(60, 0);
    return c;
  }

  std::optional<Reply> post(const std::string& path, const json& body) {
    return keep(client().Post(path.c_str(), body.dump(), "application/json"));
  }
  std::optional<Reply> post_raw(const std::string& path, const std::string& body) {
    return keep(client().Post(path.c_str(), body, "application/json"));
  }
  json get_json(const std::string& path) {
    auto r = client().Get(path.c_str());
    EXPECT_TRUE(r) << path;
    if (!r) return nullptr;
    EXPECT_EQ(r->status, 200) << path << ": " << r->body;
    return json::parse(r->body);
  }

  // Waits until the running job has done a step (a long job is under way).
  void wait_for_sampling() {
    for (int i = 0; i < 3000; ++i) {  // up to a minute: sanitizer builds are slow
      const json p = get_json("/sdapi/v1/progress");
      if (p["state"]["sampling_step"].get<int>() > 0) return;
      std::this_thread::sleep_for(20ms);
    }
    FAIL() << "the job never started sampling";
  }

  // A request that draws for seconds: many steps at the native size.
  static json long_job() { return {{"prompt", "a long job"}, {"steps", 150}, {"n_iter", 4}}; }
  static json small_job() {
    return {{"prompt", "a red circle on a blue background"},
            {"steps", 3},
            {"width", 64},
            {"height", 64},
            {"seed", 7}};
  }

  // POSTs `req` (small_job() with DDIM and more) to txt2img and expects the first picture and
  // its parameters to be what `hyrt generate` with the same settings plus `cli_flags` writes.
  // Returns the response.
  json expect_served_as_cli(const json& req, const std::string& cli_flags) {
    const auto r = post("/sdapi/v1/txt2img", req);
    EXPECT_TRUE(r);
    if (!r) return json::object();
    EXPECT_EQ(r->status, 200) << r->body.substr(0, 300);
    const json out = json::parse(r->body);
    const auto served =
        hyrt::pipeline::decode_png(hyrt::serve::base64_decode(out["images"][0].get<std::string>()));
    TempDir tmp;
    const std::filesystem::path png = tmp.path / "cli.png";
    const auto run = hyrt::test::run_hyrt(
        "generate -m " + kModelFile +
        " -p \"a red circle on a blue background\" -t 2 -s 7 --steps 3 -W 64 -H 64 --sampler "
        "ddim " +
        cli_flags + " -o " + png.string());
    EXPECT_EQ(run.exit_code, 0) << run.output;
    if (run.exit_code != 0) return out;
    const auto wrote = hyrt::pipeline::read_png(png);
    EXPECT_TRUE(served.image.pixels == wrote.image.pixels) << "the server's picture differs";
    EXPECT_EQ(served.text, wrote.text);
    return out;
  }

  // A Prometheus sample's value ("name value" on a line of its own); -1 when absent.
  double metric(const std::string& name) {
    const std::string text = client().Get("/metrics")->body;
    const std::string key = "\n" + name + " ";
    const size_t at = text.find(key);
    return at == std::string::npos ? -1 : std::stod(text.substr(at + key.size()));
  }

  std::unique_ptr<hyrt::serve::Server> server_;
  std::atomic<int> log_lines_{0};
};

// Pictures for img2img: a pattern with a block, and a mask white (repaint) on the left.
hyrt::pipeline::Image8 test_picture(int w, int h) {
  hyrt::pipeline::Image8 im{w, h, 3, {}};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const bool block = x > w / 3 && x < 2 * w / 3 && y > h / 4 && y < h / 2;
      im.pixels.insert(im.pixels.end(), {static_cast<uint8_t>(block ? 240 : x * 255 / w),
                                         static_cast<uint8_t>(block ? 40 : 90),
                                         static_cast<uint8_t>(block ? 30 : y * 255 / h)});
    }
  return im;
}
hyrt::pipeline::Image8 test_mask(int w, int h, bool invert = false) {
  hyrt::pipeline::Image8 im{w, h, 3, {}};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      im.pixels.insert(im.pixels.end(), 3, static_cast<uint8_t>((x < w / 2) != invert ? 255 : 0));
  return im;
}
std::string png_base64(const hyrt::pipeline::Image8& im) {
  return hyrt::serve::base64_encode(hyrt::pipeline::encode_png(im));
}

TEST_F(ServeTest, Txt2ImgReturnsPngsCarryingTheirParameters) {
  json req = {{"prompt", "a red circle on a blue background"},
              {"negative_prompt", "green"},
              {"steps", 4},
              {"cfg_scale", 5.5},
              {"width", 64},
              {"height", 48},
              {"seed", 42},
              {"sampler_name", "DPM++ 2M"},
              {"scheduler", "Karras"},
              {"batch_size", 2},
              {"n_iter", 2},
              // What A1111 clients send with their defaults, and a field A1111 lacks.
              {"enable_hr", false},
              {"styles", json::array()},
              {"alwayson_scripts", json::object()},
              {"script_name", nullptr},
              {"some_future_field", {1, 2}}};
  auto r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json out = json::parse(r->body);
  ASSERT_EQ(out["images"].size(), 4u);
  const json info = json::parse(out["info"].get<std::string>());
  EXPECT_EQ(info["seed"], 42);
  EXPECT_EQ(info["all_seeds"], json({42, 42, 44, 44}));  // per iteration: seed + batch_size
  EXPECT_EQ(info["sampler_name"], "DPM++ 2M Karras");
  EXPECT_EQ(info["sd_model_name"], "shapes-int8");
  EXPECT_EQ(info["width"], 64);
  EXPECT_EQ(info["height"], 48);
  EXPECT_EQ(out["parameters"]["prompt"], req["prompt"]);
  EXPECT_EQ(out["parameters"]["some_future_field"], req["some_future_field"]);
  for (size_t i = 0; i < 4; ++i) {
    const auto bytes = hyrt::serve::base64_decode(out["images"][i].get<std::string>());
    const auto png = hyrt::pipeline::decode_png(bytes);
    EXPECT_EQ(png.image.width, 64);
    EXPECT_EQ(png.image.height, 48);
    ASSERT_EQ(png.text.size(), 1u);
    EXPECT_EQ(png.text[0].first, "parameters");
    const std::string params = png.text[0].second;
    EXPECT_EQ(params, info["infotexts"][i].get<std::string>());
    EXPECT_EQ(params.rfind("a red circle on a blue background\nNegative prompt: green\n", 0), 0u)
        << params;
    EXPECT_NE(params.find("Steps: 4, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: " +
                          std::to_string(i < 2 ? 42 : 44) + ", Size: 64x48"),
              std::string::npos)
        << params;
  }
  // The same seed draws the same picture.
  auto again = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(again);
  EXPECT_EQ(json::parse(again->body)["images"], out["images"]);
}

TEST_F(ServeTest, RandomSeedAndDefaults) {
  auto r = post("/sdapi/v1/txt2img", {{"prompt", "a blue square"}, {"steps", 2}, {"seed", -1}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json out = json::parse(r->body);
  const json info = json::parse(out["info"].get<std::string>());
  EXPECT_GE(info["seed"].get<int64_t>(), 0);
  hyrt::Runtime rt;
  EXPECT_EQ(info["width"], rt.load(kModelFile).native_size());  // the default size
  EXPECT_EQ(info["sampler_name"], "Euler a");
  EXPECT_EQ(out["parameters"]["seed"], -1);  // echoed as sent, as A1111 does
}

TEST_F(ServeTest, ModelsSamplersOptionsAndOverride) {
  const json models = get_json("/sdapi/v1/sd-models");
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0]["model_name"], "shapes-int8");
  EXPECT_EQ(models[0]["title"], "shapes-int8.safetensors");
  EXPECT_EQ(models[1]["model_name"], "shapes");

  const json samplers = get_json("/sdapi/v1/samplers");
  std::vector<std::string> names;
  for (const json& s : samplers)
    names.push_back(s["name"]);
  EXPECT_EQ(names,
            (std::vector<std::string>{"Euler a", "Euler", "Heun", "DDIM", "DPM++ 2M",
                                      "DPM++ 2M SDE", "LCM", "Euler a Karras", "Euler Karras",
                                      "Heun Karras", "DPM++ 2M Karras", "DPM++ 2M SDE Karras"}));

  EXPECT_EQ(get_json("/sdapi/v1/options")["sd_model_checkpoint"], "shapes-int8.safetensors");
  auto r = post("/sdapi/v1/options",
                {{"sd_model_checkpoint", "shapes"}, {"CLIP_stop_at_last_layers", 1}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(get_json("/sdapi/v1/options")["sd_model_checkpoint"], "shapes");
  r = post("/sdapi/v1/txt2img", small_job());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(json::parse(r->body)["info"].get<std::string>())["sd_model_name"],
            "shapes");

  // override_settings picks a model for one request, by A1111's "title [hash]" too.
  json req = small_job();
  req["override_settings"] = {{"sd_model_checkpoint", "shapes-int8.safetensors [0123456789]"}};
  r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(json::parse(r->body)["info"].get<std::string>())["sd_model_name"],
            "shapes-int8");
  EXPECT_EQ(get_json("/sdapi/v1/options")["sd_model_checkpoint"], "shapes");
}

TEST_F(ServeTest, ProgressAndInterrupt) {
  const json idle = get_json("/sdapi/v1/progress");
  EXPECT_EQ(idle["progress"], 0.0);
  EXPECT_EQ(idle["state"]["job_count"], 0);
  EXPECT_TRUE(idle["current_image"].is_null());

  std::optional<Reply> result;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread t([&] { result = post("/sdapi/v1/txt2img", long_job()); });
  wait_for_sampling();
  const json busy = get_json("/sdapi/v1/progress");
  EXPECT_EQ(busy["state"]["job_count"], 1);
  EXPECT_EQ(busy["state"]["sampling_steps"], 150);
  EXPECT_GT(busy["progress"].get<double>(), 0.0);
  EXPECT_LT(busy["progress"].get<double>(), 1.0);
  auto r = keep(client().Post("/sdapi/v1/interrupt"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  t.join();
  ASSERT_TRUE(result);
  ASSERT_EQ(result->status, 200) << result->body;
  const json info = json::parse(json::parse(result->body)["info"].get<std::string>());
  EXPECT_TRUE(info["interrupted"].get<bool>());
  // Stopped at a step boundary, long before 4 x 150 steps.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 60s);
  EXPECT_TRUE(get_json("/sdapi/v1/progress")["state"]["interrupted"].get<bool>());
  // The next job runs as usual.
  r = post("/sdapi/v1/txt2img", small_job());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// POST /sdapi/v1/img2img draws what `hyrt generate --init-image --strength [--mask]` draws for
// the same picture, seed and settings: the same pixels and the same parameters text. The
// A1111 inpainting fields hyrt ignores are accepted; a mask read from its alpha channel and an
// inverted mask with inpainting_mask_invert give the same picture as the plain mask.
TEST_F(ServeTest, Img2ImgAndInpaintingEqualTheCli) {
  using hyrt::pipeline::Image8;
  TempDir tmp;
  // No width/height: its own size rounded down to a multiple of 8 (the CLI: of the VAE factor).
  const Image8 picture = test_picture(72, 66);
  const Image8 mask = test_mask(40, 36);  // resized to the output size
  hyrt::pipeline::write_png(tmp.path / "pic.png", picture);
  hyrt::pipeline::write_png(tmp.path / "mask.png", mask);
  const std::string prompt = "a red circle on a blue background";
  const json base = {
      {"prompt", prompt},       {"steps", 4},
      {"cfg_scale", 5},         {"seed", 7},
      {"sampler_name", "DDIM"}, {"init_images", {"data:image/png;base64," + png_base64(picture)}}};
  const std::string cli = "generate -m " + kModelFile + " -p \"" + prompt +
                          "\" -t 2 -s 7 --steps 4 --cfg-scale 5 --sampler ddim --init-image " +
                          (tmp.path / "pic.png").string();

  // The server's first picture, decoded; `info` is filled in.
  auto first_picture = [&](const json& req, json* info = nullptr) {
    auto r = post("/sdapi/v1/img2img", req);
    EXPECT_TRUE(r);
    if (!r) return hyrt::pipeline::DecodedPng{};
    EXPECT_EQ(r->status, 200) << r->body.substr(0, 300);
    const json out = json::parse(r->body);
    EXPECT_EQ(out["images"].size(), 1u);
    EXPECT_TRUE(out["parameters"]["init_images"].is_null());  // not echoed, as A1111
    if (info) *info = json::parse(out["info"].get<std::string>());
    return hyrt::pipeline::decode_png(
        hyrt::serve::base64_decode(out["images"][0].get<std::string>()));
  };
  auto cli_picture = [&](const std::string& args) {
    const std::filesystem::path out = tmp.path / "cli.png";
    const auto run = hyrt::test::run_hyrt(cli + " " + args + " -o " + out.string());
    EXPECT_EQ(run.exit_code, 0) << run.output;
    return hyrt::pipeline::read_png(out);
  };

  // img2img.
  json req = base;
  req["denoising_strength"] = 0.5;
  json info;
  const auto served = first_picture(req, &info);
  const auto wrote = cli_picture("--strength 0.5");
  EXPECT_EQ(served.image.width, 72);
  EXPECT_EQ(served.image.height, 64);
  EXPECT_TRUE(served.image.pixels == wrote.image.pixels) << "img2img differs from the CLI's";
  EXPECT_EQ(served.text, wrote.text);  // the same parameters text, strength included
  ASSERT_EQ(served.text.size(), 1u);
  EXPECT_NE(served.text[0].second.find("Denoising strength: 0.5"), std::string::npos);
  EXPECT_EQ(info["denoising_strength"], 0.5);
  EXPECT_EQ(info["width"], 72);

  // Inpainting at a given size, with the fields A1111 clients send and hyrt ignores.
  req = base;
  req["denoising_strength"] = 0.75;
  req["mask"] = png_base64(mask);
  req["width"] = 64;
  req["height"] = 64;
  req["mask_blur"] = 4;
  req["inpainting_fill"] = 1;
  req["inpaint_full_res"] = false;
  req["inpaint_full_res_padding"] = 32;
  req["resize_mode"] = 0;
  const auto inpainted = first_picture(req);
  const auto inpainted_cli =
      cli_picture("--strength 0.75 -W 64 -H 64 --mask " + (tmp.path / "mask.png").string());
  EXPECT_EQ(inpainted.image.width, 64);
  EXPECT_TRUE(inpainted.image.pixels == inpainted_cli.image.pixels)
      << "inpainting differs from the CLI's";
  EXPECT_FALSE(inpainted.image.pixels == served.image.pixels);

  // The same mask as an alpha channel (opaque = repaint; the colours say nothing), and
  // inverted with inpainting_mask_invert.
  Image8 alpha{mask.width, mask.height, 4, {}};
  for (size_t i = 0; i < mask.pixels.size(); i += 3)
    alpha.pixels.insert(alpha.pixels.end(), {0, 0, 0, mask.pixels[i]});
  req["mask"] = png_base64(alpha);
  EXPECT_TRUE(first_picture(req).image.pixels == inpainted.image.pixels) << "alpha mask";
  req["mask"] = png_base64(test_mask(40, 36, /*invert=*/true));
  req["inpainting_mask_invert"] = 1;
  EXPECT_TRUE(first_picture(req).image.pixels == inpainted.image.pixels) << "inverted mask";
}

TEST_F(ServeTest, Img2ImgBatchAndEcho) {
  json req = {{"prompt", "a blue square"},
              {"steps", 4},
              {"seed", 3},
              {"batch_size", 2},
              {"n_iter", 2},
              {"denoising_strength", 0.5},
              {"include_init_images", true},
              {"init_images", {png_base64(test_picture(64, 64))}}};
  auto r = post("/sdapi/v1/img2img", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const json out = json::parse(r->body);
  ASSERT_EQ(out["images"].size(), 4u);
  EXPECT_EQ(out["parameters"]["init_images"], req["init_images"]);  // include_init_images
  EXPECT_EQ(out["parameters"]["denoising_strength"], 0.5);
  const json info = json::parse(out["info"].get<std::string>());
  EXPECT_EQ(info["all_seeds"], json({3, 3, 5, 5}));
  EXPECT_NE(out["images"][0], out["images"][1]);
  EXPECT_EQ(get_json("/sdapi/v1/progress")["state"]["job_count"], 0);
}

// Each class of bad input gets its 4xx with a JSON error naming the field; the server keeps
// serving.
// LoRAs named in prompts (<lora:NAME:MULT>, found in --lora-dir): listed by /sdapi/v1/loras,
// drawn as the CLI draws them, refused with a 4xx when absent.
TEST_F(ServeTest, LorasInPromptsEqualTheCli) {
  TempDir tmp;
  hyrt::test::write_test_lora(kModelFile, tmp.path / "style.safetensors");
  server_.reset();
  hyrt::serve::ServerOptions o;
  o.models = {kModelFile};
  o.port = 0;
  o.runtime.num_threads = 2;
  o.runtime.lora_dir = tmp.path.string();
  o.queue_capacity = 4;
  server_ = std::make_unique<hyrt::serve::Server>(o);
  server_->start();

  const json loras = get_json("/sdapi/v1/loras");
  ASSERT_EQ(loras.size(), 1u) << loras.dump();
  EXPECT_EQ(loras[0]["name"], "style");
  const std::string prompt = "a red circle <lora:style:0.7>";
  json req = small_job();
  req["prompt"] = prompt;
  req["sampler_name"] = "DDIM";
  auto r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const auto served = hyrt::pipeline::decode_png(
      hyrt::serve::base64_decode(json::parse(r->body)["images"][0].get<std::string>()));
  const std::filesystem::path out = tmp.path / "cli.png";
  const auto run = hyrt::test::run_hyrt("generate -m " + kModelFile + " -p \"" + prompt +
                                        "\" -t 2 -s 7 --steps 3 -W 64 -H 64 --sampler ddim "
                                        "--lora-dir " +
                                        tmp.path.string() + " -o " + out.string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto wrote = hyrt::pipeline::read_png(out);
  EXPECT_TRUE(served.image.pixels == wrote.image.pixels) << "the server's LoRA picture differs";
  EXPECT_EQ(served.text, wrote.text);
  req["prompt"] = "a red circle";
  r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  const auto plain = hyrt::pipeline::decode_png(
      hyrt::serve::base64_decode(json::parse(r->body)["images"][0].get<std::string>()));
  EXPECT_FALSE(plain.image.pixels == served.image.pixels) << "the LoRA changed nothing";
  req["prompt"] = "a red circle <lora:absent:1>";
  r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  EXPECT_GE(r->status, 400);
  EXPECT_LT(r->status, 500);
  EXPECT_NE(r->body.find("absent"), std::string::npos) << r->body;
}

// --taesd decoders are A1111 VAEs: listed by /sdapi/v1/sd-vae, picked per request with
// override_settings.sd_vae (drawing what `hyrt generate --taesd` draws); one that does not fit
// the model (here a 2x decoder for the 4x bundled model) is refused with a 422.
TEST_F(ServeTest, TaesdDecodersAreOfferedAsVaes) {
  const std::string data = std::string(HYRT_SOURCE_DIR) + "/tests/data/";
  server_.reset();
  hyrt::serve::ServerOptions o;
  o.models = {kModelFile};
  o.port = 0;
  o.runtime.num_threads = 2;
  o.taesd = {data + "taesd-tiny", data + "taesd-tiny-4x"};
  o.queue_capacity = 4;
  server_ = std::make_unique<hyrt::serve::Server>(o);
  server_->start();

  const json vaes = get_json("/sdapi/v1/sd-vae");
  ASSERT_EQ(vaes.size(), 2u) << vaes.dump();
  EXPECT_EQ(vaes[1]["model_name"], "taesd-tiny-4x");
  json req = small_job();
  req["sampler_name"] = "DDIM";
  req["override_settings"] = {{"sd_vae", "taesd-tiny-4x"}};
  auto r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const auto served = hyrt::pipeline::decode_png(
      hyrt::serve::base64_decode(json::parse(r->body)["images"][0].get<std::string>()));
  TempDir tmp;
  const std::filesystem::path out = tmp.path / "cli.png";
  const auto run =
      hyrt::test::run_hyrt("generate -m " + kModelFile +
                           " -p \"a red circle on a blue background\" -t 2 -s 7 --steps 3 "
                           "-W 64 -H 64 --sampler ddim --taesd " +
                           data + "taesd-tiny-4x -o " + out.string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const auto wrote = hyrt::pipeline::read_png(out);
  EXPECT_TRUE(served.image.pixels == wrote.image.pixels) << "the server's TAESD picture differs";
  EXPECT_EQ(served.text, wrote.text);
  req["override_settings"] = {{"sd_vae", "Automatic"}};
  r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["info"].get<std::string>().find("taesd"), std::string::npos);
  req["override_settings"] = {{"sd_vae", "taesd-tiny"}};
  r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("override_settings.sd_vae"), std::string::npos) << r->body;
}

// override_settings.CLIP_stop_at_last_layers is A1111's Clip skip: the picture and parameters
// `hyrt generate --clip-skip` gives; info.clip_skip says it; out of range is a 422.
TEST_F(ServeTest, ClipSkipOverrideEqualsTheCli) {
  json req = small_job();
  req["sampler_name"] = "DDIM";
  req["override_settings"] = {{"CLIP_stop_at_last_layers", 2}};
  const json out = expect_served_as_cli(req, "--clip-skip 2");
  EXPECT_EQ(json::parse(out["info"].get<std::string>())["clip_skip"], 2);
  req["override_settings"] = {{"CLIP_stop_at_last_layers", 13}};
  const auto r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
}

// enable_hr (A1111's hires fix, Lanczos): the picture and parameters of `hyrt generate
// --hires-*`; the latent and model upscalers are refused by name.
TEST_F(ServeTest, HiresFixEqualsTheCli) {
  json req = small_job();
  req["sampler_name"] = "DDIM";
  req["enable_hr"] = true;
  req["hr_scale"] = 1.5;
  req["hr_second_pass_steps"] = 4;
  req["denoising_strength"] = 0.5;
  const json out =
      expect_served_as_cli(req, "--hires-scale 1.5 --hires-steps 4 --hires-strength 0.5");
  EXPECT_EQ(
      hyrt::pipeline::decode_png(hyrt::serve::base64_decode(out["images"][0].get<std::string>()))
          .image.width,
      96);
  // GET /sdapi/v1/upscalers and latent-upscale-modes list what hr_upscaler takes.
  const json upscalers = get_json("/sdapi/v1/upscalers");
  ASSERT_EQ(upscalers.size(), 2u) << upscalers.dump();
  EXPECT_EQ(upscalers[1]["name"], "Lanczos");
  EXPECT_EQ(get_json("/sdapi/v1/latent-upscale-modes")[0]["name"], "Latent");
  req["hr_upscaler"] = "Latent";
  expect_served_as_cli(req,
                       "--hires-scale 1.5 --hires-steps 4 --hires-strength 0.5 "
                       "--hires-upscaler Latent");
  req["hr_upscaler"] = "SwinIR 4x";
  const auto r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  EXPECT_NE(r->body.find("hr_upscaler"), std::string::npos) << r->body;
}

// POST /sdapi/v1/png-info reads a picture's parameters back as A1111 does: the text, and its
// fields parsed (a quoted value keeps its commas); a picture that is not a PNG is a 422.
TEST_F(ServeTest, PngInfoReadsTheParametersBack) {
  json req = small_job();
  req["negative_prompt"] = "green, blurry";
  auto r = post("/sdapi/v1/txt2img", req);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const json made = json::parse(r->body);
  const std::string text = json::parse(made["info"].get<std::string>())["infotexts"][0];
  r = post("/sdapi/v1/png-info", json{{"image", made["images"][0]}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const json info = json::parse(r->body);
  EXPECT_EQ(info["info"], text);
  const json& p = info["parameters"];
  EXPECT_EQ(p["Prompt"], "a red circle on a blue background");
  EXPECT_EQ(p["Negative prompt"], "green, blurry");
  EXPECT_EQ(p["Steps"], "3");
  EXPECT_EQ(p["Seed"], "7");
  EXPECT_EQ(p["Size-1"], "64");
  EXPECT_EQ(p["Size-2"], "64");
  // A quoted value (LoRA lists, A1111's "Lora hashes") keeps its commas.
  hyrt::pipeline::Image8 pic = test_picture(8, 8);
  const std::string quoted = "x\nSteps: 4, Lora hashes: \"a: 1, b: 2\", Version: v1";
  r = post("/sdapi/v1/png-info",
           json{{"image", hyrt::serve::base64_encode(hyrt::pipeline::encode_png(
                              pic, {{hyrt::pipeline::kParametersKeyword, quoted}}))}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body.substr(0, 300);
  const json q = json::parse(r->body)["parameters"];
  EXPECT_EQ(q["Lora hashes"], "a: 1, b: 2");
  EXPECT_EQ(q["Version"], "v1");
  r = post("/sdapi/v1/png-info", json{{"image", "/9j/4AAQSkZJRg=="}});  // a JPEG's start
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
  r = post("/sdapi/v1/png-info", json::object());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 422) << r->body;
}

// --live-previews: the running job's predicted picture is /sdapi/v1/progress's current_image
// (a base64 PNG of the job's size, decoded by the model's TAESD here), absent with
// ?skip_current_image=true and when idle.
TEST_F(ServeTest, LivePreviewsAreTheProgressCurrentImage) {
  server_.reset();
  hyrt::serve::ServerOptions o;
  o.models = {kModelFile};
  o.port = 0;
  o.runtime.num_threads = 2;
  o.taesd = {std::string(HYRT_SOURCE_DIR) + "/tests/data/taesd-tiny-4x"};
  o.preview_every = 1;
  server_ = std::make_unique<hyrt::serve::Server>(o);
  server_->start();
  json job = long_job();
  job["width"] = job["height"] = 128;
  std::optional<Reply> result;
  std::thread t([&] { result = post("/sdapi/v1/txt2img", job); });
  wait_for_sampling();
  json busy;
  for (int i = 0; i < 3000; ++i) {  // the first preview follows the first step
    busy = get_json("/sdapi/v1/progress");
    if (!busy["current_image"].is_null()) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(busy["current_image"].is_string()) << busy.dump().substr(0, 300);
  const auto png = hyrt::pipeline::decode_png(
      hyrt::serve::base64_decode(busy["current_image"].get<std::string>()));
  EXPECT_EQ(png.image.width, 128);
  EXPECT_EQ(png.image.height, 128);
  EXPECT_TRUE(get_json("/sdapi/v1/progress?skip_current_image=true")["current_image"].is_null());
  auto r = keep(client().Post("/sdapi/v1/interrupt"));
  ASSERT_TRUE(r);
  t.join();
  ASSERT_TRUE(result);
  EXPECT_EQ(result->status, 200) << result->body.substr(0, 300);
  EXPECT_TRUE(get_json("/sdapi/v1/progress")["current_image"].is_null());
}

TEST_F(ServeTest, BadInputGets4xxNamingTheField) {
  struct Case {
    std::string path;
    std::string body;
    int status;
    std::string field;
  };
  auto with = [](json j, const std::string& key, json v) {
    j[key] = std::move(v);
    return j.dump();
  };
  const json ok = small_job();  // steps 3
  const std::string picture = png_base64(test_picture(64, 64));
  json i2i = ok;
  i2i["init_images"] = {picture};
  i2i["mask"] = "data:image/png;base64," + png_base64(test_mask(64, 64));
  json unsized = i2i;  // the picture's size: over the server's 512 a side
  unsized.erase("width");
  unsized.erase("height");
  const std::vector<Case> cases = {
      {"/sdapi/v1/txt2img", "{\"prompt\": ", 400, ""},
      {"/sdapi/v1/txt2img", "[1, 2]", 400, ""},
      {"/sdapi/v1/txt2img", with(ok, "steps", "20"), 422, "steps"},
      {"/sdapi/v1/txt2img", with(ok, "prompt", 5), 422, "prompt"},
      {"/sdapi/v1/txt2img", with(ok, "cfg_scale", "high"), 422, "cfg_scale"},
      {"/sdapi/v1/txt2img", with(ok, "width", 65), 422, "width"},
      {"/sdapi/v1/txt2img", with(ok, "height", 1024), 422, "height"},
      {"/sdapi/v1/txt2img", with(ok, "width", -64), 422, "width"},
      {"/sdapi/v1/txt2img", with(ok, "steps", 0), 422, "steps"},
      {"/sdapi/v1/txt2img", with(ok, "steps", 100000), 422, "steps"},
      {"/sdapi/v1/txt2img", with(ok, "steps", 2.5), 422, "steps"},
      {"/sdapi/v1/txt2img", with(ok, "batch_size", 100), 422, "batch_size"},
      {"/sdapi/v1/txt2img", with(ok, "seed", -2), 422, "seed"},
      {"/sdapi/v1/txt2img", with(ok, "sampler_name", "UniPC"), 422, "sampler_name"},
      {"/sdapi/v1/txt2img", with(ok, "scheduler", "Exponential"), 422, "scheduler"},
      {"/sdapi/v1/txt2img", with(ok, "override_settings", {{"sd_model_checkpoint", "sdxl"}}), 422,
       "override_settings.sd_model_checkpoint"},
      {"/sdapi/v1/txt2img",
       with(json::parse(with(ok, "enable_hr", true)), "hr_upscaler", "R-ESRGAN 4x+"), 422,
       "hr_upscaler"},
      {"/sdapi/v1/txt2img", with(json::parse(with(ok, "enable_hr", true)), "hr_scale", 9), 422,
       "hr_scale"},
      {"/sdapi/v1/txt2img", with(ok, "styles", {"cinematic"}), 422, "styles"},
      {"/sdapi/v1/txt2img", with(ok, "prompt", std::string(70 * 1024, 'a')), 413, "body"},
      {"/sdapi/v1/txt2img", with(ok, "init_images", {png_base64(test_picture(8, 8))}), 422,
       "init_images"},
      {"/sdapi/v1/img2img", ok.dump(), 422, "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", json::array()), 422, "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", picture), 422, "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", {5}), 422, "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", {"not base64!"}), 422, "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", {"data:image/png,abc"}), 422, "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", {"https://example.com/a.png"}), 422,
       "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", {hyrt::serve::base64_encode({'n', 'o'})}), 422,
       "init_images"},
      {"/sdapi/v1/img2img",
       with(ok, "init_images", {hyrt::serve::base64_encode({0xff, 0xd8, 0xff, 0xe0, 0, 16})}), 422,
       "init_images"},
      {"/sdapi/v1/img2img", with(ok, "init_images", {picture, picture}), 422, "init_images"},
      {"/sdapi/v1/img2img", with(unsized, "init_images", {png_base64(test_picture(600, 8))}), 422,
       "init_images"},
      {"/sdapi/v1/img2img", with(i2i, "mask", "%%%%"), 422, "mask"},
      {"/sdapi/v1/img2img", with(i2i, "mask", 7), 422, "mask"},
      {"/sdapi/v1/img2img", with(i2i, "denoising_strength", 0), 422, "denoising_strength"},
      {"/sdapi/v1/img2img", with(i2i, "denoising_strength", 1.5), 422, "denoising_strength"},
      {"/sdapi/v1/img2img", with(i2i, "denoising_strength", 0.2), 422, "denoising_strength"},
      {"/sdapi/v1/img2img", with(i2i, "resize_mode", 1), 422, "resize_mode"},
      {"/sdapi/v1/img2img", with(i2i, "latent_mask", "abcd"), 422, "latent_mask"},
      {"/sdapi/v1/img2img", with(i2i, "initial_noise_multiplier", 0.5), 422,
       "initial_noise_multiplier"},
      {"/sdapi/v1/img2img", with(i2i, "inpainting_mask_invert", 2), 422, "inpainting_mask_invert"},
      {"/sdapi/v1/img2img", with(i2i, "enable_hr", true), 422, "enable_hr"},
      {"/sdapi/v1/options", "{\"sd_model_checkpoint\": \"nope\"}", 422, "sd_model_checkpoint"},
      {"/sdapi/v1/options", "nope", 400, ""},
  };
  for (const Case& c : cases) {
    auto r = post_raw(c.path, c.body);
    ASSERT_TRUE(r) << c.body.substr(0, 80);
    EXPECT_EQ(r->status, c.status) << c.body.substr(0, 80) << " -> " << r->body;
    const json err = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(err.is_object()) << r->body;
    EXPECT_EQ(err["field"], c.field) << c.body.substr(0, 80);
    EXPECT_FALSE(err["detail"].get<std::string>().empty());
  }
  auto r = keep(client().Get("/sdapi/v1/no-such-thing"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_TRUE(json::parse(r->body).is_object());

  // Still serving.
  EXPECT_EQ(get_json("/healthz")["status"], "ok");
  r = post("/sdapi/v1/txt2img", small_job());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = post("/sdapi/v1/img2img", i2i);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

TEST_F(ServeTest, FullQueueGets503WithRetryAfter) {
  server_.reset();
  start(1);  // one job may wait
  std::vector<std::optional<Reply>> results(2);
  std::thread running([&] { results[0] = post("/sdapi/v1/txt2img", long_job()); });
  wait_for_sampling();
  std::thread waiting([&] { results[1] = post("/sdapi/v1/txt2img", small_job()); });
  for (int i = 0; i < 3000 && get_json("/sdapi/v1/progress")["state"]["job_count"] != 2; ++i)
    std::this_thread::sleep_for(10ms);
  auto r = post("/sdapi/v1/txt2img", small_job());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_TRUE(r->has_header("Retry-After"));
  EXPECT_GE(std::stoi(r->get_header_value("Retry-After")), 1);
  // Interrupting the long job lets the waiting one run.
  client().Post("/sdapi/v1/interrupt");
  running.join();
  waiting.join();
  ASSERT_TRUE(results[0] && results[1]);
  EXPECT_EQ(results[0]->status, 200);
  EXPECT_EQ(results[1]->status, 200);
  EXPECT_EQ(json::parse(results[1]->body)["images"].size(), 1u);
  const std::string metrics = client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("hyrt_queue_rejected_total 1\n"), std::string::npos) << metrics;
}

// A client that gives up has its job cancelled at the next step (or dropped while waiting).
TEST_F(ServeTest, DisconnectedClientsJobIsCancelled) {
  {
    httplib::Client impatient("127.0.0.1", server_->port());
    impatient.set_read_timeout(0, 300 * 1000);
    auto r = impatient.Post("/sdapi/v1/txt2img", long_job().dump(), "application/json");
    EXPECT_FALSE(r);  // timed out
  }                   // the connection closes here
  bool idle = false;
  for (int i = 0; i < 1500 && !idle; ++i) {
    idle = get_json("/sdapi/v1/progress")["state"]["job_count"] == 0;
    if (!idle) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(idle) << "the abandoned job kept running";
  const std::string metrics = client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("hyrt_jobs_abandoned_total 1\n"), std::string::npos) << metrics;
}

TEST_F(ServeTest, HealthMetricsAndWebPage) {
  EXPECT_EQ(get_json("/healthz")["status"], "ok");
  ASSERT_TRUE(post("/sdapi/v1/txt2img", small_job()));
  // Requests are counted when httplib logs them, just after the answer went out.
  std::optional<Reply> r;
  for (int i = 0; i < 250; ++i) {
    r = keep(client().Get("/metrics"));
    ASSERT_TRUE(r);
    if (r->body.find("route=\"/sdapi/v1/txt2img\"") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(r->status, 200);
  for (const char* name : {"hyrt_http_requests_total{route=\"/sdapi/v1/txt2img\",code=\"200\"} 1",
                           "hyrt_images_generated_total 1", "hyrt_queue_length 0",
                           "hyrt_txt2img_request_seconds_count 1",
                           "hyrt_denoise_step_seconds_count 3", "process_resident_memory_bytes"})
    EXPECT_NE(r->body.find(name), std::string::npos) << name << "\n" << r->body;
  r = keep(client().Get("/"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("/sdapi/v1/txt2img"), std::string::npos);
  EXPECT_GT(log_lines_.load(), 0);
}

// --max-batch 4: concurrent requests that agree on size, steps and sampler run as one UNet
// batch, and each gets the pictures it gets alone (on the host, bit for bit: same PNG bytes).
TEST_F(ServeTest, BatchedRequestsEqualLoneOnes) {
  server_.reset();
  start(8, /*max_batch=*/4, /*batch_wait_ms=*/400);
  std::vector<json> requests;
  for (int i = 0; i < 4; ++i) {
    json r = small_job();
    r["seed"] = 100 + 7 * i;
    r["prompt"] = std::vector<std::string>{"a red circle on a blue background", "a green square",
                                           "a yellow triangle on black", "two blue circles"}[i];
    r["cfg_scale"] = 4.0 + i;
    requests.push_back(r);
  }
  auto images = [](const std::optional<Reply>& r) {
    EXPECT_TRUE(r);
    if (!r) return json();
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body)["images"];
  };
  std::vector<json> alone;
  for (const json& r : requests)
    alone.push_back(images(post("/sdapi/v1/txt2img", r)));
  EXPECT_EQ(metric("hyrt_batch_size_max"), 1);

  std::vector<std::optional<Reply>> results(requests.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < requests.size(); ++i)
    clients.emplace_back([&, i] { results[i] = post("/sdapi/v1/txt2img", requests[i]); });
  for (std::thread& t : clients)
    t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    const json together = images(results[i]);
    ASSERT_EQ(together.size(), 1u);
    ASSERT_EQ(alone[i].size(), 1u);
    EXPECT_EQ(together[0], alone[i][0]) << "request " << i << " differs when batched";
  }
  EXPECT_NE(alone[0][0], alone[1][0]);  // different seeds and prompts: different pictures
  EXPECT_GT(metric("hyrt_batch_size_max"), 1);
  EXPECT_EQ(metric("hyrt_batched_calls_total"), 8);
  EXPECT_LT(metric("hyrt_batches_total"), 8);
  EXPECT_EQ(metric("hyrt_workers"), 4);
  EXPECT_GT(metric("hyrt_resident_memory_bytes"), 0);
  EXPECT_GE(metric("hyrt_accelerator_memory_bytes"), 0);  // 0 on the host
}

// With several jobs running at once, /progress counts them all and reports the oldest, and
// one interrupt stops every one of them.
TEST_F(ServeTest, InterruptStopsEveryRunningJob) {
  server_.reset();
  start(8, /*max_batch=*/4, /*batch_wait_ms=*/300);
  constexpr int kJobs = 3;
  std::vector<std::optional<Reply>> results(kJobs);
  std::vector<std::thread> clients;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kJobs; ++i)
    clients.emplace_back([&, i] {
      json j = long_job();
      j["seed"] = i;
      results[i] = post("/sdapi/v1/txt2img", j);
    });
  for (int i = 0; i < 3000 && metric("hyrt_jobs_running") != kJobs; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(metric("hyrt_jobs_running"), kJobs);
  wait_for_sampling();
  const json busy = get_json("/sdapi/v1/progress");
  EXPECT_EQ(busy["state"]["job_count"], kJobs);
  EXPECT_EQ(busy["state"]["queue_length"], 0);
  EXPECT_EQ(busy["state"]["sampling_steps"], 150);
  auto r = keep(client().Post("/sdapi/v1/interrupt"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  for (std::thread& t : clients)
    t.join();
  for (int i = 0; i < kJobs; ++i) {
    ASSERT_TRUE(results[i]) << i;
    ASSERT_EQ(results[i]->status, 200) << results[i]->body;
    const json info = json::parse(json::parse(results[i]->body)["info"].get<std::string>());
    EXPECT_TRUE(info["interrupted"].get<bool>()) << i;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 60s);
  EXPECT_EQ(metric("hyrt_jobs_interrupted_total"), kJobs);
  EXPECT_EQ(metric("hyrt_jobs_running"), 0);
  EXPECT_EQ(get_json("/sdapi/v1/progress")["state"]["job_count"], 0);
  // The server keeps serving.
  r = post("/sdapi/v1/txt2img", small_job());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(ServeApi, ParsesA1111FieldsAsA1111Does) {
  const hyrt::serve::Limits limits;
  auto resolve = [](const std::string& s) -> std::optional<std::string> {
    if (s == "m") return "m";
    return std::nullopt;
  };
  // null means the default; sampler names match case-insensitively, aliases and hyrt's own.
  auto r = hyrt::serve::parse_txt2img(
      R"({"prompt": null, "steps": 12.0, "seed": null, "sampler_name": "k_euler_a",
          "override_settings": {"sd_model_checkpoint": "m"}})",
      limits, resolve);
  EXPECT_EQ(r.prompt, "");
  EXPECT_EQ(r.steps, 12);
  EXPECT_EQ(r.seed, -1);
  EXPECT_EQ(r.sampler, "euler_a");
  EXPECT_EQ(r.model, "m");
  r = hyrt::serve::parse_txt2img(R"({"sampler_index": "ddim"})", limits, resolve);
  EXPECT_EQ(r.sampler, "ddim");
  EXPECT_EQ(r.sampler_a1111, "DDIM");
  r = hyrt::serve::parse_txt2img(R"({"sampler_name": "DPM++ 2M", "scheduler": "karras"})", limits,
                                 resolve);
  EXPECT_EQ(r.sampler, "dpmpp_2m_karras");
  r = hyrt::serve::parse_txt2img(R"({"sampler_name": "Euler", "scheduler": "Karras"})", limits,
                                 resolve);
  EXPECT_EQ(r.sampler, "euler_karras");
  EXPECT_EQ(r.sampler_a1111, "Euler Karras");
  r = hyrt::serve::parse_txt2img(R"({"sampler_name": "k_heun"})", limits, resolve);
  EXPECT_EQ(r.sampler, "heun");
  try {
    hyrt::serve::parse_txt2img(R"({"sampler_name": "LCM", "scheduler": "Karras"})", limits,
                               resolve);
    FAIL() << "Karras with LCM was accepted";
  } catch (const hyrt::serve::ApiError& e) {
    EXPECT_EQ(e.status(), 422);
    EXPECT_EQ(e.field(), "scheduler");
  }
  EXPECT_EQ(hyrt::serve::iteration_seed(10, 4, 2), 18u);
}

TEST(ServeApi, Base64RoundTrips) {
  for (size_t n = 0; n < 10; ++n) {
    std::vector<uint8_t> bytes(n);
    for (size_t i = 0; i < n; ++i)
      bytes[i] = static_cast<uint8_t>(i * 37 + 200);
    EXPECT_EQ(hyrt::serve::base64_decode(hyrt::serve::base64_encode(bytes)), bytes);
  }
  EXPECT_EQ(hyrt::serve::base64_encode({'M', 'a'}), "TWE=");
}

}  // namespace

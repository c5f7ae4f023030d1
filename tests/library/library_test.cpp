// The public API as a library that runs for days (include/hyrt/hyrt.h's contracts):
// concurrent calls from many threads on two Models of one Runtime equal the same calls made
// one after another; cancel and a throwing callback end a call and leave the Model healthy;
// out of memory at a new size (under an address-space limit, in a child process) leaves it
// healthy; memory stays flat over many calls cycling through sizes and models, and unloading
// returns it.
//
// Runs on the bundled shapes model (models/), so it needs no ../shared. HYRT_TEST_PLACEMENT
// sets the placement (default host; the GPU machine runs device and hybrid:
// scripts/gpu/run_library_on_gpu.sh). HYRT_TEST_THREADS sets the host threads (the
// ThreadSanitizer run uses 1: GNU OpenMP's barriers are invisible to TSan, and the contract
// under test is hyrt's own locking, not OpenMP's).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hyrt/hyrt.h"
#include "hyrt/hyrt_c.h"
#include "pipeline/image_io.h"
#include "pipeline/precision.h"
#include "pipeline/txt2img.h"
#include "test_util.h"

namespace {

std::string bundled(const char* name) {
  return (std::filesystem::path(HYRT_SOURCE_DIR) / "models" / name).string();
}

hyrt::RuntimeOptions runtime_options() {
  hyrt::RuntimeOptions o;
  if (const char* t = std::getenv("HYRT_TEST_THREADS")) o.num_threads = std::atoi(t);
  // HYRT_TEST_PLACEMENT=device / hybrid runs the same contract on the GPU machine.
  const char* placement = std::getenv("HYRT_TEST_PLACEMENT");
  o.placement = placement ? placement : "host";
  // Request batching on, on the host too, so every test here also runs through the batcher;
  // a short wait lets the concurrent tests' calls meet in batches.
  o.max_batch = 8;
  o.batch_wait_ms = 20;
  // f32: the batching contract below (a call's picture equals its lone picture, bit for bit)
  // holds for hyrt's f32 kernels; oneDNN 3's bf16 kernels (Debian trixie) accumulate in an
  // order that can depend on the batch (a CI run saw a concurrent call differ), an open bug.
  o.precision = "f32";
  return o;
}

struct Job {
  int model;  // 0: shapes (f16 folder), 1: shapes-int8 file
  int width, height;
  const char* sampler;
  uint64_t seed;
  int steps;
  const char* prompt;
};

hyrt::GenerateOptions options_of(const Job& j) {
  hyrt::GenerateOptions o;
  o.prompt = j.prompt;
  o.width = j.width;
  o.height = j.height;
  o.sampler = j.sampler;
  o.seed = j.seed;
  o.steps = j.steps;
  o.cfg_scale = 5.0f;
  return o;
}

const std::vector<Job>& mixed_jobs() {
  static const std::vector<Job> jobs = {
      {0, 32, 32, "euler_a", 1, 3, "a red circle"},
      {1, 48, 32, "ddim", 2, 3, "a blue square"},
      {0, 40, 40, "dpmpp_2m", 3, 2, "a green triangle"},
      {1, 32, 48, "euler", 4, 3, "a red circle on a blue background"},
      {1, 32, 32, "dpmpp_2m_karras", 5, 2, "a yellow star"},
      {0, 48, 48, "ddim", 6, 2, "two circles"},
      {1, 40, 40, "euler_a", 7, 3, "a square"},
      {0, 32, 40, "euler", 8, 2, "a purple circle"},
  };
  return jobs;
}

class Library : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    runtime_ = new hyrt::Runtime(runtime_options());
    models_ = new std::vector<hyrt::Model>();
    models_->push_back(runtime_->load(bundled("shapes")));
    models_->push_back(runtime_->load(bundled("shapes-int8.safetensors")));
    // The reference: each job alone, one after another.
    serial_ = new std::vector<std::vector<uint8_t>>();
    for (const Job& j : mixed_jobs())
      serial_->push_back((*models_)[j.model].generate(options_of(j)).front().rgb);
  }
  static void TearDownTestSuite() {
    delete serial_;
    delete models_;
    delete runtime_;
  }
  static hyrt::Model& model(int i) { return (*models_)[i]; }
  static const std::vector<uint8_t>& serial(size_t job) { return (*serial_)[job]; }

  static hyrt::Runtime* runtime_;
  static std::vector<hyrt::Model>* models_;
  static std::vector<std::vector<uint8_t>>* serial_;
};
hyrt::Runtime* Library::runtime_ = nullptr;
std::vector<hyrt::Model>* Library::models_ = nullptr;
std::vector<std::vector<uint8_t>>* Library::serial_ = nullptr;

TEST_F(Library, ConcurrentCallsEqualSerialCalls) {
  constexpr int kThreads = 8;
  const auto& jobs = mixed_jobs();
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0}, failures{0};
  std::mutex log;
  std::vector<std::string> messages;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread runs two jobs, starting at a different one: every job runs twice, on
      // both models at once, with sizes and samplers interleaved.
      for (int k = 0; k < 2; ++k) {
        const size_t i = (t + k * 3) % jobs.size();
        try {
          const auto img = model(jobs[i].model).generate(options_of(jobs[i])).front();
          if (img.rgb != serial(i)) {
            ++mismatches;
            std::lock_guard<std::mutex> g(log);
            messages.push_back("job " + std::to_string(i) + " differs from its serial result");
          }
        } catch (const std::exception& e) {
          ++failures;
          std::lock_guard<std::mutex> g(log);
          messages.push_back(e.what());
        }
      }
    });
  }
  for (auto& th : threads)
    th.join();
  for (const auto& m : messages)
    ADD_FAILURE() << m;
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(failures.load(), 0);
}

// What request batching stands on: a picture does not depend on the batch it is computed
// in. With DDIM (no per-step noise), image 0 of a batch of 4 from seed s has image 0's
// latents of a lone call from seed s, so the two must be equal byte for byte.
TEST_F(Library, FirstImageOfABatchEqualsALoneCall) {
  for (int m = 0; m < 2; ++m) {
    Job j{m, 32, 40, "ddim", 11, 3, "a red circle on a blue background"};
    hyrt::GenerateOptions o = options_of(j);
    const auto lone = model(m).generate(o).front().rgb;
    o.batch = 4;
    const auto batch = model(m).generate(o);
    ASSERT_EQ(batch.size(), 4u);
    EXPECT_TRUE(batch.front().rgb == lone) << "model " << m << ": batch row 0 differs";
    EXPECT_FALSE(batch[1].rgb == lone) << "model " << m << ": rows 0 and 1 drew the same noise";
  }
}

// Calls that wait together run as one batch (the runtime's stats say they did), and each
// still equals its lone call: different prompts, seeds, guidance scales, batch sizes and the
// ancestral sampler's per-step noise. One member's throwing callback and another's cancel end
// only those two.
TEST_F(Library, BatchedCallsEqualLoneCalls) {
  struct Member {
    const char* prompt;
    uint64_t seed;
    float cfg;
    int batch;
    int fail;  // 0: runs through; 1: its callback throws at step 2; 2: cancelled at step 2
  };
  const std::vector<Member> members = {
      {"a red circle", 21, 5.0f, 1, 0},     {"a blue square", 22, 7.5f, 2, 0},
      {"a green triangle", 23, 3.0f, 1, 1}, {"two circles", 24, 5.0f, 1, 0},
      {"a yellow star", 25, 9.0f, 1, 2},    {"a purple circle", 26, 5.0f, 1, 0},
  };
  auto options = [](const Member& m) {
    Job j{0, 40, 32, "euler_a", m.seed, 3, m.prompt};
    hyrt::GenerateOptions o = options_of(j);
    o.cfg_scale = m.cfg;
    o.batch = m.batch;
    return o;
  };
  std::vector<std::vector<hyrt::Image>> lone;
  for (const Member& m : members)
    lone.push_back(model(0).generate(options(m)));

  hyrt::RuntimeOptions ro = runtime_options();
  ro.batch_wait_ms = 2000;  // the batch starts once it is full (8 images) or after 2 s
  hyrt::Runtime rt(ro);
  hyrt::Model shapes = rt.load(bundled("shapes"));
  std::vector<std::thread> threads;
  std::mutex log;
  std::vector<std::string> messages;
  for (size_t i = 0; i < members.size(); ++i)
    threads.emplace_back([&, i] {
      const Member& m = members[i];
      hyrt::GenerateOptions o = options(m);
      hyrt::CancelToken token = o.cancel;
      o.on_step = [&m, token](int step, int) {
        if (m.fail == 1 && step == 2) throw std::runtime_error("member callback failed");
        if (m.fail == 2 && step == 2) token.cancel();
      };
      std::string problem;
      try {
        const auto images = shapes.generate(o);
        if (m.fail == 1) problem = "the throwing member returned images";
        bool same = images.size() == lone[i].size();
        for (size_t k = 0; same && k < images.size(); ++k)
          same = images[k].rgb == lone[i][k].rgb && images[k].parameters == lone[i][k].parameters;
        if (!same && m.fail != 2) problem = "differs from its lone call";
      } catch (const hyrt::Cancelled&) {
        if (m.fail != 2) problem = "cancelled unexpectedly";
      } catch (const std::runtime_error& e) {
        if (m.fail != 1) problem = e.what();
      }
      if (!problem.empty()) {
        std::lock_guard<std::mutex> g(log);
        messages.push_back("member " + std::to_string(i) + ": " + problem);
      }
    });
  for (auto& th : threads)
    th.join();
  for (const auto& m : messages)
    ADD_FAILURE() << m;
  const hyrt::RuntimeStats stats = rt.stats();
  EXPECT_EQ(stats.calls, static_cast<int64_t>(members.size()));
  EXPECT_GE(stats.largest_batch, 2) << "no calls were batched";
  EXPECT_LT(stats.batches, static_cast<int64_t>(members.size()));
  EXPECT_EQ(stats.waiting, 0);
  if (ro.placement == "host")
    EXPECT_EQ(stats.accelerator_bytes, 0);
  else
    EXPECT_GT(stats.accelerator_bytes, 0) << "resident weights and arena on the accelerator";
  // The Model is healthy after the batch lost two members.
  EXPECT_EQ(shapes.generate(options(members[0])).front().rgb, lone[0].front().rgb);
}

TEST_F(Library, CancelWhileQueuedReturnsAtOnce) {
  hyrt::RuntimeOptions ro = runtime_options();
  ro.max_batch = 1;  // the second call waits behind the first
  hyrt::Runtime rt(ro);
  hyrt::Model shapes = rt.load(bundled("shapes"));
  std::atomic<bool> first_started{false};
  std::thread first([&] {
    hyrt::GenerateOptions o = options_of(mixed_jobs()[5]);
    o.steps = 12;
    o.on_step = [&](int, int) { first_started = true; };
    shapes.generate(o);
  });
  while (!first_started)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  hyrt::GenerateOptions o = options_of(mixed_jobs()[0]);
  o.cancel.cancel();
  EXPECT_THROW(shapes.generate(o), hyrt::Cancelled);  // while the first call still runs
  first.join();
  EXPECT_EQ(rt.stats().waiting, 0);
}

TEST_F(Library, CancelFromAnotherThreadStopsTheWorkerAndTheCallbacks) {
  // on_step runs on the calling thread while the runtime's worker goes on, so when the callback
  // of step 2 waits for another thread's cancel the worker may be a few steps further: what the
  // library promises is that the worker stops at its next step boundary after the cancel (long
  // before the 40th step) and that no callback runs after the cancel.
  Job j = mixed_jobs()[0];
  j.steps = 40;
  hyrt::GenerateOptions o = options_of(j);
  std::mutex m;
  std::condition_variable cv;
  int reached = 0;
  int steps_after_cancel = 0;
  std::atomic<bool> cancelled{false};
  o.on_step = [&](int step, int) {
    if (cancelled) ++steps_after_cancel;
    std::unique_lock<std::mutex> g(m);
    reached = step;
    cv.notify_all();
    if (step == 2) cv.wait(g, [&] { return cancelled.load(); });
  };
  std::thread canceller([&] {
    std::unique_lock<std::mutex> g(m);
    cv.wait(g, [&] { return reached >= 2; });
    o.cancel.cancel();
    cancelled = true;
    cv.notify_all();
  });
  try {
    model(0).generate(o);
    ADD_FAILURE() << "a cancelled call returned";
  } catch (const hyrt::Cancelled& e) {
    EXPECT_EQ(e.code(), hyrt::ErrorCode::kCancelled);
    int before = 0, total = 0;
    const std::string what = e.what();
    ASSERT_EQ(std::sscanf(what.c_str(), "cancelled before step %d of %d", &before, &total), 2)
        << what;
    EXPECT_EQ(total, 40);
    EXPECT_GE(before, 3) << what;  // step 2 had ended when its callback cancelled
    EXPECT_LT(before, 40) << what;
  }
  canceller.join();
  EXPECT_EQ(steps_after_cancel, 0);
  EXPECT_EQ(reached, 2);
  // The model is healthy: the next call equals the serial one.
  EXPECT_EQ(model(0).generate(options_of(mixed_jobs()[0])).front().rgb, serial(0));
}

TEST_F(Library, CancelledTokenStopsBeforeAnyWork) {
  hyrt::GenerateOptions o = options_of(mixed_jobs()[1]);
  int steps = 0;
  o.on_step = [&](int, int) { ++steps; };
  o.cancel.cancel();
  EXPECT_THROW(model(1).generate(o), hyrt::Cancelled);
  EXPECT_EQ(steps, 0);
  EXPECT_EQ(model(1).generate(options_of(mixed_jobs()[1])).front().rgb, serial(1));
}

TEST_F(Library, ThrowingCallbackEndsTheCallAndLeavesTheModelHealthy) {
  for (int k : {1, 2}) {
    hyrt::GenerateOptions o = options_of(mixed_jobs()[3]);
    o.on_step = [k](int step, int) {
      if (step == k) throw std::runtime_error("callback failed at step " + std::to_string(k));
    };
    try {
      model(1).generate(o);
      ADD_FAILURE() << "the callback's exception did not reach the caller";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "callback failed at step " + std::to_string(k));
    }
    EXPECT_EQ(model(1).generate(options_of(mixed_jobs()[3])).front().rgb, serial(3));
  }
}

TEST_F(Library, BadOptionsAreRefusedWithoutDisturbingOthers) {
  hyrt::GenerateOptions o = options_of(mixed_jobs()[0]);
  o.width = 33;
  EXPECT_THROW(model(0).generate(o), hyrt::Error);
  o.width = -64;  // not "native": only 0 means that
  EXPECT_THROW(model(0).generate(o), hyrt::Error);
  o = options_of(mixed_jobs()[0]);
  o.sampler = "no such sampler";
  EXPECT_THROW(model(0).generate(o), hyrt::Error);
  EXPECT_EQ(model(0).generate(options_of(mixed_jobs()[0])).front().rgb, serial(0));
}

// ---- img2img and inpainting (GenerateOptions::init_image, mask, strength).

// A picture of `w` x `h` with some structure (gradients and a bright block).
hyrt::Image test_picture(int w, int h) {
  hyrt::Image im;
  im.width = w;
  im.height = h;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const bool block = x > w / 3 && x < 2 * w / 3 && y > h / 4 && y < h / 2;
      im.rgb.insert(im.rgb.end(), {static_cast<uint8_t>(block ? 250 : x * 255 / w),
                                   static_cast<uint8_t>(block ? 30 : 60),
                                   static_cast<uint8_t>(block ? 20 : y * 255 / h)});
    }
  return im;
}

// A mask of `w` x `h`: white (repaint) on the left half.
hyrt::Image test_mask(int w, int h) {
  hyrt::Image im;
  im.width = w;
  im.height = h;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      im.rgb.insert(im.rgb.end(), 3, static_cast<uint8_t>(x < w / 2 ? 255 : 0));
  return im;
}

// The public API's img2img and inpainting give what the pipeline gives for the same picture
// prepared as diffusers (and `hyrt generate --init-image`) prepare it: Lanczos-resized, / 255;
// the mask grayscale, resized. Without width/height the size is the picture's, rounded down
// to the VAE factor (4 for the shapes model).
TEST_F(Library, Img2ImgAndInpaintingEqualThePipeline) {
  using namespace hyrt::pipeline;
  const hyrt::RuntimeOptions ro = runtime_options();
  hyrt::exec::EngineOptions eo;
  eo.num_threads = ro.num_threads;
  eo.placement = hyrt::plan::parse_placement_mode(ro.placement);
  const PrecisionSettings precision = precision_settings(parse_precision(ro.precision));
  eo.int8_mode = precision.int8_mode;
  eo.float_precision = precision.float_precision;
  hyrt::exec::Engine engine(eo);
  auto reference = DiffusionModel::open(bundled("shapes-int8.safetensors"), engine, {});

  const hyrt::Image picture = test_picture(46, 39);
  const hyrt::Image mask = test_mask(20, 20);
  for (const bool inpaint : {false, true}) {
    hyrt::GenerateOptions o = options_of({1, 0, 0, "ddim", 31, 6, "a red circle"});
    o.init_image = picture;
    o.strength = 0.5;
    if (inpaint) {
      o.mask = mask;
      o.width = o.height = 32;
    }
    const std::vector<hyrt::Image> got = model(1).generate(o);
    ASSERT_EQ(got.size(), 1u);
    const int w = inpaint ? 32 : 44, h = inpaint ? 32 : 36;
    EXPECT_EQ(got[0].width, w);
    EXPECT_EQ(got[0].height, h);
    EXPECT_NE(got[0].parameters.find("Denoising strength: 0.5, Version: hyrt"), std::string::npos)
        << got[0].parameters;

    Txt2ImgParams p;
    p.prompt = o.prompt;
    p.width = w;
    p.height = h;
    p.steps = o.steps;
    p.cfg_scale = o.cfg_scale;
    p.seed = o.seed;
    p.sampler = parse_sampler_kind(o.sampler);
    InitImage init;
    init.strength = 0.5;
    const Image8 resized = resize_lanczos({picture.width, picture.height, 3, picture.rgb}, w, h);
    init.image = hyrt::Tensor(hyrt::DType::kF32, {1, h, w, 3});
    for (size_t i = 0; i < resized.pixels.size(); ++i)
      init.image.as<float>()[i] = resized.pixels[i] / 255.0f;
    if (inpaint) {
      const Image8 m = resize_lanczos(to_grayscale({mask.width, mask.height, 3, mask.rgb}), w, h);
      init.mask = hyrt::Tensor(hyrt::DType::kF32, {1, h, w, 1});
      for (size_t i = 0; i < m.pixels.size(); ++i)
        init.mask->as<float>()[i] = m.pixels[i] / 255.0f;
    }
    p.init = std::move(init);
    const Txt2ImgResult r = txt2img(*reference, reference->scheduler_config(), p);
    const Image8 want = float_to_image8({r.images.as<float>(), size_t(w) * h * 3}, h, w);
    EXPECT_TRUE(got[0].rgb == want.pixels)
        << (inpaint ? "inpainting" : "img2img") << " differs from the pipeline's";
    // And it is not simply text to image: the picture shows through.
    hyrt::GenerateOptions plain = o;
    plain.init_image.reset();
    plain.mask.reset();
    plain.width = w;
    plain.height = h;
    EXPECT_FALSE(model(1).generate(plain).front().rgb == got[0].rgb);
  }
}

// An img2img call never joins another call's batch; calls around it still batch and each
// equals its lone call.
TEST_F(Library, Img2ImgCallsRunAloneBesideBatchedOnes) {
  hyrt::RuntimeOptions ro = runtime_options();
  ro.batch_wait_ms = 300;
  hyrt::Runtime rt(ro);
  hyrt::Model shapes = rt.load(bundled("shapes-int8.safetensors"));
  std::vector<hyrt::GenerateOptions> calls;
  for (int i = 0; i < 3; ++i) {
    hyrt::GenerateOptions o = options_of({1, 32, 32, "ddim", uint64_t(40 + i), 4, "a circle"});
    if (i == 1) {
      o.init_image = test_picture(32, 32);
      o.strength = 0.75;
    }
    calls.push_back(o);
  }
  std::vector<std::vector<uint8_t>> lone, together(calls.size());
  for (const auto& o : calls)
    lone.push_back(model(1).generate(o).front().rgb);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (size_t i = 0; i < calls.size(); ++i)
    threads.emplace_back([&, i] {
      try {
        together[i] = shapes.generate(calls[i]).front().rgb;
      } catch (const std::exception& e) {
        ++failures;
        ADD_FAILURE() << "call " << i << ": " << e.what();
      }
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(failures.load(), 0);
  for (size_t i = 0; i < calls.size(); ++i)
    EXPECT_TRUE(together[i] == lone[i]) << "call " << i << " differs from its lone call";
  const hyrt::RuntimeStats stats = rt.stats();
  EXPECT_EQ(stats.calls, 3);
  EXPECT_GE(stats.batches, 2);  // the img2img call alone
}

// LoRAs through GenerateOptions::loras and the prompt's <lora:NAME:MULT> tags give the same
// picture, change it, and are gone again in a call without them; the tag stays in the
// parameters; one that does not fit the model is refused.
TEST_F(Library, LorasFromOptionsAndPromptTags) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("hyrt_lora_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  hyrt::test::write_test_lora(bundled("shapes-int8.safetensors"), dir / "style.safetensors");
  hyrt::RuntimeOptions ro = runtime_options();
  ro.lora_dir = dir.string();
  hyrt::Runtime rt(ro);
  hyrt::Model shapes = rt.load(bundled("shapes-int8.safetensors"));
  const hyrt::GenerateOptions plain = options_of({1, 32, 32, "ddim", 9, 3, "a red circle"});
  const hyrt::Image a = shapes.generate(plain).front();
  hyrt::GenerateOptions with = plain;
  with.loras = {{(dir / "style.safetensors").string(), 0.8f}};
  const hyrt::Image b = shapes.generate(with).front();
  EXPECT_FALSE(a.rgb == b.rgb) << "the LoRA changed nothing";
  EXPECT_NE(b.parameters.find("style:0.8"), std::string::npos) << b.parameters;
  hyrt::GenerateOptions tagged = plain;
  tagged.prompt = "a red circle <lora:style:0.8>";
  const hyrt::Image c = shapes.generate(tagged).front();
  EXPECT_TRUE(c.rgb == b.rgb) << "a prompt tag differs from GenerateOptions::loras";
  EXPECT_NE(c.parameters.find("a red circle <lora:style:0.8>\n"), std::string::npos)
      << c.parameters;
  EXPECT_TRUE(shapes.generate(plain).front().rgb == a.rgb) << "the LoRA stayed applied";

  hyrt::GenerateOptions bad = plain;
  bad.prompt = "x <lora:absent>";
  EXPECT_THROW(shapes.generate(bad), hyrt::Error);
  bad.prompt = "x <lora:style:abc>";
  EXPECT_THROW(shapes.generate(bad), hyrt::Error);
  bad = plain;
  bad.loras = {{(dir / "none.safetensors").string(), 1.0f}};
  EXPECT_THROW(shapes.generate(bad), hyrt::Error);
  // The bundled model's LoRA on the golden model, whose layers are of other sizes.
  if (std::filesystem::exists(std::filesystem::path(HYRT_SHARED_DIR) / "golden/sd15-tiny/model")) {
    hyrt::Model other =
        rt.load((std::filesystem::path(HYRT_SHARED_DIR) / "golden/sd15-tiny/model").string());
    try {
      other.generate(with);
      ADD_FAILURE() << "a LoRA for another model was accepted";
    } catch (const hyrt::Error& e) {
      EXPECT_NE(std::string(e.what()).find("do not fit"), std::string::npos) << e.what();
    }
  }
  EXPECT_TRUE(shapes.generate(with).front().rgb == b.rgb) << "a refused LoRA disturbed the next";
  std::filesystem::remove_all(dir);
}

// Live previews (GenerateOptions::on_preview): every preview_every steps and after the last, on
// the calling thread after that step's on_step, with the TAESD decoder when the model has one
// and the VAE otherwise. Euler's last prediction is its result, so the last preview is the
// picture (to 8-bit rounding); previews leave the picture unchanged; a throwing on_preview ends
// the call and leaves the model healthy.
TEST_F(Library, LivePreviewsComeEveryNStepsAndEndWithThePicture) {
  hyrt::LoadOptions lo;
  lo.taesd = std::string(HYRT_SOURCE_DIR) + "/tests/data/taesd-tiny-4x";
  hyrt::Runtime rt(runtime_options());
  hyrt::Model m = rt.load(bundled("shapes-int8.safetensors"), lo);
  for (const bool taesd : {true, false}) {
    SCOPED_TRACE(taesd ? "TAESD" : "VAE");
    if (!taesd) m.set_taesd("");
    hyrt::GenerateOptions o = options_of({1, 32, 32, "euler", 9, 5, "a red circle"});
    o.taesd = taesd;
    const hyrt::Image plain = m.generate(o).front();
    std::vector<int> steps_seen, preview_steps;
    std::optional<hyrt::Image> last;
    o.preview_every = 2;
    o.on_step = [&](int step, int) { steps_seen.push_back(step); };
    o.on_preview = [&](const hyrt::Image& img, int step, int total) {
      EXPECT_EQ(total, 5);
      EXPECT_EQ(img.width, 32);
      EXPECT_EQ(img.rgb.size(), size_t{32 * 32 * 3});
      EXPECT_TRUE(img.parameters.empty());
      ASSERT_FALSE(steps_seen.empty());
      EXPECT_LE(step, steps_seen.back()) << "a preview before its step was reported";
      EXPECT_TRUE(step == 2 || step == 4 || step == 5) << step;
      preview_steps.push_back(step);
      last = img;
    };
    const hyrt::Image with = m.generate(o).front();
    EXPECT_TRUE(with.rgb == plain.rgb) << "previews changed the picture";
    ASSERT_TRUE(last.has_value());
    EXPECT_EQ(preview_steps.back(), 5);
    EXPECT_TRUE(std::is_sorted(preview_steps.begin(), preview_steps.end()));
    int worst = 0;
    for (size_t i = 0; i < with.rgb.size(); ++i)
      worst = std::max(worst, std::abs(int{with.rgb[i]} - int{last->rgb[i]}));
    EXPECT_LE(worst, 2) << "the last preview is not the picture";
    o.preview_every = 0;
    EXPECT_THROW(m.generate(o), hyrt::Error);
    o.preview_every = 1;
    o.on_preview = [](const hyrt::Image&, int step, int) {
      if (step == 2) throw std::runtime_error("preview refused");
    };
    EXPECT_THROW(m.generate(o), std::runtime_error);
    o.on_preview = nullptr;
    EXPECT_TRUE(m.generate(o).front().rgb == plain.rgb) << "a throwing on_preview left its mark";
  }
}

// A TAESD's name as A1111 names VAEs: the file's name with its extension, or the folder's.
TEST(LibraryNames, TaesdNamesAreA1111VaeNames) {
  EXPECT_EQ(hyrt::Model::taesd_name("/m/vae/taesd_decoder.safetensors"),
            "taesd_decoder.safetensors");
  EXPECT_EQ(hyrt::Model::taesd_name("/m/taesdxl/"), "taesdxl");
  EXPECT_EQ(hyrt::Model::taesd_name("../m/./taesd"), "taesd");
}

// A TAESD decoder loaded with a model (LoadOptions::taesd, Model::set_taesd, the C API's
// hyrt_model_set_taesd) decodes the calls that ask for it; the others keep the VAE; asking
// without one, or loading one for another latent space, is an InvalidArgument.
TEST_F(Library, TaesdDecodesTheCallsThatAskForIt) {
  const std::string taesd = std::string(HYRT_SOURCE_DIR) + "/tests/data/taesd-tiny-4x";
  hyrt::LoadOptions lo;
  lo.taesd = taesd;
  hyrt::Runtime rt(runtime_options());
  hyrt::Model m = rt.load(bundled("shapes-int8.safetensors"), lo);
  const hyrt::GenerateOptions plain = options_of({1, 32, 32, "ddim", 9, 3, "a red circle"});
  hyrt::GenerateOptions fast = plain;
  fast.taesd = true;
  const hyrt::Image vae = m.generate(plain).front();
  const hyrt::Image tiny = m.generate(fast).front();
  EXPECT_FALSE(vae.rgb == tiny.rgb);
  EXPECT_NE(tiny.parameters.find("VAE: taesd-tiny-4x"), std::string::npos) << tiny.parameters;
  EXPECT_EQ(vae.parameters.find("VAE:"), std::string::npos) << vae.parameters;
  EXPECT_TRUE(m.generate(plain).front().rgb == vae.rgb) << "the TAESD call changed the next";
  m.set_taesd("");
  EXPECT_THROW(m.generate(fast), hyrt::Error);
  m.set_taesd(taesd);
  EXPECT_TRUE(m.generate(fast).front().rgb == tiny.rgb);
  // One for a 2x VAE does not fit this 4x model; the model keeps the one it has.
  EXPECT_THROW(m.set_taesd(std::string(HYRT_SOURCE_DIR) + "/tests/data/taesd-tiny"), hyrt::Error);
  EXPECT_TRUE(m.generate(fast).front().rgb == tiny.rgb);

  // The C API: hyrt_model_set_taesd and hyrt_generate_options.taesd.
  hyrt_runtime_options cro;
  hyrt_runtime_options_init(&cro);
  const hyrt::RuntimeOptions like = runtime_options();  // HYRT_TEST_THREADS (TSan runs use 1)
  cro.num_threads = like.num_threads;
  cro.placement = like.placement.c_str();
  cro.precision = like.precision.c_str();
  hyrt_runtime* crt = nullptr;
  ASSERT_EQ(hyrt_runtime_create(&cro, &crt), HYRT_OK) << hyrt_last_error();
  hyrt_model* cm = nullptr;
  ASSERT_EQ(hyrt_model_load(crt, bundled("shapes-int8.safetensors").c_str(), nullptr, &cm), HYRT_OK)
      << hyrt_last_error();
  hyrt_generate_options co;
  hyrt_generate_options_init(&co);
  co.prompt = "a red circle";
  co.width = co.height = 32;
  co.steps = 3;
  co.cfg_scale = 5;
  co.seed = 9;
  co.sampler = "ddim";
  co.taesd = 1;
  hyrt_image* images = nullptr;
  int count = 0;
  EXPECT_EQ(hyrt_generate(cm, &co, &images, &count), HYRT_INVALID_ARGUMENT);  // none loaded
  ASSERT_EQ(hyrt_model_set_taesd(cm, taesd.c_str()), HYRT_OK) << hyrt_last_error();
  ASSERT_EQ(hyrt_generate(cm, &co, &images, &count), HYRT_OK) << hyrt_last_error();
  ASSERT_EQ(count, 1);
  EXPECT_TRUE(std::vector<uint8_t>(images[0].rgb, images[0].rgb + 32 * 32 * 3) == tiny.rgb);
  hyrt_images_free(images, count);
  // Live previews through the C API: after the last step at least; non-zero stops the call.
  struct Seen {
    std::vector<int> steps;
    int stop_at = 0;
  } seen;
  co.user_data = &seen;
  co.on_preview = [](void* user, const hyrt_image* preview, int step, int total) -> int {
    auto* s = static_cast<Seen*>(user);
    EXPECT_EQ(preview->width, 32);
    EXPECT_EQ(total, 3);
    EXPECT_STREQ(preview->parameters, "");
    s->steps.push_back(step);
    return step == s->stop_at ? 1 : 0;
  };
  ASSERT_EQ(hyrt_generate(cm, &co, &images, &count), HYRT_OK) << hyrt_last_error();
  hyrt_images_free(images, count);
  ASSERT_FALSE(seen.steps.empty());
  EXPECT_EQ(seen.steps.back(), 3);
  seen.stop_at = 3;
  EXPECT_EQ(hyrt_generate(cm, &co, &images, &count), HYRT_CANCELLED);
  co.on_preview = nullptr;
  // The hires fix through the C API: the second pass's size.
  co.hires_scale = 2;
  co.hires_strength = 0.7;
  ASSERT_EQ(hyrt_generate(cm, &co, &images, &count), HYRT_OK) << hyrt_last_error();
  EXPECT_EQ(images[0].width, 64);
  EXPECT_NE(std::string(images[0].parameters).find("Hires upscale: 2"), std::string::npos)
      << images[0].parameters;
  hyrt_images_free(images, count);
  co.hires_scale = 0;
  EXPECT_EQ(hyrt_model_set_taesd(cm, (std::string(HYRT_SOURCE_DIR) + "/tests/data/none").c_str()),
            HYRT_IO);
  EXPECT_EQ(hyrt_model_set_taesd(nullptr, taesd.c_str()), HYRT_INVALID_ARGUMENT);
  hyrt_model_destroy(cm);
  hyrt_runtime_destroy(crt);
}

TEST_F(Library, BadInitImagesAreRefused) {
  hyrt::GenerateOptions ok = options_of({1, 32, 32, "ddim", 5, 4, "a circle"});
  ok.init_image = test_picture(32, 32);
  ok.strength = 0.5;
  auto refused = [&](hyrt::GenerateOptions o, const std::string& message) {
    try {
      model(1).generate(o);
      ADD_FAILURE() << "accepted; expected: " << message;
    } catch (const hyrt::Error& e) {
      EXPECT_EQ(e.code(), hyrt::ErrorCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
  };
  hyrt::GenerateOptions o = ok;
  o.init_image.reset();
  o.mask = test_mask(32, 32);
  refused(o, "a mask needs an init_image");
  for (double s : {0.0, -0.5, 1.5, std::nan("")}) {
    o = ok;
    o.strength = s;
    refused(o, "strength must be in (0, 1]");
  }
  o = ok;
  o.strength = 0.2;  // 4 x 0.2 < 1
  refused(o, "leaves no step to run");
  o = ok;
  o.init_image->rgb.pop_back();
  refused(o, "init_image has 3071 bytes of rgb");
  o = ok;
  o.mask = test_mask(8, 8);
  o.mask->width = 0;
  refused(o, "mask is 0x8");
  o = ok;
  o.init_image->width = 20000;
  refused(o, "init_image is 20000x32");
  // Still healthy.
  EXPECT_EQ(model(0).generate(options_of(mixed_jobs()[0])).front().rgb, serial(0));
}

// ---- Out of memory at a new size, in a child process under an address-space limit.

int64_t address_space_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t pages = 0;
  f >> pages;
  return pages * sysconf(_SC_PAGESIZE);
}

// The child: runs only when re-executed by the parent test below.
TEST(LibraryChild, OutOfMemoryAtNewSize) {
  if (!std::getenv("HYRT_LIBRARY_OOM_CHILD"))
    GTEST_SKIP() << "run by OutOfMemoryAtNewSizeLeavesModelHealthy";
  hyrt::Runtime rt(runtime_options());
  hyrt::Model m = rt.load(bundled("shapes"));
  const Job small = mixed_jobs()[0];
  const auto reference = m.generate(options_of(small)).front().rgb;
  // Leave 256 MiB of address space: a 2048² picture needs far more (its VAE arena alone).
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_AS, &old), 0);
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(address_space_bytes() + (int64_t{256} << 20));
  ASSERT_EQ(setrlimit(RLIMIT_AS, &tight), 0);
  Job big = small;
  big.width = big.height = 2048;
  big.steps = 1;
  try {
    m.generate(options_of(big));
    ADD_FAILURE() << "2048² fitted in 256 MiB of address space";
  } catch (const hyrt::Error& e) {
    EXPECT_EQ(e.code(), hyrt::ErrorCode::kOutOfMemory) << e.what();
    std::printf("refused as expected: %s\n", e.what());
  }
  // Under the limit still: the next call at the old size equals the one before the failure.
  EXPECT_EQ(m.generate(options_of(small)).front().rgb, reference);
  ASSERT_EQ(setrlimit(RLIMIT_AS, &old), 0);
  EXPECT_EQ(m.generate(options_of(small)).front().rgb, reference);
}

TEST(LibraryFailure, OutOfMemoryAtNewSizeLeavesModelHealthy) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string cmd = "HYRT_LIBRARY_OOM_CHILD=1 '" + self +
                          "' --gtest_filter=LibraryChild.OutOfMemoryAtNewSize 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("refused as expected"), std::string::npos) << out;
}

// ---- Memory over many calls.

int64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  int64_t size = 0, resident = 0;
  f >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

TEST(LibraryMemory, FlatOverCyclesAndReturnedOnUnload) {
  hyrt::RuntimeOptions ro = runtime_options();
  // A budget below the ten sizes' executables, so the cycle also exercises eviction.
  ro.cache_bytes = int64_t{8} << 20;
  hyrt::Runtime rt(ro);
  {  // warm the process (the runtime's worker and thread pools, oneDNN's first-use state,
     // the heap's arenas) with both models once, so `start` is steady: the test is about what
     // models keep, and a ~25 MiB process in a minimal root leaves little room for first-use
     // state inside 10 %
    hyrt::Model warm_f16 = rt.load(bundled("shapes"));
    hyrt::Model warm_int8 = rt.load(bundled("shapes-int8.safetensors"));
    for (const Job& j : {mixed_jobs()[0], mixed_jobs()[1]}) {
      warm_f16.generate(options_of(j));
      warm_int8.generate(options_of(j));
    }
  }
  const int64_t start = rss_bytes();
  std::vector<hyrt::Model> models;
  models.push_back(rt.load(bundled("shapes")));
  models.push_back(rt.load(bundled("shapes-int8.safetensors")));
  constexpr int kSizes = 10, kCycles = 10;
  int64_t after_first = 0;
  int64_t most_cached = 0;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    for (int s = 0; s < kSizes; ++s) {
      for (int mi = 0; mi < 2; ++mi) {
        Job j = mixed_jobs()[static_cast<size_t>(s + mi) % mixed_jobs().size()];
        j.width = 32 + 8 * s;
        j.height = 32 + 8 * ((s * 3) % kSizes);
        j.steps = 1;
        models[mi].generate(options_of(j));
        most_cached = std::max(most_cached, models[mi].cached_bytes());
      }
    }
    if (cycle == 0) after_first = rss_bytes();
    std::printf("rss after cycle %d: %.1f MiB, cached %.1f + %.1f MiB\n", cycle + 1,
                rss_bytes() / 1048576.0, models[0].cached_bytes() / 1048576.0,
                models[1].cached_bytes() / 1048576.0);
  }
  const int64_t after_last = rss_bytes();
  std::printf(
      "rss: start %.1f MiB, after cycle 1 %.1f MiB, after cycle %d %.1f MiB, most cached %.1f "
      "MiB\n",
      start / 1048576.0, after_first / 1048576.0, kCycles, after_last / 1048576.0,
      most_cached / 1048576.0);
  EXPECT_LE(after_last, after_first * 11 / 10);
  EXPECT_LE(most_cached, ro.cache_bytes + (int64_t{4} << 20));  // the newest may overshoot
  models.clear();
  const int64_t unloaded = rss_bytes();
  std::printf("rss after unloading both: %.1f MiB\n", unloaded / 1048576.0);
  // Unloading returns the models' memory: what stays is the allocator's and the caches' own
  // bookkeeping (a few MiB: 7 MiB on the host, 9.5 MiB in a minimal Debian root, where 10 % of
  // the ~30 MiB process is only 3 MiB), not hundreds of MiB of weights and arenas...
  EXPECT_LE(unloaded, start * 11 / 10 + (int64_t{12} << 20));
  // ...and none of it grows with each load and unload (a leak would).
  for (int again = 0; again < 2; ++again) {
    models.push_back(rt.load(bundled("shapes")));
    models.push_back(rt.load(bundled("shapes-int8.safetensors")));
    for (int mi = 0; mi < 2; ++mi)
      models[mi].generate(options_of(mixed_jobs()[static_cast<size_t>(mi)]));
    models.clear();
  }
  const int64_t reloaded = rss_bytes();
  std::printf("rss after two more loads and unloads: %.1f MiB\n", reloaded / 1048576.0);
  EXPECT_LE(reloaded, unloaded + (int64_t{2} << 20));
}

}  // namespace

#include "pipeline/selfcheck.h"

#include <cmath>
#include <cstring>
#include <random>

#include "core/clock.h"
#include "core/error.h"
#include "models/components.h"
#include "models/sd15/random_weights.h"
#include "pipeline/diffusion_model.h"

namespace hyrt::pipeline {

namespace {

bool all_finite(const TensorView& v) {
  const float* p = v.as<float>();
  for (int64_t i = 0; i < v.numel(); ++i)
    if (!std::isfinite(p[i])) return false;
  return true;
}

double max_abs_diff(const TensorView& a, const TensorView& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, static_cast<double>(std::fabs(a.as<float>()[i] - b.as<float>()[i])));
  return m;
}

void fill_random(const TensorView& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  for (int64_t i = 0; i < v.numel(); ++i)
    v.as<float>()[i] = d(rng);
}

// Runs a one-output executable twice on the same inputs and once on perturbed inputs.
SelfCheckStep check_component(const std::string& name, exec::Engine& engine,
                              std::shared_ptr<ir::Graph> graph, const weights::WeightSource& w,
                              const std::function<void(exec::Executable&, uint64_t)>& set_inputs) {
  SelfCheckStep step;
  step.name = name;
  const auto t0 = Clock::now();
  auto exe = engine.compile(std::move(graph), w);
  set_inputs(*exe, 1);
  exe->run();
  const Tensor first = copy_out(exe->output(0));
  set_inputs(*exe, 1);
  exe->run();
  const double repeat_diff = max_abs_diff(first.view(), exe->output(0));
  set_inputs(*exe, 2);
  exe->run();
  const double input_diff = max_abs_diff(first.view(), exe->output(0));
  step.ms = ms_since(t0);
  const bool finite = all_finite(first.view());
  step.ok = finite && repeat_diff == 0 && input_diff > 0;
  step.detail = str_cat("output ", first.shape().to_string(), finite ? ", finite" : ", NOT FINITE",
                        repeat_diff == 0 ? ", repeatable" : ", NOT repeatable",
                        input_diff > 0 ? ", input-dependent" : ", IGNORES ITS INPUT", ", arena ",
                        exe->memory_plan().arena_bytes, " bytes");
  return step;
}

}  // namespace

std::vector<SelfCheckStep> run_selfcheck(exec::Engine& engine) {
  using namespace models;
  using namespace models::sd15;
  std::vector<SelfCheckStep> steps;
  const ClipTextConfig clip = tiny_clip_text_config();
  const UNetConfig unet = tiny_unet_config();
  const VaeConfig vae = tiny_vae_config();
  weights::MemoryWeights w;
  add_random_weights(expected_text_encoder_tensors(clip), 1, DType::kF16, w);
  add_random_weights(expected_unet_tensors(unet), 2, DType::kF16, w);
  add_random_weights(expected_vae_tensors(vae, /*decoder_only=*/true), 3, DType::kF16, w);

  steps.push_back(check_component("text encoder (CLIP, causal attention)", engine,
                                  build_clip_text_encoder(clip, w, TextEncoderShape{2}).graph, w,
                                  [&](exec::Executable& e, uint64_t seed) {
                                    auto* ids = e.input("input_ids").as<int32_t>();
                                    for (int i = 0; i < 2 * 77; ++i)
                                      ids[i] = static_cast<int32_t>((i * 37 + seed * 11) %
                                                                    clip.vocab_size);
                                    auto* pos = e.input("position_ids").as<int32_t>();
                                    for (int i = 0; i < 77; ++i)
                                      pos[i] = i;
                                  }));
  UNetShape shape;
  shape.batch = 2;
  shape.latent_height = 16;
  shape.latent_width = 24;  // non-square on purpose
  steps.push_back(check_component(
      "UNet step (CFG batch 2, 16x24 latent)", engine, build_unet(unet, w, shape).graph, w,
      [&](exec::Executable& e, uint64_t seed) {
        fill_random(e.input("sample"), seed);
        fill_random(e.input("encoder_hidden_states"), 7);
        e.input("timestep").as<float>()[0] = e.input("timestep").as<float>()[1] = 500.0f;
      }));
  steps.push_back(check_component(
      "VAE decoder (16x24 latent -> 32x48 image)", engine,
      build_vae_decoder(vae, w, 1, 16, 24, /*unscale=*/true).graph, w,
      [&](exec::Executable& e, uint64_t seed) { fill_random(e.input("latent"), seed); }));
  return steps;
}

}  // namespace hyrt::pipeline

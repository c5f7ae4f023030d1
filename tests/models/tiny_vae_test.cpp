// The TAESD decoder (weights/tiny_autoencoder.h, models::build_tiny_vae_decoder) against diffusers'
// AutoencoderTiny: a small random one (16 channels, one upsample, f16 weights) decoding random
// latents, read from the diffusers folder and from taesd's own decoder layout; and the tiny SD 1.5
// golden model's txt2img pipeline decoding with it (tests/data/make_tiny_vae_cases.py). Plus the
// refusals: files that are not TAESD decoders, one that does not fit the model, and a call asking
// for a TAESD decode on a model without one.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>

#include "core/error.h"
#include "exec/engine.h"
#include "models/components.h"
#include "pipeline/diffusion_model.h"
#include "pipeline/txt2img.h"
#include "plan/placement.h"
#include "test_util.h"
#include "weights/safetensors.h"
#include "weights/tiny_autoencoder.h"

namespace hyrt {
namespace {

const std::string kData = std::string(HYRT_SOURCE_DIR) + "/tests/data/";

Tensor read_tensor(const weights::SafetensorsFile& file, const std::string& name) {
  const TensorView v = file.view(name);
  Tensor t(DType::kF32, v.shape, name.c_str());
  std::memcpy(t.data(), v.data, t.bytes());  // views may be unaligned
  return t;
}

// NCHW <-> NHWC for the reference tensors.
Tensor to_nhwc(const Tensor& x) {
  const Shape& s = x.shape();
  Tensor out(DType::kF32, {s[0], s[2], s[3], s[1]});
  for (int64_t b = 0; b < s[0]; ++b)
    for (int64_t c = 0; c < s[1]; ++c)
      for (int64_t i = 0; i < s[2] * s[3]; ++i)
        out.as<float>()[(b * s[2] * s[3] + i) * s[1] + c] =
            x.as<float>()[(b * s[1] + c) * s[2] * s[3] + i];
  return out;
}

TEST(TinyVae, LayoutIsReadOffTheWeights) {
  const auto folder = weights::TinyAutoencoderWeights::open(kData + "taesd-tiny");
  const auto own = weights::TinyAutoencoderWeights::open(kData + "taesd_tiny_decoder.safetensors");
  EXPECT_EQ(folder->format(), "diffusers");
  EXPECT_EQ(own->format(), "taesd");
  for (const auto* w : {folder.get(), own.get()}) {
    const models::TinyVaeDecoderLayout l = models::inspect_tiny_vae_decoder(*w);
    EXPECT_EQ(l.latent_channels, 4);
    EXPECT_EQ(l.out_channels, 3);
    EXPECT_EQ(l.upscale, 2);
    EXPECT_EQ(l.layers, 8);  // conv, relu, block, block, upsample, conv, block, conv
    EXPECT_TRUE(w->contains("taesd.decoder.layers.6.conv.4.weight"));
  }
  EXPECT_EQ(folder->bytes(), own->bytes());
}

TEST(TinyVae, DecodeMatchesDiffusersFromBothLayouts) {
  const auto golden = test::golden_dir("sd15-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  const auto data = weights::SafetensorsFile::open(kData + "tiny_vae_cases.safetensors");
  const Tensor z = to_nhwc(read_tensor(*data, "decode.z"));
  const Tensor want = to_nhwc(read_tensor(*data, "decode.image"));
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  std::optional<Tensor> first;
  for (const char* path : {"taesd-tiny", "taesd_tiny_decoder.safetensors"}) {
    SCOPED_TRACE(path);
    model->set_tiny_vae(weights::TinyAutoencoderWeights::open(kData + path));
    ASSERT_TRUE(model->has_tiny_vae());
    const Tensor got = model->decode_latents_tiny(z.view());
    ASSERT_EQ(got.shape(), want.shape());
    const double err =
        test::relative_l2(got.as<float>(), want.as<float>(), static_cast<size_t>(want.numel()));
    std::printf("  %s: relative L2 %.3g\n", path, err);
    EXPECT_LE(err, 1e-5);
    if (!first) {
      first.emplace(DType::kF32, got.shape());
      std::memcpy(first->data(), got.data(), got.bytes());
    } else {
      EXPECT_EQ(std::memcmp(first->data(), got.data(), got.bytes()), 0) << "the layouts differ";
    }
  }
  model->set_tiny_vae(nullptr);
  EXPECT_FALSE(model->has_tiny_vae());
  EXPECT_THROW(model->decode_latents_tiny(z.view()), Error);
}

TEST(TinyVae, Txt2ImgMatchesDiffusersWithTheTinyVae) {
  const auto golden = test::golden_dir("sd15-tiny");
  if (!golden) GTEST_SKIP() << "../shared/golden/sd15-tiny not found: skipped";
  const auto data = weights::SafetensorsFile::open(kData + "tiny_vae_cases.safetensors");
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(*golden / "model", engine);
  pipeline::Txt2ImgParams p;
  p.prompt = "a red circle on a blue square";
  p.negative_prompt = "blurry";
  p.width = p.height = 64;
  p.steps = 4;
  p.cfg_scale = 5;
  p.seed = 3;
  p.sampler = pipeline::SamplerKind::kDdim;
  p.tiny_vae = true;
  try {
    (void)pipeline::txt2img(*model, model->scheduler_config(), p);
    ADD_FAILURE() << "a TAESD decode ran on a model without a TAESD decoder";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("TAESD"), std::string::npos) << e.what();
  }
  model->set_tiny_vae(weights::TinyAutoencoderWeights::open(kData + "taesd-tiny"));
  const Tensor got = pipeline::txt2img(*model, model->scheduler_config(), p).images;
  const Tensor want = read_tensor(*data, "pipe.image");
  ASSERT_EQ(got.shape(), want.shape());
  const double err =
      test::relative_l2(got.as<float>(), want.as<float>(), static_cast<size_t>(want.numel()));
  std::printf("  pipeline image relative L2 %.3g\n", err);
  EXPECT_LE(err, 2e-3) << "the pipeline image tolerance (golden README)";
  bool tiny_compiled = false;
  for (const auto& r : model->memory_report())
    tiny_compiled |= r.component == "tiny_vae_decoder";
  EXPECT_TRUE(tiny_compiled);
}

TEST(TinyVae, RefusesWhatIsNotAFittingDecoder) {
  auto code_of = [](auto&& f) -> std::optional<ErrorCode> {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return std::nullopt;
  };
  EXPECT_EQ(code_of([&] { weights::TinyAutoencoderWeights::open(kData + "no-such-taesd"); }),
            ErrorCode::kIo);
  // Not TAESD at all: the UNet test data's keys are neither layout.
  EXPECT_EQ(code_of([&] {
              weights::TinyAutoencoderWeights::open(kData + "unet_odd_latent.safetensors");
            }),
            ErrorCode::kInvalidModel);
  // taesd's own encoder file: layer 0 is a convolution (a decoder's is its clamp).
  {
    std::vector<uint8_t> bytes;
    const std::string header =
        R"({"0.weight":{"dtype":"F32","shape":[1,1,1,1],"data_offsets":[0,4]}})";
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i)
      bytes.push_back(static_cast<uint8_t>(n >> (8 * i)));
    bytes.insert(bytes.end(), header.begin(), header.end());
    bytes.insert(bytes.end(), 4, 0);
    try {
      weights::TinyAutoencoderWeights::from_file(
          weights::SafetensorsFile::from_bytes(std::move(bytes), "taesd_encoder"), "taesd_encoder");
      ADD_FAILURE() << "an encoder file was taken for a decoder";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
      EXPECT_NE(std::string(e.what()).find("encoder"), std::string::npos) << e.what();
    }
  }
  // A decoder that does not fit the model: the golden SD 1.5 model's VAE is 2x, this one's
  // layout asks for a model with 8x (three upsamples) — simulated by a model whose VAE differs:
  // the SDXL golden model's latent size matches, so use the layout check on the bundled model.
  const auto shapes = std::string(HYRT_SOURCE_DIR) + "/models/shapes-int8.safetensors";
  exec::Engine engine(exec::EngineOptions{.placement = plan::PlacementMode::kHost});
  auto model = pipeline::DiffusionModel::open(shapes, engine);
  if (model->vae_scale_factor() != 2) {
    EXPECT_EQ(code_of([&] {
                model->set_tiny_vae(weights::TinyAutoencoderWeights::open(kData + "taesd-tiny"));
              }),
              ErrorCode::kInvalidArgument);
    EXPECT_FALSE(model->has_tiny_vae());
  }
}

}  // namespace
}  // namespace hyrt

#include "pipeline/init_image.h"

#include "core/error.h"

namespace hyrt::pipeline {

namespace {

void check_image(const Image8& image, const char* what) {
  HYRT_CHECK(
      image.width > 0 && image.height > 0 && image.channels >= 1 && image.channels <= 4 &&
          image.pixels.size() == static_cast<size_t>(image.width) * image.height * image.channels,
      kInvalidArgument, what, ": ", image.width, "x", image.height, "x", image.channels,
      " does not match its ", image.pixels.size(), " bytes");
}

}  // namespace

Tensor picture_tensor(const Image8& picture, int width, int height) {
  check_image(picture, "init picture");
  HYRT_CHECK(picture.channels == 3 || picture.channels == 4, kInvalidArgument,
             "init picture: expected RGB or RGBA, got ", picture.channels, " channels");
  Image8 rgb = picture;
  if (rgb.channels == 4) {
    rgb.channels = 3;
    rgb.pixels.resize(static_cast<size_t>(picture.width) * picture.height * 3);
    for (size_t i = 0, j = 0; j < rgb.pixels.size(); i += 4, j += 3)
      for (int c = 0; c < 3; ++c)
        rgb.pixels[j + c] = picture.pixels[i + c];
  }
  const Image8 r = resize_lanczos(rgb, width, height);
  Tensor t(DType::kF32, {1, height, width, 3});
  for (size_t i = 0; i < r.pixels.size(); ++i)
    t.as<float>()[i] = r.pixels[i] / 255.0f;
  return t;
}

Tensor mask_tensor(const Image8& mask, int width, int height) {
  check_image(mask, "mask");
  const Image8 r = resize_lanczos(to_grayscale(mask), width, height);
  Tensor t(DType::kF32, {1, height, width, 1});
  for (size_t i = 0; i < r.pixels.size(); ++i)
    t.as<float>()[i] = r.pixels[i] / 255.0f;
  return t;
}

}  // namespace hyrt::pipeline

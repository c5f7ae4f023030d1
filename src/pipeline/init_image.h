// The picture and mask of img2img and inpainting (InitImage, txt2img.h) from 8-bit images,
// prepared as diffusers' image processors prepare PIL images — what `hyrt generate
// --init-image/--mask`, the public API's GenerateOptions::init_image and `hyrt serve`'s
// /sdapi/v1/img2img all feed the pipeline.
//
// Pure functions of their arguments: thread-safe.
#pragma once

#include "core/tensor.h"
#include "pipeline/image_io.h"

namespace hyrt::pipeline {

// VaeImageProcessor.preprocess of a PIL picture: RGB (an alpha channel is dropped, as
// Pillow's convert("RGB") does), Lanczos-resized to width x height (resize_lanczos), / 255
// -> NHWC [1, height, width, 3] f32 in [0, 1]. kInvalidArgument for a malformed image or size.
Tensor picture_tensor(const Image8& picture, int width, int height);

// The mask processor on a PIL mask: grayscale ("L", to_grayscale; alpha ignored), resized
// like the picture, / 255 -> [1, height, width, 1] f32 in [0, 1] (white = repaint; the
// pipeline binarises it at 0.5).
Tensor mask_tensor(const Image8& mask, int width, int height);

}  // namespace hyrt::pipeline

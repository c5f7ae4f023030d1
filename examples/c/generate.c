/* The C API (include/hyrt/hyrt_c.h) end to end: load a model, draw a picture with a
 * progress callback, save it as a PNG, redraw it with img2img and inpainting, and show that
 * a cancel token stops a call.
 *
 *   hyrt_c_example MODEL OUT.png [PROMPT]
 *
 * Built as C11 with -pedantic in CI (so the header stays plain C) and run by CTest on the
 * bundled model. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hyrt/hyrt_c.h"

static int print_progress(void* user_data, int step, int total) {
  int* calls = (int*)user_data;
  ++*calls;
  fprintf(stderr, "\rstep %d/%d", step, total);
  if (step == total) fputc('\n', stderr);
  return 0; /* non-zero would stop the call */
}

static int fail(const char* what, hyrt_status status) {
  fprintf(stderr, "%s: %s: %s\n", what, hyrt_status_name(status), hyrt_last_error());
  return 1;
}

int main(int argc, char** argv) {
  hyrt_runtime* runtime = NULL;
  hyrt_model* model = NULL;
  hyrt_cancel* cancel = NULL;
  hyrt_generate_options options;
  hyrt_image* images = NULL;
  int count = 0, calls = 0;
  hyrt_status status;

  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL OUT.png [PROMPT]\n", argv[0]);
    return 2;
  }
  if ((status = hyrt_runtime_create(NULL, &runtime)) != HYRT_OK) return fail("runtime", status);
  if ((status = hyrt_model_load(runtime, argv[1], NULL, &model)) != HYRT_OK)
    return fail("load", status);
  printf("hyrt %s, %s model, native size %d, %s\n", hyrt_version(), hyrt_model_family(model),
         hyrt_model_native_size(model), hyrt_runtime_accelerator(runtime));

  hyrt_generate_options_init(&options);
  options.prompt = argc > 3 ? argv[3] : "a red circle on a blue background";
  options.width = options.height = 64;
  options.steps = 6;
  options.cfg_scale = 5.0f;
  options.seed = 1;
  options.sampler = "ddim";
  options.on_step = print_progress;
  options.user_data = &calls;
  if ((status = hyrt_generate(model, &options, &images, &count)) != HYRT_OK)
    return fail("generate", status);
  if (count != 1 || calls != options.steps) {
    fprintf(stderr, "expected 1 image and %d progress calls, got %d and %d\n", options.steps, count,
            calls);
    return 1;
  }
  if ((status = hyrt_image_save_png(&images[0], argv[2])) != HYRT_OK) return fail("save", status);
  printf("wrote %s (%dx%d, seed %llu)\n%s\n", argv[2], images[0].width, images[0].height,
         (unsigned long long)images[0].seed, images[0].parameters);

  /* img2img from that picture, then inpainting its left half (white = repaint). */
  {
    hyrt_generate_options i2i = options;
    hyrt_image* redrawn = NULL;
    hyrt_image mask = images[0];
    int n = 0, x, y, pass;
    mask.rgb = (uint8_t*)malloc((size_t)mask.width * mask.height * 3);
    if (!mask.rgb) return 1;
    for (y = 0; y < mask.height; ++y)
      for (x = 0; x < mask.width; ++x)
        memset(mask.rgb + ((size_t)y * mask.width + x) * 3, x < mask.width / 2 ? 255 : 0, 3);
    i2i.on_step = NULL;
    i2i.prompt = "a green square";
    i2i.init_image = &images[0];
    i2i.strength = 0.5;
    for (pass = 0; pass < 2; ++pass) {
      i2i.mask = pass ? &mask : NULL;
      if ((status = hyrt_generate(model, &i2i, &redrawn, &n)) != HYRT_OK)
        return fail(pass ? "inpainting" : "img2img", status);
      if (n != 1 || redrawn[0].width != images[0].width ||
          !strstr(redrawn[0].parameters, "Denoising strength: 0.5")) {
        fprintf(stderr, "%s: unexpected result\n%s\n", pass ? "inpainting" : "img2img",
                n ? redrawn[0].parameters : "");
        return 1;
      }
      printf("%s: %dx%d\n", pass ? "inpainting" : "img2img", redrawn[0].width, redrawn[0].height);
      hyrt_images_free(redrawn, n);
    }
    /* A mask needs a picture; a strength must be in (0, 1]. */
    i2i.init_image = NULL;
    if ((status = hyrt_generate(model, &i2i, &redrawn, &n)) != HYRT_INVALID_ARGUMENT) {
      fprintf(stderr, "a mask without a picture gave %s\n", hyrt_status_name(status));
      return 1;
    }
    printf("refused as expected: %s\n", hyrt_last_error());
    i2i.init_image = &images[0];
    i2i.strength = 1.5;
    if ((status = hyrt_generate(model, &i2i, &redrawn, &n)) != HYRT_INVALID_ARGUMENT) {
      fprintf(stderr, "strength 1.5 gave %s\n", hyrt_status_name(status));
      return 1;
    }
    printf("refused as expected: %s\n", hyrt_last_error());
    free(mask.rgb);
  }
  hyrt_images_free(images, count);

  /* A cancelled token stops the next call before any work, with its own status. */
  if ((status = hyrt_cancel_create(&cancel)) != HYRT_OK) return fail("cancel", status);
  hyrt_cancel_trigger(cancel);
  options.cancel = cancel;
  status = hyrt_generate(model, &options, &images, &count);
  if (status != HYRT_CANCELLED || count != 0 || images != NULL) {
    fprintf(stderr, "a cancelled call returned %s\n", hyrt_status_name(status));
    return 1;
  }
  printf("cancelled as asked: %s\n", hyrt_last_error());
  hyrt_cancel_destroy(cancel);

  /* Bad input is a status and a message, never a crash. */
  options.cancel = NULL;
  options.width = 33;
  status = hyrt_generate(model, &options, &images, &count);
  if (status != HYRT_INVALID_ARGUMENT) {
    fprintf(stderr, "width 33 gave %s\n", hyrt_status_name(status));
    return 1;
  }
  printf("refused as expected: %s\n", hyrt_last_error());

  hyrt_model_destroy(model);
  hyrt_runtime_destroy(runtime);
  return 0;
}

/* hyrt C API: the C++ API (hyrt/hyrt.h) behind opaque handles, for C and for bindings
 * (Swift, Go, Rust, C#) that cannot use C++ types.
 *
 *   hyrt_runtime* rt = NULL;
 *   hyrt_model* model = NULL;
 *   hyrt_generate_options o;
 *   hyrt_image* images = NULL;
 *   int count = 0;
 *   if (hyrt_runtime_create(NULL, &rt) != HYRT_OK ||
 *       hyrt_model_load(rt, "model.safetensors", NULL, &model) != HYRT_OK) {
 *     fprintf(stderr, "%s\n", hyrt_last_error());
 *   }
 *   hyrt_generate_options_init(&o);
 *   o.prompt = "a red circle on a blue background";
 *   if (hyrt_generate(model, &o, &images, &count) == HYRT_OK) {
 *     hyrt_image_save_png(&images[0], "out.png");
 *     hyrt_images_free(images, count);
 *   }
 *   hyrt_model_destroy(model);
 *   hyrt_runtime_destroy(rt);
 *
 * Errors: every call that can fail returns a hyrt_status; on failure hyrt_last_error()
 * returns its message (a person-readable sentence naming what was wrong), valid on the
 * calling thread until that thread's next hyrt call. No C++ exception crosses this API.
 *
 * Ownership: *_create / *_load hand out handles the caller destroys with the matching
 * *_destroy; hyrt_generate's images are the caller's until hyrt_images_free. Strings
 * passed in are copied; strings returned are owned by hyrt (see each function).
 *
 * Threads: as hyrt.h — any number of threads may call hyrt_generate on one model or on
 * models of one runtime; calls of one runtime run one after another in arrival order. A
 * model keeps its runtime's internals alive: destroying the runtime first is allowed.
 * hyrt_cancel_trigger may be called from any thread.
 *
 * ABI: option structs are filled by their *_init function first; fields are only ever
 * appended, and `struct_size` (set by *_init) tells hyrt which fields the caller knows. */
#ifndef HYRT_HYRT_C_H_
#define HYRT_HYRT_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hyrt_status {
  HYRT_OK = 0,
  HYRT_INVALID_ARGUMENT = 1, /* a bad option, size or name */
  HYRT_INVALID_MODEL = 2,    /* a malformed or inconsistent model file or folder */
  HYRT_NOT_FOUND = 3,        /* a file, component, tensor or key is missing */
  HYRT_UNSUPPORTED = 4,      /* valid input hyrt does not handle (yet) */
  HYRT_OUT_OF_MEMORY = 5,
  HYRT_IO = 6,
  HYRT_INTERNAL = 7, /* a bug in hyrt */
  HYRT_CANCELLED = 8 /* stopped by a hyrt_cancel or by the progress callback */
} hyrt_status;

typedef struct hyrt_runtime hyrt_runtime;
typedef struct hyrt_model hyrt_model;
typedef struct hyrt_cancel hyrt_cancel;

/* "invalid argument", ... (static storage). */
const char* hyrt_status_name(hyrt_status status);
/* The message of this thread's last failed call ("" if none). */
const char* hyrt_last_error(void);
/* hyrt's version string (static storage). */
const char* hyrt_version(void);

typedef struct hyrt_runtime_options {
  size_t struct_size;
  int num_threads;       /* host threads; 0: every core */
  const char* placement; /* "auto" (default), "host", "hybrid", "device" */
  int device;            /* CUDA device index */
  int64_t cache_bytes;   /* per-model budget of compiled per-shape state; 0: default */
  int max_batch;         /* request batching: images per batch of waiting calls; 0 or 1: off */
  int batch_wait_ms;     /* how long a batch with room waits for more calls; 0: never */
  const char* precision; /* "auto" (default), "f32", "bf16", "int8" (hyrt.h's RuntimeOptions) */
} hyrt_runtime_options;

void hyrt_runtime_options_init(hyrt_runtime_options* options);
/* options may be NULL (defaults). */
hyrt_status hyrt_runtime_create(const hyrt_runtime_options* options, hyrt_runtime** out);
void hyrt_runtime_destroy(hyrt_runtime* runtime); /* NULL is ignored */
/* "cuda: NVIDIA H200 (...)" or why no accelerator is in use; owned by the runtime. */
const char* hyrt_runtime_accelerator(hyrt_runtime* runtime);

/* A diffusers folder, an LDM/SGM single file or a hyrt int8 file. config_dir may be NULL. */
hyrt_status hyrt_model_load(hyrt_runtime* runtime, const char* path, const char* config_dir,
                            hyrt_model** out);
void hyrt_model_destroy(hyrt_model* model); /* NULL is ignored; returns its memory */
/* "sd15" or "sdxl" (static storage), and the default image side. */
const char* hyrt_model_family(const hyrt_model* model);
int hyrt_model_native_size(const hyrt_model* model);
/* Loads a TAESD decoder (a diffusers AutoencoderTiny folder or file, or taesd_decoder.safetensors:
 * taesd for SD 1.x, taesdxl for SDXL) for hyrt_generate_options.taesd; NULL or "" removes it.
 * HYRT_INVALID_ARGUMENT for one made for another latent space. */
hyrt_status hyrt_model_set_taesd(hyrt_model* model, const char* path);

/* A cancel flag shared with the calls it is passed to. */
hyrt_status hyrt_cancel_create(hyrt_cancel** out);
void hyrt_cancel_trigger(hyrt_cancel* cancel); /* from any thread; stays set */
int hyrt_cancel_is_set(const hyrt_cancel* cancel);
void hyrt_cancel_destroy(hyrt_cancel* cancel); /* NULL is ignored; not while a call uses it */

/* Progress: called after each step on the calling thread. Return 0 to go on, non-zero to
 * stop the call (it then returns HYRT_CANCELLED). Not called again once the call's cancel flag
 * is set. */
typedef int (*hyrt_progress_fn)(void* user_data, int step, int total);

typedef struct hyrt_image {
  int width, height;
  uint8_t* rgb;     /* height * width * 3 bytes, row-major */
  char* parameters; /* AUTOMATIC1111 parameters text, NUL-terminated */
  uint64_t seed;
} hyrt_image;

/* Live previews: called on the calling thread with the picture the model aims at so far (the
 * first image of the call; its parameters are "" and it lives until the function returns),
 * after that step's progress call. Return 0 to go on, non-zero to stop the call (it then
 * returns HYRT_CANCELLED). */
typedef int (*hyrt_preview_fn)(void* user_data, const hyrt_image* preview, int step, int total);

typedef struct hyrt_generate_options {
  size_t struct_size;
  const char* prompt;          /* required */
  const char* negative_prompt; /* NULL: none (SDXL: zero conditioning); "" is encoded */
  int width, height;           /* 0: the model's native size */
  int steps;                   /* default 20 */
  float cfg_scale;             /* default 7 */
  uint64_t seed;
  const char* sampler;      /* "euler_a" (default), "euler", "heun", "ddim", "dpmpp_2m",
                              "dpmpp_2m_sde", "lcm", "euler_a_karras", "euler_karras",
                              "heun_karras", "dpmpp_2m_karras", "dpmpp_2m_sde_karras" */
  int batch;                /* default 1 */
  hyrt_progress_fn on_step; /* may be NULL */
  void* user_data;          /* passed to on_step */
  hyrt_cancel* cancel;      /* may be NULL */
  /* img2img and inpainting (GenerateOptions in hyrt.h): the picture to start from, NULL for
   * text to image. Only width, height and rgb are read (an image hyrt_generate returned
   * will do); it is copied. Resized to width x height (0: the picture's size rounded down
   * to a multiple of the VAE factor, 8 for SD 1.5 and SDXL). At most 16384 a side and 64
   * Mpixel. */
  const hyrt_image* init_image;
  const hyrt_image* mask; /* inpainting, white = repaint; NULL: none; needs init_image */
  double strength;        /* (0, 1]: the part of the steps run; default 0.8 */
  /* Non-zero: decode with the model's TAESD decoder (hyrt_model_set_taesd) instead of its VAE.
   * Default 0. */
  int taesd;
  /* Live previews (GenerateOptions::on_preview in hyrt.h): every preview_every steps (default
   * 1) and after the last; decoded with the model's TAESD decoder when it has one, else with its
   * VAE. NULL: none. Gets user_data too. */
  hyrt_preview_fn on_preview;
  int preview_every;
  int clip_skip; /* A1111's "Clip skip" (GenerateOptions::clip_skip); default 1 */
  /* A1111's hires fix (GenerateOptions::hires): off unless hires_scale > 0 or a hires size is
   * given; then the picture is resized (Lanczos) to hires_width x hires_height, or its size x
   * hires_scale, and drawn again as img2img over hires_steps (0: steps) at hires_strength. */
  double hires_scale; /* default 0: off */
  int hires_width, hires_height;
  int hires_steps;
  double hires_strength;      /* default 0.7 */
  const char* hires_upscaler; /* "Lanczos" (NULL, the default), "Latent", "Latent (nearest)" */
} hyrt_generate_options;

void hyrt_generate_options_init(hyrt_generate_options* options);
/* On HYRT_OK, *images holds *count images (free with hyrt_images_free). */
hyrt_status hyrt_generate(hyrt_model* model, const hyrt_generate_options* options,
                          hyrt_image** images, int* count);
void hyrt_images_free(hyrt_image* images, int count);
/* A PNG with the parameters embedded (as the CLI writes). */
hyrt_status hyrt_image_save_png(const hyrt_image* image, const char* path);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HYRT_HYRT_C_H_ */

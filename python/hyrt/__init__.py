"""hyrt: Stable Diffusion 1.5 and SDXL inference on the CPU and NVIDIA GPUs.

    import hyrt
    pipe = hyrt.Pipeline()                      # the bundled shapes model, or a path
    image = pipe("a red circle on a blue background", num_inference_steps=12)[0]
    hyrt.save_png(image, "red_circle.png")      # PNG with the A1111 parameters embedded

A Pipeline is one loaded model with its own runtime (host threads, accelerator stream,
caches). Any number of Python threads may call it at once: hyrt releases the GIL while it
works and runs the calls one after another in arrival order; each returns exactly what it
would return alone. Errors are ``hyrt.Error`` subclasses (``hyrt.InvalidArgument`` is also
a ``ValueError``, ``hyrt.NotFound`` a ``FileNotFoundError``; ``hyrt.Cancelled``).
"""

import io
import os
import random

from PIL import Image

from . import _hyrt
from ._errors import (Cancelled, Error, InternalError, InvalidArgument, InvalidModel, IoError,
                      NotFound, OutOfMemory, Unsupported)

__all__ = ["Pipeline", "CancelToken", "save_png", "bundled_model", "Error", "Cancelled",
           "InvalidArgument", "InvalidModel", "NotFound", "Unsupported", "OutOfMemory",
           "IoError", "InternalError"]
__version__ = "0.1.0"

CancelToken = _hyrt.CancelToken

_BUNDLED = os.path.join(os.path.dirname(__file__), "models", "shapes-int8.safetensors")
_SEED_LIMIT = 2**64


def bundled_model():
    """The model used when Pipeline() gets no path: $HYRT_MODEL, else the copy of the
    repository's models/shapes-int8.safetensors installed with this package (a small SD
    1.5-architecture model trained on coloured shapes; 64x64 native)."""
    env = os.environ.get("HYRT_MODEL")
    if env:
        return env
    if os.path.isfile(_BUNDLED):
        return _BUNDLED
    raise NotFound(f"no model path given, $HYRT_MODEL is unset and the bundled model is "
                   f"missing ({_BUNDLED}); pass a path to hyrt.Pipeline")


class Pipeline:
    """A text-to-image pipeline over one model (a diffusers folder, an LDM/SGM single
    .safetensors file or a hyrt int8 file).

    placement: "auto" (an accelerator if one is usable, else the host), "host", "hybrid"
    (GEMMs on the accelerator) or "device". threads: host threads, 0 for every core.
    device: CUDA device index. cache_bytes: budget of per-size compiled state (0: default).
    config_dir: a diffusers folder with configs and tokenizers, for single-file checkpoints.
    quantize_int8: quantize 16/32-bit weights to int8 as they load.
    precision: "auto" (int8 files as int8, float ones in bf16 where the CPU has bf16 products),
    "f32", "bf16" or "int8" (quantize on load, int8 x int8 GEMMs); see hyrt.h's
    RuntimeOptions::precision.
    taesd: a TAESD decoder to keep beside the VAE for calls with ``taesd=True``.
    max_batch: calls from several Python threads that wait together and agree on size, steps,
    sampler and guidance run as one UNet batch of up to this many images (1: off; see
    hyrt.h's RuntimeOptions::max_batch); batch_wait_ms: how long a batch waits for more calls.
    """

    def __init__(self, model=None, placement="auto", threads=0, *, device=0, cache_bytes=0,
                 config_dir=None, quantize_int8=False, max_batch=1, batch_wait_ms=0,
                 precision="auto", taesd=None):
        path = os.fspath(model) if model is not None else bundled_model()
        self.model_path = path
        self._model = _hyrt.Model(path, placement, threads, device, cache_bytes,
                                  os.fspath(config_dir) if config_dir is not None else "",
                                  bool(quantize_int8), int(max_batch), int(batch_wait_ms),
                                  str(precision),
                                  os.fspath(taesd) if taesd is not None else "")

    @property
    def family(self):
        """"sd15" or "sdxl"."""
        return self._model.family

    @property
    def native_size(self):
        """The default image side in pixels (width=0/height=0 mean this)."""
        return self._model.native_size

    @property
    def accelerator(self):
        """The accelerator in use ("cuda: ..."), or why none is."""
        return self._model.accelerator

    @property
    def cached_bytes(self):
        """Bytes of compiled per-size state held now."""
        return self._model.cached_bytes

    def __call__(self, prompt, negative_prompt=None, width=0, height=0, num_inference_steps=20,
                 guidance_scale=7.0, seed=None, sampler="euler_a", batch_size=1, callback=None,
                 cancel=None, *, image=None, mask_image=None, strength=0.8, taesd=False,
                 preview=None, preview_every=1, clip_skip=1, hires=None):
        """Generates ``batch_size`` images; returns a list of RGB ``PIL.Image``s.

        negative_prompt: None for no negative prompt (SDXL then uses zero conditioning, as
        diffusers does); "" is encoded like any prompt. width/height: multiples of 8, 0 for
        the model's native size. sampler: euler_a, euler, heun, ddim, dpmpp_2m, dpmpp_2m_sde, lcm,
        euler_a_karras, euler_karras, heun_karras, dpmpp_2m_karras, dpmpp_2m_sde_karras
        (or A1111's names). seed: 0 <= seed < 2**64; None draws one (as the CLI without -s).
        callback(step, total) runs after each denoising step on the calling thread; an
        exception it raises ends the call and reaches the caller. cancel: a CancelToken.

        img2img and inpainting, with diffusers' names (StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline): ``image`` is the picture to start from — a
        ``PIL.Image``, the bytes of an image file (PNG, JPEG, ... as Pillow reads them), a
        path, or a uint8 array of shape (H, W), (H, W, 3) or (H, W, 4); alpha is dropped. It
        is resized to width x height (Lanczos, as diffusers and ``hyrt generate
        --init-image`` do); width/height 0 take the picture's size rounded down to a multiple
        of the VAE factor. ``mask_image`` (same kinds; white = repaint, read as grayscale)
        turns it into inpainting. ``strength`` in (0, 1]: the part of the steps that runs
        (num_inference_steps x strength must be >= 1); the parameters text records it as
        "Denoising strength".

        ``taesd=True`` decodes with the TAESD decoder given to the Pipeline (``taesd=PATH``: a
        diffusers AutoencoderTiny folder or file, or taesd_decoder.safetensors) instead of the
        model's VAE: ~20x less work for a slightly softer picture.

        ``hires``: A1111's hires fix, a dict with any of ``upscaler`` ("Lanczos", the default,
        "Latent" or "Latent (nearest)"), ``scale`` (default 2), ``width``,
        ``height``, ``steps`` (0: num_inference_steps) and ``strength`` (default 0.7): the
        picture is resized (Lanczos) and drawn again as img2img with the same seed.

        ``clip_skip``: A1111's "Clip skip" (diffusers' ``clip_skip`` + 1): 1 conditions on the
        text encoder's usual state, 2 on the one a layer earlier (many SD 1.5 fine-tunes).

        ``preview(image, step, total)``: live previews, every ``preview_every`` steps and after
        the last, on the calling thread — the picture the model aims at so far (the first
        image, a ``PIL.Image``), decoded with the TAESD decoder when the Pipeline has one,
        else with the VAE (as slow as the final decode). An exception it raises ends the call.

        Each image's ``info["parameters"]`` holds the AUTOMATIC1111 parameters text and
        ``info["seed"]`` the seed; ``hyrt.save_png`` writes both into the PNG.
        """
        if seed is None:
            seed = random.SystemRandom().getrandbits(32)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < _SEED_LIMIT:
            raise InvalidArgument(f"seed must be an integer in [0, 2**64), got {seed!r}")
        for name, value in (("width", width), ("height", height)):
            # The C++ API reads any value <= 0 as the native size; only 0 means that here.
            if isinstance(value, int) and value < 0:
                raise InvalidArgument(f"{name} must be a multiple of 8, or 0 for the model's "
                                      f"native size; got {value}")
        if callback is not None and not callable(callback):
            raise InvalidArgument("callback must be callable as callback(step, total)")
        if preview is not None and not callable(preview):
            raise InvalidArgument("preview must be callable as preview(image, step, total)")
        if isinstance(preview_every, bool) or not isinstance(preview_every, int) \
                or preview_every < 1:
            raise InvalidArgument(f"preview_every must be an integer >= 1, got {preview_every!r}")
        hires_args = None
        if hires is not None:
            unknown = set(hires) - {"upscaler", "scale", "width", "height", "steps", "strength"}
            if not isinstance(hires, dict) or unknown:
                raise InvalidArgument("hires must be a dict of upscaler, scale, width, height, "
                                      f"steps, strength; got {hires!r}")
            hires_args = (str(hires.get("upscaler", "Lanczos")), float(hires.get("scale", 2.0)),
                          int(hires.get("width", 0)), int(hires.get("height", 0)),
                          int(hires.get("steps", 0)), float(hires.get("strength", 0.7)))
        on_preview = None
        if preview is not None:
            def on_preview(w, h, rgb, step, total):
                preview(Image.frombytes("RGB", (w, h), rgb), step, total)
        if cancel is not None and not isinstance(cancel, CancelToken):
            raise InvalidArgument("cancel must be a hyrt.CancelToken")
        if mask_image is not None and image is None:
            raise InvalidArgument("mask_image needs image (the picture to repaint)")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)):
            raise InvalidArgument(f"strength must be a number in (0, 1], got {strength!r}")
        results = self._model.generate(prompt, negative_prompt, width, height,
                                       num_inference_steps, guidance_scale, seed, sampler,
                                       batch_size, callback, cancel,
                                       _rgb8(image, "image"), _rgb8(mask_image, "mask_image"),
                                       float(strength), bool(taesd), on_preview,
                                       preview_every, clip_skip, hires_args)
        images = []
        for w, h, rgb, parameters, image_seed in results:
            image = Image.frombytes("RGB", (w, h), rgb)
            image.info["parameters"] = parameters
            image.info["seed"] = image_seed
            images.append(image)
        return images

    def close(self):
        """Frees the model's memory now rather than when the Pipeline is collected."""
        self._model.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _rgb8(picture, name):
    """None, or ``picture`` (PIL image, image file bytes, path, uint8 array) as the
    (width, height, RGB8 bytes) the extension takes."""
    if picture is None:
        return None
    if isinstance(picture, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(bytes(picture))) as f:
                picture = f.convert("RGB")
        except OSError as e:
            raise InvalidArgument(f"{name}: the bytes are not an image Pillow can read ({e})")
    elif isinstance(picture, (str, os.PathLike)):
        with Image.open(picture) as f:
            picture = f.convert("RGB")
    elif hasattr(picture, "__array_interface__") and not isinstance(picture, Image.Image):
        dtype, shape = str(getattr(picture, "dtype", "")), getattr(picture, "shape", ())
        if dtype != "uint8" or len(shape) not in (2, 3) or (len(shape) == 3 and
                                                            shape[2] not in (3, 4)):
            raise InvalidArgument(f"{name}: an array must be uint8 of shape (H, W), (H, W, 3) "
                                  f"or (H, W, 4); got {dtype} {tuple(shape)}")
        picture = Image.fromarray(picture)
    if not isinstance(picture, Image.Image):
        raise InvalidArgument(f"{name} must be a PIL.Image, image file bytes, a path or a uint8 "
                              f"array; got {type(picture).__name__}")
    rgb = picture if picture.mode == "RGB" else picture.convert("RGB")
    return rgb.width, rgb.height, rgb.tobytes()


def save_png(image, path):
    """Writes ``image`` as a PNG with its ``info["parameters"]`` embedded, through hyrt's
    own writer: the file's bytes equal what ``hyrt generate -o`` writes for that image."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    _hyrt.save_png(rgb.width, rgb.height, rgb.tobytes(), image.info.get("parameters", ""),
                   os.fspath(path))

"""Tests of the hyrt Python package (pip install . first; run with pytest python/tests).

They use the bundled shapes model at 32-64 px with 2-4 steps, so the suite takes seconds.
The CLI parity test needs the CLI built from the same checkout: set HYRT_CLI to its path
(e.g. build/tools/hyrt); without it that test is skipped with a message.
"""

import io
import os
import subprocess
import threading
import time

import pytest
from PIL import Image

import hyrt

PROMPT = "a red circle on a blue background"
FAST = dict(width=64, height=64, num_inference_steps=4, guidance_scale=5.0, seed=1,
            sampler="ddim")


@pytest.fixture(scope="module")
def pipe():
    with hyrt.Pipeline() as p:
        yield p


@pytest.fixture(scope="module")
def reference(pipe):
    """The FAST picture as one lone call makes it."""
    return pipe(PROMPT, **FAST)[0].tobytes()


def test_generate(pipe, reference):
    images = pipe(PROMPT, **FAST)
    assert len(images) == 1
    image = images[0]
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert image.tobytes() == reference  # deterministic for a seed
    params = image.info["parameters"]
    assert params.startswith(PROMPT + "\n")
    assert "Steps: 4, Sampler: DDIM, CFG scale: 5, Seed: 1, Size: 64x64" in params
    assert image.info["seed"] == 1
    assert pipe.family == "sd15" and pipe.native_size == 64


def test_native_size_batch_and_sizes(pipe):
    images = pipe(PROMPT, width=0, height=0, num_inference_steps=2, seed=3, batch_size=2)
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert images[0].tobytes() != images[1].tobytes()
    assert "Batch index: 1" in images[1].info["parameters"]
    wide = pipe(PROMPT, width=48, height=32, num_inference_steps=2, seed=3)[0]
    assert wide.size == (48, 32)


def test_negative_prompt_none_and_text(pipe):
    plain = pipe(PROMPT, negative_prompt=None, **FAST)[0]
    other = pipe(PROMPT, negative_prompt="a green square", **FAST)[0]
    assert plain.tobytes() != other.tobytes()
    assert "Negative prompt: a green square" in other.info["parameters"]


def test_callback_count(pipe):
    calls = []
    pipe(PROMPT, **dict(FAST, num_inference_steps=3), callback=lambda s, t: calls.append((s, t)))
    assert len(calls) == 3
    assert all(t == 3 for _, t in calls)
    assert calls[-1][0] == 3


class Boom(Exception):
    pass


def test_callback_exception_propagates_and_model_stays_healthy(pipe, reference):
    def callback(step, total):
        if step == 2:
            raise Boom("stop at 2")

    with pytest.raises(Boom, match="stop at 2"):
        pipe(PROMPT, **FAST, callback=callback)
    assert pipe(PROMPT, **FAST)[0].tobytes() == reference


def test_cancel(pipe, reference):
    token = hyrt.CancelToken()
    assert not token.cancelled

    def cancel_at_first_step(step, total):
        token.cancel()

    with pytest.raises(hyrt.Cancelled) as info:
        pipe(PROMPT, **FAST, cancel=token, callback=cancel_at_first_step)
    assert isinstance(info.value, hyrt.Error)
    assert token.cancelled
    with pytest.raises(hyrt.Cancelled):  # a token stays cancelled
        pipe(PROMPT, **FAST, cancel=token)
    assert pipe(PROMPT, **FAST, cancel=hyrt.CancelToken())[0].tobytes() == reference


def test_cancel_from_another_thread(pipe):
    token = hyrt.CancelToken()
    started = threading.Event()

    def callback(step, total):
        started.set()
        time.sleep(0.05)  # leave the other thread time to cancel mid-run

    timer = threading.Thread(target=lambda: (started.wait(10), token.cancel()))
    timer.start()
    with pytest.raises(hyrt.Cancelled):
        pipe(PROMPT, **dict(FAST, num_inference_steps=50), cancel=token, callback=callback)
    timer.join()


@pytest.mark.parametrize("kwargs", [
    dict(width=63),
    dict(height=-8),
    dict(num_inference_steps=0),
    dict(batch_size=0),
    dict(sampler="no such sampler"),
    dict(seed=-1),
    dict(seed=2**64),
])
def test_bad_arguments_raise_value_error(pipe, kwargs):
    with pytest.raises(hyrt.InvalidArgument) as info:
        pipe(PROMPT, **dict(FAST, **kwargs))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, hyrt.Error)
    assert str(info.value)


def test_missing_model_raises_hyrt_error(tmp_path):
    with pytest.raises(hyrt.Error) as info:
        hyrt.Pipeline(tmp_path / "no-such-model.safetensors")
    assert isinstance(info.value, OSError)  # hyrt.NotFound is a FileNotFoundError


def test_bad_placement_raises_value_error():
    with pytest.raises(ValueError):
        hyrt.Pipeline(placement="nowhere")


def _calls_from_threads(pipe, seeds, **kwargs):
    """One call per seed, each on its own thread; {seed: image bytes} and the errors."""
    results, errors = {}, []

    def work(seed):
        try:
            img = pipe(PROMPT, **dict(FAST, seed=seed, num_inference_steps=3), **kwargs)[0]
            results[seed] = img.tobytes()
        except Exception as e:  # reported by the caller, with the thread's seed
            errors.append((seed, e))

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results, errors


def _serial(pipe, seeds):
    return [pipe(PROMPT, **dict(FAST, seed=s, num_inference_steps=3))[0].tobytes()
            for s in seeds]


def test_threads_match_serial_calls(pipe):
    seeds = [11, 12, 13, 14]
    serial = _serial(pipe, seeds)
    # A callback on each thread: the GIL is taken and given back at every step.
    results, errors = _calls_from_threads(pipe, seeds, callback=lambda s, t: None)
    assert not errors
    assert [results[s] for s in seeds] == serial


def test_batched_threads_match_serial_calls(pipe):
    """Request batching: calls from threads that wait together run as one UNet batch, and
    each still equals its lone call."""
    seeds = [21, 22, 23]
    serial = _serial(pipe, seeds)
    with hyrt.Pipeline(max_batch=4, batch_wait_ms=1000) as batched:
        results, errors = _calls_from_threads(batched, seeds)
    assert not errors
    assert [results[s] for s in seeds] == serial


def test_gil_released_while_generating(pipe):
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (pipe(PROMPT, **dict(FAST, num_inference_steps=8)), done.set()))
    worker.start()
    ticks = 0
    while not done.is_set():
        sum(range(1000))  # pure Python work: runs only while hyrt does not hold the GIL
        ticks += 1
    worker.join()
    assert ticks >= 50


def test_save_png_keeps_parameters(pipe, tmp_path):
    image = pipe(PROMPT, **FAST)[0]
    path = tmp_path / "x.png"
    hyrt.save_png(image, path)
    with Image.open(path) as back:
        assert back.info["parameters"] == image.info["parameters"]
        assert back.convert("RGB").tobytes() == image.tobytes()


@pytest.mark.parametrize("cli_args, kwargs", [
    (["-W", "64", "-H", "64", "--steps", "4", "--sampler", "ddim", "--cfg-scale", "5", "-s", "1"],
     {}),
    (["-n", "", "--sampler", "euler_a", "-W", "48", "-H", "32", "-b", "2", "-s", "7",
      "--steps", "4", "--cfg-scale", "5"],
     dict(negative_prompt="", sampler="euler_a", width=48, height=32, batch_size=2, seed=7)),
], ids=["ddim", "euler_a-negative-batch2"])
def test_parity_with_cli(pipe, tmp_path, cli_args, kwargs):
    """Python and `hyrt generate` give the same pixels, parameters and PNG bytes."""
    cli = os.environ.get("HYRT_CLI")
    if not cli:
        pytest.skip("HYRT_CLI is not set (the path of the hyrt CLI built from this checkout)")
    cli_png = tmp_path / "cli.png"
    subprocess.run([cli, "generate", "-m", pipe.model_path, "-p", PROMPT, *cli_args,
                    "-o", str(cli_png)], check=True, capture_output=True)
    images = pipe(PROMPT, **dict(FAST, **kwargs))
    for i, image in enumerate(images):
        path = cli_png if i == 0 else tmp_path / f"cli_{i + 1}.png"
        with Image.open(path) as from_cli:
            assert from_cli.mode == "RGB" and from_cli.size == image.size
            assert from_cli.tobytes() == image.tobytes()
            assert from_cli.info["parameters"] == image.info["parameters"]
        py_png = tmp_path / f"python_{i}.png"
        hyrt.save_png(image, py_png)
        assert py_png.read_bytes() == path.read_bytes()


def _picture(w=64, h=64):
    """A picture with gradients and a red block."""
    image = Image.new("RGB", (w, h))
    image.putdata([(250, 30, 20) if w // 3 < x < 2 * w // 3 and h // 4 < y < h // 2
                   else (x * 255 // w, 60, y * 255 // h) for y in range(h) for x in range(w)])
    return image


def _mask(w=64, h=64):
    """White (repaint) on the left half."""
    mask = Image.new("L", (w, h))
    mask.putdata([255 if x < w // 2 else 0 for y in range(h) for x in range(w)])
    return mask


def test_img2img_and_inpainting(pipe, tmp_path):
    picture = _picture(72, 60)
    i2i = dict(FAST, width=0, height=0, strength=0.5)
    image = pipe(PROMPT, image=picture, **i2i)[0]
    assert image.size == (72, 60)  # the picture's size (a multiple of the VAE factor)
    assert "Denoising strength: 0.5" in image.info["parameters"]
    assert image.tobytes() != pipe(PROMPT, **dict(FAST, width=72, height=60))[0].tobytes()
    # The same picture as PNG bytes, as a path and with an alpha channel: the same result.
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    assert pipe(PROMPT, image=buf.getvalue(), **i2i)[0].tobytes() == image.tobytes()
    picture.save(tmp_path / "pic.png")
    assert pipe(PROMPT, image=tmp_path / "pic.png", **i2i)[0].tobytes() == image.tobytes()
    rgba = picture.convert("RGBA")
    rgba.putalpha(7)
    assert pipe(PROMPT, image=rgba, **i2i)[0].tobytes() == image.tobytes()
    inpainted = pipe(PROMPT, image=picture, mask_image=_mask(), **dict(FAST, strength=0.75))[0]
    assert inpainted.size == (64, 64)
    assert inpainted.tobytes() != image.tobytes()


def test_img2img_from_arrays(pipe):
    np = pytest.importorskip("numpy")
    picture = _picture()
    from_pil = pipe(PROMPT, image=picture, mask_image=_mask(), **dict(FAST, strength=0.75))[0]
    from_arrays = pipe(PROMPT, image=np.asarray(picture), mask_image=np.asarray(_mask()),
                       **dict(FAST, strength=0.75))[0]
    assert from_arrays.tobytes() == from_pil.tobytes()
    with pytest.raises(hyrt.InvalidArgument):
        pipe(PROMPT, image=np.zeros((8, 8, 3), dtype=np.float32), **FAST)


@pytest.mark.parametrize("kwargs", [
    dict(mask_image=_mask()),
    dict(image=_picture(), strength=0.0),
    dict(image=_picture(), strength=1.5),
    dict(image=_picture(), strength=0.1),  # 4 steps x 0.1 leaves no step
    dict(image=_picture(), strength="high"),
    dict(image=b"not an image"),
    dict(image=42),
])
def test_bad_img2img_arguments_raise_value_error(pipe, kwargs):
    with pytest.raises(hyrt.InvalidArgument) as info:
        pipe(PROMPT, **dict(FAST, **kwargs))
    assert isinstance(info.value, ValueError)
    assert str(info.value)


@pytest.mark.parametrize("masked", [False, True], ids=["img2img", "inpainting"])
def test_img2img_parity_with_cli(pipe, tmp_path, masked):
    """`hyrt generate --init-image --strength [--mask]` and Python give the same PNG."""
    cli = os.environ.get("HYRT_CLI")
    if not cli:
        pytest.skip("HYRT_CLI is not set (the path of the hyrt CLI built from this checkout)")
    _picture(80, 72).save(tmp_path / "pic.png")
    _mask(40, 36).save(tmp_path / "mask.png")
    args = ["--init-image", str(tmp_path / "pic.png"), "--strength", "0.5", "--steps", "4",
            "--sampler", "ddim", "--cfg-scale", "5", "-s", "1"]
    kwargs = dict(FAST, width=0, height=0, image=tmp_path / "pic.png", strength=0.5)
    if masked:
        args += ["--mask", str(tmp_path / "mask.png")]
        kwargs["mask_image"] = tmp_path / "mask.png"
    subprocess.run([cli, "generate", "-m", pipe.model_path, "-p", PROMPT, *args,
                    "-o", str(tmp_path / "cli.png")], check=True, capture_output=True)
    image = pipe(PROMPT, **kwargs)[0]
    hyrt.save_png(image, tmp_path / "python.png")
    assert (tmp_path / "python.png").read_bytes() == (tmp_path / "cli.png").read_bytes()


def test_taesd(pipe):
    """A TAESD decoder given to the Pipeline decodes the calls with taesd=True."""
    taesd = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "taesd-tiny-4x")
    with hyrt.Pipeline(taesd=taesd, precision="f32") as p:
        plain = p(PROMPT, **FAST)[0]
        tiny = p(PROMPT, **FAST, taesd=True)[0]
    assert tiny.size == plain.size and tiny.tobytes() != plain.tobytes()
    assert "VAE: taesd-tiny-4x" in tiny.info["parameters"]
    with pytest.raises(hyrt.InvalidArgument):
        pipe(PROMPT, **FAST, taesd=True)  # loaded without one


def test_live_previews(pipe):
    """preview(image, step, total) gets the predicted picture every preview_every steps and
    after the last; with Euler the last one is the picture; a raising preview ends the call."""
    seen = []
    args = dict(FAST, sampler="euler")
    plain = pipe(PROMPT, **args)[0]
    image = pipe(PROMPT, **args, preview=lambda im, s, t: seen.append((im, s, t)),
                 preview_every=2)[0]
    assert image.tobytes() == plain.tobytes()
    assert seen and seen[-1][1] == seen[-1][2] == args["num_inference_steps"]
    last = seen[-1][0]
    assert last.size == image.size
    assert max(abs(a - b) for a, b in zip(last.tobytes(), image.tobytes())) <= 2
    with pytest.raises(ZeroDivisionError):
        pipe(PROMPT, **args, preview=lambda im, s, t: 1 / 0)
    with pytest.raises(hyrt.InvalidArgument):
        pipe(PROMPT, **args, preview=lambda im, s, t: None, preview_every=0)


def test_clip_skip(pipe):
    """clip_skip=2 conditions on an earlier text-encoder state: another picture, recorded."""
    plain = pipe(PROMPT, **FAST)[0]
    skipped = pipe(PROMPT, **FAST, clip_skip=2)[0]
    assert skipped.tobytes() != plain.tobytes()
    assert "Clip skip: 2" in skipped.info["parameters"]
    assert "Clip skip" not in plain.info["parameters"]
    with pytest.raises(hyrt.InvalidArgument):
        pipe(PROMPT, **FAST, clip_skip=0)


def test_hires_fix(pipe):
    """hires={...} draws, resizes by Lanczos and draws again as img2img: the same picture as the
    two calls by hand, with A1111's hires parameters recorded."""
    args = dict(FAST, width=64, height=64)
    hires = pipe(PROMPT, **args, hires={"scale": 1.5, "strength": 0.5})[0]
    assert hires.size == (96, 96)
    assert "Size: 64x64" in hires.info["parameters"]
    assert "Hires upscale: 1.5" in hires.info["parameters"]
    first = pipe(PROMPT, **args)[0]
    by_hand = pipe(PROMPT, **dict(args, width=96, height=96), image=first, strength=0.5)[0]
    assert hires.tobytes() == by_hand.tobytes()
    latent = pipe(PROMPT, **args, hires={"upscaler": "Latent", "scale": 1.5, "strength": 0.5})[0]
    assert latent.size == (96, 96) and "Hires upscaler: Latent" in latent.info["parameters"]
    with pytest.raises(hyrt.InvalidArgument):
        pipe(PROMPT, **args, hires={"scale": 1.5, "bogus": 1})
    with pytest.raises(hyrt.InvalidArgument):
        pipe(PROMPT, **args, hires={"upscaler": "ESRGAN"})

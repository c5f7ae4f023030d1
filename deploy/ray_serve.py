"""hyrt replicas under Ray Serve: one hyrt.Pipeline per replica, one replica per GPU (or per
host without GPUs), behind Ray Serve's HTTP proxy.

Tested with: Ray 2.60.0 (ray[serve] from PyPI, starlette 1.10), Python 3.11, hyrt from this
checkout, on one 2-core x86-64 host without a GPU (HYRT_RAY_CPUS=2 HYRT_RAY_GPUS=0): the
--smoke run below (one host replica, one 12-step 64x64 request over HTTP, 200 in 0.44 s).
Not tested: GPU replicas (num_gpus=1 with placement auto/device), several replicas, a Ray
cluster of more than one node, and the cancel-on-disconnect path.

    pip install . "ray[serve]"                      # hyrt (from the checkout) and Ray Serve
    serve run deploy.ray_serve:app                  # or: python deploy/ray_serve.py --smoke
    curl -s localhost:8000/ -d '{"prompt": "a red circle on a blue background", "steps": 12,
      "sampler": "ddim", "seed": 1}'                # -> {"images": [base64 PNG], "parameters": [...]}

Settings (environment, read when this file is imported, so set them where `serve run` runs):
HYRT_MODEL (model path; default the bundled shapes model), HYRT_PLACEMENT (auto, host,
hybrid, device), HYRT_RAY_REPLICAS (default 1), HYRT_RAY_GPUS (GPUs per replica; default 1
if this machine has an NVIDIA GPU, else 0), HYRT_RAY_CPUS (CPUs per replica; default all of
this machine's, which makes one host-only replica per node of this size).

A replica takes several requests at once (max_ongoing_requests): each runs in a worker thread,
hyrt queues them first come, first served on the replica's executor (its GPU or host cores),
and the GIL is free meanwhile. A client that goes away cancels its request at the next step.
"""

import asyncio
import base64
import io
import os
import shutil

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

_GPUS = float(os.environ.get("HYRT_RAY_GPUS", "1" if shutil.which("nvidia-smi") else "0"))
_CPUS = float(os.environ.get("HYRT_RAY_CPUS", str(os.cpu_count() or 1)))


@serve.deployment(num_replicas=int(os.environ.get("HYRT_RAY_REPLICAS", "1")),
                  ray_actor_options={"num_gpus": _GPUS, "num_cpus": _CPUS},
                  max_ongoing_requests=8)
class HyrtText2Image:
    def __init__(self, model=None, placement=None):
        import hyrt  # imported in the replica's process, where the model is loaded

        self._hyrt = hyrt
        self.pipe = hyrt.Pipeline(model or os.environ.get("HYRT_MODEL") or None,
                                  placement=placement or os.environ.get("HYRT_PLACEMENT", "auto"))

    def _png(self, image):
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("parameters", image.info["parameters"])
        out = io.BytesIO()
        image.save(out, format="PNG", pnginfo=info)
        return base64.b64encode(out.getvalue()).decode()

    async def __call__(self, request: Request):
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
                raise ValueError('the body must be a JSON object with a "prompt" string')
            kwargs = dict(
                negative_prompt=body.get("negative_prompt"),
                width=int(body.get("width", 0)),
                height=int(body.get("height", 0)),
                num_inference_steps=int(body.get("steps", 20)),
                guidance_scale=float(body.get("cfg_scale", 7.0)),
                seed=body.get("seed"),
                sampler=str(body.get("sampler", "euler_a")),
                batch_size=int(body.get("batch_size", 1)),
            )
        except (ValueError, TypeError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        token = self._hyrt.CancelToken()
        try:
            images = await asyncio.to_thread(self.pipe, body["prompt"], cancel=token, **kwargs)
        except asyncio.CancelledError:  # the client went away: stop hyrt at its next step
            token.cancel()
            raise
        except ValueError as e:  # hyrt.InvalidArgument
            return JSONResponse({"error": str(e)}, status_code=400)
        return {"images": [self._png(im) for im in images],
                "parameters": [im.info["parameters"] for im in images]}


app = HyrtText2Image.bind()


def _smoke():
    """Starts a local Ray, deploys `app`, sends one request over HTTP and checks the answer."""
    import json
    import urllib.request

    import ray

    ray.init(num_cpus=int(_CPUS), num_gpus=int(_GPUS))
    try:
        serve.run(app, route_prefix="/")
        req = urllib.request.Request(
            "http://127.0.0.1:8000/",
            data=json.dumps({"prompt": "a red circle on a blue background", "steps": 12,
                             "cfg_scale": 5, "sampler": "ddim", "seed": 1}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            answer = json.load(r)
        png = base64.b64decode(answer["images"][0])
        assert png.startswith(b"\x89PNG"), "not a PNG"
        print("ray_serve smoke: got a %d-byte PNG; parameters: %r"
              % (len(png), answer["parameters"][0]))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--smoke"]:
        _smoke()
    else:
        print(__doc__)

"""Reference data for the hires fix's latent upscalers (A1111's "Latent" and "Latent (nearest)"):
diffusers' txt2img latents, torch's interpolate, then diffusers' img2img given those latents as
its 4-channel `image`, on the tiny SD 1.5 golden model.

Dev-time only (never a dependency of hyrt): needs torch + diffusers.
  python tests/data/make_hires_latent_cases.py ../shared/golden/sd15-tiny/model tests/data/hires_latent_cases.safetensors

What it writes (read by tests/models/hires_fix_test.cpp), DDIM, prompt PROMPT, negative NEGATIVE,
guidance 5, first pass 32x24 (4 steps), second pass x2 = 64x48 (5 steps, strength 0.6), seed 9:
  first.latents            the first pass's final latents, NCHW [1, 4, 12, 16]
  <mode>.upscaled          F.interpolate(first, size=(24, 32), mode, align_corners=False for
                           bilinear), mode "bilinear" or "nearest"
  <mode>.latents           img2img(image=upscaled, ...)'s final latents [1, 4, 24, 32]
"""
import sys

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from safetensors.torch import save_file

model_dir, out = sys.argv[1], sys.argv[2]
PROMPT, NEGATIVE = "a red circle on a blue square", "blurry"
pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32,
                                               safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
i2i.set_progress_bar_config(disable=True)
tensors = {}
with torch.no_grad():
    first = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=5.0,
                 height=24, width=32, generator=torch.Generator().manual_seed(9),
                 output_type="latent").images
    tensors["first.latents"] = first
    for mode in ("bilinear", "nearest"):
        kw = {"align_corners": False} if mode == "bilinear" else {}
        up = F.interpolate(first, size=(24, 32), mode=mode, **kw)
        tensors[f"{mode}.upscaled"] = up
        tensors[f"{mode}.latents"] = i2i(
            PROMPT, image=up, strength=0.6, negative_prompt=NEGATIVE, num_inference_steps=5,
            guidance_scale=5.0, generator=torch.Generator().manual_seed(9),
            output_type="latent").images
save_file({k: v.to(torch.float32).contiguous() for k, v in tensors.items()}, out)
for k, v in tensors.items():
    print(k, tuple(v.shape))
print("wrote", out, len(tensors), "tensors")

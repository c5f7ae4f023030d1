"""Reference data for LCM-distilled models (UNet time_cond_proj_dim: the guidance scale embedded
through time_embedding.cond_proj, no classifier-free guidance), on the tiny SD 1.5 golden model
made into one: its UNet with time_cond_proj_dim = 32 and a random cond_proj.

Dev-time only (never a dependency of hyrt): needs torch + diffusers.
  python tests/data/make_lcm_model_cases.py ../shared/golden/sd15-tiny/model tests/data

Writes:
  lcm_cond_proj.safetensors    time_embedding.cond_proj.weight [32 (block_out_channels[0]), 32]
  lcm_model_cases.safetensors  pipe.latents: StableDiffusionPipeline with that UNet and
                               LCMScheduler, guidance 6 (embedded as w = 5), 4 steps, seed 4, 64x64,
                               prompt "a red circle on a blue square", negative "blurry" (unused:
                               no CFG); pipe2.latents: the same at guidance 1.5, 3 steps, seed 9
"""
import json
import os
import sys

import torch
from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import save_file

model_dir, out = sys.argv[1], sys.argv[2]
base = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32,
                                               safety_checker=None, requires_safety_checker=False)
cfg = dict(base.unet.config)
cfg["time_cond_proj_dim"] = 32
unet = UNet2DConditionModel.from_config(cfg)
missing = unet.load_state_dict(base.unet.state_dict(), strict=False)
assert missing.missing_keys == ["time_embedding.cond_proj.weight"], missing
torch.manual_seed(1)
w = torch.randn(cfg["block_out_channels"][0], 32) * 0.3
with torch.no_grad():
    unet.time_embedding.cond_proj.weight.copy_(w)
save_file({"time_embedding.cond_proj.weight": w.contiguous()},
          os.path.join(out, "lcm_cond_proj.safetensors"))

pipe = StableDiffusionPipeline(vae=base.vae, text_encoder=base.text_encoder,
                               tokenizer=base.tokenizer, unet=unet.eval(),
                               scheduler=LCMScheduler.from_config(base.scheduler.config),
                               safety_checker=None, feature_extractor=None,
                               requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
tensors = {}
for key, guidance, steps, seed in [("pipe", 6.0, 4, 4), ("pipe2", 1.5, 3, 9)]:
    with torch.no_grad():
        lat = pipe("a red circle on a blue square", negative_prompt="blurry",
                   num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                   generator=torch.Generator().manual_seed(seed), output_type="latent").images
    tensors[f"{key}.latents"] = lat.to(torch.float32).contiguous()
save_file(tensors, os.path.join(out, "lcm_model_cases.safetensors"))
print({k: list(v.shape) for k, v in tensors.items()}, float(tensors["pipe.latents"].std()))

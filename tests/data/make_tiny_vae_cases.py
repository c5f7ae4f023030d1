"""Reference data for the TAESD decoder (diffusers AutoencoderTiny): a small random one, its
decode of random latents, and the tiny SD 1.5 golden model's txt2img pipeline decoding with it.

Dev-time only (never a dependency of hyrt): needs torch + diffusers.
  python tests/data/make_tiny_vae_cases.py ../shared/golden/sd15-tiny/model tests/data

Writes:
  taesd-tiny/                      the AutoencoderTiny as a diffusers folder (f16 weights):
                                   16 channels, one upsample (the golden model's VAE is 2x)
  taesd_tiny_decoder.safetensors   its decoder in taesd's own layout (`<i + 1>.…`, a Clamp at 0)
  taesd-tiny-4x/                   another, with two upsamples (the bundled shapes model's VAE is
                                   4x): for API tests that only need a decoder that fits
  tiny_vae_cases.safetensors       decode.z (NCHW) -> decode.image (NCHW, diffusers'
                                   AutoencoderTiny.decode), and pipe.image: StableDiffusionPipeline
                                   with vae=the tiny one, DDIM, 4 steps, guidance 5, seed 3, 64x64,
                                   prompt "a red circle on a blue square", negative "blurry";
                                   NHWC in [0, 1] (output_type="np")
"""
import os
import sys

import torch
from diffusers import AutoencoderTiny, DDIMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

model_dir, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
tiny = AutoencoderTiny(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16),
                       num_encoder_blocks=(1, 1), num_decoder_blocks=(2, 1), latent_channels=4)
# Random weights of a trained network's scale (default init leaves the ReLU stack near zero).
with torch.no_grad():
    for name, p in tiny.named_parameters():
        p.copy_(torch.randn_like(p) * (0.05 if name.endswith("bias") else
                                       (1.1 / max(1, p[0].numel())) ** 0.5))
tiny = tiny.half().float()  # the weights as f16 holds them; the math in f32
folder = os.path.join(out, "taesd-tiny")
tiny.half().save_pretrained(folder)
tiny = tiny.float().eval()

sd = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
own = {}
for k, v in sd.items():
    if k.startswith("decoder.layers."):
        i, rest = k[len("decoder.layers."):].split(".", 1)
        own[f"{int(i) + 1}.{rest}"] = v
save_file(own, os.path.join(out, "taesd_tiny_decoder.safetensors"))

torch.manual_seed(1)
tiny4 = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                        num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), latent_channels=4)
with torch.no_grad():
    for name, p in tiny4.named_parameters():
        p.copy_(torch.randn_like(p) * (0.05 if name.endswith("bias") else
                                       (1.1 / max(1, p[0].numel())) ** 0.5))
tiny4.half().save_pretrained(os.path.join(out, "taesd-tiny-4x"))

tensors = {}
g = torch.Generator().manual_seed(5)
z = torch.randn(2, 4, 6, 10, generator=g) * 2.5
with torch.no_grad():
    tensors["decode.z"] = z
    tensors["decode.image"] = tiny.decode(z).sample

pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32,
                                               safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
pipe.vae = tiny
with torch.no_grad():
    img = pipe("a red circle on a blue square", negative_prompt="blurry", num_inference_steps=4,
               guidance_scale=5.0, height=64, width=64,
               generator=torch.Generator().manual_seed(3), output_type="np").images
tensors["pipe.image"] = torch.from_numpy(img.copy()).to(torch.float32)
save_file({k: v.contiguous() for k, v in tensors.items()},
          os.path.join(out, "tiny_vae_cases.safetensors"))
print({k: list(v.shape) for k, v in tensors.items()},
      float(tensors["decode.image"].abs().mean()), float(tensors["pipe.image"].std()))

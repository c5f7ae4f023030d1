"""Reference data for A1111's "Clip skip" (hyrt's clip_skip = diffusers' clip_skip + 1): diffusers'
encode_prompt and pipelines with clip_skip on the tiny SD 1.5 and SDXL golden models.

Dev-time only (never a dependency of hyrt): needs torch + diffusers.
  python tests/data/make_clip_skip_cases.py ../shared/golden tests/data/clip_skip_cases.safetensors

What it writes (read by tests/models/clip_skip_test.cpp):
  sd15.skip2.embeds     what StableDiffusionPipeline.encode_prompt(PROMPT, clip_skip=1) computes
                        (spelled out below): hidden_states[-2] through final_layer_norm, [1, 77, C].
  sd15.skip2.latents    the pipeline's final latents (Euler, 4 steps, guidance 5, negative
                        NEGATIVE, 64x64, seed 11, clip_skip=1), NCHW.
  sdxl.skip2.embeds     StableDiffusionXLPipeline.encode_prompt(PROMPT, clip_skip=1)'s prompt
                        embeddings [1, 77, C1 + C2]: each encoder's hidden_states[-3], no norm.
  sdxl.skip2.pooled     its pooled embeddings (the last layer's, unchanged by clip_skip).
  sdxl.skip2.latents    the SDXL pipeline's final latents (Euler, 3 steps, guidance 5, no
                        negative prompt, 64x64, seed 12, clip_skip=1), NCHW.
"""
import sys

import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

golden, out = sys.argv[1], sys.argv[2]
PROMPT, NEGATIVE = "a red circle on a blue square", "blurry"
tensors = {}

pipe = StableDiffusionPipeline.from_pretrained(f"{golden}/sd15-tiny/model", torch_dtype=torch.float32,
                                               safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)


def sd15_embeds(text):
    """diffusers' StableDiffusionPipeline.encode_prompt with clip_skip=1, spelled out: its own
    code reaches text_encoder.text_model, which transformers 5 no longer has."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    te = pipe.text_encoder
    hidden = te(ids, output_hidden_states=True).hidden_states[-2]
    norm = te.text_model.final_layer_norm if hasattr(te, "text_model") else te.final_layer_norm
    return norm(hidden)


with torch.no_grad():
    embeds = sd15_embeds(PROMPT)
    tensors["sd15.skip2.embeds"] = embeds
    tensors["sd15.skip2.latents"] = pipe(
        prompt_embeds=embeds, negative_prompt_embeds=sd15_embeds(NEGATIVE), num_inference_steps=4,
        guidance_scale=5.0, height=64, width=64, generator=torch.Generator().manual_seed(11),
        output_type="latent").images

xl = StableDiffusionXLPipeline.from_pretrained(f"{golden}/sdxl-tiny/model", torch_dtype=torch.float32)
xl.set_progress_bar_config(disable=True)
xl.scheduler = EulerDiscreteScheduler.from_config(xl.scheduler.config)
with torch.no_grad():
    embeds, _, pooled, _ = xl.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1,
                                            do_classifier_free_guidance=False, clip_skip=1)
    tensors["sdxl.skip2.embeds"] = embeds
    tensors["sdxl.skip2.pooled"] = pooled
    tensors["sdxl.skip2.latents"] = xl(
        PROMPT, num_inference_steps=3, guidance_scale=5.0, height=64, width=64,
        generator=torch.Generator().manual_seed(12), output_type="latent", clip_skip=1).images

save_file({k: v.to(torch.float32).contiguous() for k, v in tensors.items()}, out)
for k, v in tensors.items():
    print(k, tuple(v.shape))
print("wrote", out, len(tensors), "tensors")

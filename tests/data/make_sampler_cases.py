"""Reference data for the samplers beyond golden.safetensors (LCM, Heun, the Karras schedules of
Euler and Heun): diffusers' own schedulers on a fake model, and diffusers' txt2img / img2img
pipelines with them on the tiny SD 1.5 golden model.

Dev-time only (never a dependency of hyrt): needs torch + diffusers.
  python tests/data/make_sampler_cases.py ../shared/golden/sd15-tiny/model tests/data/sampler_cases.safetensors

What it writes (read by tests/unit/scheduler_test.cpp and tests/models/sampler_pipeline_test.cpp):
  traj.<case>.timesteps / .sigmas / .final   x = randn(16, seed) * init_noise_sigma, then the loop
      x_in = scale_model_input(x); eps = 0.3*x_in*cos(t/300) + 0.1*sin(x_in); x = step(eps, x)
      with the generator that drew x passed to step() (LCM draws its step noise from it).
  pipe.<case>.latents    the pipeline's final latents (output_type="latent"), NCHW.
  img.init               the img2img picture, NHWC float in [0, 1] (diffusers normalises it).
"""
import math
import sys

import numpy as np
import torch
from diffusers import (DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, LCMScheduler,
                       StableDiffusionImg2ImgPipeline, StableDiffusionPipeline)
from safetensors.torch import save_file

model_dir, out = sys.argv[1], sys.argv[2]
SD15 = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
            beta_schedule="scaled_linear", steps_offset=1, set_alpha_to_one=False,
            clip_sample=False)
tensors = {}

# name, class, extra config, steps, seed
TRAJECTORIES = [
    ("lcm_eps_4", LCMScheduler, {}, 4, 7),
    ("lcm_v_6", LCMScheduler, {"prediction_type": "v_prediction"}, 6, 3),
    ("lcm_orig20_5", LCMScheduler, {"original_inference_steps": 20, "timestep_scaling": 5.0}, 5, 9),
    ("heun_eps_linspace_6", HeunDiscreteScheduler, {"timestep_spacing": "linspace"}, 6, 7),
    ("heun_v_leading_5", HeunDiscreteScheduler,
     {"timestep_spacing": "leading", "prediction_type": "v_prediction"}, 5, 11),
    ("heun_karras_leading_7", HeunDiscreteScheduler,
     {"timestep_spacing": "leading", "use_karras_sigmas": True}, 7, 5),
    ("euler_karras_linspace_8", EulerDiscreteScheduler,
     {"timestep_spacing": "linspace", "use_karras_sigmas": True}, 8, 7),
    ("euler_karras_leading_v_6", EulerDiscreteScheduler,
     {"timestep_spacing": "leading", "use_karras_sigmas": True,
      "prediction_type": "v_prediction"}, 6, 13),
    ("euler_karras_trailing_1", EulerDiscreteScheduler,
     {"timestep_spacing": "trailing", "use_karras_sigmas": True}, 1, 2),
    ("dpmpp_2m_sde_linspace_8", DPMSolverMultistepScheduler,
     {"timestep_spacing": "linspace", "algorithm_type": "sde-dpmsolver++"}, 8, 17),
    ("dpmpp_2m_sde_karras_v_6", DPMSolverMultistepScheduler,
     {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True,
      "prediction_type": "v_prediction"}, 6, 19),
]
NOISY = (LCMScheduler, DPMSolverMultistepScheduler)
for name, cls, extra, steps, seed in TRAJECTORIES:
    s = cls.from_config({**SD15, **extra})
    s.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, generator=g) * s.init_noise_sigma
    for t in s.timesteps:
        x_in = s.scale_model_input(x, t)
        eps = 0.3 * x_in * torch.cos(torch.tensor(float(t)) / 300) + 0.1 * torch.sin(x_in)
        kw = {"generator": g} if cls in NOISY else {}
        x = s.step(eps.to(torch.float32), t, x, **kw).prev_sample
    tensors[f"traj.{name}.timesteps"] = s.timesteps.to(torch.float32)
    if hasattr(s, "sigmas") and cls is not LCMScheduler:
        tensors[f"traj.{name}.sigmas"] = s.sigmas.to(torch.float32)
    tensors[f"traj.{name}.final"] = x.to(torch.float32)

pipe = StableDiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32,
                                               safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
base = pipe.scheduler.config
PROMPT, NEGATIVE = "a red circle on a blue square", "blurry"


def scheduler(cls, **extra):
    return cls.from_config(base, **extra)


# name, scheduler, steps, guidance, seed
PIPELINES = [
    ("lcm_nocfg", scheduler(LCMScheduler), 4, 1.0, 5),
    ("lcm_cfg", scheduler(LCMScheduler), 6, 1.8, 8),
    ("heun", scheduler(HeunDiscreteScheduler), 5, 6.0, 3),
    ("heun_karras", scheduler(HeunDiscreteScheduler, use_karras_sigmas=True), 5, 6.0, 4),
    ("euler_karras", scheduler(EulerDiscreteScheduler, use_karras_sigmas=True), 6, 7.0, 6),
    ("dpmpp_2m_sde", scheduler(DPMSolverMultistepScheduler, algorithm_type="sde-dpmsolver++"),
     6, 7.0, 7),
    ("dpmpp_2m_sde_karras", scheduler(DPMSolverMultistepScheduler,
                                      algorithm_type="sde-dpmsolver++", use_karras_sigmas=True),
     7, 6.0, 9),
]
for name, sched, steps, guidance, seed in PIPELINES:
    pipe.scheduler = sched
    with torch.no_grad():
        lat = pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps,
                   guidance_scale=guidance, height=64, width=64,
                   generator=torch.Generator().manual_seed(seed), output_type="latent").images
    tensors[f"pipe.{name}.latents"] = lat.to(torch.float32)

# img2img: a smooth picture the C++ test rebuilds from the same formula.
h = w = 64
yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
init = np.stack([(xx / (w - 1)), (yy / (h - 1)),
                 0.5 + 0.5 * np.sin((xx + yy) / 9.0)], axis=-1).astype(np.float32)[None]
tensors["img.init"] = torch.from_numpy(init.copy())
i2i = StableDiffusionImg2ImgPipeline(**pipe.components)
i2i.set_progress_bar_config(disable=True)
for name, sched, steps, strength, guidance, seed in [
        ("i2i_heun", scheduler(HeunDiscreteScheduler), 6, 0.6, 5.0, 21),
        ("i2i_lcm", scheduler(LCMScheduler), 4, 0.5, 1.0, 22)]:
    i2i.scheduler = sched
    with torch.no_grad():
        lat = i2i(PROMPT, image=init, strength=strength, negative_prompt=NEGATIVE,
                  num_inference_steps=steps, guidance_scale=guidance,
                  generator=torch.Generator().manual_seed(seed), output_type="latent").images
    tensors[f"pipe.{name}.latents"] = lat.to(torch.float32)

save_file({k: v.contiguous() for k, v in tensors.items()}, out)
for k, v in tensors.items():
    if k.endswith("timesteps"):
        print(k, v.tolist())
print("wrote", out, len(tensors), "tensors")

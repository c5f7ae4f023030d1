#!/usr/bin/env python3
"""What one activation scale per image costs the W8A8 convolutions, against one per im2col row.

The CUDA backend runs a resnet's 3x3 convs (their input just written by a group norm + SiLU) as
implicit GEMMs, which need one activation scale for every input pixel an output pixel reads:
the input is quantized per image (src/backend/cuda/gemm_s8_fused.h). The im2col path quantizes
each output pixel's 3x3xC patch on its own. This script measures the difference on hyrt's
bundled trained model (models/shapes, a diffusers folder), in float64 with both quantizations
emulated exactly as the kernels define them (symmetric, scale = absmax / 127, round half even;
weights per output channel, as 8-bit S):
  - each resnet conv's output error against float64, per row and per image;
  - the UNet's noise prediction against float64 with only the resnet convs quantized, and with
    the transformer blocks' linears quantized per row too (the whole W8A8 step, as hyrt runs it
    apart from attention's own arithmetic).
A CPU reference made with PyTorch and diffusers (pip), never a dependency of hyrt. Usage:
  python3 bench/conv_quant_granularity.py [LATENT_SIZE ...] > out.json
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models", "shapes")


def quantize(x, absmax):
    scale = absmax.clamp_min(1e-30) / 127
    return torch.round(x / scale).clamp(-127, 127), scale


def weight_q(w):  # 8-bit S: one scale per output channel
    q, s = quantize(w, w.abs().flatten(1).amax(1)[:, None, None, None])
    return q, s.flatten()


def conv_per_row(conv, x):  # the im2col path: each output pixel's patch quantized on its own
    qw, sw = weight_q(conv.weight)
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)  # [B, K, L]
    q, s = quantize(cols, cols.abs().amax(1, keepdim=True))
    y = torch.einsum("bkl,nk->bnl", q, qw.flatten(1)) * s * sw[None, :, None]
    oh = (x.shape[2] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    return y.view(x.shape[0], -1, oh, y.shape[-1] // oh) + conv.bias[None, :, None, None]


def conv_per_image(conv, x):  # the implicit path: one scale per image
    qw, sw = weight_q(conv.weight)
    q, s = quantize(x, x.abs().flatten(1).amax(1)[:, None, None, None])
    y = F.conv2d(q, qw, None, conv.stride, conv.padding) * s * sw[None, :, None, None]
    return y + conv.bias[None, :, None, None]


def linear_per_row(lin, x):  # W8A8 linears: per-row activations, per-output-row weights
    qw, sw = quantize(lin.weight, lin.weight.abs().amax(1, keepdim=True))
    q, s = quantize(x, x.abs().amax(-1, keepdim=True))
    y = (q @ qw.t()) * s * sw.t()
    return y if lin.bias is None else y + lin.bias


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [32, 64]
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_pretrained(ROOT, subfolder="unet").double().eval()
    tok = CLIPTokenizer.from_pretrained(ROOT, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(ROOT, subfolder="text_encoder").double().eval()
    ids = tok(["a red circle on a blue background", ""], padding="max_length",
              max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        ctx = te(ids)[0]
    state = {"convs": None, "linears": False, "log": None}
    per_conv = {}

    def wrap_conv(name, conv):
        exact = conv.forward

        def forward(x):
            ref = exact(x)
            if state["convs"] is None:
                return ref
            y = conv_per_row(conv, x) if state["convs"] == "row" else conv_per_image(conv, x)
            if state["log"] is not None:
                per_conv.setdefault(name, {})[state["convs"]] = rel(y, ref)
            return y
        conv.forward = forward

    def wrap_linear(lin):
        exact = lin.forward
        lin.forward = lambda x: linear_per_row(lin, x) if state["linears"] else exact(x)

    for name, m in unet.named_modules():
        if "resnets" in name and name.endswith(("conv1", "conv2")):
            wrap_conv(name, m)
        elif (isinstance(m, torch.nn.Linear) and "transformer_blocks" in name
              and min(m.weight.shape) > 8):
            wrap_linear(m)

    report = {"model": "models/shapes (hyrt's bundled trained SD 1.5-architecture UNet)",
              "batch": 2, "math": "float64 emulation", "cases": []}
    for size in sizes:
        latents = torch.randn(2, 4, size, size, dtype=torch.float64)
        case = {"latent": size, "unet_output_rel_l2_vs_float": {}}
        with torch.no_grad():
            for t in (999, 500, 50):
                state.update(convs=None, linears=False, log=None)
                ref = unet(latents, t, encoder_hidden_states=ctx).sample
                row = {}
                for linears in (False, True):
                    for convs in ("row", "image"):
                        state.update(convs=convs, linears=linears,
                                     log=True if (t == 50 and not linears) else None)
                        y = unet(latents, t, encoder_hidden_states=ctx).sample
                        key = ("resnet convs + linears" if linears else "resnet convs only")
                        row.setdefault(key, {})[f"convs per {convs}"] = rel(y, ref)
                case["unet_output_rel_l2_vs_float"][f"t={t}"] = row
        case["per_conv_rel_l2_t50"] = dict(per_conv)
        per_conv.clear()
        report["cases"].append(case)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()

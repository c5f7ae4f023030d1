#!/usr/bin/env python3
"""Train hyrt's bundled "shapes" text-to-image model: SD 1.5's architecture, small.

Stages, all reproducible from --seed (and --data-seed):
  1. data      captioned 64x64 pictures from train/shapes_data.py (1-3 coloured circles,
               squares or triangles on a flat background), --holdout colour x shape pairs
               never drawn;
  2. tokenizer a CLIP-format byte-level BPE vocabulary learned from the training captions
               (train/bpe.py: vocab.json + merges.txt);
  3. VAE       diffusers AutoencoderKL, 3 levels (4x down: 64x64x3 -> 16x16x4), L1 + L2 + a
               small KL term; its latents' scaling factor = 1 / their standard deviation;
  4. UNet + text encoder, jointly: diffusers UNet2DConditionModel (cross-attention) and
               transformers CLIPTextModel (quick_gelu, 77 positions), SD 1.5's noise
               schedule (scaled_linear 0.00085-0.012, 1000 steps, epsilon prediction),
               10% of captions dropped to "" for classifier-free guidance, min-SNR(5)
               loss weights, AdamW, EMA of the weights (the EMA is what is saved);
  5. save      a diffusers folder (model_index.json, unet/, vae/, text_encoder/,
               tokenizer/, scheduler/) that hyrt and diffusers load, plus losses.json,
               loss.png and a grid of samples drawn in PyTorch (samples.png).

The UNet stage stops by wall clock (--time-budget, seconds since the script started) or
after --unet-steps. With --unet-steps 0 (default) the step count is fixed after timing the
first steps so the learning-rate schedule ends at the budget; the log's last UNet line
prints the --schedule-steps / --unet-steps pair that reruns the same schedule without a budget
(results then match up to GPU nondeterminism).

Output (--out DIR): DIR/model/ (diffusers folder, f32 EMA weights), DIR/raw.safetensors (raw
UNet + text-encoder weights in f16, for --init-from), DIR/losses.json, DIR/loss.png,
DIR/samples.png, DIR/log.txt. --pack splits a tar of model/ + raw.safetensors into
DIR/pack.tar.partNN files of at most 15 MiB (the device tool returns files up to 16 MiB).

Tiny CPU smoke test (every stage, seconds):
  python3 train/train.py --out /tmp/t --device cpu --tiny
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import random
import sys
import tarfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bpe  # noqa: E402
import shapes_data  # noqa: E402

T0 = time.time()
LOG = None


def log(*a):
    msg = f"[{time.time() - T0:7.1f}s] " + " ".join(str(x) for x in a)
    print(msg, flush=True)
    if LOG:
        LOG.write(msg + "\n")
        LOG.flush()


# ---------------------------------------------------------------------------------- configs

def vae_config(image_size):
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 3,
        up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[32, 64, 64], layers_per_block=1, act_fn="silu",
        norm_num_groups=32, sample_size=image_size, scaling_factor=1.0,
        mid_block_add_attention=True, force_upcast=False)


def unet_config(latent_size, text_width, channels, layers):
    return dict(
        sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=layers,
        block_out_channels=channels,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        cross_attention_dim=text_width, attention_head_dim=4, norm_num_groups=32,
        act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
        mid_block_scale_factor=1, norm_eps=1e-5, use_linear_projection=False)


def text_config(vocab_size, bos, eos, width, layers, ff):
    return dict(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=ff,
        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=77,
        hidden_act="quick_gelu", layer_norm_eps=1e-5, bos_token_id=bos, eos_token_id=eos,
        pad_token_id=eos, projection_dim=width, attention_dropout=0.0, dropout=0.0)


SCHEDULER = {
    "_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1",
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "clip_sample": False,
    "clip_sample_range": 1.0, "set_alpha_to_one": False, "steps_offset": 1,
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "trained_betas": None, "rescale_betas_zero_snr": False,
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None], "image_encoder": [None, None],
    "requires_safety_checker": False, "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


# ------------------------------------------------------------------------------------- data

def _make_chunk(job):
    start, count, size, holdout = job
    imgs = np.empty((count, size, size, 3), np.uint8)
    caps = []
    for i in range(count):
        img, cap, _ = shapes_data.sample(random.Random(start + i), size, holdout)
        imgs[i] = img
        caps.append(cap)
    return imgs, caps


def make_data(n, data_seed, size, holdout, workers):
    """Image i is shapes_data.sample(random.Random(data_seed + i)), as the data CLI draws."""
    chunk = 4096
    jobs = [(data_seed + s, min(chunk, n - s), size, tuple(holdout)) for s in range(0, n, chunk)]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_make_chunk, jobs)
    else:
        parts = [_make_chunk(j) for j in jobs]
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


# ----------------------------------------------------------------------------------- helpers

def lr_at(step, total, peak, warmup, final_frac=0.1):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def sd_alphas_cumprod(torch):
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0)


def save_loss_plot(losses, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001
        log("matplotlib missing: no", path)
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "vae", "VAE (L1 + L2 + KL)"),
                           (axes[1], "unet", "UNet + text encoder (min-SNR eps MSE)")):
        data = losses.get(key) or []
        if not data:
            continue
        x = np.array([d[0] for d in data])
        y = np.array([d[1] for d in data])
        ax.plot(x, y, lw=0.5, alpha=0.4, label="per step")
        k = max(1, len(y) // 50)
        if len(y) > k:
            sm = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(x[k - 1:], sm, lw=1.5, label=f"mean of {k}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pack(out_dir, names, part_bytes=15 * 2 ** 20):
    """tar of out_dir/names..., split into out_dir/pack.tar.partNN (cat them to rebuild)."""
    tar_path = os.path.join(out_dir, "pack.tar")
    for old in os.listdir(out_dir):
        if old.startswith("pack.tar"):
            os.remove(os.path.join(out_dir, old))
    with tarfile.open(tar_path, "w") as tar:
        for n in names:
            tar.add(os.path.join(out_dir, n), arcname=n)
    with open(tar_path, "rb") as f:
        i = 0
        while True:
            block = f.read(part_bytes)
            if not block:
                break
            with open(f"{tar_path}.part{i:02d}", "wb") as p:
                p.write(block)
            i += 1
    os.remove(tar_path)
    log(f"packed {names} into {i} part(s)")


# ------------------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1234, help="torch / numpy seed")
    ap.add_argument("--data-seed", type=int, default=1_000_000,
                    help="image i of the training set is drawn from random.Random(data-seed + i)")
    ap.add_argument("--num-images", type=int, default=300_000)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--holdout", default="purple triangle,orange circle,cyan square")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--vae-steps", type=int, default=2500)
    ap.add_argument("--vae-batch", type=int, default=128)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-4)
    ap.add_argument("--unet-steps", type=int, default=0,
                    help="0: as many as fit the time budget (printed)")
    ap.add_argument("--schedule-steps", type=int, default=0,
                    help="length of the learning-rate schedule (default: --unet-steps); a run "
                    "cut short by --time-budget is rerun with --schedule-steps N --unet-steps M")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--cond-drop", type=float, default=0.1)
    ap.add_argument("--min-snr", type=float, default=5.0)
    ap.add_argument("--unet-channels", default="64,128,128")
    ap.add_argument("--text-width", type=int, default=128)
    ap.add_argument("--unet-layers", type=int, default=1, help="UNet layers_per_block")
    ap.add_argument("--text-layers", type=int, default=3)
    ap.add_argument("--text-ff", type=int, default=256, help="text encoder intermediate_size")
    ap.add_argument("--vae-seconds", type=float, default=0,
                    help="stop VAE training after this many seconds (0: no limit)")
    ap.add_argument("--time-budget", type=float, default=0,
                    help="seconds since start by which everything is saved (0: no limit)")
    ap.add_argument("--save-reserve", type=float, default=45,
                    help="seconds of the budget kept for saving and sampling")
    ap.add_argument("--init-from", default="",
                    help="an earlier --out folder: reuse its tokenizer and VAE, start the "
                    "UNet and text encoder from its raw weights and the EMA from its model")
    ap.add_argument("--pack", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test: tiny everything")
    args = ap.parse_args(argv)
    if args.tiny:
        args.num_images, args.vae_steps, args.vae_batch = 256, 3, 8
        args.unet_steps, args.batch, args.warmup, args.workers = 4, 8, 2, 1

    os.makedirs(args.out, exist_ok=True)
    global LOG
    LOG = open(os.path.join(args.out, "log.txt"), "a")
    log("args:", json.dumps(vars(args)))
    holdout = [h.strip() for h in args.holdout.split(",") if h.strip()]

    # Data first: the pool forks before CUDA is initialised.
    t = time.time()
    images_np, captions = make_data(args.num_images, args.data_seed, args.image_size, holdout,
                                    args.workers)
    log(f"data: {len(captions)} images in {time.time() - t:.1f}s; e.g. {captions[0]!r}")
    for h in holdout:
        c, s = h.split(" ")
        assert not any(f"{c} {s}" in cap for cap in captions), h

    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextConfig, CLIPTextModel
    import diffusers
    import transformers
    log(f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}")

    dev = torch.device(args.device)
    if dev.type == "cuda":
        log("device:", torch.cuda.get_device_name(0))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    model_dir = os.path.join(args.out, "model")
    os.makedirs(model_dir, exist_ok=True)
    losses = {"vae": [], "unet": []}

    # ---- tokenizer
    if args.init_from:
        tok = bpe.Tokenizer.load(os.path.join(args.init_from, "model", "tokenizer"))
    else:
        tok = bpe.Tokenizer.learn(captions)
    tok.save(os.path.join(model_dir, "tokenizer"))
    log(f"tokenizer: {len(tok.vocab)} tokens, {len(tok.merges)} merges; "
        f"{captions[0]!r} -> {tok.tokenize(captions[0])}")
    ids_all = torch.tensor([tok.encode(c) for c in captions], dtype=torch.int32)
    empty_ids = torch.tensor(tok.encode(""), dtype=torch.long, device=dev)

    images = torch.from_numpy(images_np).to(dev).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW
    n = images.shape[0]

    def batch_images(idx):
        return images[idx].float() / 127.5 - 1.0

    # ---- VAE
    vcfg = vae_config(args.image_size)
    if args.init_from:
        vae = AutoencoderKL.from_pretrained(os.path.join(args.init_from, "model", "vae")).to(dev)
        vcfg["scaling_factor"] = vae.config.scaling_factor
        losses["vae"] = json.load(open(os.path.join(args.init_from, "losses.json")))["vae"]
    else:
        vae = AutoencoderKL(**vcfg).to(dev)
        log(f"VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters")
        opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
        t = time.time()
        for step in range(args.vae_steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, args.vae_steps, args.vae_lr, 100, 0.05)
            idx = torch.randint(0, n, (args.vae_batch,), device=dev, generator=gen)
            x = batch_images(idx)
            with torch.autocast(**amp):
                post = vae.encode(x).latent_dist
                z = post.mean + post.std * torch.randn(post.mean.shape, device=dev,
                                                       generator=gen)
                rec = vae.decode(z).sample
            rec = rec.float()
            kl = 0.5 * (post.mean.float() ** 2 + post.var.float() - 1 - post.logvar.float())
            loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + args.kl_weight * kl.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            losses["vae"].append((step, float(loss.detach())))
            if step % 250 == 0 or step == args.vae_steps - 1:
                log(f"vae step {step}: loss {float(loss.detach()):.5f} "
                    f"kl {float(kl.mean()):.3f}")
            if args.vae_seconds and time.time() - t > args.vae_seconds:
                log(f"VAE time limit reached at step {step + 1}")
                break
        log(f"VAE trained: {step + 1} steps in {time.time() - t:.1f}s")
    vae.eval().requires_grad_(False)

    # ---- latents of every image (mean and std of the posterior)
    lat_mean, lat_std = [], []
    with torch.no_grad():
        for s in range(0, n, 2048):
            with torch.autocast(**amp):
                post = vae.encode(batch_images(torch.arange(s, min(n, s + 2048), device=dev)))
            post = post.latent_dist
            lat_mean.append(post.mean.float())
            lat_std.append(post.std.float())
    lat_mean = torch.cat(lat_mean)
    lat_std = torch.cat(lat_std)
    if not args.init_from:
        sample = lat_mean[:20000] + lat_std[:20000] * torch.randn_like(lat_std[:20000])
        vcfg["scaling_factor"] = float(f"{1.0 / float(sample.std()):.5f}")
        vae.register_to_config(scaling_factor=vcfg["scaling_factor"])
    sf = vcfg["scaling_factor"]
    with torch.no_grad():  # reconstruction error of a held batch, decoded from the mean
        x = batch_images(torch.arange(0, min(n, 256), device=dev))
        rec = vae.decode(lat_mean[: x.shape[0]]).sample.float()
        log(f"latents {tuple(lat_mean.shape)}, scaling_factor {sf}, "
            f"recon MAE {float((rec - x).abs().mean()):.4f} (0..2 scale), "
            f"mean std {float(lat_std.mean()):.4f}")
    vae.save_pretrained(os.path.join(model_dir, "vae"), safe_serialization=True)
    vae_json = os.path.join(model_dir, "vae", "config.json")
    with open(vae_json) as f:
        vae_saved = json.load(f)
    vae_saved.pop("_name_or_path", None)  # set by from_pretrained (--init-from): a local path
    with open(vae_json, "w") as f:
        json.dump(vae_saved, f, indent=2, sort_keys=True)

    # ---- text encoder + UNet
    tcfg = text_config(len(tok.vocab), tok.bos, tok.eos, args.text_width, args.text_layers,
                       args.text_ff)
    te = CLIPTextModel(CLIPTextConfig(**tcfg)).to(dev)
    latent_size = lat_mean.shape[-1]
    ucfg = unet_config(latent_size, args.text_width,
                       [int(c) for c in args.unet_channels.split(",")], args.unet_layers)
    unet = UNet2DConditionModel(**ucfg).to(dev)
    if args.init_from:
        raw = load_file(os.path.join(args.init_from, "raw.safetensors"))
        unet.load_state_dict({k[5:]: v for k, v in raw.items() if k.startswith("unet.")})
        te.load_state_dict({k[3:]: v for k, v in raw.items() if k.startswith("te.")})
        losses["unet"] = json.load(open(os.path.join(args.init_from, "losses.json")))["unet"]
    te.train()
    unet.train()
    if dev.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    log(f"text encoder {sum(p.numel() for p in te.parameters()) / 1e6:.2f} M, "
        f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M parameters")
    params = [p for p in list(unet.parameters()) + list(te.parameters()) if p.requires_grad]
    named = [(f"unet.{k}", v) for k, v in unet.state_dict().items()] + \
            [(f"te.{k}", v) for k, v in te.state_dict().items()]
    ema = {k: v.detach().clone().float() for k, v in named}
    if args.init_from:
        em_u = load_file(os.path.join(args.init_from, "model", "unet",
                                      "diffusion_pytorch_model.safetensors"))
        em_t = load_file(os.path.join(args.init_from, "model", "text_encoder",
                                      "model.safetensors"))
        for k, v in em_u.items():
            ema[f"unet.{k}"].copy_(v)
        for k, v in em_t.items():
            if f"te.{k}" in ema:
                ema[f"te.{k}"].copy_(v)
    ema_keys = [k for k, v in named if v.dtype.is_floating_point]
    live = dict(named)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.999))
    ac = sd_alphas_cumprod(torch).to(dev)
    sqrt_ac = ac.sqrt().float()
    sqrt_1mac = (1 - ac).sqrt().float()
    snr = (ac / (1 - ac)).float()
    weight = torch.clamp(snr, max=args.min_snr) / snr if args.min_snr > 0 else torch.ones_like(snr)
    ids_dev = ids_all.to(dev).long()

    total = args.unet_steps if args.unet_steps > 0 else 10 ** 9
    sched = args.schedule_steps or (total if total < 10 ** 9 else 10 ** 6)
    deadline = (T0 + args.time_budget - args.save_reserve) if args.time_budget > 0 else None
    t_train = time.time()
    t_probe = None
    step = 0
    step_offset = losses["unet"][-1][0] if losses["unet"] else 0
    last_ckpt = time.time()

    def save_all(tag):
        # EMA weights -> diffusers folder (f32); raw weights -> raw.safetensors
        ema_u = {k[5:]: ema[k].contiguous() for k in ema if k.startswith("unet.")}
        ema_t = {k[3:]: ema[k].contiguous() for k in ema if k.startswith("te.")}
        unet_eval = UNet2DConditionModel(**ucfg)
        unet_eval.load_state_dict(ema_u)
        unet_eval.save_pretrained(os.path.join(model_dir, "unet"), safe_serialization=True)
        te_eval = CLIPTextModel(CLIPTextConfig(**tcfg))
        te_eval.load_state_dict(ema_t)
        te_eval.save_pretrained(os.path.join(model_dir, "text_encoder"), safe_serialization=True)
        os.makedirs(os.path.join(model_dir, "scheduler"), exist_ok=True)
        with open(os.path.join(model_dir, "scheduler", "scheduler_config.json"), "w") as f:
            json.dump(SCHEDULER, f, indent=2)
        with open(os.path.join(model_dir, "model_index.json"), "w") as f:
            json.dump(MODEL_INDEX, f, indent=2)
        save_file({k: (v.detach().half() if v.is_floating_point() else v.detach())
                   .contiguous().cpu() for k, v in named},
                  os.path.join(args.out, "raw.safetensors"))
        with open(os.path.join(args.out, "losses.json"), "w") as f:
            json.dump(losses, f)
        log(f"saved ({tag}) at step {step}")
        return unet_eval, te_eval

    while step < total:
        if deadline and time.time() > deadline:
            log(f"time budget reached at step {step}")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, sched, args.lr, args.warmup)
        idx = torch.randint(0, n, (args.batch,), device=dev, generator=gen)
        z0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, device=dev,
                                                         generator=gen)) * sf
        ids = ids_dev[idx]
        drop = torch.rand(args.batch, device=dev, generator=gen) < args.cond_drop
        ids = torch.where(drop[:, None], empty_ids[None, :], ids)
        tt = torch.randint(0, 1000, (args.batch,), device=dev, generator=gen)
        noise = torch.randn(z0.shape, device=dev, generator=gen)
        xt = sqrt_ac[tt, None, None, None] * z0 + sqrt_1mac[tt, None, None, None] * noise
        if dev.type == "cuda":
            xt = xt.contiguous(memory_format=torch.channels_last)
        with torch.autocast(**amp):
            enc = te(input_ids=ids).last_hidden_state
            pred = unet(xt, tt, encoder_hidden_states=enc).sample
        per = ((pred.float() - noise) ** 2).mean(dim=(1, 2, 3))
        loss = (per * weight[tt]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            # Warm-up of the EMA decay, except when continuing (the EMA is already good).
            d = args.ema if args.init_from else min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_([ema[k] for k in ema_keys],
                                 [live[k].detach().float() for k in ema_keys], 1 - d)
        step += 1
        if step % 10 == 0 or step < 5:
            losses["unet"].append((step_offset + step, float(loss.detach())))
        if step % 500 == 0:
            log(f"unet step {step}: loss {float(loss.detach()):.5f} "
                f"lr {opt.param_groups[0]['lr']:.2e}")
        # After 60 warm steps, time 100 more and fix the step count to fit the budget.
        if args.unet_steps == 0 and step == 60:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_probe = time.time()
        if args.unet_steps == 0 and step == 160 and t_probe is not None:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rate = 100 / (time.time() - t_probe)
            left = (deadline - time.time()) if deadline else 300
            total = sched = step + int(rate * left * 0.97)
            log(f"{rate:.1f} steps/s -> --unet-steps {total}")
        if time.time() - last_ckpt > 150:
            save_all("checkpoint")
            if args.pack:
                pack(args.out, ["model", "raw.safetensors"])
            last_ckpt = time.time()
    log(f"UNet trained: {step} steps in {time.time() - t_train:.1f}s "
        f"(rerun: --schedule-steps {sched} --unet-steps {step})")
    unet_eval, te_eval = save_all("final")
    save_loss_plot(losses, os.path.join(args.out, "loss.png"))

    # ---- samples: DDIM, 20 steps, CFG 5, from the saved EMA weights
    try:
        prompts = ["a red circle on a blue background", "two green squares on a yellow background",
                   "three small white triangles on a black background",
                   "a large pink square on a gray background",
                   "a purple triangle on a white background",
                   "an orange circle on a green background",
                   "a cyan square on a brown background",
                   "two large blue circles on an orange background"]
        unet_eval.to(dev).eval()
        te_eval.to(dev).eval()
        g2 = torch.Generator(device=dev).manual_seed(99)
        with torch.no_grad():
            cond = te_eval(input_ids=torch.tensor([tok.encode(p) for p in prompts],
                                                  device=dev)).last_hidden_state
            unc = te_eval(input_ids=empty_ids[None].expand(len(prompts), -1)).last_hidden_state
            x = torch.randn((len(prompts), 4, latent_size, latent_size), device=dev, generator=g2)
            ts = list(range(951, 0, -50))
            for i, t_ in enumerate(ts):
                tb = torch.full((2 * len(prompts),), t_, device=dev)
                e = unet_eval(torch.cat([x, x]), tb,
                              encoder_hidden_states=torch.cat([cond, unc])).sample
                ec, eu = e.chunk(2)
                e = eu + 5.0 * (ec - eu)
                a_t = ac[t_].float()
                a_p = ac[ts[i + 1]].float() if i + 1 < len(ts) else ac.new_tensor(0.99915).float()
                x0 = (x - (1 - a_t).sqrt() * e) / a_t.sqrt()
                x = a_p.sqrt() * x0 + (1 - a_p).sqrt() * e
            img = vae.decode(x / sf).sample.float().clamp(-1, 1)
        img = ((img + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        from PIL import Image
        grid = np.concatenate(list(img), axis=1)
        Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(
            os.path.join(args.out, "samples.png"))
        log("samples.png:", " | ".join(prompts))
    except Exception as e:  # noqa: BLE001
        log("sampling failed:", repr(e))

    if args.pack:
        pack(args.out, ["model", "raw.safetensors"])
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# The PyTorch anchor for SDXL, run in the same device call as hyrt's bench: diffusers'
# UNet2DConditionModel with the SDXL base config (random weights, f16, SDPA, eager), batch 2
# (CFG), steady step at each size; and the SDXL VAE decoder (AutoencoderKL, SDXL base config)
# at 1024² in f32 and bf16 with its peak scratch beyond the weights.
# With a second argument `sd15`: diffusers' default UNet2DConditionModel config (SD 1.5's UNet)
# instead, batch 2, no VAE — issue 16's PyTorch anchor.
# Usage: python3 torch_sdxl_eager.py 1024x1024,768x768,832x1216 [sd15] > result.json
import json, sys, time, torch
from diffusers import UNet2DConditionModel, AutoencoderKL

sizes = [tuple(map(int, s.split("x"))) for s in sys.argv[1].split(",")]
cfg = dict(sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
           down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
           transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
           cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
           addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
sd15 = len(sys.argv) > 2 and sys.argv[2] == "sd15"
if sd15:
    cfg = dict(sample_size=64, cross_attention_dim=768)  # the defaults are SD 1.5's UNet
out = {"torch": torch.__version__, "card": torch.cuda.get_device_name(0),
       "model": "sd15" if sd15 else "sdxl", "unet": [], "vae": []}
with torch.device("cuda"):
    unet = UNet2DConditionModel(**cfg).half().eval()
out["unet_params_M"] = round(sum(p.numel() for p in unet.parameters()) / 1e6, 1)


def median_ms(fn, n=20, warm=3):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


with torch.inference_mode():
    for w, h in sizes:
        x = torch.randn(2, 4, h // 8, w // 8, device="cuda", dtype=torch.half)
        c = torch.randn(2, 77, cfg["cross_attention_dim"], device="cuda", dtype=torch.half)
        t = torch.tensor([500, 500], device="cuda")
        kw = None if sd15 else {
            "text_embeds": torch.randn(2, 1280, device="cuda", dtype=torch.half),
            "time_ids": torch.tensor([[h, w, 0, 0, h, w]] * 2, device="cuda", dtype=torch.half)}
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ms = median_ms(lambda: unet(x, t, c, added_cond_kwargs=kw))
        out["unet"].append({"size": f"{w}x{h}", "batch": 2, "median_ms": round(ms, 2),
                            "scratch_MiB": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)})
    del unet
    torch.cuda.empty_cache()
    for dtype in () if sd15 else (torch.float32, torch.bfloat16):
        with torch.device("cuda"):
            vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4,
                                scaling_factor=0.13025).to(dtype).eval()
        z = torch.randn(1, 4, 128, 128, device="cuda", dtype=dtype)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        ms = median_ms(lambda: vae.decode(z), n=5, warm=2)
        out["vae"].append({"dtype": str(dtype).replace("torch.", ""), "size": "1024x1024",
                           "median_ms": round(ms, 2),
                           "scratch_MiB": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)})
        del vae
        torch.cuda.empty_cache()
print(json.dumps(out, indent=1))

"""Reference data for the UNet at latent sizes that are not multiples of its total
downsampling (diffusers then upsamples to each skip connection's size).

Dev-time only (never a dependency of hyrt): needs torch + diffusers.
  python tests/data/make_unet_odd_latent.py ../shared/golden/sd15-tiny/model tests/data/unet_odd_latent.safetensors
"""
import sys

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

model_dir, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet", torch_dtype=torch.float32).eval()
tensors = {}
for i, (h, w) in enumerate([(20, 28), (9, 13)]):
    x = torch.randn(2, unet.config.in_channels, h, w)
    t = torch.tensor([500.0, 37.0])
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        y = unet(x, t, encoder_hidden_states=ctx).sample
    tensors.update({f"case{i}.x": x, f"case{i}.t": t, f"case{i}.context": ctx, f"case{i}.out": y})
save_file({k: v.contiguous() for k, v in tensors.items()}, out)
print("wrote", out, {k: list(v.shape) for k, v in tensors.items()})

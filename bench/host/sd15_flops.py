"""Work of SD 1.5's UNet step and VAE decode, counted from diffusers' architecture, and the floors
they put under a time on a given CPU (issue 21).

Counts multiply-adds of the convolutions, linears and attention matmuls (norms, activations and
softmax are left out: they only raise the floor). A multiply-add is 2 operations.
Usage: python3 sd15_flops.py [PEAK_JSON]   (PEAK_JSON: cpu_peak.c's output; prints JSON)
"""
import json
import sys


def unet_macs(h, w, ctx=77, cdim=768, temb=1280):
    """SD 1.5 UNet at a latent of h x w, batch 1: multiply-adds by kind."""
    m = {"conv": 0, "linear": 0, "attention_matmuls": 0}

    def conv(cin, cout, hh, ww, k=3):
        m["conv"] += hh * ww * cin * cout * k * k

    def resnet(cin, cout, hh, ww):
        conv(cin, cout, hh, ww)
        conv(cout, cout, hh, ww)
        m["linear"] += temb * cout
        if cin != cout:
            conv(cin, cout, hh, ww, 1)

    def transformer(c, hh, ww):
        t = hh * ww
        m["linear"] += 2 * c * c * t  # proj_in, proj_out
        m["linear"] += 4 * c * c * t  # self-attention q, k, v, out
        m["attention_matmuls"] += 2 * t * t * c  # QK^T, PV
        m["linear"] += 2 * c * c * t + 2 * ctx * cdim * c  # cross q, out; k, v of the text
        m["attention_matmuls"] += 2 * t * ctx * c
        m["linear"] += 12 * c * c * t  # GEGLU's projection (8C) and the output (4C)

    conv(4, 320, h, w)
    ch = [320, 640, 1280, 1280]
    skips, cin = [320], 320
    for i, c in enumerate(ch):
        hh, ww = h >> i, w >> i
        for _ in range(2):
            resnet(cin, c, hh, ww)
            cin = c
            if i < 3:
                transformer(c, hh, ww)
            skips.append(c)
        if i < 3:
            conv(c, c, hh >> 1, ww >> 1)
            skips.append(c)
    hh, ww = h >> 3, w >> 3
    resnet(1280, 1280, hh, ww)
    transformer(1280, hh, ww)
    resnet(1280, 1280, hh, ww)
    for i, c in enumerate(reversed(ch)):
        lvl = 3 - i
        hh, ww = h >> lvl, w >> lvl
        for _ in range(3):
            resnet(cin + skips.pop(), c, hh, ww)
            cin = c
            if lvl < 3:
                transformer(c, hh, ww)
        if lvl > 0:
            conv(c, c, hh * 2, ww * 2)
    conv(320, 4, h, w)
    return m


def vae_decoder_macs(h, w):
    """SD 1.5's VAE decoder from a latent of h x w (picture 8h x 8w), batch 1."""
    m = 0

    def conv(cin, cout, hh, ww, k=3):
        nonlocal m
        m += hh * ww * cin * cout * k * k

    def resnet(cin, cout, hh, ww):
        conv(cin, cout, hh, ww)
        conv(cout, cout, hh, ww)
        if cin != cout:
            conv(cin, cout, hh, ww, 1)

    conv(4, 4, h, w, 1)  # post_quant_conv
    conv(4, 512, h, w)
    resnet(512, 512, h, w)
    t = h * w
    m += 4 * 512 * 512 * t + 2 * t * t * 512  # the mid block's attention
    resnet(512, 512, h, w)
    cin = 512
    for i, c in enumerate([512, 512, 256, 128]):
        hh, ww = h << i, w << i
        for _ in range(3):
            resnet(cin, c, hh, ww)
            cin = c
        if i < 3:
            conv(c, c, hh * 2, ww * 2)
    conv(128, 3, h * 8, w * 8)
    return m


def main():
    unet = unet_macs(64, 64)
    out = {
        "unet_512_b2_tera_ops": {k: round(2 * 2 * v / 1e12, 3) for k, v in unet.items()},
        "vae_decode_512_tera_ops": round(2 * vae_decoder_macs(64, 64) / 1e12, 3),
    }
    unet_ops = 2 * 2 * sum(unet.values())
    out["unet_512_b2_tera_ops"]["total"] = round(unet_ops / 1e12, 3)
    if len(sys.argv) > 1:
        peak = json.loads(sys.argv[1])
        out["peak_gops"] = peak
        vae_ops = 2 * vae_decoder_macs(64, 64)
        floors = {}
        for form in ("bf16_avx512_bf16", "bf16_amx", "int8_avx512_vnni", "int8_amx",
                     "f32_fma_avx512"):
            if peak.get(form):
                rate = peak[form] * 1e9
                floors[form] = {"unet_step_s": round(unet_ops / rate, 3),
                                "vae_decode_s": round(vae_ops / rate, 3)}
        out["floor_seconds_at_peak"] = floors
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

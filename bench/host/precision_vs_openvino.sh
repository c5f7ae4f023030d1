#!/usr/bin/env bash
# hyrt's host precisions beside OpenVINO on this CPU, in one run (issue 21): SD 1.5 at 512², UNet
# step batch 2 and VAE decode, random weights. hyrt: `hyrt bench --compare f32,bf16,w8a8` (each
# variant a fresh model in one process); OpenVINO: ../shared/bench/openvino_sd15_baseline.py `run`
# on IRs its `convert` / `convert-vae` wrote (f32 weights with the bf16 inference hint, nncf's
# W8A8 and int8 weight-only, the VAE decoder), each in a fresh process; then the whole int8
# txt2img (`hyrt generate`, 20 steps) with its wall time and peak RSS. Prints one JSON document.
# Usage: bench/host/precision_vs_openvino.sh HYRT OV_PYTHON OV_DIR INT8_MODEL [RUNS]
#   OV_PYTHON: a Python with openvino (pip install torch diffusers openvino nncf), OV_DIR the IRs,
#   INT8_MODEL an SD 1.5 hyrt int8 file (hyrt make-random-checkpoint, then hyrt quantize).
set -euo pipefail
hyrt=$1 ovpy=$2 ov=$3 int8_model=$4 runs=${5:-3}
here="$(cd "$(dirname "$0")/../.." && pwd)"
baseline="$here/../shared/bench/openvino_sd15_baseline.py"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=PASSIVE
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
"$hyrt" bench -m random:sd15 --only unet,vae --compare f32,bf16,w8a8 --runs "$runs" --warmup 1 \
  --json "$tmp/hyrt.json" >/dev/null 2>"$tmp/hyrt.err" || { tail -n 5 "$tmp/hyrt.err"; exit 1; }
for ir in f32 w8a8 int8w vae; do
  "$ovpy" "$baseline" run "$ov/$ir.xml" bf16 "$runs" 2>/dev/null | tail -n 1 >"$tmp/ov_$ir.json"
done
/usr/bin/time -v "$hyrt" generate -m "$int8_model" -p "a lighthouse on a cliff at sunset" \
  --steps 20 -s 1 -o "$tmp/int8.png" 2>"$tmp/gen.err" >"$tmp/gen.out"
python3 - "$tmp" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, re, sys
tmp, load_start, load_end = sys.argv[1:4]
h = json.load(open(f"{tmp}/hyrt.json"))
rows = {r["variant"]: r for r in h["comparison"]}
ov = {k: json.loads(open(f"{tmp}/ov_{k}.json").read()) for k in ("f32", "w8a8", "int8w", "vae")}
ms = lambda r, s: r["stages"][s]["median_ms"]
gen = open(f"{tmp}/gen.err").read()
timing = re.search(r"timings: (.*)", open(f"{tmp}/gen.out").read()).group(1)
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", gen).group(1)
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", gen).group(1))
m, s = wall.split(":")[-2:]
wall_s = int(m) * 60 + float(s)
ov_unet_s, ov_vae_s = ov["w8a8"]["median_step_s"], ov["vae"]["median_step_s"]
out = {
    "machine": h["machine"], "load_average_start": load_start, "load_average_end": load_end,
    "hyrt": {v: {"unet_step_ms": ms(r, "unet_step"), "vae_decode_ms": ms(r, "vae_decode"),
                 "config": r["config"], "peak_rss_bytes": r["peak_rss_bytes"]}
             for v, r in rows.items()},
    "openvino": ov,
    "ratios_hyrt_over_openvino": {
        "unet_w8a8 (hyrt w8a8 / OV nncf.quantize, bf16 hint)": ms(rows["w8a8"], "unet_step") / 1e3 / ov["w8a8"]["median_step_s"],
        "unet_16bit (hyrt bf16 / OV f32 weights, bf16 hint)": ms(rows["bf16"], "unet_step") / 1e3 / ov["f32"]["median_step_s"],
        "vae_decode (hyrt bf16 / OV bf16)": ms(rows["bf16"], "vae_decode") / 1e3 / ov["vae"]["median_step_s"],
        "vae_decode (hyrt w8a8 run's VAE: weight-only int8 in bf16 / OV bf16)": ms(rows["w8a8"], "vae_decode") / 1e3 / ov["vae"]["median_step_s"],
    },
    "generate_int8_512_20_steps": {
        "command": "hyrt generate -m SD15_INT8_FILE -p ... --steps 20 (precision auto: W8A8 UNet and text encoder, weight-only int8 VAE in bf16)",
        "hyrt_timings": timing, "wall_s": wall_s, "peak_rss_bytes": rss_kb * 1024,
        "openvino_same_work_s (20 x its W8A8 step + its bf16 VAE decode; no text encoder, no load)": round(20 * ov_unet_s + ov_vae_s, 2),
    },
}
print(json.dumps(out, indent=2))
PY

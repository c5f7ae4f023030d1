#!/usr/bin/env bash
# Issue 17 on the lent GPU machine, in one go: golden parity of the "Beyond txt2img" items (VAE
# encoder, img2img, inpainting with the 4- and 9-channel models, LoRA) in hybrid and device
# placement, f32 and int8; then the LoRA cost on a full-size random SD 1.5 int8 UNet in device
# placement (step with a rank-32 LoRA on every attention and feed-forward layer beside the plain
# step, switch times, memory).
# Needs, carried along: `.deps` (scripts/gpu/fetch_deps.sh) and `.gl/golden` with sd15-tiny and
# sd15-tiny-inpaint (the diffusers folders; LAYOUTS=single checks the LDM files instead, for which
# model/ needs only its configs and tokenizer);
# the folders present are checked (with the 64 MiB carry limit, one call may carry one of them).
# Usage there: scripts/gpu/run_features_on_gpu.sh OUT_DIR [parity] [bench]  (default both)
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
gpu_start "${1:-}"
shift || true
what="${*:-parity bench}"
t0=$(date +%s)
gpu_configure
gpu_build build.log hyrt
echo "build: $(($(date +%s) - t0)) s"
hyrt=build-gpu/tools/hyrt
for model in sd15-tiny sd15-tiny-inpaint; do
  [[ $what == *parity* && -d .gl/golden/$model ]] || continue
  for p in hybrid device; do
    for w in f32 int8; do
      flags=""
      [ $w = int8 ] && flags="--int8"
      log="$out/parity_${model}_${p}_$w.log"
      $hyrt parity .gl/golden/$model --layouts ${LAYOUTS:-folder} --placement $p $flags >"$log" 2>&1
      echo "parity $model $p $w rc=$?: $(tail -n 1 "$log")"
      grep -E "^FAIL" "$log" | head -n 8
    done
  done
done
grep -hE "lora|img2img|inpaint|vae_encoder" "$out"/parity_sd15-tiny*_device_f32.log | head -n 20
[[ $what == *bench* ]] || exit 0
$hyrt bench -m random:sd15 --int8 --only unet --placement device --runs ${BENCH_RUNS:-10} \
  --warmup 2 --lora-rank 32 --json "$out/lora_device_512.json" >/dev/null 2>"$out/lora_bench.err"
echo "lora bench rc=$?"
tail -n 3 "$out/lora_bench.err"
python3 - "$out/lora_device_512.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
s = j["stages"]
p, l = s["unet_step"], s["unet_step_lora"]
a = l["alternating"]
print("plain step median %.2f ms; with a rank-%d LoRA on %d layers %.2f ms (x%.3f); alternating: "
      "plain %.2f, LoRA %.2f, ratio median %.3f" %
      (p["median_ms"], l["rank"], l["layers"], l["step"]["median_ms"], l["ratio_to_plain_step"],
       a["plain"]["median_ms"], a["lora"]["median_ms"], a["ratio"]["median"]))
for name, sw in (("first LoRA", l), ("multiplier", l["multiplier_switch"]), ("other LoRA", l["lora_switch"])):
    print("switch to %s: set %.1f ms + compile %.1f ms = %.1f ms; steps after it %.1f, %.1f, %.1f ms" %
          (name, sw["set_loras_ms"], sw["compile_ms"], sw["switch_ms"], sw["first_step_ms"],
           sw["second_step_ms"], sw["steady_step_ms"]))
print("LoRA file %.1f MiB, adapters held %.1f MiB, RSS growth %.1f MiB (after switches %.1f MiB), accel %s" %
      (l["lora_file_bytes"] / 2**20, l["adapter_bytes"] / 2**20, l["rss_growth_bytes"] / 2**20,
       l["rss_growth_after_switches_bytes"] / 2**20, j.get("accelerator_memory")))
PY

#!/usr/bin/env bash
# `hyrt serve` with request batching on the lent GPU (issue 15), in one call: builds hyrt from
# the Debian packages carried in .deps/ (as measure_throughput.sh), writes a random SD 1.5-size
# checkpoint (int8), then runs bench/serve_load.py against `hyrt serve --placement device`
# with it: 8 concurrent clients x 25 txt2img requests (the 2-core test), 512x512, 20 steps, Euler a, with
# --max-batch 1, 4 and 8 (one server each, everything else the same).
#   scripts/gpu/run_serve_load_on_gpu.sh OUT_DIR
# Writes OUT_DIR/serve_load_gpu.json (both runs) and the logs beside it.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
gpu_start "${1:-}"
t0=$(date +%s)
gpu_configure -DHYRT_BUILD_TESTS=OFF
gpu_build build.log hyrt
echo "configure + build: $(($(date +%s) - t0)) s"
hyrt=build-gpu/tools/hyrt
ckpt=/tmp/sd15.safetensors
model=/tmp/sd15-int8.safetensors  # finds its tokenizer in /tmp/tokenizer
if [ ! -f "$model" ]; then
  $hyrt make-random-checkpoint --tokenizer models/shapes/tokenizer "$ckpt" >"$out/ckpt.log" 2>&1 &&
    $hyrt quantize "$ckpt" "$model" >>"$out/ckpt.log" 2>&1 ||
    { tail -n 20 "$out/ckpt.log"; exit 1; }
fi
ls -la "$model" /tmp/tokenizer 2>&1 | head -3
python3 bench/serve_load.py --hyrt "$hyrt" --model "$model" --placement device \
  --size 512 --steps 20 --clients 8 --requests 25 --max-batch 1 4 8 \
  --out "$out/serve_load_gpu.json" >"$out/serve_load.log" 2>&1
echo "serve_load rc=$?"
tail -n 5 "$out/serve_load.log"
python3 - "$out/serve_load_gpu.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["runs"]:
    print(f"max_batch {r['max_batch']}: {r['images_per_s']} images/s, p50 {r['latency_s']['p50']} s, "
          f"p95 {r['latency_s']['p95']} s, mean batch {r['server_metrics']['mean_batch_during_run']}, "
          f"RSS {r['rss_bytes']['end'] / 2**20:.0f} MiB")
PY

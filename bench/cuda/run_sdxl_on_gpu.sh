#!/usr/bin/env bash
# SDXL on the lent GPU machine, in one go: builds hyrt (Release), runs SDXL golden parity in
# hybrid and device placement, hyrt's SDXL UNet step (random real-size weights, int8, device
# placement) at 1024² then 768² and 832x1216 in one process (each new shape's first-call cost),
# the VAE decode, and the PyTorch eager anchor (bench/cuda/torch_sdxl_eager.py) in the same call.
# Needs, carried: .deps (scripts/gpu/fetch_deps.sh), .gl/golden/sdxl-tiny (a copy of
# ../shared/golden/sdxl-tiny: at least model/ and golden.*, or .gl/sdxl-tiny.tar.xz from
# scripts/gpu/pack_golden.sh; `file` alone needs only model/tokenizer and model/tokenizer_2), and
# .whl with diffusers for the anchor (the device README says how).
# Usage there: bench/cuda/run_sdxl_on_gpu.sh OUT_DIR [what...]
#   what: tests (the CUDA kernel tests, GoogleTest carried in .deps/cuda), parity (hybrid and
#   device), torch (the anchor), file (a real-size random SDXL file and
#   its int8 quantization in /tmp, in the background while the rest runs), bench (from that
#   file: load + first step, 1024² -> 768² -> 832x1216, VAE), generate (a whole 1024² 20-step
#   txt2img), variants (the 1024² UNet step under GEMM options: autotuning, device residual
#   fusion, staging budgets), fused (the fused W8A8 GEMM on and off, SDXL and SD 1.5), profile (the UNet's time per op kind by CUDA events, fused W8A8 off and on: SD 1.5 512² and 1024², SDXL 1024² with `file`), lora (issue 17's LoRA step against the plain one, then profiled), parity-sgm (parity again, when .gl holds model-sgm.safetensors too)
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-/tmp/hyrt-gpu-out}"
shift || true
what="${*:-parity bench torch}"
mkdir -p "$out"
logs="${LOG_DIR:-/tmp/hyrt-gpu-logs}"
mkdir -p "$logs"
source scripts/gpu/common.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
t0=$(date +%s)
# Tests on in every call, so that a later call's configure finds the same cache.
gpu_configure -DHYRT_BUILD_TESTS=ON
targets=(hyrt)
[[ $what == *tests* ]] && targets+=(hyrt_ops_tests)
cmake --build build-gpu -j"$(nproc)" --target "${targets[@]}" >"$logs/build.log" 2>&1 ||
  { grep -B2 -A12 -m3 "error" "$logs/build.log"; exit 1; }
echo "build: $(($(date +%s) - t0)) s"
if [[ $what == *tests* ]]; then
  # The CUDA kernel tests (GEMMs, convolutions, attention, the other ops), f16 and wide-range f32.
  build-gpu/tests/hyrt_ops_tests --gtest_filter='*Cuda*' >"$out/cuda_tests.log" 2>&1
  echo "cuda tests rc=$?"
  grep -E "^\[ +(FAILED|PASSED) |Failure|Expected|Which is|wide-range" "$out/cuda_tests.log" |
    head -n 60
  tail -n 3 "$out/cuda_tests.log"
fi
hyrt=build-gpu/tools/hyrt
tok=.gl/golden/sdxl-tiny/model
if [[ $what == *file* ]]; then
  ( t1=$(date +%s)
    $hyrt make-random-checkpoint --arch sdxl /tmp/sdxl.safetensors --tokenizer $tok/tokenizer \
      --tokenizer-2 $tok/tokenizer_2 >"$logs/make.log" 2>&1 &&
      $hyrt quantize /tmp/sdxl.safetensors /tmp/sdxl-int8.safetensors >"$logs/quantize.log" 2>&1
    echo "file rc=$? in $(($(date +%s) - t1)) s" >"$logs/file.done" ) &
  file_job=$!
fi
if [[ $what == *parity* ]]; then
  for p in hybrid device; do
    # PARITY_ARGS: e.g. "--layouts single" when .gl holds model-sgm.safetensors but not model/'s
    # weights (the copy limit of a device call).
    timeout 300 $hyrt parity .gl/golden/sdxl-tiny --placement $p ${PARITY_ARGS:-} \
      >"$out/parity_sdxl_$p.log" 2>&1
    echo "parity $p rc=$?: $(tail -n 1 "$out/parity_sdxl_$p.log")"
    grep -E "^FAIL|accelerator" "$out/parity_sdxl_$p.log" | head -n 12
  done
fi
if [[ $what == *bench* ]]; then
  [[ -n "${file_job:-}" ]] && wait "$file_job"  # the int8 file must be complete
  t1=$(date +%s)
  # The UNet at each of --sizes in turn; the VAE decodes at -W/-H (1024², the model's size).
  timeout 300 $hyrt bench -m /tmp/sdxl-int8.safetensors --only unet,vae --placement device \
    --resize --sizes ${BENCH_SIZES:-1024,832x1216,768} -W 1024 -H 1024 --runs 10 --warmup 2 \
    --json "$out/sdxl_unet_device.json" >/dev/null 2>"$logs/bench.err"
  echo "bench rc=$? in $(($(date +%s) - t1)) s"; tail -n 3 "$logs/bench.err"
  python3 - "$out/sdxl_unet_device.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for r in j["stages"].get("unet_step_resize", []):
    print("unet", r["size"], "median", round(r["median_ms"], 2), "ms, shape change",
          round(r["shape_change_ms"], 1), "ms")
v = j["stages"].get("vae_decode")
if v: print("vae decode 1024x1024 median", round(v["median_ms"], 2), "ms, first call",
           round(v["first_call_ms"], 1), "ms")
for a in j["scratch_arenas"]:
    print(a["component"], a["shape"], "device arena", round(a["device_arena_bytes"] / 2**20, 1), "MiB")
print("accelerator memory", j.get("accelerator_memory"), "load_ms", j.get("load_ms"))
PY
fi
# run_variant NAME [VAR=VALUE...]: the SDXL 1024² UNet step (int8 file, device placement) in
# one bench process with that environment and VARIANT_ARGS.
run_variant() {
  local name=$1
  shift
  env "$@" timeout 200 $hyrt bench -m /tmp/sdxl-int8.safetensors --only unet --placement device \
    -W 1024 -H 1024 --runs 10 --warmup 2 ${VARIANT_ARGS[@]+"${VARIANT_ARGS[@]}"} \
    --json "$out/variant_$name.json" >/dev/null 2>"$logs/variant_$name.err"
  python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['stages']['unet_step']; \
print(sys.argv[2], 'median', round(s['median_ms'], 2), 'ms, first', round(s['first_call_ms'])) " \
    "$out/variant_$name.json" "$name" || tail -n 3 "$logs/variant_$name.err"
}
if [[ $what == *fused* ]]; then
  # The fused W8A8 GEMM (gemm_s8_fused.h) against cuBLASLt s8 + the rescale pass
  # ($HYRT_CUDA_FUSED_S8=0): the SDXL UNet step at 1024², then SD 1.5's at 512² and 1024².
  [[ -n "${file_job:-}" ]] && wait "$file_job"
  VARIANT_ARGS=()
  run_variant fused_on
  run_variant fused_off HYRT_CUDA_FUSED_S8=0
  VARIANT_ARGS=(--autotune)
  run_variant fused_on_autotune
  VARIANT_ARGS=()
  for f in 1 0; do
    HYRT_CUDA_FUSED_S8=$f timeout 200 $hyrt bench -m random:sd15 --int8 --only unet \
      --placement device --resize --sizes 512,1024 --runs 10 --warmup 2 \
      --json "$out/sd15_fused$f.json" >/dev/null 2>"$logs/sd15_fused$f.err"
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
[print('sd15 fused', sys.argv[2], r['size'], 'median', round(r['median_ms'], 2), 'ms') \
 for r in j['stages'].get('unet_step_resize', [])]" "$out/sd15_fused$f.json" "$f" ||
      tail -n 3 "$logs/sd15_fused$f.err"
  done
fi
if [[ $what == *tunelog* ]]; then
  # Every GEMM program of the SDXL 1024² UNet step timed by autotuning (-vv logs each one), the
  # fused W8A8 kernel on and off: one line per key, both W8A8 forms beside the f16 candidate.
  # TUNELOG_MODEL (default: the SDXL int8 file) and TUNELOG_SIZE (default 1024) pick another
  # model, e.g. TUNELOG_MODEL="random:sd15 --int8" TUNELOG_SIZE=512.
  [[ -n "${file_job:-}" ]] && wait "$file_job"
  read -r -a tl_model <<<"${TUNELOG_MODEL:-/tmp/sdxl-int8.safetensors}"
  tl_size=${TUNELOG_SIZE:-1024}
  # A fresh program store per run (tuned records persist; a cached one is not timed again),
  # the fused kernel with the tile rule, then forced to each tile, then cuBLASLt + rescale.
  for v in auto large small off; do
    f=1; [[ $v == off ]] && f=0
    HYRT_CACHE_DIR=/tmp/hyrt-tunelog-$v HYRT_CUDA_FUSED_S8=$f HYRT_CUDA_FUSED_S8_TILE=$v \
      timeout 300 $hyrt -vv bench -m "${tl_model[@]}" --only unet \
      --placement device -W $tl_size -H $tl_size --runs 5 --warmup 1 --autotune \
      --json "$logs/tunelog_$v.json" >/dev/null 2>"$logs/tunelog_$v.err"
    echo "tunelog $v rc=$? step $(python3 -c "import json,sys; \
print(round(json.load(open(sys.argv[1]))['stages']['unet_step']['median_ms'], 2))" \
      "$logs/tunelog_$v.json") ms"
  done
  python3 - "$logs"/tunelog_{auto,large,small,off}.err <<'PY'
import re, sys
pat = re.compile(r"cuda: tuned gemm m=(\d+) n=(\d+) k=(\d+) .*?e=(\d+): f16 ([\d.]+) us.*?w8a8 ([\d.na/]+)")
def table(path):
    t = {}
    for line in open(path):
        m = pat.search(line)
        if m: t[m.group(1, 2, 3, 4)] = (m.group(5), m.group(6))
    return t
ts = [table(p) for p in sys.argv[1:]]
print("m n k e: f16 us | w8a8 fused (rule) | fused 128x128 | fused 64x128 | cublas+rescale us")
for key in sorted(set().union(*ts), key=lambda k: (int(k[0]), int(k[1]), int(k[2]))):
    r = [t.get(key, ("-", "-")) for t in ts]
    print(" ".join(key), ":", r[3][0], "|", " | ".join(x[1] for x in r))
PY
fi
if [[ $what == *variants* ]]; then
  # The 1024² UNet step under the GEMM options, one process each: the default, autotuned
  # candidates and algorithms, residual adds fused on the device, other staging budgets.
  [[ -n "${file_job:-}" ]] && wait "$file_job"  # the int8 file must be complete
  VARIANT_ARGS=()
  run_variant default
  for mb in 8 16 64 256; do run_variant "staging_${mb}mb" HYRT_CUDA_GEMM_STAGING_MB=$mb; done
  VARIANT_ARGS=(--device-residual-fusion)
  run_variant residual_fusion
  export HYRT_CACHE_DIR=/tmp/hyrt-tune-cache
  VARIANT_ARGS=(--autotune)
  run_variant autotune
  run_variant autotune_cached
  VARIANT_ARGS=(--autotune --device-residual-fusion)
  run_variant autotune_residual
fi
if [[ $what == *profile* ]]; then
  # Per op kind, timed by CUDA events in the stream (no sync per op), before and after the fused
  # W8A8 GEMM ($HYRT_CUDA_FUSED_S8=0 / 1): SD 1.5 at 512² and 1024², and SDXL at 1024² when
  # `file` made its int8 file. One JSON with every case: $out/unet_profile_events.json.
  [[ -n "${file_job:-}" ]] && wait "$file_job"
  cases=("sd15 512 random:sd15 --int8" "sd15 1024 random:sd15 --int8")
  [[ -f /tmp/sdxl-int8.safetensors ]] && cases+=("sdxl 1024 /tmp/sdxl-int8.safetensors")
  for c in "${cases[@]}"; do
    read -r fam size model extra <<<"$c"
    for f in ${PROFILE_FUSED:-0 1}; do
      HYRT_CUDA_FUSED_S8=$f timeout 200 $hyrt bench -m "$model" $extra --only unet \
        --placement device -W "$size" -H "$size" --runs 5 --warmup 2 --profile \
        --json "$logs/profile_${fam}_${size}_f$f.json" >/dev/null 2>"$logs/profile_${fam}_${size}_f$f.err" ||
        tail -n 3 "$logs/profile_${fam}_${size}_f$f.err"
    done
  done
  python3 - "$logs" "$out/unet_profile_events.json" <<'PY'
import glob, json, os, sys
logs, dest = sys.argv[1:3]
out = {}
for path in sorted(glob.glob(f"{logs}/profile_*_f[01].json")):
    name = os.path.basename(path)[len("profile_"):-len(".json")]
    j = json.load(open(path))
    ops = {}
    for row in j.get("op_profile_per_timed_run", {}).values():
        for k, v in row.items():
            ops[k] = ops.get(k, 0) + v["ms"]
    step = j["stages"]["unet_step"]["median_ms"]
    out[name] = {"step_median_ms_profiled": step, "op_ms_per_run": ops,
                 "sum_of_ops_ms": sum(ops.values()), "method": j.get("op_profile_method"),
                 "machine": j["machine"], "config": j["config"]}
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:7]
    print(f"{name}: step {step:.2f} ms, ops {sum(ops.values()):.2f} ms: " +
          ", ".join(f"{k} {v:.2f}" for k, v in top))
json.dump(out, open(dest, "w"), indent=2)
PY
fi
if [[ $what == *lora* ]]; then
  # Issue 17's LoRA step: SD 1.5 512² b2 int8 with a rank-32 LoRA on every attention and
  # feed-forward layer against the plain step, then the same with --profile: the side path's
  # GEMMs by CUDA events apart from the model's own ("lora_down", "lora_up"). LORA_ARGS adds
  # options to both (e.g. --autotune).
  read -r -a lora_args <<<"${LORA_ARGS:-}"
  for p in plain profile; do
    extra=(); [[ $p == profile ]] && extra=(--profile)
    timeout 240 $hyrt bench -m random:sd15 --int8 --only unet --placement device --lora-rank 32 \
      --runs 20 --warmup 3 ${lora_args[@]+"${lora_args[@]}"} ${extra[@]+"${extra[@]}"} \
      --json "$out/lora_$p.json" >/dev/null 2>"$logs/lora_$p.err" || tail -n 3 "$logs/lora_$p.err"
  done
  python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
j = json.load(open(f"{out}/lora_plain.json"))
l = j["stages"]["unet_step_lora"]
print("lora: plain", round(l["alternating"]["plain"]["median_ms"], 3), "ms, lora",
      round(l["alternating"]["lora"]["median_ms"], 3), "ms, ratio",
      round(l["alternating"]["ratio"]["median"], 4), ", switch", round(l["switch_ms"], 1), "ms")
p = json.load(open(f"{out}/lora_profile.json"))
for exe, ops in p.get("op_profile_all_runs", {}).items():
    calls = max(v["calls"] for v in ops.values())
    top = sorted(ops.items(), key=lambda kv: -kv[1]["total_ms"])
    print(exe, "; ".join(f"{k} {v['calls']} calls {v['total_ms']:.1f} ms" for k, v in top))
PY
fi
if [[ $what == *generate* ]]; then
  t1=$(date +%s.%N)
  $hyrt generate -m /tmp/sdxl-int8.safetensors -p "a lighthouse on a cliff" --steps 20 -s 1 \
    -o /tmp/sdxl.png -v >"$out/generate_1024.log" 2>&1
  echo "generate rc=$? wall $(python3 -c "import time; print(round(time.time() - $t1, 2))") s"
  grep -E "^timings|peak RSS|accelerator:" "$out/generate_1024.log" | head -n 6
fi
if [[ $what == *torch* ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
  timeout 300 python3 bench/cuda/torch_sdxl_eager.py 1024x1024,768x768,832x1216 \
    >"$out/torch_sdxl_eager.json" 2>"$logs/torch.err"
  echo "torch rc=$?"; tail -n 3 "$logs/torch.err"; cat "$out/torch_sdxl_eager.json"
fi
if [[ -n "${file_job:-}" ]]; then
  wait "$file_job"; cat "$logs/file.done"; tail -n 3 "$logs/make.log" "$logs/quantize.log"
  ls -la /tmp/sdxl-int8.safetensors
fi

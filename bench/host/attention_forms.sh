#!/usr/bin/env bash
# The host attention's forms beside each other in one run (issue 21): SD 1.5's UNet step at 512²
# (batch 2, random weights) under W8A8 and bf16 with each HYRT_CPU_ATTENTION form named, in
# alternating processes, ROUNDS rounds, with the per-op profile; then the attention kernels alone
# (bench_cpu_gemm BM_Attention, batch 1) under each form. Prints one JSON document.
# Usage: bench/host/attention_forms.sh BUILD_DIR [ROUNDS] [FORMS]
#   FORMS: default "onednn default" (default = no override: the backend's own choice).
set -euo pipefail
build=$1 rounds=${2:-2} forms=${3:-onednn default}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_WAIT_POLICY=PASSIVE
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for round in $(seq 1 "$rounds"); do
  for precision in int8 bf16; do
    for form in $forms; do
      env_form=(); [[ $form != default ]] && env_form=(HYRT_CPU_ATTENTION="$form")
      env "${env_form[@]}" "$build/tools/hyrt" bench -m random:sd15 --precision "$precision" \
        --only unet --runs 3 --warmup 1 --profile --json "$tmp/unet_${precision}_${form}_$round.json" \
        >/dev/null 2>"$tmp/err" || { tail -n 3 "$tmp/err"; exit 1; }
    done
  done
done
for form in $forms; do
  env_form=(); [[ $form != default ]] && env_form=(HYRT_CPU_ATTENTION="$form")
  env "${env_form[@]}" OMP_NUM_THREADS="$(nproc)" "$build/bench/bench_cpu_gemm" \
    --benchmark_filter='Attention.*prec:[12]' --benchmark_min_time=0.5 \
    --benchmark_format=json >"$tmp/kernels_$form.json" 2>/dev/null
done
python3 - "$tmp" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" "$forms" <<'PY'
import glob, json, re, sys
tmp, load_start, load_end, forms = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
steps, machine = {}, None
for path in sorted(glob.glob(f"{tmp}/unet_*.json")):
    precision, form, rnd = re.match(r".*/unet_(\w+?)_(.+)_(\d+)\.json", path).groups()
    j = json.load(open(path))
    machine = j["machine"]
    prof = next(iter(j["op_profile_per_timed_run"].values()))
    steps.setdefault(precision, {}).setdefault(form, []).append({
        "round": int(rnd), "step_ms": round(j["stages"]["unet_step"]["median_ms"], 1),
        "attention_ms": round(prof["attention"]["ms"], 1)})
kernels = {}
for form in forms:
    for b in json.load(open(f"{tmp}/kernels_{form}.json"))["benchmarks"]:
        kernels.setdefault(form, {})[b["name"].replace("BM_Attention/", "").replace(
            "/real_time", "")] = round(b["real_time"] / 1e6 if b["time_unit"] == "ns" else b["real_time"], 2)
print(json.dumps({"machine": machine, "load_average_start": load_start,
                  "load_average_end": load_end,
                  "unet_step_512_b2 (hyrt bench --profile, median of 3 after 1 warm-up, per process)": steps,
                  "attention_kernels_ms (bench_cpu_gemm, batch 1; prec 1 bf16, 2 int8)": kernels},
                 indent=1))
PY

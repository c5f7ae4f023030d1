#!/usr/bin/env bash
# The run-invariant prefix (exec/executable.h: the UNet's text-only work — cross-attention keys
# and values, SDXL's added embedding — computed once while the prompt stays the same) on the
# lent GPU machine: golden parity in device placement with it on, then the UNet step (b2, int8,
# device placement) with it on and off (`hyrt bench --no-reuse`), in alternating processes of
# one call, and the PyTorch eager SDXL anchor in the same call.
# Needs, carried: .deps (scripts/gpu/fetch_deps.sh); for `parity` .gl/golden/sd15-tiny and
# .gl/golden/sdxl-tiny, or their archives from scripts/gpu/pack_golden.sh (the carry limit counts
# the tracked tree too); for `torch` .whl with diffusers (the device README says how).
# Usage there: bench/cuda/run_reuse_on_gpu.sh OUT_DIR [what...]
#   what: parity, sd15 (512², 1024², 768², 640² in one process each: steps and first calls),
#   lora (issue 17's rank-32 LoRA step against the plain one; LORA_FORMS, LORA_ROUNDS), lora_sdxl
#   (the same on SDXL 1024²), sdxl (1024², 832x1216, 768²; with
#   ATTENTION_FORMS="own cudnn" also under HYRT_CUDA_ATTENTION=cudnn), torch (the SDXL anchor),
#   torch15 (SD 1.5's PyTorch eager anchor for issue 16: 512², 1024², 768²),
#   shapes (the step profiled by layer shape, --profile-shapes: SHAPES_CASES, SHAPES_TOP),
#   optests (the CUDA op tests alone, OPS_FILTER), ops (the CUDA op tests, the relu/tanh unary kernels among them, and the sampler, TAESD and
#   LCM-model tests with the GPU present: added 2026-12-05 without a GPU to run them),
#   first (issue 16's first step at 768² and 640² in FIRST_PROCESSES=20 processes),
#   quant (the W8A8 node's parts at 1024² shapes, bench_cuda_gemm --breakdown, with the
#   register-resident im2col quantizer and with HYRT_CUDA_QUANTIZE=twopass —
#   QUANT_BREAKDOWN_FORMS — and the quantizer, GEMM and conv tests with each — QUANT_TESTS), quant_ab (the UNet step, SD 1.5 512² and 1024², SDXL 1024², with
#   QUANT_FORMS — new, old (quantizer, tile rule and conv estimate of before), autotune, noqa
#   (layer norms not quantizing for their linears) — in
#   alternating processes; QUANT_ROUNDS; tile_NAME forces a fused W8A8 tile configuration),
#   attn_tests (the CUDA attention tests with cuDNN's plans, the default, and with
#   HYRT_CUDA_ATTENTION=own), attn (SD 1.5's step per size, cuDNN's plans built in the background
#   against hyrt's kernel alone, alternating processes), energy (issue 16's J/step at 512² and
#   1024² by NVML's counter, bench/cuda/nvml_energy.py), profile (issue 16's per-op profile by
#   CUDA events, hyrt's attention kernel against cuDNN's plans), gnq_check (the bundled model's
#   picture in device placement, --int8, every conv the implicit kernel takes as one —
#   HYRT_CUDA_CONV_IMPLICIT=2 — with and without HYRT_CUDA_GN_QUANTIZE=1: the same PNG bytes
#   expected, and the log saying the group norms quantized)
# PARITY_ARGS: e.g. "--layouts folder" when .gl holds the model folders only; PARITY_CASES:
# ';'-separated "FOLDER ARGS..." (default: sd15-tiny device, device --int8, sdxl-tiny device);
# MODEL_FILTER: the
# model tests' GoogleTest filter (without models/ carried, leave out TinyVae.RefusesWhat*).
# Everything is written under /tmp and packed into OUT_DIR/reuse_run.tar.gz (the device tool
# returns a limited number of files); a summary goes to stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
dest="${1:-/tmp/hyrt-gpu-out}"
shift || true
what="${*:-parity sd15 lora sdxl torch}"
source scripts/gpu/common.sh
gpu_start_packed "$dest" reuse_run
t0=$(date +%s)
# The model tests find the carried golden folders (.gl/golden) through HYRT_SHARED_DIR.
gpu_configure -DHYRT_SHARED_DIR="$PWD/.gl" -DHYRT_BUILD_CUDA_BENCH=ON
gpu_build build.log hyrt
echo "build: $(($(date +%s) - t0)) s"
hyrt=build-gpu/tools/hyrt
# has_word ITEM: whether ITEM is one of the words asked for.
has_word() { [[ " $what " == *" $1 "* ]]; }
# summary JSON NAME: the UNet step per size (median, first call) and the kept steps.
summary() {
  python3 - "$1" "$2" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
st = j["stages"]
rows = st.get("unet_step_resize") or [dict(st["unet_step"], size="")]
for r in rows:
    print(sys.argv[2], r.get("size", ""), "median", round(r["median_ms"], 3), "ms, first",
          round(r["first_call_ms"], 1), "ms")
lo = st.get("unet_step_lora")
if lo:
    alt = lo["alternating"]
    print(sys.argv[2], "lora alternating: plain", round(alt["plain"]["median_ms"], 3), "lora",
          round(alt["lora"]["median_ms"], 3), "ratio", round(alt["ratio"]["median"], 4),
          "| consecutive: lora", round(lo["step"]["median_ms"], 3), "ratio",
          round(lo.get("ratio_to_plain_step", 0), 4), "| switch", round(lo["switch_ms"], 1), "ms")
for a in j["scratch_arenas"]:
    if a["component"] == "unet":
        print("  ", a["shape"], "kept steps", a.get("invariant_steps"), "reused runs",
              a.get("reused_runs"), "device arena", round(a["device_arena_bytes"] / 2**20, 1), "MiB")
PY
}
# bench NAME ARGS...: one bench process (stderr to $out/NAME.err), then its summary.
bench() {
  local name=$1
  shift
  timeout 240 "$hyrt" bench "$@" --json "$out/$name.json" >/dev/null 2>"$out/$name.err" &&
    summary "$out/$name.json" "$name" || { echo "$name failed:"; tail -n 3 "$out/$name.err"; }
}
if [[ $what == *ops* ]]; then
  gpu_build ops_build.log hyrt_ops_tests hyrt_model_tests
  timeout 400 build-gpu/tests/hyrt_ops_tests --gtest_filter='*Cuda*' >"$out/ops.log" 2>&1
  echo "cuda op tests rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$out/ops.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]' "$out/ops.log" | head -n 8
  timeout 300 build-gpu/tests/hyrt_model_tests \
    --gtest_filter="${MODEL_FILTER:-*SamplerPipeline*:TinyVae*:LcmModel*}" >"$out/model.log" 2>&1
  echo "sampler/TAESD/LCM model tests rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$out/model.log" |
    tr '\n' ' ')"
fi
if has_word optests; then
  # The CUDA op tests alone: OPS_FILTER (default every CUDA op test).
  gpu_build ops_build.log hyrt_ops_tests
  timeout 400 build-gpu/tests/hyrt_ops_tests --gtest_filter="${OPS_FILTER:-*Cuda*}" >"$out/optests.log" 2>&1
  echo "op tests ${OPS_FILTER:-*Cuda*} rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$out/optests.log" | tr '\n' ' ')"
  grep -E '^\[  FAILED  \]|Failure|Expected|Which is|rel L2' "$out/optests.log" | head -n 12
fi
if [[ $what == *attn_tests* ]]; then
  gpu_build ops_build.log hyrt_ops_tests
  for form in ${ATTN_TEST_FORMS:-cudnn own}; do
    HYRT_CUDA_ATTENTION=$form timeout 200 build-gpu/tests/hyrt_ops_tests \
      --gtest_filter='CudaAttention*' >"$out/attn_tests_$form.log" 2>&1
    echo "attention tests $form rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' "$out/attn_tests_$form.log" |
      tr '\n' ' ') programs: $(grep -oE "runs (cudnn|own)" "$out/attn_tests_$form.log" | sort |
      uniq -c | tr '\n' ' ')"
    grep -E '^\[  FAILED  \]|first run before the plan' "$out/attn_tests_$form.log" | head -n 8
  done
fi
if [[ $what == *parity* ]]; then
  IFS=';' read -r -a parity_cases <<<"${PARITY_CASES:-sd15-tiny --placement device;sd15-tiny --placement device --int8;sdxl-tiny --placement device}"
  for args in "${parity_cases[@]}"; do
    read -r -a a <<<"$args"
    [ -d ".gl/golden/${a[0]}" ] || { echo "parity $args: .gl/golden/${a[0]} not carried"; continue; }
    timeout 300 "$hyrt" parity ".gl/golden/${a[0]}" "${a[@]:1}" ${PARITY_ARGS:-} >"$out/parity.log" 2>&1
    echo "parity $args rc=$?: $(tail -n 1 "$out/parity.log")"
    grep -E "^FAIL" "$out/parity.log" | head -n 8
  done
fi
if [[ $what == *sd15* ]]; then
  for round in 1 2; do
    for form in reuse every; do
      flag=(); [[ $form == every ]] && flag=(--no-reuse)
      bench "sd15_${form}_$round" -m random:sd15 --int8 --only unet --placement device --resize \
        --sizes 512,1024,768,640 --runs 20 --warmup 3 "${flag[@]}"
    done
  done
fi
if [[ $what == *attn\ * || $what == *attn ]]; then
  for round in $(seq 1 "${ATTN_ROUNDS:-2}"); do
    for form in own cudnn; do
      HYRT_CUDA_ATTENTION=$form bench "sd15_attn_${form}_$round" -m random:sd15 --int8 \
        --only unet --placement device --resize --sizes 512,1024,768,640 --runs 20 --warmup 3
    done
  done
fi
if [[ $what == *residual* ]]; then
  # The residual adds in the fused W8A8 GEMM's epilogue (default) against their own kernels
  # (HYRT_CUDA_FUSED_RESIDUAL=0), SD 1.5, alternating processes.
  for round in $(seq 1 "${RESIDUAL_ROUNDS:-1}"); do
    for res in 1 0; do
      HYRT_CUDA_FUSED_RESIDUAL=$res bench "sd15_res${res}_$round" -m random:sd15 --int8 \
        --only unet --placement device --resize --sizes 512,1024,768,640 --runs 20 --warmup 3
    done
  done
fi
if [[ $what == *profile* ]]; then
  # Issue 16's point 4: the per-op profile (CUDA events, no sync per op) with hyrt's attention
  # kernel and with cuDNN's plans, SD 1.5 1024² and 512².
  for size in 1024 512; do
    for form in own cudnn; do
      HYRT_CUDA_ATTENTION=$form timeout 200 "$hyrt" bench -m random:sd15 --int8 --only unet \
        --placement device -W $size -H $size --runs 5 --warmup 2 --profile \
        --json "$out/profile_${form}_$size.json" >/dev/null 2>"$out/profile_${form}_$size.err"
      python3 - "$out/profile_${form}_$size.json" "$form $size" <<'PY' || tail -n 3 "$out/profile_${form}_$size.err"
import json, sys
j = json.load(open(sys.argv[1]))
prof = j.get("op_profile_per_timed_run") or {}
for exe, ops in prof.items():
    if "unet" in exe:
        top = sorted(((v["ms"], k) for k, v in ops.items()), reverse=True)[:7]
        print("profile", sys.argv[2], "step", round(j["stages"]["unet_step"]["median_ms"], 2),
              "ms:", ", ".join(f"{k} {ms:.2f}" for ms, k in top))
PY
    done
  done
fi
if has_word shapes; then
  # Where the step's time goes by layer shape (hyrt bench --profile --profile-shapes: CUDA events,
  # no graph replay): SHAPES_CASES, each "NAME ARGS..." separated by ';'.
  IFS=';' read -r -a cases <<<"${SHAPES_CASES:-sdxl1024 -m random:sdxl -W 1024 -H 1024;sd15_1024 -m random:sd15 -W 1024 -H 1024;lora512 -m random:sd15 -W 512 -H 512 --lora-rank 32}"
  for c in "${cases[@]}"; do
    read -r -a a <<<"$c"
    # A case named *_old runs the quantizer and tile rule as before (quant_ab's old form).
    # One named *_nopp runs the tile rule without the ping-pong tile (quant_ab's nopp form).
    q="" fill="" roof="" pp=""; [[ ${a[0]} == *_old ]] && q=twopass fill=8 roof=matrix
    [[ ${a[0]} == *_nopp ]] && pp=0
    HYRT_CUDA_QUANTIZE=$q HYRT_CUDA_FUSED_S8_FILL=$fill HYRT_CUDA_ROOFLINE=$roof \
      HYRT_CUDA_FUSED_S8_PINGPONG_K=$pp timeout 240 "$hyrt" bench "${a[@]:1}" \
      --int8 --only unet --placement device --runs 5 --warmup 2 \
      --profile --profile-shapes --json "$out/shapes_${a[0]}.json" >/dev/null 2>"$out/shapes_${a[0]}.err"
    python3 - "$out/shapes_${a[0]}.json" "${a[0]}" <<'PY' || tail -n 3 "$out/shapes_${a[0]}.err"
import json, sys
j = json.load(open(sys.argv[1]))
for exe, ops in (j.get("op_profile_per_timed_run") or {}).items():
    if "unet" not in exe:
        continue
    total = sum(v["ms"] for v in ops.values())
    kinds = {}
    for k, v in ops.items():
        kinds[k.split(" ")[0]] = kinds.get(k.split(" ")[0], 0) + v["ms"]
    print("shapes", sys.argv[2], exe, "sum", round(total, 2), "ms; by kind:",
          ", ".join(f"{k} {ms:.2f}" for k, ms in sorted(kinds.items(), key=lambda x: -x[1])))
    for k, v in sorted(ops.items(), key=lambda kv: -kv[1]["ms"])[:int(__import__("os").environ.get("SHAPES_TOP", "30"))]:
        print(f"  {v['ms']:7.3f} ms {v['calls']:5.1f}x {1000 * v['ms'] / v['calls']:8.1f} us  {k}")
PY
  done
fi
if [[ $what == *energy* ]]; then
  for size in 512 1024; do
    gpu_energy "$hyrt" "$size" "$size" "${ATTENTION:-cudnn}"
  done
fi
if [[ $what == *first* ]]; then
  # Issue 16's point 3: the first step at a new resolution (768², 640² after 512²) in fresh
  # processes (FIRST_PROCESSES, 20), each from a cold start of the sizes (the program cache on
  # disk is warm). FIRST_FORMS (default "own cudnn") alternate per process: own = hyrt's attention
  # kernel alone, cudnn = cuDNN's plans built on the quiet worker, cudnn-q0 = the same with the
  # worker's gate off (HYRT_BACKGROUND_QUIET_MS=0: builds run beside the first steps).
  # FIRST_IDLE_MS: idle before each size's first call (hyrt bench --idle-ms), as between pictures.
  for i in $(seq 1 "${FIRST_PROCESSES:-20}"); do
    for form in ${FIRST_FORMS:-own cudnn}; do
      quiet=""; [[ $form == *-q0 ]] && quiet=0
      HYRT_CUDA_ATTENTION=${form%-q0} HYRT_BACKGROUND_QUIET_MS=$quiet timeout 120 "$hyrt" bench \
        -m random:sd15 --int8 --only unet --placement device --resize --sizes 512,768,640 \
        --runs 2 --warmup 1 --idle-ms "${FIRST_IDLE_MS:-0}" --json "$out/first_${form}_$i.json" >/dev/null 2>"$out/first_${form}_$i.err" ||
        { echo "first_${form}_$i failed:"; tail -n 3 "$out/first_${form}_$i.err"; }
    done
  done
  python3 - "$out" <<'PY'
import glob, json, re, sys
firsts, preps = {}, {}
for path in sorted(glob.glob(sys.argv[1] + "/first_*.json")):
    form = re.match(r".*/first_(.*)_\d+\.json", path).group(1)
    j = json.load(open(path))
    for r in j["stages"].get("unet_step_resize", []):
        firsts.setdefault((form, r["size"]), []).append(round(r["first_call_ms"], 1))
    for a in j["scratch_arenas"]:
        if a["component"] == "unet":
            preps.setdefault((form, a["shape"]), []).append(round(a["prepare_ms"], 1))
for (form, size), v in firsts.items():
    print("first step", form, size, "processes", len(v), "<= 50 ms:", sum(x <= 50 for x in v),
          "median", sorted(v)[len(v) // 2], "ms:", v)
for (form, shape), v in preps.items():
    print("  prepare", form, shape, "median", sorted(v)[len(v) // 2], "ms:", v)
PY
fi
if has_word lora; then
  # LORA_FORMS: how the CUDA backend runs the adapters — merged (the default: the term merged into
  # the layer's widened f16 weights) or side (HYRT_CUDA_LORA=side: the adapter's two GEMMs);
  # LORA_ROUNDS alternating processes; LORA_REUSE "reuse every" also runs --no-reuse.
  for round in $(seq 1 "${LORA_ROUNDS:-1}"); do
    for lform in ${LORA_FORMS:-merged}; do
      for form in ${LORA_REUSE:-reuse every}; do
        flag=(); [[ $form == every ]] && flag=(--no-reuse)
        HYRT_CUDA_LORA=$lform bench "lora_${lform}_${form}_$round" -m random:sd15 --int8 \
          --only unet --placement device --lora-rank 32 --runs 20 --warmup 3 "${flag[@]}"
      done
    done
  done
fi
if has_word lora_sdxl; then
  # The same LoRA measure on SDXL at 1024² (rank 32 on every attention and feed-forward layer).
  for lform in ${LORA_FORMS:-merged}; do
    HYRT_CUDA_LORA=$lform bench "lora_sdxl_${lform}" -m random:sdxl --int8 --only unet \
      --placement device -W 1024 -H 1024 --lora-rank 32 --runs 10 --warmup 2
  done
fi
if has_word sdxl; then
  # RESIDUAL_FORMS: "1 0" also runs HYRT_CUDA_FUSED_RESIDUAL=0 (residual adds as their own kernels
  # instead of in the fused W8A8 GEMM's epilogue).
  for res in ${RESIDUAL_FORMS:-1}; do
    for att in ${ATTENTION_FORMS:-own}; do
      for form in ${SDXL_REUSE_FORMS:-reuse every}; do
        flag=(); [[ $form == every ]] && flag=(--no-reuse)
        HYRT_CUDA_FUSED_RESIDUAL=$res HYRT_CUDA_ATTENTION=$att bench "sdxl_${att}_${form}_res$res" \
          -m random:sdxl --int8 --only unet --placement device --resize --sizes 1024,832x1216,768 \
          --runs 10 --warmup 2 "${flag[@]}"
      done
    done
  done
fi
if has_word quant; then
  gpu_build bench_build.log bench_cuda_gemm hyrt_ops_tests
  for form in ${QUANT_BREAKDOWN_FORMS:-resident twopass}; do
    [[ $form == none ]] && continue  # the tests only
    env=(); [[ $form == twopass ]] && env=(HYRT_CUDA_QUANTIZE=twopass)
    env "${env[@]}" timeout 300 build-gpu/bench/bench_cuda_gemm --breakdown --reps 30 \
      --out "$out/breakdown_$form.json" >/dev/null 2>"$out/breakdown_$form.txt"
    echo "breakdown $form rc=$?"
    cat "$out/breakdown_$form.txt"
  done
  # The quantizer, GEMM and conv tests with each quantizer (QUANT_TESTS: the forms to run).
  for form in ${QUANT_TESTS-resident twopass}; do
    q=""; [[ $form == twopass ]] && q=twopass
    HYRT_CUDA_QUANTIZE=$q timeout 300 build-gpu/tests/hyrt_ops_tests \
      --gtest_filter="${QUANT_TEST_FILTER:-CudaQuantize.*:CudaGemm*:CudaConv*}" \
      >"$out/quant_tests_$form.log" 2>&1
    echo "$form quantizer/GEMM/conv tests rc=$?: $(grep -E '^\[  (PASSED|FAILED) ' \
      "$out/quant_tests_$form.log" | tr '\n' ' ')"
    grep -E '^\[  FAILED  \]' "$out/quant_tests_$form.log" | head -n 8
  done
fi
if has_word quant_ab; then
  # Forms: new (the defaults), old (HYRT_CUDA_QUANTIZE=twopass, HYRT_CUDA_FUSED_S8_FILL=8,
  # HYRT_CUDA_ROOFLINE=matrix: the im2col quantizer, fused tile rule and conv estimate of before),
  # autotune (the defaults with every GEMM's candidate measured: hyrt bench --autotune), noqa
  # (HYRT_QUANTIZED_ACTIVATIONS=0: layer norms write f16 and each linear quantizes it),
  # tile_NAME (HYRT_CUDA_FUSED_S8_TILE=NAME: every fused W8A8 GEMM on that tile configuration),
  # nopp (HYRT_CUDA_FUSED_S8_PINGPONG_K=0: the tile rule without the ping-pong tile, as before),
  # im2col (HYRT_CUDA_CONV_IMPLICIT=0: every W8A8 conv through im2col, as before 2026-12-07),
  # implicit_all (=2: every W8A8 conv the implicit kernel takes, whatever its input and size),
  # implicit128 / implicit160 (the default convs on that tile width: ..._TILE_N), nonarrow
  # (HYRT_CUDA_CONV_NARROW=0: conv_out and other convs to <= 4 or 8 channels through im2col),
  # nostack (HYRT_STACKED_PROJECTIONS=0: q, k and v as three linears, not one stacked linear read
  # packed by the attention), nogncluster (HYRT_CUDA_GN_CLUSTER=0: with
# bench/results/gn_cluster_experiment.patch applied, every group norm in the two-kernel form),
  # gnq (HYRT_CUDA_GN_QUANTIZE=1: group norms read only by implicit convs write s8 for them).
  for round in $(seq 1 "${QUANT_ROUNDS:-2}"); do
    for form in ${QUANT_FORMS:-new old autotune}; do
      q="" fill="" roof="" tune=() cache=${HYRT_CACHE_DIR:-} qa="" gnq=""
      [[ $form == old ]] && q=twopass fill=8 roof=matrix
      [[ $form == noqa ]] && qa=0
      [[ $form == gnq ]] && gnq=1
      tile=""; [[ $form == tile_* ]] && tile=${form#tile_}
      pp=""; [[ $form == nopp ]] && pp=0
      imp=""; [[ $form == im2col ]] && imp=0; [[ $form == implicit_all ]] && imp=2
      itn=""; [[ $form == implicit1[26]0 ]] && itn=${form#implicit}
      nar=""; [[ $form == nonarrow ]] && nar=0
      stk=""; [[ $form == nostack ]] && stk=0
      gnc=""; [[ $form == nogncluster ]] && gnc=0
      # The measured choices go to a cache of their own (the others' untimed ones stay apart).
      [[ $form == autotune ]] && tune=(--autotune) cache=/tmp/hyrt-autotune-cache
      HYRT_CUDA_QUANTIZE=$q HYRT_CUDA_FUSED_S8_FILL=$fill HYRT_CUDA_ROOFLINE=$roof \
        HYRT_QUANTIZED_ACTIVATIONS=$qa HYRT_CUDA_FUSED_S8_TILE=$tile HYRT_CUDA_FUSED_S8_PINGPONG_K=$pp \
        HYRT_CUDA_CONV_IMPLICIT=$imp HYRT_CUDA_CONV_IMPLICIT_TILE_N=$itn HYRT_CUDA_CONV_NARROW=$nar HYRT_STACKED_PROJECTIONS=$stk HYRT_CUDA_GN_CLUSTER=$gnc HYRT_CUDA_GN_QUANTIZE=$gnq HYRT_CACHE_DIR=$cache bench "sd15_q${form}_$round" -m random:sd15 --int8 --only unet --placement device \
        --resize --sizes 512,1024 --runs 20 --warmup 3 "${tune[@]}"
      HYRT_CUDA_QUANTIZE=$q HYRT_CUDA_FUSED_S8_FILL=$fill HYRT_CUDA_ROOFLINE=$roof \
        HYRT_QUANTIZED_ACTIVATIONS=$qa HYRT_CUDA_FUSED_S8_TILE=$tile HYRT_CUDA_FUSED_S8_PINGPONG_K=$pp \
        HYRT_CUDA_CONV_IMPLICIT=$imp HYRT_CUDA_CONV_IMPLICIT_TILE_N=$itn HYRT_CUDA_CONV_NARROW=$nar HYRT_STACKED_PROJECTIONS=$stk HYRT_CUDA_GN_CLUSTER=$gnc HYRT_CUDA_GN_QUANTIZE=$gnq HYRT_CACHE_DIR=$cache bench "sdxl_q${form}_$round" -m random:sdxl --int8 --only unet --placement device \
        -W 1024 -H 1024 --runs 10 --warmup 2 "${tune[@]}"
    done
  done
fi
if has_word gnq_check; then
  # The quantizing group norm end to end: the same picture bits with it (implicit convs read
  # the group norms' s8 output) and without (they quantize the f16 output themselves).
  for gnq in 0 1; do
    HYRT_CUDA_CONV_IMPLICIT=2 HYRT_CUDA_GN_QUANTIZE=$gnq timeout 200 "$hyrt" generate \
      -p "a red circle on a blue background" --sampler ddim --steps 12 --cfg-scale 5 -s 1 \
      --precision int8 --placement device --verbose -o "$out/gnq_$gnq.png" >"$out/gnq_$gnq.log" 2>&1
    echo "gnq_check HYRT_CUDA_GN_QUANTIZE=$gnq rc=$?: $(grep -o '[0-9]* group norms write quantized activations for [0-9]* convolutions' "$out/gnq_$gnq.log" | head -n 2 | tr '\n' ' ')"
  done
  cmp -s "$out/gnq_0.png" "$out/gnq_1.png" && echo "gnq_check: the same PNG bytes" ||
    echo "gnq_check: the PNGs DIFFER"
fi
if has_word torch || has_word torch15; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >"$out/pip.log" 2>&1 && export PYTHONPATH=/tmp/site
  for model in $(has_word torch && echo sdxl) $(has_word torch15 && echo sd15); do
    sizes=1024x1024,832x1216,768x768
    [[ $model == sd15 ]] && sizes=512x512,1024x1024,768x768
    timeout 200 python3 bench/cuda/torch_sdxl_eager.py $sizes $model \
      >"$out/torch_$model.json" 2>"$out/torch_$model.err"
    echo "torch $model rc=$?"
    python3 -c "import json,sys; j=json.load(open(sys.argv[1])); [print('torch', j['model'], u['size'], u['median_ms'], 'ms') for u in j['unet']]" \
      "$out/torch_$model.json" || tail -n 5 "$out/torch_$model.err"
  done
fi
echo "total: $(($(date +%s) - t0)) s"

#!/usr/bin/env bash
# The fused attention kernel on the lent GPU machine, in one go: builds hyrt, the CUDA op
# tests and bench_cuda_attention (Release); runs the attention kernel tests, the kernel
# benchmark over its forms (bench_cuda_attention: SD 1.5 and SDXL shapes), golden parity in
# device placement where .gl holds the folders, and the UNet step (random weights, int8,
# device placement: SD 1.5 at 512² and 1024² in one process, SDXL at 1024²) with hyrt's own
# kernel (HYRT_CUDA_ATTENTION=own) against cuDNN's SDPA (=cudnn, cudnn_attention.h) and Hopper's
# kernel (=hopper, attention_kernels.h), alternating, in the same call: the forms in
# $ATTENTION_FORMS (default "own cudnn hopper"). The kernel tests run under each. With .whl holding a diffusers wheel,
# also the PyTorch eager SDXL anchor (bench/cuda/torch_sdxl_eager.py) in the same call.
# Needs, carried: .deps (scripts/gpu/fetch_deps.sh, GoogleTest in .deps/cuda); optionally
# .gl/golden/sd15-tiny (a copy of ../shared/golden/sd15-tiny without model-ldm.safetensors)
# and .whl. Usage there: bench/cuda/run_attention_on_gpu.sh OUT_DIR [what...]
#   what: tests, kernel, parity, sd15, sdxl, energy (issue 16's J/step at 512² and 1024² per
#   form, bench/cuda/nvml_energy.py), profile (Nsight Compute on Hopper's kernel), torch
#   (default: tests kernel parity sd15 sdxl). KERNEL_FORMS / PROFILE_FORM narrow `kernel` /
#   `profile` to the benchmark's forms whose names hold them (bench_cuda_attention --only: parts
#   separated by '|'). Everything lands
#   in OUT_DIR/attention_run.tar.gz plus a summary on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
gpu_start "${1:-/tmp/hyrt-gpu-out}"
shift || true
what="${*:-tests kernel parity sd15 sdxl}"
res=/tmp/hyrt-attention-run
mkdir -p $res
t0=$(date +%s)
gpu_configure -DHYRT_BUILD_TESTS=ON -DHYRT_BUILD_CUDA_BENCH=ON
gpu_build build.log hyrt hyrt_ops_tests bench_cuda_attention
echo "build: $(($(date +%s) - t0)) s"
forms="${ATTENTION_FORMS:-own cudnn hopper}"
if [[ $what == *tests* ]]; then
  for form in $forms; do
    log=$res/attention_tests_$form.log
    HYRT_CUDA_ATTENTION=$form timeout 150 build-gpu/tests/hyrt_ops_tests --gtest_filter='CudaAttention*' \
      >$log 2>&1
    echo "attention tests ($form) rc=$?"
    grep -E "^\[ +(FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|skip|no cuDNN" $log | head -n 30
    echo "programs: $(grep -oE "runs (cudnn|own|hopper)" $log | sort | uniq -c | tr '\n' ' ')"
    echo "largest rel L2 of the tests: $(grep -E "rel L2" $log | awk '{print $NF}' | sort -g |
      tail -n 1)"
  done
fi
if [[ $what == *kernel* ]]; then
  # KERNEL_FORMS: only the forms whose names hold one of its '|'-separated parts.
  timeout 150 build-gpu/bench/bench_cuda_attention --reps 20 --out $res/attention_forms.json \
    ${KERNEL_FORMS:+--only "$KERNEL_FORMS"} >/dev/null 2>$res/attention_forms.txt
  echo "attention bench rc=$?"
  cat $res/attention_forms.txt
fi
hyrt=build-gpu/tools/hyrt
if [[ $what == *parity* ]]; then
  for g in sd15-tiny sdxl-tiny; do
    [ -d .gl/golden/$g ] || continue
    for int8 in "" --int8; do
      timeout 200 $hyrt parity .gl/golden/$g --layouts folder --placement device $int8 \
        >$res/parity_${g}_device$int8.log 2>&1
      echo "parity $g device $int8 rc=$?: $(tail -n 1 $res/parity_${g}_device$int8.log)"
      grep -E "^FAIL" $res/parity_${g}_device$int8.log | head -n 8
    done
  done
fi
# form: own, cudnn or hopper (HYRT_CUDA_ATTENTION), from $forms.
if [[ $what == *sd15* ]]; then
  for round in $(seq 1 "${SD15_ROUNDS:-2}"); do
    for form in $forms; do
      HYRT_CUDA_ATTENTION=$form timeout 150 $hyrt bench -m random:sd15 --int8 --only unet \
        --placement device --resize --sizes 512,1024 --runs 10 --warmup 2 \
        --json $res/sd15_unet_${form}_$round.json >/dev/null 2>$res/sd15_unet_${form}_$round.err
      python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
[print('sd15 unet', sys.argv[2], r['size'], 'median', round(r['median_ms'], 2), 'ms, first', \
 round(r['first_call_ms'], 1), 'ms') for r in j['stages'].get('unet_step_resize', [])]" $res/sd15_unet_${form}_$round.json \
        $form || tail -n 3 $res/sd15_unet_${form}_$round.err
    done
  done
fi
if [[ $what == *sdxl* ]]; then
  for form in $forms; do
    HYRT_CUDA_ATTENTION=$form timeout 200 $hyrt bench -m random:sdxl --int8 --only unet \
      --placement device -W 1024 -H 1024 --runs 10 --warmup 2 \
      --json $res/sdxl_unet_$form.json >/dev/null 2>$res/sdxl_unet_$form.err
    python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['stages']['unet_step']; \
print('sdxl unet 1024', sys.argv[2], 'median', round(s['median_ms'], 2), 'ms')" \
      $res/sdxl_unet_$form.json $form || tail -n 3 $res/sdxl_unet_$form.err
  done
fi
if [[ $what == *energy* ]]; then
  # Issue 16's energy per step under each form, alternating.
  for size in 512 1024; do
    for form in $forms; do
      out=$res gpu_energy "$hyrt" "${form}_$size" "$size" "$form"
    done
  done
fi
if [[ $what == *profile* ]]; then
  # Nsight Compute on the first launch of Hopper's kernel in bench_cuda_attention (its default
  # form, "hopper, 3 warp groups", at the first shape: 2 x 4096² x 8 heads x d40): throughput,
  # pipes, stalls, the shared wavefronts (the layout's bank conflicts). Where ncu is installed
  # with the toolkit.
  ncu=$(command -v ncu || ls -d /usr/local/cuda*/bin/ncu 2>/dev/null | head -n 1)
  if [ -n "$ncu" ]; then
    # PROFILE_FORM: profile the first of the forms whose name holds this text instead.
    timeout 240 "$ncu" --set full --kernel-name regex:flash_attention_sm90 --launch-count 1 \
      -o $res/attention_profile build-gpu/bench/bench_cuda_attention --reps 3 \
      ${PROFILE_FORM:+--only "$PROFILE_FORM"} >$res/ncu_run.log 2>&1
    echo "ncu rc=$?"
    "$ncu" -i $res/attention_profile.ncu-rep --page details --print-details all \
      >$res/ncu_details.txt 2>&1
    # Per SASS instruction: executions and stall samples by reason (where the warps wait).
    "$ncu" -i $res/attention_profile.ncu-rep --page source --print-source sass --csv \
      >$res/ncu_source_sass.csv 2>&1 || echo "ncu source page rc=$?"
    grep -E "Duration|Issue Slots Busy|Eligible Warps|highest-utilized|excessive|Tensor|Stall" \
      $res/ncu_details.txt | head -n 30
  else
    echo "profile: no ncu here"
  fi
fi
if [[ $what == *torch* ]]; then
  pip install --no-deps --target /tmp/pydeps .whl/*.whl >$res/pip.log 2>&1 || tail -n 3 $res/pip.log
  PYTHONPATH=/tmp/pydeps timeout 240 python3 bench/cuda/torch_sdxl_eager.py 1024x1024 \
    >$res/torch_sdxl.json 2>$res/torch_sdxl.err
  echo "torch rc=$?"; cat $res/torch_sdxl.json; tail -n 3 $res/torch_sdxl.err
fi
tar -C $res -czf "$out/attention_run.tar.gz" .
echo "total: $(($(date +%s) - t0)) s"

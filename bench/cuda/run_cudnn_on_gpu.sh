#!/usr/bin/env bash
# cuDNN's attention (src/backend/cuda/cudnn_attention.h) on the lent GPU machine, in one call:
# builds hyrt with cuDNN's headers (carried in .deps/cudnn/include) against the cuDNN wheel
# PyTorch brought (scripts/gpu/common.sh, gpu_cudnn); what its plans cost to build
# (bench_cuda_attention --plans); in this order: the attention kernel tests;
# bench/cuda/run_sdxl_on_gpu.sh's SDXL set (issue 14's point 4: the real-size file, parity, the
# step at three sizes, VAE, the PyTorch anchor, a whole txt2img, the per-op profile of SD 1.5
# and SDXL); SD 1.5's UNet step (512², 1024², then 768² and 640²: each new size's first call)
# with hyrt's own kernel and cuDNN's (HYRT_CUDA_ATTENTION=own|cudnn); what cuDNN's plans cost to
# build; and the kernel benchmark per shape if time is left.
# Needs, carried: .deps (with cudnn/include), .gl/golden/sdxl-tiny, .whl (diffusers).
# Usage there: bench/cuda/run_cudnn_on_gpu.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
# Everything is written under /tmp and packed into OUT_DIR/cudnn_run.tar.gz at the end: the
# device tool returns only a limited number of files from OUT_DIR.
source scripts/gpu/common.sh
gpu_start_packed "${1:-/tmp/hyrt-gpu-out}" cudnn_run
t0=$(date +%s)
gpu_configure -DHYRT_BUILD_TESTS=ON -DHYRT_BUILD_CUDA_BENCH=ON
gpu_build build.log hyrt hyrt_ops_tests bench_cuda_attention
echo "build: $(($(date +%s) - t0)) s"
HYRT_CUDA_ATTENTION=cudnn timeout 120 build-gpu/tests/hyrt_ops_tests --gtest_filter='CudaAttention*' >"$out/attention_tests.log" 2>&1
echo "attention tests rc=$?"
grep -E "^\[ +(FAILED|PASSED|SKIPPED) |Failure|Expected|Which is|bound workspace of" \
  "$out/attention_tests.log" | head -n 20
echo "programs: $(grep -oE "runs (cudnn|own)" "$out/attention_tests.log" | sort | uniq -c | tr '\n' ' ')"
echo "at $(($(date +%s) - t0)) s: the SDXL set"
HYRT_CUDA_ATTENTION=cudnn PROFILE_FUSED=1 LOG_DIR="$out/sdxl_logs" bash bench/cuda/run_sdxl_on_gpu.sh "$out" \
  ${SDXL_WHAT:-file parity bench torch generate profile}
echo "at $(($(date +%s) - t0)) s: SD 1.5 across sizes"
for form in own cudnn; do
  env_form=()
  env_form=(HYRT_CUDA_ATTENTION=$form)
  env "${env_form[@]}" timeout 150 build-gpu/tools/hyrt bench -m random:sd15 --int8 --only unet \
    --placement device --resize --sizes 512,1024,768,640 --runs 10 --warmup 2 \
    --json "$out/sd15_unet_resize_$form.json" >/dev/null 2>"$out/sd15_unet_resize_$form.err"
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
[print('sd15 unet', sys.argv[2], r['size'], 'median', round(r['median_ms'], 2), 'ms, first', \
 round(r['first_call_ms'], 1), 'ms') for r in j['stages'].get('unet_step_resize', [])]" \
    "$out/sd15_unet_resize_$form.json" $form || tail -n 3 "$out/sd15_unet_resize_$form.err"
done
timeout 60 build-gpu/bench/bench_cuda_attention --plans >"$out/cudnn_plans.txt" 2>&1
echo "plans rc=$?"; cat "$out/cudnn_plans.txt"
echo "at $(($(date +%s) - t0)) s: the kernel per shape"
timeout $((560 - ($(date +%s) - t0))) build-gpu/bench/bench_cuda_attention --reps 10 \
  --out "$out/attention_forms_h200.json" >/dev/null 2>"$out/attention_forms.txt"
echo "forms rc=$?"; cut -c1-200 "$out/attention_forms.txt"
echo "total: $(($(date +%s) - t0)) s"

#!/usr/bin/env bash
# Request batching on the lent GPU (issues 20 and 15), in one call: builds hyrt, the library
# tests and bench/library_throughput from the Debian packages carried in .deps/ (see
# run_library_on_gpu.sh), writes a random SD 1.5-size checkpoint (int8), then
#   - the batch-invariance test (a batch's row 0 equals a lone call) with placement device;
#   - the UNet step at 512² for UNet batches 2, 4 and 8 (1, 2 and 4 images with CFG);
#   - library_throughput: 1 thread vs 4 threads (batched up to 4 images) vs one call of batch 4,
#     20 DDIM steps at 512².
# Also the CUDA op tests, and the library tests with placement hybrid (HYRT_MEASURE_PLACEMENTS).
#   scripts/gpu/measure_throughput.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
gpu_start "${1:-}"
t0=$(date +%s)
gpu_configure -DHYRT_BUILD_TESTS=ON
gpu_build build.log hyrt_library_tests hyrt_ops_tests hyrt library_throughput
echo "configure + build: $(($(date +%s) - t0)) s"
build-gpu/tests/hyrt_ops_tests --gtest_filter='*Cuda*' >"$out/cuda_ops.log" 2>&1
echo "cuda op tests rc=$?"; grep -E "Failure|FAILED" "$out/cuda_ops.log" | head -10; tail -n 2 "$out/cuda_ops.log"
for placement in device ${HYRT_MEASURE_PLACEMENTS:-hybrid}; do
  HYRT_TEST_PLACEMENT=$placement build-gpu/tests/hyrt_library_tests \
    --gtest_filter="${HYRT_MEASURE_TESTS:-Library.*}" >"$out/library_$placement.log" 2>&1
  echo "library tests, placement $placement: rc=$?"
  grep -E "^\[ +(OK|FAILED) |Failure|differs" "$out/library_$placement.log" | head -20
done
hyrt=build-gpu/tools/hyrt
ckpt=/tmp/sd15.safetensors
$hyrt make-random-checkpoint --tokenizer models/shapes/tokenizer "$ckpt" >"$out/ckpt.log" 2>&1 &&
  $hyrt quantize "$ckpt" /tmp/sd15-int8.safetensors >>"$out/ckpt.log" 2>&1 ||
  { tail -n 20 "$out/ckpt.log"; exit 1; }
ls -la /tmp/sd15-int8.safetensors /tmp/tokenizer 2>&1 | head -3
for b in ${HYRT_MEASURE_UNET_BATCHES:-2 4 8}; do
  $hyrt bench -m /tmp/sd15-int8.safetensors --placement device --only unet -b $b --runs 10 \
    --warmup 2 --json "$out/unet_b$b.json" >"$out/unet_b$b.log" 2>&1
  echo "unet b$b rc=$?: $(grep -o '"median_ms": [0-9.]*' "$out/unet_b$b.json" | head -1)"
done
build-gpu/bench/library_throughput --model /tmp/sd15-int8.safetensors --placement device \
  --size 512 --steps 20 --threads 4 --images 8 --runs 3 --max-batch 4 --json "$out/throughput.json" \
  2>"$out/throughput.err" | tail -n 8
tail -n 5 "$out/throughput.err"

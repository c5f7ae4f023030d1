#!/usr/bin/env bash
# Builds and runs the CUDA GEMM benchmark and the CUDA op tests on the lent GPU machine, in
# one go (device time is scarce). Needs, carried along as `.deps`: the Debian packages of
# scripts/gpu/fetch_deps.sh, plus GoogleTest for the tests:
#   scripts/gpu/fetch_deps.sh && mkdir -p .deps/cuda && (cd .deps/cuda && apt-get download libgtest-dev)
# Usage there: bench/cuda/run_on_gpu.sh OUT_DIR   (OUT_DIR gets the JSON and the logs)
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-/tmp/hyrt-gpu-out}"
mkdir -p "$out"
source scripts/gpu/common.sh
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu \
  --format=csv 2>&1 | tee "$out/nvidia_smi.txt"
t0=$(date +%s)
gpu_configure -DHYRT_BUILD_CUDA_BENCH=ON -DHYRT_BUILD_TESTS=ON
gpu_build build_bench.log bench_cuda_gemm
echo "configure + bench build: $(($(date +%s) - t0)) s"
build-gpu/bench/bench_cuda_gemm --out "$out/cuda_gemm.json" >/dev/null 2>"$out/bench_table.txt"
echo "bench rc=$?"
cat "$out/bench_table.txt"
t0=$(date +%s)
cmake --build build-gpu -j"$(nproc)" --target hyrt_ops_tests >"$out/build_tests.log" 2>&1 ||
  { grep -B2 -A10 -m3 "error" "$out/build_tests.log"; exit 1; }
echo "tests build: $(($(date +%s) - t0)) s"
build-gpu/tests/hyrt_ops_tests --gtest_filter='*Cuda*' >"$out/tests.log" 2>&1
echo "tests rc=$?"
grep -E "^\[ +(OK|FAILED|SKIPPED|PASSED|cuda) |Failure|Expected|Which is|error|tolerance" "$out/tests.log" | head -n 80
tail -n 3 "$out/tests.log"

#!/usr/bin/env bash
# The library contract (issue 20) on the lent GPU machine, in one call: builds the library
# and CUDA op tests from the Debian packages carried in .deps/ (scripts/gpu/fetch_deps.sh,
# plus GoogleTest in .deps/cuda: `mkdir -p .deps/cuda && (cd .deps/cuda && apt-get download
# libgtest-dev libgmock-dev googletest)`), runs the CUDA op tests, then tests/library's
# stress, cancel, failure and memory tests with placement device and hybrid.
# (LibraryFailure's address-space limit is left out there: a CUDA context reserves more
# virtual memory than any such limit allows.)
#   scripts/gpu/run_library_on_gpu.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh
gpu_start "${1:-}"
t0=$(date +%s)
gpu_configure -DHYRT_BUILD_TESTS=ON
gpu_build build.log hyrt_library_tests hyrt_ops_tests hyrt
echo "configure + build: $(($(date +%s) - t0)) s"
build-gpu/tests/hyrt_ops_tests --gtest_filter='*Cuda*' >"$out/cuda_ops.log" 2>&1
echo "cuda op tests rc=$?"; grep -E "Failure|FAILED" "$out/cuda_ops.log" | head -20; tail -n 3 "$out/cuda_ops.log"
for placement in device hybrid; do
  HYRT_TEST_PLACEMENT=$placement build-gpu/tests/hyrt_library_tests \
    --gtest_filter='Library.*:LibraryMemory.*' >"$out/library_$placement.log" 2>&1
  echo "library tests, placement $placement: rc=$?"
  grep -E "^\[ +(OK|FAILED) |rss|Failure|Expected|actual" "$out/library_$placement.log" | head -20
done

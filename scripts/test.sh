#!/usr/bin/env bash
# Runs hyrt's test suite (unit, op, model-parity and end-to-end tests) with CTest.
#   scripts/test.sh              the normal build in ./build (built first if needed)
#   scripts/test.sh --sanitize   an ASan+UBSan build in ./build-asan: unit, op, serve and hostile
#                                tests (hostile: the CLI on damaged inputs, without its 4 GiB
#                                address-space limit, which ASan's shadow memory cannot live in)
# Model-parity tests use ../shared/golden and skip with a message where it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests run in parallel, each on every core: idle OpenMP threads must sleep, not spin, or
# oversubscribed barriers crawl.
export OMP_WAIT_POLICY=PASSIVE

if [ "${1:-}" = "--sanitize" ]; then
  HYRT_BUILD_DIR=build-asan scripts/build.sh -DCMAKE_BUILD_TYPE=Debug -DHYRT_SANITIZE=ON \
    -DHYRT_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  # oneDNN's AMX JIT has crashed inside libdnnl under the sanitizers (scripts/ci/tsan.sh says
  # more); cap it below AMX there: the bf16 and VNNI int8 paths still run.
  export DNNL_MAX_CPU_ISA="${DNNL_MAX_CPU_ISA:-AVX512_CORE_BF16}"
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)" -L 'unit|ops|serve|hostile'
else
  scripts/build.sh
  ctest --test-dir build --output-on-failure -j"$(nproc)"
fi

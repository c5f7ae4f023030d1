#!/usr/bin/env bash
# The library's concurrency contract under ThreadSanitizer (issue 20): the public API's
# stress, cancel and failure tests (tests/library, Library.*) in a TSan build of the host
# backend. Host threads are 1 (HYRT_TEST_THREADS): GNU OpenMP's barriers are not
# instrumented, so its own team would only produce false reports; what is under test is
# hyrt's locking between the callers' threads. The memory and address-space tests are left
# out (TSan reserves terabytes of shadow address space and doubles memory use).
set -euo pipefail
cd "$(dirname "$0")/../.."
build_dir="${HYRT_TSAN_BUILD_DIR:-build-tsan}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DHYRT_TSAN=ON -DHYRT_WITH_CUDA=OFF -DHYRT_BUILD_BENCH=OFF >/dev/null
cmake --build "$build_dir" -j"$(nproc)" --target hyrt_library_tests
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1"
HYRT_TEST_THREADS=1 "$build_dir/tests/hyrt_library_tests" --gtest_filter='Library.*'
echo "hyrt: ThreadSanitizer run of the library tests passed"

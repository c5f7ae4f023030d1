#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs each for N seconds
# (default 60) on a scratch copy of its seed corpus. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! command -v clang++ >/dev/null; then
  echo "fuzz/run.sh: clang++ not found; skipping the fuzz run"
  exit 0
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DHYRT_FUZZ=ON -DHYRT_BUILD_TESTS=OFF \
  -DHYRT_BUILD_BENCH=OFF -DHYRT_WITH_CUDA=OFF >/dev/null
ninja -C build-fuzz safetensors_fuzz ldm_names_fuzz >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r fuzz/corpus/safetensors "$work/st"
cp -r fuzz/corpus/ldm_names "$work/ldm"
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/safetensors_fuzz" -max_total_time="$seconds" -max_len=4096 \
  -dict="$OLDPWD/fuzz/safetensors.dict" -print_final_stats=1 st 2>&1 | tail -n 12)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/ldm_names_fuzz" -max_total_time="$((seconds / 2))" \
  -max_len=8192 -print_final_stats=1 ldm 2>&1 | tail -n 6)
echo "fuzz/run.sh: no findings in ${seconds}s + $((seconds / 2))s"

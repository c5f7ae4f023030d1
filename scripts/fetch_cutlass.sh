#!/usr/bin/env bash
# Downloads CUTLASS's headers for the CUDA backend's fused W8A8 GEMM (gemm_s8_fused.h): the
# nvidia-cutlass wheel from PyPI (header-only C++ inside; NVIDIA's CUTLASS has no Debian
# package), pinned by version and sha256, into .deps/cutlass/ (git-ignored). CMake unpacks its
# headers into the build folder. Run by scripts/build.sh where nvcc is; a machine without
# network (the GPU machine) gets the wheel carried in .deps. Never fatal: without the wheel the
# CUDA backend builds without the fused kernel.
set -uo pipefail
cd "$(dirname "$0")/.."
version=4.2.0.0
sha256=f9599ada45c7bcb6bf53f7d3f0a7d154183e53451c01bfa59eecd37dd4a693f6
wheel=".deps/cutlass/nvidia_cutlass-$version-py3-none-any.whl"
have() { [ -f "$wheel" ] && echo "$sha256  $wheel" | sha256sum -c --quiet - 2>/dev/null; }
have && exit 0
mkdir -p .deps/cutlass
python=""
for p in python3 python; do
  command -v "$p" >/dev/null && "$p" -m pip --version >/dev/null 2>&1 && { python="$p"; break; }
done
if [ -z "$python" ]; then
  echo "hyrt: no pip to fetch CUTLASS's headers; building without the fused W8A8 GEMM" >&2
  exit 0
fi
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest .deps/cutlass \
  "nvidia-cutlass==$version" >&2 || true
if have; then
  echo "hyrt: CUTLASS $version headers in $wheel"
else
  rm -f "$wheel"
  echo "hyrt: could not fetch nvidia-cutlass==$version (or its sha256 differs); building without" \
    "the fused W8A8 GEMM" >&2
fi
exit 0

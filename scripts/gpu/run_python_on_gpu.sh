#!/usr/bin/env bash
# The Python package on the lent GPU machine (Ubuntu, CUDA 13, no package registry): the
# Debian libraries carried in .deps/ (scripts/gpu/fetch_deps.sh) unpacked into a private
# prefix, the wheels pip needs carried in build-python/wheels, fetched here first for the GPU
# machine's Python (3.12 there):
#   pip download -d build-python/wheels scikit-build-core nanobind pytest
#   pip download -d build-python/wheels --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 --no-deps pillow
# then, with carry [".deps", "build-python/wheels"]: a venv, `pip install .`, the pytest suite
# (placement auto: the GPU), the CLI, and the CLI parity tests on the GPU. Writes logs to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/hyrt-gpu-out}"
mkdir -p "$OUT"
t0=$(date +%s)
rc=0
python3 --version; nvidia-smi -L
prefix=/tmp/hyrt-prefix
if [ ! -d "$prefix/usr" ]; then
  for f in .deps/*.deb; do dpkg -x "$f" "$prefix"; done
  sed -i "s|^prefix=/usr|prefix=$prefix/usr|" "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
fi
export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig"
export LD_LIBRARY_PATH="$prefix/usr/lib/x86_64-linux-gnu"
python3 -m venv /tmp/v || { echo "no venv"; exit 1; }
/tmp/v/bin/pip install -q --no-index --find-links build-python/wheels scikit-build-core nanobind pillow pytest || exit 1
ls /usr/include/python3*/Python.h 2>&1 | head -2
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
export CMAKE_PREFIX_PATH="$prefix/usr"
/tmp/v/bin/pip install --no-build-isolation . > "$OUT/pip.log" 2>&1 \
  || { grep -B2 -A12 -m3 -i "error" "$OUT/pip.log" | head -60; tail -30 "$OUT/pip.log"; exit 1; }
echo "pip install . took $(( $(date +%s) - t0 )) s"
/tmp/v/bin/python -c "import hyrt; p = hyrt.Pipeline(); print(p.accelerator)"
(cd python/tests && timeout 200 /tmp/v/bin/python -m pytest -q -p no:cacheprovider . 2>&1 | tail -15) || rc=1
# The CLI, for the parity tests with both sides on the GPU (placement auto).
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix/usr" \
  -DCMAKE_BUILD_RPATH="$prefix/usr/lib/x86_64-linux-gnu" -DHYRT_BUILD_TESTS=OFF -DHYRT_BUILD_BENCH=OFF > "$OUT/cli-configure.log" 2>&1
timeout $(( 560 - ($(date +%s) - t0) )) cmake --build build-gpu --target hyrt > "$OUT/cli-build.log" 2>&1 || { echo "CLI build failed or out of time"; tail -3 "$OUT/cli-build.log"; exit 1; }
echo "CLI built at $(( $(date +%s) - t0 )) s"
(cd python/tests && HYRT_CLI=$PWD/../../build-gpu/tools/hyrt timeout 60 /tmp/v/bin/python -m pytest -q -p no:cacheprovider . -k parity 2>&1 | tail -15) || rc=1
exit $rc

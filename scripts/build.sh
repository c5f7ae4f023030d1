#!/usr/bin/env bash
# Installs hyrt's build dependencies (Debian/Ubuntu packages; root or sudo) and builds
# everything into ./build (or $HYRT_BUILD_DIR). Extra arguments go to CMake.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/packages.sh
missing=()
for p in "${hyrt_build_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "hyrt: installing ${missing[*]}"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# CUTLASS's headers for the CUDA backend's fused W8A8 GEMM, where there is a CUDA toolkit.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  scripts/fetch_cutlass.sh
fi

build_dir="${HYRT_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
echo "hyrt: built $build_dir/tools/hyrt"

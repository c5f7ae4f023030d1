#!/usr/bin/env bash
# Downloads (does not install) the Debian packages the GPU machine lacks into .deps/
# (git-ignored), to be carried there: `carry: [".deps"]`, then scripts/gpu/build_on_device.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/packages.sh
mkdir -p .deps
cd .deps
# The CUDA toolkit there brings OpenCL's headers and libOpenCL, so ocl-icd-opencl-dev is not
# carried (its headers would shadow the toolkit's).
libs=()
for p in "${hyrt_library_packages[@]}"; do [ "$p" = ocl-icd-opencl-dev ] || libs+=("$p"); done
apt-get download "${hyrt_runtime_packages[@]}" "${libs[@]}"

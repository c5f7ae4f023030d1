#!/usr/bin/env bash
# Downloads (does not install) the Debian packages the GPU machine lacks into .deps/
# (git-ignored), to be carried there: `carry: [".deps"]`, then scripts/gpu/build_on_device.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .deps
cd .deps
apt-get download libdnnl2 libdnnl-dev ocl-icd-libopencl1 libcli11-dev nlohmann-json3-dev \
  libspng0 libspng-dev

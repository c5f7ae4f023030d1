#!/usr/bin/env bash
# Builds hyrt on the lent GPU machine (Ubuntu, CUDA 13, no package registry) from the
# Debian packages carried in .deps/ (fetch them here first with scripts/gpu/fetch_deps.sh),
# unpacked into a private prefix — never into /. See ../shared/notes/gpu-machine.md.
#   scripts/gpu/build_on_device.sh [BUILD_DIR] [extra CMake args...]
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build-gpu}"
shift || true
prefix=/tmp/hyrt-prefix
if [ ! -d "$prefix/usr" ]; then
  for f in .deps/*.deb; do dpkg -x "$f" "$prefix"; done
  # pkg-config files name /usr: point them at the private prefix.
  sed -i "s|^prefix=/usr|prefix=$prefix/usr|" "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
fi
export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix/usr" -DCMAKE_BUILD_RPATH="$prefix/usr/lib/x86_64-linux-gnu" \
  -DHYRT_BUILD_TESTS=OFF -DHYRT_BUILD_BENCH=OFF "$@"
cmake --build "$build" -j"$(nproc)" --target hyrt
echo "built $build/tools/hyrt"

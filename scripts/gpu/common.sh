# Sourced by the scripts that run on the lent GPU machine (it has the CUDA toolkit and a
# compiler but none of hyrt's Debian libraries): the packages carried in .deps/ (see
# fetch_deps.sh; GoogleTest in .deps/cuda/) are unpacked into a prefix and the build uses it.
# The caller has cd'ed to the repository root and calls gpu_start first.

prefix=/tmp/hyrt-prefix

# gpu_start [OUT]: sets $out (default /tmp/hyrt-gpu-out), makes it, and records the card there.
gpu_start() {
  out="${1:-/tmp/hyrt-gpu-out}"
  mkdir -p "$out"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 |
    tee "$out/nvidia_smi.txt"
}

# Unpacks .deps/*.deb and .deps/cuda/*.deb into $prefix once, and points pkg-config there.
gpu_prefix() {
  if [ ! -d "$prefix/usr" ]; then
    local f
    for f in .deps/*.deb .deps/cuda/*.deb; do
      [ -e "$f" ] && dpkg -x "$f" "$prefix"
    done
    sed -i "s|^prefix=/usr|prefix=$prefix/usr|" "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
  fi
  export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig"
}

# gpu_configure [-DOPTION=VALUE ...]: a Release build-gpu/ against the prefix (benchmarks that
# need Google Benchmark off), logged to $out/configure.log; exits on failure.
gpu_configure() {
  gpu_prefix
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix/usr" \
    -DCMAKE_BUILD_RPATH="$prefix/usr/lib/x86_64-linux-gnu" -DHYRT_BUILD_BENCH=OFF "$@" \
    >"$out/configure.log" 2>&1 || { tail -n 40 "$out/configure.log"; exit 1; }
}

# gpu_build LOG TARGET...: builds the targets in build-gpu/, logged to $out/LOG; exits on failure.
gpu_build() {
  local log="$out/$1"
  shift
  cmake --build build-gpu -j"$(nproc)" --target "$@" >"$log" 2>&1 ||
    { grep -B2 -A10 -m3 "error" "$log"; exit 1; }
}

# Sourced by the scripts that run on the lent GPU machine (it has the CUDA toolkit and a
# compiler but none of hyrt's Debian libraries): the packages carried in .deps/ (see
# fetch_deps.sh; GoogleTest in .deps/cuda/) are unpacked into a prefix and the build uses it.
# The caller has cd'ed to the repository root and calls gpu_start first.

prefix=/tmp/hyrt-prefix

# gpu_start_packed DEST NAME: like gpu_start, but $out is /tmp/hyrt-NAME, packed into
# DEST/NAME.tar.gz when the script exits (the device tool returns a limited number of files).
gpu_start_packed() {
  gpu_dest="$1"
  out="/tmp/hyrt-$2"
  gpu_pack="$2.tar.gz"
  mkdir -p "$gpu_dest" "$out"
  trap 'tar -C "$out" -czf "$gpu_dest/$gpu_pack" .' EXIT
  gpu_start "$out" >/dev/null
}

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

# cuDNN on the GPU machine: its headers carried in .deps/cudnn/include (copied from a CUDA
# toolkit's cudnn*.h: the machine's own toolkit may lack them), the library from the
# nvidia-cudnn wheel PyTorch brought (HYRT_CUDNN_LIBRARY, cudnn_api.h). Sets $cudnn_flags.
gpu_cudnn() {
  cudnn_flags=()
  [ -f .deps/cudnn/include/cudnn_graph.h ] &&
    cudnn_flags=(-DHYRT_CUDNN_INCLUDE_DIR="$PWD/.deps/cudnn/include")
  if [ -z "${HYRT_CUDNN_LIBRARY:-}" ]; then
    local lib
    lib=$(python3 -c "import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], 'lib', 'libcudnn.so.9'))" 2>/dev/null)
    [ -n "$lib" ] && [ -f "$lib" ] && export HYRT_CUDNN_LIBRARY="$lib"
  fi
  echo "cuDNN library: ${HYRT_CUDNN_LIBRARY:-none found}"
}

# Golden folders carried compressed (.gl/NAME.tar.xz, scripts/gpu/pack_golden.sh) unpacked into
# .gl/golden/, where the scripts look for them.
gpu_unpack_golden() {
  local f
  for f in .gl/*.tar.xz; do
    [ -e "$f" ] || continue
    mkdir -p .gl/golden
    tar -C .gl/golden -xJf "$f" || { echo "could not unpack $f"; exit 1; }
  done
}

# gpu_configure [-DOPTION=VALUE ...]: a Release build-gpu/ against the prefix (benchmarks that
# need Google Benchmark off), logged to $out/configure.log; exits on failure. Unpacks the
# carried golden archives first.
gpu_configure() {
  gpu_unpack_golden
  gpu_prefix
  gpu_cudnn
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix/usr" \
    -DCMAKE_BUILD_RPATH="$prefix/usr/lib/x86_64-linux-gnu" -DHYRT_BUILD_BENCH=OFF \
    "${cudnn_flags[@]}" "$@" \
    >"$out/configure.log" 2>&1 || { tail -n 40 "$out/configure.log"; exit 1; }
}

# gpu_build LOG TARGET...: builds the targets in build-gpu/, logged to $out/LOG; exits on failure.
gpu_build() {
  local log="$out/$1"
  shift
  cmake --build build-gpu -j"$(nproc)" --target "$@" >"$log" 2>&1 ||
    { grep -B2 -A10 -m3 "error" "$log"; exit 1; }
}

# gpu_energy HYRT NAME SIZE ATTENTION: issue 16's energy per step, SD 1.5's UNet (b2, int8,
# device placement) at SIZE², by NVML's counter around processes of 20 and of more timed steps
# (bench/cuda/nvml_energy.py; ENERGY_ROUNDS rounds, default 2), HYRT_CUDA_ATTENTION=ATTENTION.
# The JSON goes to $out/energy_NAME.json, one line to stdout.
gpu_energy() {
  local hyrt="$1" name="$2" size="$3" long=220
  [[ $size == 1024 ]] && long=120
  HYRT_CUDA_ATTENTION=$4 timeout 250 python3 bench/cuda/nvml_energy.py --short 20 --long $long \
    --rounds "${ENERGY_ROUNDS:-2}" -- "$hyrt" bench -m random:sd15 --int8 --only unet \
    --placement device -W "$size" -H "$size" --runs '{runs}' --warmup 3 \
    >"$out/energy_$name.json" 2>"$out/energy_$name.err"
  echo "energy $name rc=$?: $(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
print(round(j['joules_per_step_median'], 3), 'J/step', [round(r['joules_per_step'], 3) for r in j['rounds']], \
[round(r['seconds_per_step_wall'] * 1000, 2) for r in j['rounds']], 'ms/step')" "$out/energy_$name.json" 2>&1 |
    tail -n 1)"
}

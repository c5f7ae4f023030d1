#!/usr/bin/env bash
# The whole runtime on the lent GPU machine, in one go (device time is scarce): builds hyrt and
# the op tests (Release), runs the CUDA op tests, golden parity in each placement mode, and the
# UNet step benchmark side by side over placements on a full-size random SD 1.5 int8 model.
# Needs, carried along: `.deps` (scripts/gpu/fetch_deps.sh, plus libgtest-dev under .deps/cuda)
# and `.gl/golden` (a copy of ../shared/golden).
# Usage there: bench/cuda/run_engine_on_gpu.sh OUT_DIR [what...]
#   what: tests parity bench (placements side by side at 512 and 1024) overlap (hybrid with
#   and without host/device overlap) fusion (fused GEMM epilogues on and off) resize (512 -> 768 ->
#   1024 in one process) coldstart (a full-size int8 file: load + first step, twice)
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-/tmp/hyrt-gpu-out}"
shift || true
what="${*:-tests parity bench resize coldstart}"
mkdir -p "$out"
# Logs stay on the machine (LOG_DIR); OUT_DIR gets only the result JSONs and a summary.
logs="${LOG_DIR:-/tmp/hyrt-gpu-logs}"
mkdir -p "$logs"
runs="${BENCH_RUNS:-10}"
prefix=/tmp/hyrt-prefix
if [ ! -d "$prefix/usr" ]; then
  for f in .deps/*.deb .deps/cuda/*.deb; do dpkg -x "$f" "$prefix"; done
  sed -i "s|^prefix=/usr|prefix=$prefix/usr|" "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
fi
export PKG_CONFIG_PATH="$prefix/usr/lib/x86_64-linux-gnu/pkgconfig"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/gpu.txt"
t0=$(date +%s)
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix/usr" \
  -DCMAKE_BUILD_RPATH="$prefix/usr/lib/x86_64-linux-gnu" -DHYRT_BUILD_BENCH=OFF \
  -DHYRT_BUILD_CUDA_BENCH=ON -DHYRT_BUILD_TESTS=ON -DHYRT_SHARED_DIR="$PWD/.gl" \
  >"$logs/configure.log" 2>&1 || { tail -n 40 "$logs/configure.log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target hyrt hyrt_ops_tests >"$logs/build.log" 2>&1 ||
  { grep -B2 -A12 -m3 "error" "$logs/build.log"; exit 1; }
echo "build: $(($(date +%s) - t0)) s"
hyrt=build-gpu/tools/hyrt
if [[ $what == *tests* ]]; then
  build-gpu/tests/hyrt_ops_tests --gtest_filter='*Cuda*' >"$logs/tests.log" 2>&1
  echo "cuda op tests rc=$?"
  grep -E "^\[  (FAILED|PASSED) |Failure|Expected|Which is" "$logs/tests.log" | head -n 40
fi
if [[ $what == *parity* ]]; then
  for p in hybrid device; do
    $hyrt parity .gl/golden/sd15-tiny --placement $p >"$logs/parity_$p.log" 2>&1
    echo "parity $p rc=$?: $(tail -n 1 "$logs/parity_$p.log")"
    grep -E "^FAIL|accelerator" "$logs/parity_$p.log" | head -n 12
  done
fi
if [[ $what == *bench* ]]; then
  $hyrt bench -m random:sd15 --int8 --only unet --runs $runs --warmup 2 \
    --placements host,hybrid,device,auto --sizes ${BENCH_SIZES:-512,1024} \
    --json "$out/unet_placements.json" \
    >/dev/null 2>"$logs/bench.err"
  echo "bench rc=$?"; tail -n 5 "$logs/bench.err"
  python3 - "$out/unet_placements.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
for r in j["comparison"]:
    u = r["stages"]["unet_step"]; a = [x for x in r["scratch_arenas"] if x["component"] == "unet"]
    a = a[0] if a else {}
    print(f'{r["size"]} {r["placement"]:7s} median {u["median_ms"]:9.2f} ms  first {u["first_call_ms"]:9.1f} ms  '
          f'host arena {a.get("arena_bytes",0)/2**20:7.1f} MiB  device arena {a.get("device_arena_bytes",0)/2**20:7.1f} MiB  '
          f'copied {a.get("copy_bytes_per_run",0)/2**20:7.1f} MiB/run  captured {a.get("captured_steps",0)}  '
          f'accel {r.get("accelerator_memory")}')
print(json.dumps(j.get("unet_step_speedup", {})))
PY
fi
if [[ $what == *overlap* ]]; then
  # Hybrid with and without host/device overlap (asynchronous copies from page-locked
  # arenas, per-sample UNet chains, overlap schedule), in one process each, same machine.
  for ov in on off; do
    flags=""
    [ $ov = off ] && flags="--no-overlap"
    $hyrt bench -m random:sd15 --int8 --only unet --runs $runs --warmup 2 --placement hybrid \
      --sizes ${BENCH_SIZES:-512,1024} --placements hybrid $flags \
      --json "$out/unet_hybrid_overlap_$ov.json" >/dev/null 2>"$logs/overlap_$ov.err"
    echo "overlap $ov rc=$?"; tail -n 3 "$logs/overlap_$ov.err"
    python3 -c "
import json; j = json.load(open('$out/unet_hybrid_overlap_$ov.json'))
for r in j['comparison']:
    u = r['stages']['unet_step']; a = [x for x in r['scratch_arenas'] if x['component'] == 'unet'][0]
    print('$ov', r['size'], 'median %.2f ms first %.1f ms host arena %.1f MiB copied %.1f MiB/run' % (u['median_ms'], u['first_call_ms'], a['arena_bytes']/2**20, a.get('copy_bytes_per_run', 0)/2**20))"
  done
fi
if [[ $what == *fusion* ]]; then
  # Fused GEMM epilogues (residual adds, activations) vs the same graph as separate nodes:
  # device at 512 and 1024, host at 512; alternating on/off processes on the same machine.
  # on: the default (activations folded on the GPU); residual: also residual adds on the GPU
  # (--device-residual-fusion); off: --no-fusion.
  for rep in 1 2; do
    for fu in on residual off; do
      flags=""
      [ $fu = off ] && flags="--no-fusion"
      [ $fu = residual ] && flags="--device-residual-fusion"
      $hyrt bench -m random:sd15 --int8 --only unet --runs $runs --warmup 2 \
        --sizes ${BENCH_SIZES:-512,1024} --placements device $flags \
        --json "$out/unet_fusion_device_${fu}_$rep.json" >/dev/null 2>"$logs/fusion_${fu}_$rep.err"
      echo "fusion device $fu rep $rep rc=$?"; tail -n 2 "$logs/fusion_${fu}_$rep.err"
      python3 -c "
import json; j = json.load(open('$out/unet_fusion_device_${fu}_$rep.json'))
for r in j['comparison']:
    u = r['stages']['unet_step']; a = [x for x in r['scratch_arenas'] if x['component'] == 'unet'][0]
    print('device fusion $fu', r['size'], 'median %.3f ms min %.3f ms device arena %.1f MiB' % (u['median_ms'], u.get('min_ms', 0), a.get('device_arena_bytes', 0)/2**20))"
    done
  done
  for fu in on off; do
    flags=""
    [ $fu = off ] && flags="--no-fusion"
    $hyrt bench -m random:sd15 --int8 --only unet --runs 5 --warmup 1 --placement host $flags \
      --json "$out/unet_fusion_host_$fu.json" >/dev/null 2>"$logs/fusion_host_$fu.err"
    echo "fusion host $fu rc=$?"
    python3 -c "
import json; j = json.load(open('$out/unet_fusion_host_$fu.json'))
u = j['stages']['unet_step']; print('host fusion $fu 512 median %.1f ms' % u['median_ms'])"
  done
fi
if [[ $what == *resize* ]]; then
  $hyrt bench -m random:sd15 --int8 --only unet --runs 5 --warmup 2 --placement device \
    --resize --sizes 512,768,1024,512 --json "$out/unet_resize.json" >/dev/null 2>"$logs/resize.err"
  echo "resize rc=$?"
  python3 -c "
import json; j = json.load(open('$out/unet_resize.json'))
for r in j['stages']['unet_step_resize']:
    print(r['size'], 'median %.2f ms, first call %.1f ms, shape change %.1f ms' % (r['median_ms'], r['first_call_ms'], r['shape_change_ms']))"
fi
if [[ $what == *coldstart* ]]; then
  ck=/tmp/hyrt-sd15-random-int8.safetensors
  if [ ! -f $ck ]; then
    $hyrt make-random-checkpoint /tmp/hyrt-sd15-random.safetensors >/dev/null 2>&1
    $hyrt quantize /tmp/hyrt-sd15-random.safetensors $ck >"$logs/quantize.log" 2>&1 ||
      tail -n 3 "$logs/quantize.log"
  fi
  ls -la $ck
  export HYRT_CACHE_DIR=/tmp/hyrt-cache
  rm -rf $HYRT_CACHE_DIR
  # Starts 1-2: no disk cache (untimed GEMM choices); then one --autotune run fills the disk
  # cache; start 3 reads the tuned records.
  for i in 1 2 tune 3; do
    flags=""
    [ "$i" = tune ] && flags="--autotune"
    t0=$(date +%s%N)
    $hyrt bench -m $ck --only unet --runs 5 --warmup 1 --placement device $flags \
      --json "$out/coldstart_$i.json" >/dev/null 2>"$logs/coldstart_$i.err"
    t1=$(date +%s%N)
    python3 -c "
import json; j = json.load(open('$out/coldstart_$i.json')); u = j['stages']['unet_step']
print('start $i: process %.0f ms; load %.0f ms + first step %.0f ms = %.0f ms; median step %.2f ms' % (($t1-$t0)/1e6, j['load_ms'], u['first_call_ms'], j['load_ms'] + u['first_call_ms'], u['median_ms']))"
  done
  ls -la $HYRT_CACHE_DIR
  python3 -c "
import json
for i in ('1', '3'):
    a = json.load(open('$out/coldstart_%s.json' % i))['scratch_arenas'][0]
    print('start', i, 'prepare %.0f ms:' % a['prepare_ms'], ', '.join('%s %.0f' % (k, v['ms']) for k, v in a['prepare_ms_by_op'].items()))"
fi

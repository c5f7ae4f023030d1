#!/usr/bin/env bash
# The floors under issue 21's host targets on this machine: the CPU's peak multiply-add rates
# (cpu_peak.c: f32 FMA, AVX-512 BF16, VNNI, AMX where present, all threads) and the work of
# SD 1.5's UNet step (512², batch 2) and VAE decode (512²) counted from the architecture
# (sd15_flops.py): the time the arithmetic alone needs at each form's peak, to set each time
# target against. Prints JSON.
# Usage: bench/host/cpu_peak.sh   (needs gcc with OpenMP and python3; run on a quiet machine)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
gcc -O2 -march=native -fopenmp "$here/cpu_peak.c" -o "$bin"
python3 "$here/sd15_flops.py" "$("$bin")"

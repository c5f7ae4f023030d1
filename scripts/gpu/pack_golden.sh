#!/usr/bin/env bash
# Packs golden folders of ../shared/golden into .gl/NAME.tar.xz (git-ignored) for a device call:
# `carry: [".deps", ".gl"]`. The carry limit (64 MiB) counts the tracked tree (~31 MB) as well,
# so .deps plus an uncompressed golden folder (sd15-tiny 17 MB, sdxl-tiny 23 MB) plus .whl no
# longer fit; compressed they do (14 and 18 MB). gpu_configure (common.sh) unpacks every
# .gl/*.tar.xz into .gl/golden/ on the GPU machine, where the scripts look for the folders.
# Packs the diffusers folder layout only (model/, golden.*, tokenizer_cases.json): run parity
# with PARITY_ARGS="--layouts folder".
# Usage: scripts/gpu/pack_golden.sh NAME... (e.g. sd15-tiny sdxl-tiny)
set -euo pipefail
cd "$(dirname "$0")/../.."
golden="${HYRT_SHARED_DIR:-../shared}/golden"
mkdir -p .gl
for name in "$@"; do
  [ -d "$golden/$name/model" ] || { echo "pack_golden.sh: no $golden/$name/model" >&2; exit 1; }
  parts=()
  for p in golden.json golden.safetensors model tokenizer_cases.json features.json \
    features.safetensors; do
    [ -e "$golden/$name/$p" ] && parts+=("$name/$p")
  done
  tar -C "$golden" -cf - "${parts[@]}" | xz -T0 -3 >".gl/$name.tar.xz"
  echo "$(du -h ".gl/$name.tar.xz" | cut -f1) .gl/$name.tar.xz"
done

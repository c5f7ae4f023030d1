#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (build-fuzz/) and runs them on scratch copies of their
# seed corpora: the safetensors reader for N seconds (default 60), the key maps for N/2, the
# config, PNG, tokenizer, prompt-syntax, LoRA, TAESD and serve-request parsers for N/4 each. Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! command -v clang++ >/dev/null; then
  echo "fuzz/run.sh: clang++ not found; skipping the fuzz run"
  exit 0
fi
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DHYRT_FUZZ=ON -DHYRT_BUILD_TESTS=OFF \
  -DHYRT_BUILD_BENCH=OFF -DHYRT_WITH_CUDA=OFF >/dev/null
ninja -C build-fuzz safetensors_fuzz ldm_names_fuzz config_json_fuzz png_fuzz tokenizer_fuzz \
  prompt_syntax_fuzz lora_fuzz tiny_vae_fuzz serve_request_fuzz >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r fuzz/corpus/safetensors "$work/st"
cp -r fuzz/corpus/ldm_names "$work/ldm"
cp -r fuzz/corpus/config_json "$work/cfg"
cp -r fuzz/corpus/png "$work/png"
cp -r fuzz/corpus/tokenizer "$work/tok"
cp -r fuzz/corpus/prompt_syntax "$work/prompt"
cp -r fuzz/corpus/lora "$work/lora"
cp -r fuzz/corpus/tiny_vae "$work/tiny_vae"
cp -r fuzz/corpus/serve_request "$work/serve"
short=$(( seconds / 4 > 1 ? seconds / 4 : 1 ))
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/safetensors_fuzz" -max_total_time="$seconds" -max_len=4096 \
  -dict="$OLDPWD/fuzz/safetensors.dict" -print_final_stats=1 st 2>&1 | tail -n 12)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/ldm_names_fuzz" -max_total_time="$((seconds / 2))" \
  -max_len=8192 -print_final_stats=1 ldm 2>&1 | tail -n 6)
# -rss_limit_mb: a parser must refuse a huge declared size, not allocate it.
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/config_json_fuzz" -max_total_time="$short" -max_len=4096 \
  -rss_limit_mb=2048 -print_final_stats=1 cfg 2>&1 | tail -n 6)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/png_fuzz" -max_total_time="$short" -max_len=8192 \
  -rss_limit_mb=2048 -malloc_limit_mb=1024 -print_final_stats=1 png 2>&1 | tail -n 6)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/tokenizer_fuzz" -max_total_time="$short" -max_len=4096 \
  -rss_limit_mb=2048 -print_final_stats=1 tok 2>&1 | tail -n 6)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/prompt_syntax_fuzz" -max_total_time="$short" -max_len=4096 \
  -rss_limit_mb=2048 -print_final_stats=1 prompt 2>&1 | tail -n 6)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/lora_fuzz" -max_total_time="$short" -max_len=4096 \
  -dict="$OLDPWD/fuzz/safetensors.dict" -rss_limit_mb=2048 -print_final_stats=1 lora 2>&1 | tail -n 6)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/tiny_vae_fuzz" -max_total_time="$short" -max_len=4096 \
  -dict="$OLDPWD/fuzz/safetensors.dict" -rss_limit_mb=2048 -print_final_stats=1 tiny_vae 2>&1 | tail -n 6)
(cd "$work" && "$OLDPWD/build-fuzz/fuzz/serve_request_fuzz" -max_total_time="$short" -max_len=8192 \
  -dict="$OLDPWD/fuzz/serve_request.dict" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
  -print_final_stats=1 serve 2>&1 | tail -n 6)
echo "fuzz/run.sh: no findings in ${seconds}s + $((seconds / 2))s + 7 x ${short}s"

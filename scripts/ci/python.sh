#!/usr/bin/env bash
# The Python package in CI: a fresh venv, `pip install .` (the extension through
# scikit-build-core + nanobind from PyPI, compiled with ccache into build-python/), then
# the pytest suite in python/tests, including the parity test against the CLI in
# $HYRT_CLI (default build/tools/hyrt when it exists; skipped with a message otherwise).
#
#   scripts/ci/python.sh
#
# Needs the C++ build dependencies (scripts/build.sh installs them) and installs the
# Debian packages a venv with a compiled extension needs (hyrt_python_packages).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/packages.sh

# A venv needs python3-venv and an extension Python.h (python3-dev); a minimal Debian has no
# python3 at all. Another python3 first on PATH (pyenv, a conda env) brings all three.
python="$(command -v python3 || true)"
if [ -z "$python" ] || [ "$python" = /usr/bin/python3 ]; then
  missing=()
  for p in "${hyrt_python_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

venv=build-python/venv
rm -rf "$venv"
python3 -m venv "$venv"
# ccache (found by CMakeLists.txt) with paths relative to the checkout, so a clone in another
# folder still hits the cache; build-python/ keeps the CMake tree between runs of one clone.
export CCACHE_BASEDIR="$PWD"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
start=$SECONDS
"$venv/bin/pip" install -q --upgrade pip
# The build requirements (pyproject.toml's [build-system] requires) go into the venv and the
# build runs without pip's isolation: an isolated build env lives in a new temporary folder
# each time, and CMake then drops and recompiles every object of build-python/ (with ccache
# hits, ~40 s on 2 cores); with stable paths a rebuild compiles only what changed.
"$venv/bin/python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  > build-python/build-requires.txt
"$venv/bin/pip" install -q -r build-python/build-requires.txt
"$venv/bin/pip" install -q --no-build-isolation .
echo "python.sh: pip install . took $((SECONDS - start)) s"
"$venv/bin/pip" install -q pytest

if [ -z "${HYRT_CLI:-}" ] && [ -x build/tools/hyrt ]; then
  export HYRT_CLI="$PWD/build/tools/hyrt"
fi
# Run outside the checkout so `import hyrt` is the installed package, not python/hyrt.
cd python/tests
OMP_WAIT_POLICY=PASSIVE "../../$venv/bin/python" -m pytest -q -p no:cacheprovider .

#!/usr/bin/env bash
# Proves the README's two commands on a machine with none of hyrt's packages: builds a
# minimal Debian root (mmdebstrap --variant=minbase: apt, dpkg, bash, coreutils and nothing
# else), copies the tracked files of this checkout and ../shared into it, and runs inside it
# with chroot, as a new user would after cloning:
#   scripts/build.sh && build/tools/hyrt generate -p ... -o red_circle.png
#   scripts/test.sh
# Root only (mmdebstrap's root mode, mount, chroot). The root has no CUDA toolkit, so this is
# the host-only build a user without one gets.
#
#   scripts/ci/fresh_root.sh [SUITE]     SUITE: a Debian suite, default bookworm (Debian 12)
#
# Environment: HYRT_FRESH_ROOT (where to build the root; default a new temporary folder,
# removed at exit), HYRT_FRESH_CCACHE (a host folder kept between runs and mounted as the
# root's ccache, so repeated CI runs compile only what changed; default none: a cold build),
# HYRT_FRESH_PYTHON=1 (then also the Python package there: scripts/ci/python.sh makes a fresh
# venv with Debian's python3, runs `pip install .` and its pytest suite; needs PyPI), or
# HYRT_FRESH_PYTHON=host-wheels (the same, with the wheels pip needs downloaded by this host's
# pip for the root's Python and given to the root's pip with --no-index: for a host whose
# PyPI access the root does not share).
set -euo pipefail
cd "$(dirname "$0")/../.."
suite="${1:-bookworm}"
[ "$(id -u)" -eq 0 ] || { echo "fresh_root.sh: needs root (mmdebstrap, mount, chroot)" >&2; exit 2; }

if ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

root="${HYRT_FRESH_ROOT:-$(mktemp -d /tmp/hyrt-fresh-root.XXXXXX)}"
mounts=()
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
  [ -n "${HYRT_FRESH_ROOT:-}" ] || rm -rf --one-file-system "$root"
}
trap cleanup EXIT

echo "fresh_root: making a minimal Debian ($suite) root in $root"
rm -rf --one-file-system "$root"
mmdebstrap --quiet --variant=minbase --mode=root "$suite" "$root"

# The checkout's tracked (and not ignored) files, as a clone has them, and shared/ beside it.
mkdir -p "$root/work/hyrt" "$root/work/shared"
git ls-files -z --cached --others --exclude-standard |
  tar --null -T - -cf - | tar -xf - -C "$root/work/hyrt"
cp -a ../shared/. "$root/work/shared/"

mount -t proc proc "$root/proc" && mounts+=("$root/proc")
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
if [ -n "${HYRT_FRESH_CCACHE:-}" ]; then
  mkdir -p "$HYRT_FRESH_CCACHE" "$root/root/.cache/ccache"
  mount --bind "$HYRT_FRESH_CCACHE" "$root/root/.cache/ccache" && mounts+=("$root/root/.cache/ccache")
fi

echo "fresh_root: packages in the root before the build: $(chroot "$root" dpkg-query -W | wc -l)"
# The README's two commands, verbatim, in a login-like environment.
chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 CCACHE_DIR=/root/.cache/ccache /bin/bash -euo pipefail -c '
  cd /work/hyrt
  scripts/build.sh && build/tools/hyrt generate -p "a red circle on a blue background" --sampler ddim --steps 12 --cfg-scale 5 -s 1 -o red_circle.png
  test -s red_circle.png
  scripts/test.sh
'
echo "fresh_root: the README's two commands passed on a fresh Debian ($suite) root"
if [ -n "${HYRT_FRESH_PYTHON:-}" ]; then
  pip_env=()
  if [ "$HYRT_FRESH_PYTHON" = host-wheels ]; then
    source scripts/packages.sh
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${hyrt_python_packages[@]}" >/dev/null
    pyver="$(chroot "$root" /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    mkdir -p "$root/work/wheels"
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
      > "$root/work/wheels/build-requires.txt"
    python3 -m pip download -q -d "$root/work/wheels" --only-binary=:all: --python-version "$pyver" \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
      -r "$root/work/wheels/build-requires.txt" pip pillow pytest
    pip_env=(PIP_NO_INDEX=1 PIP_FIND_LINKS=/work/wheels)
  fi
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 CCACHE_DIR=/root/.cache/ccache "${pip_env[@]}" /bin/bash -euo pipefail -c '
    cd /work/hyrt
    scripts/ci/python.sh
  '
  echo "fresh_root: pip install . and the Python tests passed on a fresh Debian ($suite) root"
fi

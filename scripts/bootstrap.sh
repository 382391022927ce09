#!/usr/bin/env bash
# Idempotent installer for chaos-hvd's development and CI environment.
#
# Installs what is missing, then exits quickly on later runs:
#   * Debian packages the testbed needs (mininet, iperf3, openssh-server, nftables, iproute2, ...)
#   * a venv (default: <repo>/.venv, override with CHAOS_VENV) with torch==2.13.0 (CPU) -- pinned,
#     because an unpinned torch pulls a multi-GB CUDA build
#   * Horovod 0.28.1 built from the PyPI sdist with Gloo + PyTorch and C++17 forced (torch >= 2.1
#     headers need it; horovod#3996), patched (scripts/horovod-patches/: Gloo wakes every waiter of a
#     failed connection; a world that fails to form makes hvd.init() fail, not abort; an abort
#     entry point for one world's connections). The
#     built wheel is cached in CHAOS_WHEEL_CACHE (default ~/.cache/chaos-hvd/wheels) so a second
#     run -- or a fresh clone on the same host -- does not rebuild it (~2 min on 2 cores).
#   * this project in editable mode, with its test extras.
# Usage: bash scripts/bootstrap.sh        (prints the venv path on its last line)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CHAOS_VENV:-$REPO/.venv}"
WHEELS="${CHAOS_WHEEL_CACHE:-$HOME/.cache/chaos-hvd/wheels}"
TORCH_VERSION="2.13.0"
HOROVOD_VERSION="0.28.1"
PY="${CHAOS_PYTHON:-python3}"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

apt_packages=(mininet iperf3 iputils-ping openssh-server nftables iptables iproute2 ethtool
              libnetfilter-queue-dev libnfnetlink-dev cmake g++ make patch)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages (${missing[*]}); run as root or install them yourself"; exit 1
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # mininet pulls openvswitch-switch; it never starts without a service manager and is not used.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_q() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$VPY" -c "import torch,sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION (CPU)"
  # Pinned: an unpinned torch pulls a multi-GB CUDA build. Hosts whose pip has no CPU wheel at hand
  # can point CHAOS_TORCH_INDEX at https://download.pytorch.org/whl/cpu.
  pip_q "torch==$TORCH_VERSION" ${CHAOS_TORCH_INDEX:+--extra-index-url "$CHAOS_TORCH_INDEX"}
fi

# Horovod, patched (scripts/horovod-patches/, docs/horovod-elastic-internals.md):
# the patch set's hash names the cached wheel and is written next to the installed package with
# a fingerprint of the patched files, so a venv with an older build -- or with another Horovod
# reinstalled over ours, which keeps the marker -- is rebuilt/reinstalled.
PATCHES="$REPO/scripts/horovod-patches"
PATCH_ID=$(cat "$PATCHES"/*.patch | sha256sum | cut -c1-12)
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
horovod_mark() {
  echo "$PATCH_ID $(cat "$SITE/horovod/torch/elastic/__init__.py" "$SITE"/horovod/torch/mpi_lib_v2*.so \
    2>/dev/null | sha256sum | cut -c1-16)"
}
if ! "$VPY" -c "import horovod.torch" 2>/dev/null \
   || [ "$(cat "$SITE/horovod/CHAOS_PATCHES" 2>/dev/null)" != "$(horovod_mark)" ]; then
  wheel_dir="$WHEELS/gloo-patched-$PATCH_ID"
  mkdir -p "$wheel_dir"
  whl=$(ls "$wheel_dir"/horovod-"$HOROVOD_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "building Horovod $HOROVOD_VERSION with Gloo + PyTorch, C++17 forced, patches $PATCH_ID (~2-5 min)"
    pip_q wheel setuptools cmake packaging pyyaml cloudpickle psutil
    tmp=$(mktemp -d)
    # Horovod's CMake sets -std=c++14; torch >= 2.1 headers need C++17. A compiler wrapper wins
    # over every flag CMake adds because its -std comes last.
    cat >"$tmp/cxx17" <<'W'
#!/bin/sh
exec g++ "$@" -std=c++17
W
    chmod +x "$tmp/cxx17"
    (
      cd "$tmp"
      "$VPY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        "horovod==$HOROVOD_VERSION" -d sdist
      tar xzf sdist/horovod-"$HOROVOD_VERSION".tar.gz
      cd horovod-"$HOROVOD_VERSION"
      for p in "$PATCHES"/*.patch; do
        patch -p1 --forward --quiet <"$p"
      done
      CXX="$tmp/cxx17" MAKEFLAGS="-j$(nproc)" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 \
      HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
      HOROVOD_CPU_OPERATIONS=GLOO \
        "$VPY" -m pip wheel -q --no-deps --no-build-isolation . -w "$wheel_dir"
    )
    rm -rf "$tmp"
    whl=$(ls "$wheel_dir"/horovod-"$HOROVOD_VERSION"-*.whl | head -n1)
  fi
  log "installing $whl"
  pip_q --force-reinstall --no-deps "$whl"
  horovod_mark >"$SITE/horovod/CHAOS_PATCHES"
fi

# Debian's mininet lives in the system dist-packages; expose only that package to the venv.
if [ -d /usr/lib/python3/dist-packages/mininet ] && ! "$VPY" -c "import mininet" 2>/dev/null; then
  mkdir -p "$VENV/debian-mininet"
  ln -sfn /usr/lib/python3/dist-packages/mininet "$VENV/debian-mininet/mininet"
  echo "$VENV/debian-mininet" >"$SITE/debian-mininet.pth"
fi

if ! "$VPY" -c "import chaos_hvd, testbed, yaml, msgspec, pyroute2, hypothesis, scipy, netfilterqueue, matplotlib, rich, uvloop" 2>/dev/null \
   || ! [ -x "$VENV/bin/chaos-testbed" ]; then
  log "installing chaos-hvd (editable) with test and testbed extras"
  pip_q -e "$REPO[test,testbed]"
fi
echo "$VENV"

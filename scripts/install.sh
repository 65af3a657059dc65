#!/usr/bin/env bash
# Install everything Whisper Atlas needs into .venv on a fresh Debian/Ubuntu machine.
#   scripts/install.sh          runtime: Python deps (CPU torch), the local htmx copy
#   scripts/install.sh --dev    also test tools: pytest & co, ctranslate2, Debian chromium (browser tests), wrk
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() {
  # Install Debian packages that are missing; apt lists are refreshed at most once per run.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { echo "error: please install ${missing[*]} with your package manager" >&2; exit 1; }
  say "apt-get install ${missing[*]}"
  if [ -z "${APT_UPDATED:-}" ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { echo "error: could not install ${missing[*]} (need root or sudo)" >&2; exit 1; }
}

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
"$PYTHON" -m venv --help >/dev/null 2>&1 && "$PYTHON" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
command -v npm >/dev/null || apt_install nodejs npm

if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

# torch first and pinned: a plain `torch` requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null \
  || { say "installing torch==$TORCH_VERSION"; "${PIP[@]}" "torch==$TORCH_VERSION"; }

EXTRAS=""
[ $DEV = 1 ] && EXTRAS="[dev]"
say "installing whisper-atlas$EXTRAS"
"${PIP[@]}" -e ".$EXTRAS" "torch==$TORCH_VERSION"

say "installing frontend assets (npm)"
npm ci --silent --no-audit --no-fund >/dev/null
"$VENV/bin/python" -m backend.vendor

if [ $DEV = 1 ]; then
  command -v chromium >/dev/null || apt_install chromium
  command -v wrk >/dev/null || apt_install wrk  # the load generator of benchmarks/server_bench.py
fi
say "install complete"

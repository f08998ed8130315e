#!/usr/bin/env bash
# Installs what Attendant needs on a fresh Debian machine and prepares the
# models. Idempotent: every step checks before it acts, so a second run is
# quick. Needs root or sudo only when Debian packages are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

# Debian packages: C/C++ toolchain for whisper.cpp, libclang for bindgen,
# espeak-ng-data for Piper's phonemizer, sox/espeak-ng for fixtures, sipp for
# SIP tests, kamailio for the cluster test, python3-venv for the model
# converter.
need_pkgs=()
check() { dpkg -s "$1" >/dev/null 2>&1 || need_pkgs+=("$1"); }
for p in build-essential cmake pkg-config libclang-dev clang espeak-ng espeak-ng-data sox sip-tester \
         python3 python3-venv python3-pip git curl ca-certificates chromium kamailio; do
  check "$p"
done
# Node.js drives Chromium in the browser tests (any recent one will do).
command -v node >/dev/null || { check nodejs; check npm; }
if ((${#need_pkgs[@]})); then
  log "installing Debian packages: ${need_pkgs[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # Kamailio is here for the cluster test (it starts its own); the package's
  # system service would listen on port 5060 with Debian's sample config.
  if [[ " ${need_pkgs[*]} " == *" kamailio "* ]] && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now kamailio >/dev/null 2>&1 || true
  fi
fi

# playwright-core for the browser tests (it uses Debian's Chromium; no
# browser download).
if [[ ! -d web/tests/node_modules/playwright-core ]]; then
  log "installing playwright-core into web/tests"
  npm ci --prefix web/tests --no-audit --no-fund --silent
fi

# The one minimum Rust version: Cargo.toml's rust-version.
need_rust="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)"
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs, $need_rust or newer) and re-run" >&2
  exit 1
fi
have_rust="$(rustc --version | awk '{print $2}')"
if [[ "$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n1)" != "$need_rust" ]]; then
  echo "Rust $have_rust is too old: Attendant needs $need_rust or newer (rustup update)" >&2
  exit 1
fi

# The converter runs in its own virtualenv so system Python stays untouched.
venv=models/.venv
if [[ ! -x $venv/bin/python ]]; then
  log "creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import numpy, onnx" 2>/dev/null; then
  log "installing numpy and onnx into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check numpy onnx
fi

"$venv/bin/python" models/fetch.py "$@"

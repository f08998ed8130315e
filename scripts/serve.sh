#!/usr/bin/env bash
# Starts Attendant with the embedded defaults (127.0.0.1:8080), installing
# and preparing whatever is missing first. Extra arguments go to
# `attendant serve`, e.g. scripts/serve.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."
# --with-base: the multilingual models the bank agent identifies, hears and
# understands Spanish with (Whisper base, multilingual-e5-small), and the
# Kokoro voice one can give it.
scripts/setup.sh --with-base
cargo build --release --locked
exec target/release/attendant serve "$@"

#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and end-to-end calls
# against a real server with real models. Reads ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo build --release --locked
audio-fixtures/make.sh target/release/attendant
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked -- --test-threads 2

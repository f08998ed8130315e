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
# The database-backed tests again on PostgreSQL (each test gets its own
# database on it): the store, every agent conversation test, the scenarios.
DATABASE_URL="$(scripts/postgres.sh)"
export DATABASE_URL
cargo test --release --locked --lib store::
cargo test --release --locked --test agents every_demo_agent
cargo test --release --locked --test scenarios -- --test-threads 2

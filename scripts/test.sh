#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and end-to-end calls
# against a real server with real models. Reads ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
# --with-base: the multilingual models (Whisper base identifies a caller's
# language; multilingual-e5-small understands Spanish; Kokoro-82M can speak
# it). --with-mpnet: the larger English encoder an agent can pick
# (`nlu.encoder`).
scripts/setup.sh --with-base --with-mpnet
cargo fmt --all -- --check
# One build of everything the tests use, the server binary included. Built by
# `cargo test`, the binary has the dependency features the test build unifies
# (dev-dependencies turn some on); a separate `cargo build` has others, so the
# next step would compile ~30 crates and the server a second time.
cargo test --release --locked --no-run
audio-fixtures/make.sh target/release/attendant
cargo clippy --release --locked --all-targets -- -D warnings
# A local PostgreSQL: the cluster test's nodes share a database on it, and
# the database-backed tests run on it again below.
pg_url="$(scripts/postgres.sh)"
if [[ ! $pg_url =~ ^postgres://[^[:space:]]+$ ]]; then
  echo "scripts/postgres.sh gave no PostgreSQL URL: [$pg_url]" >&2
  exit 1
fi
CLUSTER_DATABASE_URL="$pg_url" cargo test --release --locked -- --test-threads 2
# The database-backed tests again on PostgreSQL (each test gets its own
# database on it): the store, every agent conversation test, the scenarios.
DATABASE_URL="$pg_url"
export DATABASE_URL
cargo test --release --locked --lib store::
cargo test --release --locked --test e2e agents::every_demo_agent
cargo test --release --locked --test e2e scenarios:: -- --test-threads 2

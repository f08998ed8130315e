#!/usr/bin/env bash
# Installs (Debian's postgresql), starts a local PostgreSQL and makes a role
# that may create databases, then prints its URL. The test suite runs the
# store, agent and scenario tests against it a second time. Idempotent.
#   DATABASE_URL=$(scripts/postgres.sh) cargo test --test e2e scenarios::
set -euo pipefail
log() { printf '[postgres] %s\n' "$*" >&2; }
# Only the URL goes to stdout: callers capture it, and pg_ctlcluster and
# friends print notes there ("Removed stale pid file.") that would end up in
# front of it. The function's output goes to stderr instead (not through a
# saved descriptor: the server it starts would inherit that and hold the
# caller's $(…) open forever).
start() {
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"

  if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    log "installing postgresql"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      postgresql postgresql-contrib >/dev/null
  fi

  # Debian's wrapper: one cluster per version, created by the package.
  if ! pg_lsclusters -h | grep -q .; then
    ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
    log "creating cluster $ver/main"
    $SUDO pg_createcluster "$ver" main >/dev/null
  fi
  read -r ver name port status _ < <(pg_lsclusters -h | head -1)
  if [[ $status != online* ]]; then
    log "starting cluster $ver/$name on port $port"
    $SUDO pg_ctlcluster "$ver" "$name" start
  fi

  as_pg() {
    if [[ $(id -u) -eq 0 ]]; then (cd /tmp && runuser -u postgres -- "$@"); else (cd /tmp && sudo -u postgres "$@"); fi
  }
  for _ in $(seq 1 30); do
    as_pg psql -p "$port" -qtAc "select 1" >/dev/null 2>&1 && break
    sleep 1
  done
  if ! as_pg psql -p "$port" -qtAc "select 1 from pg_roles where rolname='attendant'" | grep -q 1; then
    log "creating role attendant"
    as_pg psql -p "$port" -qc "create role attendant login createdb password 'attendant'"
  fi
  if ! as_pg psql -p "$port" -qtAc "select 1 from pg_database where datname='attendant'" | grep -q 1; then
    as_pg psql -p "$port" -qc "create database attendant owner attendant"
  fi
}
start >&2
echo "postgres://attendant:attendant@127.0.0.1:$port/attendant"

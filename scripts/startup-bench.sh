#!/usr/bin/env bash
# Start-up figures: `attendant serve` (embedded defaults, a fresh SQLite
# store, SIP off) from launch until /healthz answers 200, which is after the
# models and agents are loaded and the fixed prompts are synthesised.
#   cold: the derived files (prompt audio in models/cache/tts, embeddings of
#         the agents' fixed texts in models/nlu/cache) moved aside first, as
#         on a node's first start;
#   warm: with them present, as on every restart after.
# Prints the wall time and the server's own parts (its log lines "agent
# loaded", "models loaded", "prompt cache warm"). RUNS warm starts (default 3).
#   scripts/startup-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/attendant
[[ -x $BIN ]] || cargo build --release --locked
runs="${RUNS:-3}"
work=$(mktemp -d)
aside="$work/aside"
mkdir -p "$aside"
restore() {
  for d in tts nlu; do
    if [[ -d $aside/$d ]]; then
      target=models/cache/tts
      [[ $d == nlu ]] && target=models/nlu/cache
      rm -rf "$target"
      mv "$aside/$d" "$target"
    fi
  done
  rm -rf "$work"
}
trap restore EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

one() { # label
  local p log db start end pid
  p=$(port)
  log="$work/$1.log"
  db="$work/$1-$RANDOM.db"
  start=$(date +%s%N)
  ATTENDANT__STORE__URL="sqlite://$db" ATTENDANT__SIP__ENABLED=false RUST_LOG=info \
    "$BIN" serve --listen "127.0.0.1:$p" >"$log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$p/healthz" >/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "server exited; its log: $log" >&2
      tail -20 "$log" >&2
      exit 1
    fi
    sleep 0.05
  done
  end=$(date +%s%N)
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  # The server's own figures, from its log lines.
  local agent models prompts plain="$work/$1.txt"
  sed -E 's/\x1b\[[0-9;]*m//g' "$log" >"$plain"
  ms() { grep -a "$1" "$plain" | grep -av extra | head -1 | sed -nE 's/.* ms=([0-9]+).*/\1/p'; }
  agent=$(ms 'agent loaded')
  models=$(ms 'models loaded')
  prompts=$(ms 'prompt cache warm')
  printf '%-6s ready %6d ms   agent %6s ms   models %6s ms   prompts %6s ms\n' \
    "$1" $(((end - start) / 1000000)) "${agent:--}" "${models:--}" "${prompts:--}"
}

[[ -d models/cache/tts ]] && mv models/cache/tts "$aside/tts"
[[ -d models/nlu/cache ]] && mv models/nlu/cache "$aside/nlu"
one cold
# The cold start wrote the derived files again; the warm starts read them.
for i in $(seq "$runs"); do one warm; done
# Keep what the cold start made again (the originals go back only when a
# run stops early).
rm -rf "$aside"/*

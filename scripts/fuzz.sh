#!/usr/bin/env bash
# Fuzzes every network parser (tests/e2e/fuzz.rs) for longer than the test
# suite does: FUZZ_CASES cases per target (default 200000), seed corpus from
# ../shared/data. Prints each target's executions and time; a crash prints
# the minimal failing input and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${FUZZ_CASES:-200000}"
cargo test --release --test e2e --no-run >/dev/null 2>&1
for target in sip_parser sip_core sdp_parser digest_header rtp_rtcp_and_events twilio_messages webrtc_offer; do
    start=$(date +%s%N)
    FUZZ_CASES="$cases" cargo test --release --quiet --test e2e "fuzz::$target" -- --exact >/dev/null
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    printf '%-22s %8d executions, %6d ms, 0 crashes\n' "$target" "$cases" "$ms"
done

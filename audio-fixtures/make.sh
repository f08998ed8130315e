#!/usr/bin/env bash
# Generates the caller-side audio fixtures used by the tests, with espeak-ng
# and sox (Debian packages espeak-ng, sox). Idempotent: files that exist are
# kept. The outputs are 8 kHz mono WAVs, like phone audio.
set -euo pipefail
cd "$(dirname "$0")"
say() { # name text [voice]
  local out="$1.wav" text="$2" voice="${3:-en-us}"
  [[ -s "$out" ]] && return
  espeak-ng -v "$voice" -s 150 -w "$1.raw.wav" "$text"
  # Phone band, 8 kHz, a little headroom, 150 ms lead-in.
  sox "$1.raw.wav" -r 8000 -c 1 -b 16 "$out" pad 0.15 0 gain -n -3
  rm -f "$1.raw.wav"
}
say faq_hours "What are your opening hours on Saturday?"
say faq_address "Where is your office located?"
say goodbye "Thank you, goodbye."
say interrupt "Wait, wait, I have a different question about my order."
# A short "hm" under 200 ms: a backchannel/cough-like sound that must not interrupt.
if [[ ! -s short_hm.wav ]]; then
  espeak-ng -v en-us -s 200 -w hm.raw.wav "hm"
  sox hm.raw.wav -r 8000 -c 1 -b 16 short_hm.wav trim 0 0.18 gain -n -3
  rm -f hm.raw.wav
fi

#!/usr/bin/env bash
# Generates the caller-side audio fixtures the tests use. Spoken lines come
# from our own Piper voice (`attendant say`, 8 kHz like a phone line); the
# short "hm" comes from espeak-ng + sox (Debian packages espeak-ng, sox).
# Spanish callers (loadtest/bank_es.yaml) are spoken by the Kokoro voice
# (`scripts/setup.sh --with-base`) with another speaker than the bot's.
# Idempotent: existing files are kept. Run from anywhere:
#   audio-fixtures/make.sh [path/to/attendant]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../target/release/attendant}"
cd "$here/.."
say() { # name text
  local out="audio-fixtures/$1.wav"
  [[ -s "$out" ]] && return
  "$bin" say "$2" --out "$out" >/dev/null
}
say faq_hours "What are your opening hours on Saturday?"
say faq_address "Where is your office located?"
say goodbye "Thank you, goodbye."
say interrupt "Wait, wait. I have a different question about my order."
# A "hm" of 180 ms: a backchannel/cough-like sound that must not interrupt.
if [[ ! -s audio-fixtures/short_hm.wav ]]; then
  tmp="$(mktemp --suffix=.wav)"
  espeak-ng -v en-us -s 200 -w "$tmp" "hm"
  sox "$tmp" -r 8000 -c 1 -b 16 audio-fixtures/short_hm.wav trim 0 0.18 gain -n -3
  rm -f "$tmp"
fi
# The late-order scenario (tests/e2e/scenarios.rs): a first call about the order,
# then an annoyed second call.
say order_where "Hi, I'm calling to check where my order is."
say order_bye "Okay, thanks. Bye."
say balance "What is the balance of my account?"
say csat_four "Four."
say order_annoyed "This is the second time I'm calling. My headphones still haven't arrived, and I'm really fed up."
# Spanish callers for loadtest/bank_es.yaml: Kokoro's female `jf_alpha`,
# so the caller is not the bot's own voice (`jm_kumo`). espeak-ng's Spanish,
# used before, came back from Whisper base as other words ("¿A qué hora
# abren…?" as "a que lo hago en la oficia los vamos"), so that caller was
# never understood.
say_es() { # name text
  local out="audio-fixtures/$1.wav"
  [[ -s "$out" ]] && return
  ATTENDANT__TTS__VOICES__ES="kokoro:es-419:jf_alpha" \
    "$bin" say --language es "$2" --out "$out" >/dev/null
}
say_es es_saldo "Quiero saber mi saldo, por favor."
say_es es_horario "Hola, buenas tardes. ¿A qué hora abren la oficina los sábados?"
say_es es_agente "Quiero hablar con un agente, por favor."
say_es es_adios "Nada más, gracias. Adiós."
# …and for loadtest/retailer_es.yaml.
say_es es_pedido "Hola. ¿Dónde está mi pedido?"
say_es es_devolver "Quiero devolver unas zapatillas."

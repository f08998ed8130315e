#!/usr/bin/env bash
# Language identification figures: which of English and Spanish a caller
# speaks, from the first 10 s (or less) of a turn, as Attendant would hear it
# on a phone line (every recording is taken to 8 kHz first).
#   English: real recordings from ../shared/data/speech (OSR telephone
#            sentences, JFK, CMU commands, 40 FSDD spoken digits).
#   Spanish: no real Spanish recording is available here; sentences a
#            caller might say are synthesised with espeak-ng (two voices),
#            and the same is done in English as a check that synthetic
#            speech alone does not sway the detector.
#   scripts/langid-bench.sh [extra `attendant eval langid` flags]
# Needs the multilingual model: scripts/setup.sh --with-base.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/attendant
S=../shared/data/speech
[[ -x $BIN ]] || cargo build --release --locked
[[ -f models/ggml-base.bin ]] || scripts/setup.sh --with-base >&2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
phone() { sox "$1" -r 8000 -c 1 -b 16 "$2" 2>/dev/null; }
m=$out/manifest.csv
echo "path,language" >"$m"
n=0
add() { # source language
  n=$((n + 1))
  phone "$1" "$out/$n.wav"
  echo "$n.wav,$2" >>"$m"
}
add $S/osr_8k/OSR_us_000_0034_8k.wav en
add $S/whisper_jfk/jfk.flac en
add $S/cmu/goforward.wav en
for f in $S/cmu/cards/*.wav; do add "$f" en; done
for f in $(ls $S/fsdd/*.wav | sort | awk 'NR % 50 == 1'); do add "$f" en; done
es=(
  "Hola, quiero saber el saldo de mi cuenta."
  "He perdido mi tarjeta de crédito y necesito bloquearla."
  "¿Cuál es el horario de atención de las oficinas?"
  "Quiero hablar con un agente, por favor."
  "No reconozco un cargo en mi tarjeta de ayer."
  "¿Dónde está mi pedido? Lo compré hace una semana."
  "Necesito cambiar la dirección de mi casa."
  "Me cobraron dos veces la misma compra."
  "Mi número de cliente es cuatro, siete, dos, nueve."
  "Sí, gracias, eso es todo."
)
en=(
  "Hello, I would like to know the balance of my account."
  "I lost my credit card and I need to block it."
  "What are your opening hours?"
  "I want to talk to an agent, please."
  "I do not recognise a charge on my card from yesterday."
  "Where is my order? I bought it a week ago."
  "I need to change my home address."
  "I was charged twice for the same purchase."
  "My customer number is four, seven, two, nine."
  "Yes, thanks, that is all."
)
for voice in es es-419; do
  for t in "${es[@]}"; do
    espeak-ng -v $voice -w "$out/tts.wav" "$t"
    add "$out/tts.wav" es
  done
done
for voice in en-us en-gb; do
  for t in "${en[@]}"; do
    espeak-ng -v $voice -w "$out/tts.wav" "$t"
    add "$out/tts.wav" en
  done
done
"$BIN" eval langid --manifest "$m" "$@"

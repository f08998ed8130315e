#!/usr/bin/env bash
# SIP load benchmark with sipp (Debian sip-tester) against a real server with
# real models on this machine. Prints two figures:
#   1. call setups per second answered with 0 failures (INVITE → 200 → ACK,
#      1 s of media, BYE), trying faster rates until one fails;
#   2. concurrent calls held with media flowing: N callers each play a real
#      recording as RTP for the hold time while the server runs the whole
#      pipeline; counted from the server's RTP counters over a 10 s window
#      (each call should move 50 packets/s each way).
# Usage: scripts/sip-bench.sh [RATES] [LEVELS]   e.g. "5 10 20" "10 20 40"; "" skips a part
# Needs target/release/attendant (cargo build --release) and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
rates="${1-5 10 20 40}"
levels="${2-10 20 40}"
bin=target/release/attendant
[[ -x $bin ]] || { echo "build first: cargo build --release" >&2; exit 1; }
command -v sipp >/dev/null || { echo "sipp missing: apt-get install sip-tester" >&2; exit 1; }
pcap="$(cd ../shared/data/sipp/sipp_upstream/pcap && pwd)/g711a.pcap"
[[ -f $pcap ]] || { echo "../shared/data not found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sip_port=$(port); http_port=$(port)
cat > "$work/sip.toml" <<TOML
[listen]
udp = ["127.0.0.1:$sip_port"]
tcp = []
[media]
rtp_ports = [20000, 40000]
codecs = ["pcma", "pcmu"]
[[trunks]]
name = "bench"
sources = ["127.0.0.1/32"]
TOML

ATTENDANT__SIP__CONFIG="\"$work/sip.toml\"" \
ATTENDANT__STORE__URL="\"sqlite://$work/bench.db\"" \
LD_LIBRARY_PATH=models/lib ATTENDANT_LOG=warn \
  "$bin" serve --listen "127.0.0.1:$http_port" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 240); do
  curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null && break
  sleep 0.5
done
curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null || { tail -20 "$work/server.log"; exit 1; }

scenario() { # file plays pause_ms: the 7 s recording played `plays` times
  local media=""
  for _ in $(seq "$2"); do
    media+="<nop><action><exec play_pcap_audio=\"$pcap\"/></action></nop><pause milliseconds=\"$3\"/>"
  done
  cat > "$1" <<XML
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench">
<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:bench@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
]]></send>
<recv response="100" optional="true"/>
<recv response="200" rtd="true"/>
<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:bench@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0
]]></send>
$media
<send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:bench@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Content-Length: 0
]]></send>
<recv response="200"/>
</scenario>
XML
}

# sipp's final statistics line for a counter ("Successful call" etc.).
stat() { grep -E "^\s*$1" "$2" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}'; }
metric() { curl -sf "http://127.0.0.1:$http_port/metrics" | awk -v m="$1" '$1==m {print $2}'; }

run_sipp() { # scenario rate calls limit
  local screen="$work/screen.log"
  rm -f "$work"/*_screen.log
  sipp "127.0.0.1:$sip_port" -sf "$1" -s 1000 -r "$2" -m "$3" -l "$4" -i 127.0.0.1 \
    -p "$(port)" -mp "$(port)" -nostdin -timeout 300s -trace_screen -screen_file "$screen" \
    >/dev/null 2>&1 || true
  echo "$(stat 'Successful call' "$screen") $(stat 'Failed call' "$screen")"
}

echo "== call setups per second (1 s calls, 10 s of calls per rate) =="
scenario "$work/short.xml" 1 1000
best=0
for r in $rates; do
  read -r ok failed < <(run_sipp "$work/short.xml" "$r" $((r * 10)) $((r * 4)))
  echo "rate $r/s: ${ok:-0} answered, ${failed:-?} failed"
  if [[ ${failed:-1} == 0 && ${ok:-0} == $((r * 10)) ]]; then best=$r; else break; fi
  sleep 3
done
echo "highest setup rate with 0 failures: $best calls/s"

echo "== concurrent calls held with media flowing (30 s calls) =="
scenario "$work/hold.xml" 4 7500
for n in $levels; do
  sent0=$(metric attendant_rtp_packets_sent_total); recv0=$(metric attendant_rtp_packets_received_total)
  ( run_sipp "$work/hold.xml" 20 "$n" "$n" > "$work/hold.out" ) &
  sipp_pid=$!
  sleep $((n / 20 + 8))
  active=$(curl -sf "http://127.0.0.1:$http_port/sip" | python3 -c 'import json,sys; print(json.load(sys.stdin)["active_calls"])')
  # Timestamps come with the samples: under load /metrics answers slowly.
  t1=$(date +%s.%N); s1=$(metric attendant_rtp_packets_sent_total); r1=$(metric attendant_rtp_packets_received_total)
  sleep 10
  t2=$(date +%s.%N); s2=$(metric attendant_rtp_packets_sent_total); r2=$(metric attendant_rtp_packets_received_total)
  wait $sipp_pid
  read -r ok failed < "$work/hold.out"
  python3 - "$n" "$active" "$s1" "$s2" "$r1" "$r2" "${ok:-0}" "${failed:-?}" "$t1" "$t2" <<'PY'
import sys
n, active = int(sys.argv[1]), int(sys.argv[2])
s1, s2, r1, r2 = map(float, sys.argv[3:7])
ok, failed = sys.argv[7], sys.argv[8]
dt = float(sys.argv[10]) - float(sys.argv[9])
sent = (s2 - s1) / dt / max(active, 1)
print(f"{n} callers: {active} calls up at once, bot RTP {sent:.1f} packets/s per call "
      f"(50 expected), caller RTP in {(r2 - r1) / dt / max(active, 1):.1f} packets/s per call "
      f"(the recording has 33); window {dt:.1f} s; sipp {ok} ok, {failed} failed")
PY
  sleep 8
  i1=$(metric attendant_rtp_packets_sent_total); sleep 5; i2=$(metric attendant_rtp_packets_sent_total)
  echo "   after the calls: $(curl -sf "http://127.0.0.1:$http_port/sip" | python3 -c 'import json,sys; print(json.load(sys.stdin)["active_calls"])') calls up, bot RTP $(( (${i2%.*} - ${i1%.*}) / 5 )) packets/s"
done

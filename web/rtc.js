// WebRTC helpers shared by the caller page (/) and the agent desk (/desk).

// Records what this side hears (16-bit mono WAV at the context's rate), so a
// test can transcribe it; costs nothing noticeable on a real call. Returns a
// function giving the recording so far, base64-encoded.
export function recordHeard(stream) {
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(stream);
  const proc = ctx.createScriptProcessor(4096, 1, 1);
  const chunks = [];
  proc.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
  src.connect(proc); proc.connect(ctx.destination);
  return () => {
    const n = chunks.reduce((a, c) => a + c.length, 0);
    const buf = new DataView(new ArrayBuffer(44 + n * 2));
    const w = (o, s) => [...s].forEach((c, i) => buf.setUint8(o + i, c.charCodeAt(0)));
    w(0, 'RIFF'); buf.setUint32(4, 36 + n * 2, true); w(8, 'WAVEfmt ');
    buf.setUint32(16, 16, true); buf.setUint16(20, 1, true); buf.setUint16(22, 1, true);
    buf.setUint32(24, ctx.sampleRate, true); buf.setUint32(28, ctx.sampleRate * 2, true);
    buf.setUint16(32, 2, true); buf.setUint16(34, 16, true); w(36, 'data'); buf.setUint32(40, n * 2, true);
    let o = 44;
    for (const c of chunks) for (const x of c) { buf.setInt16(o, Math.max(-1, Math.min(1, x)) * 32767, true); o += 2; }
    let s = ''; const u = new Uint8Array(buf.buffer);
    for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));
    return btoa(s);
  };
}

// Offers the microphone (and a data channel) to `url`, WHIP style: POST the
// SDP offer, get the answer. Returns { pc, chan, sender, location }.
// `on.track(stream)`, `on.message(obj)` and `on.state(connectionState)` follow the call.
export async function dial(url, on) {
  const conf = await (await fetch('/webrtc/config')).json();
  const mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  const pc = new RTCPeerConnection({ iceServers: conf.iceServers || [] });
  const sender = pc.addTrack(mic.getAudioTracks()[0], mic);
  const chan = pc.createDataChannel('attendant');
  chan.onmessage = (e) => { try { on.message(JSON.parse(e.data)); } catch (_) { /* not ours */ } };
  pc.ontrack = (e) => on.track(e.streams[0] || new MediaStream([e.track]));
  pc.onconnectionstatechange = () => on.state(pc.connectionState);
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/sdp' }, body: pc.localDescription.sdp });
  if (res.status !== 201) { pc.close(); throw new Error((await res.text()).trim() || res.statusText); }
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  return { pc, chan, sender, location: res.headers.get('location') };
}

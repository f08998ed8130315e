//! A SIP caller: places a call to a server over SIP/UDP with our own sans-IO
//! `SipCore` as the calling side (the UAC that also calls agents for
//! bridged transfers), sends its script as G.711 RTP through the shared
//! 20 ms `Pacer` (`rtp::Outbound`), keys as RFC 4733 events, and times
//! what it hears with the same `ScriptedCaller` as the WebRTC caller. It
//! returns the same `CallReport`, so `attendant loadtest --transport sip`
//! compares with Twilio and WebRTC in one report.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::script::{Act, ScriptedCaller, KEY_GAP_MS};
use super::{attach_record, http_base, CallOptions, CallReport, ClientError};
use crate::media::{alaw, mulaw};
use crate::transport::playout::Playout;
use crate::transport::rtp::outbound::{Outbound, Sent};
use crate::transport::rtp::{self, dtmf};
use crate::transport::sip::core::OutboundCall;
use crate::transport::sip::sdp::Codec;
use crate::transport::sip::{Event, Peer, SipConfig, SipCore, Transport};

/// The address this machine uses to reach `to` (no packet is sent).
fn local_ip_towards(to: SocketAddr) -> std::io::Result<IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(to)?;
    Ok(probe.local_addr()?.ip())
}

/// The server's SIP/UDP address from `GET /sip` (needs an ops token).
pub async fn discover(base: &str, token: Option<&str>) -> Result<SocketAddr, ClientError> {
    let url = format!("{}/sip", http_base(base));
    let token = token.map(str::to_string);
    let err = |reason: String| ClientError::Connect {
        url: url.clone(),
        reason,
    };
    let u = url.clone();
    let v: serde_json::Value = tokio::task::spawn_blocking(move || {
        let mut req = ureq::get(&u).timeout(Duration::from_secs(5));
        if let Some(t) = token {
            req = req.set("authorization", &format!("Bearer {t}"));
        }
        req.call()
            .map_err(|e| e.to_string())?
            .into_json::<serde_json::Value>()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| err(e.to_string()))?
    .map_err(&err)?;
    v["udp"][0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| err("the server listens on no SIP/UDP address".into()))
}

/// Calls `number` at the SIP server `sip` and plays `opts.script` (`Steps`
/// or `Turns`); `opts.url` is the server's HTTP base, for its call record.
pub async fn run_call(
    opts: CallOptions,
    sip: SocketAddr,
    number: &str,
) -> Result<CallReport, ClientError> {
    let base = http_base(&opts.url);
    let connect = |reason: String| ClientError::Connect {
        url: format!("sip:{number}@{sip}"),
        reason,
    };
    let Some(mut script) = ScriptedCaller::new(&opts.script, opts.linger_ms) else {
        return Err(connect("only scripted steps or turns run over SIP".into()));
    };
    let ip = local_ip_towards(sip).map_err(|e| connect(e.to_string()))?;
    let sig = UdpSocket::bind((ip, 0))
        .await
        .map_err(|e| connect(e.to_string()))?;
    let media = UdpSocket::bind((ip, 0))
        .await
        .map_err(|e| connect(e.to_string()))?;
    let sig_local = sig.local_addr().map_err(|e| connect(e.to_string()))?;
    let media_local = media.local_addr().map_err(|e| connect(e.to_string()))?;
    let peer = Peer {
        addr: sip,
        transport: Transport::Udp,
        local: sig_local,
    };
    // A core of our own, listening where we send from; it offers PCMU,
    // PCMA and telephone-events, as its defaults say.
    let cfg = SipConfig::parse(
        &format!("[listen]\nudp = [\"{sig_local}\"]\n"),
        "sip caller",
    )
    .map_err(|e| connect(e.to_string()))?;
    let mut core = SipCore::new(cfg);
    let t0 = Instant::now();
    let from: String = opts
        .from
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    let id = core
        .invite(
            t0,
            OutboundCall {
                uri: format!("sip:{number}@{sip}"),
                peer,
                local_media: media_local,
                from_user: (!from.is_empty()).then_some(from),
                from_display: None,
                headers: Vec::new(),
                ring_timeout: Duration::from_secs(30),
            },
        )
        .map_err(|e| connect(e.to_string()))?;
    let mut rep = CallReport::new(id.clone(), id.clone());
    // Once answered: where RTP goes, our stream, its payload types.
    let mut line: Option<(SocketAddr, Outbound, u8, bool, Option<u8>)> = None;
    let mut event_seq: u16 = fastrand::u16(..);
    let mut sig_buf = vec![0u8; 8192];
    let mut rtp_buf = vec![0u8; 2048];
    let mut ended = false;
    loop {
        let now = Instant::now();
        let now_ms = now.duration_since(t0).as_millis() as u64;
        core.handle_timeout(now);
        while let Some(t) = core.poll_transmit() {
            let _ = sig.send_to(&t.data, t.to.addr).await;
        }
        while let Some(ev) = core.poll_event() {
            match ev {
                Event::Media {
                    remote, negotiated, ..
                } if line.is_none() => {
                    let alaw = negotiated.codec == Codec::Pcma;
                    let pt = negotiated.codec.payload_type();
                    let mut out = Outbound::new(
                        fastrand::u32(..),
                        fastrand::u16(..),
                        fastrand::u32(..),
                        pt,
                        alaw,
                    );
                    out.start(now);
                    let to = SocketAddr::new(remote.addr, remote.port);
                    line = Some((to, out, pt, alaw, negotiated.dtmf_pt));
                    rep.connect_ms = Some(now_ms);
                }
                Event::Ended { .. } => {
                    ended = true;
                    rep.closed_by_server = Some(1000);
                }
                _ => {}
            }
        }
        if ended || now_ms > opts.max_secs * 1000 {
            break;
        }
        if let Some((to, out, _, _, dtmf_pt)) = line.as_mut() {
            while let Some(sent) = out.poll(now) {
                if let Sent::Packet(p) = sent {
                    let _ = media.send_to(&p, *to).await;
                }
            }
            match script.poll(now_ms) {
                Some(Act::Say(ulaw)) => out.send_audio(1, &ulaw),
                Some(Act::Keys(keys)) => {
                    for (i, k) in keys.chars().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(KEY_GAP_MS)).await;
                        }
                        let (Some(pt), Some(payloads)) = (*dtmf_pt, dtmf::event_payloads(k, 100))
                        else {
                            continue;
                        };
                        let ts = out.rtp_timestamp(Instant::now());
                        for (j, p) in payloads.iter().enumerate() {
                            let pkt = rtp::write(&rtp::Packet {
                                marker: j == 0,
                                payload_type: pt,
                                seq: event_seq,
                                timestamp: ts,
                                ssrc: 0x4b_45_59_53,
                                payload: p,
                            });
                            event_seq = event_seq.wrapping_add(1);
                            let _ = media.send_to(&pkt, *to).await;
                        }
                    }
                    script.keys_sent(now_ms);
                }
                Some(Act::HangUp) => break,
                None => {}
            }
        }
        let mut wake = now + Duration::from_millis(20);
        if let Some(t) = core.poll_timeout() {
            wake = wake.min(t);
        }
        if let Some(t) = line.as_ref().and_then(|l| l.1.poll_timeout()) {
            wake = wake.min(t);
        }
        tokio::select! {
            r = sig.recv_from(&mut sig_buf) => {
                if let Ok((n, from)) = r {
                    let p = Peer { addr: from, transport: Transport::Udp, local: sig_local };
                    core.handle(Instant::now(), p, &sig_buf[..n]);
                }
            }
            r = media.recv_from(&mut rtp_buf) => {
                if let (Ok((n, _)), Some((_, _, pt, is_alaw, _))) = (r, line.as_ref()) {
                    let data = &rtp_buf[..n];
                    if let Some(p) = rtp::parse(data).ok().filter(|_| !rtp::is_rtcp(data)) {
                        if p.payload_type == *pt {
                            let ulaw: Vec<u8> = if *is_alaw {
                                p.payload.iter().map(|&b| mulaw::encode(alaw::decode(b))).collect()
                            } else {
                                p.payload.to_vec()
                            };
                            script.on_frame(t0.elapsed().as_millis() as u64, &ulaw);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
    if !ended {
        // Our BYE, and its 200 (or the core's retransmissions running out).
        let _ = core.hangup(Instant::now(), &id);
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            core.handle_timeout(Instant::now());
            while let Some(t) = core.poll_transmit() {
                let _ = sig.send_to(&t.data, t.to.addr).await;
            }
            if std::iter::from_fn(|| core.poll_event()).any(|e| matches!(e, Event::Ended { .. })) {
                break;
            }
            tokio::select! {
                r = sig.recv_from(&mut sig_buf) => {
                    if let Ok((n, from)) = r {
                        let p = Peer { addr: from, transport: Transport::Udp, local: sig_local };
                        core.handle(Instant::now(), p, &sig_buf[..n]);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
    rep.duration_ms = t0.elapsed().as_millis() as u64;
    script.report_into(&mut rep);
    attach_record(&mut rep, &base, opts.api_token.as_deref()).await;
    Ok(rep)
}

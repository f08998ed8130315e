//! What the signalling task does with the core's events: answering calls
//! (media sockets, the pipeline), transfers by REFER or by bridging an agent's
//! leg with a spoken briefing, and the end of calls.

use super::*;

/// Places the agent's leg of a bridged transfer (over UDP, from the socket
/// the caller came in on when it is UDP).
pub(super) async fn start_bridge(
    core: &mut SipCore,
    calls: &mut HashMap<String, Slot>,
    udp: &HashMap<SocketAddr, Arc<UdpSocket>>,
    id: &str,
    target: &str,
    uri: &str,
) -> Result<(), String> {
    let Some(Slot {
        leg: Leg::Caller {
            incoming, agent, ..
        },
        media,
        ..
    }) = calls.get(id)
    else {
        return Err("no such call".into());
    };
    if agent.is_some() {
        return Err("a transfer is already under way".into());
    }
    let (host, port) =
        message::uri_host_port(uri).ok_or_else(|| format!("{uri:?} names no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addr = tokio::net::lookup_host((host.as_str(), port.unwrap_or(5060)))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let local = if incoming.peer.transport == Transport::Udp
        && incoming.peer.local.is_ipv4() == addr.is_ipv4()
    {
        incoming.peer.local
    } else {
        *udp.keys()
            .find(|l| l.is_ipv4() == addr.is_ipv4())
            .ok_or("no SIP UDP socket to call the agent from")?
    };
    let (rtp_sock, rtcp_sock) = bind_media(local.ip(), core.config().media.rtp_ports)
        .map_err(|e| format!("no RTP port for the agent's leg: {e}"))?;
    let port = rtp_sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let public: IpAddr = core
        .config()
        .listen
        .public_address
        .parse()
        .unwrap_or(local.ip());
    let header = core.config().transfer.context_header.clone();
    let call = OutboundCall {
        uri: uri.to_string(),
        peer: Peer {
            addr,
            transport: Transport::Udp,
            local,
        },
        local_media: SocketAddr::new(public, port),
        from_user: incoming.caller.clone(),
        from_display: incoming.display_name.clone(),
        headers: vec![
            (header, id.to_string()),
            (
                "User-to-User".into(),
                format!("{};encoding=hex", hex::encode(id.as_bytes())),
            ),
        ],
        ring_timeout: Duration::from_secs(core.config().transfer.ring_timeout_s.max(1)),
    };
    if let Some(m) = media {
        command(m, ToMedia::Session(Command::AwaitingAgent));
    }
    let agent_id = core
        .invite(Instant::now(), call)
        .map_err(|e| e.to_string())?;
    tracing::info!(call = %id, agent_leg = %agent_id, %target, "bridged transfer: calling the agent");
    if let Some(Slot {
        leg: Leg::Caller { agent, .. },
        ..
    }) = calls.get_mut(id)
    {
        *agent = Some(agent_id.clone());
    }
    calls.insert(
        agent_id,
        Slot {
            leg: Leg::Agent {
                caller: id.to_string(),
                target: target.to_string(),
            },
            rtp: Some(rtp_sock),
            rtcp: Some(rtcp_sock),
            media: None,
            _ticket: None,
        },
    );
    Ok(())
}

/// Frames (20 ms) a bridged leg may fall behind before its audio drops.
const RELAY_FRAMES: usize = 50;

/// The agent has heard the briefing: each leg now plays what the other hears.
pub(super) fn connect_bridge(calls: &mut HashMap<String, Slot>, agent_id: &str) {
    let Some(Slot {
        leg: Leg::Agent { caller, .. },
        media: Some(agent_media),
        ..
    }) = calls.get(agent_id)
    else {
        return;
    };
    let agent_media = agent_media.clone();
    let caller = caller.clone();
    let Some(Slot {
        leg: Leg::Caller { bridged, .. },
        media: Some(caller_media),
        ..
    }) = calls.get_mut(&caller)
    else {
        return;
    };
    let (c2a_tx, c2a_rx) = mpsc::channel(RELAY_FRAMES);
    let (a2c_tx, a2c_rx) = mpsc::channel(RELAY_FRAMES);
    *bridged = true;
    command(
        caller_media,
        ToMedia::Bridge {
            to_peer: c2a_tx,
            from_peer: a2c_rx,
        },
    );
    command(
        &agent_media,
        ToMedia::Bridge {
            to_peer: a2c_tx,
            from_peer: c2a_rx,
        },
    );
    tracing::info!(call = %caller, agent_leg = %agent_id, "bridged: caller and agent connected");
}

/// What the bot tells the agent before connecting the caller: the hand-off
/// packet's summary, so nobody has to ask the caller to repeat themselves.
pub(super) async fn briefing(state: &Shared, caller: &str, target: &str) -> String {
    let queue = target.trim_start_matches("queue:").replace('_', " ");
    let summary = match state.services.store.handoff(caller).await {
        Ok(Some(h)) => serde_json::from_value::<crate::handoff::Packet>(h.packet)
            .map(|p| p.summary)
            .unwrap_or_default(),
        _ => String::new(),
    };
    // Read aloud: "queue:customer_care" is said as "customer care".
    let summary = summary.replace("queue:", "").replace('_', " ");
    format!("Attendant transferring a caller to {queue}. {summary}")
        .trim()
        .to_string()
}

/// Speaks the briefing on the agent's leg, then a mark that says it was heard.
pub(super) fn brief_agent(
    state: Shared,
    caller: String,
    target: String,
    media: mpsc::Sender<ToMedia>,
) {
    tokio::spawn(async move {
        let text = briefing(&state, &caller, &target).await;
        let engines = state.engines.get().cloned();
        match engines.map(|e| e.tts.speak(&text, Arc::new(AtomicBool::new(false)))) {
            Some(Ok((mut rx, _))) => {
                while let Some(chunk) = rx.recv().await {
                    if media
                        .send(ToMedia::Session(Command::Play(chunk.ulaw)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Some(Err(e)) => tracing::warn!(call = %caller, error = %e, "no briefing for the agent"),
            None => {}
        }
        let _ = media
            .send(ToMedia::Session(Command::Mark(BRIEFED.into())))
            .await;
    });
}

/// The status a failed agent leg reports to the caller's pipeline.
pub(super) fn failure_status(reason: EndReason) -> u16 {
    match reason {
        EndReason::Rejected(code) => code,
        EndReason::Cancelled => 408,
        EndReason::RemoteBye => 480,
        EndReason::LocalBye | EndReason::NoAck => 500,
    }
}

pub(super) async fn on_event(
    state: &Shared,
    core: &mut SipCore,
    calls: &mut HashMap<String, Slot>,
    tx: &mpsc::Sender<ToCore>,
    ev: Event,
) {
    let now = Instant::now();
    match ev {
        Event::Incoming(inc) => {
            let id = inc.id.clone();
            if state.engines.get().is_none() {
                let _ = core.reject(now, &id, 503);
                return;
            }
            let ticket = match state.admission.admit(inc.caller.as_deref().unwrap_or("")) {
                Ok(t) => t,
                Err(why) => {
                    metrics()
                        .calls_refused_total
                        .with_label_values(&[why.as_str()])
                        .inc();
                    tracing::warn!(call = %id, reason = why.as_str(), "SIP call refused");
                    // 486 for one caller's too many calls; 503 + Retry-After
                    // sends a proxy to another node.
                    let code = if why == crate::server::admission::Refusal::NumberBusy {
                        486
                    } else {
                        503
                    };
                    let _ = core.reject(now, &id, code);
                    return;
                }
            };
            let public: IpAddr = core
                .config()
                .listen
                .public_address
                .parse()
                .unwrap_or(inc.peer.local.ip());
            match bind_media(inc.peer.local.ip(), core.config().media.rtp_ports) {
                Ok((rtp_sock, rtcp_sock)) => {
                    let port = rtp_sock.local_addr().map(|a| a.port()).unwrap_or(0);
                    if let Err(e) = core.accept(now, &id, SocketAddr::new(public, port)) {
                        tracing::warn!(error = %e, "cannot answer");
                        let _ = core.reject(now, &id, 500);
                        return;
                    }
                    tracing::info!(call = %id, trunk = %inc.trunk, "SIP call answered");
                    calls.insert(
                        id,
                        Slot {
                            leg: Leg::Caller {
                                incoming: inc,
                                agent: None,
                                bridged: false,
                            },
                            rtp: Some(rtp_sock),
                            rtcp: Some(rtcp_sock),
                            media: None,
                            _ticket: Some(ticket),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no RTP port; rejecting the call");
                    let _ = core.reject(now, &id, 503);
                }
            }
        }
        Event::Media {
            id,
            remote,
            negotiated,
        } => {
            let Some(slot) = calls.get_mut(&id) else {
                return;
            };
            if let Some(m) = &slot.media {
                command(m, ToMedia::Session(Command::Update { remote, negotiated }));
                return;
            }
            let (Some(rtp_sock), Some(rtcp_sock)) = (slot.rtp.take(), slot.rtcp.take()) else {
                return;
            };
            let Some(engines) = state.engines.get().cloned() else {
                return;
            };
            let cfg = core.config().media.clone();
            let (mtx, mrx) = mpsc::channel(MEDIA_COMMANDS);
            slot.media = Some(mtx.clone());
            let mut args = media::MediaArgs {
                id: id.clone(),
                rtp: rtp_sock,
                rtcp: rtcp_sock,
                remote,
                negotiated,
                jitter: Duration::from_millis(cfg.jitter_ms),
                symmetric: cfg.symmetric_rtp,
                rtp_timeout: (cfg.rtp_timeout_s > 0)
                    .then(|| Duration::from_secs(cfg.rtp_timeout_s)),
                call: None,
                cmds: mrx,
                to_core: tx.clone(),
            };
            let inc = match &slot.leg {
                Leg::Caller { incoming, .. } => incoming,
                // The agent answered: brief them, then bridge.
                Leg::Agent { caller, target } => {
                    tracing::info!(call = %caller, agent_leg = %id, "agent answered; briefing");
                    media_runtime().spawn(media::run(args));
                    brief_agent(state.clone(), caller.clone(), target.clone(), mtx);
                    return;
                }
            };
            let mut params = std::collections::BTreeMap::new();
            params.insert("trunk".to_string(), inc.trunk.clone());
            if let Some(d) = &inc.display_name {
                params.insert("display_name".to_string(), d.clone());
            }
            if let Some(agent) = core
                .config()
                .agent_for(inc.dialled.as_deref().unwrap_or(""))
            {
                params.insert("agent".to_string(), agent.to_string());
            }
            let meta = CallMeta {
                call_id: id.clone(),
                channel: "sip".into(),
                from: inc.caller.clone(),
                to: inc.dialled.clone(),
                params,
            };
            args.call = Some(spawn_call(engines, meta, state.calls.clone()));
            media_runtime().spawn(media::run(args));
        }
        Event::Dtmf { id, digit } => {
            if let Some(m) = calls.get(&id).and_then(|s| s.media.as_ref()) {
                command(m, ToMedia::Session(Command::Dtmf(digit)));
            }
        }
        Event::Transfer { id, status, final_ } => {
            tracing::info!(call = %id, status, final_, "transfer progress");
            if !final_ {
                return;
            }
            if (200..300).contains(&status) {
                // The caller is with the agent now; our leg ends.
                let _ = core.hangup(now, &id);
            } else if let Some(m) = calls.get(&id).and_then(|s| s.media.as_ref()) {
                command(m, ToMedia::Session(Command::TransferFailed(status)));
            }
        }
        Event::Ended { id, reason } => {
            tracing::info!(call = %id, ?reason, "SIP call ended");
            if let Some(slot) = calls.remove(&id) {
                if let Some(m) = slot.media {
                    command(&m, ToMedia::Stop);
                }
                match slot.leg {
                    // The caller left: so does the agent's leg (CANCEL or BYE).
                    Leg::Caller {
                        agent: Some(agent), ..
                    } => {
                        let _ = core.hangup(now, &agent);
                    }
                    Leg::Caller { .. } => {}
                    Leg::Agent { caller, .. } => {
                        if let Some(Slot {
                            leg: Leg::Caller { agent, bridged, .. },
                            media,
                            ..
                        }) = calls.get_mut(&caller)
                        {
                            *agent = None;
                            if *bridged {
                                // The agent hung up on a bridged call: it is over.
                                let _ = core.hangup(now, &caller);
                            } else if let Some(m) = media {
                                // Busy, no answer, or gone during the briefing:
                                // the bot takes the caller back.
                                tracing::info!(call = %caller, ?reason, "bridged transfer failed");
                                command(
                                    m,
                                    ToMedia::Session(Command::TransferFailed(failure_status(
                                        reason,
                                    ))),
                                );
                            }
                        }
                    }
                }
            }
            if matches!(reason, EndReason::NoAck) {
                metrics().protocol_errors_total.inc();
            }
        }
    }
}

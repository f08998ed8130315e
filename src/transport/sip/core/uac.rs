//! The calling side and requests inside a dialog: responses to our
//! transactions, outbound INVITEs (agent legs) and CANCEL, BYE, REFER.

use super::*;

impl SipCore {
    pub(super) fn on_response(&mut self, now: Instant, resp: Response) {
        let Some(branch) = resp.top_branch() else {
            return;
        };
        let (_, method) = resp.cseq();
        let key = format!("{branch} {method}");
        if method == "INVITE" {
            if !self.client.contains_key(&key) {
                // A retransmitted final response: our ACK again (§17.1.1.2,
                // §13.2.2.4).
                if resp.code >= 200 {
                    if let Some((peer, ack, _)) = self.acks.get(&branch) {
                        let (peer, ack) = (*peer, ack.clone());
                        self.stats.retransmissions += 1;
                        self.send(peer, ack);
                    }
                }
                return;
            }
            self.on_invite_response(now, &key, &branch, resp);
            return;
        }
        if resp.code < 200 {
            if let Some(tx) = self.client.get_mut(&key) {
                // Provisional: stop retransmitting faster than T2 (§17.1.2.2).
                if let Some(n) = tx.next.as_mut() {
                    *n = now + self.t1 * 8;
                }
            }
            return;
        }
        if let Some(tx) = self.client.remove(&key) {
            self.client_tx_done(tx, resp.code);
        }
    }

    /// A BYE or REFER of ours got its final answer `code` (408 when Timer F
    /// ran out): the call ends, or the transfer's first result is known.
    pub(super) fn client_tx_done(&mut self, tx: ClientTx, code: u16) {
        match tx.method.as_str() {
            "BYE" if self.dialogs.remove(&tx.call_id).is_some() => {
                self.events.push_back(Event::Ended {
                    id: tx.call_id,
                    reason: EndReason::LocalBye,
                });
            }
            "REFER" => {
                let failed = code >= 300;
                if failed {
                    if let Some(d) = self.dialogs.get_mut(&tx.call_id) {
                        d.refer_pending = false;
                    }
                }
                self.events.push_back(Event::Transfer {
                    id: tx.call_id,
                    status: code,
                    final_: failed,
                });
            }
            _ => {}
        }
    }

    /// A response to an INVITE we sent (client INVITE transaction, §17.1.1).
    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        key: &str,
        branch: &str,
        resp: Response,
    ) {
        let call_id = self.client[key].call_id.clone();
        if resp.code < 200 {
            // Proceeding: no more retransmissions, no Timer B; ringing is
            // bounded by the ring timeout instead.
            if let Some(tx) = self.client.get_mut(key) {
                tx.next = None;
                tx.give_up = now + Duration::from_secs(24 * 3600);
            }
            let send_cancel = match self.dialogs.get_mut(&call_id).and_then(|d| d.uac.as_mut()) {
                Some(u) => {
                    u.provisional = true;
                    u.cancel_wanted && !u.cancel_sent
                }
                None => false,
            };
            if send_cancel {
                self.send_cancel(now, &call_id);
            }
            return;
        }
        self.client.remove(key);
        let Some(d) = self.dialogs.get_mut(&call_id) else {
            return;
        };
        let cancelled = d.uac.as_ref().is_some_and(|u| u.cancel_wanted);
        let to = resp.headers.get("To").unwrap_or("").to_string();
        if resp.code >= 300 {
            // The ACK of a failure is part of the INVITE transaction: same
            // branch, same Request-URI, the response's To (§17.1.1.3).
            let mut h = message::Headers::default();
            for v in d.invite.headers.get_all("Via").into_iter().take(1) {
                h.push("Via", v);
            }
            h.push("Max-Forwards", "70");
            h.push("From", d.local_party.clone());
            h.push("To", to);
            h.push("Call-ID", call_id.clone());
            h.push("CSeq", format!("{} ACK", d.invite.cseq().0));
            for r in d.invite.headers.get_all("Route") {
                h.push("Route", r);
            }
            let ack = Request {
                method: "ACK".into(),
                uri: d.invite.uri.clone(),
                headers: h,
                body: Vec::new(),
            }
            .to_bytes();
            let peer = d.peer;
            self.dialogs.remove(&call_id);
            self.acks.insert(
                branch.to_string(),
                (peer, ack.clone(), now + self.timer_64()),
            );
            self.send(peer, ack);
            let reason = if cancelled && resp.code == 487 {
                EndReason::Cancelled
            } else {
                EndReason::Rejected(resp.code)
            };
            self.events.push_back(Event::Ended {
                id: call_id,
                reason,
            });
            return;
        }
        // 2xx: the dialog is established; the ACK is a request of its own
        // (new branch, the route set and remote target of the dialog).
        d.remote_party = to;
        d.route_set = resp.headers.get_all("Record-Route");
        d.route_set.reverse();
        if let Some(c) = resp
            .headers
            .get("Contact")
            .and_then(message::parse_name_addr)
        {
            d.remote_target = c.uri;
        }
        d.state = State::Confirmed;
        let cseq = d.invite.cseq().0;
        let local_cseq = d.local_cseq;
        let Some((mut ack, peer, _)) = self.dialog_request(&call_id, "ACK") else {
            return;
        };
        ack.headers.set("CSeq", format!("{cseq} ACK"));
        if let Some(d) = self.dialogs.get_mut(&call_id) {
            // ACK does not use up a sequence number.
            d.local_cseq = local_cseq;
        }
        let ack = ack.to_bytes();
        self.acks.insert(
            branch.to_string(),
            (peer, ack.clone(), now + self.timer_64()),
        );
        self.send(peer, ack);
        let codecs = self.cfg.media.codecs.clone();
        let dtmf = self.dtmf_enabled();
        let answer =
            sdp::parse(&resp.body).and_then(|a| sdp::negotiate(&a, &codecs, dtmf).map(|n| (a, n)));
        match answer {
            // The CANCEL lost the race with the 200: the call is answered
            // and must be ended with BYE (§9.1).
            _ if cancelled => {
                let _ = self.hangup(now, &call_id);
            }
            Ok((remote, negotiated)) => {
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    d.negotiated = Some(negotiated.clone());
                }
                self.stats.answered += 1;
                self.events.push_back(Event::Media {
                    id: call_id,
                    remote,
                    negotiated,
                });
            }
            Err(e) => {
                tracing::info!(error = %e, "answer to our INVITE is unusable; hanging up");
                let _ = self.hangup(now, &call_id);
            }
        }
    }

    /// Places a call: sends an INVITE offering our codecs and returns its
    /// Call-ID. Progress comes back as events: `Media` once answered,
    /// `Ended` if it fails, is cancelled or rings too long.
    pub fn invite(&mut self, now: Instant, call: OutboundCall) -> Result<String, CoreError> {
        let id = format!("{}@attendant", token());
        let local_tag = token();
        let br = branch();
        let peer = call.peer;
        let ip = self.public_ip(&peer);
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let user = call
            .from_user
            .as_deref()
            .filter(|u| {
                !u.is_empty()
                    && u.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-_.*#".contains(c))
            })
            .unwrap_or("attendant");
        let display = call
            .from_display
            .as_deref()
            .map(|d| d.replace(['"', '\\', '\r', '\n'], ""))
            .filter(|d| !d.is_empty())
            .map(|d| format!("\"{d}\" "))
            .unwrap_or_default();
        let from = format!("{display}<sip:{user}@{host}>;tag={local_tag}");
        let to = format!("<{}>", call.uri);
        let tp = peer.transport.via_name();
        let cseq = 1;
        let mut h = message::Headers::default();
        h.push(
            "Via",
            format!("SIP/2.0/{tp} {};branch={br};rport", peer.local),
        );
        h.push("Max-Forwards", "70");
        h.push("From", from.clone());
        h.push("To", to.clone());
        h.push("Call-ID", id.clone());
        h.push("CSeq", format!("{cseq} INVITE"));
        h.push("Contact", self.contact(&peer));
        h.push("Allow", ALLOW);
        for (k, v) in &call.headers {
            h.push(k, v.clone());
        }
        h.push("Content-Type", "application/sdp");
        let session_id = fastrand::u64(1..u32::MAX as u64);
        let dtmf = self.dtmf_enabled();
        let body = sdp::write(
            session_id,
            1,
            call.local_media.ip(),
            call.local_media.port(),
            &self.cfg.media.codecs,
            dtmf.then_some(101),
            Direction::SendRecv,
        );
        let req = Request {
            method: "INVITE".into(),
            uri: call.uri.clone(),
            headers: h,
            body,
        };
        let dialog = Dialog {
            peer,
            invite: req.clone(),
            invite_branch: br.clone(),
            local_tag,
            remote_uri: call.uri.clone(),
            remote_target: call.uri.clone(),
            route_set: Vec::new(),
            local_cseq: cseq,
            state: State::Calling,
            offer: None,
            negotiated: None,
            local_media: Some(call.local_media),
            sdp_version: 1,
            session_id,
            last_invite_response: None,
            refer_pending: false,
            local_party: from,
            remote_party: to,
            uac: Some(Uac {
                provisional: false,
                cancel_wanted: false,
                cancel_sent: false,
                ring_deadline: now + call.ring_timeout,
            }),
        };
        self.dialogs.insert(id.clone(), dialog);
        self.start_client(now, &id, req, peer, br);
        Ok(id)
    }

    /// CANCEL for our INVITE: same branch, Request-URI, From, To and
    /// CSeq number (§9.1).
    pub(super) fn send_cancel(&mut self, now: Instant, id: &str) {
        let Some(d) = self.dialogs.get_mut(id) else {
            return;
        };
        if let Some(u) = d.uac.as_mut() {
            u.cancel_wanted = true;
            u.cancel_sent = true;
        }
        let mut h = message::Headers::default();
        for v in d.invite.headers.get_all("Via").into_iter().take(1) {
            h.push("Via", v);
        }
        h.push("Max-Forwards", "70");
        h.push("From", d.local_party.clone());
        h.push("To", d.invite.headers.get("To").unwrap_or("").to_string());
        h.push("Call-ID", id);
        h.push("CSeq", format!("{} CANCEL", d.invite.cseq().0));
        let req = Request {
            method: "CANCEL".into(),
            uri: d.invite.uri.clone(),
            headers: h,
            body: Vec::new(),
        };
        let (peer, br) = (d.peer, d.invite_branch.clone());
        // Without a final response 64·T1 after the CANCEL, the attempt is
        // over (§9.1).
        let give_up = now + self.timer_64();
        if let Some(tx) = self.client.get_mut(&format!("{br} INVITE")) {
            tx.give_up = give_up;
        }
        self.start_client(now, id, req, peer, br);
    }

    /// Builds an in-dialog request from us (either side of the dialog).
    pub(super) fn dialog_request(
        &mut self,
        id: &str,
        method: &str,
    ) -> Option<(Request, Peer, String)> {
        let d = self.dialogs.get_mut(id)?;
        d.local_cseq += 1;
        let br = branch();
        let mut h = message::Headers::default();
        let tp = d.peer.transport.via_name();
        let local = d.peer.local;
        h.push("Via", format!("SIP/2.0/{tp} {local};branch={br};rport"));
        h.push("Max-Forwards", "70");
        h.push("From", d.local_party.clone());
        h.push("To", d.remote_party.clone());
        h.push("Call-ID", id);
        h.push("CSeq", format!("{} {method}", d.local_cseq));
        for r in &d.route_set {
            h.push("Route", r.clone());
        }
        let target = if d.remote_target.is_empty() {
            d.remote_uri.clone()
        } else {
            d.remote_target.clone()
        };
        let peer = d.peer;
        h.push("Contact", self.contact(&peer));
        Some((
            Request {
                method: method.into(),
                uri: target,
                headers: h,
                body: Vec::new(),
            },
            peer,
            br,
        ))
    }

    pub(super) fn start_client(
        &mut self,
        now: Instant,
        id: &str,
        req: Request,
        peer: Peer,
        br: String,
    ) {
        let data = req.to_bytes();
        self.send(peer, data.clone());
        let next = (peer.transport == Transport::Udp).then_some(now + self.t1);
        self.client.insert(
            format!("{br} {}", req.method),
            ClientTx {
                call_id: id.into(),
                method: req.method,
                data,
                to: peer,
                interval: self.t1,
                next,
                give_up: now + self.timer_64(),
            },
        );
    }

    /// Ends an established call with BYE (or a pending one with 480).
    pub fn hangup(&mut self, now: Instant, id: &str) -> Result<(), CoreError> {
        let state = self
            .dialogs
            .get(id)
            .map(|d| d.state.clone())
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        match state {
            State::Pending => return self.reject(now, id, 480),
            State::Closing | State::Over => return Ok(()),
            State::Calling => {
                let send_now = match self.dialogs.get_mut(id).and_then(|d| d.uac.as_mut()) {
                    Some(u) if !u.cancel_sent => {
                        u.cancel_wanted = true;
                        u.provisional
                    }
                    _ => false,
                };
                // Else the CANCEL waits for a provisional response (§9.1).
                if send_now {
                    self.send_cancel(now, id);
                }
                return Ok(());
            }
            _ => {}
        }
        self.reliable.retain(|r| r.call_id != id || !r.is_2xx);
        let (req, peer, br) = self
            .dialog_request(id, "BYE")
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        if let Some(d) = self.dialogs.get_mut(id) {
            d.state = State::Closing;
        }
        self.start_client(now, id, req, peer, br);
        Ok(())
    }

    /// Blind transfer: REFER the caller to `target`, carrying the hand-off
    /// context id in the configured header and in User-to-User.
    pub fn refer(
        &mut self,
        now: Instant,
        id: &str,
        target: &str,
        context: Option<&str>,
    ) -> Result<(), CoreError> {
        match self.dialogs.get(id) {
            None => return Err(CoreError::NoCall(id.into())),
            Some(d) if d.state != State::Confirmed || d.refer_pending => {
                return Err(CoreError::State(id.into()))
            }
            _ => {}
        }
        let header = self.cfg.transfer.context_header.clone();
        let (mut req, peer, br) = self
            .dialog_request(id, "REFER")
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        let mut refer_to = target.to_string();
        if let Some(ctx) = context {
            req.headers.push(&header, ctx);
            let uui = hex::encode(ctx.as_bytes());
            req.headers
                .push("User-to-User", format!("{uui};encoding=hex"));
            // The header also rides inside Refer-To so the new INVITE has it.
            let sep = if refer_to.contains('?') { '&' } else { '?' };
            refer_to = format!("{refer_to}{sep}{header}={}", url_escape(ctx));
        }
        req.headers.push("Refer-To", format!("<{refer_to}>"));
        req.headers.push("Referred-By", self.contact(&peer));
        if let Some(d) = self.dialogs.get_mut(id) {
            d.refer_pending = true;
        }
        self.start_client(now, id, req, peer, br);
        Ok(())
    }
}

//! The answering side: incoming INVITEs (admission, SDP, 100/180/200 or a
//! refusal), re-INVITEs (hold, media changes), ACK and CANCEL, and the
//! application's accept/reject.

use super::*;

impl SipCore {
    pub(super) fn on_invite(&mut self, now: Instant, peer: Peer, req: Request, branch: String) {
        let call_id = req.call_id().to_string();
        if let Some(d) = self.dialogs.get(&call_id) {
            if d.invite_branch == branch {
                // Retransmission of the INVITE we are working on.
                self.stats.retransmissions += 1;
                if let Some(last) = d.last_invite_response.clone() {
                    self.send(peer, last);
                }
                return;
            }
            if req.to().and_then(|t| t.tag).as_deref() == Some(d.local_tag.as_str()) {
                self.on_reinvite(now, peer, req, branch);
                return;
            }
        }
        if req.to().is_some_and(|t| t.tag.is_some()) {
            // A re-INVITE for a dialog we do not know.
            self.respond(now, peer, &req, 481, None);
            return;
        }
        // Who is calling: decided before any state is kept.
        let attempt = Attempt {
            source: peer.addr.ip(),
            method: "INVITE",
            uri: &req.uri,
            authorization: req.headers.get("Authorization"),
        };
        let verdict = self.auth.check(now, &self.cfg.trunks, &attempt);
        let trunk = match verdict {
            Verdict::Allowed(t) => t.clone(),
            Verdict::Forbidden => {
                self.stats.rejected_403 += 1;
                tracing::info!(peer = %peer.addr, "INVITE from a source no trunk admits: 403");
                let resp = response_to(&req, 403, Some(&token()));
                self.send(peer, resp.to_bytes());
                return;
            }
            Verdict::Challenge { stale } => {
                self.stats.challenged_401 += 1;
                let mut resp = response_to(&req, 401, Some(&token()));
                for c in self
                    .auth
                    .challenges(now, &self.cfg.trunks, peer.addr.ip(), stale)
                {
                    resp.headers.push("WWW-Authenticate", c);
                }
                self.send(peer, resp.to_bytes());
                return;
            }
        };
        let local_tag = token();
        // The offer, if any, must be something we can answer.
        let offer = if req.body.is_empty() {
            None
        } else {
            let is_sdp = req
                .headers
                .get("Content-Type")
                .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/sdp"));
            let parsed = if is_sdp {
                sdp::parse(&req.body).and_then(|o| {
                    sdp::negotiate(&o, &self.cfg.media.codecs, self.dtmf_enabled()).map(|_| o)
                })
            } else {
                Err(sdp::SdpError::NoAudio)
            };
            match parsed {
                Ok(o) => Some(o),
                Err(e) => {
                    self.stats.rejected_488 += 1;
                    tracing::info!(error = %e, "INVITE offer not acceptable: 488");
                    let mut resp =
                        response_to(&req, if is_sdp { 488 } else { 415 }, Some(&local_tag));
                    resp.headers
                        .push("Warning", format!("305 attendant \"{e}\""));
                    if !is_sdp {
                        resp.headers.push("Accept", "application/sdp");
                    }
                    self.final_invite_response(now, peer, &req, resp);
                    return;
                }
            }
        };
        // Our answer carries SDP; a caller that accepts none of it cannot
        // take it (RFC 4475 sdp01).
        let accepts = req.headers.get_all("Accept");
        if !accepts.is_empty()
            && !accepts.iter().any(|a| {
                let t = a
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                matches!(t.as_str(), "application/sdp" | "application/*" | "*/*")
            })
        {
            let mut resp = response_to(&req, 406, Some(&local_tag));
            resp.headers.push("Accept", "application/sdp");
            self.final_invite_response(now, peer, &req, resp);
            return;
        }
        let from = req.from();
        let pai = req
            .headers
            .get("P-Asserted-Identity")
            .and_then(|v| message::split_commas(v).into_iter().next())
            .and_then(|v| message::parse_name_addr(&v));
        let identity = match (&pai, trunk.trust_identity) {
            (Some(p), true) => Some(p.clone()),
            _ => from.clone(),
        };
        let caller = identity.as_ref().and_then(|n| message::uri_user(&n.uri));
        let dialled = message::uri_user(&req.uri)
            .or_else(|| req.to().and_then(|t| message::uri_user(&t.uri)));
        let remote_target = req
            .headers
            .get("Contact")
            .and_then(message::parse_name_addr)
            .map(|n| n.uri)
            .unwrap_or_else(|| from.as_ref().map(|f| f.uri.clone()).unwrap_or_default());

        let trying = response_to(&req, 100, None).to_bytes();
        self.send(peer, trying.clone());
        let dialog = Dialog {
            peer,
            invite_branch: branch,
            local_tag: local_tag.clone(),
            remote_uri: from.as_ref().map(|f| f.uri.clone()).unwrap_or_default(),
            remote_target,
            route_set: req.headers.get_all("Record-Route"),
            local_cseq: fastrand::u32(1..10_000),
            state: State::Pending,
            offer,
            negotiated: None,
            local_media: None,
            sdp_version: 1,
            session_id: fastrand::u64(1..u32::MAX as u64),
            last_invite_response: Some(trying),
            refer_pending: false,
            local_party: format!("{};tag={local_tag}", req.headers.get("To").unwrap_or("")),
            remote_party: req.headers.get("From").unwrap_or("").to_string(),
            uac: None,
            invite: req,
        };
        self.dialogs.insert(call_id.clone(), dialog);
        self.events.push_back(Event::Incoming(IncomingCall {
            id: call_id,
            peer,
            trunk: trunk.name,
            caller,
            display_name: identity.and_then(|n| n.display),
            dialled,
        }));
    }

    pub(super) fn dtmf_enabled(&self) -> bool {
        self.cfg.media.dtmf == crate::transport::sip::config::DtmfMode::Rfc4733
    }

    /// Sends a final response to an INVITE and keeps retransmitting it.
    pub(super) fn final_invite_response(
        &mut self,
        now: Instant,
        peer: Peer,
        req: &Request,
        resp: Response,
    ) {
        let data = resp.to_bytes();
        let is_2xx = (200..300).contains(&resp.code);
        self.send(peer, data.clone());
        // Over TCP only 2xx are retransmitted (RFC 3261 §13.3.1.4, §17.2.1).
        if is_2xx || peer.transport == Transport::Udp {
            self.reliable.push(Reliable {
                call_id: req.call_id().to_string(),
                cseq: req.cseq().0,
                data: data.clone(),
                to: peer,
                interval: self.t1,
                next: now + self.t1,
                give_up: now + self.timer_64(),
                is_2xx,
            });
        }
        if let Some(d) = self.dialogs.get_mut(req.call_id()) {
            if d.invite_branch == req.top_via().and_then(|v| v.branch).unwrap_or_default() {
                d.last_invite_response = Some(data);
            }
        }
    }

    /// Answers a pending call with our media at `local_media`.
    pub fn accept(
        &mut self,
        now: Instant,
        id: &str,
        local_media: SocketAddr,
    ) -> Result<(), CoreError> {
        let codecs = self.cfg.media.codecs.clone();
        let dtmf = self.dtmf_enabled();
        let d = self
            .dialogs
            .get_mut(id)
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        if d.state != State::Pending {
            return Err(CoreError::State(id.into()));
        }
        let ip = local_media.ip();
        let (body, negotiated) = match &d.offer {
            Some(offer) => {
                let n = sdp::negotiate(offer, &codecs, dtmf)?;
                let body = sdp::write(
                    d.session_id,
                    d.sdp_version,
                    ip,
                    local_media.port(),
                    &[n.codec],
                    n.dtmf_pt,
                    n.direction,
                );
                (body, Some(n))
            }
            // No offer: we offer everything we do; the ACK carries the answer.
            None => (
                sdp::write(
                    d.session_id,
                    d.sdp_version,
                    ip,
                    local_media.port(),
                    &codecs,
                    dtmf.then_some(101),
                    Direction::SendRecv,
                ),
                None,
            ),
        };
        d.local_media = Some(local_media);
        d.negotiated = negotiated.clone();
        d.state = State::Answered;
        let mut resp = response_to(&d.invite, 200, Some(&d.local_tag));
        for rr in &d.route_set {
            resp.headers.push("Record-Route", rr.clone());
        }
        let peer = d.peer;
        let invite = d.invite.clone();
        let offer = d.offer.clone();
        resp.headers.push("Contact", self.contact(&peer));
        resp.headers.push("Allow", ALLOW);
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = body;
        self.stats.answered += 1;
        self.final_invite_response(now, peer, &invite, resp);
        if let (Some(remote), Some(negotiated)) = (offer, negotiated) {
            self.events.push_back(Event::Media {
                id: id.into(),
                remote,
                negotiated,
            });
        }
        Ok(())
    }

    /// Rejects a pending call (e.g. 503 while models load, 486 when full).
    pub fn reject(&mut self, now: Instant, id: &str, code: u16) -> Result<(), CoreError> {
        let d = self
            .dialogs
            .get(id)
            .ok_or_else(|| CoreError::NoCall(id.into()))?;
        if d.state != State::Pending {
            return Err(CoreError::State(id.into()));
        }
        let mut resp = response_to(&d.invite, code, Some(&d.local_tag));
        if code == 503 {
            // Overloaded or draining: a proxy fails over, a trunk retries later.
            resp.headers.push("Retry-After", "30");
        }
        let (peer, invite) = (d.peer, d.invite.clone());
        self.final_invite_response(now, peer, &invite, resp);
        if let Some(d) = self.dialogs.get_mut(id) {
            d.state = State::Over;
        }
        self.events.push_back(Event::Ended {
            id: id.into(),
            reason: EndReason::Rejected(code),
        });
        Ok(())
    }

    pub(super) fn on_reinvite(&mut self, now: Instant, peer: Peer, req: Request, branch: String) {
        let call_id = req.call_id().to_string();
        let codecs = self.cfg.media.codecs.clone();
        let dtmf = self.dtmf_enabled();
        let Some(d) = self.dialogs.get_mut(&call_id) else {
            return;
        };
        if d.state != State::Confirmed {
            // An INVITE while ours is unfinished (RFC 3261 §14.2).
            let resp = response_to(&req, 491, None);
            self.final_invite_response(now, peer, &req, resp);
            return;
        }
        let Some(local) = d.local_media else {
            return;
        };
        let offer = if req.body.is_empty() {
            None
        } else {
            Some(sdp::parse(&req.body))
        };
        let (body, media) = match offer {
            Some(Ok(o)) => match sdp::negotiate(&o, &codecs, dtmf) {
                Ok(n) => {
                    d.sdp_version += 1;
                    let body = sdp::write(
                        d.session_id,
                        d.sdp_version,
                        local.ip(),
                        local.port(),
                        &[n.codec],
                        n.dtmf_pt,
                        n.direction,
                    );
                    (body, Some((o, n)))
                }
                Err(e) => {
                    let mut resp = response_to(&req, 488, None);
                    resp.headers
                        .push("Warning", format!("305 attendant \"{e}\""));
                    self.final_invite_response(now, peer, &req, resp);
                    return;
                }
            },
            Some(Err(e)) => {
                let mut resp = response_to(&req, 488, None);
                resp.headers
                    .push("Warning", format!("305 attendant \"{e}\""));
                self.final_invite_response(now, peer, &req, resp);
                return;
            }
            // Offerless re-INVITE: offer the current session again.
            None => {
                let n = d.negotiated.clone();
                let body = sdp::write(
                    d.session_id,
                    d.sdp_version,
                    local.ip(),
                    local.port(),
                    &n.as_ref().map(|n| vec![n.codec]).unwrap_or(codecs),
                    n.as_ref().and_then(|n| n.dtmf_pt),
                    Direction::SendRecv,
                );
                (body, None)
            }
        };
        d.invite_branch = branch;
        d.state = State::Answered;
        if let Some(c) = req
            .headers
            .get("Contact")
            .and_then(message::parse_name_addr)
        {
            d.remote_target = c.uri;
        }
        let mut resp = response_to(&req, 200, None);
        let contact_peer = d.peer;
        if let Some((o, n)) = media {
            d.negotiated = Some(n.clone());
            self.events.push_back(Event::Media {
                id: call_id.clone(),
                remote: o,
                negotiated: n,
            });
        }
        resp.headers.push("Contact", self.contact(&contact_peer));
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = body;
        self.final_invite_response(now, peer, &req, resp);
    }

    pub(super) fn on_ack(&mut self, _now: Instant, call_id: &str, req: &Request) {
        let (cseq, _) = req.cseq();
        let before = self.reliable.len();
        let mut acked_2xx = false;
        self.reliable.retain(|r| {
            let hit = r.call_id == call_id && r.cseq == cseq;
            if hit && r.is_2xx {
                acked_2xx = true;
            }
            !hit
        });
        let matched = before != self.reliable.len();
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        if !acked_2xx {
            // ACK of a rejection (487, 488, …): the attempt is over.
            if matched && d.state == State::Over {
                self.dialogs.remove(call_id);
            }
            return;
        }
        if d.state == State::Answered {
            d.state = State::Confirmed;
        }
        // Offerless INVITE: the answer arrives in the ACK.
        if d.negotiated.is_none() {
            let codecs = self.cfg.media.codecs.clone();
            let dtmf = self.cfg.media.dtmf == crate::transport::sip::config::DtmfMode::Rfc4733;
            match sdp::parse(&req.body)
                .and_then(|a| sdp::negotiate(&a, &codecs, dtmf).map(|n| (a, n)))
            {
                Ok((remote, n)) => {
                    d.negotiated = Some(n.clone());
                    self.events.push_back(Event::Media {
                        id: call_id.into(),
                        remote,
                        negotiated: n,
                    });
                }
                Err(e) => {
                    tracing::info!(error = %e, "ACK carried no usable answer; hanging up");
                    let _ = self.hangup(_now, call_id);
                }
            }
        }
    }

    pub(super) fn on_cancel(&mut self, now: Instant, peer: Peer, req: &Request, branch: &str) {
        let call_id = req.call_id().to_string();
        let pending = match self.dialogs.get(&call_id) {
            Some(d) if d.invite_branch == branch => Some(d.state == State::Pending),
            _ => None,
        };
        match pending {
            None => {
                self.respond(now, peer, req, 481, None);
            }
            Some(true) => {
                self.respond(now, peer, req, 200, None);
                let d = self.dialogs.get(&call_id).expect("checked");
                let resp = response_to(&d.invite, 487, Some(&d.local_tag));
                let (p, invite) = (d.peer, d.invite.clone());
                self.final_invite_response(now, p, &invite, resp);
                if let Some(d) = self.dialogs.get_mut(&call_id) {
                    d.state = State::Over;
                }
                self.events.push_back(Event::Ended {
                    id: call_id,
                    reason: EndReason::Cancelled,
                });
            }
            // Already answered: the CANCEL lost the race and changes nothing
            // (RFC 3261 §9.2); the caller will ACK and BYE.
            Some(false) => {
                self.respond(now, peer, req, 200, None);
            }
        }
    }
}

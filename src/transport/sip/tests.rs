//! The SIP core against scripted peers: every exchange checked on the wire.

use std::time::{Duration, Instant};

use super::config::{SipConfig, DEFAULT_TOML};
use super::core::*;
use super::message::{self, Message, Response};
use super::sdp;

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn peer(ip: &str) -> Peer {
    Peer {
        addr: format!("{ip}:5070").parse().unwrap(),
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().unwrap(),
    }
}

fn core() -> SipCore {
    let mut cfg = SipConfig::parse(DEFAULT_TOML, "default").unwrap();
    cfg.timers.t1_ms = 100;
    SipCore::new(cfg)
}

fn invite(call: &str, branch: &str, to_tag: Option<&str>, body: &str) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: \"Dana\" <sip:+15550100110@127.0.0.1>;tag=caller\r\nTo: <sip:1000@127.0.0.1>{to_tag}\r\n\
         Call-ID: {call}\r\nCSeq: {} INVITE\r\nContact: <sip:dana@127.0.0.1:5070>\r\n\
         P-Asserted-Identity: <sip:+15550100999@carrier>\r\n{ct}Content-Length: {}\r\n\r\n{body}",
        if to_tag.is_empty() { 1 } else { 3 },
        body.len()
    )
}

fn request(
    method: &str,
    call: &str,
    branch: &str,
    to_tag: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> String {
    format!(
        "{method} sip:attendant@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: <sip:+15550100110@127.0.0.1>;tag=caller\r\nTo: <sip:1000@127.0.0.1>;tag={to_tag}\r\n\
         Call-ID: {call}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn out(c: &mut SipCore) -> Vec<Message> {
    std::iter::from_fn(|| c.poll_transmit())
        .map(|t| message::parse(&t.data).expect("we send valid SIP"))
        .collect()
}

fn responses(c: &mut SipCore) -> Vec<Response> {
    out(c)
        .into_iter()
        .filter_map(|m| match m {
            Message::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn events(c: &mut SipCore) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// The To tag our response carries.
fn to_tag(r: &Response) -> String {
    r.headers
        .get("To")
        .and_then(message::parse_name_addr)
        .unwrap()
        .tag
        .unwrap()
}

fn codes(v: &[Response]) -> Vec<u16> {
    v.iter().map(|r| r.code).collect()
}

/// INVITE + accept; returns our To tag.
fn answered(c: &mut SipCore, now: Instant, call: &str) -> String {
    c.handle(
        now,
        peer("127.0.0.1"),
        invite(call, "z9hG4bKa", None, OFFER).as_bytes(),
    );
    let ev = events(c);
    let Event::Incoming(inc) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(
        inc.caller.as_deref(),
        Some("+15550100999"),
        "trusted PAI wins"
    );
    assert_eq!(inc.dialled.as_deref(), Some("1000"));
    c.accept(now, call, "127.0.0.1:20000".parse().unwrap())
        .unwrap();
    let r = responses(c);
    assert_eq!(codes(&r), vec![100, 200]);
    let ans = sdp::parse(&r[1].body).unwrap();
    assert_eq!(ans.port, 20000);
    to_tag(&r[1])
}

#[test]
fn answer_retransmit_until_ack_then_caller_hangs_up() {
    let mut c = core();
    let t0 = Instant::now();
    let tag = answered(&mut c, t0, "c1");
    assert!(
        matches!(&events(&mut c)[..], [Event::Media { negotiated, .. }] if negotiated.codec == sdp::Codec::Pcmu && negotiated.dtmf_pt == Some(101))
    );
    // A retransmitted INVITE gets the 200 again.
    c.handle(
        t0,
        peer("127.0.0.1"),
        invite("c1", "z9hG4bKa", None, OFFER).as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    // No ACK: 200 again after T1, then 2·T1.
    c.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    c.handle_timeout(t0 + Duration::from_millis(250));
    assert!(responses(&mut c).is_empty());
    c.handle_timeout(t0 + Duration::from_millis(300));
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("ACK", "c1", "z9hG4bKack", &tag, 1, "", "").as_bytes(),
    );
    c.handle_timeout(t0 + Duration::from_secs(2));
    assert!(responses(&mut c).is_empty(), "ACK stops retransmission");
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("BYE", "c1", "z9hG4bKbye", &tag, 2, "", "").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    assert_eq!(
        events(&mut c),
        vec![Event::Ended {
            id: "c1".into(),
            reason: EndReason::RemoteBye
        }]
    );
    // BYE retransmitted: same 200, no second event; unknown dialog: 481.
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("BYE", "c1", "z9hG4bKbye", &tag, 2, "", "").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    assert!(events(&mut c).is_empty());
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("BYE", "c1", "z9hG4bKbye2", &tag, 3, "", "").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![481]);
    assert_eq!(c.active_calls(), 0);
}

#[test]
fn bot_hangs_up_with_a_retransmitted_bye() {
    let mut c = core();
    let t0 = Instant::now();
    let tag = answered(&mut c, t0, "c2");
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("ACK", "c2", "z9hG4bKack", &tag, 1, "", "").as_bytes(),
    );
    events(&mut c);
    c.hangup(t0, "c2").unwrap();
    let sent = out(&mut c);
    let Message::Request(bye) = &sent[0] else {
        panic!()
    };
    assert_eq!(bye.method, "BYE");
    assert_eq!(
        bye.uri, "sip:dana@127.0.0.1:5070",
        "sent to the caller's Contact"
    );
    assert_eq!(bye.from().unwrap().tag.as_deref(), Some(tag.as_str()));
    assert_eq!(bye.to().unwrap().tag.as_deref(), Some("caller"));
    c.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(out(&mut c).len(), 1, "Timer E retransmission");
    let ok = message::response_to(bye, 200, None);
    c.handle(t0, peer("127.0.0.1"), &ok.to_bytes());
    assert_eq!(
        events(&mut c),
        vec![Event::Ended {
            id: "c2".into(),
            reason: EndReason::LocalBye
        }]
    );
}

#[test]
fn cancel_before_and_after_the_answer() {
    let mut c = core();
    let t0 = Instant::now();
    c.handle(
        t0,
        peer("127.0.0.1"),
        invite("c3", "z9hG4bKc3", None, OFFER).as_bytes(),
    );
    events(&mut c);
    responses(&mut c);
    let cancel = request("CANCEL", "c3", "z9hG4bKc3", "x", 1, "", "").replace(";tag=x", "");
    c.handle(t0, peer("127.0.0.1"), cancel.as_bytes());
    assert_eq!(codes(&responses(&mut c)), vec![200, 487]);
    assert_eq!(
        events(&mut c),
        vec![Event::Ended {
            id: "c3".into(),
            reason: EndReason::Cancelled
        }]
    );
    assert!(
        c.accept(t0, "c3", "127.0.0.1:20000".parse().unwrap())
            .is_err(),
        "too late to answer"
    );
    // The race: CANCEL arrives after our 200 — it changes nothing.
    let tag = answered(&mut c, t0, "c4");
    events(&mut c);
    let cancel = request("CANCEL", "c4", "z9hG4bKa", "x", 1, "", "").replace(";tag=x", "");
    c.handle(t0, peer("127.0.0.1"), cancel.as_bytes());
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    assert!(events(&mut c).is_empty());
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("ACK", "c4", "z9hG4bKk", &tag, 1, "", "").as_bytes(),
    );
    assert_eq!(c.active_calls(), 1);
}

#[test]
fn rejections_keep_no_state() {
    let mut c = core();
    let t0 = Instant::now();
    c.handle(
        t0,
        peer("192.0.2.7"),
        invite("c5", "z9hG4bK5", None, OFFER).as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![403]);
    assert_eq!(c.active_calls(), 0);
    assert!(events(&mut c).is_empty());
    let g729 = OFFER.replace("RTP/AVP 0 101", "RTP/AVP 18").replace(
        "a=rtpmap:101 telephone-event/8000\r\n",
        "a=rtpmap:18 G729/8000\r\n",
    );
    c.handle(
        t0,
        peer("127.0.0.1"),
        invite("c6", "z9hG4bK6", None, &g729).as_bytes(),
    );
    let r = responses(&mut c);
    assert_eq!(codes(&r), vec![488]);
    assert!(r[0].headers.get("Warning").unwrap().starts_with("305"));
    // Timer G retransmits the 488 until the ACK.
    c.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(codes(&responses(&mut c)), vec![488]);
    let to_tag = to_tag(&r[0]);
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("ACK", "c6", "z9hG4bK6", &to_tag, 1, "", "").as_bytes(),
    );
    c.handle_timeout(t0 + Duration::from_secs(1));
    assert!(responses(&mut c).is_empty());
    // Malformed: 400 when answerable, silence when not.
    let bad_length =
        invite("m1", "z9hG4bKm", None, "").replace("Content-Length: 0", "Content-Length: -1");
    c.handle(t0, peer("127.0.0.1"), bad_length.as_bytes());
    assert_eq!(codes(&responses(&mut c)), vec![400]);
    // Without From there is nothing to answer with: dropped.
    c.handle(
        t0,
        peer("127.0.0.1"),
        b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKm\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    c.handle(t0, peer("127.0.0.1"), b"\x00\x01garbage");
    c.handle(t0, peer("127.0.0.1"), b"\r\n\r\n");
    assert!(out(&mut c).is_empty());
    assert_eq!(c.stats.rejected_403, 1);
}

#[test]
fn options_hold_and_offerless_invite() {
    let mut c = core();
    let t0 = Instant::now();
    let opt = request("OPTIONS", "o1", "z9hG4bKo", "x", 1, "", "").replace(";tag=x", "");
    c.handle(t0, peer("127.0.0.1"), opt.as_bytes());
    let r = responses(&mut c);
    assert_eq!(codes(&r), vec![200]);
    assert!(r[0].headers.get("Allow").unwrap().contains("REFER"));
    c.handle(
        t0,
        peer("203.0.113.9"),
        opt.replace("z9hG4bKo", "z9hG4bKo2").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![403]);
    // A draining or full node answers a proxy's probe 503, so the proxy
    // sends new calls elsewhere; back to 200 once it takes calls again.
    c.set_available(false);
    c.handle(
        t0,
        peer("127.0.0.1"),
        opt.replace("z9hG4bKo", "z9hG4bKo3").as_bytes(),
    );
    let r = responses(&mut c);
    assert_eq!(codes(&r), vec![503]);
    assert_eq!(r[0].headers.get("Retry-After"), Some("5"));
    c.set_available(true);
    c.handle(
        t0,
        peer("127.0.0.1"),
        opt.replace("z9hG4bKo", "z9hG4bKo4").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![200]);

    let tag = answered(&mut c, t0, "h1");
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("ACK", "h1", "z9hG4bKack", &tag, 1, "", "").as_bytes(),
    );
    events(&mut c);
    let held = OFFER.replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
    let reinvite = invite("h1", "z9hG4bKre", Some(&tag), &held);
    c.handle(t0, peer("127.0.0.1"), reinvite.as_bytes());
    let r = responses(&mut c);
    assert_eq!(codes(&r), vec![200]);
    assert!(String::from_utf8_lossy(&r[0].body).contains("a=recvonly"));
    match &events(&mut c)[..] {
        [Event::Media { remote, .. }] => assert!(remote.on_hold()),
        e => panic!("{e:?}"),
    }

    // No offer in the INVITE: we offer in the 200, the ACK answers.
    c.handle(
        t0,
        peer("127.0.0.1"),
        invite("n1", "z9hG4bKn", None, "").as_bytes(),
    );
    events(&mut c);
    c.accept(t0, "n1", "127.0.0.1:20002".parse().unwrap())
        .unwrap();
    let r = responses(&mut c);
    let offer = sdp::parse(&r[1].body).unwrap();
    assert!(
        offer.formats.len() >= 3,
        "all our codecs and telephone-event"
    );
    assert!(events(&mut c).is_empty(), "no media before the answer");
    let tag = to_tag(&r[1]);
    let ack = request(
        "ACK",
        "n1",
        "z9hG4bKna",
        &tag,
        1,
        "Content-Type: application/sdp\r\n",
        &OFFER.replace("0 101", "8"),
    );
    c.handle(t0, peer("127.0.0.1"), ack.as_bytes());
    match &events(&mut c)[..] {
        [Event::Media { negotiated, .. }] => assert_eq!(negotiated.codec, sdp::Codec::Pcma),
        e => panic!("{e:?}"),
    }
}

#[test]
fn refer_success_and_failure() {
    let mut c = core();
    let t0 = Instant::now();
    let tag = answered(&mut c, t0, "r1");
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("ACK", "r1", "z9hG4bKack", &tag, 1, "", "").as_bytes(),
    );
    events(&mut c);
    c.refer(t0, "r1", "sip:care@127.0.0.1:5070", Some("r1"))
        .unwrap();
    let sent = out(&mut c);
    let Message::Request(refer) = &sent[0] else {
        panic!()
    };
    assert_eq!(refer.method, "REFER");
    assert_eq!(refer.headers.get("X-Attendant-Context"), Some("r1"));
    assert!(refer
        .headers
        .get("Refer-To")
        .unwrap()
        .contains("X-Attendant-Context=r1"));
    assert!(
        c.refer(t0, "r1", "sip:x@y", None).is_err(),
        "one transfer at a time"
    );
    c.handle(
        t0,
        peer("127.0.0.1"),
        &message::response_to(refer, 202, None).to_bytes(),
    );
    assert_eq!(
        events(&mut c),
        vec![Event::Transfer {
            id: "r1".into(),
            status: 202,
            final_: false
        }]
    );
    let notify = |status: &str, state: &str| {
        request("NOTIFY", "r1", &format!("z9hG4bKn{status}"), &tag, 2,
            &format!("Event: refer\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag;version=2.0\r\n"),
            &format!("SIP/2.0 {status}\r\n"))
    };
    c.handle(
        t0,
        peer("127.0.0.1"),
        notify("100 Trying", "active").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    c.handle(
        t0,
        peer("127.0.0.1"),
        notify("486 Busy Here", "terminated;reason=noresource").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    assert_eq!(
        events(&mut c),
        vec![
            Event::Transfer {
                id: "r1".into(),
                status: 100,
                final_: false
            },
            Event::Transfer {
                id: "r1".into(),
                status: 486,
                final_: true
            },
        ]
    );
    // The call is still ours after a failed transfer; another may follow.
    assert_eq!(c.active_calls(), 1);
    c.refer(t0, "r1", "sip:care@127.0.0.1:5070", None).unwrap();
    let Message::Request(refer) = &out(&mut c)[0] else {
        panic!()
    };
    c.handle(
        t0,
        peer("127.0.0.1"),
        &message::response_to(refer, 603, None).to_bytes(),
    );
    assert_eq!(
        events(&mut c),
        vec![Event::Transfer {
            id: "r1".into(),
            status: 603,
            final_: true
        }]
    );
}

#[test]
fn digest_challenge_then_accept() {
    let mut cfg = SipConfig::parse(DEFAULT_TOML, "default").unwrap();
    cfg.trunks[0].username = "pbx".into();
    cfg.trunks[0].password = "secret".into();
    let mut c = SipCore::new(cfg);
    let t0 = Instant::now();
    c.handle(
        t0,
        peer("127.0.0.1"),
        invite("d1", "z9hG4bKd", None, OFFER).as_bytes(),
    );
    let r = responses(&mut c);
    assert_eq!(codes(&r), vec![401]);
    let chal = r[0].headers.get("WWW-Authenticate").unwrap();
    let params = super::auth::parse_digest(chal).unwrap();
    let nonce = &params.iter().find(|(k, _)| k == "nonce").unwrap().1;
    let md5 = |s: String| {
        use md5::Digest;
        hex::encode(md5::Md5::digest(s.as_bytes()))
    };
    let ha1 = md5("pbx:attendant:secret".into());
    let ha2 = md5("INVITE:sip:1000@127.0.0.1".into());
    let resp = md5(format!("{ha1}:{nonce}:00000001:xyz:auth:{ha2}"));
    let auth = format!("Authorization: Digest username=\"pbx\",realm=\"attendant\",nonce=\"{nonce}\",uri=\"sip:1000@127.0.0.1\",response=\"{resp}\",qop=auth,nc=00000001,cnonce=\"xyz\"\r\n");
    let inv =
        invite("d1", "z9hG4bKd2", None, OFFER).replace("Contact:", &format!("{auth}Contact:"));
    c.handle(t0, peer("127.0.0.1"), inv.as_bytes());
    assert_eq!(codes(&responses(&mut c)), vec![100]);
    assert!(matches!(&events(&mut c)[..], [Event::Incoming(_)]));
    // The captured Authorization, replayed on a new call (new Call-ID,
    // branch and caller): challenged again, no call.
    let replay = invite("d2", "z9hG4bKd3", None, OFFER)
        .replace("Contact:", &format!("{auth}Contact:"))
        .replace("+15550100110", "+15550100666");
    c.handle(t0, peer("127.0.0.1"), replay.as_bytes());
    let r = responses(&mut c);
    assert_eq!(codes(&r), vec![401]);
    assert!(r[0]
        .headers
        .get("WWW-Authenticate")
        .unwrap()
        .contains("stale=true"));
    assert!(events(&mut c).is_empty());
    // Computed for another Request-URI: refused.
    let moved = invite("d3", "z9hG4bKd4", None, OFFER)
        .replace(
            "Contact:",
            &format!("{}Contact:", auth.replace("nc=00000001", "nc=00000002")),
        )
        .replace("INVITE sip:1000@", "INVITE sip:2000@");
    c.handle(t0, peer("127.0.0.1"), moved.as_bytes());
    assert_eq!(codes(&responses(&mut c)), vec![401]);
    assert!(events(&mut c).is_empty());
}

#[test]
fn in_dialog_requests_from_a_stranger_are_refused() {
    let mut c = core();
    let t0 = Instant::now();
    let tag = answered(&mut c, t0, "s1");
    events(&mut c);
    c.handle(
        t0,
        peer("127.0.0.1"),
        request("ACK", "s1", "z9hG4bKack", &tag, 1, "", "").as_bytes(),
    );
    // Someone who learnt the Call-ID and tags, from another address.
    let stranger = peer("192.0.2.66");
    for (method, cseq, extra, body) in [
        ("BYE", 2, "", ""),
        (
            "INFO",
            3,
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=5\r\nDuration=160\r\n",
        ),
        ("INVITE", 4, "Content-Type: application/sdp\r\n", OFFER),
    ] {
        let req = request(
            method,
            "s1",
            &format!("z9hG4bKs{cseq}"),
            &tag,
            cseq,
            extra,
            body,
        );
        c.handle(t0, stranger, req.as_bytes());
        assert_eq!(codes(&responses(&mut c)), vec![403], "{method}");
        assert!(events(&mut c).is_empty(), "{method}");
    }
    assert_eq!(c.active_calls(), 1);
    // The real caller (another port is fine) still hangs up.
    let mut caller = peer("127.0.0.1");
    caller.addr.set_port(5099);
    c.handle(
        t0,
        caller,
        request("BYE", "s1", "z9hG4bKs9", &tag, 5, "", "").as_bytes(),
    );
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    assert_eq!(c.active_calls(), 0);
}

fn requests(c: &mut SipCore) -> Vec<message::Request> {
    out(c)
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn agent_call() -> OutboundCall {
    OutboundCall {
        uri: "sip:care@127.0.0.1:5070".into(),
        peer: peer("127.0.0.1"),
        local_media: "127.0.0.1:20002".parse().unwrap(),
        from_user: Some("+15550100110".into()),
        from_display: Some("Dana \"D\" Whitfield".into()),
        headers: vec![("X-Attendant-Context".into(), "call-1".into())],
        ring_timeout: Duration::from_secs(20),
    }
}

/// The agent's response to our INVITE `inv` (To tag `agent` on finals).
fn answer_to(inv: &message::Request, code: u16, body: &str) -> String {
    let mut r = message::response_to(inv, code, (code > 100).then_some("agent"));
    if code == 200 {
        r.headers.push("Contact", "<sip:care@127.0.0.1:5072>");
        r.headers.push("Record-Route", "<sip:proxy1;lr>");
        r.headers.push("Record-Route", "<sip:proxy2;lr>");
        r.headers.push("Content-Type", "application/sdp");
        r.body = body.as_bytes().to_vec();
    }
    String::from_utf8(r.to_bytes()).unwrap()
}

#[test]
fn placed_call_retransmits_then_is_answered_acked_and_hung_up() {
    let mut c = core();
    let t0 = Instant::now();
    let id = c.invite(t0, agent_call()).unwrap();
    let inv = requests(&mut c).remove(0);
    assert_eq!(inv.method, "INVITE");
    assert_eq!(inv.uri, "sip:care@127.0.0.1:5070");
    assert_eq!(inv.headers.get("X-Attendant-Context"), Some("call-1"));
    let from = inv.from().unwrap();
    assert_eq!(from.display.as_deref(), Some("Dana D Whitfield"));
    assert_eq!(
        message::uri_user(&from.uri).as_deref(),
        Some("+15550100110")
    );
    let offer = sdp::parse(&inv.body).unwrap();
    assert_eq!(offer.port, 20002);
    // Timer A: T1, then 2·T1 (no T2 cap for INVITE).
    c.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(requests(&mut c).len(), 1);
    c.handle_timeout(t0 + Duration::from_millis(250));
    assert!(requests(&mut c).is_empty());
    c.handle_timeout(t0 + Duration::from_millis(300));
    assert_eq!(requests(&mut c).len(), 1);
    // Ringing stops the retransmissions.
    c.handle(t0, peer("127.0.0.1"), answer_to(&inv, 180, "").as_bytes());
    c.handle_timeout(t0 + Duration::from_millis(1000));
    assert!(requests(&mut c).is_empty());
    assert!(events(&mut c).is_empty());
    // Answered: ACK to the Contact through the route set, media event.
    let ok = answer_to(&inv, 200, OFFER);
    c.handle(t0, peer("127.0.0.1"), ok.as_bytes());
    let ack = requests(&mut c).remove(0);
    assert_eq!(ack.method, "ACK");
    assert_eq!(ack.uri, "sip:care@127.0.0.1:5072");
    assert_eq!(ack.cseq(), (1, "ACK".into()));
    assert_eq!(
        ack.headers.get_all("Route"),
        vec!["<sip:proxy2;lr>", "<sip:proxy1;lr>"]
    );
    assert_ne!(ack.top_via().unwrap().branch, inv.top_via().unwrap().branch);
    assert_eq!(ack.to().unwrap().tag.as_deref(), Some("agent"));
    let ev = events(&mut c);
    assert!(
        matches!(&ev[..], [Event::Media { id: i, remote, .. }] if *i == id && remote.port == 6000),
        "{ev:?}"
    );
    // A retransmitted 200 gets the same ACK again.
    c.handle(t0, peer("127.0.0.1"), ok.as_bytes());
    assert_eq!(requests(&mut c)[0].to_bytes(), ack.to_bytes());
    // Our BYE: our From tag, their To tag, next CSeq.
    c.hangup(t0, &id).unwrap();
    let bye = requests(&mut c).remove(0);
    assert_eq!(bye.method, "BYE");
    assert_eq!(bye.cseq(), (2, "BYE".into()));
    assert_eq!(bye.from().unwrap().tag, from.tag);
    assert_eq!(bye.to().unwrap().tag.as_deref(), Some("agent"));
    let r = message::response_to(&bye, 200, None);
    c.handle(t0, peer("127.0.0.1"), &r.to_bytes());
    assert_eq!(
        events(&mut c),
        vec![Event::Ended {
            id,
            reason: EndReason::LocalBye
        }]
    );
    assert_eq!(c.active_calls(), 0);
}

#[test]
fn placed_call_busy_is_acked_and_the_agent_can_hang_up() {
    let mut c = core();
    let t0 = Instant::now();
    let id = c.invite(t0, agent_call()).unwrap();
    let inv = requests(&mut c).remove(0);
    let busy = answer_to(&inv, 486, "");
    c.handle(t0, peer("127.0.0.1"), busy.as_bytes());
    let ack = requests(&mut c).remove(0);
    assert_eq!(ack.method, "ACK");
    assert_eq!(
        ack.uri, inv.uri,
        "a failure's ACK goes where the INVITE went"
    );
    assert_eq!(ack.top_via().unwrap().branch, inv.top_via().unwrap().branch);
    assert_eq!(
        events(&mut c),
        vec![Event::Ended {
            id: id.clone(),
            reason: EndReason::Rejected(486)
        }]
    );
    c.handle(t0, peer("127.0.0.1"), busy.as_bytes());
    assert_eq!(
        requests(&mut c)[0].method,
        "ACK",
        "retransmitted 486 re-ACKed"
    );
    assert_eq!(c.active_calls(), 0);

    // Answered, then the agent hangs up.
    let id = c.invite(t0, agent_call()).unwrap();
    let inv = requests(&mut c).remove(0);
    c.handle(
        t0,
        peer("127.0.0.1"),
        answer_to(&inv, 200, OFFER).as_bytes(),
    );
    requests(&mut c);
    events(&mut c);
    let our_tag = inv.from().unwrap().tag.unwrap();
    let bye = format!(
        "BYE sip:attendant@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKab\r\n\
         From: <sip:care@127.0.0.1>;tag=agent\r\nTo: <sip:care@127.0.0.1:5070>;tag={our_tag}\r\n\
         Call-ID: {id}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    c.handle(t0, peer("127.0.0.1"), bye.as_bytes());
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    assert_eq!(
        events(&mut c),
        vec![Event::Ended {
            id,
            reason: EndReason::RemoteBye
        }]
    );
}

#[test]
fn placed_call_is_cancelled_after_ringing_and_on_ring_timeout() {
    let mut c = core();
    let t0 = Instant::now();
    // Hung up before any answer: the CANCEL waits for the 180.
    let id = c.invite(t0, agent_call()).unwrap();
    let inv = requests(&mut c).remove(0);
    c.hangup(t0, &id).unwrap();
    assert!(
        requests(&mut c).is_empty(),
        "no CANCEL before a provisional"
    );
    c.handle(t0, peer("127.0.0.1"), answer_to(&inv, 180, "").as_bytes());
    let cancel = requests(&mut c).remove(0);
    assert_eq!(cancel.method, "CANCEL");
    assert_eq!(cancel.cseq(), (1, "CANCEL".into()));
    assert_eq!(
        cancel.top_via().unwrap().branch,
        inv.top_via().unwrap().branch
    );
    c.handle(
        t0,
        peer("127.0.0.1"),
        &message::response_to(&cancel, 200, Some("agent")).to_bytes(),
    );
    c.handle(t0, peer("127.0.0.1"), answer_to(&inv, 487, "").as_bytes());
    assert_eq!(requests(&mut c)[0].method, "ACK");
    assert_eq!(
        events(&mut c),
        vec![Event::Ended {
            id,
            reason: EndReason::Cancelled
        }]
    );

    // Rings past the ring timeout: CANCEL; the 200 that crosses it is
    // ACKed and ended with BYE.
    let mut call = agent_call();
    call.ring_timeout = Duration::from_secs(5);
    let id = c.invite(t0, call).unwrap();
    let inv = requests(&mut c).remove(0);
    c.handle(t0, peer("127.0.0.1"), answer_to(&inv, 180, "").as_bytes());
    assert!(c.poll_timeout().unwrap() <= t0 + Duration::from_secs(5));
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(requests(&mut c)[0].method, "CANCEL");
    c.handle(
        t0,
        peer("127.0.0.1"),
        answer_to(&inv, 200, OFFER).as_bytes(),
    );
    let sent = requests(&mut c);
    let methods: Vec<&str> = sent.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    assert_eq!(sent[1].call_id(), id);
    assert!(
        events(&mut c).is_empty(),
        "no media for a call we cancelled"
    );

    // Nobody there at all: Timer B ends it with 408.
    let mut c = core();
    let id = c.invite(t0, agent_call()).unwrap();
    let mut t = t0;
    while let Some(next) = c.poll_timeout() {
        t = next;
        c.handle_timeout(t);
        let ev = events(&mut c);
        if !ev.is_empty() {
            assert_eq!(
                ev,
                vec![Event::Ended {
                    id: id.clone(),
                    reason: EndReason::Rejected(408)
                }]
            );
            break;
        }
        assert!(t < t0 + Duration::from_secs(10));
    }
    assert_eq!(t, t0 + Duration::from_millis(6400), "64·T1");
    assert_eq!(c.active_calls(), 0);
}

#[test]
fn over_tls_our_contact_and_via_say_so_and_only_the_2xx_is_resent() {
    let mut c = core();
    let t0 = Instant::now();
    let tls = Peer {
        transport: Transport::Tls,
        local: "127.0.0.1:5061".parse().unwrap(),
        ..peer("127.0.0.1")
    };
    let inv = invite("t1", "z9hG4bKt", None, OFFER).replace("SIP/2.0/UDP", "SIP/2.0/TLS");
    c.handle(t0, tls, inv.as_bytes());
    assert!(matches!(events(&mut c)[..], [Event::Incoming(_)]));
    c.accept(t0, "t1", "127.0.0.1:20000".parse().unwrap())
        .unwrap();
    let sent: Vec<Transmit> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert!(sent.iter().all(|t| t.to == tls), "answers go back over TLS");
    let r = responses_of(&sent);
    assert_eq!(codes(&r), vec![100, 200]);
    let contact = r[1].headers.get("Contact").unwrap();
    assert_eq!(contact, "<sip:attendant@127.0.0.1:5061;transport=tls>");
    // The 2xx is still resent until the ACK, whatever the transport (RFC
    // 3261 §13.3.1.4: the ACK is end to end, proxies may sit between).
    c.handle_timeout(t0 + Duration::from_millis(100));
    assert_eq!(codes(&responses(&mut c)), vec![200]);
    let tag = to_tag(&r[1]);
    let ack = request("ACK", "t1", "z9hG4bKta", &tag, 1, "", "").replace("/UDP", "/TLS");
    c.handle(t0, tls, ack.as_bytes());
    events(&mut c);
    c.hangup(t0, "t1").unwrap();
    let Message::Request(bye) = &out(&mut c)[0] else {
        panic!()
    };
    assert!(bye
        .headers
        .get("Via")
        .unwrap()
        .starts_with("SIP/2.0/TLS 127.0.0.1:5061;"));
    c.handle_timeout(t0 + Duration::from_secs(2));
    assert!(out(&mut c).is_empty(), "no Timer E over TLS");
}

fn responses_of(sent: &[Transmit]) -> Vec<Response> {
    sent.iter()
        .filter_map(|t| match message::parse(&t.data).unwrap() {
            Message::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

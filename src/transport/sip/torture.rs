//! RFC 4475 ("SIP Torture Test Messages"), every case, against our parser
//! and user-agent core. The messages are written here afresh, one per
//! section, each carrying the torture its section describes (folding,
//! escapes, odd tokens, duplicated or missing fields, bad scalars…); hosts
//! are RFC 2606 names. Valid messages must be understood (and answered as a
//! UAS answers that method); invalid requests get the status the RFC asks
//! for; bad responses are dropped.
//!
//! Where RFC 3261 lets a UAS check the method first (§8.2.1), a REGISTER or
//! MESSAGE case is answered 405 whatever else is wrong with it: we are not a
//! registrar.

use std::time::Instant;

use super::config::{SipConfig, DEFAULT_TOML};
use super::core::{Event, Peer, SipCore, Transport};
use super::message::{self, Message};

/// Line ends become CRLF; `$LEN` becomes the body's length in bytes.
fn wire(head: &str, body: &str) -> Vec<u8> {
    let head = head.replace("$LEN", &body.len().to_string());
    let mut out = head
        .trim_start_matches('\n')
        .replace('\n', "\r\n")
        .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

const SDP: &str = "v=0\r\no=tester 2890 2890 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

#[derive(Debug)]
enum Want {
    /// A new call reached the application (an INVITE understood).
    Call,
    /// This final answer.
    Status(u16),
    /// No answer at all (a response, or nothing to answer to).
    Dropped,
}

struct Outcome {
    statuses: Vec<u16>,
    calls: usize,
}

/// Our UAS with the embedded trunk config, and a peer it admits.
fn uas() -> (SipCore, Peer) {
    let mut cfg = SipConfig::parse(DEFAULT_TOML, "default").unwrap();
    cfg.timers.t1_ms = 100;
    let peer = Peer {
        addr: "127.0.0.1:5070".parse().unwrap(),
        transport: Transport::Udp,
        local: "127.0.0.1:5060".parse().unwrap(),
    };
    (SipCore::new(cfg), peer)
}

fn feed(data: &[u8]) -> Outcome {
    let (mut core, peer) = uas();
    core.handle(Instant::now(), peer, data);
    // Status lines only: an answer to a bad request echoes its bad fields.
    let statuses = std::iter::from_fn(|| core.poll_transmit())
        .filter_map(|t| {
            let text = String::from_utf8_lossy(&t.data).into_owned();
            text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse::<u16>().ok()
        })
        .filter(|c| *c >= 200)
        .collect();
    let calls = std::iter::from_fn(|| core.poll_event())
        .filter(|e| matches!(e, Event::Incoming(_)))
        .count();
    Outcome { statuses, calls }
}

fn check(name: &str, data: &[u8], want: Want) {
    let got = feed(data);
    let ok = match want {
        Want::Call => got.calls == 1 && got.statuses.is_empty(),
        Want::Status(c) => got.statuses == vec![c] && got.calls == 0,
        Want::Dropped => got.statuses.is_empty() && got.calls == 0,
    };
    assert!(
        ok,
        "{name}: wanted {want:?}, got statuses {:?} and {} call(s)",
        got.statuses, got.calls
    );
}

fn request(data: &[u8]) -> message::Request {
    match message::parse(data) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

// ---- 3.1.1: valid messages -------------------------------------------------

#[test]
fn wsinv_short_tortuous_invite() {
    // Folding everywhere, LWS around every separator, mixed-case and compact
    // names, an empty Subject, unknown headers (one with a value that is not
    // generic-param syntax), leading zeros, a valueless URI parameter.
    let m = wire(
        r#"
INVITE sip:ann@chair.example.com;oddparam SIP/2.0
TO :
 sip:ann@chair.example.com ;   tag    = 8821aq
from   : "B Rosen \\\""       <sip:brosen@example.com>
  ;
  tag = 77zzq
MaX-fOrWaRdS: 0068
Call-ID: wsinv.kd92j3@192.0.2.1
Content-Length   : $LEN
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;rport;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:brosen@192.0.2.4> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

"#,
        SDP,
    );
    let r = request(&m);
    assert_eq!(r.call_id(), "wsinv.kd92j3@192.0.2.1");
    assert_eq!(r.top_via().unwrap().branch.as_deref(), Some("390skdjuw"));
    assert_eq!(r.headers.get_all("Via").len(), 3);
    assert_eq!(
        message::parse_cseq(r.headers.get("CSeq").unwrap()),
        Some((9, "INVITE".into()))
    );
    let from = r.from().unwrap();
    assert_eq!(from.tag.as_deref(), Some("77zzq"));
    assert_eq!(from.uri, "sip:brosen@example.com");
    assert_eq!(r.to().unwrap().tag.as_deref(), Some("8821aq"));
    assert_eq!(r.body, SDP.as_bytes());
    // It carries a To tag for a dialog we never made: 481, not 400.
    check("wsinv", &m, Want::Status(481));
}

#[test]
fn intmeth_wide_range_of_valid_characters() {
    let method = "!interesting-Method0123456789_*+`.%indeed'~";
    let m = wire(
        &format!(
            "
{method} sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0
Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~
To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\" <sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}}{{
CSeq: 139122385 {method}
Max-Forwards: 255
extensionHeader-!.%*+_`'~:\u{feff}\u{5927}\u{505c}\u{96fb}
Content-Length: 0

"
        ),
        "",
    );
    let r = request(&m);
    assert_eq!(r.method, method);
    assert_eq!(r.from().unwrap().tag.as_deref(), Some("_token~1'+`*%!-."));
    assert_eq!(
        r.from().unwrap().display.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    // An unknown method, understood as one.
    check("intmeth", &m, Want::Status(501));
}

#[test]
fn esc01_valid_percent_escapes() {
    let m = wire(
        "
INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: $LEN

",
        SDP,
    );
    check("esc01", &m, Want::Call);
}

#[test]
fn escnull_escaped_nulls_in_uris() {
    let m = wire(
        "
REGISTER sip:example.com SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd
CSeq: 14398234 REGISTER
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

",
        "",
    );
    request(&m);
    check("escnull", &m, Want::Status(405));
}

#[test]
fn esc02_percent_that_is_not_an_escape() {
    // RE%47IST%45R is an unknown method, not REGISTER.
    let m = wire(
        "
RE%47IST%45R sip:registrar.example.com SIP/2.0
To: \"%Z%45\" <sip:resource@example.com>
From: \"%Z%45\" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

",
        "",
    );
    assert_eq!(request(&m).method, "RE%47IST%45R");
    check("esc02", &m, Want::Status(501));
}

#[test]
fn lwsdisp_no_space_before_the_bracket() {
    let m = wire(
        "
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

",
        "",
    );
    assert_eq!(
        request(&m).from().unwrap().display.as_deref(),
        Some("caller")
    );
    check("lwsdisp", &m, Want::Status(200));
}

#[test]
fn longreq_long_values_everywhere() {
    let long = "very".repeat(80);
    let vias: String = (0..40)
        .map(|i| format!("Via: SIP/2.0/TCP sip{i}.example.com;branch=z9hG4bK{long}{i}\n"))
        .collect();
    let m = wire(
        &format!(
            "
INVITE sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{long}
{vias}To: \"I have a user name of {long} proportion\" <sip:user@example.com:6000;unknownparam={long};longparam{long}>
From: sip:{long}@example.com;tag={long}
Call-ID: longreq.one{long}
CSeq: 3882340 INVITE
Max-Forwards: 70
Unknown-{long}-Header: unknown-{long}-value; unknown-{long}-parameter-name = unknown-{long}-parameter-value
Contact: <sip:amazinglylongcallername{long}@host5.example.net>
Content-Type: application/sdp
l: $LEN

"
        ),
        SDP,
    );
    assert!(m.len() > 15_000, "{} bytes", m.len());
    let r = request(&m);
    assert_eq!(r.headers.get_all("Via").len(), 41);
    assert_eq!(r.from().unwrap().tag.as_deref(), Some(long.as_str()));
    check("longreq", &m, Want::Call);
}

#[test]
fn dblreq_extra_octets_after_the_body_are_ignored() {
    let first = wire(
        "
OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8814
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw0a
Max-Forwards: 70
Call-ID: dblreq.0ha0isndaksdj99sdfafnl3lk233412
CSeq: 8 OPTIONS
l: 0

",
        "",
    );
    let second = wire(
        "
INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: $LEN

",
        SDP,
    );
    let mut m = first;
    m.extend(second);
    // The OPTIONS is answered; the INVITE riding after it is not a call.
    check("dblreq", &m, Want::Status(200));
}

#[test]
fn semiuri_semicolons_in_the_user_part() {
    let m = wire(
        "
OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

",
        "",
    );
    check("semiuri", &m, Want::Status(200));
}

#[test]
fn transports_varied_and_unknown_via_transports() {
    let m = wire(
        "
OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

",
        "",
    );
    assert_eq!(request(&m).headers.get_all("Via").len(), 5);
    check("transports", &m, Want::Status(200));
}

#[test]
fn mpart01_multipart_body() {
    let body = "--boundary42\r\nContent-Type: text/plain\r\n\r\nhello\r\n--boundary42\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\u{1}\u{2}\u{3}\r\n--boundary42--\r\n";
    let m = wire(
        "
MESSAGE sip:kumiko@example.org SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-d8754z-c2ac7de1b3ce90f7-1---d8754z-;rport
Max-Forwards: 70
To: <sip:kumiko@example.org>
From: <sip:fluffy@example.com>;tag=2fb0dcc9
Call-ID: 3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..
CSeq: 1 MESSAGE
Content-Transfer-Encoding: binary
Content-Type: multipart/mixed;boundary=boundary42
Content-Length: $LEN

",
        body,
    );
    assert_eq!(request(&m).body, body.as_bytes());
    check("mpart01", &m, Want::Status(405));
}

#[test]
fn unreason_and_noreason_responses_parse_and_are_dropped() {
    let unreason = wire(
        "
SIP/2.0 200 = 2**3 * 5**2 \u{43d}\u{43e} \u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{43d}\u{43e}\u{441}\u{442}\u{43e} \u{434}\u{435}\u{432}\u{44f}\u{442}\u{44c} - \u{43f}\u{440}\u{43e}\u{441}\u{442}\u{43e}\u{435}
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: $LEN
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

",
        SDP,
    );
    let noreason = wire(
        "
SIP/2.0 100 \nVia: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
        "",
    );
    for (name, m) in [("unreason", unreason), ("noreason", noreason)] {
        assert!(
            matches!(message::parse(&m), Ok(Message::Response(_))),
            "{name}"
        );
        check(name, &m, Want::Dropped);
    }
}

// ---- 3.1.2: invalid messages -----------------------------------------------

/// An OPTIONS with one header line replaced.
fn options_with(call: &str, replace: &str, with: &str) -> Vec<u8> {
    let base = format!(
        "
OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bK{call}
To: sip:user@example.com
From: <sip:caller@example.net>;tag=134161461246
Max-Forwards: 70
Call-ID: {call}.0ha0isndaksdjasdf3234nas
CSeq: 8 OPTIONS
l: 0

"
    );
    assert!(base.contains(replace), "{replace}");
    wire(&base.replacen(replace, with, 1), "")
}

#[test]
fn badinv01_extraneous_separators() {
    let m = wire(
        "
INVITE sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;;,;,,
Contact: \"Joe\" <sip:joe@example.org>;;;;
Content-Length: $LEN
Content-Type: application/sdp

",
        SDP,
    );
    check("badinv01", &m, Want::Status(400));
}

#[test]
fn clerr_content_length_past_the_datagram() {
    let m = wire(
        "
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

",
        SDP,
    );
    check("clerr", &m, Want::Status(400));
}

#[test]
fn ncl_negative_content_length() {
    let m = wire(
        "
INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

",
        SDP,
    );
    check("ncl", &m, Want::Status(400));
}

#[test]
fn scalar02_overlarge_request_scalars() {
    let m = wire(
        "
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000000000000000000000000000000000000000000000000000000000
Contact: <sip:user@host129.example.com>
  ;expires=280297596632815
Content-Length: 0

",
        "",
    );
    // The CSeq cannot be read, so not even the method check can run.
    check("scalar02", &m, Want::Status(400));
    let m = options_with("scalar02b", "Max-Forwards: 70", "Max-Forwards: 300");
    check("scalar02 Max-Forwards", &m, Want::Status(400));
}

#[test]
fn scalarlg_and_bigcode_bad_responses_are_dropped() {
    let scalarlg = wire(
        "
SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Warning: 1812 overture \"In Progress\"
Content-Length: 0

",
        "",
    );
    let bigcode = wire(
        "
SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

",
        "",
    );
    check("scalarlg", &scalarlg, Want::Dropped);
    check("bigcode", &bigcode, Want::Dropped);
}

#[test]
fn quotbal_unterminated_quoted_display_name() {
    let m = options_with(
        "quotbal",
        "To: sip:user@example.com",
        "To: \"Mr. J. User <sip:j.user@example.com>",
    );
    check("quotbal", &m, Want::Status(400));
}

#[test]
fn request_line_tortures() {
    let base = |line: &str, call: &str| {
        let m = options_with(call, "OPTIONS sip:user@example.com SIP/2.0", line);
        check(call, &m, Want::Status(400));
    };
    // ltgtruri: <> around the Request-URI.
    base("OPTIONS <sip:user@example.com> SIP/2.0", "ltgtruri");
    // lwsruri: whitespace inside the Request-URI.
    base("OPTIONS sip:user@example.com; lr SIP/2.0", "lwsruri");
    // lwsstart: more than one SP between elements.
    base("OPTIONS  sip:user@example.com  SIP/2.0", "lwsstart");
    // trws: SP after the version.
    base("OPTIONS sip:user@example.com SIP/2.0 ", "trws");
    // escruri: escaped headers in a SIP Request-URI.
    base(
        "OPTIONS sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0",
        "escruri",
    );
}

#[test]
fn baddate_non_gmt_date_is_ignored_by_a_uas_that_does_not_use_it() {
    // §3.1.2.12: rejecting is allowed but not wanted unless the Date matters.
    let m = wire(
        "
INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=2234923
Max-Forwards: 70
Call-ID: baddate.239423mnsadf3j23lj42--sedfnm234
CSeq: 1392934 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
Date: Fri, 01 Jan 2010 16:00:00 EST
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: $LEN

",
        SDP,
    );
    check("baddate", &m, Want::Call);
}

#[test]
fn regbadct_register_is_refused_by_method_first() {
    let m = wire(
        "
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

",
        "",
    );
    check("regbadct", &m, Want::Status(405));
}

#[test]
fn badaspec_spaces_inside_the_addr_spec() {
    let m = options_with(
        "badaspec",
        "To: sip:user@example.com",
        "To: \"Watson, Thomas\" < sip:t.watson@example.org >",
    );
    check("badaspec", &m, Want::Status(400));
}

#[test]
fn baddn_unquoted_display_name_with_non_token_characters() {
    let m = options_with(
        "baddn",
        "From: <sip:caller@example.net>;tag=134161461246",
        "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
    );
    check("baddn", &m, Want::Status(400));
}

#[test]
fn badvers_unknown_protocol_version() {
    let m = wire(
        "
OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

",
        "",
    );
    check("badvers", &m, Want::Status(505));
}

#[test]
fn mismatch01_and_02_cseq_method_differs_from_the_request() {
    let m = options_with("mismatch01", "CSeq: 8 OPTIONS", "CSeq: 8 INVITE");
    check("mismatch01", &m, Want::Status(400));
    let m = wire(
        "
NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw
Content-Type: application/sdp
l: $LEN

",
        SDP,
    );
    check("mismatch02", &m, Want::Status(400));
}

// ---- 3.2: transaction layer ------------------------------------------------

#[test]
fn badbranch_magic_cookie_alone_is_still_a_request() {
    let m = options_with(
        "badbranch",
        "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKbadbranch",
        "Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bK",
    );
    check("badbranch", &m, Want::Status(200));
}

// ---- 3.3: application layer ------------------------------------------------

#[test]
fn insuf_missing_required_headers_is_dropped() {
    // No Call-ID, From or To: nothing a response could be matched with.
    let m = wire(
        "
INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: $LEN

",
        SDP,
    );
    check("insuf", &m, Want::Dropped);
}

#[test]
fn unkscm_and_novelsc_unsupported_uri_schemes() {
    let m = options_with(
        "unkscm",
        "OPTIONS sip:user@example.com SIP/2.0",
        "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
    );
    check("unkscm", &m, Want::Status(416));
    let m = options_with(
        "novelsc",
        "OPTIONS sip:user@example.com SIP/2.0",
        "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0",
    );
    check("novelsc", &m, Want::Status(416));
}

#[test]
fn unksm2_unknown_schemes_in_headers() {
    let m = wire(
        "
REGISTER sip:example.com SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw
Contact: <name:John_Smith>
l: 0

",
        "",
    );
    check("unksm2", &m, Want::Status(405));
    // The same schemes on an OPTIONS: understood, answered.
    let m = options_with("unksm2b", "To: sip:user@example.com", "To: isbn:2983792873");
    check("unksm2 OPTIONS", &m, Want::Status(200));
}

#[test]
fn bext01_unknown_required_extensions() {
    let m = options_with(
        "bext01",
        "Max-Forwards: 70",
        "Max-Forwards: 70\nRequire: nothingSupportedHere, nothingHereEither\nProxy-Require: noProxiesSupportThis",
    );
    let (mut core, peer) = uas();
    core.handle(Instant::now(), peer, &m);
    let t = core.poll_transmit().expect("an answer");
    let Ok(Message::Response(r)) = message::parse(&t.data) else {
        panic!("a response")
    };
    assert_eq!(r.code, 420);
    assert_eq!(
        r.headers.get("Unsupported"),
        Some("nothingSupportedHere, nothingHereEither")
    );
}

#[test]
fn invut_unknown_content_type() {
    let m = wire(
        "
INVITE sip:user@example.com SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d
CSeq: 235448 INVITE
Via: SIP/2.0/UDP somehost.example.com;branch=z9hG4bKkdjuw
Content-Type: application/unknownformat
Content-Length: $LEN

",
        "<audio>\r\n <pcmu port=\"443\"/>\r\n</audio>\r\n",
    );
    check("invut", &m, Want::Status(415));
}

#[test]
fn regaut01_cparam_regescrt_register_cases() {
    for (name, contact) in [
        ("regaut01", "<sip:user@host.example.com>"),
        (
            "cparam01",
            "<sip:user@host4.example.com;maddr=192.0.2.5>;expires=0",
        ),
        (
            "cparam02",
            "\"The Server\" <sip:user@host4.example.com;user=phone>;foo=bar",
        ),
        (
            "regescrt",
            "<sip:user@host4.example.com?Route=%3Csip:sip.example.com%3E>",
        ),
    ] {
        let m = wire(
            &format!(
                "
REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=8{name}
Max-Forwards: 70
Call-ID: {name}.0ha0isndaksdjasdfs
CSeq: 9338 REGISTER
Via: SIP/2.0/UDP 192.0.2.253;branch=z9hG4bKkdjuw{name}
Authorization: NoOneKnowsThisScheme opaque-data=here
Contact: {contact}
l: 0

"
            ),
            "",
        );
        check(name, &m, Want::Status(405));
    }
}

#[test]
fn multi01_and_mcl01_repeated_single_value_headers() {
    let m = wire(
        "
INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: $LEN
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5

",
        SDP,
    );
    check("multi01", &m, Want::Status(400));
    let m = wire(
        "
OPTIONS sip:user@example.com SIP/2.0
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
From: <sip:caller@example.com>;tag=432432
To: <sip:user@example.com>
Max-Forwards: 70
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
Content-Length: 0
Content-Length: 11
Content-Type: text/plain

hello world",
        "",
    );
    check("mcl01", &m, Want::Status(400));
}

#[test]
fn bcast_response_to_a_broadcast_via_is_dropped() {
    let m = wire(
        "
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23
Call-ID: bcast.0384840201234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: $LEN
Content-Type: application/sdp
Contact: <sip:user@host28.example.com>

",
        SDP,
    );
    check("bcast", &m, Want::Dropped);
}

#[test]
fn zeromf_max_forwards_zero_to_the_uas_itself() {
    // Zero Max-Forwards stops a proxy, not the UAS it is addressed to.
    let m = options_with("zeromf", "Max-Forwards: 70", "Max-Forwards: 0");
    check("zeromf", &m, Want::Status(200));
}

#[test]
fn sdp01_accept_that_excludes_sdp() {
    let m = wire(
        "
INVITE sip:user@example.com SIP/2.0
To: sip:j_user@example.com
Contact: <sip:caller@host15.example.net>
From: sip:caller@example.net;tag=234
Max-Forwards: 5
Call-ID: sdp01.ndaksdj9342dasdd
Accept: text/nobodyKnowsThis
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw
Content-Length: $LEN
Content-Type: application/sdp

",
        SDP,
    );
    check("sdp01", &m, Want::Status(406));
}

// ---- 3.4: backward compatibility -------------------------------------------

#[test]
fn inv2543_an_rfc_2543_invite() {
    // No branch, no Max-Forwards, no To tag, Via without cookie.
    let m = wire(
        "
INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1
From: <sip:UserA@example.com>;tag=inv2543tag
To: <sip:UserB@example.com>
Call-ID: inv2543.0ha0isndaksdj@192.0.2.196
CSeq: 1 INVITE
Contact: <sip:UserA@127.0.0.1>
Content-Type: application/sdp
Content-Length: $LEN

",
        SDP,
    );
    check("inv2543", &m, Want::Call);
}

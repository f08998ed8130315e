//! sipp scenario pieces shared by the SIP test binaries (adapted from
//! SIPp's uac_pcap.xml and the Asterisk test suite's REFER alice.xml).

use std::path::Path;

/// A whole scenario file's text around `body`.
pub fn scenario_xml(name: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\" ?>\n<scenario name=\"{name}\">\n{body}</scenario>\n"
    )
}

/// The caller's INVITE with one codec and RFC 4733 events.
pub fn invite_msg(
    codec: &str,
    pt: u8,
    media_port: impl std::fmt::Display,
    cseq: u32,
    auth: bool,
) -> String {
    let auth = if auth { "[authentication]\n" } else { "" };
    format!(
        r#"<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
{auth}Contact: sip:sipp@[local_ip]:[local_port];transport=[transport]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP4 [local_ip]
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {media_port} RTP/AVP {pt} 101
a=rtpmap:{pt} {codec}/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
]]></send>
"#
    )
}

pub fn ack_msg(cseq: u32) -> String {
    format!(
        r#"<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0
]]></send>
"#
    )
}

pub const ANSWERED: &str = "<recv response=\"100\" optional=\"true\"/>\n<recv response=\"180\" optional=\"true\"/>\n<recv response=\"200\" rtd=\"true\"/>\n";

pub fn invite(codec: &str, pt: u8, media_port: impl std::fmt::Display) -> String {
    [
        invite_msg(codec, pt, media_port, 1, false),
        ANSWERED.to_string(),
        ack_msg(1),
    ]
    .concat()
}

pub fn pause(ms: u64) -> String {
    format!("<pause milliseconds=\"{ms}\"/>\n")
}

pub fn play(pcap: &Path) -> String {
    format!(
        "<nop><action><exec play_pcap_audio=\"{}\"/></action></nop>\n",
        pcap.display()
    )
}

pub fn caller_bye(cseq: u32) -> String {
    format!(
        r#"<send retrans="500"><![CDATA[
BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Test Caller" <sip:+15550100123@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: {cseq} BYE
Max-Forwards: 70
Content-Length: 0
]]></send>
<recv response="200"/>
"#
    )
}

pub const ANSWER_LAST: &str = r#"<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
]]></send>
"#;

pub fn bot_bye() -> String {
    format!("<recv request=\"BYE\" timeout=\"40000\"/>\n{ANSWER_LAST}")
}

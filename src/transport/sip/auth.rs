//! Who may call: trunks matched by source address (CIDR), optionally with
//! digest credentials (RFC 3261 §22, RFC 2617 MD5 with qop=auth). Nonces are
//! stateless — a timestamp signed with a per-process key — so an
//! unauthenticated INVITE costs no memory.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use super::config::Trunk;

const NONCE_TTL_S: u64 = 300;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Allowed(&'a Trunk),
    /// No trunk admits this source.
    Forbidden,
    /// A trunk admits the source but wants credentials (`stale`: the nonce
    /// was ours but too old).
    Challenge {
        stale: bool,
    },
}

pub struct Authenticator {
    key: [u8; 32],
    pub realm: String,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// `Digest k=v, k="v"` parameters.
pub fn parse_digest(v: &str) -> Option<Vec<(String, String)>> {
    let rest = v.trim().strip_prefix("Digest")?.trim_start();
    let mut out = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((k, val));
        s = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(out)
}

impl Authenticator {
    pub fn new(realm: &str) -> Self {
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
        Self {
            key,
            realm: realm.to_string(),
        }
    }

    fn sign(&self, ts: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&ts.to_be_bytes());
        format!("{ts:x}.{}", hex::encode(&mac.finalize().into_bytes()[..12]))
    }

    pub fn nonce(&self) -> String {
        self.sign(now_s())
    }

    /// Ok(true) fresh, Ok(false) ours but expired, Err forged.
    fn nonce_fresh(&self, nonce: &str) -> Result<bool, ()> {
        let (ts, _) = nonce.split_once('.').ok_or(())?;
        let ts = u64::from_str_radix(ts, 16).map_err(|_| ())?;
        if self.sign(ts) != nonce {
            return Err(());
        }
        Ok(now_s().saturating_sub(ts) <= NONCE_TTL_S)
    }

    pub fn challenge(&self, stale: bool) -> String {
        format!(
            "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5, qop=\"auth\"{}",
            self.realm,
            self.nonce(),
            if stale { ", stale=true" } else { "" }
        )
    }

    /// Decides on a request from `source` carrying `authorization` (if any).
    pub fn check<'t>(
        &self,
        trunks: &'t [Trunk],
        source: IpAddr,
        method: &str,
        authorization: Option<&str>,
    ) -> Verdict<'t> {
        let admitting: Vec<&Trunk> = trunks.iter().filter(|t| t.admits(source)).collect();
        if admitting.is_empty() {
            return Verdict::Forbidden;
        }
        if let Some(open) = admitting.iter().find(|t| t.username.is_empty()) {
            return Verdict::Allowed(open);
        }
        let Some(params) = authorization.and_then(parse_digest) else {
            return Verdict::Challenge { stale: false };
        };
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let user = get("username");
        let Some(trunk) = admitting.iter().find(|t| t.username == user) else {
            return Verdict::Challenge { stale: false };
        };
        if get("realm") != self.realm {
            return Verdict::Challenge { stale: false };
        }
        match self.nonce_fresh(get("nonce")) {
            Ok(true) => {}
            Ok(false) => return Verdict::Challenge { stale: true },
            Err(()) => return Verdict::Challenge { stale: false },
        }
        let ha1 = md5_hex(&format!("{user}:{}:{}", self.realm, trunk.password));
        let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
        let expected = match get("qop") {
            "" => md5_hex(&format!("{ha1}:{}:{ha2}", get("nonce"))),
            "auth" => md5_hex(&format!(
                "{ha1}:{}:{}:{}:auth:{ha2}",
                get("nonce"),
                get("nc"),
                get("cnonce")
            )),
            _ => return Verdict::Challenge { stale: false },
        };
        if expected.eq_ignore_ascii_case(get("response")) {
            Verdict::Allowed(trunk)
        } else {
            Verdict::Challenge { stale: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(sources: &[&str], user: &str) -> Trunk {
        Trunk {
            name: "t".into(),
            sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
            username: user.into(),
            password: if user.is_empty() {
                String::new()
            } else {
                "secret".into()
            },
            trust_identity: true,
        }
    }

    #[test]
    fn sources_and_digest() {
        let a = Authenticator::new("attendant");
        let open = [trunk(&["10.0.0.0/8"], "")];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(matches!(
            a.check(&open, ip("10.1.2.3"), "INVITE", None),
            Verdict::Allowed(_)
        ));
        assert_eq!(
            a.check(&open, ip("192.0.2.1"), "INVITE", None),
            Verdict::Forbidden
        );

        let locked = [trunk(&["127.0.0.1/32"], "pbx")];
        let lo = ip("127.0.0.1");
        assert_eq!(
            a.check(&locked, lo, "INVITE", None),
            Verdict::Challenge { stale: false }
        );
        let nonce = a.nonce();
        let ha1 = md5_hex("pbx:attendant:secret");
        let ha2 = md5_hex("INVITE:sip:1000@127.0.0.1");
        let resp = md5_hex(&format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}"));
        let auth = format!(
            "Digest username=\"pbx\", realm=\"attendant\", nonce=\"{nonce}\", uri=\"sip:1000@127.0.0.1\", response=\"{resp}\", qop=auth, nc=00000001, cnonce=\"abc\", algorithm=MD5"
        );
        assert!(matches!(
            a.check(&locked, lo, "INVITE", Some(&auth)),
            Verdict::Allowed(_)
        ));
        let wrong = auth.replace(&resp, &md5_hex("nope"));
        assert_eq!(
            a.check(&locked, lo, "INVITE", Some(&wrong)),
            Verdict::Challenge { stale: false }
        );
        // A nonce we did not sign, and one that is too old.
        let forged = auth.replace(&nonce, "1.abcdef");
        assert_eq!(
            a.check(&locked, lo, "INVITE", Some(&forged)),
            Verdict::Challenge { stale: false }
        );
        let old = a.sign(now_s() - NONCE_TTL_S - 10);
        let stale = auth.replace(&nonce, &old);
        assert_eq!(
            a.check(&locked, lo, "INVITE", Some(&stale)),
            Verdict::Challenge { stale: true }
        );
        assert_eq!(
            a.check(&locked, lo, "INVITE", Some("Digest garbage")),
            Verdict::Challenge { stale: false }
        );
    }
}

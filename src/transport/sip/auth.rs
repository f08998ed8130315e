//! Who may call: trunks matched by source address (CIDR), optionally with
//! digest credentials (RFC 3261 §22; RFC 8760 SHA-256 offered before MD5,
//! qop=auth). Nonces are a timestamp signed with a per-process key from the
//! OS CSPRNG, so an unauthenticated INVITE costs no memory; each nonce's
//! `nc` is tracked once the password is proved, the digest `uri` must be the
//! Request-URI, and secrets are compared in constant time.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::config::{DigestAlgorithm as Algorithm, Trunk};

const NONCE_TTL_S: u64 = 300;
/// Nonces whose counts we remember. Only requests that proved the password
/// add one, so strangers cannot fill it; the oldest goes first.
const NONCE_MEMORY: usize = 8192;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Allowed(&'a Trunk),
    /// No trunk admits this source.
    Forbidden,
    /// A trunk admits the source but wants credentials (`stale`: the nonce
    /// was ours but too old, or its count was already used).
    Challenge {
        stale: bool,
    },
}

fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s.to_ascii_uppercase().as_str() {
        "" | "MD5" => Some(Algorithm::Md5),
        "SHA-256" => Some(Algorithm::Sha256),
        _ => None,
    }
}

fn name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Sha256 => "SHA-256",
        Algorithm::Md5 => "MD5",
    }
}

fn hex_digest(a: Algorithm, s: &str) -> String {
    match a {
        Algorithm::Md5 => hex::encode(Md5::digest(s.as_bytes())),
        Algorithm::Sha256 => hex::encode(<Sha256 as Digest>::digest(s.as_bytes())),
    }
}

/// Checks digest credentials. Nonces are stateless until a request proves
/// the password; from then on each nonce's last `nc` is kept so a captured
/// Authorization cannot be replayed.
pub struct Authenticator {
    key: [u8; 32],
    pub realm: String,
    /// Nonce timestamps count seconds from here (the first time seen).
    epoch: Option<Instant>,
    /// Highest `nc` used per nonce (0: used once without qop).
    used: HashMap<String, u32>,
    order: VecDeque<String>,
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

/// What a request offers to be checked against.
pub struct Attempt<'r> {
    pub source: IpAddr,
    pub method: &'r str,
    /// The Request-URI: the digest's `uri` must name it.
    pub uri: &'r str,
    pub authorization: Option<&'r str>,
}

impl Authenticator {
    pub fn new(realm: &str) -> Self {
        let mut key = [0u8; 32];
        // The OS CSPRNG; without one no nonce could be trusted.
        getrandom::fill(&mut key).expect("the operating system's random source");
        Self {
            key,
            realm: realm.to_string(),
            epoch: None,
            used: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn secs(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs()
    }

    fn sign(&self, ts: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&ts.to_be_bytes());
        format!("{ts:x}.{}", hex::encode(&mac.finalize().into_bytes()[..12]))
    }

    pub fn nonce(&mut self, now: Instant) -> String {
        let ts = self.secs(now);
        self.sign(ts)
    }

    /// Ok(true) fresh, Ok(false) ours but expired, Err forged.
    fn nonce_fresh(&mut self, now: Instant, nonce: &str) -> Result<bool, ()> {
        let (ts, _) = nonce.split_once('.').ok_or(())?;
        let ts = u64::from_str_radix(ts, 16).map_err(|_| ())?;
        if !bool::from(self.sign(ts).as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(());
        }
        Ok(self.secs(now).saturating_sub(ts) <= NONCE_TTL_S)
    }

    /// The WWW-Authenticate values for a request from `source`, most
    /// preferred first (the algorithms its trunks take).
    pub fn challenges(
        &mut self,
        now: Instant,
        trunks: &[Trunk],
        source: IpAddr,
        stale: bool,
    ) -> Vec<String> {
        let nonce = self.nonce(now);
        let mut algs: Vec<Algorithm> = Vec::new();
        for t in trunks.iter().filter(|t| t.admits(source)) {
            for a in &t.digest {
                if !algs.contains(a) {
                    algs.push(*a);
                }
            }
        }
        algs.iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    name(*a),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Records that `nonce` was used with count `nc`; false when that count
    /// (or a later one) was used already: a replay.
    fn count(&mut self, now: Instant, nonce: &str, nc: u32, has_qop: bool) -> bool {
        match self.used.get(nonce) {
            Some(_) if !has_qop => return false,
            Some(&last) if nc <= last => return false,
            _ => {}
        }
        if !self.used.contains_key(nonce) {
            let cutoff = self.secs(now).saturating_sub(NONCE_TTL_S);
            // Expired nonces fail before their counts matter.
            while self.order.len() >= NONCE_MEMORY
                || self
                    .order
                    .front()
                    .and_then(|n| n.split_once('.'))
                    .and_then(|(ts, _)| u64::from_str_radix(ts, 16).ok())
                    .is_some_and(|ts| ts < cutoff)
            {
                if let Some(old) = self.order.pop_front() {
                    self.used.remove(&old);
                }
            }
            self.order.push_back(nonce.to_string());
        }
        self.used.insert(nonce.to_string(), nc);
        true
    }

    /// Decides on a request.
    pub fn check<'t>(&mut self, now: Instant, trunks: &'t [Trunk], at: &Attempt) -> Verdict<'t> {
        let admitting: Vec<&Trunk> = trunks.iter().filter(|t| t.admits(at.source)).collect();
        if admitting.is_empty() {
            return Verdict::Forbidden;
        }
        if let Some(open) = admitting.iter().find(|t| t.username.is_empty()) {
            return Verdict::Allowed(open);
        }
        let refuse = Verdict::Challenge { stale: false };
        let Some(params) = at.authorization.and_then(parse_digest) else {
            return refuse;
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
            return refuse;
        };
        // Only what this trunk takes: no downgrade to MD5 where it is off.
        let Some(alg) = parse_algorithm(get("algorithm")).filter(|a| trunk.digest.contains(a))
        else {
            return refuse;
        };
        // The credentials are for this request's target, in our realm.
        if get("realm") != self.realm || get("uri").trim() != at.uri.trim() {
            return refuse;
        }
        let nonce = get("nonce");
        match self.nonce_fresh(now, nonce) {
            Ok(true) => {}
            Ok(false) => return Verdict::Challenge { stale: true },
            Err(()) => return refuse,
        }
        let ha1 = hex_digest(alg, &format!("{user}:{}:{}", self.realm, trunk.password));
        let ha2 = hex_digest(alg, &format!("{}:{}", at.method, get("uri")));
        let (expected, nc) = match get("qop") {
            "" => (hex_digest(alg, &format!("{ha1}:{nonce}:{ha2}")), None),
            "auth" => {
                let Ok(nc) = u32::from_str_radix(get("nc"), 16) else {
                    return refuse;
                };
                let resp = hex_digest(
                    alg,
                    &format!("{ha1}:{nonce}:{}:{}:auth:{ha2}", get("nc"), get("cnonce")),
                );
                (resp, Some(nc))
            }
            _ => return refuse,
        };
        let given = get("response").to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
            return refuse;
        }
        // Right password; a count already used is a replay. A fresh nonce
        // lets an honest peer that lost track carry on.
        if !self.count(now, nonce, nc.unwrap_or(0), nc.is_some()) {
            return Verdict::Challenge { stale: true };
        }
        Verdict::Allowed(trunk)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            digest: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }

    const URI: &str = "sip:1000@127.0.0.1";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn attempt<'r>(auth: Option<&'r str>) -> Attempt<'r> {
        Attempt {
            source: ip("127.0.0.1"),
            method: "INVITE",
            uri: URI,
            authorization: auth,
        }
    }

    /// What a phone would send for `nonce` with count `nc`.
    fn answer(alg: Algorithm, nonce: &str, nc: u32, uri: &str) -> String {
        let ha1 = hex_digest(alg, "pbx:attendant:secret");
        let ha2 = hex_digest(alg, &format!("INVITE:{uri}"));
        let resp = hex_digest(alg, &format!("{ha1}:{nonce}:{nc:08x}:abc:auth:{ha2}"));
        format!(
            "Digest username=\"pbx\", realm=\"attendant\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", qop=auth, nc={nc:08x}, cnonce=\"abc\", algorithm={}",
            name(alg)
        )
    }

    #[test]
    fn sources_and_digest() {
        let t0 = Instant::now();
        let mut a = Authenticator::new("attendant");
        let open = [trunk(&["10.0.0.0/8"], "")];
        let from = |s: &str| Attempt {
            source: ip(s),
            ..attempt(None)
        };
        assert!(matches!(
            a.check(t0, &open, &from("10.1.2.3")),
            Verdict::Allowed(_)
        ));
        assert_eq!(a.check(t0, &open, &from("192.0.2.1")), Verdict::Forbidden);

        let locked = [trunk(&["127.0.0.1/32"], "pbx")];
        assert_eq!(
            a.check(t0, &locked, &attempt(None)),
            Verdict::Challenge { stale: false }
        );
        let offered = a.challenges(t0, &locked, ip("127.0.0.1"), false);
        assert!(offered[0].contains("algorithm=SHA-256"), "{offered:?}");
        assert!(offered[1].contains("algorithm=MD5"));
        for (i, alg) in [Algorithm::Md5, Algorithm::Sha256].into_iter().enumerate() {
            // A nonce of its own (one per second).
            let nonce = a.nonce(t0 + Duration::from_secs(i as u64));
            let auth = answer(alg, &nonce, 1, URI);
            assert!(
                matches!(
                    a.check(t0, &locked, &attempt(Some(&auth))),
                    Verdict::Allowed(_)
                ),
                "{alg:?}"
            );
            let (_, resp) = auth.split_once("response=\"").unwrap();
            let wrong = auth.replace(&resp[..10], "0123456789");
            assert_eq!(
                a.check(t0, &locked, &attempt(Some(&wrong))),
                Verdict::Challenge { stale: false }
            );
        }
        // A nonce we did not sign, and one that is too old.
        let t1 = t0 + Duration::from_secs(NONCE_TTL_S + 20);
        let nonce = a.nonce(t0);
        let forged = answer(Algorithm::Md5, "1.abcdef", 1, URI);
        assert_eq!(
            a.check(t1, &locked, &attempt(Some(&forged))),
            Verdict::Challenge { stale: false }
        );
        let stale = answer(Algorithm::Md5, &nonce, 1, URI);
        assert_eq!(
            a.check(t1, &locked, &attempt(Some(&stale))),
            Verdict::Challenge { stale: true }
        );
        assert_eq!(
            a.check(t0, &locked, &attempt(Some("Digest garbage"))),
            Verdict::Challenge { stale: false }
        );
    }

    #[test]
    fn a_captured_authorization_cannot_be_replayed_or_moved() {
        let t0 = Instant::now();
        let mut a = Authenticator::new("attendant");
        let locked = [trunk(&["0.0.0.0/0"], "pbx")];
        let nonce = a.nonce(t0);
        let first = answer(Algorithm::Sha256, &nonce, 1, URI);
        assert!(matches!(
            a.check(t0, &locked, &attempt(Some(&first))),
            Verdict::Allowed(_)
        ));
        // The same header again (another Call-ID, another source): refused.
        let replay = Attempt {
            source: ip("198.51.100.7"),
            ..attempt(Some(&first))
        };
        assert_eq!(
            a.check(t0, &locked, &replay),
            Verdict::Challenge { stale: true }
        );
        // For another target than it was computed for: refused.
        let other = Attempt {
            uri: "sip:2000@127.0.0.1",
            ..attempt(Some(&first))
        };
        assert_eq!(
            a.check(t0, &locked, &other),
            Verdict::Challenge { stale: false }
        );
        // The phone's next count on the same nonce is fine; going back is not.
        let third = answer(Algorithm::Sha256, &nonce, 3, URI);
        assert!(matches!(
            a.check(t0, &locked, &attempt(Some(&third))),
            Verdict::Allowed(_)
        ));
        let second = answer(Algorithm::Sha256, &nonce, 2, URI);
        assert_eq!(
            a.check(t0, &locked, &attempt(Some(&second))),
            Verdict::Challenge { stale: true }
        );
    }

    #[test]
    fn a_trunk_that_takes_only_sha256_refuses_md5() {
        let t0 = Instant::now();
        let mut a = Authenticator::new("attendant");
        let mut t = trunk(&["127.0.0.1/32"], "pbx");
        t.digest = vec![Algorithm::Sha256];
        let only = [t];
        let offered = a.challenges(t0, &only, ip("127.0.0.1"), false);
        assert_eq!(offered.len(), 1);
        assert!(offered[0].contains("SHA-256"));
        let nonce = a.nonce(t0);
        let md5 = answer(Algorithm::Md5, &nonce, 1, URI);
        assert_eq!(
            a.check(t0, &only, &attempt(Some(&md5))),
            Verdict::Challenge { stale: false }
        );
        let sha = answer(Algorithm::Sha256, &nonce, 1, URI);
        assert!(matches!(
            a.check(t0, &only, &attempt(Some(&sha))),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn remembered_nonces_are_bounded() {
        let t0 = Instant::now();
        let mut a = Authenticator::new("attendant");
        for i in 0..NONCE_MEMORY + 100 {
            assert!(a.count(t0, &format!("0.{i}"), 1, true));
        }
        assert_eq!(a.used.len(), NONCE_MEMORY);
        assert_eq!(a.order.len(), NONCE_MEMORY);
    }
}

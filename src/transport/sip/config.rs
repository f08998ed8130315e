//! `sip-config/*.toml`: listen addresses, trunks, media, numbers, transfer
//! targets. Loaded and checked before anything binds, so a typo is an error
//! that names the file, never a half-configured trunk.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::sdp::Codec;

pub const DEFAULT_TOML: &str = include_str!("../../../sip-config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum SipConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    pub listen: Listen,
    #[serde(default)]
    pub media: Media,
    #[serde(default)]
    pub timers: Timers,
    #[serde(default)]
    pub limits: super::flood::Limits,
    #[serde(default)]
    pub trunks: Vec<Trunk>,
    #[serde(default)]
    pub numbers: Vec<NumberRoute>,
    #[serde(default)]
    pub transfer: Transfer,
    #[serde(default)]
    pub tls: Tls,
}

/// Certificate for `listen.tls`. Relative paths are read from the config
/// file's folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    #[serde(default)]
    pub udp: Vec<SocketAddr>,
    #[serde(default)]
    pub tcp: Vec<SocketAddr>,
    /// SIP over TLS (port 5061 by convention); needs [tls] cert and key.
    #[serde(default)]
    pub tls: Vec<SocketAddr>,
    #[serde(default)]
    pub public_address: String,
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "attendant".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    Rfc4733,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Symmetric {
    Always,
    Auto,
    Never,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Media {
    pub rtp_ports: [u16; 2],
    pub codecs: Vec<Codec>,
    pub dtmf: DtmfMode,
    pub jitter_ms: u64,
    pub symmetric_rtp: Symmetric,
    /// No RTP from the caller for this long (not on hold) ends the call:
    /// a caller who vanished without BYE does not hold a pipeline forever.
    pub rtp_timeout_s: u64,
}

impl Default for Media {
    fn default() -> Self {
        Self {
            rtp_ports: [20000, 30000],
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            dtmf: DtmfMode::Rfc4733,
            jitter_ms: 60,
            symmetric_rtp: Symmetric::Auto,
            rtp_timeout_s: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    pub t1_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self { t1_ms: 500 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trunk {
    pub name: String,
    /// Allowed source networks; empty admits any source.
    #[serde(default)]
    pub sources: Vec<IpNet>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub trust_identity: bool,
    /// Digest algorithms offered and taken, most preferred first (RFC 8760).
    /// Old PBXs that read only the first challenge may need `["MD5"]`.
    #[serde(default = "default_digest")]
    pub digest: Vec<DigestAlgorithm>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DigestAlgorithm {
    #[serde(rename = "SHA-256", alias = "sha-256")]
    Sha256,
    #[serde(rename = "MD5", alias = "md5")]
    Md5,
}

fn default_digest() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
}

impl Trunk {
    pub fn admits(&self, ip: IpAddr) -> bool {
        // IPv4-mapped IPv6 sources (dual-stack sockets) count as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.sources.is_empty() || self.sources.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberRoute {
    pub number: String,
    #[serde(default)]
    pub agent: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferMode {
    Refer,
    Bridge,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transfer {
    /// How targets not listed in `modes` are reached.
    pub mode: TransferMode,
    pub context_header: String,
    pub targets: BTreeMap<String, String>,
    /// Per-target override of `mode`.
    pub modes: BTreeMap<String, TransferMode>,
    /// A bridged transfer whose agent does not answer within this long is
    /// cancelled and the caller returns to the bot.
    pub ring_timeout_s: u64,
}

impl Default for Transfer {
    fn default() -> Self {
        Self {
            mode: TransferMode::Refer,
            context_header: "X-Attendant-Context".into(),
            targets: BTreeMap::new(),
            modes: BTreeMap::new(),
            ring_timeout_s: 30,
        }
    }
}

impl SipConfig {
    pub fn parse(text: &str, origin: &str) -> Result<Self, SipConfigError> {
        let invalid = |message: String| SipConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let cfg: SipConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if cfg.listen.udp.is_empty() && cfg.listen.tcp.is_empty() && cfg.listen.tls.is_empty() {
            return Err(invalid("listen: no udp, tcp or tls address".into()));
        }
        if !cfg.listen.tls.is_empty()
            && (cfg.tls.cert.as_os_str().is_empty() || cfg.tls.key.as_os_str().is_empty())
        {
            return Err(invalid(
                "listen.tls needs [tls] cert and key (PEM files)".into(),
            ));
        }
        if cfg.media.codecs.is_empty() {
            return Err(invalid("media.codecs is empty".into()));
        }
        let [lo, hi] = cfg.media.rtp_ports;
        if lo > hi || (lo != 0 && hi - lo < 2) {
            return Err(invalid(format!(
                "media.rtp_ports [{lo}, {hi}] is not a range"
            )));
        }
        if cfg.timers.t1_ms == 0 {
            return Err(invalid("timers.t1_ms must be positive".into()));
        }
        for t in &cfg.trunks {
            if t.username.is_empty() != t.password.is_empty() {
                return Err(invalid(format!(
                    "trunk {}: username and password go together",
                    t.name
                )));
            }
        }
        if !cfg.listen.public_address.is_empty()
            && cfg.listen.public_address.parse::<IpAddr>().is_err()
        {
            return Err(invalid(format!(
                "listen.public_address {:?} is not an IP address",
                cfg.listen.public_address
            )));
        }
        for (k, v) in &cfg.transfer.targets {
            if !v.starts_with("sip:") && !v.starts_with("sips:") {
                return Err(invalid(format!(
                    "transfer.targets.{k:?}: {v:?} is not a SIP URI"
                )));
            }
        }
        // We place bridged calls over UDP only.
        let bridged = cfg
            .transfer
            .targets
            .iter()
            .filter(|(k, _)| cfg.transfer_mode(k) == TransferMode::Bridge);
        for (k, v) in bridged {
            let lower = v.to_ascii_lowercase();
            if lower.starts_with("sips:") || lower.contains("transport=tcp") {
                return Err(invalid(format!(
                    "transfer.targets.{k:?}: bridged transfers call agents over UDP; {v:?} asks for another transport"
                )));
            }
            if cfg.listen.udp.is_empty() {
                return Err(invalid(format!(
                    "transfer target {k:?} is bridged but [listen] has no udp address to call from"
                )));
            }
        }
        Ok(cfg)
    }

    /// Reads `path`; the embedded default when the path is the default one
    /// and absent (a binary run outside the checkout).
    pub fn load(path: &Path) -> Result<Self, SipConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut cfg = Self::parse(&text, &path.display().to_string())?;
                let dir = path.parent().unwrap_or(Path::new(""));
                for p in [&mut cfg.tls.cert, &mut cfg.tls.key] {
                    if !p.as_os_str().is_empty() && p.is_relative() {
                        *p = dir.join(&*p);
                    }
                }
                Ok(cfg)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path.ends_with("sip-config/default.toml") =>
            {
                Self::parse(DEFAULT_TOML, "embedded sip-config/default.toml")
            }
            Err(source) => Err(SipConfigError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The agent for a dialled number (None: the server's own agent).
    pub fn agent_for(&self, number: &str) -> Option<&str> {
        self.numbers
            .iter()
            .find(|n| n.number == number)
            .or_else(|| self.numbers.iter().find(|n| n.number == "*"))
            .map(|n| n.agent.as_str())
            .filter(|a| !a.is_empty())
    }

    /// How a routing target is reached: by REFER or by a bridged call.
    pub fn transfer_mode(&self, target: &str) -> TransferMode {
        self.transfer
            .modes
            .get(target)
            .copied()
            .unwrap_or(self.transfer.mode)
    }

    /// The SIP URI a routing target transfers to.
    pub fn transfer_uri(&self, target: &str) -> Option<String> {
        if let Some(u) = self.transfer.targets.get(target) {
            return Some(u.clone());
        }
        (target.starts_with("sip:") || target.starts_with("sips:")).then(|| target.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let c = SipConfig::parse(DEFAULT_TOML, "default").unwrap();
        assert_eq!(c.listen.udp, vec!["127.0.0.1:5060".parse().unwrap()]);
        assert_eq!(c.listen.tcp, vec!["127.0.0.1:5060".parse().unwrap()]);
        assert!(c.trunks[0].admits("127.0.0.1".parse().unwrap()));
        assert!(!c.trunks[0].admits("192.0.2.1".parse().unwrap()));
        assert!(c.trunks[0].admits("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(
            c.transfer_uri("queue:care").as_deref(),
            Some("sip:care@127.0.0.1:5070")
        );
        assert_eq!(c.transfer_uri("queue:unknown"), None);
        assert_eq!(c.agent_for("1000"), None);
        assert_eq!(c.transfer_mode("queue:care"), TransferMode::Refer);
    }

    #[test]
    fn a_target_can_be_bridged_while_others_are_referred() {
        let c = SipConfig::parse(
            "[listen]\nudp = [\"127.0.0.1:5060\"]\n[transfer]\nmode = \"refer\"\n\
             [transfer.targets]\n\"queue:a\" = \"sip:a@10.0.0.1\"\n\"queue:b\" = \"sip:b@10.0.0.2:5080\"\n\
             [transfer.modes]\n\"queue:b\" = \"bridge\"\n",
            "x",
        )
        .unwrap();
        assert_eq!(c.transfer_mode("queue:a"), TransferMode::Refer);
        assert_eq!(c.transfer_mode("queue:b"), TransferMode::Bridge);
        assert_eq!(c.transfer.ring_timeout_s, 30);
    }

    #[test]
    fn tls_paths_are_read_next_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trunk.toml");
        std::fs::write(
            &path,
            "[listen]\ntls = [\"127.0.0.1:5061\"]\n[tls]\ncert = \"c.pem\"\nkey = \"/etc/k.pem\"\n",
        )
        .unwrap();
        let c = SipConfig::load(&path).unwrap();
        assert_eq!(c.tls.cert, dir.path().join("c.pem"));
        assert_eq!(c.tls.key, PathBuf::from("/etc/k.pem"));
    }

    #[test]
    fn mistakes_name_the_file() {
        for bad in [
            "[listen]\nudp = []\n",
            "[listen]\nudp = [\"127.0.0.1:5060\"]\n[media]\ncodecs = [\"g729\"]\n",
            "[listen]\nudp = [\"127.0.0.1:5060\"]\n[[trunks]]\nname = \"x\"\nsources = [\"10.0.0.0/33\"]\n",
            "[listen]\nudp = [\"127.0.0.1:5060\"]\n[[trunks]]\nname = \"x\"\nusername = \"u\"\n",
            "[listen]\nudp = [\"127.0.0.1:5060\"]\nbogus = 1\n",
            "[listen]\nudp = [\"127.0.0.1:5060\"]\n[transfer.targets]\n\"queue:x\" = \"tel:123\"\n",
            "[listen]\nudp = [\"127.0.0.1:5060\"]\n[transfer]\nmode = \"transfer\"\n",
            "[listen]\ntcp = [\"127.0.0.1:5060\"]\n[transfer]\nmode = \"bridge\"\n[transfer.targets]\n\"queue:x\" = \"sip:x@10.0.0.1\"\n",
            "[listen]\nudp = [\"127.0.0.1:5060\"]\n[transfer.targets]\n\"queue:x\" = \"sip:x@10.0.0.1;transport=tcp\"\n[transfer.modes]\n\"queue:x\" = \"bridge\"\n",
            "[listen]\ntls = [\"127.0.0.1:5061\"]\n[tls]\ncert = \"cert.pem\"\n",
        ] {
            let err = SipConfig::parse(bad, "sip-config/x.toml").unwrap_err().to_string();
            assert!(err.starts_with("sip-config/x.toml"), "{err}");
        }
    }
}

//! Configuration: the embedded `config/attendant.toml`, an optional file,
//! then `ATTENDANT__SECTION__KEY` (or `…__TABLE__KEY`) environment overrides.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::asr::AsrConfig;
use crate::speech::TtsConfig;
use crate::turn::TurnConfig;

pub const DEFAULT_TOML: &str = include_str!("../config/attendant.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
pub struct Config {
    pub server: ServerConfig,
    pub twilio: TwilioConfig,
    pub dialogue: DialogueConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub handoff: crate::handoff::HandoffConfig,
    #[serde(default)]
    pub followup: crate::followup::FollowupConfig,
    #[serde(default)]
    pub sip: SipSection,
    #[serde(default)]
    pub auth: crate::server::auth::AuthConfig,
    #[serde(default)]
    pub webrtc: crate::server::webrtc::WebrtcConfig,
    #[serde(default)]
    pub desk: crate::desk::DeskConfig,
    pub asr: AsrConfig,
    pub tts: TtsConfig,
    pub turn: TurnConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub public_url: String,
    /// Where the other nodes sharing the store reach this node's HTTP API
    /// (an agent on another node takes this node's callers through it).
    /// Empty: `http://` + the listen address, or this host's name when
    /// listening on every address.
    pub node_url: String,
    pub models_dir: PathBuf,
    pub keep_calls: usize,
    pub slow_reply_ms: u64,
    /// Calls this node takes at once over all transports (0: no limit).
    pub max_calls: usize,
    /// Calls at once from one caller number (0: no limit).
    pub max_calls_per_number: usize,
    /// On SIGTERM, live calls may go on this long before they are ended.
    pub drain_timeout_ms: u64,
    /// What the bot says to a call it ends because the node is closing.
    pub closing_prompt: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: String::new(),
            node_url: String::new(),
            models_dir: "models".into(),
            keep_calls: 1000,
            slow_reply_ms: 0,
            max_calls: 32,
            max_calls_per_number: 4,
            drain_timeout_ms: 30_000,
            closing_prompt: crate::nlu::lang::Lang::En
                .phrase(crate::nlu::lang::Phrase::Closing)
                .into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    pub auth_token: String,
    pub prebuffer_frames: usize,
    /// Account SID for REST calls (transfers, SMS); empty disables them.
    pub account_sid: String,
    /// Twilio's REST API base (tests point it at a local stand-in).
    pub api_base: String,
    /// Sender number for follow-up SMS and outbound calls.
    pub from_number: String,
    /// TaskRouter workflow for `queue:` targets; with it the priority and
    /// hand-off id travel as the task's attributes.
    pub workflow_sid: String,
    /// Serve Twilio without checking its signatures on a non-loopback
    /// address (refused at start unless set).
    pub allow_unsigned: bool,
    /// A stream whose `start` has not come by then is closed.
    pub start_timeout_ms: u64,
    /// Largest WebSocket message (and frame) taken from a stream.
    pub max_message_bytes: usize,
    /// Caller audio may run this far ahead of real time; more is dropped…
    pub media_burst_ms: u64,
    /// …and once this much has been dropped the stream is closed (0: never).
    pub media_close_after_ms: u64,
    /// How long a stream token from the voice webhook stays valid.
    pub stream_token_ttl_s: i64,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            auth_token: String::new(),
            prebuffer_frames: 2,
            account_sid: String::new(),
            api_base: "https://api.twilio.com".into(),
            from_number: String::new(),
            workflow_sid: String::new(),
            allow_unsigned: false,
            start_timeout_ms: 10_000,
            max_message_bytes: 64 * 1024,
            media_burst_ms: 1000,
            media_close_after_ms: 5000,
            stream_token_ttl_s: 120,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sqlite://PATH (created on first run) or postgres://USER:PASS@HOST/DB.
    /// DATABASE_URL overrides it.
    pub url: String,
    /// Load db/demo.toml into an empty database on start.
    pub seed_demo: bool,
    /// Interactions, call records and hand-off packets older than this many
    /// days are deleted (checked hourly); 0 keeps them for ever.
    pub retention_days: u64,
    /// Data keys (AES-256-GCM) that seal transcripts, slots, records and
    /// packets: a file of base64 keys, the sealing one first. Empty: the
    /// ATTENDANT_DATA_KEYS variable, else `attendant.key` beside an SQLite
    /// database (`data/attendant.key` for PostgreSQL), made on first start.
    pub key_file: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/attendant.db".into(),
            seed_demo: true,
            retention_days: 0,
            key_file: String::new(),
        }
    }
}

/// Where the SIP trunk configuration lives (sip-config/).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    pub enabled: bool,
    pub config: PathBuf,
}

impl Default for SipSection {
    fn default() -> Self {
        Self {
            enabled: true,
            config: "sip-config/default.toml".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialogueConfig {
    /// Agent directory (intents, flows, knowledge); empty runs the FAQ bot.
    pub agent: String,
    pub faq: String,
    /// Further agent folders loaded beside `agent`, chosen per call (SIP
    /// dialled-number routes add theirs here).
    pub extra_agents: Vec<String>,
    /// How often the server asks the store which version of `agent` to
    /// serve (`attendant agent retrain` / `rollback` change it).
    pub version_check_ms: u64,
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Parses an environment value as the TOML type it looks like.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

impl Config {
    /// Embedded defaults, then `file`, then `env` pairs (usually `std::env::vars()`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut value: toml::Value =
            toml::from_str(DEFAULT_TOML).map_err(|e| ConfigError::Invalid {
                origin: "embedded attendant.toml".into(),
                message: e.to_string(),
            })?;
        if let Some(p) = file {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.display().to_string(),
                source,
            })?;
            let over: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                origin: p.display().to_string(),
                message: e.to_string(),
            })?;
            merge(&mut value, over);
        }
        for (k, v) in env {
            let path: Vec<String> = if k == "TWILIO_AUTH_TOKEN" {
                vec!["twilio".into(), "auth_token".into()]
            } else if k == "DATABASE_URL" {
                vec!["store".into(), "url".into()]
            } else if let Some(rest) = k.strip_prefix("ATTENDANT__") {
                rest.split("__").map(|s| s.to_lowercase()).collect()
            } else {
                continue;
            };
            // SECTION__KEY, or SECTION__MAP__ENTRY for a key that is a
            // table of names (`ATTENDANT__TTS__VOICES__ES`).
            let into_map = path.len() == 3
                && value
                    .get(&path[0])
                    .and_then(|t| t.get(&path[1]))
                    .is_some_and(|d| d.is_table());
            if path.len() != 2 && !into_map {
                return Err(ConfigError::Invalid {
                    origin: format!("environment variable {k}"),
                    message: "expected ATTENDANT__SECTION__KEY (or ATTENDANT__SECTION__TABLE__KEY)"
                        .into(),
                });
            }
            // A key whose default is text stays text, so a numeric-looking
            // token or password (`12345`) is not turned into a number.
            let is_text = into_map
                || value
                    .get(&path[0])
                    .and_then(|t| t.get(&path[1]))
                    .is_some_and(|d| d.is_str());
            let parsed = match env_value(&v) {
                toml::Value::String(s) => toml::Value::String(s),
                _ if is_text => toml::Value::String(v.clone()),
                other => other,
            };
            let leaf = path.iter().skip(1).rev().fold(parsed, |inner, key| {
                let mut t = toml::Table::new();
                t.insert(key.clone(), inner);
                toml::Value::Table(t)
            });
            let mut t = toml::Table::new();
            t.insert(path[0].clone(), leaf);
            merge(&mut value, toml::Value::Table(t));
        }
        let origin = file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "configuration".into());
        let cfg: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                origin,
                message: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| {
            Err(ConfigError::Invalid {
                origin: "configuration".into(),
                message: m,
            })
        };
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "server.listen {:?} is not an address:port",
                self.server.listen
            ));
        }
        let t = &self.turn;
        if !(0.0..=1.0).contains(&t.vad_on)
            || !(0.0..=1.0).contains(&t.vad_off)
            || t.vad_off > t.vad_on
        {
            return bad("turn.vad_on/vad_off must be in 0..1 with vad_off <= vad_on".into());
        }
        if t.pause_ms > t.max_silence_ms {
            return bad("turn.pause_ms must not exceed turn.max_silence_ms".into());
        }
        if self.asr.workers == 0 || self.tts.workers == 0 {
            return bad("asr.workers and tts.workers must be at least 1".into());
        }
        // Each check is a store query on every node: no busy loop.
        if self.dialogue.version_check_ms < 100 {
            return bad("dialogue.version_check_ms must be at least 100".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_check_every_instant_is_refused() {
        let vars = vec![(
            "ATTENDANT__DIALOGUE__VERSION_CHECK_MS".to_string(),
            "0".to_string(),
        )];
        let e = Config::load(None, vars).unwrap_err().to_string();
        assert!(e.contains("version_check_ms"), "{e}");
    }

    #[test]
    fn embedded_defaults_load() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.turn.barge_in_ms, 300);
        assert_eq!(c.asr.engine, crate::asr::AsrEngine::Moonshine);
        assert_eq!(c.asr.model, "ggml-tiny.en-q8_0.bin");
    }

    #[test]
    fn numeric_looking_secrets_stay_text() {
        let env = vec![
            ("TWILIO_AUTH_TOKEN".to_string(), "12345".to_string()),
            (
                "ATTENDANT__AUTH__ADMIN_TOKEN".to_string(),
                "987".to_string(),
            ),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.twilio.auth_token, "12345");
        assert_eq!(c.auth.admin_token, "987");
    }

    #[test]
    fn env_overrides_types_and_twilio_token() {
        let env = vec![
            ("ATTENDANT__ASR__WORKERS".to_string(), "3".to_string()),
            ("ATTENDANT__ASR__ENGINE".to_string(), "whisper".to_string()),
            (
                "ATTENDANT__SERVER__PUBLIC_URL".to_string(),
                "https://x.example".to_string(),
            ),
            ("TWILIO_AUTH_TOKEN".to_string(), "secret".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.asr.workers, 3);
        assert_eq!(c.asr.engine, crate::asr::AsrEngine::Whisper);
        assert_eq!(c.server.public_url, "https://x.example");
        assert_eq!(c.twilio.auth_token, "secret");
    }

    #[test]
    fn env_sets_one_entry_of_a_table_of_names() {
        let env = vec![
            (
                "ATTENDANT__TTS__VOICES__ES".to_string(),
                "espeak-ng:es".to_string(),
            ),
            (
                "ATTENDANT__TTS__VOICES__FR".to_string(),
                "espeak-ng:fr".to_string(),
            ),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.tts.voices["es"], "espeak-ng:es");
        assert_eq!(c.tts.voices["fr"], "espeak-ng:fr");
        // Three parts only under a table; a plain key is not one.
        let e = Config::load(
            None,
            vec![("ATTENDANT__ASR__WORKERS__X".into(), "1".into())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("ATTENDANT__SECTION__KEY"), "{e}");
    }

    #[test]
    fn bad_values_and_unknown_keys_are_clear_errors() {
        let e = Config::load(
            None,
            vec![("ATTENDANT__SERVER__LISTEN".into(), "nope".into())],
        )
        .unwrap_err();
        assert!(e.to_string().contains("server.listen"), "{e}");
        let e =
            Config::load(None, vec![("ATTENDANT__SERVER__LISTN".into(), "x".into())]).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "[turn]\npause_ms = 'x'\n").unwrap();
        let e = Config::load(Some(&p), Vec::new()).unwrap_err();
        assert!(e.to_string().contains("a.toml"), "{e}");
    }
}

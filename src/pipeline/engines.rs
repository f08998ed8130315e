//! Models, loaded once per process and shared by every call.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::asr::{AsrError, AsrPool};
use crate::config::Config;
use crate::dialogue::faq::{FaqError, FaqFactory, FaqFile};
use crate::dialogue::manager::{AgentFactory, AgentRuntime, AgentSlot};
use crate::dialogue::DialogueFactory;
use crate::nlu::lang::Lang;
use crate::speech::tts::voice_model;
use crate::speech::{TtsError, TtsPool};
use crate::turn::onnx::{self, OnnxError};
use crate::turn::smart_turn::SmartTurn;
use crate::turn::vad::SileroVad;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0} is missing; run `attendant models --with-base` (or scripts/serve.sh) first")]
    Missing(String),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Asr(#[from] AsrError),
    #[error(transparent)]
    Tts(#[from] TtsError),
    #[error(transparent)]
    Faq(#[from] FaqError),
    #[error("agent: {0}")]
    Agent(#[from] crate::agent::AgentError),
}

/// The main dialogue, its agent and slot when it is one, and the extra
/// agents by folder.
type LoadedDialogue = (
    Box<dyn DialogueFactory>,
    Option<Arc<AgentRuntime>>,
    Option<AgentSlot>,
    std::collections::HashMap<String, Box<dyn DialogueFactory>>,
);

pub struct Engines {
    pub cfg: Config,
    pub vad: SileroVad,
    pub smart_turn: SmartTurn,
    pub asr: AsrPool,
    pub tts: TtsPool,
    /// The voices of the languages besides the main one that the agents
    /// answer in.
    pub voices: std::collections::HashMap<Lang, TtsPool>,
    pub dialogue: Box<dyn DialogueFactory>,
    /// The agent behind `dialogue`, when one is configured.
    pub agent: Option<Arc<AgentRuntime>>,
    /// Where a promoted version of that agent goes for new calls.
    pub agent_slot: Option<AgentSlot>,
    /// Further agents by folder (`dialogue.extra_agents`), picked per call
    /// with the call's `agent` parameter (e.g. a SIP dialled-number route).
    pub agents: std::collections::HashMap<String, Box<dyn DialogueFactory>>,
    /// Where `desk:QUEUE` transfers wait for a human (none: they fail and
    /// the bot keeps the caller).
    pub desk: Option<Arc<crate::desk::Desk>>,
}

impl Engines {
    pub fn load(
        cfg: Config,
        services: Option<Arc<crate::dialogue::Services>>,
        desk: Option<Arc<crate::desk::Desk>>,
    ) -> Result<Arc<Self>, EngineError> {
        let t = Instant::now();
        let dir = cfg.server.models_dir.clone();
        let need = |p: &Path| -> Result<(), EngineError> {
            if p.exists() {
                Ok(())
            } else {
                Err(EngineError::Missing(p.display().to_string()))
            }
        };
        let ort_lib = dir.join("lib/libonnxruntime.so");
        let mut files = vec![
            ort_lib.clone(),
            dir.join("silero_vad.onnx"),
            dir.join("smart-turn-v3.2-cpu.onnx"),
        ];
        files.extend(voice_model(&cfg.tts.voice).map(|f| dir.join(f)));
        for engine in std::iter::once(cfg.asr.engine).chain(cfg.asr.separate_digits_engine()) {
            files.extend(cfg.asr.files(engine).into_iter().map(|f| dir.join(f)));
        }
        for p in files {
            need(&p)?;
        }
        onnx::init(&ort_lib)?;
        // The speech models load beside the agent (whose examples are
        // embedded meanwhile): start-up is about the longer of the two.
        type Speech = (SileroVad, SmartTurn, AsrPool, TtsPool);
        let (speech, dialogue) = std::thread::scope(|s| {
            let speech = s.spawn(|| -> Result<Speech, EngineError> {
                Ok((
                    SileroVad::load(&dir.join("silero_vad.onnx"))?,
                    SmartTurn::load(&dir.join("smart-turn-v3.2-cpu.onnx"))?,
                    AsrPool::start(&dir, &cfg.asr)?,
                    TtsPool::start(&dir, &cfg.tts)?,
                ))
            });
            let dialogue = Self::load_dialogue(&cfg, &dir, services);
            let speech = speech.join().unwrap_or_else(|_| {
                Err(EngineError::Missing(
                    "speech models (loading panicked)".into(),
                ))
            });
            (speech, dialogue)
        });
        let (vad, smart_turn, mut asr, tts) = speech?;
        let (dialogue, agent, agent_slot, agents) = dialogue?;
        // Agents answering in several languages: the multilingual lane
        // (identification, and decoding the other languages) and a voice
        // per language.
        let mut languages: Vec<String> = Vec::new();
        for f in std::iter::once(&dialogue).chain(agents.values()) {
            for l in f.languages().into_iter().skip(1) {
                if !languages.contains(&l) {
                    languages.push(l);
                }
            }
        }
        let mut voices = std::collections::HashMap::new();
        if !languages.is_empty() {
            need(&dir.join(&cfg.asr.multilingual_model))?;
            let mut hints = std::collections::HashMap::new();
            for f in std::iter::once(&dialogue).chain(agents.values()) {
                for (code, hint) in f.speech_hints() {
                    if let Some(l) = Lang::parse(&code) {
                        hints.entry(l).or_insert(hint);
                    }
                }
            }
            asr.add_languages(&dir, &cfg.asr, hints)?;
            for code in &languages {
                let lang = Lang::parse(code)
                    .ok_or_else(|| EngineError::Missing(format!("language `{code}`")))?;
                let voice = cfg.tts.voices.get(code).ok_or_else(|| {
                    EngineError::Missing(format!("a voice for `{code}` (tts.voices.{code})"))
                })?;
                if let Some(f) = voice_model(voice) {
                    need(&dir.join(f))?;
                }
                let tcfg = crate::speech::TtsConfig {
                    voice: voice.clone(),
                    ..cfg.tts.clone()
                };
                voices.insert(lang, TtsPool::start(&dir, &tcfg)?);
            }
        }
        tracing::info!(
            ms = t.elapsed().as_millis() as u64,
            languages = ?languages,
            asr = cfg.asr.engine.name(),
            digits_asr = ?cfg.asr.separate_digits_engine().map(|e| e.name()),
            gpu = asr.uses_gpu,
            "models loaded"
        );
        Ok(Arc::new(Self {
            cfg,
            vad,
            smart_turn,
            asr,
            tts,
            voices,
            dialogue,
            agent,
            agent_slot,
            agents,
            desk,
        }))
    }

    /// The dialogue that answers calls (an agent, or the FAQ bot), and the
    /// extra agents dialled numbers pick.
    fn load_dialogue(
        cfg: &Config,
        dir: &Path,
        services: Option<Arc<crate::dialogue::Services>>,
    ) -> Result<LoadedDialogue, EngineError> {
        let faq_path =
            (!cfg.dialogue.faq.is_empty()).then(|| Path::new(&cfg.dialogue.faq).to_path_buf());
        let mut agent = None;
        let mut agent_slot = None;
        let dialogue: Box<dyn DialogueFactory> = if cfg.dialogue.agent.is_empty() {
            Box::new(FaqFactory::new(FaqFile::load(faq_path.as_deref())?))
        } else {
            let rt = AgentRuntime::load(Path::new(&cfg.dialogue.agent), dir)?;
            tracing::info!(agent = %rt.agent.file.agent.name, ms = rt.load_ms, "agent loaded");
            agent = Some(rt.clone());
            let f = AgentFactory::new(rt, services.clone());
            agent_slot = Some(f.slot());
            Box::new(f)
        };
        let mut agents: std::collections::HashMap<String, Box<dyn DialogueFactory>> =
            std::collections::HashMap::new();
        for folder in &cfg.dialogue.extra_agents {
            if folder == &cfg.dialogue.agent || agents.contains_key(folder) {
                continue;
            }
            let rt = AgentRuntime::load(Path::new(folder), dir)?;
            tracing::info!(agent = %rt.agent.file.agent.name, ms = rt.load_ms, "extra agent loaded");
            agents.insert(
                folder.clone(),
                Box::new(AgentFactory::new(rt, services.clone())),
            );
        }
        Ok((dialogue, agent, agent_slot, agents))
    }

    /// The voice replies in `lang` are spoken with.
    pub fn voice(&self, lang: Lang) -> &TtsPool {
        self.voices.get(&lang).unwrap_or(&self.tts)
    }

    /// Synthesises the dialogue's fixed prompts so they play instantly.
    pub fn prewarm(&self) -> crate::speech::Warmed {
        let t = Instant::now();
        let mut prompts = self.dialogue.prompts();
        for f in self.agents.values() {
            prompts.extend(f.prompts());
        }
        let mut done = self.tts.prewarm(&prompts);
        for f in std::iter::once(&self.dialogue).chain(self.agents.values()) {
            for (code, text) in f.foreign_prompts() {
                done += match Lang::parse(&code).and_then(|l| self.voices.get(&l)) {
                    Some(pool) => self.tts.say_as(pool, &[text]),
                    // No voice of its own: the main voice says it.
                    None => self.tts.prewarm(&[text]),
                };
            }
        }
        tracing::info!(
            prompts = prompts.len(),
            synthesised = done.synthesised,
            from_disk = done.from_disk,
            ms = t.elapsed().as_millis() as u64,
            "prompt cache warm"
        );
        done
    }

    /// Synthesises the further languages' fixed prompts, a sentence at a
    /// time as `when()` allows (no call is up). The server calls this once it
    /// is ready: a neural voice can take a minute over them on a first
    /// start with an empty disk cache, and calls must not share the cores
    /// with it; until then a caller in that language hears them
    /// synthesised as any other reply.
    pub fn prewarm_languages(
        &self,
        when: &dyn Fn() -> crate::speech::Warm,
    ) -> crate::speech::Warmed {
        let t = Instant::now();
        let mut n = 0;
        let mut done = crate::speech::Warmed::default();
        for f in std::iter::once(&self.dialogue).chain(self.agents.values()) {
            for (code, texts) in f.localised_prompts() {
                if let Some(pool) = Lang::parse(&code).and_then(|l| self.voices.get(&l)) {
                    n += texts.len();
                    done += pool.prewarm_when(&texts, when);
                }
            }
        }
        if n > 0 {
            tracing::info!(
                prompts = n,
                synthesised = done.synthesised,
                from_disk = done.from_disk,
                ms = t.elapsed().as_millis() as u64,
                "further languages' prompt caches warm"
            );
        }
        done
    }
}

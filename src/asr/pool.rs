//! Worker pool over any [`Recognizer`]. Final transcripts (end of turn)
//! always go before partial hypotheses; partials and speculative finals
//! are refused rather than queued when every worker is busy, so they never
//! delay an answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{AsrConfig, AsrEngine, AsrError, Recognizer, Spoken};
use crate::nlu::lang::Lang;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Final,
    /// A turn's final transcript guessed at a pause, before the turn is
    /// known to be over: decoded with a final's priority when a worker is
    /// free, refused when none is (the turn's real final follows anyway,
    /// and a guess queued behind others only adds to everyone's wait; a
    /// decode cannot be stopped once it runs).
    Speculative,
    Partial,
}

/// What the caller is answering, which picks the lane that decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    General,
    /// Account digits, PINs: the digits lane when one is configured.
    Digits,
}

#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub text: String,
    pub audio_ms: u64,
    /// Time spent waiting for a free worker.
    pub queue_ms: u64,
    /// Time spent decoding.
    pub decode_ms: u64,
    /// The engine that decoded it.
    pub engine: &'static str,
    /// The language it was decoded in, when the multilingual lane decoded
    /// or identified it.
    pub language: Option<Lang>,
}

struct Job {
    audio: Arc<Vec<f32>>,
    spoken: Spoken,
    cancel: Arc<AtomicBool>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Transcript, AsrError>>,
}

/// Handle to a running recognition; dropping it does not cancel.
pub struct Pending {
    pub cancel: Arc<AtomicBool>,
    pub result: oneshot::Receiver<Result<Transcript, AsrError>>,
}

/// Makes a recognizer: at start, and again for a worker whose recognizer
/// panicked (its state is not trusted after that).
type Factory = Arc<dyn Fn() -> Result<Box<dyn Recognizer>, AsrError> + Send + Sync>;

/// Workers of one engine with their two queues.
struct Lane {
    finals: Sender<Job>,
    partials: Sender<Job>,
    /// Jobs queued or decoding; partials run only when a worker is idle.
    load: Arc<AtomicUsize>,
    workers: usize,
    /// Workers still running (one whose recognizer cannot be rebuilt stops).
    alive: Arc<AtomicUsize>,
    /// Set by the last worker to stop, which then answers what is queued.
    /// Jobs are queued under it, so none can slip in after that and wait
    /// for ever on a lane nobody serves.
    dead: Arc<parking_lot::Mutex<bool>>,
    engine: AsrEngine,
}

impl Lane {
    fn start(
        engine: AsrEngine,
        workers: usize,
        queue: usize,
        make: Factory,
    ) -> Result<Self, AsrError> {
        let workers = workers.max(1);
        let (finals, final_rx) = bounded::<Job>(queue.max(1));
        let (partials, partial_rx) = bounded::<Job>(workers);
        let load = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(0));
        let dead = Arc::new(parking_lot::Mutex::new(false));
        for i in 0..workers {
            let w = Worker {
                rec: make()?,
                make: make.clone(),
                engine,
                finals: final_rx.clone(),
                partials: partial_rx.clone(),
                load: load.clone(),
                alive: alive.clone(),
                dead: dead.clone(),
            };
            alive.fetch_add(1, Ordering::SeqCst);
            std::thread::Builder::new()
                .name(format!("asr-{}-{i}", engine.name()))
                .spawn(move || w.run())
                .map_err(|e| AsrError::Load {
                    path: engine.name().into(),
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            finals,
            partials,
            load,
            workers,
            alive,
            dead,
            engine,
        })
    }

    fn healthy(&self) -> bool {
        self.alive.load(Ordering::SeqCst) > 0
    }

    fn submit(
        &self,
        audio: Arc<Vec<f32>>,
        spoken: Spoken,
        prio: Priority,
    ) -> Result<Pending, AsrError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        let job = Job {
            audio,
            spoken,
            cancel: cancel.clone(),
            enqueued: Instant::now(),
            reply: tx,
        };
        // Partials and guesses only use idle capacity: on a busy pool they
        // would delay someone's answer.
        let idle = || self.load.load(Ordering::SeqCst) < self.workers;
        let q = match prio {
            Priority::Final => &self.finals,
            Priority::Speculative if idle() => &self.finals,
            Priority::Partial if idle() => &self.partials,
            Priority::Speculative | Priority::Partial => return Err(AsrError::Busy),
        };
        let dead = self.dead.lock();
        if *dead {
            return Err(AsrError::Closed);
        }
        self.load.fetch_add(1, Ordering::SeqCst);
        q.try_send(job).map_err(|e| {
            self.load.fetch_sub(1, Ordering::SeqCst);
            match e {
                TrySendError::Full(_) => AsrError::Busy,
                TrySendError::Disconnected(_) => AsrError::Closed,
            }
        })?;
        Ok(Pending { cancel, result: rx })
    }
}

pub struct AsrPool {
    main: Lane,
    digits: Option<Lane>,
    /// The languages besides the main one, and identification.
    multi: Option<Lane>,
    pub uses_gpu: bool,
}

impl AsrPool {
    /// Loads the configured engine(s) and starts their workers.
    pub fn start(models_dir: &Path, cfg: &AsrConfig) -> Result<Self, AsrError> {
        let mut uses_gpu = false;
        let main = start_lane(
            models_dir,
            cfg,
            cfg.engine,
            cfg.workers,
            cfg.threads,
            &mut uses_gpu,
        )?;
        let mut digits_cfg = cfg.clone();
        if !cfg.digits_prompt.is_empty() {
            digits_cfg.initial_prompt = cfg.digits_prompt.clone();
        }
        let digits = match cfg.separate_digits_engine() {
            Some(e) => Some(start_lane(
                models_dir,
                &digits_cfg,
                e,
                cfg.digits_workers,
                cfg.digits_threads,
                &mut uses_gpu,
            )?),
            None => None,
        };
        Ok(Self {
            main,
            digits,
            multi: None,
            uses_gpu,
        })
    }

    /// Starts the multilingual lane, for an agent answering in more
    /// languages than the main one.
    /// `hints`: per language, text the callers' words are expected to be
    /// like (Whisper's initial prompt).
    pub fn add_languages(
        &mut self,
        models_dir: &Path,
        cfg: &AsrConfig,
        hints: HashMap<Lang, String>,
    ) -> Result<(), AsrError> {
        let mut mcfg = cfg.clone();
        mcfg.model = cfg.multilingual_model.clone();
        mcfg.initial_prompt = String::new();
        mcfg.audio_ctx_min_ms = cfg.multilingual_audio_ctx_min_ms;
        let model = Arc::new(super::whisper::WhisperModel::load(models_dir, &mcfg)?);
        self.uses_gpu |= model.uses_gpu;
        let main = Lang::parse(&cfg.language).unwrap_or_default();
        let threads = cfg.multilingual_threads;
        self.multi = Some(Lane::start(
            AsrEngine::Whisper,
            cfg.multilingual_workers,
            cfg.queue,
            Arc::new(move || {
                model
                    .multilingual(threads, main, hints.clone())
                    .map(|r| Box::new(r) as _)
            }),
        )?);
        Ok(())
    }

    /// Whether the multilingual lane runs.
    pub fn multilingual(&self) -> bool {
        self.multi.is_some()
    }

    /// Queues audio on the multilingual lane (`Spoken::In` or `Identify`).
    pub fn submit_spoken(
        &self,
        spoken: Spoken,
        audio: Arc<Vec<f32>>,
        prio: Priority,
    ) -> Result<Pending, AsrError> {
        self.multi
            .as_ref()
            .ok_or(AsrError::Closed)?
            .submit(audio, spoken, prio)
    }

    /// Whether every lane still has a worker (false once a recognizer that
    /// panicked could not be rebuilt on all of a lane's workers).
    pub fn healthy(&self) -> bool {
        self.main.healthy()
            && self.digits.as_ref().is_none_or(Lane::healthy)
            && self.multi.as_ref().is_none_or(Lane::healthy)
    }

    /// The engine that decodes turns for `purpose`.
    pub fn engine_for(&self, purpose: Purpose) -> AsrEngine {
        self.lane(purpose).engine
    }

    fn lane(&self, purpose: Purpose) -> &Lane {
        match (purpose, &self.digits) {
            (Purpose::Digits, Some(l)) => l,
            _ => &self.main,
        }
    }

    /// Queues 16 kHz mono audio for recognition by the main engine.
    pub fn submit(&self, audio: Arc<Vec<f32>>, prio: Priority) -> Result<Pending, AsrError> {
        self.main.submit(audio, Spoken::Main, prio)
    }

    /// Queues audio on the lane for `purpose`.
    pub fn submit_for(
        &self,
        purpose: Purpose,
        audio: Arc<Vec<f32>>,
        prio: Priority,
    ) -> Result<Pending, AsrError> {
        self.lane(purpose).submit(audio, Spoken::Main, prio)
    }

    /// Blocking convenience for tools and tests.
    pub fn transcribe_blocking(&self, audio: Vec<f32>) -> Result<Transcript, AsrError> {
        self.transcribe_blocking_for(Purpose::General, audio)
    }

    pub fn transcribe_blocking_for(
        &self,
        purpose: Purpose,
        audio: Vec<f32>,
    ) -> Result<Transcript, AsrError> {
        let p = self.submit_for(purpose, Arc::new(audio), Priority::Final)?;
        p.result.blocking_recv().map_err(|_| AsrError::Closed)?
    }
}

fn start_lane(
    models_dir: &Path,
    cfg: &AsrConfig,
    engine: AsrEngine,
    workers: usize,
    threads: usize,
    uses_gpu: &mut bool,
) -> Result<Lane, AsrError> {
    match engine {
        AsrEngine::Whisper => {
            let model = Arc::new(super::whisper::WhisperModel::load(models_dir, cfg)?);
            *uses_gpu |= model.uses_gpu;
            Lane::start(
                engine,
                workers,
                cfg.queue,
                Arc::new(move || model.recognizer(threads).map(|r| Box::new(r) as _)),
            )
        }
        AsrEngine::Moonshine => {
            let model = Arc::new(super::moonshine::MoonshineModel::load(
                &models_dir.join(&cfg.moonshine_model),
                threads,
            )?);
            Lane::start(
                engine,
                workers,
                cfg.queue,
                Arc::new(move || {
                    Ok(Box::new(super::moonshine::MoonshineRecognizer::new(model.clone())) as _)
                }),
            )
        }
    }
}

struct Worker {
    rec: Box<dyn Recognizer>,
    make: Factory,
    engine: AsrEngine,
    finals: Receiver<Job>,
    partials: Receiver<Job>,
    load: Arc<AtomicUsize>,
    alive: Arc<AtomicUsize>,
    dead: Arc<parking_lot::Mutex<bool>>,
}

impl Worker {
    fn run(mut self) {
        self.serve();
        let mut dead = self.dead.lock();
        if self.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last one: nobody will serve what is queued, so answer it.
            *dead = true;
            for job in self.finals.try_iter().chain(self.partials.try_iter()) {
                self.load.fetch_sub(1, Ordering::SeqCst);
                let _ = job.reply.send(Err(AsrError::Closed));
            }
        }
    }

    /// Serves jobs until the pool closes, or until a recognizer that
    /// panicked cannot be rebuilt.
    fn serve(&mut self) {
        loop {
            // Finals first; otherwise wait on both.
            let job = match self.finals.try_recv() {
                Ok(j) => j,
                Err(_) => crossbeam_channel::select! {
                    recv(self.finals) -> j => match j { Ok(j) => j, Err(_) => return },
                    recv(self.partials) -> j => match j { Ok(j) => j, Err(_) => return },
                },
            };
            if job.cancel.load(Ordering::Relaxed) {
                self.load.fetch_sub(1, Ordering::SeqCst);
                let _ = job.reply.send(Err(AsrError::Cancelled));
                continue;
            }
            let queue_ms = job.enqueued.elapsed().as_millis() as u64;
            let t = Instant::now();
            let rec = &mut self.rec;
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rec.decode_spoken(&job.audio, &job.spoken)
            }));
            self.load.fetch_sub(1, Ordering::SeqCst);
            let res = match decoded {
                Ok(r) => r,
                Err(panic) => {
                    crate::faults::contained(crate::faults::Part::AsrWorker, panic.as_ref());
                    let _ = job
                        .reply
                        .send(Err(AsrError::Decode("the recognizer failed".into())));
                    match (self.make)() {
                        Ok(r) => self.rec = r,
                        Err(e) => {
                            tracing::error!(engine = self.engine.name(), error = %e, "ASR worker could not be rebuilt; it stops");
                            return;
                        }
                    }
                    continue;
                }
            };
            let _ = job.reply.send(res.map(|heard| Transcript {
                text: heard.text,
                audio_ms: job.audio.len() as u64 / 16,
                queue_ms,
                decode_ms: t.elapsed().as_millis() as u64,
                engine: self.engine.name(),
                language: heard.language,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes the audio's length; panics on 13 samples, as a broken decoder
    /// might on some input.
    struct Fragile;
    impl Recognizer for Fragile {
        fn decode(&mut self, audio: &[f32]) -> Result<String, AsrError> {
            assert_ne!(audio.len(), 13, "decoder state corrupted");
            Ok(audio.len().to_string())
        }
    }

    fn decode(lane: &Lane, n: usize) -> Result<String, AsrError> {
        let p = lane.submit(Arc::new(vec![0.0; n]), Spoken::Main, Priority::Final)?;
        p.result
            .blocking_recv()
            .map_err(|_| AsrError::Closed)?
            .map(|t| t.text)
    }

    #[test]
    fn a_panicking_recognizer_is_rebuilt_and_the_lane_goes_on() {
        let built = Arc::new(AtomicUsize::new(0));
        let b = built.clone();
        let lane = Lane::start(
            AsrEngine::Moonshine,
            1,
            4,
            Arc::new(move || {
                b.fetch_add(1, Ordering::SeqCst);
                Ok(Box::new(Fragile) as _)
            }),
        )
        .unwrap();
        let faults = crate::faults::count(crate::faults::Part::AsrWorker);
        assert_eq!(decode(&lane, 5).unwrap(), "5");
        assert!(matches!(decode(&lane, 13), Err(AsrError::Decode(_))));
        assert_eq!(decode(&lane, 7).unwrap(), "7");
        assert_eq!(built.load(Ordering::SeqCst), 2, "rebuilt once");
        assert!(crate::faults::count(crate::faults::Part::AsrWorker) > faults);
        assert!(lane.healthy());
        assert_eq!(lane.load.load(Ordering::SeqCst), 0, "no load leaked");
    }

    #[test]
    fn a_lane_whose_workers_cannot_be_rebuilt_reports_unhealthy() {
        let built = Arc::new(AtomicUsize::new(0));
        let b = built.clone();
        let lane = Lane::start(
            AsrEngine::Moonshine,
            1,
            4,
            Arc::new(move || {
                if b.fetch_add(1, Ordering::SeqCst) == 0 {
                    Ok(Box::new(Fragile) as _)
                } else {
                    Err(AsrError::Load {
                        path: "test".into(),
                        reason: "device lost".into(),
                    })
                }
            }),
        )
        .unwrap();
        assert!(lane.healthy());
        assert!(decode(&lane, 13).is_err());
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while lane.healthy() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!lane.healthy());
        // Nothing waits for a worker that is gone.
        assert!(matches!(decode(&lane, 5), Err(AsrError::Closed)));
    }

    /// Decodes only once the test lets it.
    struct Gated(crossbeam_channel::Receiver<()>);
    impl Recognizer for Gated {
        fn decode(&mut self, audio: &[f32]) -> Result<String, AsrError> {
            let _ = self.0.recv();
            Ok(audio.len().to_string())
        }
    }

    #[test]
    fn guesses_and_partials_wait_for_no_one_finals_queue() {
        let (open, gate) = crossbeam_channel::bounded(2);
        let lane = Lane::start(
            AsrEngine::Moonshine,
            1,
            4,
            Arc::new(move || Ok(Box::new(Gated(gate.clone())) as _)),
        )
        .unwrap();
        let submit = |n: usize, p| lane.submit(Arc::new(vec![0.0; n]), Spoken::Main, p);
        // An idle worker takes a guess at once.
        let guess = submit(3, Priority::Speculative).expect("idle lane");
        // Busy now: another guess and a partial are refused, a final waits.
        assert!(matches!(
            submit(4, Priority::Speculative),
            Err(AsrError::Busy)
        ));
        assert!(matches!(submit(5, Priority::Partial), Err(AsrError::Busy)));
        let last = submit(6, Priority::Final).expect("finals queue");
        open.send(()).unwrap();
        open.send(()).unwrap();
        let text = |p: Pending| p.result.blocking_recv().unwrap().unwrap().text;
        assert_eq!(text(guess), "3");
        assert_eq!(text(last), "6");
    }
}

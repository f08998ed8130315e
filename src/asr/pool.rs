//! Worker pool over any [`Recognizer`]. Final transcripts (end of turn)
//! always go before partial hypotheses; partials are dropped rather than
//! queued when the pool is busy, so they never delay an answer.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{AsrConfig, AsrEngine, AsrError, Recognizer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Final,
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
}

struct Job {
    audio: Arc<Vec<f32>>,
    cancel: Arc<AtomicBool>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Transcript, AsrError>>,
}

/// Handle to a running recognition; dropping it does not cancel.
pub struct Pending {
    pub cancel: Arc<AtomicBool>,
    pub result: oneshot::Receiver<Result<Transcript, AsrError>>,
}

/// Workers of one engine with their two queues.
struct Lane {
    finals: Sender<Job>,
    partials: Sender<Job>,
    /// Jobs queued or decoding; partials run only when a worker is idle.
    load: Arc<AtomicUsize>,
    workers: usize,
    engine: AsrEngine,
}

impl Lane {
    fn start(
        engine: AsrEngine,
        workers: usize,
        queue: usize,
        mut make: impl FnMut() -> Result<Box<dyn Recognizer>, AsrError>,
    ) -> Result<Self, AsrError> {
        let workers = workers.max(1);
        let (finals, final_rx) = bounded::<Job>(queue.max(1));
        let (partials, partial_rx) = bounded::<Job>(workers);
        let load = Arc::new(AtomicUsize::new(0));
        for i in 0..workers {
            let rec = make()?;
            let (f, p, l) = (final_rx.clone(), partial_rx.clone(), load.clone());
            std::thread::Builder::new()
                .name(format!("asr-{}-{i}", engine.name()))
                .spawn(move || worker(rec, engine, f, p, l))
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
            engine,
        })
    }

    fn submit(&self, audio: Arc<Vec<f32>>, prio: Priority) -> Result<Pending, AsrError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = oneshot::channel();
        let job = Job {
            audio,
            cancel: cancel.clone(),
            enqueued: Instant::now(),
            reply: tx,
        };
        let q = match prio {
            Priority::Final => &self.finals,
            Priority::Partial => {
                // Partials only use idle capacity: on a busy pool a running
                // partial would delay someone's answer.
                if self.load.load(Ordering::SeqCst) >= self.workers {
                    return Err(AsrError::Busy);
                }
                &self.partials
            }
        };
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
            uses_gpu,
        })
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
        self.main.submit(audio, prio)
    }

    /// Queues audio on the lane for `purpose`.
    pub fn submit_for(
        &self,
        purpose: Purpose,
        audio: Arc<Vec<f32>>,
        prio: Priority,
    ) -> Result<Pending, AsrError> {
        self.lane(purpose).submit(audio, prio)
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
            let model = super::whisper::WhisperModel::load(models_dir, cfg)?;
            *uses_gpu |= model.uses_gpu;
            Lane::start(engine, workers, cfg.queue, || {
                model.recognizer(threads).map(|r| Box::new(r) as _)
            })
        }
        AsrEngine::Moonshine => {
            let model = Arc::new(super::moonshine::MoonshineModel::load(
                &models_dir.join(&cfg.moonshine_model),
                threads,
            )?);
            Lane::start(engine, workers, cfg.queue, || {
                Ok(Box::new(super::moonshine::MoonshineRecognizer::new(model.clone())) as _)
            })
        }
    }
}

fn worker(
    mut rec: Box<dyn Recognizer>,
    engine: AsrEngine,
    finals: Receiver<Job>,
    partials: Receiver<Job>,
    load: Arc<AtomicUsize>,
) {
    loop {
        // Finals first; otherwise wait on both.
        let job = match finals.try_recv() {
            Ok(j) => j,
            Err(_) => crossbeam_channel::select! {
                recv(finals) -> j => match j { Ok(j) => j, Err(_) => return },
                recv(partials) -> j => match j { Ok(j) => j, Err(_) => return },
            },
        };
        if job.cancel.load(Ordering::Relaxed) {
            load.fetch_sub(1, Ordering::SeqCst);
            let _ = job.reply.send(Err(AsrError::Cancelled));
            continue;
        }
        let queue_ms = job.enqueued.elapsed().as_millis() as u64;
        let t = Instant::now();
        let res = rec.decode(&job.audio).map(|text| Transcript {
            text,
            audio_ms: job.audio.len() as u64 / 16,
            queue_ms,
            decode_ms: t.elapsed().as_millis() as u64,
            engine: engine.name(),
        });
        load.fetch_sub(1, Ordering::SeqCst);
        let _ = job.reply.send(res);
    }
}

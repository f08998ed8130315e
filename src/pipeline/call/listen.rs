//! Listening: the caller's audio through VAD and the turn detector, partial
//! and speculative transcripts, and the end-of-turn decision (Smart Turn,
//! the transcript's words, the silence fallback). Replying lives in the
//! parent module.

use super::*;

impl Call {
    pub(super) async fn on_audio(&mut self, ulaw: &[u8]) {
        self.pcm8.clear();
        mulaw::decode_to_f32(ulaw, &mut self.pcm8);
        match self.up.push(&self.pcm8) {
            Ok(s) => self.pending16.extend(s),
            Err(err) => {
                tracing::warn!(error = %err, "resampling failed");
                return;
            }
        }
        while self.pending16.len() >= WINDOW {
            let w: Vec<f32> = self.pending16.drain(..WINDOW).collect();
            self.on_window(w).await;
        }
    }

    pub(super) async fn on_window(&mut self, w: Vec<f32>) {
        let prob = match self.e.vad.probability(&mut self.vad, &w) {
            Ok(p) => p,
            Err(err) => {
                tracing::warn!(error = %err, "VAD failed");
                0.0
            }
        };
        self.audio.extend_from_slice(&w);
        let now = Instant::now();
        let pos = self.position();
        self.arrivals.push_back((pos, now));
        while self.arrivals.len() > 96 {
            self.arrivals.pop_front();
        }
        for ev in self.det.push(prob) {
            self.on_turn_event(ev, now).await;
        }
        self.check_endpoint(now).await;
        // Trim the buffer: keep the pre-roll when idle, the whole turn otherwise.
        let live = match self.det.onset() {
            Some(onset) => onset,
            None => pos,
        };
        // Ended turns still waiting for a transcript keep their audio too.
        let oldest = self.ended.iter().map(|t| t.onset).min().unwrap_or(u64::MAX);
        let keep_from = live.min(oldest).saturating_sub(self.preroll());
        if keep_from > self.buf_start {
            let n = ((keep_from - self.buf_start) as usize).min(self.audio.len());
            self.audio.drain(..n);
            self.buf_start += n as u64;
        }
        if let Some(onset) = self.det.onset() {
            if pos - onset > MAX_TURN.as_millis() as u64 * 16 {
                if let Some(ev) = self.det.force_end() {
                    self.on_turn_event(ev, now).await;
                }
            } else {
                self.maybe_partial(onset, pos);
            }
        }
    }

    pub(super) fn maybe_partial(&mut self, onset: u64, pos: u64) {
        let every = self.e.cfg.asr.partial_interval_ms * 16;
        if every == 0 || self.partial_inflight || pos - self.last_partial_pos.max(onset) < every {
            return;
        }
        let Some(turn) = self.turn.as_ref().map(|t| t.index) else {
            return;
        };
        let audio = Arc::new(self.slice(onset.saturating_sub(self.preroll()), pos));
        if let Ok(p) = self.e.asr.submit(audio, Priority::Partial) {
            self.partial_inflight = true;
            self.last_partial_pos = pos;
            self.forward_asr(AsrKind::Partial, turn, p.result);
        }
    }

    pub(super) fn forward_asr(
        &self,
        kind: AsrKind,
        turn: u32,
        rx: tokio::sync::oneshot::Receiver<Result<Transcript, crate::asr::AsrError>>,
    ) {
        let tx = self.internal.clone();
        tokio::spawn(async move {
            let result = rx.await.unwrap_or(Err(crate::asr::AsrError::Closed));
            let _ = tx.send(Internal::Asr { kind, turn, result });
        });
    }

    pub(super) fn bot_audible(&self) -> bool {
        self.playing.is_some()
    }

    pub(super) async fn on_turn_event(&mut self, ev: TurnEvent, now: Instant) {
        match ev {
            TurnEvent::SpeechStarted { onset } => {
                self.note_continuation(onset);
                self.turn_seq += 1;
                self.turn = Some(PendingTurn {
                    index: self.turn_seq,
                    onset,
                    last_voice: onset,
                    last_voice_at: now,
                    eot_at: None,
                    confirmed: false,
                    partials: Vec::new(),
                    smart_turn_prob: None,
                    smart_turn_yes: None,
                    end_reason: String::new(),
                    spec: None,
                });
                self.last_partial_pos = onset;
                if let Some(p) = self.playing.as_mut() {
                    if !p.paused {
                        p.paused = true;
                        self.send(CallOutput::Pause).await;
                    }
                }
            }
            TurnEvent::SpeechConfirmed => {
                if let Some(t) = self.turn.as_mut() {
                    t.confirmed = true;
                }
                if self.bot_audible() {
                    self.interrupt().await;
                }
            }
            TurnEvent::Discarded => {
                self.turn = None;
                self.resume_if_paused().await;
            }
            TurnEvent::Resumed => {
                if let Some(s) = self.turn.as_mut().and_then(|t| t.spec.take()) {
                    s.cancel.store(true, Ordering::Relaxed);
                }
            }
            TurnEvent::Paused { last_voice } => {
                let at = self.arrival_of(last_voice);
                let Some(t) = self.turn.as_mut() else { return };
                t.last_voice = last_voice;
                t.last_voice_at = at;
                let (index, onset) = (t.index, t.onset);
                // Speculative final transcript and Smart Turn, in parallel.
                let audio = Arc::new(self.slice(
                    onset.saturating_sub(self.preroll()),
                    last_voice + TAIL_SAMPLES,
                ));
                let purpose = self.purpose();
                if let Ok(p) = self
                    .e
                    .asr
                    .submit_for(purpose, audio.clone(), Priority::Final)
                {
                    let spec = Spec {
                        last_voice,
                        cancel: p.cancel.clone(),
                        result: None,
                        verdict: None,
                    };
                    if let Some(old) = self.turn.as_mut().and_then(|t| t.spec.replace(spec)) {
                        old.cancel.store(true, Ordering::Relaxed);
                    }
                    self.forward_asr(AsrKind::Speculative { last_voice }, index, p.result);
                }
                let e = self.e.clone();
                let tx = self.internal.clone();
                tokio::task::spawn_blocking(move || {
                    let prob = e
                        .smart_turn
                        .completion_probability(&audio)
                        .unwrap_or_else(|err| {
                            tracing::warn!(error = %err, "Smart Turn failed");
                            0.0
                        });
                    let _ = tx.send(Internal::SmartTurn {
                        turn: index,
                        pause: last_voice,
                        prob,
                    });
                });
            }
            TurnEvent::EndOfTurn { onset, last_voice } => {
                let reason = "silence";
                self.end_of_turn(onset, last_voice, reason, now).await;
            }
        }
    }

    /// The lane that should hear the caller's answer.
    pub(super) fn purpose(&self) -> Purpose {
        match self.expect {
            Expect::Digits { .. } => Purpose::Digits,
            _ => Purpose::General,
        }
    }

    /// Ends a paused turn once the silence so far is what the evidence
    /// (Smart Turn, the transcript's words, the question) asks for; the
    /// detector's own fallback covers the rest.
    pub(super) async fn check_endpoint(&mut self, now: Instant) {
        let Some(paused) = self.det.paused_at() else {
            return;
        };
        let Some(t) = self.turn.as_ref().filter(|t| t.last_voice == paused) else {
            return;
        };
        let smart = t.smart_turn_yes == Some(paused);
        let verdict = t
            .spec
            .as_ref()
            .filter(|s| s.last_voice == paused)
            .and_then(|s| s.verdict);
        let c = self.det.config();
        let need = endpoint::silence_needed(
            verdict,
            self.expect,
            smart,
            c.pause_ms,
            c.complete_silence_ms,
            c.max_silence_ms,
        );
        let silence_ms = self.det.position().saturating_sub(paused) / 16;
        if need >= c.max_silence_ms || silence_ms < need {
            return;
        }
        let reason = if smart { "smart_turn" } else { "transcript" };
        if let Some(TurnEvent::EndOfTurn { onset, last_voice }) = self.det.end_turn() {
            self.end_of_turn(onset, last_voice, reason, now).await;
        }
    }

    /// Speech that starts sooner after an early end than the fallback would
    /// have waited means the last turn was cut while the caller paused.
    pub(super) fn note_continuation(&mut self, onset: u64) {
        let Some((index, last_voice)) = self.last_early_end.take() else {
            return;
        };
        let gap_ms = onset.saturating_sub(last_voice) / 16;
        if gap_ms < self.det.config().max_silence_ms {
            metrics().turns_cut_early.inc();
            if let Some(r) = self.record.turns.iter_mut().find(|r| r.index == index) {
                r.timings.cut_early = true;
            }
            tracing::info!(call = %self.meta.call_id, turn = index, gap_ms, "caller went on after an early end of turn");
        }
    }

    pub(super) async fn resume_if_paused(&mut self) {
        if let Some(p) = self.playing.as_mut() {
            if p.paused {
                p.paused = false;
                self.send(CallOutput::Resume).await;
            }
        }
    }

    pub(super) async fn end_of_turn(
        &mut self,
        _onset: u64,
        last_voice: u64,
        reason: &str,
        now: Instant,
    ) {
        let at = self.arrival_of(last_voice);
        let Some(mut t) = self.turn.take() else {
            return;
        };
        t.last_voice = last_voice;
        t.last_voice_at = at;
        t.eot_at = Some(now);
        t.end_reason = reason.into();
        self.last_early_end = (reason != "silence").then_some((t.index, last_voice));
        // A short "yes"/"mm-hm" over the bot is a backchannel, not a turn.
        if !t.confirmed && self.bot_audible() {
            if let Some(s) = t.spec.take() {
                s.cancel.store(true, Ordering::Relaxed);
            }
            self.resume_if_paused().await;
            return;
        }
        metrics()
            .end_of_turn
            .observe(now.duration_since(at).as_secs_f64());
        metrics().turn_ends_total.with_label_values(&[reason]).inc();
        let index = t.index;
        // The speculative transcript serves if it covers exactly this turn.
        let ready = match t.spec.as_mut() {
            Some(s) if s.last_voice == last_voice => Some(s.result.take()),
            _ => None,
        };
        match ready {
            Some(Some(tr)) => {
                t.spec = None;
                self.ended.push(t);
                self.on_final(index, tr, true).await;
            }
            // Still decoding: its result finishes the turn when it arrives.
            Some(None) => self.ended.push(t),
            None => {
                if let Some(s) = t.spec.take() {
                    s.cancel.store(true, Ordering::Relaxed);
                }
                self.ended.push(t);
                self.retry_final(index).await;
            }
        }
    }
}

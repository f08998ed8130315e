//! Summaries, the console table, the JSON report and the self-contained
//! HTML report (plots drawn with plotters as inline SVG).

use std::collections::BTreeMap;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::RunResult;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub n: usize,
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(values: impl IntoIterator<Item = u64>) -> Option<Percentiles> {
        let mut v: Vec<u64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        Some(Percentiles {
            n: v.len(),
            p50: nearest_rank(&v, 50.0),
            p95: nearest_rank(&v, 95.0),
            p99: nearest_rank(&v, 99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<u64>() as f64 / v.len() as f64,
        })
    }
}

/// Nearest-rank percentile of sorted values.
pub fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PacingSummary {
    pub frames: u64,
    /// Time the caller's playout ran dry in the middle of a reply.
    pub underrun_ms: u64,
    pub max_gap_ms: u64,
    pub gaps_over_60ms: u64,
    /// Mean of the calls' interarrival jitter (RFC 3550 style).
    pub jitter_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub concurrency: usize,
    pub calls: usize,
    pub ok: usize,
    pub failed: usize,
    pub error_rate: f64,
    pub failures: BTreeMap<String, usize>,
    pub time_to_answer_ms: Option<Percentiles>,
    pub voice_to_voice_ms: Option<Percentiles>,
    /// The same turns as the server measured them (its call records).
    #[serde(default)]
    pub server_voice_to_voice_ms: Option<Percentiles>,
    /// Spoken turns by what ended them, and those cut too early.
    #[serde(default)]
    pub turn_ends: BTreeMap<String, usize>,
    #[serde(default)]
    pub turns_cut_early: usize,
    pub barge_in_stop_ms: Option<Percentiles>,
    pub pacing: PacingSummary,
    /// Replies with a check, and how many passed.
    pub checked: usize,
    pub correct: usize,
    pub wall_ms: u64,
    pub generator_cpu_percent: f64,
}

pub fn summarize(r: &RunResult) -> Summary {
    let mut failures = BTreeMap::new();
    for c in &r.calls {
        if let Some(f) = &c.failure {
            // Group by reason, not by call-specific detail.
            let key = f.split(':').next().unwrap_or(f).to_string();
            *failures.entry(key).or_insert(0) += 1;
        }
    }
    let ok = r.calls.iter().filter(|c| c.ok).count();
    let checks: Vec<bool> = r
        .calls
        .iter()
        .flat_map(|c| {
            c.turns
                .iter()
                .filter_map(|t| t.correct)
                .chain(c.greeting_correct)
        })
        .collect();
    let with_audio: Vec<&super::CallResult> =
        r.calls.iter().filter(|c| c.pacing.frames > 0).collect();
    Summary {
        concurrency: r.concurrency,
        calls: r.calls.len(),
        ok,
        failed: r.calls.len() - ok,
        error_rate: if r.calls.is_empty() {
            0.0
        } else {
            (r.calls.len() - ok) as f64 / r.calls.len() as f64
        },
        failures,
        time_to_answer_ms: Percentiles::of(r.calls.iter().filter_map(|c| c.time_to_answer_ms)),
        voice_to_voice_ms: Percentiles::of(
            r.calls
                .iter()
                .flat_map(|c| c.turns.iter().filter_map(|t| t.voice_to_voice_ms)),
        ),
        server_voice_to_voice_ms: Percentiles::of(
            r.calls
                .iter()
                .flat_map(|c| c.server.voice_to_voice_ms.iter().copied()),
        ),
        turn_ends: r
            .calls
            .iter()
            .flat_map(|c| c.server.end_reasons.iter())
            .fold(BTreeMap::new(), |mut m, why| {
                *m.entry(why.clone()).or_insert(0) += 1;
                m
            }),
        turns_cut_early: r.calls.iter().map(|c| c.server.cut_early).sum(),
        barge_in_stop_ms: Percentiles::of(
            r.calls
                .iter()
                .flat_map(|c| c.barge_in_stop_ms.iter().copied()),
        ),
        pacing: PacingSummary {
            frames: with_audio.iter().map(|c| c.pacing.frames).sum(),
            underrun_ms: with_audio.iter().map(|c| c.pacing.underrun_ms).sum(),
            max_gap_ms: with_audio
                .iter()
                .map(|c| c.pacing.max_gap_ms)
                .max()
                .unwrap_or(0),
            gaps_over_60ms: with_audio.iter().map(|c| c.pacing.gaps_over_60ms).sum(),
            jitter_ms: if with_audio.is_empty() {
                0.0
            } else {
                with_audio.iter().map(|c| c.pacing.jitter_ms).sum::<f64>() / with_audio.len() as f64
            },
        },
        checked: checks.len(),
        correct: checks.iter().filter(|&&b| b).count(),
        wall_ms: r.wall_ms,
        generator_cpu_percent: r.generator_cpu_percent,
    }
}

/// One concurrency level of a capacity search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level {
    pub concurrency: usize,
    pub summary: Summary,
    pub held: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capacity {
    pub p95_bound_ms: u64,
    pub max_error_rate: f64,
    /// The highest concurrency whose p95 and error rate stayed in bounds.
    pub highest_held: Option<usize>,
    pub levels: Vec<Level>,
}

/// The whole report, as written by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    pub url: String,
    #[serde(default)]
    pub transport: super::Transport,
    pub summary: Summary,
    pub capacity: Option<Capacity>,
    pub runs: Vec<RunResult>,
}

impl Report {
    pub fn new(runs: Vec<RunResult>, capacity: Option<Capacity>) -> Report {
        let all = RunResult {
            scenario: runs.first().map(|r| r.scenario.clone()).unwrap_or_default(),
            url: runs.first().map(|r| r.url.clone()).unwrap_or_default(),
            transport: runs.first().map(|r| r.transport).unwrap_or_default(),
            concurrency: runs.iter().map(|r| r.concurrency).max().unwrap_or(0),
            wall_ms: runs.iter().map(|r| r.wall_ms).sum(),
            calls: runs.iter().flat_map(|r| r.calls.clone()).collect(),
            generator_cpu_percent: runs
                .iter()
                .map(|r| r.generator_cpu_percent)
                .fold(0.0, f64::max),
        };
        Report {
            tool: format!("attendant loadtest {}", env!("CARGO_PKG_VERSION")),
            scenario: all.scenario.clone(),
            url: all.url.clone(),
            transport: all.transport,
            summary: summarize(&all),
            capacity,
            runs,
        }
    }
}

fn pct_cell(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!("{:>6} {:>6} {:>6} {:>6}", p.p50, p.p95, p.p99, p.max),
        None => format!("{:>6} {:>6} {:>6} {:>6}", "-", "-", "-", "-"),
    }
}

/// The console summary table.
pub fn console(r: &Report) -> String {
    let s = &r.summary;
    let mut o = String::new();
    o += &format!(
        "scenario {:?} against {} over {}\ncalls {}  ok {}  failed {}  ({:.1} % errors)  wall {:.1} s  generator CPU {:.0} % of a core\n",
        r.scenario,
        r.url,
        match r.transport {
            super::Transport::Twilio => "Twilio Media Streams",
            super::Transport::Webrtc => "WebRTC",
            super::Transport::Sip => "SIP (G.711 RTP)",
        },
        s.calls,
        s.ok,
        s.failed,
        s.error_rate * 100.0,
        s.wall_ms as f64 / 1000.0,
        s.generator_cpu_percent
    );
    for (k, v) in &s.failures {
        o += &format!("  failed: {v} × {k}\n");
    }
    o += &format!(
        "{:<26} {:>6} {:>6} {:>6} {:>6}   (ms)\n",
        "", "p50", "p95", "p99", "max"
    );
    for (name, p) in [
        ("time to answer", &s.time_to_answer_ms),
        ("voice-to-voice", &s.voice_to_voice_ms),
        ("  (server-measured)", &s.server_voice_to_voice_ms),
        ("barge-in stop", &s.barge_in_stop_ms),
    ] {
        o += &format!("{name:<26} {}\n", pct_cell(p));
    }
    let ended: usize = s.turn_ends.values().sum();
    if ended > 0 {
        let share = |n: usize| 100.0 * n as f64 / ended as f64;
        let parts: Vec<String> = s
            .turn_ends
            .iter()
            .map(|(why, n)| format!("{why} {n} ({:.0} %)", share(*n)))
            .collect();
        o += &format!(
            "turns ended by: {}; cut too early {} ({:.1} %)\n",
            parts.join(", "),
            s.turns_cut_early,
            share(s.turns_cut_early)
        );
    }
    o += &format!(
        "bot audio: {} frames, underruns {} ms, max gap {} ms, gaps > 60 ms {}, jitter {:.1} ms\n",
        s.pacing.frames,
        s.pacing.underrun_ms,
        s.pacing.max_gap_ms,
        s.pacing.gaps_over_60ms,
        s.pacing.jitter_ms
    );
    if s.checked > 0 {
        o += &format!(
            "replies correct: {}/{} ({:.0} %)\n",
            s.correct,
            s.checked,
            100.0 * s.correct as f64 / s.checked as f64
        );
    }
    if let Some(c) = &r.capacity {
        o += &format!(
            "\ncapacity search (p95 ≤ {} ms, errors ≤ {:.0} %):\n{:>11} {:>6} {:>6} {:>7}  held\n",
            c.p95_bound_ms,
            c.max_error_rate * 100.0,
            "concurrency",
            "p50",
            "p95",
            "errors"
        );
        for l in &c.levels {
            let v = l.summary.voice_to_voice_ms.clone().unwrap_or_default();
            o += &format!(
                "{:>11} {:>6} {:>6} {:>6.1}%  {}\n",
                l.concurrency,
                v.p50,
                v.p95,
                l.summary.error_rate * 100.0,
                if l.held { "yes" } else { "no" }
            );
        }
        o += &match c.highest_held {
            Some(n) => format!("highest concurrency that held: {n}\n"),
            None => "no level held\n".into(),
        };
    }
    o
}

fn svg(
    width: u32,
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), String>,
) -> String {
    let mut out = String::new();
    {
        let area = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        let res = area
            .fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&area))
            .and_then(|_| area.present().map_err(|e| e.to_string()));
        if let Err(e) = res {
            return format!("<p>plot failed: {}</p>", html_escape(&e));
        }
    }
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn latencies(r: &Report) -> Vec<(usize, u64)> {
    r.runs
        .iter()
        .flat_map(|run| run.calls.iter())
        .flat_map(|c| c.turns.iter())
        .filter_map(|t| t.voice_to_voice_ms.map(|v| (t.concurrency, v)))
        .collect()
}

fn histogram(r: &Report) -> String {
    let v: Vec<u64> = latencies(r).into_iter().map(|(_, v)| v).collect();
    svg(720, 320, |a| {
        let max = v.iter().copied().max().unwrap_or(1000).max(100);
        let bin = ((max / 30).max(10) as f64 / 10.0).ceil() as u64 * 10;
        let bins = (max / bin + 1) as usize;
        let mut counts = vec![0u32; bins];
        for x in &v {
            counts[(*x / bin) as usize] += 1;
        }
        let top = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut c = ChartBuilder::on(a)
            .caption("Voice-to-voice latency", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0u64..(bins as u64 * bin), 0u32..top + 1)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("ms")
            .y_desc("turns")
            .draw()
            .map_err(|e| e.to_string())?;
        c.draw_series(counts.iter().enumerate().map(|(i, &n)| {
            let x0 = i as u64 * bin;
            Rectangle::new([(x0, 0), (x0 + bin, n)], BLUE.mix(0.6).filled())
        }))
        .map_err(|e| e.to_string())?;
        Ok(())
    })
}

fn cdf(r: &Report) -> String {
    let mut v: Vec<u64> = latencies(r).into_iter().map(|(_, v)| v).collect();
    v.sort_unstable();
    svg(720, 320, |a| {
        let max = v.last().copied().unwrap_or(1000).max(100);
        let mut c = ChartBuilder::on(a)
            .caption("Voice-to-voice latency, cumulative", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..max as f64 * 1.05, 0f64..1.0)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("ms")
            .y_desc("share of turns")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        let n = v.len().max(1) as f64;
        c.draw_series(LineSeries::new(
            v.iter()
                .enumerate()
                .map(|(i, &x)| (x as f64, (i + 1) as f64 / n)),
            &BLUE,
        ))
        .map_err(|e| e.to_string())?;
        Ok(())
    })
}

fn by_concurrency(r: &Report) -> String {
    let pts = latencies(r);
    let mut groups: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for (c, v) in &pts {
        groups.entry(*c).or_default().push(*v);
    }
    svg(720, 320, |a| {
        let maxc = groups.keys().copied().max().unwrap_or(1).max(1) + 1;
        let maxv = pts.iter().map(|p| p.1).max().unwrap_or(1000).max(100);
        let mut c = ChartBuilder::on(a)
            .caption("Latency vs concurrent calls", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..maxc as f64, 0f64..maxv as f64 * 1.1)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("calls in progress")
            .y_desc("ms")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| e.to_string())?;
        c.draw_series(
            pts.iter()
                .map(|(x, y)| Circle::new((*x as f64, *y as f64), 2, BLUE.mix(0.4).filled())),
        )
        .map_err(|e| e.to_string())?;
        let line = |p: f64| -> Vec<(f64, f64)> {
            groups
                .iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    v.sort_unstable();
                    (*k as f64, nearest_rank(&v, p) as f64)
                })
                .collect()
        };
        c.draw_series(LineSeries::new(line(50.0), &GREEN))
            .map_err(|e| e.to_string())?
            .label("p50")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
        c.draw_series(LineSeries::new(line(95.0), &RED))
            .map_err(|e| e.to_string())?
            .label("p95")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RED));
        c.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

fn errors_over_time(r: &Report) -> String {
    // Runs follow each other; lay them end to end on one time axis.
    let mut offset = 0u64;
    let mut started = Vec::new();
    let mut failed = Vec::new();
    for run in &r.runs {
        for c in &run.calls {
            started.push(offset + c.started_ms);
            if !c.ok {
                failed.push(offset + c.ended_ms);
            }
        }
        offset += run.wall_ms;
    }
    let bucket = (offset / 40).max(1000);
    let n = (offset / bucket + 1) as usize;
    let count = |v: &[u64]| {
        let mut b = vec![0u32; n];
        for t in v {
            b[((*t / bucket) as usize).min(n - 1)] += 1;
        }
        b
    };
    let (s, f) = (count(&started), count(&failed));
    svg(720, 320, |a| {
        let top = s.iter().chain(&f).copied().max().unwrap_or(1).max(1);
        let mut c = ChartBuilder::on(a)
            .caption(
                format!(
                    "Calls started and failed per {:.0} s",
                    bucket as f64 / 1000.0
                ),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..(n as u64 * bucket) as f64 / 1000.0, 0u32..top + 1)
            .map_err(|e| e.to_string())?;
        c.configure_mesh()
            .x_desc("s since start")
            .y_desc("calls")
            .draw()
            .map_err(|e| e.to_string())?;
        let w = bucket as f64 / 1000.0;
        c.draw_series(s.iter().enumerate().map(|(i, &k)| {
            let x = i as f64 * w;
            Rectangle::new([(x, 0), (x + w * 0.45, k)], BLUE.mix(0.5).filled())
        }))
        .map_err(|e| e.to_string())?
        .label("started")
        .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], BLUE.mix(0.5).filled()));
        c.draw_series(f.iter().enumerate().map(|(i, &k)| {
            let x = i as f64 * w + w * 0.5;
            Rectangle::new([(x, 0), (x + w * 0.45, k)], RED.filled())
        }))
        .map_err(|e| e.to_string())?
        .label("failed")
        .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 12, y + 4)], RED.filled()));
        c.configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// A self-contained HTML page: the summary, the plots, every call.
pub fn html(r: &Report) -> String {
    let mut calls = String::new();
    for run in &r.runs {
        for c in &run.calls {
            let v2v: Vec<String> = c
                .turns
                .iter()
                .map(|t| t.voice_to_voice_ms.map_or("-".into(), |v| v.to_string()))
                .collect();
            let checks: Vec<String> = c
                .turns
                .iter()
                .filter_map(|t| {
                    t.correct.map(|ok| {
                        format!(
                            "{} “{}”",
                            if ok { "✓" } else { "✗" },
                            html_escape(t.heard.as_deref().unwrap_or(""))
                        )
                    })
                })
                .collect();
            calls += &format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                run.concurrency,
                c.index,
                html_escape(&c.caller),
                if c.ok { "ok".to_string() } else { html_escape(c.failure.as_deref().unwrap_or("failed")) },
                c.time_to_answer_ms.map_or("-".into(), |v| v.to_string()),
                v2v.join(", "),
                checks.join("<br>")
            );
        }
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Attendant load test: {scenario}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}
pre{{background:#f5f5f5;padding:1em;overflow-x:auto}}
table{{border-collapse:collapse;font-size:13px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}}
.plots svg{{margin:0.5em 0;border:1px solid #eee}}
</style></head><body>
<h1>Load test: {scenario}</h1>
<p>{tool}, against <code>{url}</code>.</p>
<h2>Summary</h2>
<pre>{console}</pre>
<h2>Plots</h2>
<div class="plots">
{hist}
{cdf}
{conc}
{errs}
</div>
<h2>Calls</h2>
<table><tr><th>concurrency</th><th>#</th><th>caller</th><th>result</th><th>answer ms</th><th>voice-to-voice ms per turn</th><th>reply checks</th></tr>
{calls}</table>
</body></html>
"#,
        scenario = html_escape(&r.scenario),
        tool = html_escape(&r.tool),
        url = html_escape(&r.url),
        console = html_escape(&console(r)),
        hist = histogram(r),
        cdf = cdf(r),
        conc = by_concurrency(r),
        errs = errors_over_time(r),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadtest::{CallResult, TurnResult};

    fn run(conc: usize, lat: &[u64], failed: usize) -> RunResult {
        let mut calls: Vec<CallResult> = lat
            .iter()
            .enumerate()
            .map(|(i, &v)| CallResult {
                index: i,
                caller: "a".into(),
                ok: true,
                started_ms: i as u64 * 100,
                ended_ms: i as u64 * 100 + 5000,
                time_to_answer_ms: Some(300),
                turns: vec![TurnResult {
                    voice_to_voice_ms: Some(v),
                    concurrency: conc,
                    correct: Some(v < 1000),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        for i in 0..failed {
            calls.push(CallResult {
                index: 100 + i,
                failure: Some("no answer: the bot never spoke".into()),
                ..Default::default()
            });
        }
        RunResult {
            scenario: "s".into(),
            url: "ws://x".into(),
            transport: Default::default(),
            concurrency: conc,
            wall_ms: 10_000,
            calls,
            generator_cpu_percent: 3.0,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let p = Percentiles::of((1..=100).collect::<Vec<u64>>()).unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50, 95, 99, 100));
        assert_eq!(Percentiles::of(vec![7]).unwrap().p95, 7);
        assert!(Percentiles::of(Vec::new()).is_none());
    }

    #[test]
    fn summary_counts_failures_checks_and_latency() {
        let s = summarize(&run(2, &[400, 600, 1200], 1));
        assert_eq!((s.calls, s.ok, s.failed), (4, 3, 1));
        assert_eq!(s.failures["no answer"], 1);
        assert_eq!((s.checked, s.correct), (3, 2));
        assert_eq!(s.voice_to_voice_ms.unwrap().p50, 600);
        assert!((s.error_rate - 0.25).abs() < 1e-9);
    }

    #[test]
    fn html_report_has_every_plot_and_call() {
        let r = Report::new(vec![run(1, &[300, 350], 0), run(4, &[500, 900], 1)], None);
        let h = html(&r);
        assert_eq!(h.matches("<svg").count(), 4, "four plots");
        assert!(h.contains("Latency vs concurrent calls"));
        assert!(h.contains("no answer"));
        assert!(!h.contains("plot failed"));
        let table = console(&r);
        assert!(table.contains("voice-to-voice"), "{table}");
    }
}

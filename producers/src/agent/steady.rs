//! The steady state and what an experiment did to it: the baseline, when a probe window holds, when the
//! steady state came back, and the metrics and score computed from the probes' samples. Every number
//! here is measured from probe outcomes; nothing is derived from the experiment's wall time.

use std::time::Duration;

use serde::Serialize;

use super::config::SloConfig;
use super::probe::Sample;

/// Version of the score formula in every result (1: the Python tool's).
pub const SCORE_VERSION: i32 = 1;

/// Baseline figures, measured before injecting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub availability: f64,
    pub accuracy: f64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub requests: usize,
    /// Correct predictions per probe batch in the reference pass.
    #[serde(skip)]
    pub reference: Vec<usize>,
}

/// Percentile by nearest rank, in milliseconds (0 for no data).
pub fn percentile_ms(latencies: &mut [Duration], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_unstable();
    let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
    latencies[rank - 1].as_secs_f64() * 1e3
}

fn in_range(samples: &[Sample], from: Duration, to: Duration) -> Vec<&Sample> {
    samples.iter().filter(|s| s.sent >= from && s.sent < to).collect()
}

/// Accuracy lost against the reference pass, as a fraction, over the answered probes (paired by batch).
fn accuracy_lost(samples: &[&Sample], reference: &[usize]) -> Option<f64> {
    let total: usize = samples.iter().map(|s| s.total).sum();
    let lost: i64 = samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| reference.get(s.batch).copied().unwrap_or(s.correct) as i64 - s.correct as i64)
        .sum();
    (total > 0).then(|| lost as f64 / total as f64)
}

fn availability(samples: &[&Sample]) -> Option<f64> {
    (!samples.is_empty()).then(|| samples.iter().filter(|s| s.ok).count() as f64 / samples.len() as f64)
}

impl Baseline {
    /// `reference` is the reference pass; `total` the number of records in the probe set.
    pub fn measure(samples: &[Sample], until: Duration, reference: Vec<usize>, total: usize) -> Option<Self> {
        let base = in_range(samples, Duration::ZERO, until);
        let mut latencies: Vec<Duration> = base.iter().filter(|s| s.ok).map(|s| s.latency).collect();
        Some(Self {
            availability: availability(&base)?,
            accuracy: reference.iter().sum::<usize>() as f64 / total.max(1) as f64,
            reference,
            latency_p50_ms: percentile_ms(&mut latencies, 0.50),
            latency_p95_ms: percentile_ms(&mut latencies, 0.95),
            latency_p99_ms: percentile_ms(&mut latencies, 0.99),
            requests: base.len(),
        })
    }
}

/// What "steady" means for one window, given the baseline.
#[derive(Debug, Clone, Copy)]
pub struct Steady<'a> {
    availability: f64,
    latency_p95_ms: f64,
    /// Accuracy a window may lose against the reference, as a fraction.
    max_lost: f64,
    reference: &'a [usize],
}

impl<'a> Steady<'a> {
    pub fn new(slo: &SloConfig, baseline: &'a Baseline) -> Self {
        Self {
            availability: slo.availability,
            latency_p95_ms: slo.latency_p95_ms.unwrap_or(baseline.latency_p95_ms * 2.0 + 20.0),
            max_lost: slo.accuracy_drop_pp / 100.0,
            reference: &baseline.reference,
        }
    }

    /// `None` for a window without probes (no evidence either way).
    fn holds(&self, window: &[&Sample]) -> Option<bool> {
        let avail = availability(window)?;
        let mut latencies: Vec<Duration> = window.iter().map(|s| s.latency).collect();
        let p95 = percentile_ms(&mut latencies, 0.95);
        let acc_ok = accuracy_lost(window, self.reference).is_none_or(|lost| lost <= self.max_lost);
        Some(avail >= self.availability && p95 <= self.latency_p95_ms && acc_ok)
    }

    fn down(&self, window: &[&Sample]) -> bool {
        availability(window).is_some_and(|a| a < self.availability)
    }
}

/// When the steady state came back after `revert`: the start of the first stretch of `stability` during
/// which every settled window held. `None` while not (yet) seen.
pub fn recovered_at(
    samples: &[Sample],
    steady: &Steady,
    revert: Duration,
    settled: Duration,
    window: Duration,
    stability: Duration,
) -> Option<Duration> {
    let needed = (stability.as_secs_f64() / window.as_secs_f64()).ceil().max(1.0) as usize;
    let mut starts = Vec::new();
    let mut t = revert;
    while t + window <= settled {
        starts.push(t);
        t += window;
    }
    let verdicts: Vec<bool> =
        starts.iter().map(|start| steady.holds(&in_range(samples, *start, *start + window)).unwrap_or(true)).collect();
    (0..verdicts.len())
        .find(|&i| i + needed <= verdicts.len() && verdicts[i..i + needed].iter().all(|v| *v))
        .map(|i| starts[i] - revert)
}

/// The instants an experiment moved through, from the recorder's origin.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub inject: Duration,
    pub revert: Duration,
    pub end: Duration,
}

/// A region's measured result: the Python tool's metric names, plus what they were measured against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMetrics {
    pub pipeline_downtime_s: f64,
    /// From the revert until the steady state held for the stability window; null if it did not within
    /// the recovery window.
    pub recovery_time_s: Option<f64>,
    /// Whether the steady state came back within `recovery_window_s`.
    pub recovered: bool,
    /// How long recovery was waited for after the revert: the configured timeout, or less when a
    /// synchronous answer was due.
    pub recovery_window_s: f64,
    pub accuracy_degradation: f64,
    pub error_count: u64,
    pub requests_total: u64,
    pub requests_during_fault: u64,
    pub availability_during_fault: f64,
    pub accuracy_during_fault: Option<f64>,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub baseline_availability: f64,
    pub baseline_accuracy: f64,
    pub baseline_latency_p50_ms: f64,
    pub baseline_latency_p95_ms: f64,
    pub baseline_latency_p99_ms: f64,
    pub fault_duration_s: f64,
    pub score_version: i32,
    /// The Python tool's name for `pipeline_downtime_s` (its history and comparison code read it).
    pub pipeline_downtime: f64,
    /// The Python tool's name for `recovery_time_s`, always a number for its client: the recovery time,
    /// or, when the steady state did not come back, the window waited (a lower bound; `recovered` says).
    pub recovery_time: f64,
}

impl RunMetrics {
    /// Nothing measured: every count zero (a failure before any probe, or a task that failed).
    pub fn unmeasured() -> Self {
        Self {
            pipeline_downtime_s: 0.0,
            recovery_time_s: None,
            recovered: false,
            recovery_window_s: 0.0,
            accuracy_degradation: 0.0,
            error_count: 0,
            requests_total: 0,
            requests_during_fault: 0,
            availability_during_fault: 0.0,
            accuracy_during_fault: None,
            latency_p50_ms: 0.0,
            latency_p95_ms: 0.0,
            latency_p99_ms: 0.0,
            baseline_availability: 0.0,
            baseline_accuracy: 0.0,
            baseline_latency_p50_ms: 0.0,
            baseline_latency_p95_ms: 0.0,
            baseline_latency_p99_ms: 0.0,
            fault_duration_s: 0.0,
            score_version: SCORE_VERSION,
            pipeline_downtime: 0.0,
            recovery_time: 0.0,
        }
    }
}

/// What the probes saw of an experiment that ended before its fault was measured: the probes sent and
/// failed, and the baseline if it was measured. Nothing is reported for a fault that did not run.
pub fn partial(samples: &[Sample], baseline: Option<&Baseline>) -> RunMetrics {
    let mut m = RunMetrics::unmeasured();
    m.requests_total = samples.len() as u64;
    m.error_count = samples.iter().filter(|s| !s.ok).count() as u64;
    if let Some(b) = baseline {
        m.baseline_availability = round3(b.availability);
        m.baseline_accuracy = round3(b.accuracy);
        m.baseline_latency_p50_ms = round3(b.latency_p50_ms);
        m.baseline_latency_p95_ms = round3(b.latency_p95_ms);
        m.baseline_latency_p99_ms = round3(b.latency_p99_ms);
    }
    m
}

/// Computes the metrics from the probes; `recovery_window` is how long recovery was waited for.
pub fn measure(
    samples: &[Sample],
    baseline: &Baseline,
    steady: &Steady,
    phases: Phases,
    window: Duration,
    recovery: Option<Duration>,
    recovery_window: Duration,
) -> RunMetrics {
    let fault = in_range(samples, phases.inject, phases.revert);
    let after = in_range(samples, phases.inject, phases.end);
    let mut downtime = Duration::ZERO;
    let mut t = phases.inject;
    while t < phases.end {
        let end = (t + window).min(phases.end);
        if steady.down(&in_range(samples, t, end)) {
            downtime += end - t;
        }
        t = end;
    }
    let mut latencies: Vec<Duration> = fault.iter().map(|s| s.latency).collect();
    let lost = accuracy_lost(&fault, &baseline.reference);
    let accuracy_during_fault = lost.map(|l| baseline.accuracy - l);
    let degradation = lost.map_or(0.0, |l| l * 100.0);
    let downtime_s = round3(downtime.as_secs_f64());
    let recovery_s = recovery.map(|r| round3(r.as_secs_f64()));
    let window_s = round3(recovery_window.as_secs_f64());
    RunMetrics {
        pipeline_downtime_s: downtime_s,
        recovery_time_s: recovery_s,
        recovered: recovery.is_some(),
        recovery_window_s: window_s,
        accuracy_degradation: round3(degradation),
        error_count: after.iter().filter(|s| !s.ok).count() as u64,
        requests_total: samples.len() as u64,
        requests_during_fault: fault.len() as u64,
        availability_during_fault: availability(&fault).map_or(0.0, round3),
        accuracy_during_fault: accuracy_during_fault.map(round3),
        latency_p50_ms: round3(percentile_ms(&mut latencies, 0.50)),
        latency_p95_ms: round3(percentile_ms(&mut latencies, 0.95)),
        latency_p99_ms: round3(percentile_ms(&mut latencies, 0.99)),
        baseline_availability: round3(baseline.availability),
        baseline_accuracy: round3(baseline.accuracy),
        baseline_latency_p50_ms: round3(baseline.latency_p50_ms),
        baseline_latency_p95_ms: round3(baseline.latency_p95_ms),
        baseline_latency_p99_ms: round3(baseline.latency_p99_ms),
        fault_duration_s: round3((phases.revert - phases.inject).as_secs_f64()),
        score_version: SCORE_VERSION,
        pipeline_downtime: downtime_s,
        recovery_time: recovery_s.unwrap_or(window_s),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// resilience_score = 100 − min(downtime/10, 40) − min(accuracy_degradation, 30) − min(error_count·5, 30),
/// floored at 0 (score_version 1). An accuracy gain does not raise the score.
pub fn score(m: &RunMetrics) -> f64 {
    let s = 100.0
        - (m.pipeline_downtime_s / 10.0).min(40.0)
        - m.accuracy_degradation.clamp(0.0, 30.0)
        - (m.error_count as f64 * 5.0).min(30.0);
    round3(s.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, ok: bool, latency_ms: u64, correct: usize) -> Sample {
        Sample {
            sent: Duration::from_millis(ms),
            batch: 0,
            latency: Duration::from_millis(latency_ms),
            ok,
            correct: if ok { correct } else { 0 },
            total: if ok { 4 } else { 0 },
            error: None,
        }
    }

    #[test]
    fn outage_and_recovery_are_measured_from_probes() {
        // Baseline 0–1 s healthy; fault 1–2 s all failing; after 2 s healthy again from 2.5 s.
        let mut samples = Vec::new();
        for t in (0..4000).step_by(50) {
            let ok = !(1000..2500).contains(&t);
            samples.push(sample(t, ok, 5, 4));
        }
        let slo = SloConfig::default();
        let baseline = Baseline::measure(&samples, Duration::from_secs(1), vec![4], 4).expect("baseline");
        assert_eq!(baseline.availability, 1.0);
        assert_eq!(baseline.accuracy, 1.0);
        let steady = Steady::new(&slo, &baseline);
        let window = Duration::from_millis(500);
        let revert = Duration::from_secs(2);
        let recovery = recovered_at(&samples, &steady, revert, Duration::from_secs(4), window, Duration::from_secs(1));
        assert_eq!(recovery, Some(Duration::from_millis(500)));
        let phases = Phases { inject: Duration::from_secs(1), revert, end: Duration::from_secs(4) };
        let m = measure(&samples, &baseline, &steady, phases, window, recovery, Duration::from_secs(30));
        assert_eq!(m.pipeline_downtime_s, 1.5);
        assert_eq!(m.error_count, 30);
        assert_eq!(m.recovery_time_s, Some(0.5));
        assert!(m.recovered);
        assert_eq!((m.pipeline_downtime, m.recovery_time), (1.5, 0.5), "the Python tool's names");
        assert_eq!(score(&m), 100.0 - 0.15 - 0.0 - 30.0);
    }
}

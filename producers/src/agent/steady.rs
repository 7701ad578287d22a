//! The steady state and what an experiment did to it: the baseline, when a probe window holds, when the
//! steady state came back, and the metrics and score computed from the probes' samples. Every number
//! here is measured from probe outcomes; nothing is derived from the experiment's wall time.

use std::time::Duration;

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::config::SloConfig;
use super::probe::Sample;

/// Version of the score formula in every result. 1 was the Python tool's: downtime from availability
/// alone, accuracy over the answered requests. 2 keeps its formula and changes its inputs: a window
/// whose latency breaches the objective is down, a request answered later than the objective is a bad
/// request beside the failed ones, and accuracy counts every probe request.
pub use chaoseater_schemas::events::SCORE_VERSION;

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

/// Accuracy lost against the reference pass, as fractions of a batch's records, every probe request
/// counted: a request without predictions (error, timeout, refusal) predicted none of its records, so
/// it loses the ones the reference got right. Paired by batch, so which batches a phase happened to
/// send does not show up as accuracy lost or gained.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Loss {
    mean: f64,
    /// The 95% t-interval of the mean over the paired requests (None with fewer than two).
    interval: Option<(f64, f64)>,
}

/// Each request's loss against its batch's reference (requests that carried no records are skipped).
fn losses<'a>(samples: &'a [&Sample], reference: &'a [usize]) -> impl Iterator<Item = f64> + 'a {
    samples.iter().filter(|s| s.total > 0).map(|s| {
        let expected = reference.get(s.batch).copied().unwrap_or(s.correct);
        (expected as f64 - s.correct as f64) / s.total as f64
    })
}

/// The mean loss alone: what a window's verdict needs, on every recovery poll, without the interval.
fn mean_loss(samples: &[&Sample], reference: &[usize]) -> Option<f64> {
    let (sum, n) = losses(samples, reference).fold((0.0, 0usize), |(sum, n), x| (sum + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn accuracy_loss(samples: &[&Sample], reference: &[usize]) -> Option<Loss> {
    let lost: Vec<f64> = losses(samples, reference).collect();
    if lost.is_empty() {
        return None;
    }
    let n = lost.len() as f64;
    let mean = lost.iter().sum::<f64>() / n;
    let interval = (lost.len() >= 2).then(|| {
        let variance = lost.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let t = StudentsT::new(0.0, 1.0, n - 1.0).map_or(f64::NAN, |d| d.inverse_cdf(0.975));
        let half = t * (variance / n).sqrt();
        (mean - half, mean + half)
    });
    Some(Loss { mean, interval })
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

/// The latency objective: the `quantile` of a window's answered probes within `ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyObjective {
    pub ms: f64,
    pub quantile: f64,
}

impl LatencyObjective {
    /// The configured objective, or max(5 × baseline p99, baseline p99 + 50 ms): far enough above the
    /// baseline that its noise does not breach it, close enough that a user-visible slowdown does.
    pub fn new(slo: &SloConfig, baseline: &Baseline) -> Self {
        let (ms, quantile) = slo.latency_objective().unwrap_or_else(|| {
            let p99 = baseline.latency_p99_ms;
            ((5.0 * p99).max(p99 + 50.0), 0.99)
        });
        Self { ms, quantile }
    }

    fn within(&self, latency: Duration) -> bool {
        latency.as_secs_f64() * 1e3 <= self.ms
    }
}

/// What "steady" means for one window, given the baseline.
#[derive(Debug, Clone, Copy)]
pub struct Steady<'a> {
    availability: f64,
    latency: LatencyObjective,
    /// Accuracy a window may lose against the reference, as a fraction.
    max_lost: f64,
    reference: &'a [usize],
}

impl<'a> Steady<'a> {
    pub fn new(slo: &SloConfig, baseline: &'a Baseline) -> Self {
        Self {
            availability: slo.availability,
            latency: LatencyObjective::new(slo, baseline),
            max_lost: slo.accuracy_drop_pp / 100.0,
            reference: &baseline.reference,
        }
    }

    /// Whether a window is below its service objectives: too few probes answered, or the answered ones
    /// too slow. `None` for a window without probes (no evidence either way).
    fn breached(&self, window: &[&Sample]) -> Option<bool> {
        let avail = availability(window)?;
        let mut latencies: Vec<Duration> = window.iter().filter(|s| s.ok).map(|s| s.latency).collect();
        let slow = !latencies.is_empty() && percentile_ms(&mut latencies, self.latency.quantile) > self.latency.ms;
        Some(avail < self.availability || slow)
    }

    /// The steady state: the service objectives, and accuracy within its allowed drop.
    fn holds(&self, window: &[&Sample]) -> Option<bool> {
        let breached = self.breached(window)?;
        let accurate = mean_loss(window, self.reference).is_none_or(|lost| lost <= self.max_lost);
        Some(!breached && accurate)
    }

    /// A window below its service objectives counts as downtime (accuracy has its own term in the score).
    fn down(&self, window: &[&Sample]) -> bool {
        self.breached(window) == Some(true)
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
    /// Point estimate, percentage points; its 95% interval beside it.
    pub accuracy_degradation: f64,
    pub accuracy_degradation_low: Option<f64>,
    pub accuracy_degradation_high: Option<f64>,
    /// Share of probe requests during the fault that got predictions.
    pub coverage: Option<f64>,
    pub error_count: u64,
    /// Requests after injecting answered later than the latency objective (bad requests, like errors).
    pub slow_count: u64,
    /// Share of probe requests during the fault answered within the latency objective (the SLI).
    pub latency_within_objective: Option<f64>,
    /// The latency objective this run was judged against (null when the fault did not run).
    pub slo_latency_ms: Option<f64>,
    pub slo_latency_quantile: Option<f64>,
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
            accuracy_degradation_low: None,
            accuracy_degradation_high: None,
            coverage: None,
            error_count: 0,
            slow_count: 0,
            latency_within_objective: None,
            slo_latency_ms: None,
            slo_latency_quantile: None,
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
    let loss = accuracy_loss(&fault, &baseline.reference);
    let pp = |x: f64| round3(x * 100.0);
    let objective = steady.latency;
    let share = |count: usize| (!fault.is_empty()).then(|| round3(count as f64 / fault.len() as f64));
    let downtime_s = round3(downtime.as_secs_f64());
    let recovery_s = recovery.map(|r| round3(r.as_secs_f64()));
    let window_s = round3(recovery_window.as_secs_f64());
    RunMetrics {
        pipeline_downtime_s: downtime_s,
        recovery_time_s: recovery_s,
        recovered: recovery.is_some(),
        recovery_window_s: window_s,
        accuracy_degradation: loss.map_or(0.0, |l| pp(l.mean)),
        accuracy_degradation_low: loss.and_then(|l| l.interval).map(|(low, _)| pp(low)),
        accuracy_degradation_high: loss.and_then(|l| l.interval).map(|(_, high)| pp(high)),
        coverage: share(fault.iter().filter(|s| s.ok).count()),
        error_count: after.iter().filter(|s| !s.ok).count() as u64,
        slow_count: after.iter().filter(|s| s.ok && !objective.within(s.latency)).count() as u64,
        latency_within_objective: share(fault.iter().filter(|s| s.ok && objective.within(s.latency)).count()),
        slo_latency_ms: Some(round3(objective.ms)),
        slo_latency_quantile: Some(objective.quantile),
        requests_total: samples.len() as u64,
        requests_during_fault: fault.len() as u64,
        availability_during_fault: availability(&fault).map_or(0.0, round3),
        accuracy_during_fault: loss.map(|l| round3(baseline.accuracy - l.mean)),
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

/// resilience_score = 100 − min(downtime/10, 40) − min(accuracy_degradation, 30) − min(bad_requests·5, 30),
/// floored at 0 (score_version 2: bad requests are the failed and the slow ones, `error_count +
/// slow_count`; the inputs are measured as [`SCORE_VERSION`] says). An accuracy gain does not raise it.
pub fn score(m: &RunMetrics) -> f64 {
    let bad = (m.error_count + m.slow_count) as f64;
    let s = 100.0
        - (m.pipeline_downtime_s / 10.0).min(40.0)
        - m.accuracy_degradation.clamp(0.0, 30.0)
        - (bad * 5.0).min(30.0);
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
            total: 4,
            error: None,
        }
    }

    const WINDOW: Duration = Duration::from_millis(500);

    /// Baseline 0–1 s healthy (5 ms, 4 of 4 right); `fault(t)` decides each probe from 1 s to 2 s; healthy
    /// again after. Returns the metrics of the run with the default objectives.
    fn run(slo: &SloConfig, fault: impl Fn(u64) -> Sample) -> RunMetrics {
        let samples: Vec<Sample> = (0..4000)
            .step_by(50)
            .map(|t| if (1000..2000).contains(&t) { fault(t) } else { sample(t, true, 5, 4) })
            .collect();
        let baseline = Baseline::measure(&samples, Duration::from_secs(1), vec![4], 4).expect("baseline");
        let steady = Steady::new(slo, &baseline);
        let revert = Duration::from_secs(2);
        let recovery = recovered_at(&samples, &steady, revert, Duration::from_secs(4), WINDOW, Duration::from_secs(1));
        let phases = Phases { inject: Duration::from_secs(1), revert, end: Duration::from_secs(4) };
        measure(&samples, &baseline, &steady, phases, WINDOW, recovery, Duration::from_secs(30))
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
        let revert = Duration::from_secs(2);
        let recovery = recovered_at(&samples, &steady, revert, Duration::from_secs(4), WINDOW, Duration::from_secs(1));
        assert_eq!(recovery, Some(Duration::from_millis(500)));
        let phases = Phases { inject: Duration::from_secs(1), revert, end: Duration::from_secs(4) };
        let m = measure(&samples, &baseline, &steady, phases, WINDOW, recovery, Duration::from_secs(30));
        assert_eq!(m.pipeline_downtime_s, 1.5);
        assert_eq!(m.error_count, 30);
        assert_eq!(m.recovery_time_s, Some(0.5));
        assert!(m.recovered);
        assert_eq!((m.pipeline_downtime, m.recovery_time), (1.5, 0.5), "the Python tool's names");
        // Every request of the fault failed: no coverage, and it lost all of the reference's accuracy.
        assert_eq!((m.coverage, m.accuracy_degradation, m.accuracy_during_fault), (Some(0.0), 100.0, Some(0.0)));
        assert_eq!(score(&m), 39.85);
    }

    #[test]
    fn a_slow_window_is_down_and_a_slow_request_is_bad() {
        let slo = SloConfig::default();
        // Baseline p99 5 ms: the default objective is max(25, 55) = 55 ms at p99.
        let slow = run(&slo, |t| sample(t, true, 120, 4));
        assert_eq!((slow.slo_latency_ms, slow.slo_latency_quantile), (Some(55.0), Some(0.99)));
        assert_eq!(slow.pipeline_downtime_s, 1.0, "every window of the fault breached the objective");
        assert_eq!((slow.error_count, slow.slow_count, slow.latency_within_objective), (0, 20, Some(0.0)));
        assert_eq!(slow.recovery_time_s, Some(0.0));
        assert_eq!(score(&slow), 100.0 - 0.1 - 30.0);
        // The same fault at a tenth of the objective breaches nothing.
        let quick = run(&slo, |t| sample(t, true, 5, 4));
        assert_eq!((quick.pipeline_downtime_s, quick.slow_count), (0.0, 0));
        assert_eq!(quick.latency_within_objective, Some(1.0));
        assert_eq!(score(&quick), 100.0);
        // A configured objective wins, and "every request" is quantile 1.
        let every = SloConfig { latency_ms: Some(150.0), latency_quantile: 1.0, ..SloConfig::default() };
        let m = run(&every, |t| sample(t, true, if t == 1500 { 200 } else { 120 }, 4));
        assert_eq!((m.slo_latency_ms, m.pipeline_downtime_s, m.slow_count), (Some(150.0), 0.5, 1));
        let deprecated = SloConfig { latency_p95_ms: Some(80.0), ..SloConfig::default() };
        assert_eq!(run(&deprecated, |t| sample(t, true, 5, 4)).slo_latency_quantile, Some(0.95));
    }

    #[test]
    fn refusing_a_request_loses_at_least_what_answering_it_wrongly_does() {
        let slo = SloConfig { availability: 0.0, ..SloConfig::default() };
        // Half the fault's requests corrupted: one target refuses them, the other gets 1 of 4 right.
        let refuses = run(&slo, |t| sample(t, t % 100 != 0, 5, 4));
        let answers = run(&slo, |t| sample(t, true, 5, if t % 100 == 0 { 1 } else { 4 }));
        assert_eq!(refuses.accuracy_degradation, 50.0);
        assert_eq!(answers.accuracy_degradation, 37.5);
        assert_eq!((refuses.coverage, answers.coverage), (Some(0.5), Some(1.0)));
        let (low, high) =
            (answers.accuracy_degradation_low.expect("low"), answers.accuracy_degradation_high.expect("high"));
        assert!(low < 37.5 && 37.5 < high && low > 0.0, "{low} .. {high}");
    }

    #[test]
    fn the_interval_is_students_t_over_the_paired_requests() {
        let reference = [4usize];
        let batch = |correct| Sample { total: 4, ..sample(0, true, 5, correct) };
        let samples = [batch(4), batch(3), batch(2), batch(4)];
        let refs: Vec<&Sample> = samples.iter().collect();
        let loss = accuracy_loss(&refs, &reference).expect("loss");
        // Losses 0, .25, .5, 0: mean .1875, sd .2394, t(3, .975) = 3.1824.
        assert!((loss.mean - 0.1875).abs() < 1e-12);
        let (low, high) = loss.interval.expect("interval");
        let half = 3.182_446_305 * 0.239_356_776 / 2.0;
        assert!((low - (0.1875 - half)).abs() < 1e-6 && (high - (0.1875 + half)).abs() < 1e-6, "{low} {high}");
        assert_eq!(accuracy_loss(&refs[..1], &reference).expect("one").interval, None);
    }
}

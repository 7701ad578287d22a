//! One experiment on the agent: baseline, inject, hold (with rollback steps), revert, wait for the steady
//! state, measure. A task per experiment; the HTTP API reads its state and sends it control messages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chaoseater_schemas::bus::Shutdown;
use chaoseater_schemas::experiment::Layer;
use chaoseater_schemas::sync::lock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use tokio::sync::watch;

use super::AgentCore;
use super::faults::Fault;
use super::host::HostFault;
use super::probe::{self, Recorder};
use super::proxy::{ProxyFaultGuard, TrafficSnapshot};
use super::steady::{self, Baseline, Phases, RunMetrics, Steady};

/// The body of `POST /api/v1/experiments[/run]`: the Python tool's contract, plus optional `id`
/// (an idempotency key: a second request with the same id returns the first experiment) and `seed`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRequest {
    pub name: String,
    pub layer: String,
    pub fault_type: String,
    #[serde(default)]
    pub parameters: Map<String, Json>,
    /// Seconds the fault stays injected.
    pub duration: f64,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    /// Stepwise rollbacks: when the duration ends, keep the fault in place (phase `holding`) until the
    /// rollback steps reach 100%, an abort, or this many seconds, whichever comes first.
    #[serde(default)]
    pub hold_s: Option<f64>,
    /// Set by the synchronous endpoint, never read from a body: the answer is due this long after the
    /// request arrived, so the recovery wait is cut to fit (see [`SYNC_ANSWER_SLACK`]).
    #[serde(skip)]
    pub answer_within: Option<Duration>,
}

/// The synchronous endpoint answers within the fault's duration plus this: the Python tool's client
/// gives up after duration + 30 s, and a second is kept for the answer's way back.
pub const SYNC_ANSWER_SLACK: Duration = Duration::from_secs(29);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Baseline,
    Injecting,
    /// The duration ended; the fault stays until rolled back (see [`ExperimentRequest::hold_s`]).
    Holding,
    Recovering,
    Completed,
    Failed,
    Aborted,
}

impl Phase {
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Aborted)
    }
}

/// What the API may ask of a running experiment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Control {
    pub abort: bool,
    /// Percent of traffic rolled back from the fault (100 ends the fault).
    pub rolled_back: f64,
}

/// The final outcome. `resilience_score` and `metrics` are null unless the fault ran and was measured
/// (what the status endpoint shows, and the dispatcher records); [`Outcome::sync_body`] is the
/// synchronous endpoint's never-null answer.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub status: Phase,
    pub resilience_score: Option<f64>,
    pub metrics: Option<RunMetrics>,
    pub error: Option<String>,
    /// What the probes measured before the experiment failed or was aborted without a score.
    #[serde(skip)]
    pub partial: Option<RunMetrics>,
}

impl Outcome {
    fn failed(message: String, partial: Option<RunMetrics>) -> Self {
        Self { status: Phase::Failed, resilience_score: None, metrics: None, error: Some(message), partial }
    }

    /// The synchronous endpoint's answer: the Python tool's `{status, resilience_score, metrics}` with a
    /// number and an object always (its client formats both), so a failed region reads as score 0 with
    /// the metrics measured so far and the agent's `error`.
    pub fn sync_body(&self, id: &str) -> Json {
        let metrics = self.metrics.clone().or_else(|| self.partial.clone()).unwrap_or_else(RunMetrics::unmeasured);
        json!({
            "id": id,
            "status": self.status,
            "resilience_score": self.resilience_score.unwrap_or(0.0),
            "metrics": metrics,
            "error": self.error,
            "note": (!metrics.recovered && self.status == Phase::Completed).then(|| format!(
                "not recovered within the {:.1} s recovery window", metrics.recovery_window_s
            )),
        })
    }
}

#[derive(Debug, Clone)]
struct Progress {
    phase: Phase,
    mechanism: Option<String>,
    outcome: Option<Outcome>,
    rollback_steps: Vec<(f64, TrafficSnapshot)>,
    /// Step numbers already applied: a step sent twice (a dispatcher retrying) is applied once.
    applied_steps: Vec<u32>,
}

/// One experiment.
#[derive(Debug)]
pub struct Experiment {
    pub id: String,
    pub request: ExperimentRequest,
    pub layer: Layer,
    pub fault: Fault,
    pub started_at_ms: i64,
    progress: Mutex<Progress>,
    control: watch::Sender<Control>,
    done: watch::Sender<bool>,
    traffic_at_start: TrafficSnapshot,
    /// The probes of the running experiment, for the live error rate `/health` reports.
    recorder: Mutex<Option<Arc<Recorder>>>,
    /// When the request arrived: the synchronous answer's deadline counts from here.
    received: tokio::time::Instant,
}

impl Experiment {
    pub fn new(id: String, request: ExperimentRequest, layer: Layer, fault: Fault, traffic: TrafficSnapshot) -> Self {
        Self {
            id,
            request,
            layer,
            fault,
            started_at_ms: now_ms(),
            progress: Mutex::new(Progress {
                phase: Phase::Baseline,
                mechanism: None,
                outcome: None,
                rollback_steps: Vec::new(),
                applied_steps: Vec::new(),
            }),
            control: watch::channel(Control { abort: false, rolled_back: 0.0 }).0,
            done: watch::channel(false).0,
            traffic_at_start: traffic,
            recorder: Mutex::new(None),
            received: tokio::time::Instant::now(),
        }
    }

    pub fn phase(&self) -> Phase {
        lock(&self.progress).phase
    }

    fn set_phase(&self, phase: Phase) {
        lock(&self.progress).phase = phase;
        tracing::info!(experiment = %self.id, phase = ?phase, "Experiment phase.");
    }

    pub fn abort(&self) {
        self.control.send_modify(|c| c.abort = true);
    }

    /// Sets the rolled-back share; refused outside the fault phases. With a step number, a step already
    /// applied is not applied again (`Ok(false)`).
    pub fn rollback(&self, percentage: f64, step: Option<u32>) -> Result<bool, String> {
        if !(0.0..=100.0).contains(&percentage) {
            return Err(format!("percentage must be in [0, 100], got {percentage}"));
        }
        match self.phase() {
            Phase::Injecting | Phase::Holding => {
                if let Some(step) = step {
                    let mut p = lock(&self.progress);
                    if p.applied_steps.contains(&step) {
                        return Ok(false);
                    }
                    p.applied_steps.push(step);
                }
                self.control.send_modify(|c| c.rolled_back = percentage);
                Ok(true)
            }
            Phase::Baseline => Err("the fault is not injected yet (measuring the baseline)".to_owned()),
            _ => Err("the fault is already reverted".to_owned()),
        }
    }

    /// The share of probes that failed over the last `window` while the fault is in place; `None` in
    /// the other phases or before any probe completed in the window.
    pub fn live_error_rate(&self, window: Duration) -> Option<f64> {
        if !matches!(self.phase(), Phase::Injecting | Phase::Holding) {
            return None;
        }
        let recorder = lock(&self.recorder).clone()?;
        let now = recorder.now();
        let recent: Vec<bool> = recorder
            .samples()
            .iter()
            .filter(|s| now.saturating_sub(s.sent + s.latency) <= window)
            .map(|s| s.ok)
            .collect();
        (!recent.is_empty()).then(|| recent.iter().filter(|ok| !**ok).count() as f64 / recent.len() as f64)
    }

    /// When the synchronous answer is due, if this experiment has one.
    pub fn answer_by(&self) -> Option<tokio::time::Instant> {
        self.request.answer_within.map(|within| self.received + within)
    }

    pub fn outcome(&self) -> Option<Outcome> {
        lock(&self.progress).outcome.clone()
    }

    /// Waits until the experiment has an outcome.
    pub async fn finished(&self) -> Option<Outcome> {
        let mut done = self.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
        self.outcome()
    }

    fn finish(&self, outcome: Outcome) {
        tracing::info!(
            experiment = %self.id, status = ?outcome.status, score = ?outcome.resilience_score,
            error = outcome.error.as_deref().unwrap_or(""), "Experiment finished."
        );
        {
            let mut p = lock(&self.progress);
            p.phase = outcome.status;
            p.outcome = Some(outcome);
        }
        self.done.send_replace(true);
    }

    /// The JSON the status endpoint shows.
    pub fn view(&self, traffic: TrafficSnapshot) -> Json {
        let p = lock(&self.progress).clone();
        let control = *self.control.borrow();
        let since = |now: u64, then: u64| now.saturating_sub(then);
        let t0 = self.traffic_at_start;
        json!({
            "id": self.id,
            "name": self.request.name,
            "layer": self.layer.as_str(),
            "fault_type": self.request.fault_type,
            "parameters": self.request.parameters,
            "duration": self.request.duration,
            "status": p.phase,
            "rolled_back_percentage": control.rolled_back,
            "hold_s": self.request.hold_s,
            "mechanism": p.mechanism,
            "started_at_ms": self.started_at_ms,
            "traffic": {
                "requests": since(traffic.requests, t0.requests),
                "faulted": since(traffic.faulted, t0.faulted),
                "bypassed": since(traffic.bypassed, t0.bypassed),
                "unrecognised": since(traffic.unrecognised, t0.unrecognised),
                "connections_dropped": since(traffic.connections_dropped, t0.connections_dropped),
            },
            "rollback_steps": p.rollback_steps.iter().map(|(pct, t)| json!({
                "percentage": pct, "requests": since(t.requests, t0.requests), "faulted": since(t.faulted, t0.faulted),
                "bypassed": since(t.bypassed, t0.bypassed),
            })).collect::<Vec<_>>(),
            "result": p.outcome,
        })
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What is injected; dropping it reverts both parts.
struct Injected {
    proxy: Option<ProxyFaultGuard>,
    host: Option<HostFault>,
}

impl Injected {
    fn scale(&self, rolled_back: f64) {
        if let Some(proxy) = &self.proxy {
            proxy.set_rolled_back(rolled_back);
        }
        if let Some(host) = &self.host {
            host.scale(1.0 - rolled_back / 100.0);
        }
    }

    /// Reverts now; host reverts join threads and remove files, so off the async workers.
    async fn revert(self) {
        let Injected { proxy, host } = self;
        drop(proxy);
        if let Some(host) = host {
            let _ = tokio::task::spawn_blocking(move || drop(host)).await;
        }
    }
}

/// Runs `experiment` to its outcome. Never panics the caller: a panic inside reverts through the guards
/// (drop on unwind) and becomes a failed outcome.
pub async fn run(core: Arc<AgentCore>, experiment: Arc<Experiment>) {
    let task = tokio::spawn(drive(core.clone(), experiment.clone()));
    let outcome = match task.await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::failed(format!("the experiment task failed: {e}"), None),
    };
    // Free the agent first: whoever waits for the outcome may start the next experiment at once.
    core.release(&experiment.id);
    experiment.finish(outcome);
}

async fn drive(core: Arc<AgentCore>, experiment: Arc<Experiment>) -> Outcome {
    let config = &core.config;
    let window = Duration::from_millis(config.probe.window_ms);
    let recorder = Arc::new(Recorder::new());
    *lock(&experiment.recorder) = Some(recorder.clone());
    let probes = Shutdown::new();
    let prober =
        tokio::spawn(probe::run(core.probe.clone(), recorder.clone(), config.probe.interval(), probes.clone()));
    let mut control = experiment.control.subscribe();
    let stop_probes = || async {
        probes.trigger();
    };

    // Baseline: the reference pass over the whole probe set, and the probes' view of the steady state.
    let reference = match core.probe.reference().await {
        Ok(r) => r,
        Err(failed) => {
            stop_probes().await;
            let _ = prober.await;
            let message = format!("the target is not in a steady state before injecting: {}", failed.message);
            // The reference pass's own requests are measurements too: they are why it failed.
            let mut partial = steady::partial(&recorder.samples(), None);
            partial.requests_total += failed.sent;
            partial.error_count += failed.failed;
            return Outcome::failed(message, Some(partial));
        }
    };
    let aborted = wait(&mut control, Duration::from_millis(config.probe.baseline_ms), |c| c.abort).await;
    let inject_at = recorder.now();
    if aborted {
        stop_probes().await;
        let _ = prober.await;
        return Outcome {
            status: Phase::Aborted,
            resilience_score: None,
            metrics: None,
            error: Some("aborted before injecting".into()),
            partial: Some(steady::partial(&recorder.samples(), None)),
        };
    }
    // Baseline probes still in flight are waited for, so a slow target does not skew the baseline.
    while recorder.settled_until() < inject_at {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(baseline) = Baseline::measure(&recorder.samples(), inject_at, reference, core.probe_records) else {
        stop_probes().await;
        let _ = prober.await;
        return Outcome::failed("no baseline: no probe completed before injecting".to_owned(), None);
    };
    if baseline.availability < config.slo.availability {
        stop_probes().await;
        let _ = prober.await;
        let message = format!(
            "the target is not in a steady state before injecting: availability {:.3} below the SLO {} (is the upstream up?)",
            baseline.availability, config.slo.availability
        );
        return Outcome::failed(message, Some(steady::partial(&recorder.samples(), Some(&baseline))));
    }
    // A synchronous caller must have its answer in time: inject only if the whole fault fits.
    let settle = config.probe.timeout() + Duration::from_millis(500);
    let duration = Duration::from_secs_f64(experiment.request.duration);
    if let Some(by) = experiment.answer_by()
        && tokio::time::Instant::now() + duration + settle > by
    {
        stop_probes().await;
        let _ = prober.await;
        let message = format!(
            "the baseline took {:.1} s, too long to run a {:.1} s fault and still answer within duration + {} s; nothing was injected",
            recorder.now().as_secs_f64(),
            duration.as_secs_f64(),
            SYNC_ANSWER_SLACK.as_secs() + 1
        );
        return Outcome::failed(message, Some(steady::partial(&recorder.samples(), Some(&baseline))));
    }
    let steady = Steady::new(&config.slo, &baseline);

    // Inject.
    let seed = experiment.request.seed.unwrap_or_else(|| chaoseater_schemas::rng::Rng::from_time().next_u64());
    let injected = match inject(&core, &experiment, seed).await {
        Ok(injected) => injected,
        Err(message) => {
            stop_probes().await;
            let _ = prober.await;
            return Outcome::failed(message, Some(steady::partial(&recorder.samples(), Some(&baseline))));
        }
    };
    let inject_at = recorder.now();
    experiment.set_phase(Phase::Injecting);
    let mut deadline = tokio::time::Instant::now() + duration;
    let mut hold = experiment.request.hold_s.map(Duration::from_secs_f64);
    let mut aborted = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                // A stepwise rollback takes over at the end of the duration: the fault stays until the
                // steps reach 100%, bounded by the hold limit so that it always reverts.
                match hold.take() {
                    Some(limit) if control.borrow().rolled_back < 100.0 => {
                        deadline = tokio::time::Instant::now() + limit;
                        experiment.set_phase(Phase::Holding);
                    }
                    _ => break,
                }
            }
            changed = control.changed() => {
                if changed.is_err() { break; }
                let c = *control.borrow_and_update();
                if c.abort { aborted = true; break; }
                injected.scale(c.rolled_back);
                let traffic = core.traffic_of(&experiment);
                lock(&experiment.progress).rollback_steps.push((c.rolled_back, traffic));
                tracing::info!(experiment = %experiment.id, rolled_back = c.rolled_back, "Rollback step applied.");
                if c.rolled_back >= 100.0 { break; }
            }
        }
    }
    injected.revert().await;
    let revert_at = recorder.now();
    tracing::info!(experiment = %experiment.id, aborted, "Fault reverted.");

    // Recovery: probe until the steady state held for the stability window, or the timeout, cut short
    // when a synchronous answer is due (the probes still in flight then settle within `settle`).
    experiment.set_phase(Phase::Recovering);
    let stability = Duration::from_millis(config.slo.stability_window_ms);
    let mut timeout = Duration::from_millis(config.slo.recovery_timeout_ms);
    if let Some(by) = experiment.answer_by() {
        timeout = timeout.min(by.saturating_duration_since(tokio::time::Instant::now()).saturating_sub(settle));
    }
    let mut recovery = None;
    if !aborted {
        loop {
            let settled = recorder.settled_until();
            recovery = steady::recovered_at(&recorder.samples(), &steady, revert_at, settled, window, stability);
            if recovery.is_some() || recorder.now() >= revert_at + timeout {
                break;
            }
            if wait(&mut control, window / 2, |c| c.abort).await {
                aborted = true;
                break;
            }
        }
    }
    let end_at = match recovery {
        Some(r) => revert_at + r + stability,
        None => recorder.now().min(revert_at + timeout),
    };
    stop_probes().await;
    let _ = prober.await;
    let phases = Phases { inject: inject_at, revert: revert_at, end: end_at.max(revert_at) };
    let metrics = steady::measure(&recorder.samples(), &baseline, &steady, phases, window, recovery, timeout);
    let score = steady::score(&metrics);
    Outcome {
        status: if aborted { Phase::Aborted } else { Phase::Completed },
        resilience_score: Some(score),
        metrics: Some(metrics),
        error: None,
        partial: None,
    }
}

/// Waits `duration` or until `until(control)` holds; true when it did.
async fn wait(control: &mut watch::Receiver<Control>, duration: Duration, until: impl Fn(&Control) -> bool) -> bool {
    if until(&control.borrow()) {
        return true;
    }
    let deadline = tokio::time::Instant::now() + duration;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return false,
            changed = control.changed() => {
                if changed.is_err() { return false; }
                if until(&control.borrow_and_update()) { return true; }
            }
        }
    }
}

async fn inject(core: &Arc<AgentCore>, experiment: &Arc<Experiment>, seed: u64) -> Result<Injected, String> {
    let fault = experiment.fault.clone();
    if fault.is_host() {
        let (config, journal, tag) = (core.config.clone(), core.journal.clone(), experiment.id.clone());
        let host = tokio::task::spawn_blocking(move || HostFault::apply(&fault, &config, journal, &tag))
            .await
            .map_err(|e| format!("applying the fault failed: {e}"))?
            .map_err(|e| format!("cannot apply {}: {e}", experiment.request.fault_type))?;
        lock(&experiment.progress).mechanism = Some(host.mechanism.clone());
        Ok(Injected { proxy: None, host: Some(host) })
    } else {
        let hop = core.hop(experiment.layer);
        lock(&experiment.progress).mechanism = Some(format!("proxy on {} ({} hop)", hop.addr, hop.hop.as_str()));
        Ok(Injected { proxy: Some(hop.state.install(fault, seed)), host: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_answer_of_a_failure_is_a_number_an_object_and_the_error() {
        let partial = steady::partial(&[], None);
        let failed =
            Outcome::failed("the target is not in a steady state before injecting: refused".into(), Some(partial));
        let body = failed.sync_body("x");
        assert_eq!(body["status"], "failed");
        assert_eq!(body["resilience_score"], 0.0);
        assert!(body["metrics"].is_object() && body["metrics"]["recovery_time"] == 0.0, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("steady state")), "{body}");
        // What the status route shows and the dispatcher records stays null: a failure is not a measured 0.
        let view = serde_json::to_value(&failed).expect("JSON");
        assert!(view["resilience_score"].is_null() && view["metrics"].is_null(), "{view}");
        let lost = Outcome::failed("the experiment task failed: panic".into(), None).sync_body("y");
        assert!(lost["metrics"].is_object() && lost["resilience_score"] == 0.0, "{lost}");
    }
}

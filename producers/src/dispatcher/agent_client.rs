//! Calling a region's agent for one dispatch: start it under the dispatch id (the agent's idempotency key),
//! follow it to its outcome, and turn that into a RegionResult. Connection errors are retried with
//! backoff; the dispatch id guarantees the agent never runs it twice.

use std::time::{Duration, Instant};

use chaoseater_schemas::events::{
    FaultHeld, RegionDispatched, RegionMetrics, RegionResult, RegionStatus, RollbackStepRequested, SCORE_VERSION,
};
use chaoseater_schemas::ids::{DispatchId, TimestampMs};
use chaoseater_schemas::limits;
use hyper::Method;
use serde_json::{Value as Json, json};
use tokio::sync::watch;

use chaoseater_net::http::{HttpClient, HttpError};

const POLL_EVERY: Duration = Duration::from_millis(250);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn result(
    d: &RegionDispatched,
    started: TimestampMs,
    status: RegionStatus,
    score: Option<f64>,
    (score_version, metrics): (i32, Option<RegionMetrics>),
    message: Option<String>,
) -> RegionResult {
    RegionResult {
        // One result per dispatch, whatever happens (its id says so).
        event_id: RegionResult::id_for(&d.dispatch_id),
        occurred_at: TimestampMs::now(),
        run_id: d.run_id.clone(),
        dispatch_id: d.dispatch_id.clone(),
        region: d.region.clone(),
        experiment_name: d.experiment.name.clone(),
        layer: d.experiment.layer,
        fault_type: d.experiment.fault_type.clone(),
        parameters: d.experiment.parameters.clone(),
        tags: d.experiment.tags.clone(),
        status,
        resilience_score: score,
        score_version,
        metrics,
        // An agent's error text is not ours to bound: cut here, so the result always fits the broker.
        message: message.map(|m| limits::truncate(&m, limits::MAX_REASON_LEN).into_owned()),
        started_at: started,
        finished_at: TimestampMs::now(),
    }
}

/// A failed result naming why (no agent call was possible or it went wrong).
pub fn failed(d: &RegionDispatched, started: TimestampMs, message: String) -> RegionResult {
    result(d, started, RegionStatus::Failed, None, (SCORE_VERSION, None), Some(message))
}

/// Runs `d` on the agent at `endpoint` and returns its result. `abort` turning true aborts it on the agent.
/// For a stepwise rollback the agent holds the fault when its time ends; `on_held` hears of it once.
pub async fn run(
    client: &HttpClient,
    endpoint: &str,
    token: Option<&str>,
    d: &RegionDispatched,
    mut abort: watch::Receiver<bool>,
    on_held: impl Fn(FaultHeld),
) -> RegionResult {
    let started = TimestampMs::now();
    let deadline = Instant::now() + Duration::from_millis(d.timeout_ms.max(1) as u64);
    let base = endpoint.trim_end_matches('/');
    let id = d.dispatch_id.as_str();
    let mut body = json!({
        "id": id,
        "name": d.experiment.name,
        "layer": d.experiment.layer.as_str(),
        "fault_type": d.experiment.fault_type,
        "parameters": d.experiment.parameters,
        "duration": d.experiment.duration_ms as f64 / 1000.0,
    });
    let rollback = &d.experiment.rollback;
    let hold_s = rollback.strategy.holds_fault().then_some(rollback.timeout_seconds as f64);
    if let Some(hold_s) = hold_s {
        body["hold_s"] = json!(hold_s);
    }
    let mut held_told = false;
    let timeout_message =
        || format!("timeout: no outcome from {endpoint} within {:.0} s", d.timeout_ms as f64 / 1000.0);

    // Start (idempotent under the dispatch id): retried on connection errors and while the agent is busy.
    let mut backoff = FIRST_BACKOFF;
    let mut last_error: Option<String> = None;
    loop {
        if *abort.borrow() {
            return result(
                d,
                started,
                RegionStatus::Aborted,
                None,
                (SCORE_VERSION, None),
                Some("aborted before the agent started it".into()),
            );
        }
        if Instant::now() >= deadline {
            let detail = last_error.map(|e| format!(" (last error: {e})")).unwrap_or_default();
            return failed(d, started, format!("{}{detail}", timeout_message()));
        }
        let url = format!("{base}/api/v1/experiments");
        match client.json(Method::POST, &url, Some(&body), token, REQUEST_TIMEOUT).await {
            Ok(a) if a.status.as_u16() == 202 || a.status.is_success() => break,
            Ok(a) if a.status.as_u16() == 409 => {
                tracing::debug!(region = %d.region, "Agent busy with another experiment; waiting.");
                last_error = Some("the agent was busy with another experiment".to_owned());
            }
            Ok(a) => {
                let text = agent_error(&a.body);
                return failed(d, started, format!("agent answered HTTP {}: {text}", a.status.as_u16()));
            }
            Err(e) => {
                tracing::warn!(region = %d.region, error = %e, "Agent unreachable; retrying.");
                last_error = Some(e.to_string());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = abort.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::info!(region = %d.region, dispatch = %id, "Agent started the experiment.");

    // Follow it to its outcome.
    let status_url = format!("{base}/api/v1/experiments/{id}");
    let mut aborted_sent = false;
    let mut last_error = None;
    loop {
        if *abort.borrow() && !aborted_sent {
            let url = format!("{status_url}/abort");
            if let Err(e) = client.json(Method::POST, &url, None, token, REQUEST_TIMEOUT).await {
                tracing::warn!(region = %d.region, error = %e, "Abort did not reach the agent; retrying.");
            } else {
                aborted_sent = true;
            }
        }
        if Instant::now() >= deadline {
            // Give up, but do not leave the fault behind.
            let _ = client.json(Method::POST, &format!("{status_url}/abort"), None, token, REQUEST_TIMEOUT).await;
            let detail = last_error.map(|e: String| format!(" (last error: {e})")).unwrap_or_default();
            return failed(d, started, format!("{}{detail}", timeout_message()));
        }
        match client.json(Method::GET, &status_url, None, None, REQUEST_TIMEOUT).await {
            Ok(a) if a.status.is_success() => {
                let view: Json = serde_json::from_slice(&a.body).unwrap_or(Json::Null);
                if let Some(outcome) = view.get("result").filter(|r| r.is_object()) {
                    return from_outcome(d, started, outcome);
                }
                if !held_told && view.get("status").and_then(Json::as_str) == Some("holding") {
                    held_told = true;
                    on_held(FaultHeld {
                        event_id: FaultHeld::id_for(&d.dispatch_id),
                        occurred_at: TimestampMs::now(),
                        run_id: d.run_id.clone(),
                        region: d.region.clone(),
                        dispatch_id: d.dispatch_id.clone(),
                        hold_limit_ms: (hold_s.unwrap_or(0.0) * 1000.0) as i64,
                    });
                }
            }
            Ok(a) if a.status.as_u16() == 404 => {
                return failed(d, started, "the agent lost the experiment (it restarted while running it)".to_owned());
            }
            Ok(a) => last_error = Some(format!("HTTP {}", a.status.as_u16())),
            Err(HttpError::Timeout(t)) => last_error = Some(format!("status request timed out after {t:?}")),
            Err(e) => last_error = Some(e.to_string()),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = abort.changed() => {}
        }
    }
}

/// How a rollback step ended at the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// The agent applied it (or had applied it before: the step number is its idempotency key).
    Applied,
    /// The fault had already ended there (experiment reverted, finished or unknown): nothing is left to
    /// roll back, which is what the step asks.
    AlreadyReverted(String),
}

/// How long a rollback step keeps being retried while the agent is unreachable or still measuring its
/// baseline; after that the rollback processor's timeout decides.
const STEP_PATIENCE: Duration = Duration::from_secs(60);

/// Applies one rollback step on the agent at `endpoint`, retrying connection errors and an experiment
/// still in its baseline. Errors the agent gives for the request itself (an unknown upstream) end it.
pub async fn apply_step(
    client: &HttpClient,
    endpoint: &str,
    token: Option<&str>,
    step: &RollbackStepRequested,
) -> Result<StepOutcome, String> {
    let base = endpoint.trim_end_matches('/');
    let id = DispatchId::for_region(&step.run_id, &step.region);
    let url = format!("{base}/api/v1/experiments/{id}/rollback");
    let mut body = json!({"percentage": step.percentage, "step": step.step});
    if let Some(upstream) = &step.upstream {
        body["upstream"] = json!(upstream);
    }
    let deadline = Instant::now() + STEP_PATIENCE;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let last = match client.json(Method::POST, &url, Some(&body), token, REQUEST_TIMEOUT).await {
            Ok(a) if a.status.is_success() => return Ok(StepOutcome::Applied),
            Ok(a) if a.status.as_u16() == 404 => return Ok(StepOutcome::AlreadyReverted(agent_error(&a.body))),
            Ok(a) if a.status.as_u16() == 409 => {
                // Refused because of the experiment's phase: still measuring its baseline (wait), or the
                // fault is already gone (done).
                let status_url = format!("{base}/api/v1/experiments/{id}");
                let phase = match client.json(Method::GET, &status_url, None, None, REQUEST_TIMEOUT).await {
                    Ok(s) => serde_json::from_slice::<Json>(&s.body)
                        .ok()
                        .and_then(|v| v.get("status").and_then(Json::as_str).map(str::to_owned)),
                    Err(_) => None,
                };
                match phase.as_deref() {
                    Some("baseline") | None => agent_error(&a.body),
                    Some(_) => return Ok(StepOutcome::AlreadyReverted(agent_error(&a.body))),
                }
            }
            Ok(a) => return Err(format!("agent answered HTTP {}: {}", a.status.as_u16(), agent_error(&a.body))),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("step {} not applied within {:?}: {last}", step.step, STEP_PATIENCE));
        }
        tracing::debug!(region = %step.region, step = step.step, error = %last, "Rollback step not applied yet; retrying.");
        tokio::time::sleep(backoff).await;
        // A step is time-critical (an emergency rollback waits on it): retry at least every second.
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn agent_error(body: &[u8]) -> String {
    serde_json::from_slice::<Json>(body)
        .ok()
        .and_then(|j| j.get("error").and_then(Json::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

fn from_outcome(d: &RegionDispatched, started: TimestampMs, outcome: &Json) -> RegionResult {
    let status = match outcome.get("status").and_then(Json::as_str) {
        Some("completed") => RegionStatus::Completed,
        Some("aborted") => RegionStatus::Aborted,
        _ => RegionStatus::Failed,
    };
    let metrics = outcome.get("metrics").cloned().and_then(|m| serde_json::from_value::<RegionMetrics>(m).ok());
    let score = outcome.get("resilience_score").and_then(Json::as_f64);
    // The agent's metrics say which formula it used (metrics without the field: the first). A result
    // without metrics has no score, and its version only says which build recorded it.
    let version = match outcome.get("metrics").filter(|m| m.is_object()) {
        Some(m) => m.get("score_version").and_then(Json::as_i64).map_or(1, |v| v as i32),
        None => SCORE_VERSION,
    };
    let message = outcome.get("error").and_then(Json::as_str).map(str::to_owned);
    let score = if status == RegionStatus::Completed { score } else { None };
    result(d, started, status, score, (version, metrics), message)
}

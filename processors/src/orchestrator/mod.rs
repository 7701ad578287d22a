//! The orchestrator: turns RunRequested into region dispatches according to the run's mode, follows the
//! results, and closes each run with RunCompleted and its aggregate report. A saga per run, kept in sled
//! and advanced only by events, so a restarted orchestrator resumes half-finished runs where they stood.
//!
//! Keys in its state store:
//! - `region/{name}` → [`RegionEntry`] (JSON), the registry as the regions topic tells it;
//! - `run/{run_id}` → [`Saga`] (JSON);
//! - `rejected/{run_id}` → the reason, so a replayed bad command is rejected once.

mod saga;

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, Rejection, StateStore, StateView, regions};
use chaoseater_schemas::events::{
    AbortRequested, Event, RegionDispatched, RegionResult, RunCompleted, RunRejected, RunRequested, RunStarted,
};
use chaoseater_schemas::experiment::RunMode;
use chaoseater_schemas::ids::{RunId, TimestampMs};
use chaoseater_schemas::topics::Topic;
use chaoseater_schemas::{faults, limits};
pub use saga::{RegionEntry, RegionState, Saga, SagaRegion, Step, choose, dispatch_id};

/// Extra time the dispatcher allows beyond the fault's duration (baseline, recovery, network).
pub const DISPATCH_GRACE_MS: i64 = 30_000;

/// How long the dispatcher follows a dispatch: the fault's time, the grace, and for a rollback that holds
/// the fault, its timeout.
pub fn dispatch_timeout_ms(experiment: &chaoseater_schemas::experiment::ExperimentSpec) -> i64 {
    let rollback = &experiment.rollback;
    let hold = if rollback.strategy.holds_fault() { rollback.timeout_seconds.saturating_mul(1000) } else { 0 };
    experiment.duration_ms + DISPATCH_GRACE_MS + hold
}

/// The orchestrator processor.
#[derive(Debug, Default)]
pub struct Orchestrator;

fn json_err(e: impl std::fmt::Display) -> Rejection {
    Rejection(format!("orchestrator state: {e}"))
}

impl Orchestrator {
    pub const NAME: &'static str = "orchestrator";

    fn run_key(run_id: &RunId) -> Vec<u8> {
        format!("run/{run_id}").into_bytes()
    }

    /// A run's saga as committed (for `status` and tests).
    pub fn saga(store: &StateStore, run_id: &RunId) -> chaoseater_schemas::Result<Option<Saga>> {
        store.get_json(&Self::run_key(run_id))
    }

    /// Every saga in the store.
    pub fn sagas(store: &StateStore) -> chaoseater_schemas::Result<Vec<Saga>> {
        Ok(store.scan_json(b"run/")?.into_iter().map(|(_, saga)| saga).collect())
    }

    fn load(state: &StateView<'_>, run_id: &RunId) -> Result<Option<Saga>, ApplyError> {
        Ok(state.get_json(&Self::run_key(run_id))?)
    }

    fn save(state: &mut StateView<'_>, saga: &Saga) -> Result<(), ApplyError> {
        Ok(state.put_json(Self::run_key(&saga.run_id), saga)?)
    }

    /// The regions registered, as this batch sees them.
    fn regions(state: &StateView<'_>) -> Result<Vec<RegionEntry>, ApplyError> {
        Ok(regions::all(state)?)
    }

    fn reject(state: &mut StateView<'_>, run_id: &RunId, reason: String, now: TimestampMs) -> Vec<Event> {
        let reason = limits::truncate(&reason, limits::MAX_REASON_LEN).into_owned();
        state.put(format!("rejected/{run_id}").into_bytes(), reason.clone().into_bytes());
        tracing::warn!(run = %run_id, %reason, "Run rejected.");
        vec![Event::RunRejected(RunRejected {
            event_id: RunRejected::id_for(run_id),
            occurred_at: now,
            run_id: run_id.clone(),
            reason,
        })]
    }

    fn requested(
        &self,
        r: &RunRequested,
        state: &mut StateView<'_>,
        now: TimestampMs,
    ) -> Result<Vec<Event>, ApplyError> {
        if Self::load(state, &r.run_id)?.is_some()
            || state.get(format!("rejected/{}", r.run_id).as_bytes())?.is_some()
            || state.get(&Self::waiting_key(&r.run_id))?.is_some()
        {
            return Ok(Vec::new());
        }
        // Other systems publish commands too: the request is checked again here. A run id the platform
        // refuses cannot name a RunRejected (it could be a megabyte of control characters): that
        // command goes to the DLQ instead.
        if let Err(e) = limits::check_id("run_id", r.run_id.as_str(), limits::MAX_ID_LEN) {
            return Err(Rejection(format!("invalid RunRequested: {e}")).into());
        }
        if let Err(e) = limits::check_run_request(r) {
            return Ok(Self::reject(state, &r.run_id, format!("invalid request: {e}"), now));
        }
        let params = serde_json::to_value(&r.experiment.parameters).map_err(json_err)?;
        let empty = serde_json::Map::new();
        if let Err(e) =
            faults::validate(r.experiment.layer, &r.experiment.fault_type, params.as_object().unwrap_or(&empty))
        {
            return Ok(Self::reject(state, &r.run_id, format!("invalid experiment: {}: {}", e.field, e.message), now));
        }
        if r.experiment.duration_ms <= 0 {
            return Ok(Self::reject(state, &r.run_id, "invalid experiment: duration must be positive".to_owned(), now));
        }
        if r.mode == RunMode::Parallel && r.max_concurrent < 1 {
            return Ok(Self::reject(
                state,
                &r.run_id,
                format!("max_concurrent must be at least 1, got {}", r.max_concurrent),
                now,
            ));
        }
        if r.mode == RunMode::BlastRadius && !(r.blast_radius_percent > 0.0 && r.blast_radius_percent <= 100.0) {
            return Ok(Self::reject(
                state,
                &r.run_id,
                format!("blast_radius_percent must be in (0, 100], got {}", r.blast_radius_percent),
                now,
            ));
        }
        match Self::start(r, state, now)? {
            Ok(events) => Ok(events),
            Err(_) => {
                // The registry may not have caught up with a region registered a moment ago: wait a little.
                let waiting = Waiting { request: r.clone(), since_ms: now.0 };
                state.put_json(Self::waiting_key(&r.run_id), &waiting)?;
                Ok(Vec::new())
            }
        }
    }

    fn waiting_key(run_id: &RunId) -> Vec<u8> {
        format!("waiting/{run_id}").into_bytes()
    }

    /// Starts the run if every region it names is registered; otherwise says which is missing.
    fn start(
        r: &RunRequested,
        state: &mut StateView<'_>,
        now: TimestampMs,
    ) -> Result<Result<Vec<Event>, String>, ApplyError> {
        let registered = Self::regions(state)?;
        if registered.is_empty() {
            return Ok(Err("no regions are registered (chaoseater region add ...)".to_owned()));
        }
        let all = r.regions.is_empty();
        let candidates: Vec<RegionEntry> = if all {
            registered.clone()
        } else {
            let mut picked = Vec::new();
            for name in &r.regions {
                match registered.iter().find(|e| &e.name == name) {
                    Some(entry) if !picked.iter().any(|p: &RegionEntry| &p.name == name) => picked.push(entry.clone()),
                    Some(_) => {}
                    None => {
                        let known: Vec<&str> = registered.iter().map(|e| e.name.as_str()).collect();
                        return Ok(Err(format!("unknown region \"{name}\"; registered: {}", known.join(", "))));
                    }
                }
            }
            picked
        };
        let chosen = choose(r.mode, candidates, all, r.blast_radius_percent);
        let mut saga = Saga {
            run_id: r.run_id.clone(),
            experiment: r.experiment.clone(),
            mode: r.mode,
            max_concurrent: usize::try_from(r.max_concurrent).unwrap_or(1).max(1),
            fail_fast: r.fail_fast,
            regions: chosen
                .iter()
                .map(|e| SagaRegion { name: e.name.clone(), priority: e.priority, state: RegionState::Pending })
                .collect(),
            started_at_ms: r.occurred_at.0,
            aborted: None,
            completed: false,
        };
        let mut out = vec![Event::RunStarted(RunStarted {
            event_id: RunStarted::id_for(&r.run_id),
            occurred_at: now,
            run_id: r.run_id.clone(),
            experiment_name: r.experiment.name.clone(),
            regions: chosen.iter().map(|e| e.name.clone()).collect(),
            mode: r.mode,
        })];
        out.extend(Self::steps(&mut saga, now));
        Self::save(state, &saga)?;
        state.remove(Self::waiting_key(&r.run_id));
        tracing::info!(run = %r.run_id, regions = saga.regions.len(), mode = ?r.mode, "Run started.");
        Ok(Ok(out))
    }

    fn waiting(state: &StateView<'_>) -> Result<Vec<Waiting>, ApplyError> {
        Ok(state.scan_json(b"waiting/")?.into_iter().map(|(_, waiting)| waiting).collect())
    }

    /// Advances `saga` and turns its steps into events.
    fn steps(saga: &mut Saga, now: TimestampMs) -> Vec<Event> {
        saga.advance(now.0)
            .into_iter()
            .map(|step| match step {
                Step::Dispatch(region) => {
                    let dispatch_id = dispatch_id(&saga.run_id, &region);
                    Event::RegionDispatched(RegionDispatched {
                        event_id: RegionDispatched::id_for(&dispatch_id),
                        occurred_at: now,
                        run_id: saga.run_id.clone(),
                        dispatch_id,
                        region,
                        experiment: saga.experiment.clone(),
                        timeout_ms: dispatch_timeout_ms(&saga.experiment),
                    })
                }
                Step::Complete => {
                    let (status, report) = saga.report(now.0);
                    tracing::info!(run = %saga.run_id, ?status, mean_score = report.mean_score, "Run completed.");
                    Event::RunCompleted(RunCompleted {
                        event_id: RunCompleted::id_for(&saga.run_id),
                        occurred_at: now,
                        run_id: saga.run_id.clone(),
                        experiment_name: saga.experiment.name.clone(),
                        status,
                        report,
                    })
                }
            })
            .collect()
    }

    fn result(&self, r: &RegionResult, state: &mut StateView<'_>, now: TimestampMs) -> Result<Vec<Event>, ApplyError> {
        let Some(mut saga) = Self::load(state, &r.run_id)? else { return Ok(Vec::new()) };
        let duration = (r.finished_at.0 - r.started_at.0).max(0);
        if !saga.record(&r.region, &r.dispatch_id, r.status, r.resilience_score, duration, r.message.clone()) {
            return Ok(Vec::new());
        }
        let out = Self::steps(&mut saga, now);
        Self::save(state, &saga)?;
        Ok(out)
    }

    fn abort(&self, a: &AbortRequested, state: &mut StateView<'_>, now: TimestampMs) -> Result<Vec<Event>, ApplyError> {
        let Some(mut saga) = Self::load(state, &a.run_id)? else { return Ok(Vec::new()) };
        if saga.completed {
            return Ok(Vec::new());
        }
        saga.abort(&a.reason);
        tracing::info!(run = %a.run_id, reason = %a.reason, "Run aborting.");
        let out = Self::steps(&mut saga, now);
        Self::save(state, &saga)?;
        Ok(out)
    }
}

/// A run whose regions were not all registered when it was requested.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Waiting {
    request: RunRequested,
    since_ms: i64,
}

/// How long a run waits for the regions it names to be registered before it is rejected.
pub const REGION_WAIT_MS: i64 = 5_000;

impl Processor for Orchestrator {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Commands, Topic::Regions, Topic::Results]
    }

    fn applied_first(&self) -> Vec<Topic> {
        vec![Topic::Regions]
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(500))
    }

    fn tick(&mut self, now: TimestampMs, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let mut out = Vec::new();
        for waiting in Self::waiting(state)? {
            if now.0 - waiting.since_ms < REGION_WAIT_MS {
                continue;
            }
            state.remove(Self::waiting_key(&waiting.request.run_id));
            match Self::start(&waiting.request, state, now)? {
                Ok(events) => out.extend(events),
                Err(reason) => out.extend(Self::reject(state, &waiting.request.run_id, reason, now)),
            }
        }
        Ok(out)
    }

    fn apply(&mut self, event: &Event, origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let now = origin.now;
        match event {
            Event::RegionRegistered(_) => {
                regions::fold(state, event)?;
                // Runs waiting for a region may start now.
                let mut out = Vec::new();
                for waiting in Self::waiting(state)? {
                    if let Ok(events) = Self::start(&waiting.request, state, now)? {
                        out.extend(events);
                    }
                }
                Ok(out)
            }
            Event::RegionRemoved(_) => {
                regions::fold(state, event)?;
                Ok(Vec::new())
            }
            Event::RunRequested(r) => self.requested(r, state, now),
            Event::RegionResult(r) => self.result(r, state, now),
            Event::AbortRequested(a) => self.abort(a, state, now),
            _ => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests;

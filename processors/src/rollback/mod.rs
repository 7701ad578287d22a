//! The rollback processor: a [`Rollback`] state machine per run and region, fed by dispatches, held
//! faults, step acknowledgements, health samples, circuit transitions, results and commands, kept in sled
//! with the offsets. It starts a rollback when a held fault's time ended (FaultHeld), on abort, when a
//! health sample's error rate crosses the run's failure threshold, when the region's circuit opens, or
//! on `chaoseater rollback start`; each step is a RollbackStepRequested the dispatcher applies on the
//! agent (RollbackStepApplied), gated on a health sample taken after it.
//!
//! Keys in its state store:
//! - `run/{run}/{region}` → [`ActiveRun`] (JSON), from RegionDispatched until its RegionResult;
//! - `active/{region}/{run}` → empty, the index health samples and circuit transitions look up;
//! - `rb/{run}/{region}` → [`Rollback`] (JSON) until the region's result is in and the rollback is final.

mod machine;

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, StateView};
use chaoseater_schemas::events::{
    CircuitState, Event, HealthStatus, RollbackAction, RollbackCompleted, RollbackFailed, RollbackPaused,
    RollbackStarted, RollbackStepRequested, RollbackTrigger,
};
use chaoseater_schemas::experiment::RollbackConfig;
use chaoseater_schemas::ids::{DispatchId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::topics::Topic;
pub use machine::{BLUE, GREEN, Input, Output, Rollback, Stage, Step, plan};
use serde::{Deserialize, Serialize};

/// A region's run whose fault may still be in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveRun {
    pub dispatch_id: DispatchId,
    pub config: RollbackConfig,
}

/// The rollback processor.
#[derive(Debug, Default)]
pub struct RollbackProcessor;

fn run_key(run: &RunId, region: &RegionName) -> Vec<u8> {
    format!("run/{run}/{region}").into_bytes()
}

fn active_key(region: &RegionName, run: &RunId) -> Vec<u8> {
    format!("active/{region}/{run}").into_bytes()
}

fn rollback_key(run: &RunId, region: &RegionName) -> Vec<u8> {
    format!("rb/{run}/{region}").into_bytes()
}

fn load<T: serde::de::DeserializeOwned>(state: &StateView<'_>, key: &[u8]) -> Result<Option<T>, ApplyError> {
    Ok(state.get_json(key)?)
}

fn save<T: Serialize>(state: &mut StateView<'_>, key: Vec<u8>, value: &T) -> Result<(), ApplyError> {
    Ok(state.put_json(key, value)?)
}

impl RollbackProcessor {
    pub const NAME: &'static str = "rollback";

    /// Runs in `region` whose fault may be in place.
    fn runs_in(state: &StateView<'_>, region: &RegionName) -> Result<Vec<RunId>, ApplyError> {
        let prefix = format!("active/{region}/");
        Ok(state
            .scan_prefix(prefix.as_bytes())?
            .into_iter()
            .map(|(k, _)| RunId::new(String::from_utf8_lossy(&k[prefix.len()..]).as_ref()))
            .collect())
    }

    /// Regions of `run` whose fault may be in place (optionally only `only`).
    fn regions_of(
        state: &StateView<'_>,
        run: &RunId,
        only: Option<&RegionName>,
    ) -> Result<Vec<RegionName>, ApplyError> {
        let prefix = format!("run/{run}/");
        Ok(state
            .scan_prefix(prefix.as_bytes())?
            .into_iter()
            .map(|(k, _)| RegionName::new(String::from_utf8_lossy(&k[prefix.len()..]).as_ref()))
            .filter(|r| only.is_none_or(|o| o == r))
            .collect())
    }

    /// Starts a rollback of `run` in `region` unless one exists; an emergency escalates one in progress.
    fn start(
        state: &mut StateView<'_>,
        run: &RunId,
        region: &RegionName,
        trigger: RollbackTrigger,
        at: TimestampMs,
        out: &mut Vec<Event>,
    ) -> Result<(), ApplyError> {
        if let Some(mut existing) = load::<Rollback>(state, &rollback_key(run, region))? {
            if matches!(trigger, RollbackTrigger::DurationEnded | RollbackTrigger::Manual) {
                return Ok(());
            }
            let outputs = existing.on(Input::Escalate, at.0);
            return Self::advance(state, run, region, existing, outputs, at, out);
        }
        let Some(active) = load::<ActiveRun>(state, &run_key(run, region))? else {
            return Ok(());
        };
        let (rollback, first) = Rollback::start(&active.config, trigger, at.0);
        tracing::info!(%run, %region, strategy = rollback.strategy.as_str(), trigger = trigger.as_str(), "Rollback started.");
        out.push(Event::RollbackStarted(RollbackStarted {
            event_id: RollbackStarted::id_for(run, region),
            occurred_at: at,
            run_id: run.clone(),
            region: region.clone(),
            strategy: rollback.strategy,
            trigger,
            planned_percentages: rollback.percentages(),
        }));
        Self::advance(state, run, region, rollback, vec![first], at, out)
    }

    /// Feeds `input` to the rollback of `run` in `region`, if there is one.
    fn feed(
        state: &mut StateView<'_>,
        run: &RunId,
        region: &RegionName,
        input: Input,
        at: TimestampMs,
        out: &mut Vec<Event>,
    ) -> Result<(), ApplyError> {
        let Some(mut rollback) = load::<Rollback>(state, &rollback_key(run, region))? else { return Ok(()) };
        let outputs = rollback.on(input, at.0);
        Self::advance(state, run, region, rollback, outputs, at, out)
    }

    /// Stores the machine and turns its outputs into events.
    fn advance(
        state: &mut StateView<'_>,
        run: &RunId,
        region: &RegionName,
        rollback: Rollback,
        outputs: Vec<Output>,
        at: TimestampMs,
        out: &mut Vec<Event>,
    ) -> Result<(), ApplyError> {
        let (run_id, region_name) = (run.clone(), region.clone());
        for output in outputs {
            out.push(match output {
                Output::Request { step, percentage, upstream, check_after_ms } => {
                    tracing::info!(%run, %region, step, percentage, "Rollback step requested.");
                    Event::RollbackStepRequested(RollbackStepRequested {
                        event_id: RollbackStepRequested::id_for(run, region, step),
                        occurred_at: at,
                        run_id: run_id.clone(),
                        region: region_name.clone(),
                        step,
                        percentage,
                        strategy: rollback.strategy,
                        upstream,
                        check_after_ms,
                    })
                }
                Output::Paused { step, reason } => {
                    tracing::warn!(%run, %region, step, %reason, "Rollback paused.");
                    Event::RollbackPaused(RollbackPaused {
                        event_id: RollbackPaused::id_for(&run_id, &region_name, step),
                        occurred_at: at,
                        run_id: run_id.clone(),
                        region: region_name.clone(),
                        step,
                        reason,
                    })
                }
                Output::Completed { steps, duration_ms } => {
                    tracing::info!(%run, %region, steps, duration_ms, "Rollback completed.");
                    Event::RollbackCompleted(RollbackCompleted {
                        event_id: RollbackCompleted::id_for(&run_id, &region_name),
                        occurred_at: at,
                        run_id: run_id.clone(),
                        region: region_name.clone(),
                        steps,
                        duration_ms,
                    })
                }
                Output::Failed { reason } => {
                    tracing::warn!(%run, %region, %reason, "Rollback failed.");
                    Event::RollbackFailed(RollbackFailed {
                        event_id: RollbackFailed::id_for(&run_id, &region_name),
                        occurred_at: at,
                        run_id: run_id.clone(),
                        region: region_name.clone(),
                        reason,
                    })
                }
            });
        }
        if rollback.is_final() && load::<ActiveRun>(state, &run_key(run, region))?.is_none() {
            state.remove(rollback_key(run, region));
        } else {
            save(state, rollback_key(run, region), &rollback)?;
        }
        Ok(())
    }
}

impl Processor for RollbackProcessor {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Dispatch, Topic::Results, Topic::Health, Topic::Rollback, Topic::Commands]
    }

    /// A run's configuration (its dispatch) must be known before anything about the run is applied.
    fn applied_first(&self) -> Vec<Topic> {
        vec![Topic::Dispatch]
    }

    fn apply(&mut self, event: &Event, _origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let mut out = Vec::new();
        match event {
            Event::RegionDispatched(d) => {
                let active = ActiveRun { dispatch_id: d.dispatch_id.clone(), config: d.experiment.rollback.clone() };
                save(state, run_key(&d.run_id, &d.region), &active)?;
                state.put(active_key(&d.region, &d.run_id), Vec::new());
            }
            Event::FaultHeld(h) => {
                Self::start(state, &h.run_id, &h.region, RollbackTrigger::DurationEnded, h.occurred_at, &mut out)?;
            }
            Event::RollbackStepApplied(a) => {
                let input = Input::Applied { step: a.step, at: a.occurred_at.0 };
                Self::feed(state, &a.run_id, &a.region, input, a.occurred_at, &mut out)?;
            }
            Event::RegionHealthSampled(s) => {
                for run in Self::runs_in(state, &s.region)? {
                    // Loaded once: the health path carries the most events of any input.
                    if let Some(mut rollback) = load::<Rollback>(state, &rollback_key(&run, &s.region))? {
                        let input = Input::Sample {
                            at: s.occurred_at.0,
                            healthy: s.status == HealthStatus::Healthy,
                            error_rate: s.error_rate,
                            detail: s.message.clone().unwrap_or_else(|| s.status.as_str().to_owned()),
                        };
                        let outputs = rollback.on(input, s.occurred_at.0);
                        Self::advance(state, &run, &s.region, rollback, outputs, s.occurred_at, &mut out)?;
                    } else if let Some(rate) = s.error_rate
                        && let Some(active) = load::<ActiveRun>(state, &run_key(&run, &s.region))?
                        && rate > active.config.failure_threshold
                    {
                        tracing::warn!(%run, region = %s.region, rate, threshold = active.config.failure_threshold, "Failure threshold crossed.");
                        let trigger = RollbackTrigger::FailureThreshold;
                        Self::start(state, &run, &s.region, trigger, s.occurred_at, &mut out)?;
                    }
                }
            }
            Event::CircuitStateChanged(c) if c.to_state == CircuitState::Open => {
                for run in Self::runs_in(state, &c.region)? {
                    Self::start(state, &run, &c.region, RollbackTrigger::CircuitOpen, c.occurred_at, &mut out)?;
                }
            }
            Event::AbortRequested(a) => {
                for region in Self::regions_of(state, &a.run_id, None)? {
                    Self::start(state, &a.run_id, &region, RollbackTrigger::Abort, a.occurred_at, &mut out)?;
                }
            }
            Event::RollbackRequested(r) => {
                for region in Self::regions_of(state, &r.run_id, r.region.as_ref())? {
                    match r.action {
                        RollbackAction::Start => {
                            Self::start(state, &r.run_id, &region, RollbackTrigger::Manual, r.occurred_at, &mut out)?
                        }
                        RollbackAction::Resume => {
                            Self::feed(state, &r.run_id, &region, Input::Resume, r.occurred_at, &mut out)?
                        }
                    }
                }
            }
            Event::RegionResult(r) => {
                state.remove(run_key(&r.run_id, &r.region));
                state.remove(active_key(&r.region, &r.run_id));
                Self::feed(state, &r.run_id, &r.region, Input::FaultGone, r.occurred_at, &mut out)?;
            }
            _ => {}
        }
        Ok(out)
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(250))
    }

    /// Rollbacks past their timeout fail.
    fn tick(&mut self, now: TimestampMs, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let mut out = Vec::new();
        for (key, rollback) in state.scan_json::<Rollback>(b"rb/")? {
            if rollback.is_final() || now.0 < rollback.deadline {
                continue;
            }
            let key = String::from_utf8_lossy(&key[b"rb/".len()..]).into_owned();
            let Some((run, region)) = key.split_once('/') else { continue };
            let (run, region) = (RunId::new(run), RegionName::new(region));
            Self::feed(state, &run, &region, Input::Tick { now: now.0 }, now, &mut out)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;

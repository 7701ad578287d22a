//! Commands (topic chaoseater.commands, key run id).

use serde::{Deserialize, Serialize};

use crate::experiment::{ExperimentSpec, RunMode};
use crate::ids::{EventId, RegionName, RunId, TimestampMs};

/// A request to run one experiment across regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequested {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    /// The experiment to run.
    pub experiment: ExperimentSpec,
    /// Regions to run in; empty means every registered region.
    pub regions: Vec<RegionName>,
    pub mode: RunMode,
    /// Parallel mode: most regions in flight at once.
    pub max_concurrent: i32,
    /// Sequential mode: stop at the first failed region.
    pub fail_fast: bool,
    /// Blast-radius mode: percentage (0, 100] of regions touched, at least one.
    pub blast_radius_percent: f64,
    /// CI/CD gate: every region must score at least this.
    pub min_score: Option<f64>,
    /// Who asked.
    pub requested_by: String,
}

impl RunRequested {
    /// The event id of the request that created `run_id`: one request per run.
    pub fn id_for(run_id: &RunId) -> EventId {
        EventId::derive("RunRequested", &[run_id.as_str()])
    }
}

/// A request to abort a run and revert its faults everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbortRequested {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub reason: String,
    pub requested_by: String,
}

impl AbortRequested {
    /// Aborts are idempotent per run and time of request.
    pub fn id_for(run_id: &RunId, at: TimestampMs) -> EventId {
        EventId::derive("AbortRequested", &[run_id.as_str(), &at.to_id_part()])
    }
}

/// What a [`RollbackRequested`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RollbackAction {
    /// Begin rolling back a fault still in place, with the run's strategy.
    Start,
    /// Continue a paused rollback.
    Resume,
}

/// A request to start or resume the rollback of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackRequested {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    /// Only this region; `None` means every region of the run.
    pub region: Option<RegionName>,
    pub action: RollbackAction,
    pub requested_by: String,
}

impl RollbackRequested {
    /// Requests are idempotent per run, action and time of request.
    pub fn id_for(run_id: &RunId, action: RollbackAction, at: TimestampMs) -> EventId {
        EventId::derive("RollbackRequested", &[run_id.as_str(), &format!("{action:?}"), &at.to_id_part()])
    }
}

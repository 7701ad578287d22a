//! Work for the dispatcher (topic chaoseater.dispatch, key run id).

use serde::{Deserialize, Serialize};

use crate::experiment::{ExperimentSpec, RollbackStrategy};
use crate::ids::{DispatchId, EventId, RegionName, RunId, TimestampMs};

/// Run the experiment in one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionDispatched {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    /// Idempotency key: the agent runs one dispatch at most once.
    pub dispatch_id: DispatchId,
    pub region: RegionName,
    pub experiment: ExperimentSpec,
    /// The dispatcher gives up after this long.
    pub timeout_ms: i64,
}

/// Stop the fault for a share of the region's traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackStepRequested {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub region: RegionName,
    /// Step number, from 1.
    pub step: i32,
    /// Share of traffic (percent) free of the fault after this step.
    pub percentage: f64,
    pub strategy: RollbackStrategy,
    /// Blue-green: the upstream the agent routes traffic to as part of this step.
    pub upstream: Option<String>,
    /// When set, the dispatcher samples the region's health this long after applying the step.
    pub check_after_ms: Option<i64>,
}

impl RollbackStepRequested {
    /// One request per run, region and step: a replayed decision yields the same id.
    pub fn id_for(run_id: &RunId, region: &RegionName, step: i32) -> EventId {
        EventId::derive("RollbackStepRequested", &[run_id.as_str(), region.as_str(), &step.to_string()])
    }
}

impl RegionDispatched {
    /// One dispatch event per dispatch id (which names the run, the region and the attempt).
    pub fn id_for(dispatch_id: &DispatchId) -> EventId {
        EventId::derive("RegionDispatched", &[dispatch_id.as_str()])
    }
}

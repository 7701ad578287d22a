//! Rollback progress and circuit transitions (topic chaoseater.rollback).

use serde::{Deserialize, Serialize};

use crate::experiment::RollbackStrategy;
use crate::ids::{DispatchId, EventId, RegionName, RunId, TimestampMs};

/// What started a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RollbackTrigger {
    DurationEnded,
    Abort,
    FailureThreshold,
    CircuitOpen,
    Manual,
}

/// The fault's time ended; the agent holds it until the rollback steps reach 100%.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultHeld {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub region: RegionName,
    pub dispatch_id: DispatchId,
    /// The agent reverts the fault by itself this long after the hold began.
    pub hold_limit_ms: i64,
}

impl FaultHeld {
    /// One hold per dispatch.
    pub fn id_for(dispatch_id: &DispatchId) -> EventId {
        EventId::derive("FaultHeld", &[dispatch_id.as_str()])
    }
}

impl RollbackTrigger {
    /// The name events use, lower-cased (`duration_ended`, `abort`, `failure_threshold`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackTrigger::DurationEnded => "duration_ended",
            RollbackTrigger::Abort => "abort",
            RollbackTrigger::FailureThreshold => "failure_threshold",
            RollbackTrigger::CircuitOpen => "circuit_open",
            RollbackTrigger::Manual => "manual",
        }
    }
}

/// A rollback began for one run and region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackStarted {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub region: RegionName,
    pub strategy: RollbackStrategy,
    pub trigger: RollbackTrigger,
    /// Cumulative percentages of the planned steps.
    pub planned_percentages: Vec<f64>,
}

/// The agent applied a rollback step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackStepApplied {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub region: RegionName,
    pub step: i32,
    pub percentage: f64,
}

/// A failed health check paused the rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackPaused {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub region: RegionName,
    pub step: i32,
    pub reason: String,
}

/// All traffic is free of the fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackCompleted {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub region: RegionName,
    pub steps: i32,
    pub duration_ms: i64,
}

/// A rollback did not finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackFailed {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub region: RegionName,
    pub reason: String,
}

/// State of a region's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

/// A region's circuit breaker changed state.
impl CircuitState {
    /// The name events and state stores use (`CLOSED`, `OPEN`, `HALF_OPEN`).
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "CLOSED",
            CircuitState::Open => "OPEN",
            CircuitState::HalfOpen => "HALF_OPEN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CircuitStateChanged {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub region: RegionName,
    pub from_state: CircuitState,
    pub to_state: CircuitState,
    pub reason: String,
}

// The ids of what the rollback processor and the circuit breaker write: one rollback per run and region,
// one event per step, one transition per count, so a processor applying a batch again writes the same ids.

impl RollbackStarted {
    pub fn id_for(run_id: &RunId, region: &RegionName) -> EventId {
        EventId::derive("RollbackStarted", &[run_id.as_str(), region.as_str()])
    }
}

impl RollbackStepApplied {
    pub fn id_for(run_id: &RunId, region: &RegionName, step: i32) -> EventId {
        EventId::derive("RollbackStepApplied", &[run_id.as_str(), region.as_str(), &step.to_string()])
    }
}

impl RollbackPaused {
    pub fn id_for(run_id: &RunId, region: &RegionName, step: i32) -> EventId {
        EventId::derive("RollbackPaused", &[run_id.as_str(), region.as_str(), &step.to_string()])
    }
}

impl RollbackCompleted {
    pub fn id_for(run_id: &RunId, region: &RegionName) -> EventId {
        EventId::derive("RollbackCompleted", &[run_id.as_str(), region.as_str()])
    }
}

impl RollbackFailed {
    pub fn id_for(run_id: &RunId, region: &RegionName) -> EventId {
        EventId::derive("RollbackFailed", &[run_id.as_str(), region.as_str()])
    }
}

impl CircuitStateChanged {
    /// `transitions` is the region's count of transitions so far, this one included.
    pub fn id_for(region: &RegionName, transitions: u64) -> EventId {
        EventId::derive("CircuitStateChanged", &[region.as_str(), &transitions.to_string()])
    }
}

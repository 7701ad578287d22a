//! Run and region results (topic chaoseater.results, key run id).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::experiment::{Layer, ParamValue, RunMode};
use crate::ids::{DispatchId, EventId, RegionName, RunId, TimestampMs};

/// The orchestrator accepted a run and chose its regions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub experiment_name: String,
    /// Regions the run will touch, in dispatch order.
    pub regions: Vec<RegionName>,
    pub mode: RunMode,
}

/// Outcome of one region's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RegionStatus {
    Completed,
    Failed,
    Aborted,
}

impl RegionStatus {
    /// The Avro symbol (`COMPLETED`, `FAILED`, `ABORTED`).
    pub fn as_str(self) -> &'static str {
        match self {
            RegionStatus::Completed => "COMPLETED",
            RegionStatus::Failed => "FAILED",
            RegionStatus::Aborted => "ABORTED",
        }
    }
}

/// The score formula's version this build's agent computes (see the agent's steady state). A result
/// carries the version its agent used; analytics compare scores of one version only.
pub const SCORE_VERSION: i32 = 2;

/// What the agent's steady-state probes measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionMetrics {
    pub pipeline_downtime_s: f64,
    /// None when the steady state never came back within the recovery timeout.
    pub recovery_time_s: Option<f64>,
    /// Percentage points.
    pub accuracy_degradation: f64,
    pub error_count: i64,
    pub requests_total: i64,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub baseline_accuracy: f64,
    pub baseline_latency_p50_ms: f64,
    pub baseline_availability: f64,
    // Added with score_version 2; null in results of version 1 (and from agents that predate it).
    /// The latency objective the steady state was judged against.
    #[serde(default)]
    pub slo_latency_ms: Option<f64>,
    /// The quantile of a window's latencies that must stay within `slo_latency_ms` (1.0: every request).
    #[serde(default)]
    pub slo_latency_quantile: Option<f64>,
    /// Share of probe requests during the fault answered within the objective (the SLI).
    #[serde(default)]
    pub latency_within_objective: Option<f64>,
    /// Requests after injecting answered, but later than the objective.
    #[serde(default)]
    pub slow_count: Option<i64>,
    /// Share of probe requests during the fault that got predictions.
    #[serde(default)]
    pub coverage: Option<f64>,
    /// The 95% confidence interval of `accuracy_degradation`, percentage points.
    #[serde(default)]
    pub accuracy_degradation_low: Option<f64>,
    #[serde(default)]
    pub accuracy_degradation_high: Option<f64>,
    #[serde(default)]
    pub baseline_latency_p95_ms: Option<f64>,
    #[serde(default)]
    pub baseline_latency_p99_ms: Option<f64>,
}

/// The outcome of one region's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionResult {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub dispatch_id: DispatchId,
    pub region: RegionName,
    pub experiment_name: String,
    pub layer: Layer,
    pub fault_type: String,
    /// The fault's validated parameters, as dispatched.
    pub parameters: BTreeMap<String, ParamValue>,
    /// The experiment's tags, as dispatched.
    pub tags: BTreeMap<String, String>,
    pub status: RegionStatus,
    pub resilience_score: Option<f64>,
    pub score_version: i32,
    pub metrics: Option<RegionMetrics>,
    pub message: Option<String>,
    pub started_at: TimestampMs,
    pub finished_at: TimestampMs,
}

/// Outcome of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    Completed,
    Failed,
    Aborted,
}

impl RunStatus {
    /// The Avro symbol (`COMPLETED`, `FAILED`, `ABORTED`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Completed => "COMPLETED",
            RunStatus::Failed => "FAILED",
            RunStatus::Aborted => "ABORTED",
        }
    }
}

/// One region's line in the aggregate report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionSummary {
    pub region: RegionName,
    pub status: RegionStatus,
    pub resilience_score: Option<f64>,
    pub duration_ms: i64,
    pub message: Option<String>,
}

/// The aggregate report of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateReport {
    pub regions_total: i32,
    pub regions_succeeded: i32,
    pub success_rate: f64,
    /// Failed regions count as 0.
    pub mean_score: f64,
    pub min_region: Option<RegionName>,
    pub min_score: Option<f64>,
    pub max_region: Option<RegionName>,
    pub max_score: Option<f64>,
    pub duration_ms: i64,
    pub regions: Vec<RegionSummary>,
}

/// A run finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCompleted {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub experiment_name: String,
    pub status: RunStatus,
    pub report: AggregateReport,
}

/// A command the orchestrator refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRejected {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub reason: String,
}

// One start, one end and one rejection per run; one result per dispatch.

impl RunStarted {
    pub fn id_for(run_id: &RunId) -> EventId {
        EventId::derive("RunStarted", &[run_id.as_str()])
    }
}

impl RunCompleted {
    pub fn id_for(run_id: &RunId) -> EventId {
        EventId::derive("RunCompleted", &[run_id.as_str()])
    }
}

impl RunRejected {
    pub fn id_for(run_id: &RunId) -> EventId {
        EventId::derive("RunRejected", &[run_id.as_str()])
    }
}

impl RegionResult {
    /// One result per dispatch: a dispatcher that publishes it again after a crash writes the same id.
    pub fn id_for(dispatch_id: &DispatchId) -> EventId {
        EventId::derive("RegionResult", &[dispatch_id.as_str()])
    }
}

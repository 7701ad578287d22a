//! The resilience optimizer's events: each training, with the models' cross-validated quality.

use serde::{Deserialize, Serialize};

use crate::experiment::ExperimentSpec;
use crate::ids::{EventId, RegionName, RunId, TimestampMs};

/// The optimizer trained a model on the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelTrained {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub model_id: String,
    pub window_days: Option<i32>,
    pub first_finished_at: TimestampMs,
    pub last_finished_at: TimestampMs,
    pub rows: i64,
    pub runs: i64,
    pub seconds: f64,
    /// `cli`, `schedule` or `new_results`.
    pub trigger: String,
    pub models: Vec<ModelQuality>,
}

impl ModelTrained {
    /// One event per model.
    pub fn id_for(model_id: &str) -> EventId {
        EventId::derive("ModelTrained", &[model_id])
    }
}

/// One model's cross-validated figures beside the baseline's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelQuality {
    pub metric: String,
    pub scope: String,
    pub rows: i64,
    pub runs: i64,
    pub folds: i32,
    pub model_mae: f64,
    pub model_r2: f64,
    pub baseline_mae: f64,
    pub baseline_r2: f64,
    pub coverage: f64,
    pub level: f64,
    pub median_width: f64,
    pub used: bool,
}

/// Why the optimizer proposes an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProposalReason {
    /// The model's prediction interval is widest here.
    Uncertain,
    /// The lower bound is lowest here, where few past runs are near.
    Weak,
}

impl ProposalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalReason::Uncertain => "uncertain",
            ProposalReason::Weak => "weak",
        }
    }
}

/// The optimizer proposes an experiment; `chaoseater plan approve` (or serve's auto-approve) turns it
/// into a [`RunRequested`](crate::events::RunRequested).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentProposed {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub proposal_id: String,
    pub model_id: String,
    pub region: RegionName,
    pub experiment: ExperimentSpec,
    pub reason: ProposalReason,
    pub predicted_score: f64,
    pub lower: f64,
    pub upper: f64,
    pub level: f64,
    pub expected_gain: f64,
    pub near_runs: i32,
    pub explanation: String,
    /// `cli` or `auto`.
    pub proposed_by: String,
}

/// What an approved proposal's run id starts with.
const APPROVED_RUN_PREFIX: &str = "run-";

impl ExperimentProposed {
    /// One event per proposal.
    pub fn id_for(proposal_id: &str) -> EventId {
        EventId::derive("ExperimentProposed", &[proposal_id])
    }

    /// The run an approval creates: one per proposal, so approving twice requests the same run.
    pub fn run_id_for(proposal_id: &str) -> RunId {
        RunId::new(format!("{APPROVED_RUN_PREFIX}{proposal_id}"))
    }

    /// The proposal a run approved, if `run_id` is one [`ExperimentProposed::run_id_for`] made.
    pub fn proposal_of(run_id: &RunId) -> Option<&str> {
        run_id.as_str().strip_prefix(APPROVED_RUN_PREFIX).filter(|id| id.starts_with("prop-"))
    }
}

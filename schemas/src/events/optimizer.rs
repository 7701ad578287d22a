//! The resilience optimizer's events: each training, with the models' cross-validated quality.

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, TimestampMs};

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

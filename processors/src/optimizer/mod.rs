//! The resilience optimizer: learns from the Parquet history how much damage a fault of given strength
//! does, and answers with measured uncertainty.
//!
//! - [`dataset`]: the history's rows (experiments with their parameters and tags) through DataFusion.
//! - [`features`]: points as numbers for the forest.
//! - [`forest`]: smartcore's random forest, as sub-forests whose spread is the model's uncertainty.
//! - [`train`]: a model per fault type and a pooled one, 5-fold cross-validated by run against the
//!   Python tool's predictor (mean of the last 50), with conformal intervals of measured coverage.
//! - [`query`]: predict at a point, suggest the harshest parameters that still meet a target, count the
//!   support in the data.
//!
//! A trained [`Model`] is saved in the state directory ([`MODEL_FILE`]) with its window, row count and
//! cross-validation figures.

pub mod analyze;
pub mod auto;
pub mod component;
pub mod dataset;
pub mod features;
pub mod forest;
pub mod plan;
pub mod query;
pub mod simulate;
pub mod synthetic;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::analytics::AnalyticsError;

pub use component::{OptimizerConfig, Trainer};
pub use dataset::{Point, Sample};
pub use forest::ForestParams;
pub use train::{CvFigures, Scope, ScopeModel};

/// Where a trained model is kept, under the state directory.
pub const MODEL_FILE: &str = "optimizer/model.json";
/// The model file's format; a file of another format is retrained, not misread.
pub const FORMAT: u32 = 1;

/// What a model can learn to predict: the experiments table's measured columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    ResilienceScore,
    PipelineDowntimeS,
    RecoveryTimeS,
    AccuracyDegradation,
    ErrorCount,
    LatencyP95Ms,
}

impl Target {
    pub const ALL: [Target; 6] = [
        Target::ResilienceScore,
        Target::PipelineDowntimeS,
        Target::RecoveryTimeS,
        Target::AccuracyDegradation,
        Target::ErrorCount,
        Target::LatencyP95Ms,
    ];

    /// Its column in the experiments table (and its name on the command line).
    pub fn column(self) -> &'static str {
        match self {
            Target::ResilienceScore => "resilience_score",
            Target::PipelineDowntimeS => "pipeline_downtime_s",
            Target::RecoveryTimeS => "recovery_time_s",
            Target::AccuracyDegradation => "accuracy_degradation",
            Target::ErrorCount => "error_count",
            Target::LatencyP95Ms => "latency_p95_ms",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Target::ALL.into_iter().find(|t| t.column() == text)
    }

    /// The resilience score (always learnt) and the metrics named, each once; an unknown name is refused
    /// with the known ones.
    pub fn with_score(names: &[String]) -> Result<Vec<Target>, String> {
        let mut targets = vec![Target::ResilienceScore];
        for name in names {
            let target = Target::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Target::ALL.iter().map(|t| t.column()).collect();
                format!("{name:?} is not one of {}", known.join(", "))
            })?;
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        Ok(targets)
    }

    /// Whether more of it is better (the score) or worse (everything else).
    pub fn higher_is_better(self) -> bool {
        self == Target::ResilienceScore
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.column())
    }
}

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    /// A question that cannot be asked as put (unknown fault type or parameter, out of bounds); `field`
    /// names what to fix.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// Too little history to answer honestly.
    #[error("{0}")]
    TooLittle(String),
    /// No trained model, or one of another format.
    #[error("{0}")]
    NoModel(String),
    #[error("model: {0}")]
    Model(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Analytics(#[from] AnalyticsError),
}

impl OptimizerError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        OptimizerError::Invalid { field: field.to_owned(), message: message.into() }
    }

    /// Whether the user can fix it (exit code 2) rather than it being ours.
    pub fn is_user_error(&self) -> bool {
        match self {
            OptimizerError::Invalid { .. } | OptimizerError::TooLittle(_) | OptimizerError::NoModel(_) => true,
            OptimizerError::Analytics(e) => !matches!(e, AnalyticsError::Engine(_)),
            OptimizerError::Model(_) | OptimizerError::Io(_) => false,
        }
    }
}

/// The numeric parameters seen for one fault type: their ranges and every training row's values, to
/// count the runs near a point and to warn when a question lies outside what was seen.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Support {
    pub params: Vec<String>,
    /// The range seen; NaN for a parameter never seen (JSON has no NaN: saved as null).
    #[serde(with = "nan_as_null")]
    pub lo: Vec<f64>,
    #[serde(with = "nan_as_null")]
    pub hi: Vec<f64>,
    /// One row per training row, the values of `params` (absent: NaN), as f32 to keep the file small.
    #[serde(with = "nan_as_null::rows")]
    pub points: Vec<Vec<f32>>,
    /// Each row's run (an index), and its resilience score.
    pub run: Vec<u32>,
    pub scores: Vec<Option<f32>>,
    /// Distinct runs of this fault type.
    pub runs: usize,
    /// Each row's region, as an index into [`Model::regions`] (absent in a model saved before the planner:
    /// then every row counts in every region).
    #[serde(default)]
    pub region: Vec<u16>,
}

/// A trained optimizer: the models of every target and scope, and what they were trained on.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Model {
    pub format: u32,
    pub model_id: String,
    pub trained_at_ms: i64,
    /// The window asked (`--days`), if any, and the span of the rows used.
    pub window_days: Option<u32>,
    pub first_finished_ms: i64,
    pub last_finished_ms: i64,
    pub rows: usize,
    pub runs: usize,
    /// Seconds the training took.
    pub seconds: f64,
    pub params: ForestParams,
    pub targets: Vec<Target>,
    pub scopes: Vec<ScopeModel>,
    /// Rows per fault type (every target's rows), to refuse questions about types seen too little.
    pub rows_by_fault_type: BTreeMap<String, usize>,
    pub support: BTreeMap<String, Support>,
    /// Regions seen, and the median duration per fault type (the default of a question).
    pub regions: Vec<String>,
    pub median_duration_s: BTreeMap<String, f64>,
}

impl Model {
    /// Trains on `samples` (in time order): every model of every target, see [`train`].
    pub fn train(
        samples: &[Sample],
        targets: &[Target],
        window_days: Option<u32>,
        params: &ForestParams,
        progress: train::Progress<'_>,
    ) -> Result<Self, OptimizerError> {
        let started = std::time::Instant::now();
        if samples.is_empty() {
            return Err(OptimizerError::TooLittle(
                "the history has no results in the window: run experiments first (or widen --days)".into(),
            ));
        }
        let scopes = train::train_scopes(samples, targets, params, progress)?;
        if scopes.is_empty() {
            return Err(OptimizerError::TooLittle(format!(
                "no fault type has {} rows over {} runs in the window ({} rows in all): too little history to learn from",
                train::MIN_ROWS,
                train::FOLDS,
                samples.len()
            )));
        }
        let mut rows_by_fault_type = BTreeMap::new();
        let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for s in samples {
            *rows_by_fault_type.entry(s.point.fault_type.clone()).or_insert(0) += 1;
            durations.entry(s.point.fault_type.clone()).or_default().push(s.point.duration_s);
        }
        let regions: Vec<String> = samples
            .iter()
            .map(|s| s.point.region.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let day_ms = |d: f64| (d * 86_400_000.0).round() as i64;
        let trained_at_ms = chaoseater_schemas::ids::TimestampMs::now().0;
        Ok(Self {
            format: FORMAT,
            model_id: format!("model-{trained_at_ms}"),
            trained_at_ms,
            window_days,
            first_finished_ms: day_ms(samples.iter().map(|s| s.finished_day).fold(f64::INFINITY, f64::min)),
            last_finished_ms: day_ms(samples.iter().map(|s| s.finished_day).fold(f64::NEG_INFINITY, f64::max)),
            rows: samples.len(),
            runs: samples.iter().map(|s| s.run_id.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
            seconds: started.elapsed().as_secs_f64(),
            params: params.clone(),
            targets: targets.to_vec(),
            scopes,
            support: query::support(samples, &regions),
            regions,
            median_duration_s: durations
                .into_iter()
                .map(|(t, mut d)| {
                    d.sort_by(f64::total_cmp);
                    (t, d[d.len() / 2])
                })
                .collect(),
            rows_by_fault_type,
        })
    }

    /// The model file under `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(MODEL_FILE)
    }

    /// Writes the model (to a temporary file first, so a reader never sees half of one).
    pub fn save(&self, state_dir: &Path) -> Result<PathBuf, OptimizerError> {
        let path = Self::path(state_dir);
        let io = |e: std::io::Error| OptimizerError::Io(format!("{}: {e}", path.display()));
        std::fs::create_dir_all(path.parent().unwrap_or(state_dir)).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut writer = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut writer, self).map_err(|e| OptimizerError::Io(e.to_string()))?;
        use std::io::Write;
        writer.flush().map_err(io)?;
        writer.get_ref().sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(path)
    }

    /// Reads the model saved under `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Self, OptimizerError> {
        let path = Self::path(state_dir);
        let file = std::fs::File::open(&path).map_err(|e| {
            OptimizerError::NoModel(format!(
                "no trained model at {} ({e}): run `chaoseater optimizer train` first",
                path.display()
            ))
        })?;
        let model: Model = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| {
            OptimizerError::NoModel(format!(
                "{} is not a model this version reads ({e}): run `chaoseater optimizer train` again",
                path.display()
            ))
        })?;
        if model.format != FORMAT {
            return Err(OptimizerError::NoModel(format!(
                "{} has format {}, this version reads {FORMAT}: run `chaoseater optimizer train` again",
                path.display(),
                model.format
            )));
        }
        Ok(model)
    }

    /// The ModelTrained event of this training; `trigger` says what started it (`cli`, `schedule`,
    /// `new_results`).
    pub fn event(&self, trigger: &str) -> chaoseater_schemas::events::ModelTrained {
        use chaoseater_schemas::events::{ModelQuality, ModelTrained};
        use chaoseater_schemas::ids::TimestampMs;
        ModelTrained {
            event_id: ModelTrained::id_for(&self.model_id),
            occurred_at: TimestampMs(self.trained_at_ms),
            model_id: self.model_id.clone(),
            window_days: self.window_days.map(|d| i32::try_from(d).unwrap_or(i32::MAX)),
            first_finished_at: TimestampMs(self.first_finished_ms),
            last_finished_at: TimestampMs(self.last_finished_ms),
            rows: self.rows as i64,
            runs: self.runs as i64,
            seconds: self.seconds,
            trigger: trigger.to_owned(),
            models: self
                .scopes
                .iter()
                .map(|s| ModelQuality {
                    metric: s.target.to_string(),
                    scope: s.scope.to_string(),
                    rows: s.cv.rows as i64,
                    runs: s.cv.runs as i64,
                    folds: s.cv.folds as i32,
                    model_mae: s.cv.model_mae,
                    model_r2: s.cv.model_r2,
                    baseline_mae: s.cv.baseline_mae,
                    baseline_r2: s.cv.baseline_r2,
                    coverage: s.cv.coverage,
                    level: s.cv.level,
                    median_width: s.cv.median_width,
                    used: s.cv.beats_baseline(),
                })
                .collect(),
        }
    }

    /// The models of `target`.
    pub fn scopes_of(&self, target: Target) -> impl Iterator<Item = &ScopeModel> {
        self.scopes.iter().filter(move |s| s.target == target)
    }
}

/// Floats that may be NaN or infinite, saved in JSON (which has neither) as null and read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
        values.iter().map(|v| v.is_finite().then_some(*v)).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }

    pub mod rows {
        use super::*;

        pub fn serialize<S: Serializer>(rows: &[Vec<f32>], s: S) -> Result<S::Ok, S::Error> {
            rows.iter()
                .map(|row| row.iter().map(|v| v.is_finite().then_some(*v)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<f32>>, D::Error> {
            Ok(Vec::<Vec<Option<f32>>>::deserialize(d)?
                .into_iter()
                .map(|row| row.into_iter().map(|v| v.unwrap_or(f32::NAN)).collect())
                .collect())
        }
    }
}

#[cfg(test)]
mod tests;

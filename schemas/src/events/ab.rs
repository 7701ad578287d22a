//! A/B tests: the request (topic chaoseater.commands) and the report that concludes it (topic
//! chaoseater.results), both keyed by the test id. The judge's output types live here so that the
//! event, the JSON report and the judge share one definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::RunStatus;
use crate::experiment::ExperimentSpec;
use crate::faults;
use crate::ids::{EventId, RegionName, RunId, TimestampMs};
use crate::limits::{self, LimitError};

/// Most samples of one variant: the judge's interval looks at every pair of samples, and a test's
/// state is rewritten at each of its events.
pub const MAX_SAMPLES_PER_VARIANT: i32 = 500;
/// Fewest samples of one variant: with fewer, no two-sided rank test can reach significance.
pub const MIN_SAMPLES_PER_VARIANT: i32 = 3;
/// Kayenta's defaults.
pub const DEFAULT_CONFIDENCE: f64 = 0.98;
pub const DEFAULT_TOLERANCE: f64 = 0.25;
/// The samples of a test when a request names none.
pub const DEFAULT_SAMPLES_PER_VARIANT: i32 = 10;

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AbDirection {
    HigherIsBetter,
    LowerIsBetter,
}

impl AbDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            AbDirection::HigherIsBetter => "HIGHER_IS_BETTER",
            AbDirection::LowerIsBetter => "LOWER_IS_BETTER",
        }
    }
}

/// A metric an A/B test can judge: what a sample run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AbMetric {
    ResilienceScore,
    RecoveryTimeS,
    AccuracyDegradation,
    ErrorCount,
    PipelineDowntimeS,
    LatencyP95Ms,
}

impl AbMetric {
    /// Every metric, in the order a request without metrics judges them.
    pub const ALL: [AbMetric; 6] = [
        AbMetric::ResilienceScore,
        AbMetric::RecoveryTimeS,
        AbMetric::AccuracyDegradation,
        AbMetric::ErrorCount,
        AbMetric::PipelineDowntimeS,
        AbMetric::LatencyP95Ms,
    ];

    /// The name in requests, reports and the history's columns.
    pub fn as_str(self) -> &'static str {
        match self {
            AbMetric::ResilienceScore => "resilience_score",
            AbMetric::RecoveryTimeS => "recovery_time_s",
            AbMetric::AccuracyDegradation => "accuracy_degradation",
            AbMetric::ErrorCount => "error_count",
            AbMetric::PipelineDowntimeS => "pipeline_downtime_s",
            AbMetric::LatencyP95Ms => "latency_p95_ms",
        }
    }

    /// Higher resilience is better; less of everything else is.
    pub fn direction(self) -> AbDirection {
        match self {
            AbMetric::ResilienceScore => AbDirection::HigherIsBetter,
            _ => AbDirection::LowerIsBetter,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The names, for error messages.
    pub fn names() -> String {
        Self::ALL.map(AbMetric::as_str).join(", ")
    }

    /// The metric with its usual direction.
    pub fn spec(self) -> AbMetricSpec {
        AbMetricSpec { name: self.as_str().to_owned(), direction: self.direction() }
    }
}

/// A metric to judge and which way is better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbMetricSpec {
    pub name: String,
    pub direction: AbDirection,
}

/// One side of an A/B test: where it runs and, optionally, its own experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbVariant {
    pub label: String,
    /// Regions that serve this variant; each sample runs in all of them.
    pub regions: Vec<RegionName>,
    /// This variant's own experiment; `None`: the test's.
    /// Boxed: an experiment is large, and most variants have none of their own.
    pub experiment: Option<Box<ExperimentSpec>>,
}

/// The two sides of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AbSide {
    A,
    B,
}

impl AbSide {
    pub fn as_str(self) -> &'static str {
        match self {
            AbSide::A => "A",
            AbSide::B => "B",
        }
    }
}

/// A request to compare two variants of a pipeline under a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbTestRequested {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    /// The test's id.
    pub run_id: RunId,
    /// The fault both variants face, unless a variant names its own.
    pub experiment: ExperimentSpec,
    pub variant_a: AbVariant,
    pub variant_b: AbVariant,
    pub samples_per_variant: i32,
    /// Empty: every [`AbMetric`] in its usual direction.
    pub metrics: Vec<AbMetricSpec>,
    pub confidence: f64,
    pub tolerance: f64,
    /// Version 1's significance level: when set, the confidence is `1 - alpha`.
    pub alpha: Option<f64>,
    pub requested_by: String,
}

impl AbTestRequested {
    /// One request per test.
    pub fn id_for(test_id: &RunId) -> EventId {
        EventId::derive("AbTestRequested", &[test_id.as_str()])
    }

    /// The confidence the test is judged at (version 1's `alpha` read as `1 - alpha`).
    pub fn effective_confidence(&self) -> f64 {
        self.alpha.map_or(self.confidence, |alpha| 1.0 - alpha)
    }

    /// The metrics judged, with the defaults filled in.
    pub fn metric_specs(&self) -> Vec<AbMetricSpec> {
        if self.metrics.is_empty() { AbMetric::ALL.map(AbMetric::spec).to_vec() } else { self.metrics.clone() }
    }

    pub fn variant(&self, side: AbSide) -> &AbVariant {
        match side {
            AbSide::A => &self.variant_a,
            AbSide::B => &self.variant_b,
        }
    }

    /// The experiment a side runs.
    pub fn experiment_of(&self, side: AbSide) -> &ExperimentSpec {
        self.variant(side).experiment.as_deref().unwrap_or(&self.experiment)
    }

    /// The run id of sample `number` (1-based) of `side`: derived, so a coordinator that starts it again
    /// after a crash names the same run.
    pub fn sample_run_id(test_id: &RunId, side: AbSide, number: i32) -> RunId {
        let side = match side {
            AbSide::A => 'a',
            AbSide::B => 'b',
        };
        RunId::new(format!("{test_id}.{side}{number}"))
    }

    /// Checks everything a coordinator needs before running anything, naming the field: the ids and
    /// bounds, each experiment against the fault catalogue, the samples (at least
    /// [`MIN_SAMPLES_PER_VARIANT`]), the metrics, the confidence in (0, 1), the tolerance, and that the
    /// variants differ and do not half-share regions (the same regions with different experiments, or
    /// disjoint regions, are the two shapes of a test).
    pub fn validate(&self) -> Result<(), LimitError> {
        let err = |field: &str, message: String| LimitError { field: field.to_owned(), message };
        // The sample runs' ids (`{id}.a500`) must be valid run ids too.
        limits::check_id("run_id", self.run_id.as_str(), limits::MAX_ID_LEN - 5)?;
        check_experiment("experiment", &self.experiment)?;
        for (name, variant) in [("variant_a", &self.variant_a), ("variant_b", &self.variant_b)] {
            limits::check_text(&format!("{name}.label"), &variant.label, limits::MAX_NAME_LEN)?;
            if variant.label.trim().is_empty() {
                return Err(err(&format!("{name}.label"), "must not be empty".into()));
            }
            let field = format!("{name}.regions");
            if variant.regions.is_empty() {
                return Err(err(&field, "name at least one region for this variant's samples to run in".into()));
            }
            if variant.regions.len() > limits::MAX_REGIONS {
                return Err(err(
                    &field,
                    format!("at most {} regions, got {}", limits::MAX_REGIONS, variant.regions.len()),
                ));
            }
            for (i, region) in variant.regions.iter().enumerate() {
                limits::check_id(&field, region.as_str(), limits::MAX_REGION_LEN)?;
                if variant.regions[..i].contains(region) {
                    return Err(err(&field, format!("region {region:?} is listed twice")));
                }
            }
            if let Some(experiment) = &variant.experiment {
                check_experiment(&format!("{name}.experiment"), experiment)?;
            }
        }
        if self.variant_a.label == self.variant_b.label {
            return Err(err("variant_b.label", format!("must differ from variant_a's ({:?})", self.variant_a.label)));
        }
        let same_experiment = self.experiment_of(AbSide::A) == self.experiment_of(AbSide::B);
        let mut regions_a: Vec<&RegionName> = self.variant_a.regions.iter().collect();
        let mut regions_b: Vec<&RegionName> = self.variant_b.regions.iter().collect();
        regions_a.sort();
        regions_b.sort();
        let shared: Vec<&str> = regions_a.iter().filter(|r| regions_b.contains(r)).map(|r| r.as_str()).collect();
        if regions_a == regions_b && same_experiment {
            return Err(err(
                "variant_b",
                "the two variants are identical (same experiment, same regions): give B other regions or its \
                 own experiment"
                    .into(),
            ));
        }
        if !shared.is_empty() && regions_a != regions_b {
            return Err(err(
                "variant_b.regions",
                format!(
                    "overlap variant_a's in {}: variants run either in the same regions (with different \
                     experiments) or in disjoint ones",
                    shared.join(", ")
                ),
            ));
        }
        if !(MIN_SAMPLES_PER_VARIANT..=MAX_SAMPLES_PER_VARIANT).contains(&self.samples_per_variant) {
            return Err(err(
                "samples_per_variant",
                format!(
                    "must be in [{MIN_SAMPLES_PER_VARIANT}, {MAX_SAMPLES_PER_VARIANT}], got {}",
                    self.samples_per_variant
                ),
            ));
        }
        for (i, metric) in self.metrics.iter().enumerate() {
            if AbMetric::parse(&metric.name).is_none() {
                return Err(err(
                    "metrics",
                    format!("unknown metric {}; one of {}", limits::shown(&metric.name), AbMetric::names()),
                ));
            }
            if self.metrics[..i].iter().any(|m| m.name == metric.name) {
                return Err(err("metrics", format!("{} is listed twice", metric.name)));
            }
        }
        if let Some(alpha) = self.alpha {
            if !(alpha > 0.0 && alpha < 1.0) {
                return Err(err("alpha", format!("must be in (0, 1), got {alpha}")));
            }
        } else if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(err("confidence", format!("must be in (0, 1), got {}", self.confidence)));
        }
        if !(self.tolerance.is_finite() && self.tolerance >= 0.0) {
            return Err(err("tolerance", format!("must be a finite number, 0 or more, got {}", self.tolerance)));
        }
        limits::check_text("requested_by", &self.requested_by, limits::MAX_TEXT_LEN)
    }
}

/// An experiment's bounds and its parameters against the fault catalogue, with `prefix` before the field.
fn check_experiment(prefix: &str, e: &ExperimentSpec) -> Result<(), LimitError> {
    let at = |field: &str, message: String| LimitError { field: format!("{prefix}.{field}"), message };
    limits::check_experiment(e).map_err(|e| at(&e.field, e.message))?;
    if !(1..=limits::MAX_DURATION_MS).contains(&e.duration_ms) {
        return Err(at("duration_ms", format!("must be in [1, {}], got {}", limits::MAX_DURATION_MS, e.duration_ms)));
    }
    let params = serde_json::to_value(&e.parameters).map_err(|e| at("parameters", e.to_string()))?;
    let empty = serde_json::Map::new();
    faults::validate(e.layer, &e.fault_type, params.as_object().unwrap_or(&empty))
        .map(|_| ())
        .map_err(|f| at(&f.field, f.message))
}

/// How B compares with A on one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AbLabel {
    Better,
    Worse,
    NoDifference,
}

impl AbLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            AbLabel::Better => "BETTER",
            AbLabel::Worse => "WORSE",
            AbLabel::NoDifference => "NO_DIFFERENCE",
        }
    }
}

/// How B compares with A overall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AbVerdict {
    BBetter,
    BWorse,
    /// Better on some metrics and worse on others: a trade-off for a person to weigh.
    Mixed,
    NoSignificantDifference,
}

impl AbVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            AbVerdict::BBetter => "B_BETTER",
            AbVerdict::BWorse => "B_WORSE",
            AbVerdict::Mixed => "MIXED",
            AbVerdict::NoSignificantDifference => "NO_SIGNIFICANT_DIFFERENCE",
        }
    }

    /// The verdict with the variants swapped.
    pub fn swapped(self) -> Self {
        match self {
            AbVerdict::BBetter => AbVerdict::BWorse,
            AbVerdict::BWorse => AbVerdict::BBetter,
            other => other,
        }
    }
}

/// One metric judged (the JSON report's names, which other tools read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbMetricJudgement {
    pub metric: String,
    pub direction: AbDirection,
    /// The values judged, in sample order.
    pub samples_a: Vec<f64>,
    pub samples_b: Vec<f64>,
    pub n_a: i32,
    pub n_b: i32,
    /// U of variant B against A: pairs (b, a) with b > a, ties counting a half.
    pub u: f64,
    /// U standardized with the tie and continuity corrections (positive: B tends higher).
    pub z: f64,
    pub p_value: f64,
    /// The Hodges-Lehmann shift of B relative to A.
    pub hl_estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub confidence: f64,
    /// mean(B) / mean(A); `None` when A's mean is 0.
    pub mean_ratio: Option<f64>,
    /// P(B > A) + P(B = A) / 2 over all pairs.
    pub prob_superiority: f64,
    pub label: AbLabel,
    /// The smallest shift (in the metric's unit) these sample sizes detect at this confidence with the
    /// judge's power, from the pooled spread.
    pub mde: f64,
}

/// Every metric judged, and the overall verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbJudgement {
    pub metrics: Vec<AbMetricJudgement>,
    pub verdict: AbVerdict,
    /// Kayenta's group score: the percentage of metrics B does not do worse on.
    pub score: f64,
    /// The smallest standardized shift (Cohen's d) the smallest sample sizes detect at this confidence
    /// with the judge's power.
    pub mde: f64,
}

/// How an A/B test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AbTestStatus {
    /// Every sample ran and the samples were judged.
    Concluded,
    /// An AbortRequested stopped it; not judged.
    Aborted,
    /// A sample was refused; not judged.
    Failed,
}

impl AbTestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AbTestStatus::Concluded => "CONCLUDED",
            AbTestStatus::Aborted => "ABORTED",
            AbTestStatus::Failed => "FAILED",
        }
    }
}

/// One sample run and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbSample {
    pub variant: AbSide,
    /// 1-based within its variant.
    pub number: i32,
    pub run_id: RunId,
    pub status: RunStatus,
    /// Metric name → the sample's value; a metric nothing measured is absent.
    pub values: BTreeMap<String, f64>,
}

/// An A/B test ended, with its whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbTestConcluded {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub run_id: RunId,
    pub status: AbTestStatus,
    pub reason: Option<String>,
    pub label_a: String,
    pub label_b: String,
    pub samples_per_variant: i32,
    pub confidence: f64,
    pub tolerance: f64,
    /// In the order they started.
    pub samples: Vec<AbSample>,
    /// `Some` only when `status` is `Concluded`.
    pub judgement: Option<AbJudgement>,
}

impl AbTestConcluded {
    /// One conclusion per test.
    pub fn id_for(test_id: &RunId) -> EventId {
        EventId::derive("AbTestConcluded", &[test_id.as_str()])
    }
}

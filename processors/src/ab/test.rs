//! One A/B test as the coordinator keeps it: its 2n samples in start order (A1, B1, A2, B2, ...), where
//! each stands, and what each measured. Pure logic, advanced only by events; the coordinator stores it in
//! sled with the offsets of the events that advanced it.
//!
//! Interleaving A and B spreads drift over time (a warming cache, a noisy neighbour) over both sides
//! alike. Samples start strictly in that order, each when none of its regions is running another sample
//! (of this test or any other the coordinator runs): variants in disjoint regions run a pair at a time,
//! variants sharing their regions run one sample at a time.

use std::collections::{BTreeMap, BTreeSet};

use chaoseater_schemas::events::{
    AbMetric, AbSample, AbSide, AbTestConcluded, AbTestRequested, AbTestStatus, AggregateReport, RegionMetrics,
    RegionResult, RegionStatus, RunStatus,
};
use chaoseater_schemas::ids::{RegionName, RunId, TimestampMs};
use serde::{Deserialize, Serialize};

use super::judge::{self, JudgeOptions, MetricSamples};

/// What one region of a sample reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionOutcome {
    pub region: RegionName,
    pub status: RegionStatus,
    pub metrics: Option<RegionMetrics>,
    /// From the region's start to its result, in seconds.
    pub elapsed_s: f64,
    /// The score formula's version (absent in tests stored before it was kept: version 1).
    #[serde(default = "first_score_version")]
    pub score_version: i32,
}

fn first_score_version() -> i32 {
    1
}

/// The sample value that says which score version a sample's regions used (0: they differed).
pub const SCORE_VERSION_VALUE: &str = "score_version";

/// Where one sample stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SlotState {
    Pending,
    Running {
        outcomes: Vec<RegionOutcome>,
    },
    Done {
        status: RunStatus,
        values: BTreeMap<String, f64>,
    },
    /// The orchestrator refused the sample's run: nothing ran.
    Refused {
        reason: String,
    },
}

/// One sample of the test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub side: AbSide,
    pub number: i32,
    pub run_id: RunId,
    pub state: SlotState,
}

/// Why a test stops starting samples before all ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stop {
    Aborted(String),
    Failed(String),
}

/// One A/B test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbRun {
    pub request: AbTestRequested,
    pub slots: Vec<Slot>,
    /// The first slot not started.
    pub next: usize,
    pub stop: Option<Stop>,
    pub concluded: bool,
}

/// What the test asks for next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Start the slot at this index.
    Start(usize),
    /// Every sample is in (or the test stopped and none is running): publish the report.
    Conclude,
}

impl AbRun {
    /// A test not started: its slots interleaved A, B, A, B.
    pub fn new(request: AbTestRequested) -> Self {
        let n = request.samples_per_variant.max(0);
        let slots = (1..=n)
            .flat_map(|number| [AbSide::A, AbSide::B].map(|side| (side, number)))
            .map(|(side, number)| Slot {
                side,
                number,
                run_id: AbTestRequested::sample_run_id(&request.run_id, side, number),
                state: SlotState::Pending,
            })
            .collect();
        Self { request, slots, next: 0, stop: None, concluded: false }
    }

    pub fn id(&self) -> &RunId {
        &self.request.run_id
    }

    /// The regions a slot runs in.
    pub fn regions_of(&self, index: usize) -> &[RegionName] {
        &self.request.variant(self.slots[index].side).regions
    }

    fn running(&self) -> usize {
        self.slots.iter().filter(|s| matches!(s.state, SlotState::Running { .. })).count()
    }

    /// Starts the next slots, in order, while their regions are free (marking them in `busy`); concludes
    /// when nothing is left to run.
    pub fn advance(&mut self, busy: &mut BTreeSet<RegionName>) -> Vec<Step> {
        if self.concluded {
            return Vec::new();
        }
        let mut steps = Vec::new();
        while self.stop.is_none() && self.next < self.slots.len() {
            let regions = self.regions_of(self.next);
            if regions.iter().any(|r| busy.contains(r)) {
                break;
            }
            busy.extend(regions.iter().cloned());
            self.slots[self.next].state = SlotState::Running { outcomes: Vec::new() };
            steps.push(Step::Start(self.next));
            self.next += 1;
        }
        let finished = self.next == self.slots.len() || self.stop.is_some();
        if steps.is_empty() && finished && self.running() == 0 {
            self.concluded = true;
            steps.push(Step::Conclude);
        }
        steps
    }

    /// The slot running as `run_id`.
    pub fn slot_of(&self, run_id: &RunId) -> Option<usize> {
        self.slots.iter().position(|s| &s.run_id == run_id)
    }

    /// Keeps a region's result of a running sample; false when it is not one (or already kept).
    pub fn record(&mut self, result: &RegionResult) -> bool {
        let Some(index) = self.slot_of(&result.run_id) else { return false };
        let SlotState::Running { outcomes } = &mut self.slots[index].state else { return false };
        if outcomes.iter().any(|o| o.region == result.region) {
            return false;
        }
        outcomes.push(RegionOutcome {
            region: result.region.clone(),
            status: result.status,
            metrics: result.metrics.clone(),
            elapsed_s: (result.finished_at.0 - result.started_at.0).max(0) as f64 / 1000.0,
            score_version: result.score_version,
        });
        true
    }

    /// A sample's run completed: its values are measured. Returns the slot, if it was running.
    pub fn complete(&mut self, run_id: &RunId, status: RunStatus, report: &AggregateReport) -> Option<usize> {
        let index = self.slot_of(run_id)?;
        let SlotState::Running { outcomes } = &self.slots[index].state else { return None };
        let values = sample_values(report, outcomes);
        self.slots[index].state = SlotState::Done { status, values };
        Some(index)
    }

    /// A sample's run was refused: the test fails (nothing it would judge is sound without that sample).
    pub fn refuse(&mut self, run_id: &RunId, reason: &str) -> Option<usize> {
        let index = self.slot_of(run_id)?;
        if !matches!(self.slots[index].state, SlotState::Running { .. }) {
            return None;
        }
        let slot = &self.slots[index];
        let why = format!("sample {} of {} ({}) was refused: {reason}", slot.number, slot.side.as_str(), slot.run_id);
        self.slots[index].state = SlotState::Refused { reason: reason.to_owned() };
        if self.stop.is_none() {
            self.stop = Some(Stop::Failed(why));
        }
        Some(index)
    }

    /// Stops starting samples; returns the runs still going, to abort.
    pub fn abort(&mut self, reason: &str) -> Vec<RunId> {
        if self.concluded || self.stop.is_some() {
            return Vec::new();
        }
        self.stop = Some(Stop::Aborted(reason.to_owned()));
        self.slots.iter().filter(|s| matches!(s.state, SlotState::Running { .. })).map(|s| s.run_id.clone()).collect()
    }

    /// The report: the samples that ran and, when all ran, the judge's verdict.
    pub fn conclusion(&self, now: TimestampMs) -> AbTestConcluded {
        let request = &self.request;
        let samples: Vec<AbSample> = self
            .slots
            .iter()
            .filter_map(|slot| match &slot.state {
                SlotState::Done { status, values } => Some(AbSample {
                    variant: slot.side,
                    number: slot.number,
                    run_id: slot.run_id.clone(),
                    status: *status,
                    values: values.clone(),
                }),
                _ => None,
            })
            .collect();
        let options = JudgeOptions {
            confidence: request.effective_confidence(),
            tolerance: request.tolerance,
            ..JudgeOptions::default()
        };
        let versions = score_versions(&samples);
        let (status, reason, judgement) = match &self.stop {
            Some(Stop::Aborted(reason)) => (AbTestStatus::Aborted, Some(format!("aborted: {reason}")), None),
            Some(Stop::Failed(reason)) => (AbTestStatus::Failed, Some(reason.clone()), None),
            None if mixed(&versions) => {
                let why = format!(
                    "the samples were scored with different score versions ({versions:?}; 0: a sample's regions \
                     differed), so A and B are not comparable: run the test again once every agent runs one version"
                );
                (AbTestStatus::Failed, Some(why), None)
            }
            None => {
                let (to_judge, unmeasured) = metric_samples(request, &samples);
                match judge::judge(&to_judge, &options) {
                    Ok(judgement) => {
                        let reason = (!unmeasured.is_empty())
                            .then(|| format!("not judged, no sample measured them: {}", unmeasured.join(", ")));
                        (AbTestStatus::Concluded, reason, Some(judgement))
                    }
                    Err(e) => (AbTestStatus::Failed, Some(format!("cannot judge: {e}")), None),
                }
            }
        };
        AbTestConcluded {
            event_id: AbTestConcluded::id_for(self.id()),
            occurred_at: now,
            run_id: self.id().clone(),
            status,
            reason,
            label_a: request.variant_a.label.clone(),
            label_b: request.variant_b.label.clone(),
            samples_per_variant: request.samples_per_variant,
            confidence: options.confidence,
            tolerance: options.tolerance,
            samples,
            judgement,
        }
    }
}

/// Per requested metric, A's and B's values in sample order; and the metrics no sample of one side
/// measured (they cannot be judged).
fn metric_samples(request: &AbTestRequested, samples: &[AbSample]) -> (Vec<MetricSamples>, Vec<String>) {
    let (mut judged, mut unmeasured) = (Vec::new(), Vec::new());
    for spec in request.metric_specs() {
        let of = |side| -> Vec<f64> {
            samples.iter().filter(|s| s.variant == side).filter_map(|s| s.values.get(&spec.name).copied()).collect()
        };
        let (a, b) = (of(AbSide::A), of(AbSide::B));
        if a.is_empty() || b.is_empty() {
            unmeasured.push(spec.name.clone());
        } else {
            judged.push(MetricSamples { metric: spec.name.clone(), direction: spec.direction, a, b });
        }
    }
    (judged, unmeasured)
}

/// The score versions the samples report (0: a sample whose regions differed).
fn score_versions(samples: &[AbSample]) -> BTreeSet<i64> {
    samples.iter().filter_map(|s| s.values.get(SCORE_VERSION_VALUE)).map(|v| *v as i64).collect()
}

/// Whether the scores came from more than one version of the formula.
fn mixed(versions: &BTreeSet<i64>) -> bool {
    versions.len() > 1 || versions.contains(&0)
}

/// What one sample measured, per metric:
/// - `resilience_score`: the run's aggregate mean, failed regions counting 0 (the orchestrator's rule),
///   so a failed sample is a measured outcome, never a gap;
/// - the others: the mean over the regions whose probes measured something. A region that never
///   recovered within the agent's recovery timeout counts its whole run time as its recovery time
///   (censored at what was observed: longer than any recovery it could have shown, so the rank test
///   orders it after every region that recovered).
pub fn sample_values(report: &AggregateReport, outcomes: &[RegionOutcome]) -> BTreeMap<String, f64> {
    let mut values = BTreeMap::from([(AbMetric::ResilienceScore.as_str().to_owned(), report.mean_score)]);
    // Only regions that measured something have a score version to compare.
    let versions: BTreeSet<i32> = outcomes.iter().filter(|o| o.metrics.is_some()).map(|o| o.score_version).collect();
    if let Some(&version) = versions.first() {
        values.insert(SCORE_VERSION_VALUE.to_owned(), if versions.len() == 1 { f64::from(version) } else { 0.0 });
    }
    let measured: Vec<(&RegionMetrics, f64)> =
        outcomes.iter().filter_map(|o| o.metrics.as_ref().map(|m| (m, o.elapsed_s))).collect();
    if measured.is_empty() {
        return values;
    }
    let mean = |f: &dyn Fn(&RegionMetrics, f64) -> f64| {
        measured.iter().map(|(m, elapsed)| f(m, *elapsed)).sum::<f64>() / measured.len() as f64
    };
    let per_metric: [(AbMetric, f64); 5] = [
        (AbMetric::RecoveryTimeS, mean(&|m, elapsed| m.recovery_time_s.unwrap_or(elapsed))),
        (AbMetric::AccuracyDegradation, mean(&|m, _| m.accuracy_degradation)),
        (AbMetric::ErrorCount, mean(&|m, _| m.error_count as f64)),
        (AbMetric::PipelineDowntimeS, mean(&|m, _| m.pipeline_downtime_s)),
        (AbMetric::LatencyP95Ms, mean(&|m, _| m.latency_p95_ms)),
    ];
    for (metric, value) in per_metric {
        if value.is_finite() {
            values.insert(metric.as_str().to_owned(), value);
        }
    }
    values
}

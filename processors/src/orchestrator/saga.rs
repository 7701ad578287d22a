//! One run's saga: which regions it touches, in what order, and where each stands. Pure logic, advanced
//! only by events; the processor stores it in sled with the offsets of the events that advanced it.

use chaoseater_schemas::events::{AggregateReport, RegionStatus, RegionSummary, RunStatus};
use chaoseater_schemas::experiment::{ExperimentSpec, RunMode};
use chaoseater_schemas::ids::{DispatchId, RegionName, RunId};
use serde::{Deserialize, Serialize};

pub use chaoseater_schemas::bus::regions::RegionEntry;

/// Where one region of a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RegionState {
    Pending,
    Dispatched {
        dispatch_id: DispatchId,
        at_ms: i64,
    },
    Done {
        status: RegionStatus,
        score: Option<f64>,
        duration_ms: i64,
        message: Option<String>,
    },
    /// Never dispatched (fail_fast stopped the run, or it was aborted first).
    Skipped {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaRegion {
    pub name: RegionName,
    pub priority: i32,
    pub state: RegionState,
}

/// A run in progress (or finished: kept so that replays and late results are recognised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saga {
    pub run_id: RunId,
    pub experiment: ExperimentSpec,
    pub mode: RunMode,
    pub max_concurrent: usize,
    pub fail_fast: bool,
    pub regions: Vec<SagaRegion>,
    pub started_at_ms: i64,
    pub aborted: Option<String>,
    pub completed: bool,
}

/// What the saga asks for next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Dispatch(RegionName),
    Complete,
}

/// Regions a run touches, in dispatch order: parallel keeps the requested order (by priority when all
/// regions are meant); sequential goes by priority, highest first; blast radius takes
/// max(1, floor(n·percent/100)) regions, lowest priority first, and never more.
pub fn choose(mode: RunMode, mut candidates: Vec<RegionEntry>, all: bool, blast_percent: f64) -> Vec<RegionEntry> {
    match mode {
        RunMode::Parallel => {
            if all {
                candidates
                    .sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.as_str().cmp(b.name.as_str())));
            }
            candidates
        }
        RunMode::Sequential => {
            candidates.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.as_str().cmp(b.name.as_str())));
            candidates
        }
        RunMode::BlastRadius => {
            candidates.sort_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.name.as_str().cmp(b.name.as_str())));
            let n = candidates.len();
            let take = ((n as f64 * blast_percent / 100.0).floor() as usize).max(1).min(n);
            candidates.truncate(take);
            candidates
        }
    }
}

impl Saga {
    fn in_flight(&self) -> usize {
        self.regions.iter().filter(|r| matches!(r.state, RegionState::Dispatched { .. })).count()
    }

    fn limit(&self) -> usize {
        match self.mode {
            RunMode::Sequential => 1,
            RunMode::Parallel | RunMode::BlastRadius => self.max_concurrent.max(1),
        }
    }

    /// The regions to dispatch now (marking them dispatched), or `Complete` when nothing is left.
    pub fn advance(&mut self, now_ms: i64) -> Vec<Step> {
        if self.completed {
            return Vec::new();
        }
        let mut steps = Vec::new();
        if self.aborted.is_none() {
            let mut free = self.limit().saturating_sub(self.in_flight());
            for region in self.regions.iter_mut() {
                if free == 0 {
                    break;
                }
                if region.state == RegionState::Pending {
                    region.state =
                        RegionState::Dispatched { dispatch_id: dispatch_id(&self.run_id, &region.name), at_ms: now_ms };
                    steps.push(Step::Dispatch(region.name.clone()));
                    free -= 1;
                }
            }
        }
        if steps.is_empty() && self.in_flight() == 0 {
            self.completed = true;
            steps.push(Step::Complete);
        }
        steps
    }

    /// Records a region's result; false when it answers no dispatch of this saga (late or duplicate).
    pub fn record(
        &mut self,
        region: &RegionName,
        dispatch: &DispatchId,
        status: RegionStatus,
        score: Option<f64>,
        duration_ms: i64,
        message: Option<String>,
    ) -> bool {
        let Some(entry) = self.regions.iter_mut().find(|r| &r.name == region) else { return false };
        match &entry.state {
            RegionState::Dispatched { dispatch_id, .. } if dispatch_id == dispatch => {}
            _ => return false,
        }
        entry.state = RegionState::Done { status, score, duration_ms, message };
        if self.mode == RunMode::Sequential && self.fail_fast && status != RegionStatus::Completed {
            let reason = format!("not run: fail_fast after {region} {}", status_name(status));
            for r in self.regions.iter_mut().filter(|r| r.state == RegionState::Pending) {
                r.state = RegionState::Skipped { reason: reason.clone() };
            }
        }
        true
    }

    /// Stops dispatching; regions in flight are aborted by the dispatcher and report back.
    pub fn abort(&mut self, reason: &str) {
        if self.completed || self.aborted.is_some() {
            return;
        }
        self.aborted = Some(reason.to_owned());
        for r in self.regions.iter_mut().filter(|r| r.state == RegionState::Pending) {
            r.state = RegionState::Skipped { reason: format!("not run: aborted ({reason})") };
        }
    }

    /// The aggregate report. Totals cover the regions that ran; skipped ones are listed with their reason.
    pub fn report(&self, now_ms: i64) -> (RunStatus, AggregateReport) {
        let mut summaries = Vec::new();
        let (mut total, mut succeeded, mut sum) = (0i32, 0i32, 0.0f64);
        let mut min: Option<(RegionName, f64)> = None;
        let mut max: Option<(RegionName, f64)> = None;
        let mut any_failed = false;
        for r in &self.regions {
            match &r.state {
                RegionState::Done { status, score, duration_ms, message } => {
                    total += 1;
                    let counted = if *status == RegionStatus::Completed { score.unwrap_or(0.0) } else { 0.0 };
                    if *status == RegionStatus::Completed {
                        succeeded += 1;
                    } else {
                        any_failed = true;
                    }
                    sum += counted;
                    if min.as_ref().is_none_or(|(_, s)| counted < *s) {
                        min = Some((r.name.clone(), counted));
                    }
                    if max.as_ref().is_none_or(|(_, s)| counted > *s) {
                        max = Some((r.name.clone(), counted));
                    }
                    summaries.push(RegionSummary {
                        region: r.name.clone(),
                        status: *status,
                        resilience_score: *score,
                        duration_ms: *duration_ms,
                        message: message.clone(),
                    });
                }
                RegionState::Skipped { reason } => {
                    if self.aborted.is_none() {
                        any_failed = true;
                    }
                    summaries.push(RegionSummary {
                        region: r.name.clone(),
                        status: RegionStatus::Aborted,
                        resilience_score: None,
                        duration_ms: 0,
                        message: Some(reason.clone()),
                    });
                }
                RegionState::Pending | RegionState::Dispatched { .. } => {}
            }
        }
        let status = if self.aborted.is_some() {
            RunStatus::Aborted
        } else if any_failed {
            RunStatus::Failed
        } else {
            RunStatus::Completed
        };
        let report = AggregateReport {
            regions_total: total,
            regions_succeeded: succeeded,
            success_rate: if total > 0 { f64::from(succeeded) / f64::from(total) } else { 0.0 },
            mean_score: if total > 0 { sum / f64::from(total) } else { 0.0 },
            min_region: min.as_ref().map(|(n, _)| n.clone()),
            min_score: min.map(|(_, s)| s),
            max_region: max.as_ref().map(|(n, _)| n.clone()),
            max_score: max.map(|(_, s)| s),
            duration_ms: (now_ms - self.started_at_ms).max(0),
            regions: summaries,
        };
        (status, report)
    }
}

/// One dispatch per run and region: the idempotency key the agent runs at most once.
pub fn dispatch_id(run_id: &RunId, region: &RegionName) -> DispatchId {
    DispatchId::for_region(run_id, region)
}

fn status_name(status: RegionStatus) -> &'static str {
    match status {
        RegionStatus::Completed => "completed",
        RegionStatus::Failed => "failed",
        RegionStatus::Aborted => "was aborted",
    }
}

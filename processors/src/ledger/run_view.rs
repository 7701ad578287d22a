//! A run as the log tells it: the projection `chaoseater run`, `status`, `demo` and the CI gate read,
//! folded from a run's events on the dispatch, results and rollback topics. Replaying an event (a
//! duplicate, a re-read) changes nothing. The binary renders it; nothing here prints.

use chaoseater_schemas::events::{Event, RegionResult, RegionStatus, RollbackTrigger, RunCompleted, RunStatus};
use chaoseater_schemas::experiment::{RollbackStrategy, RunMode};
use chaoseater_schemas::ids::{RegionName, RunId};

/// One region of a run.
#[derive(Debug, Clone)]
pub struct RegionView {
    pub name: RegionName,
    /// When it was dispatched (event time, ms).
    pub dispatched_at: Option<i64>,
    pub result: Option<RegionResult>,
    pub rollback: Option<RollbackView>,
}

/// A region's rollback.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackView {
    pub strategy: RollbackStrategy,
    pub trigger: RollbackTrigger,
    /// Cumulative percentages of the planned steps.
    pub planned: Vec<f64>,
    /// Steps applied at the agent: (step, percentage).
    pub applied: Vec<(i32, f64)>,
    pub state: RollbackState,
}

/// Where a region's rollback stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackState {
    RollingBack,
    /// A health check failed after a step; `chaoseater rollback resume` goes on.
    Paused {
        reason: String,
    },
    Completed,
    Failed {
        reason: String,
    },
}

impl std::fmt::Display for RollbackState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RollbackState::RollingBack => f.write_str("rolling back"),
            RollbackState::Paused { reason } => write!(f, "paused: {reason}"),
            RollbackState::Completed => f.write_str("completed"),
            RollbackState::Failed { reason } => write!(f, "failed: {reason}"),
        }
    }
}

/// One run.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run_id: RunId,
    pub name: String,
    pub duration_ms: i64,
    pub min_score: Option<f64>,
    pub mode: Option<RunMode>,
    pub regions: Vec<RegionView>,
    pub completed: Option<RunCompleted>,
    pub rejected: Option<String>,
}

impl RunView {
    pub fn new(run_id: RunId, name: &str, duration_ms: i64, min_score: Option<f64>) -> Self {
        Self {
            run_id,
            name: name.to_owned(),
            duration_ms,
            min_score,
            mode: None,
            regions: Vec::new(),
            completed: None,
            rejected: None,
        }
    }

    /// Rejected, or completed with no rollback still under way (its outcome belongs in the summary; a
    /// paused one waits for a person, so it does not hold the summary back).
    pub fn finished(&self) -> bool {
        let rolling_back =
            self.regions.iter().any(|r| r.rollback.as_ref().is_some_and(|b| b.state == RollbackState::RollingBack));
        self.rejected.is_some() || (self.completed.is_some() && !rolling_back)
    }

    /// The region named `name`, if the run has seen it.
    pub fn region(&self, name: &RegionName) -> Option<&RegionView> {
        self.regions.iter().find(|r| &r.name == name)
    }

    fn region_mut(&mut self, name: &RegionName) -> &mut RegionView {
        if let Some(i) = self.regions.iter().position(|r| &r.name == name) {
            return &mut self.regions[i];
        }
        self.regions.push(RegionView { name: name.clone(), dispatched_at: None, result: None, rollback: None });
        self.regions.last_mut().expect("just pushed")
    }

    /// Folds an event of this run in; whether it changed what the view shows (a duplicate does not, nor
    /// a rollback event for a region with no rollback started).
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::RunRequested(r) => {
                self.name = r.experiment.name.clone();
                self.duration_ms = r.experiment.duration_ms;
                self.min_score = r.min_score;
                false
            }
            Event::RunStarted(s) => {
                self.mode = Some(s.mode);
                for r in &s.regions {
                    self.region_mut(r);
                }
                true
            }
            Event::RegionDispatched(d) => {
                let region = self.region_mut(&d.region);
                let first = region.dispatched_at.is_none();
                region.dispatched_at.get_or_insert(d.occurred_at.0);
                first
            }
            Event::RegionResult(r) => {
                let region = self.region_mut(&r.region);
                let first = region.result.is_none();
                region.result.get_or_insert_with(|| r.clone());
                first
            }
            Event::RunCompleted(c) => {
                let first = self.completed.is_none();
                self.completed.get_or_insert_with(|| c.clone());
                first
            }
            Event::RunRejected(r) => {
                self.rejected = Some(r.reason.clone());
                true
            }
            Event::FaultHeld(_) => true,
            Event::RollbackStarted(r) => {
                self.region_mut(&r.region).rollback = Some(RollbackView {
                    strategy: r.strategy,
                    trigger: r.trigger,
                    planned: r.planned_percentages.clone(),
                    applied: Vec::new(),
                    state: RollbackState::RollingBack,
                });
                true
            }
            Event::RollbackStepApplied(a) => {
                let Some(rollback) = self.region_mut(&a.region).rollback.as_mut() else { return false };
                if rollback.applied.iter().any(|(step, _)| *step == a.step) {
                    return false;
                }
                rollback.applied.push((a.step, a.percentage));
                // A step after a pause: the rollback was resumed.
                if matches!(rollback.state, RollbackState::Paused { .. }) {
                    rollback.state = RollbackState::RollingBack;
                }
                true
            }
            Event::RollbackPaused(p) => {
                self.set_rollback(&p.region, RollbackState::Paused { reason: p.reason.clone() })
            }
            Event::RollbackCompleted(c) => self.set_rollback(&c.region, RollbackState::Completed),
            Event::RollbackFailed(f) => {
                self.set_rollback(&f.region, RollbackState::Failed { reason: f.reason.clone() })
            }
            _ => false,
        }
    }

    fn set_rollback(&mut self, region: &RegionName, state: RollbackState) -> bool {
        match self.region_mut(region).rollback.as_mut() {
            Some(rollback) => {
                rollback.state = state;
                true
            }
            None => false,
        }
    }

    /// The gate: every region completed and scored at least `threshold`.
    pub fn passes(&self, threshold: f64) -> bool {
        let Some(done) = &self.completed else { return false };
        done.status == RunStatus::Completed
            && done
                .report
                .regions
                .iter()
                .all(|r| r.status == RegionStatus::Completed && r.resilience_score.is_some_and(|s| s >= threshold))
    }
}

#[cfg(test)]
mod tests {
    use chaoseater_schemas::events::{Event, EventKind};
    use chaoseater_schemas::samples::sample;

    use super::*;

    /// The sample of `kind`, about run `r1` in region `eu`.
    fn event(kind: EventKind, change: impl FnOnce(&mut Event)) -> Event {
        let mut e = sample(kind);
        change(&mut e);
        e
    }

    #[test]
    fn a_run_is_finished_once_no_rollback_is_under_way() {
        let started = event(EventKind::RollbackStarted, |_| {});
        let Event::RollbackStarted(s) = &started else { unreachable!() };
        let (run, region) = (s.run_id.clone(), s.region.clone());
        let mut view = RunView::new(run.clone(), "x", 1_000, None);
        let rollback = |view: &RunView| view.regions[0].rollback.as_ref().expect("rollback").state.clone();
        view.apply(&started);
        view.apply(&event(EventKind::RunCompleted, |e| {
            if let Event::RunCompleted(c) = e {
                c.run_id = run.clone();
            }
        }));
        assert_eq!(rollback(&view), RollbackState::RollingBack);
        assert!(!view.finished(), "completed, but its rollback is still under way");
        view.apply(&event(EventKind::RollbackPaused, |e| {
            if let Event::RollbackPaused(p) = e {
                (p.run_id, p.region, p.reason) = (run.clone(), region.clone(), "unhealthy".into());
            }
        }));
        assert_eq!(rollback(&view).to_string(), "paused: unhealthy");
        assert!(view.finished(), "a paused rollback waits for a person, not for the summary");
        view.apply(&event(EventKind::RollbackStepApplied, |e| {
            if let Event::RollbackStepApplied(a) = e {
                (a.run_id, a.region, a.step) = (run.clone(), region.clone(), 2);
            }
        }));
        assert_eq!(rollback(&view), RollbackState::RollingBack, "a step after the pause: resumed");
        assert!(!view.finished());
        view.apply(&event(EventKind::RollbackCompleted, |e| {
            if let Event::RollbackCompleted(c) = e {
                (c.run_id, c.region) = (run.clone(), region.clone());
            }
        }));
        assert_eq!(rollback(&view), RollbackState::Completed);
        assert!(view.finished());
    }
}

//! Following runs on the event log: what `run`, `status` and `demo` show while regions run, and the
//! aggregate reports they print at the end.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chaoseater_schemas::bus::{BusContext, EventConsumer, StartFrom};
use chaoseater_schemas::events::{Event, RegionResult, RegionStatus, RunCompleted, RunStatus};
use chaoseater_schemas::ids::RunId;
use chaoseater_schemas::topics::Topic;

/// One region of a run, as the log tells it.
#[derive(Debug, Clone, Default)]
pub struct RegionView {
    pub name: String,
    pub dispatched_at: Option<i64>,
    pub result: Option<RegionResult>,
    pub rollback: Option<RollbackView>,
}

/// A region's rollback, as the log tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackView {
    pub strategy: String,
    pub trigger: String,
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

impl RollbackView {
    /// One line: strategy, trigger, the steps applied against the plan, the state.
    pub fn line(&self) -> String {
        let applied: Vec<String> = self.applied.iter().map(|(_, p)| format!("{p:.0}%")).collect();
        format!(
            "rollback {} ({}): {} of {} steps [{}], {}",
            self.strategy,
            self.trigger,
            self.applied.len(),
            self.planned.len(),
            applied.join(" → "),
            self.state
        )
    }
}

/// One run, as the log tells it.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run_id: RunId,
    pub name: String,
    pub duration_ms: i64,
    pub min_score: Option<f64>,
    pub mode: Option<String>,
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

    fn region(&mut self, name: &str) -> &mut RegionView {
        if let Some(i) = self.regions.iter().position(|r| r.name == name) {
            return &mut self.regions[i];
        }
        self.regions.push(RegionView { name: name.to_owned(), ..RegionView::default() });
        self.regions.last_mut().expect("just pushed")
    }

    /// Applies an event of this run; returns a line describing the change, if any.
    pub fn apply(&mut self, event: &Event) -> Option<String> {
        match event {
            Event::RunRequested(r) => {
                self.name = r.experiment.name.clone();
                self.duration_ms = r.experiment.duration_ms;
                self.min_score = r.min_score;
                None
            }
            Event::RunStarted(s) => {
                self.mode = Some(s.mode.as_str().to_owned());
                for r in &s.regions {
                    self.region(r.as_str());
                }
                let names: Vec<&str> = s.regions.iter().map(|r| r.as_str()).collect();
                Some(format!("started in {} ({})", names.join(", "), self.mode.as_deref().unwrap_or("")))
            }
            Event::RegionDispatched(d) => {
                let region = self.region(d.region.as_str());
                if region.dispatched_at.is_some() {
                    return None;
                }
                region.dispatched_at = Some(d.occurred_at.0);
                Some(format!("  {:<12} dispatched", d.region))
            }
            Event::RegionResult(r) => {
                let region = self.region(r.region.as_str());
                if region.result.is_some() {
                    return None;
                }
                region.result = Some(r.clone());
                Some(format!("  {:<12} {}", r.region, result_line(r)))
            }
            Event::RunCompleted(c) => {
                if self.completed.is_some() {
                    return None;
                }
                self.completed = Some(c.clone());
                Some(c.status.as_str().to_owned())
            }
            Event::RunRejected(r) => {
                self.rejected = Some(r.reason.clone());
                Some(format!("REJECTED: {}", r.reason))
            }
            Event::FaultHeld(h) => Some(format!("  {:<12} fault's time ended; held for its rollback", h.region)),
            Event::RollbackStarted(r) => {
                let view = RollbackView {
                    strategy: r.strategy.as_str().to_owned(),
                    trigger: r.trigger.as_str().to_owned(),
                    planned: r.planned_percentages.clone(),
                    applied: Vec::new(),
                    state: RollbackState::RollingBack,
                };
                let steps: Vec<String> = r.planned_percentages.iter().map(|p| format!("{p:.0}%")).collect();
                let line = format!(
                    "  {:<12} rollback started: {} on {}, steps {}",
                    r.region,
                    view.strategy,
                    view.trigger.replace('_', " "),
                    steps.join(" → ")
                );
                self.region(r.region.as_str()).rollback = Some(view);
                Some(line)
            }
            Event::RollbackStepApplied(a) => {
                let rollback = self.region(a.region.as_str()).rollback.as_mut()?;
                if rollback.applied.iter().any(|(step, _)| *step == a.step) {
                    return None;
                }
                rollback.applied.push((a.step, a.percentage));
                // A step after a pause: the rollback was resumed.
                if matches!(rollback.state, RollbackState::Paused { .. }) {
                    rollback.state = RollbackState::RollingBack;
                }
                let of = rollback.planned.len().max(a.step as usize);
                Some(format!(
                    "  {:<12} rollback step {}/{of} applied: {:.0}% of traffic free of the fault",
                    a.region, a.step, a.percentage
                ))
            }
            Event::RollbackPaused(p) => {
                self.region(p.region.as_str()).rollback.as_mut()?.state =
                    RollbackState::Paused { reason: p.reason.clone() };
                Some(format!(
                    "  {:<12} rollback PAUSED after step {}: {} (chaoseater rollback resume {})",
                    p.region, p.step, p.reason, p.run_id
                ))
            }
            Event::RollbackCompleted(c) => {
                self.region(c.region.as_str()).rollback.as_mut()?.state = RollbackState::Completed;
                Some(format!(
                    "  {:<12} rollback completed in {} steps, {:.1} s",
                    c.region,
                    c.steps,
                    c.duration_ms as f64 / 1000.0
                ))
            }
            Event::RollbackFailed(f) => {
                self.region(f.region.as_str()).rollback.as_mut()?.state =
                    RollbackState::Failed { reason: f.reason.clone() };
                Some(format!("  {:<12} rollback FAILED: {}", f.region, f.reason))
            }
            _ => None,
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

fn result_line(r: &RegionResult) -> String {
    let status = r.status.as_str();
    match (&r.metrics, r.resilience_score) {
        (Some(m), Some(score)) => format!(
            "{status:<9} score {score:>5.1}  downtime {:.1} s, recovery {}, accuracy lost {:.1} pp, {} errors",
            m.pipeline_downtime_s,
            m.recovery_time_s.map_or("none".to_owned(), |r| format!("{r:.1} s")),
            m.accuracy_degradation,
            m.error_count
        ),
        _ => format!("{status:<9} {}", r.message.as_deref().unwrap_or("")),
    }
}

fn short(id: &RunId) -> String {
    id.as_str().chars().take(8).collect()
}

/// Prints a run's aggregate report as a table.
pub fn print_report(view: &RunView, out: &mut impl Write) -> std::io::Result<()> {
    if let Some(reason) = &view.rejected {
        return writeln!(out, "run {} \"{}\": REJECTED: {reason}", view.run_id, view.name);
    }
    let Some(done) = &view.completed else {
        return writeln!(out, "run {} \"{}\": still running", view.run_id, view.name);
    };
    let r = &done.report;
    writeln!(
        out,
        "run {} \"{}\" ({}): {} in {:.1} s",
        view.run_id,
        view.name,
        view.mode.as_deref().unwrap_or("?"),
        done.status.as_str(),
        r.duration_ms as f64 / 1000.0
    )?;
    writeln!(
        out,
        "  {:<12} {:<9} {:>6} {:>9} {:>9} {:>9} {:>7}  message",
        "region", "status", "score", "downtime", "recovery", "acc.lost", "errors"
    )?;
    for s in &r.regions {
        let metrics = view
            .regions
            .iter()
            .find(|v| v.name == s.region.as_str())
            .and_then(|v| v.result.as_ref())
            .and_then(|x| x.metrics.clone());
        let (down, rec, acc, err) = match &metrics {
            Some(m) => (
                format!("{:.1} s", m.pipeline_downtime_s),
                m.recovery_time_s.map_or("-".to_owned(), |v| format!("{v:.1} s")),
                format!("{:.1} pp", m.accuracy_degradation),
                m.error_count.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        writeln!(
            out,
            "  {:<12} {:<9} {:>6} {:>9} {:>9} {:>9} {:>7}  {}",
            s.region.as_str(),
            s.status.as_str(),
            s.resilience_score.map_or("-".to_owned(), |v| format!("{v:.1}")),
            down,
            rec,
            acc,
            err,
            s.message.as_deref().unwrap_or("")
        )?;
    }
    for region in &view.regions {
        if let Some(rollback) = &region.rollback {
            writeln!(out, "  {:<12} {}", region.name, rollback.line())?;
        }
    }
    let extreme = |name: &Option<chaoseater_schemas::ids::RegionName>, score: Option<f64>| match (name, score) {
        (Some(n), Some(s)) => format!("{n} {s:.1}"),
        _ => "-".to_owned(),
    };
    writeln!(
        out,
        "  success rate {:.0}%  mean score {:.1} (failed regions count 0)  min {}  max {}",
        r.success_rate * 100.0,
        r.mean_score,
        extreme(&r.min_region, r.min_score),
        extreme(&r.max_region, r.max_score)
    )
}

/// Follows `runs` on the dispatch and results topics until each finished (or `timeout`), showing progress:
/// a bar per region in flight on a terminal, a line per change otherwise.
pub async fn follow(ctx: &BusContext, mut runs: Vec<RunView>, timeout: Duration) -> Result<Vec<RunView>> {
    let topics = [ctx.topics.name(Topic::Dispatch), ctx.topics.name(Topic::Results), ctx.topics.name(Topic::Rollback)];
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let consumer =
        EventConsumer::assign(ctx, "chaoseater-follow", &refs, &Default::default(), StartFrom::Beginning).await?;
    let started = Instant::now();
    let live = std::io::stderr().is_terminal();
    let mut drawn = 0usize;
    let index: BTreeMap<String, usize> = runs.iter().enumerate().map(|(i, r)| (r.run_id.to_string(), i)).collect();
    let mut shutdown = std::pin::pin!(super::shutdown_signal());
    while !runs.iter().all(RunView::finished) {
        if started.elapsed() > timeout {
            bail!("gave up following after {:?}; the runs go on (chaoseater status RUN_ID)", timeout);
        }
        let batch = tokio::select! {
            () = &mut shutdown => bail!("interrupted; the runs go on (chaoseater abort RUN_ID stops one)"),
            batch = consumer.next_batch(500, Duration::from_millis(200)) => batch?,
        };
        let mut lines = Vec::new();
        for message in batch {
            let Some(Ok(event)) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) else { continue };
            let Some(run_id) = event.run_id() else { continue };
            let Some(&i) = index.get(run_id.as_str()) else { continue };
            if let Some(line) = runs[i].apply(&event) {
                lines.push(format!(
                    "[{:>5.1}s] run {} {line}",
                    started.elapsed().as_secs_f64(),
                    short(&runs[i].run_id)
                ));
            }
        }
        let mut err = std::io::stderr().lock();
        if live && drawn > 0 {
            write!(err, "\x1b[{drawn}A\x1b[J")?;
        }
        for line in &lines {
            writeln!(err, "{line}")?;
        }
        drawn = 0;
        if live {
            for run in &runs {
                for region in &run.regions {
                    if let (Some(at), None) = (region.dispatched_at, &region.result) {
                        let elapsed = (chaoseater_schemas::ids::TimestampMs::now().0 - at).max(0) as f64;
                        let expected = (run.duration_ms + 3_000) as f64;
                        let filled = ((elapsed / expected).min(0.97) * 24.0) as usize;
                        writeln!(
                            err,
                            "         {} {:<12} [{}{}] {:>5.1}s",
                            short(&run.run_id),
                            region.name,
                            "#".repeat(filled),
                            "-".repeat(24 - filled),
                            elapsed / 1000.0
                        )?;
                        drawn += 1;
                    }
                }
            }
        }
    }
    if live && drawn > 0 {
        write!(std::io::stderr(), "\x1b[{drawn}A\x1b[J")?;
    }
    Ok(runs)
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

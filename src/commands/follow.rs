//! Following runs on the event log: what `run`, `status` and `demo` show while regions run, and the
//! aggregate reports they print at the end. The run itself is `chaoseater_processors::ledger::RunView`;
//! this renders it.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chaoseater_processors::ledger::RollbackView;
pub use chaoseater_processors::ledger::{RollbackState, RunView};
use chaoseater_schemas::bus::{BusContext, EventConsumer, StartFrom};
use chaoseater_schemas::events::{Event, RegionResult};
use chaoseater_schemas::ids::RunId;
use chaoseater_schemas::topics::Topic;

/// The line describing what `event` changed in `view` (after [`RunView::apply`] said it did).
pub fn change_line(event: &Event, view: &RunView) -> Option<String> {
    let line = match event {
        Event::RunStarted(s) => {
            let names: Vec<&str> = s.regions.iter().map(|r| r.as_str()).collect();
            format!("started in {} ({})", names.join(", "), s.mode.as_str())
        }
        Event::RegionDispatched(d) => format!("  {:<12} dispatched", d.region),
        Event::RegionResult(r) => format!("  {:<12} {}", r.region, result_line(r)),
        Event::RunCompleted(c) => c.status.as_str().to_owned(),
        Event::RunRejected(r) => format!("REJECTED: {}", r.reason),
        Event::FaultHeld(h) => format!("  {:<12} fault's time ended; held for its rollback", h.region),
        Event::RollbackStarted(r) => {
            let steps: Vec<String> = r.planned_percentages.iter().map(|p| format!("{p:.0}%")).collect();
            format!(
                "  {:<12} rollback started: {} on {}, steps {}",
                r.region,
                r.strategy.as_str(),
                r.trigger.as_str().replace('_', " "),
                steps.join(" → ")
            )
        }
        Event::RollbackStepApplied(a) => {
            let planned = view.region(&a.region).and_then(|r| r.rollback.as_ref()).map_or(0, |r| r.planned.len());
            let of = planned.max(a.step as usize);
            format!(
                "  {:<12} rollback step {}/{of} applied: {:.0}% of traffic free of the fault",
                a.region, a.step, a.percentage
            )
        }
        Event::RollbackPaused(p) => format!(
            "  {:<12} rollback PAUSED after step {}: {} (chaoseater rollback resume {})",
            p.region, p.step, p.reason, p.run_id
        ),
        Event::RollbackCompleted(c) => format!(
            "  {:<12} rollback completed in {} steps, {:.1} s",
            c.region,
            c.steps,
            c.duration_ms as f64 / 1000.0
        ),
        Event::RollbackFailed(f) => format!("  {:<12} rollback FAILED: {}", f.region, f.reason),
        _ => return None,
    };
    Some(line)
}

/// One line: strategy, trigger, the steps applied against the plan, the state.
pub fn rollback_line(rollback: &RollbackView) -> String {
    let applied: Vec<String> = rollback.applied.iter().map(|(_, p)| format!("{p:.0}%")).collect();
    format!(
        "rollback {} ({}): {} of {} steps [{}], {}",
        rollback.strategy.as_str(),
        rollback.trigger.as_str(),
        rollback.applied.len(),
        rollback.planned.len(),
        applied.join(" → "),
        rollback.state
    )
}

fn result_line(r: &RegionResult) -> String {
    let status = r.status.as_str();
    match (&r.metrics, r.resilience_score) {
        (Some(m), Some(score)) => format!(
            "{status:<9} score {score:>5.1}  downtime {:.1} s, recovery {}, accuracy lost {:.1} pp, {} errors{}",
            m.pipeline_downtime_s,
            m.recovery_time_s.map_or("none".to_owned(), |r| format!("{r:.1} s")),
            m.accuracy_degradation,
            m.error_count,
            slow_note(m)
        ),
        _ => format!("{status:<9} {}", r.message.as_deref().unwrap_or("")),
    }
}

/// Requests slower than the latency objective, which score_version 2 counts beside the errors.
fn slow_note(m: &chaoseater_schemas::events::RegionMetrics) -> String {
    match (m.slow_count, m.slo_latency_ms) {
        (Some(slow), Some(objective)) => format!(", {slow} slower than {objective:.0} ms"),
        _ => String::new(),
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
        view.mode.map_or("?", |m| m.as_str()),
        done.status.as_str(),
        r.duration_ms as f64 / 1000.0
    )?;
    writeln!(
        out,
        "  {:<12} {:<9} {:>6} {:>9} {:>9} {:>9} {:>7} {:>6}  message",
        "region", "status", "score", "downtime", "recovery", "acc.lost", "errors", "slow"
    )?;
    for s in &r.regions {
        let metrics = view
            .regions
            .iter()
            .find(|v| v.name == s.region)
            .and_then(|v| v.result.as_ref())
            .and_then(|x| x.metrics.clone());
        let (down, rec, acc, err, slow) = match &metrics {
            Some(m) => (
                format!("{:.1} s", m.pipeline_downtime_s),
                m.recovery_time_s.map_or("-".to_owned(), |v| format!("{v:.1} s")),
                format!("{:.1} pp", m.accuracy_degradation),
                m.error_count.to_string(),
                m.slow_count.map_or("-".to_owned(), |n| n.to_string()),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        writeln!(
            out,
            "  {:<12} {:<9} {:>6} {:>9} {:>9} {:>9} {:>7} {:>6}  {}",
            s.region.as_str(),
            s.status.as_str(),
            s.resilience_score.map_or("-".to_owned(), |v| format!("{v:.1}")),
            down,
            rec,
            acc,
            err,
            slow,
            s.message.as_deref().unwrap_or("")
        )?;
    }
    for region in &view.regions {
        if let Some(rollback) = &region.rollback {
            writeln!(out, "  {:<12} {}", region.name, rollback_line(rollback))?;
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
            if runs[i].apply(&event)
                && let Some(line) = change_line(&event, &runs[i])
            {
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

//! Schedules: experiments that run on a cron expression.
//!
//! - [`cron`]: a schedule's timing, a 5-field cron expression in an IANA time zone (the croner crate,
//!   chrono-tz), refused with a message naming what is wrong.
//! - [`plan`]: what time passing does to a schedule, as a pure function of its rules, where it left off
//!   (the cursor), the time and its runs in flight: each tick fires once, with a run id derived from
//!   the schedule and the tick; the concurrency policy skips, allows or replaces; ticks later than the
//!   starting deadline are skipped and reported.
//! - [`runs`]: a schedule's runs as the results topic tells them (in flight, the last finished), and
//!   the starting deadline's parser.
//! - [`clock`]: where schedules take the time from, the system clock or (for tests) a file.
//! - [`processor`]: the scheduler processor, schedules as events on the compacted schedules topic,
//!   the cursor in its state store beside its offsets, RunRequested per fired tick.
//! - [`view`]: the schedules and their runs folded from the topics, for `chaoseater schedule`.

pub mod clock;
pub mod cron;
pub mod plan;
pub mod processor;
pub mod runs;
pub mod view;

use chaoseater_schemas::events::{RunRequested, ScheduleSpec, ScheduledExperiment};
use chaoseater_schemas::ids::{RunId, ScheduleId, TimestampMs};
use chaoseater_schemas::{faults, limits};
pub use processor::{Scheduled, Scheduler};

use self::cron::Timing;

/// Most experiments one schedule runs per tick.
pub const MAX_EXPERIMENTS: usize = 64;

/// The tags a scheduled run's experiment carries: which schedule and tick fired it (the history keeps
/// them, so SQL over the history can select a schedule's runs).
pub const SCHEDULE_TAG: &str = "schedule";
pub const TICK_TAG: &str = "schedule_tick";

/// Checks a schedule before anything of it is stored or fired: its id, its timing, its deadline, and
/// every experiment as the orchestrator would check the RunRequested a tick makes of it. Returns the
/// timing; the message names what is wrong.
pub fn check(id: &ScheduleId, spec: &ScheduleSpec) -> Result<Timing, String> {
    limits::check_id("schedule id", id.as_str(), limits::MAX_ID_LEN).map_err(|e| e.to_string())?;
    let timing = Timing::parse(&spec.cron, &spec.time_zone).map_err(|e| e.to_string())?;
    if !(0..=runs::MAX_DEADLINE_MS).contains(&spec.starting_deadline_ms) {
        return Err(format!("starting deadline {} ms: must be between 0 and 30 days", spec.starting_deadline_ms));
    }
    if spec.experiments.is_empty() || spec.experiments.len() > MAX_EXPERIMENTS {
        return Err(format!("must run 1 to {MAX_EXPERIMENTS} experiments, got {}", spec.experiments.len()));
    }
    for (index, entry) in spec.experiments.iter().enumerate() {
        let request = run_request(id, TimestampMs(0), &RunId::for_tick_entry(id, TimestampMs(0), index), entry);
        let name = limits::shown(&entry.experiment.name);
        limits::check_run_request(&request).map_err(|e| format!("experiment {} ({name}): {e}", index + 1))?;
        let params = serde_json::to_value(&request.experiment.parameters).map_err(|e| e.to_string())?;
        let empty = serde_json::Map::new();
        faults::validate(
            request.experiment.layer,
            &request.experiment.fault_type,
            params.as_object().unwrap_or(&empty),
        )
        .map_err(|e| format!("experiment {} ({name}): {}: {}", index + 1, e.field, e.message))?;
    }
    Ok(timing)
}

/// The RunRequested a tick makes of one of the schedule's experiments (its event id derived from the run
/// id; `occurred_at` the tick, which the scheduler replaces with the time it fires).
pub fn run_request(id: &ScheduleId, tick: TimestampMs, run_id: &RunId, entry: &ScheduledExperiment) -> RunRequested {
    let mut experiment = entry.experiment.clone();
    experiment.tags.insert(SCHEDULE_TAG.to_owned(), id.to_string());
    experiment.tags.insert(TICK_TAG.to_owned(), tick.0.to_string());
    RunRequested {
        event_id: RunRequested::id_for(run_id),
        occurred_at: tick,
        run_id: run_id.clone(),
        experiment,
        regions: entry.regions.clone(),
        mode: entry.mode,
        max_concurrent: entry.max_concurrent,
        fail_fast: entry.fail_fast,
        blast_radius_percent: entry.blast_radius_percent,
        min_score: entry.min_score,
        requested_by: format!("schedule {id}"),
    }
}

#[cfg(test)]
mod tests;

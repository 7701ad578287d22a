//! `chaoseater schedule`'s arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::OverrideArgs;

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Schedule every experiment of FILE: each tick runs one run per experiment. Refused with exit
    /// code 2, naming it, when the cron expression, the time zone or an experiment is invalid.
    Add(Box<ScheduleAddArgs>),
    /// Every schedule: its expression, policy and next tick.
    List,
    /// Suspend a schedule: its ticks pass unfired until it is resumed.
    Pause { id: String },
    /// Resume a paused schedule: it fires from the next tick on.
    Resume { id: String },
    /// Remove a schedule (its runs in flight go on).
    Remove { id: String },
    /// A schedule's definition, next tick, last runs and skipped ticks.
    Status { id: String },
}

#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// Experiment file (the format `submit` takes).
    pub file: PathBuf,
    /// Five-field cron expression: minute hour day-of-month month day-of-week, e.g. "0 3 * * *".
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// What a tick does while the schedule's previous run is in flight: forbid (skip the tick),
    /// allow (run anyway) or replace (abort it, then run).
    #[arg(long, default_value = "forbid")]
    pub concurrency: String,
    /// How late a missed tick may still start (after a downtime): seconds or 90s, 10m, 1h30m; later
    /// ticks are skipped and reported.
    #[arg(long, default_value = "10m")]
    pub starting_deadline: String,
    /// The schedule's id (default: the file's name without its extension).
    #[arg(long)]
    pub id: Option<String>,
    /// Replace the schedule of that id if there is one (otherwise an existing id is refused).
    #[arg(long)]
    pub replace: bool,
    /// Add it paused.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

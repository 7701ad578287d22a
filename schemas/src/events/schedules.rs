//! Schedules (topic chaoseater.schedules, compacted, key schedule id) and the scheduler's reports of
//! ticks it did not run (topic chaoseater.results, key schedule id).
//!
//! The topic is compacted, so the latest event of a schedule is all that a new reader may find: every
//! ScheduleCreated and ScheduleUpdated carries the whole definition, never a change to it, and reports
//! of skipped ticks go to the results topic, where they cannot push a definition out.

use serde::{Deserialize, Serialize};

use crate::experiment::{ExperimentSpec, RunMode};
use crate::ids::{EventId, RegionName, ScheduleId, TimestampMs};

/// What a tick does while a run the schedule fired earlier is still in flight (named as Kubernetes
/// CronJobs, Chaos Mesh and Argo name it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyPolicy {
    /// Skip the tick: one run of a schedule at a time. The default, since two faults of one schedule on
    /// the same regions would measure each other.
    #[default]
    Forbid,
    /// Fire regardless.
    Allow,
    /// Abort the runs in flight, then fire.
    Replace,
}

impl ConcurrencyPolicy {
    /// The name on the command line and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Forbid => "forbid",
            Self::Allow => "allow",
            Self::Replace => "replace",
        }
    }
}

impl std::str::FromStr for ConcurrencyPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "forbid" => Ok(Self::Forbid),
            "allow" => Ok(Self::Allow),
            "replace" => Ok(Self::Replace),
            other => Err(format!("concurrency policy {other:?}: expected forbid, allow or replace")),
        }
    }
}

/// One run a tick starts: an experiment and how it runs, as a RunRequested would carry them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledExperiment {
    pub experiment: ExperimentSpec,
    /// Regions to run in; empty means every region registered at the tick.
    pub regions: Vec<RegionName>,
    pub mode: RunMode,
    pub max_concurrent: i32,
    pub fail_fast: bool,
    pub blast_radius_percent: f64,
    pub min_score: Option<f64>,
}

/// A schedule's whole definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Five fields: minute hour day-of-month month day-of-week.
    pub cron: String,
    /// IANA time zone the expression is read in, e.g. `Europe/Paris`.
    pub time_zone: String,
    /// What each tick runs, one run per entry, in order.
    pub experiments: Vec<ScheduledExperiment>,
    pub concurrency: ConcurrencyPolicy,
    /// How late a tick may still start, in milliseconds; later ones are skipped and reported.
    pub starting_deadline_ms: i64,
    /// A suspended schedule fires nothing; resumed, it fires from the next tick on.
    pub suspended: bool,
}

/// A schedule was added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleCreated {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub schedule_id: ScheduleId,
    pub spec: ScheduleSpec,
    pub requested_by: String,
}

/// A schedule's definition changed (an edit, a pause, a resume): the whole new definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleUpdated {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub schedule_id: ScheduleId,
    pub spec: ScheduleSpec,
    pub requested_by: String,
}

/// A schedule was removed: it fires no more ticks (runs in flight go on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRemoved {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub schedule_id: ScheduleId,
    pub requested_by: String,
}

/// Why ticks did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SkipReason {
    /// The forbid policy: a run of the schedule was still in flight.
    InFlight,
    /// Later than the starting deadline (the scheduler was down or behind).
    MissedDeadline,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::MissedDeadline => "missed_deadline",
        }
    }
}

/// Ticks of a schedule that did not run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleTicksSkipped {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub schedule_id: ScheduleId,
    pub reason: SkipReason,
    pub first_tick: TimestampMs,
    pub last_tick: TimestampMs,
    /// How many ticks, from the first to the last; at least this many when `truncated`.
    pub count: i64,
    pub truncated: bool,
    /// InFlight: the run that kept the tick from running.
    pub in_flight_run_id: Option<String>,
}

impl ScheduleCreated {
    pub fn id_for(schedule: &ScheduleId, at: TimestampMs) -> EventId {
        EventId::derive("ScheduleCreated", &[schedule.as_str(), &at.to_id_part()])
    }
}

impl ScheduleUpdated {
    pub fn id_for(schedule: &ScheduleId, at: TimestampMs) -> EventId {
        EventId::derive("ScheduleUpdated", &[schedule.as_str(), &at.to_id_part()])
    }
}

impl ScheduleRemoved {
    pub fn id_for(schedule: &ScheduleId, at: TimestampMs) -> EventId {
        EventId::derive("ScheduleRemoved", &[schedule.as_str(), &at.to_id_part()])
    }
}

impl ScheduleTicksSkipped {
    /// One report per schedule, reason and first tick: deciding the same ticks again reports them once.
    pub fn id_for(schedule: &ScheduleId, reason: SkipReason, first_tick: TimestampMs) -> EventId {
        EventId::derive("ScheduleTicksSkipped", &[schedule.as_str(), reason.as_str(), &first_tick.to_id_part()])
    }
}

//! A schedule's runs as the results topic tells them: which are still in flight (what the concurrency
//! policy decides by) and how the last ones ended (what `schedule status` shows). Folded from events the
//! scheduler reads, so it is the same after a restart or a replay.

use std::collections::VecDeque;

use chaoseater_schemas::events::RunStatus;
use chaoseater_schemas::ids::{RunId, TimestampMs};
use serde::{Deserialize, Serialize};

/// The longest starting deadline: 30 days, the longest downtime worth catching up on.
pub const MAX_DEADLINE_MS: i64 = 30 * 86_400_000;

/// How many finished runs a schedule remembers for its status.
pub const LAST_RUNS: usize = 10;

/// Where a run the schedule fired stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Requested, no RunStarted seen yet.
    Requested,
    /// RunStarted seen.
    Running,
    /// RunCompleted seen, with its status.
    Ended(RunStatus),
    /// RunRejected seen (an experiment the orchestrator refused, an unknown region).
    Rejected,
}

impl Outcome {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Ended(_) | Self::Rejected)
    }
}

/// One run of a schedule: the tick that fired it and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRun {
    pub run_id: RunId,
    pub tick: TimestampMs,
    pub outcome: Outcome,
    /// When it finished (the ending event's time).
    pub finished_at: Option<TimestampMs>,
}

/// The runs of one schedule: in flight oldest first, and the last [`LAST_RUNS`] finished, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runs {
    in_flight: Vec<ScheduledRun>,
    finished: VecDeque<ScheduledRun>,
}

impl Runs {
    /// The scheduler fired `run_id` for `tick`. Firing a run already known (a replay) changes nothing.
    pub fn fired(&mut self, run_id: RunId, tick: TimestampMs) {
        if self.find(&run_id).is_none() {
            self.in_flight.push(ScheduledRun { run_id, tick, outcome: Outcome::Requested, finished_at: None });
            self.in_flight.sort_by_key(|r| r.tick);
        }
    }

    /// The results topic said something of `run_id`. Returns whether the run is this schedule's; a
    /// finished run never moves back to running (RunStarted read after RunCompleted on a replay).
    pub fn observed(&mut self, run_id: &RunId, outcome: Outcome, at: TimestampMs) -> bool {
        let Some(index) = self.in_flight.iter().position(|r| &r.run_id == run_id) else {
            return self.finished.iter().any(|r| &r.run_id == run_id);
        };
        if !outcome.is_finished() {
            self.in_flight[index].outcome = outcome;
            return true;
        }
        let mut run = self.in_flight.remove(index);
        run.outcome = outcome;
        run.finished_at = Some(at);
        self.finished.push_back(run);
        while self.finished.len() > LAST_RUNS {
            self.finished.pop_front();
        }
        true
    }

    /// The runs not finished, oldest tick first (the planner's `in_flight`).
    pub fn in_flight_ids(&self) -> Vec<RunId> {
        self.in_flight.iter().map(|r| r.run_id.clone()).collect()
    }

    /// Every run remembered, oldest tick first: the finished ones, then those in flight.
    pub fn recent(&self) -> impl Iterator<Item = &ScheduledRun> {
        self.finished.iter().chain(self.in_flight.iter())
    }

    fn find(&self, run_id: &RunId) -> Option<&ScheduledRun> {
        self.recent().find(|r| &r.run_id == run_id)
    }
}

/// A schedule's starting deadline as written on the command line or in a file: a number of seconds, or
/// a number with a unit (`s`, `m`, `h`, `d`), whole or combined (`1h30m`). Zero means a tick must start
/// within the scheduler's own tick interval; it is at most 30 days, the longest downtime worth catching
/// up on.
pub fn parse_deadline(text: &str) -> Result<i64, String> {
    let refuse = || format!("starting deadline {text:?}: expected seconds or a duration such as 90s, 10m, 1h30m");
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(refuse());
    }
    if let Ok(seconds) = trimmed.parse::<u64>() {
        return checked(seconds.saturating_mul(1000), MAX_DEADLINE_MS, text);
    }
    let (mut total, mut digits) = (0u64, String::new());
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit_ms: u64 = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(refuse()),
        };
        let number: u64 = digits.parse().map_err(|_| refuse())?;
        total = total.saturating_add(number.saturating_mul(unit_ms));
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(refuse());
    }
    checked(total, MAX_DEADLINE_MS, text)
}

fn checked(ms: u64, max: i64, text: &str) -> Result<i64, String> {
    i64::try_from(ms).ok().filter(|ms| *ms <= max).ok_or_else(|| format!("starting deadline {text:?}: at most 30 days"))
}

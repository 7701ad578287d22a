//! The scheduler processor: schedules from the compacted schedules topic, runs' states from the results
//! topic, and once a second the ticks that came due.
//!
//! Keys in its state store:
//! - `schedule/{id}` → [`Scheduled`] (JSON): the definition, the cursor (the last tick decided) and the
//!   schedule's runs. Committed with the offsets and the outbox, so a crash at a tick either decided
//!   nothing (the same tick is decided again, from the same cursor, into the same run ids) or decided it
//!   and published or will publish the committed outbox.
//! - `run/{run_id}` → the schedule id, for a run still in flight: where a result about it belongs.

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, Rejection, StateStore, StateView};
use chaoseater_schemas::events::{AbortRequested, Event, RunRequested, ScheduleSpec, ScheduleTicksSkipped, SkipReason};
use chaoseater_schemas::ids::{RunId, ScheduleId, TimestampMs};
use chaoseater_schemas::topics::Topic;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::clock::ScheduleClock;
use super::plan::{Decision, Rules, advance_until};
use super::runs::{Outcome, Runs};
use super::{check, run_request};

/// A schedule as the scheduler keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    pub spec: ScheduleSpec,
    /// The last tick decided (fired or skipped), or when the schedule began counting (its creation, an
    /// edit, a resume).
    pub cursor: TimestampMs,
    pub runs: Runs,
}

/// The scheduler processor.
#[derive(Debug, Default)]
pub struct Scheduler {
    /// Where its decisions take the time from (the runner's time is the system clock's).
    pub clock: ScheduleClock,
}

const SCHEDULE: &str = "schedule/";
const RUN: &str = "run/";

impl Scheduler {
    pub const NAME: &'static str = "scheduler";

    pub fn new(clock: ScheduleClock) -> Self {
        Self { clock }
    }

    /// The schedules' time: the runner's `system` time, or the clock file's.
    fn now(&self, system: TimestampMs) -> Result<TimestampMs, ApplyError> {
        match &self.clock {
            ScheduleClock::System => Ok(system),
            clock => clock.now().map_err(ApplyError::Transient),
        }
    }

    fn key(id: &ScheduleId) -> Vec<u8> {
        format!("{SCHEDULE}{id}").into_bytes()
    }

    fn run_key(run_id: &RunId) -> Vec<u8> {
        format!("{RUN}{run_id}").into_bytes()
    }

    /// Every schedule as committed, by id (for tests and tools).
    pub fn schedules(store: &StateStore) -> chaoseater_schemas::Result<Vec<(ScheduleId, Scheduled)>> {
        Ok(store
            .scan_json::<Scheduled>(SCHEDULE.as_bytes())?
            .into_iter()
            .map(|(k, s)| (ScheduleId::new(String::from_utf8_lossy(&k[SCHEDULE.len()..]).as_ref()), s))
            .collect())
    }

    fn save(state: &mut StateView<'_>, id: &ScheduleId, scheduled: &Scheduled) -> Result<(), ApplyError> {
        Ok(state.put_json(Self::key(id), scheduled)?)
    }

    /// A new or changed definition. The old definition still decides its ticks up to the change (a
    /// change read late, after a downtime, does not take back the ticks before it), and the new one
    /// counts from the change: an edit or a resume takes effect at the first tick after it, and never
    /// fires ticks of the new expression from before it.
    fn define(
        state: &mut StateView<'_>,
        id: &ScheduleId,
        spec: &ScheduleSpec,
        at: TimestampMs,
        now: TimestampMs,
    ) -> Result<Vec<Event>, ApplyError> {
        check(id, spec).map_err(|e| Rejection(format!("invalid schedule {id}: {e}")))?;
        let mut out = Vec::new();
        let scheduled = match state.get_json::<Scheduled>(&Self::key(id))? {
            Some(mut old) => {
                out = Self::decide(state, id, &mut old, at, now)?;
                Scheduled { spec: spec.clone(), cursor: old.cursor.max(at), runs: old.runs }
            }
            None => Scheduled { spec: spec.clone(), cursor: at, runs: Runs::default() },
        };
        info!(schedule = %id, cron = %spec.cron, tz = %spec.time_zone, suspended = spec.suspended, "Schedule defined.");
        Self::save(state, id, &scheduled)?;
        Ok(out)
    }

    fn remove(state: &mut StateView<'_>, id: &ScheduleId) -> Result<(), ApplyError> {
        if let Some(old) = state.get_json::<Scheduled>(&Self::key(id))? {
            for run_id in old.runs.in_flight_ids() {
                state.remove(Self::run_key(&run_id));
            }
            info!(schedule = %id, "Schedule removed.");
        }
        state.remove(Self::key(id));
        Ok(())
    }

    /// A run's state from the results topic, if the run is a schedule's.
    fn observe(state: &mut StateView<'_>, run_id: &RunId, outcome: Outcome, at: TimestampMs) -> Result<(), ApplyError> {
        let Some(id) = state.get_json::<ScheduleId>(&Self::run_key(run_id))? else { return Ok(()) };
        let Some(mut scheduled) = state.get_json::<Scheduled>(&Self::key(&id))? else { return Ok(()) };
        scheduled.runs.observed(run_id, outcome, at);
        if outcome.is_finished() {
            state.remove(Self::run_key(run_id));
        }
        Self::save(state, &id, &scheduled)
    }

    /// Decides every tick of `scheduled` up to `until`, as late as they are at `now`, and returns what
    /// to publish; moves its cursor.
    fn decide(
        state: &mut StateView<'_>,
        id: &ScheduleId,
        scheduled: &mut Scheduled,
        until: TimestampMs,
        now: TimestampMs,
    ) -> Result<Vec<Event>, ApplyError> {
        if scheduled.spec.suspended {
            // Ticks while suspended are not owed: resumed, the schedule counts from the resume (the
            // cursor moves to it when the resume is read).
            return Ok(Vec::new());
        }
        // Checked when defined; a definition stored before a rule tightened is fatal, not skipped.
        let timing = check(id, &scheduled.spec).map_err(|e| {
            ApplyError::Fatal(chaoseater_schemas::Error::CorruptState {
                key: String::from_utf8_lossy(&Self::key(id)).into_owned(),
                reason: e,
            })
        })?;
        let rules = Rules {
            id,
            timing: &timing,
            concurrency: scheduled.spec.concurrency,
            starting_deadline_ms: scheduled.spec.starting_deadline_ms,
        };
        let (decisions, cursor) = advance_until(&rules, scheduled.cursor, until, now, &scheduled.runs.in_flight_ids());
        scheduled.cursor = cursor;
        let mut out = Vec::new();
        for decision in decisions {
            match decision {
                Decision::Fire { tick, replaces, .. } => {
                    for run_id in replaces {
                        warn!(schedule = %id, run = %run_id, tick = tick.0, "Replacing a run still in flight.");
                        out.push(Event::AbortRequested(AbortRequested {
                            event_id: AbortRequested::id_for(&run_id, tick),
                            occurred_at: now,
                            run_id,
                            reason: format!("replaced by the tick at {} of schedule {id}", tick.0),
                            requested_by: format!("schedule {id}"),
                        }));
                    }
                    for (index, entry) in scheduled.spec.experiments.iter().enumerate() {
                        let run_id = RunId::for_tick_entry(id, tick, index);
                        info!(schedule = %id, run = %run_id, tick = tick.0, experiment = %entry.experiment.name, "Tick fired.");
                        scheduled.runs.fired(run_id.clone(), tick);
                        state.put_json(Self::run_key(&run_id), id)?;
                        let request = RunRequested { occurred_at: now, ..run_request(id, tick, &run_id, entry) };
                        out.push(Event::RunRequested(request));
                    }
                }
                Decision::SkippedInFlight { tick, in_flight } => {
                    info!(schedule = %id, tick = tick.0, in_flight = %in_flight, "Tick skipped: a run is in flight.");
                    out.push(skipped(id, SkipReason::InFlight, tick, tick, 1, false, Some(in_flight), now));
                }
                Decision::Missed { first, last, count, truncated } => {
                    warn!(schedule = %id, first = first.0, last = last.0, count, "Ticks missed their starting deadline.");
                    let count = i64::try_from(count).unwrap_or(i64::MAX);
                    out.push(skipped(id, SkipReason::MissedDeadline, first, last, count, truncated, None, now));
                }
            }
        }
        Ok(out)
    }
}

#[allow(clippy::too_many_arguments)]
fn skipped(
    id: &ScheduleId,
    reason: SkipReason,
    first_tick: TimestampMs,
    last_tick: TimestampMs,
    count: i64,
    truncated: bool,
    in_flight: Option<RunId>,
    now: TimestampMs,
) -> Event {
    Event::ScheduleTicksSkipped(ScheduleTicksSkipped {
        event_id: ScheduleTicksSkipped::id_for(id, reason, first_tick),
        occurred_at: now,
        schedule_id: id.clone(),
        reason,
        first_tick,
        last_tick,
        count,
        truncated,
        in_flight_run_id: in_flight.map(|r| r.to_string()),
    })
}

impl Processor for Scheduler {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Schedules, Topic::Results]
    }

    /// Both topics, read up to their end before the first tick after a start: a schedule removed or
    /// paused, or a run ended, while the scheduler was down is known before it decides a tick.
    fn applied_first(&self) -> Vec<Topic> {
        vec![Topic::Schedules, Topic::Results]
    }

    fn apply(&mut self, event: &Event, origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        match event {
            Event::ScheduleCreated(e) => {
                Self::define(state, &e.schedule_id, &e.spec, e.occurred_at, self.now(origin.now)?)
            }
            Event::ScheduleUpdated(e) => {
                Self::define(state, &e.schedule_id, &e.spec, e.occurred_at, self.now(origin.now)?)
            }
            Event::ScheduleRemoved(e) => Self::remove(state, &e.schedule_id).map(|()| Vec::new()),
            Event::RunStarted(e) => {
                Self::observe(state, &e.run_id, Outcome::Running, e.occurred_at).map(|()| Vec::new())
            }
            Event::RunCompleted(e) => {
                Self::observe(state, &e.run_id, Outcome::Ended(e.status), e.occurred_at).map(|()| Vec::new())
            }
            Event::RunRejected(e) => {
                Self::observe(state, &e.run_id, Outcome::Rejected, e.occurred_at).map(|()| Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1))
    }

    fn tick(&mut self, now: TimestampMs, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let now = self.now(now)?;
        let mut out = Vec::new();
        for (key, mut scheduled) in state.scan_json::<Scheduled>(SCHEDULE.as_bytes())? {
            let id = ScheduleId::new(String::from_utf8_lossy(&key[SCHEDULE.len()..]).as_ref());
            let before = scheduled.clone();
            out.extend(Self::decide(state, &id, &mut scheduled, now, now)?);
            if scheduled != before {
                Self::save(state, &id, &scheduled)?;
            }
        }
        Ok(out)
    }
}

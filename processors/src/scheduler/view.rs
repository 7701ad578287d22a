//! The schedules and their runs as the topics tell them, folded in memory by `chaoseater schedule`:
//! definitions from the schedules topic, fired runs from the commands topic (a scheduled run's
//! experiment carries its schedule and tick as tags), and from the results topic how each ended and
//! which ticks were skipped. The same [`Runs`] fold as the scheduler's own.

use std::collections::{BTreeMap, VecDeque};

use chaoseater_schemas::events::{Event, ScheduleSpec, ScheduleTicksSkipped};
use chaoseater_schemas::ids::{RunId, ScheduleId, TimestampMs};

use super::runs::{Outcome, Runs};
use super::{SCHEDULE_TAG, TICK_TAG};

/// How many skip reports a schedule's status shows.
pub const LAST_SKIPS: usize = 5;

/// One schedule as the topics tell it.
#[derive(Debug, Clone)]
pub struct ScheduleView {
    pub id: ScheduleId,
    pub spec: ScheduleSpec,
    pub created_at: TimestampMs,
    pub updated_at: TimestampMs,
    pub requested_by: String,
    pub runs: Runs,
    /// The last [`LAST_SKIPS`] reports of skipped ticks, newest last.
    pub skips: VecDeque<ScheduleTicksSkipped>,
}

/// Every schedule the topics know, by id.
#[derive(Debug, Default)]
pub struct Schedules {
    schedules: BTreeMap<ScheduleId, ScheduleView>,
    /// Runs fired by a schedule, to route results to it.
    owners: BTreeMap<RunId, ScheduleId>,
}

impl Schedules {
    /// Applies one event of the schedules, commands or results topic; others change nothing.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::ScheduleCreated(e) => self.define(&e.schedule_id, &e.spec, e.occurred_at, &e.requested_by, true),
            Event::ScheduleUpdated(e) => self.define(&e.schedule_id, &e.spec, e.occurred_at, &e.requested_by, false),
            Event::ScheduleRemoved(e) => {
                self.schedules.remove(&e.schedule_id);
            }
            Event::RunRequested(r) => {
                let tags = &r.experiment.tags;
                let (Some(id), Some(tick)) = (tags.get(SCHEDULE_TAG), tags.get(TICK_TAG)) else { return };
                let (id, Ok(tick)) = (ScheduleId::new(id.as_str()), tick.parse::<i64>()) else { return };
                if let Some(view) = self.schedules.get_mut(&id) {
                    view.runs.fired(r.run_id.clone(), TimestampMs(tick));
                    self.owners.insert(r.run_id.clone(), id);
                }
            }
            Event::RunStarted(e) => self.observe(&e.run_id, Outcome::Running, e.occurred_at),
            Event::RunCompleted(e) => self.observe(&e.run_id, Outcome::Ended(e.status), e.occurred_at),
            Event::RunRejected(e) => self.observe(&e.run_id, Outcome::Rejected, e.occurred_at),
            Event::ScheduleTicksSkipped(s) => {
                if let Some(view) = self.schedules.get_mut(&s.schedule_id) {
                    if view.skips.iter().any(|k| k.event_id == s.event_id) {
                        return;
                    }
                    view.skips.push_back(s.clone());
                    while view.skips.len() > LAST_SKIPS {
                        view.skips.pop_front();
                    }
                }
            }
            _ => {}
        }
    }

    fn define(&mut self, id: &ScheduleId, spec: &ScheduleSpec, at: TimestampMs, by: &str, created: bool) {
        let view = self.schedules.entry(id.clone()).or_insert_with(|| ScheduleView {
            id: id.clone(),
            spec: spec.clone(),
            created_at: at,
            updated_at: at,
            requested_by: by.to_owned(),
            runs: Runs::default(),
            skips: VecDeque::new(),
        });
        if created {
            view.created_at = at;
        }
        view.spec = spec.clone();
        view.updated_at = at;
        view.requested_by = by.to_owned();
    }

    fn observe(&mut self, run_id: &RunId, outcome: Outcome, at: TimestampMs) {
        if let Some(view) = self.owners.get(run_id).and_then(|id| self.schedules.get_mut(id)) {
            view.runs.observed(run_id, outcome, at);
        }
    }

    pub fn get(&self, id: &ScheduleId) -> Option<&ScheduleView> {
        self.schedules.get(id)
    }

    /// Every schedule, by id.
    pub fn all(&self) -> impl Iterator<Item = &ScheduleView> {
        self.schedules.values()
    }
}

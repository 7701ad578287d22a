//! What a schedule does when time passes: which ticks fire, which are skipped and why. A pure function of
//! the schedule, where it left off, the time and the runs still in flight, so the scheduler processor
//! (and its tests, on a controlled clock) only store the cursor and publish what it decides.

use chaoseater_schemas::ids::{RunId, ScheduleId, TimestampMs};

use super::cron::Timing;

/// Missed ticks counted one by one up to this many; beyond it a downtime's report says "at least".
/// A `* * * * *` schedule down for a year has half a million ticks, and the report needs only the count.
pub const MAX_COUNTED_MISSES: u64 = 10_000;

/// What a tick does while the previous tick's run is still in flight: the event contract's policy.
pub use chaoseater_schemas::events::ConcurrencyPolicy as Concurrency;

/// A schedule's rules for time passing.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub id: &'a ScheduleId,
    pub timing: &'a Timing,
    pub concurrency: Concurrency,
    /// How late a tick may still start (after a downtime, or a scheduler that fell behind); later ones
    /// are skipped and reported.
    pub starting_deadline_ms: i64,
}

/// One decision about one tick (or, for a downtime, a span of ticks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Publish RunRequested with `run_id` (derived from the schedule and the tick, so firing it twice is
    /// one run); first abort `replaces`, the runs the Replace policy ends.
    Fire { tick: TimestampMs, run_id: RunId, replaces: Vec<RunId> },
    /// The Forbid policy kept this tick from running: `in_flight` is still going.
    SkippedInFlight { tick: TimestampMs, in_flight: RunId },
    /// Ticks from `first` to `last` came more than the starting deadline ago and will not run; `count`
    /// of them (at least, when `truncated`).
    Missed { first: TimestampMs, last: TimestampMs, count: u64, truncated: bool },
}

/// The decisions for every tick in (`cursor`, `now`], and the new cursor (the last tick decided, or
/// `cursor` when none came). `in_flight` are the schedule's runs not yet finished, oldest first.
pub fn advance(
    rules: &Rules<'_>,
    cursor: TimestampMs,
    now: TimestampMs,
    in_flight: &[RunId],
) -> (Vec<Decision>, TimestampMs) {
    advance_until(rules, cursor, now, now, in_flight)
}

/// As [`advance`], for the ticks in (`cursor`, `until`] only, late or not as seen at `now`: what a
/// schedule's old definition still decides when a change made at `until` is read at `now`.
pub fn advance_until(
    rules: &Rules<'_>,
    cursor: TimestampMs,
    until: TimestampMs,
    now: TimestampMs,
    in_flight: &[RunId],
) -> (Vec<Decision>, TimestampMs) {
    let until = until.min(now);
    let mut decisions = Vec::new();
    let mut in_flight = in_flight.to_vec();
    let mut last = cursor;
    // Ticks at or before this are too late to start.
    let too_late = TimestampMs(now.0.saturating_sub(rules.starting_deadline_ms.max(0))).min(until);
    let mut next = rules.timing.next_after(cursor);
    if next.is_some_and(|t| t <= too_late) {
        let first = next.expect("checked");
        let (mut count, mut latest, mut truncated) = (0u64, first, false);
        while let Some(t) = next.filter(|t| *t <= too_late) {
            if count == MAX_COUNTED_MISSES {
                truncated = true;
                break;
            }
            count += 1;
            latest = t;
            next = rules.timing.next_after(t);
        }
        if truncated {
            // Jump over the rest of the span without counting it: the first tick after `too_late`.
            latest = last_at_or_before(rules.timing, latest, too_late);
            next = rules.timing.next_after(latest);
        }
        decisions.push(Decision::Missed { first, last: latest, count, truncated });
        last = latest;
    }
    while let Some(tick) = next.filter(|t| *t <= until) {
        match (rules.concurrency, in_flight.first()) {
            (Concurrency::Forbid, Some(running)) => {
                decisions.push(Decision::SkippedInFlight { tick, in_flight: running.clone() });
            }
            (policy, _) => {
                let run_id = RunId::for_tick(rules.id, tick);
                let replaces = if policy == Concurrency::Replace { std::mem::take(&mut in_flight) } else { Vec::new() };
                decisions.push(Decision::Fire { tick, run_id: run_id.clone(), replaces });
                in_flight.push(run_id);
            }
        }
        last = tick;
        next = rules.timing.next_after(tick);
    }
    (decisions, last)
}

/// The last tick at or before `limit`, searched from `from` (a tick at or before it) by doubling steps,
/// so a long downtime costs a logarithmic number of cron evaluations, not one per tick.
fn last_at_or_before(timing: &Timing, from: TimestampMs, limit: TimestampMs) -> TimestampMs {
    let mut found = from;
    let mut step: i64 = 60_000;
    loop {
        match timing.next_after(TimestampMs(found.0.saturating_add(step).min(limit.0))) {
            Some(t) if t <= limit => {
                found = t;
                step = step.saturating_mul(2);
            }
            _ if step > 60_000 => step /= 2,
            _ => break,
        }
    }
    // Ticks between `found` and `limit` closer than a minute apart: step through them.
    while let Some(t) = timing.next_after(found).filter(|t| *t <= limit) {
        found = t;
    }
    found
}

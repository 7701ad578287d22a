use chaoseater_schemas::ids::{RunId, ScheduleId, TimestampMs};

use super::cron::{Timing, TimingError};
use super::plan::{Concurrency, Decision, MAX_COUNTED_MISSES, Rules, advance};
use super::runs::{LAST_RUNS, Outcome, Runs, parse_deadline};
use chaoseater_schemas::events::RunStatus;

const MIN: i64 = 60_000;
/// 2026-03-28T00:00:00Z.
const T0: i64 = 1_774_656_000_000;

fn rules<'a>(id: &'a ScheduleId, timing: &'a Timing, concurrency: Concurrency, deadline_min: i64) -> Rules<'a> {
    Rules { id, timing, concurrency, starting_deadline_ms: deadline_min * MIN }
}

fn fired(decisions: &[Decision]) -> Vec<i64> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Fire { tick, .. } => Some((tick.0 - T0) / MIN),
            _ => None,
        })
        .collect()
}

#[test]
fn refuses_what_is_not_a_five_field_expression_or_a_zone() {
    for expr in ["0 0 3 * * *", "@daily", "0 3 * *", ""] {
        assert!(matches!(Timing::parse(expr, "UTC"), Err(TimingError::Cron { .. })), "{expr:?}");
    }
    let err = Timing::parse("61 3 * * *", "UTC").expect_err("minute 61");
    assert!(err.to_string().contains("\"61 3 * * *\""), "{err}");
    let err = Timing::parse("0 3 * * *", "Europe/Pariss").expect_err("no such zone");
    assert_eq!(err, TimingError::TimeZone { tz: "Europe/Pariss".into() });
    assert!(err.to_string().contains("Europe/Pariss"));
}

#[test]
fn ticks_follow_the_time_zone_across_a_daylight_saving_change() {
    let paris = Timing::parse("0 3 * * *", "Europe/Paris").expect("valid");
    // 28 March 2026, 03:00 CET is 02:00 UTC; on the 29th clocks go forward, so 03:00 CEST is 01:00 UTC.
    let first = paris.next_after(TimestampMs(T0)).expect("a tick");
    assert_eq!(first.0, T0 + 2 * 60 * MIN);
    let second = paris.next_after(first).expect("a tick");
    assert_eq!(second.0, T0 + 25 * 60 * MIN);
    let utc = Timing::parse("0 3 * * *", "UTC").expect("valid");
    assert_eq!(utc.next_after(TimestampMs(T0)).expect("a tick").0, T0 + 3 * 60 * MIN);
}

#[test]
fn a_tick_fires_once_under_one_run_id_whatever_replays_it() {
    let id = ScheduleId::from("nightly");
    let timing = Timing::parse("*/10 * * * *", "UTC").expect("valid");
    let r = rules(&id, &timing, Concurrency::Allow, 5);
    let (decisions, cursor) = advance(&r, TimestampMs(T0), TimestampMs(T0 + 10 * MIN), &[]);
    assert_eq!(fired(&decisions), vec![10]);
    assert_eq!(cursor.0, T0 + 10 * MIN);
    // Asked again at the same time (a replayed batch) or a little later: nothing new.
    assert!(advance(&r, cursor, TimestampMs(T0 + 10 * MIN), &[]).0.is_empty());
    assert!(advance(&r, cursor, TimestampMs(T0 + 19 * MIN), &[]).0.is_empty());
    // A second scheduler that never saw the cursor decides the same run for the same tick.
    let (again, _) = advance(&r, TimestampMs(T0 + 5 * MIN), TimestampMs(T0 + 12 * MIN), &[]);
    assert_eq!(again, decisions);
    let Decision::Fire { run_id, .. } = &decisions[0] else { panic!("fired") };
    assert_eq!(*run_id, RunId::for_tick(&id, TimestampMs(T0 + 10 * MIN)));
    assert_ne!(*run_id, RunId::for_tick(&ScheduleId::from("other"), TimestampMs(T0 + 10 * MIN)));
}

#[test]
fn the_concurrency_policy_decides_a_tick_while_a_run_is_in_flight() {
    let id = ScheduleId::from("s");
    let timing = Timing::parse("*/10 * * * *", "UTC").expect("valid");
    let running = [RunId::from("previous")];
    let at = |policy| advance(&rules(&id, &timing, policy, 5), TimestampMs(T0), TimestampMs(T0 + 10 * MIN), &running);
    let tick = TimestampMs(T0 + 10 * MIN);
    assert_eq!(at(Concurrency::Forbid).0, vec![Decision::SkippedInFlight { tick, in_flight: running[0].clone() }]);
    assert_eq!(at(Concurrency::Forbid).1, tick, "a skipped tick is decided: it never fires later");
    assert_eq!(
        at(Concurrency::Allow).0,
        vec![Decision::Fire { tick, run_id: RunId::for_tick(&id, tick), replaces: vec![] }]
    );
    assert_eq!(
        at(Concurrency::Replace).0,
        vec![Decision::Fire { tick, run_id: RunId::for_tick(&id, tick), replaces: running.to_vec() }]
    );
    // Forbid counts the runs it fires itself: two ticks due at once fire the first only.
    let (two, _) =
        advance(&rules(&id, &timing, Concurrency::Forbid, 30), TimestampMs(T0), TimestampMs(T0 + 20 * MIN), &[]);
    assert_eq!(fired(&two), vec![10]);
    assert!(matches!(two[1], Decision::SkippedInFlight { .. }));
}

#[test]
fn after_a_downtime_ticks_inside_the_deadline_run_once_each_and_older_ones_are_reported() {
    let id = ScheduleId::from("s");
    let timing = Timing::parse("*/10 * * * *", "UTC").expect("valid");
    // Down from T0 to T0 + 65 min; the deadline is 30 min: ticks at 10, 20 and 30 are too late.
    let (decisions, cursor) =
        advance(&rules(&id, &timing, Concurrency::Allow, 30), TimestampMs(T0), TimestampMs(T0 + 65 * MIN), &[]);
    assert_eq!(
        decisions[0],
        Decision::Missed {
            first: TimestampMs(T0 + 10 * MIN),
            last: TimestampMs(T0 + 30 * MIN),
            count: 3,
            truncated: false
        }
    );
    assert_eq!(fired(&decisions), vec![40, 50, 60]);
    assert_eq!(cursor.0, T0 + 60 * MIN);
}

#[test]
fn a_long_downtime_is_reported_in_one_decision_without_a_step_per_tick() {
    let id = ScheduleId::from("s");
    let timing = Timing::parse("* * * * *", "UTC").expect("valid");
    let now = TimestampMs(T0 + 30 * 24 * 60 * MIN);
    let (decisions, cursor) = advance(&rules(&id, &timing, Concurrency::Allow, 3), TimestampMs(T0), now, &[]);
    let Decision::Missed { first, last, count, truncated } = decisions[0].clone() else { panic!("{decisions:?}") };
    assert_eq!((first.0, count, truncated), (T0 + MIN, MAX_COUNTED_MISSES, true));
    assert_eq!(last.0, now.0 - 3 * MIN, "every tick up to the deadline is skipped, none after it");
    assert_eq!(decisions.len(), 1 + 3);
    assert_eq!(cursor, now);
}

#[test]
fn a_schedules_runs_leave_flight_when_the_results_topic_ends_them_and_the_planner_sees_it() {
    let id = ScheduleId::from("s");
    let timing = Timing::parse("*/10 * * * *", "UTC").expect("valid");
    let forbid = rules(&id, &timing, Concurrency::Forbid, 30);
    let mut runs = Runs::default();
    let (first, cursor) = advance(&forbid, TimestampMs(T0), TimestampMs(T0 + 10 * MIN), &runs.in_flight_ids());
    let Decision::Fire { tick, run_id, .. } = first[0].clone() else { panic!("{first:?}") };
    runs.fired(run_id.clone(), tick);
    runs.fired(run_id.clone(), tick);
    assert_eq!(runs.in_flight_ids(), vec![run_id.clone()], "a replayed fire is one run");
    assert!(runs.observed(&run_id, Outcome::Running, TimestampMs(T0 + 10 * MIN)));
    let (second, cursor) = advance(&forbid, cursor, TimestampMs(T0 + 20 * MIN), &runs.in_flight_ids());
    assert!(matches!(&second[..], [Decision::SkippedInFlight { in_flight, .. }] if *in_flight == run_id));

    assert!(runs.observed(&run_id, Outcome::Ended(RunStatus::Completed), TimestampMs(T0 + 21 * MIN)));
    // A replay reads RunStarted again after the completion: the run stays finished.
    assert!(runs.observed(&run_id, Outcome::Running, TimestampMs(T0 + 22 * MIN)));
    assert!(runs.in_flight_ids().is_empty());
    assert!(!runs.observed(&RunId::new("someone-else"), Outcome::Running, TimestampMs(T0)), "not this schedule's");
    let (third, _) = advance(&forbid, cursor, TimestampMs(T0 + 30 * MIN), &runs.in_flight_ids());
    assert_eq!(fired(&third), vec![30]);
    let last = runs.recent().last().expect("one run");
    assert_eq!(
        (last.outcome, last.finished_at),
        (Outcome::Ended(RunStatus::Completed), Some(TimestampMs(T0 + 21 * MIN)))
    );
}

#[test]
fn a_schedule_remembers_its_last_runs_and_every_one_in_flight() {
    let mut runs = Runs::default();
    for k in 0..(LAST_RUNS as i64 + 5) {
        let run = RunId::new(format!("r{k}"));
        runs.fired(run.clone(), TimestampMs(T0 + k * MIN));
        if k != 7 && k != 14 {
            runs.observed(&run, Outcome::Rejected, TimestampMs(T0 + k * MIN + 1));
        }
    }
    // 13 finished, of which the newest 10 are kept; the two in flight are kept whatever their age.
    let recent: Vec<String> = runs.recent().map(|r| r.run_id.to_string()).collect();
    assert_eq!(recent, ["r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "r13", "r7", "r14"]);
    assert_eq!(runs.in_flight_ids(), vec![RunId::new("r7"), RunId::new("r14")]);
}

#[test]
fn a_starting_deadline_is_seconds_or_a_duration_with_units() {
    for (text, ms) in
        [("600", 600_000), ("90s", 90_000), ("10m", 600_000), ("1h30m", 5_400_000), ("0", 0), ("2d", 172_800_000)]
    {
        assert_eq!(parse_deadline(text), Ok(ms), "{text:?}");
    }
    for text in ["", "ten minutes", "10x", "m", "5m3", "-5m", "31d", "99999999999999999999"] {
        let err = parse_deadline(text).expect_err(text);
        assert!(err.contains(&format!("{text:?}")), "{err}");
    }
}

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
    // A time with milliseconds: the tick is still on the minute.
    let every = Timing::parse("* * * * *", "UTC").expect("valid");
    assert_eq!(every.next_after(TimestampMs(T0 + 857)), Some(TimestampMs(T0 + MIN)));
    assert_eq!(every.next_after(TimestampMs(T0 + MIN - 1)), Some(TimestampMs(T0 + MIN)));
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

mod processor {
    use chaoseater_schemas::bus::ApplyError;
    use chaoseater_schemas::bus::testing::Rig;
    use chaoseater_schemas::events::{
        ConcurrencyPolicy, Event, RunCompleted, RunStarted, RunStatus, ScheduleCreated, ScheduleRemoved, ScheduleSpec,
        ScheduleUpdated, ScheduledExperiment, SkipReason,
    };
    use chaoseater_schemas::experiment::{ExperimentSpec, ParamValue, RunMode};
    use chaoseater_schemas::ids::{RunId, ScheduleId, TimestampMs};
    use chaoseater_schemas::samples;

    use super::{MIN, T0};
    use crate::scheduler::view::Schedules;
    use crate::scheduler::{SCHEDULE_TAG, Scheduler, TICK_TAG};

    fn spec(cron: &str, concurrency: ConcurrencyPolicy, deadline_min: i64) -> ScheduleSpec {
        ScheduleSpec {
            cron: cron.into(),
            time_zone: "UTC".into(),
            experiments: vec![ScheduledExperiment {
                experiment: ExperimentSpec {
                    parameters: [("latency_ms".to_owned(), ParamValue::Int(10))].into(),
                    ..samples::experiment()
                },
                regions: vec![],
                mode: RunMode::Parallel,
                max_concurrent: 3,
                fail_fast: false,
                blast_radius_percent: 100.0,
                min_score: None,
            }],
            concurrency,
            starting_deadline_ms: deadline_min * MIN,
            suspended: false,
        }
    }

    fn created(id: &str, spec: ScheduleSpec, at: i64) -> Event {
        let schedule_id = ScheduleId::new(id);
        Event::ScheduleCreated(ScheduleCreated {
            event_id: ScheduleCreated::id_for(&schedule_id, TimestampMs(at)),
            occurred_at: TimestampMs(at),
            schedule_id,
            spec,
            requested_by: "test".into(),
        })
    }

    fn updated(id: &str, spec: ScheduleSpec, at: i64) -> Event {
        let schedule_id = ScheduleId::new(id);
        Event::ScheduleUpdated(ScheduleUpdated {
            event_id: ScheduleUpdated::id_for(&schedule_id, TimestampMs(at)),
            occurred_at: TimestampMs(at),
            schedule_id,
            spec,
            requested_by: "test".into(),
        })
    }

    fn started(run_id: &RunId, at: i64) -> Event {
        Event::RunStarted(RunStarted {
            event_id: RunStarted::id_for(run_id),
            occurred_at: TimestampMs(at),
            run_id: run_id.clone(),
            experiment_name: "e".into(),
            regions: vec![],
            mode: RunMode::Parallel,
        })
    }

    fn completed(run_id: &RunId, at: i64) -> Event {
        let Event::RunCompleted(sample) = samples::sample(chaoseater_schemas::events::EventKind::RunCompleted) else {
            unreachable!()
        };
        Event::RunCompleted(RunCompleted {
            event_id: RunCompleted::id_for(run_id),
            occurred_at: TimestampMs(at),
            run_id: run_id.clone(),
            status: RunStatus::Completed,
            ..sample
        })
    }

    /// Minutes after T0 of the ticks the events fired, and the kinds of everything else.
    fn summary(events: &[Event]) -> (Vec<i64>, Vec<String>) {
        let mut fired = Vec::new();
        let mut other = Vec::new();
        for e in events {
            match e {
                Event::RunRequested(r) => {
                    let tick: i64 = r.experiment.tags[TICK_TAG].parse().expect("tick tag");
                    fired.push((tick - T0) / MIN);
                }
                Event::ScheduleTicksSkipped(s) => other.push(format!("{}:{}", s.reason.as_str(), s.count)),
                e => other.push(e.kind().name().to_owned()),
            }
        }
        (fired, other)
    }

    fn rig(now: i64) -> Rig<Scheduler> {
        let mut rig = Rig::new(Scheduler::default());
        rig.now = TimestampMs(now);
        rig
    }

    #[test]
    fn a_clock_file_decides_the_ticks_and_an_unreadable_one_is_retried() {
        use chaoseater_schemas::bus::ApplyError;

        use crate::scheduler::clock::ScheduleClock;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("clock");
        let mut rig = Rig::new(Scheduler::new(ScheduleClock::File(path.clone())));
        // The runner's time, far ahead, is not the schedules' time.
        rig.now = TimestampMs(T0 + 1_000 * MIN);
        let create = created("s", spec("*/10 * * * *", ConcurrencyPolicy::Allow, 5), T0);
        let refused = rig.try_apply(create.clone()).expect_err("no clock file yet");
        assert!(matches!(&refused, ApplyError::Transient(e) if e.to_string().contains("clock")), "{refused:?}");
        std::fs::write(&path, T0.to_string()).expect("write");
        assert!(rig.apply(create).is_empty());
        assert!(rig.tick(TimestampMs(T0 + 1_000 * MIN)).is_empty(), "the file says T0");
        std::fs::write(&path, (T0 + 10 * MIN).to_string()).expect("write");
        assert_eq!(summary(&rig.tick(TimestampMs(T0 + 1_000 * MIN))).0, vec![10]);
    }

    #[test]
    fn fires_each_tick_once_with_the_derived_run_id_and_tags() {
        let mut rig = rig(T0);
        assert!(rig.apply(created("s", spec("*/10 * * * *", ConcurrencyPolicy::Allow, 5), T0)).is_empty());
        assert!(rig.tick(TimestampMs(T0 + 9 * MIN)).is_empty());
        let out = rig.tick(TimestampMs(T0 + 10 * MIN));
        let Event::RunRequested(r) = &out[0] else { panic!("{out:?}") };
        let id = ScheduleId::new("s");
        assert_eq!(r.run_id, RunId::for_tick(&id, TimestampMs(T0 + 10 * MIN)));
        assert_eq!(r.experiment.tags[SCHEDULE_TAG], "s");
        assert_eq!(r.requested_by, "schedule s");
        assert_eq!(out.len(), 1);
        assert!(rig.tick(TimestampMs(T0 + 10 * MIN)).is_empty(), "the same time again fires nothing");
        assert!(rig.tick(TimestampMs(T0 + 15 * MIN)).is_empty());
        assert_eq!(summary(&rig.tick(TimestampMs(T0 + 20 * MIN))).0, vec![20]);
    }

    #[test]
    fn forbid_skips_and_reports_while_a_run_is_in_flight_and_fires_once_it_ends() {
        let mut rig = rig(T0);
        rig.apply(created("s", spec("*/10 * * * *", ConcurrencyPolicy::Forbid, 5), T0));
        let out = rig.tick(TimestampMs(T0 + 10 * MIN));
        let Event::RunRequested(first) = &out[0] else { panic!("{out:?}") };
        rig.apply(started(&first.run_id, T0 + 10 * MIN));
        let skipped = rig.tick(TimestampMs(T0 + 20 * MIN));
        assert_eq!(summary(&skipped), (vec![], vec!["in_flight:1".to_owned()]));
        let Event::ScheduleTicksSkipped(s) = &skipped[0] else { unreachable!() };
        assert_eq!(s.in_flight_run_id.as_deref(), Some(first.run_id.as_str()));
        rig.apply(completed(&first.run_id, T0 + 25 * MIN));
        assert_eq!(summary(&rig.tick(TimestampMs(T0 + 30 * MIN))).0, vec![30]);
    }

    #[test]
    fn replace_aborts_the_run_in_flight_before_firing() {
        let mut rig = rig(T0);
        rig.apply(created("s", spec("*/10 * * * *", ConcurrencyPolicy::Replace, 5), T0));
        let out = rig.tick(TimestampMs(T0 + 10 * MIN));
        let Event::RunRequested(first) = &out[0] else { panic!("{out:?}") };
        let out = rig.tick(TimestampMs(T0 + 20 * MIN));
        let Event::AbortRequested(abort) = &out[0] else { panic!("{out:?}") };
        assert_eq!(abort.run_id, first.run_id);
        assert_eq!(summary(&out).0, vec![20]);
    }

    #[test]
    fn after_a_downtime_ticks_within_the_deadline_fire_and_older_ones_are_reported() {
        let mut rig = rig(T0);
        rig.apply(created("s", spec("*/10 * * * *", ConcurrencyPolicy::Allow, 25), T0));
        let out = rig.tick(TimestampMs(T0 + 62 * MIN));
        assert_eq!(summary(&out), (vec![40, 50, 60], vec!["missed_deadline:3".to_owned()]));
        let Event::ScheduleTicksSkipped(s) = &out[0] else { unreachable!() };
        assert_eq!(
            (s.reason, s.first_tick.0, s.last_tick.0),
            (SkipReason::MissedDeadline, T0 + 10 * MIN, T0 + 30 * MIN)
        );
    }

    #[test]
    fn an_edit_counts_from_the_edit_and_a_removal_stops_the_ticks() {
        let mut rig = rig(T0);
        rig.apply(created("s", spec("0 * * * *", ConcurrencyPolicy::Allow, 60), T0));
        // At 00:30 the schedule becomes every ten minutes: 00:10 and 00:20 are before the edit.
        rig.now = TimestampMs(T0 + 30 * MIN);
        assert!(rig.apply(updated("s", spec("*/10 * * * *", ConcurrencyPolicy::Allow, 60), T0 + 30 * MIN)).is_empty());
        assert!(rig.tick(TimestampMs(T0 + 35 * MIN)).is_empty());
        assert_eq!(summary(&rig.tick(TimestampMs(T0 + 40 * MIN))).0, vec![40]);
        // Paused, ticks pass unfired; resumed, it counts from the resume.
        let mut paused = spec("*/10 * * * *", ConcurrencyPolicy::Allow, 60);
        paused.suspended = true;
        rig.now = TimestampMs(T0 + 41 * MIN);
        rig.apply(updated("s", paused.clone(), T0 + 41 * MIN));
        assert!(rig.tick(TimestampMs(T0 + 55 * MIN)).is_empty());
        paused.suspended = false;
        rig.now = TimestampMs(T0 + 56 * MIN);
        rig.apply(updated("s", paused, T0 + 56 * MIN));
        assert_eq!(summary(&rig.tick(TimestampMs(T0 + 60 * MIN))).0, vec![60]);
        let id = ScheduleId::new("s");
        rig.apply(Event::ScheduleRemoved(ScheduleRemoved {
            event_id: ScheduleRemoved::id_for(&id, TimestampMs(T0 + 61 * MIN)),
            occurred_at: TimestampMs(T0 + 61 * MIN),
            schedule_id: id,
            requested_by: "test".into(),
        }));
        assert!(rig.tick(TimestampMs(T0 + 70 * MIN)).is_empty());
        assert!(Scheduler::schedules(&rig.store).expect("read").is_empty());
    }

    #[test]
    fn a_schedule_that_cannot_run_is_refused_before_anything_is_stored() {
        let mut rig = rig(T0);
        let mut bad = spec("0 3 * * *", ConcurrencyPolicy::Forbid, 5);
        bad.time_zone = "Mars/Olympus".into();
        let err = rig.try_apply(created("s", bad, T0)).expect_err("refused");
        assert!(matches!(&err, ApplyError::Rejected(r) if r.0.contains("Mars/Olympus")), "{err}");
        let mut bad = spec("0 3 * * *", ConcurrencyPolicy::Forbid, 5);
        bad.experiments[0].experiment.fault_type = "no_such_fault".into();
        let err = rig.try_apply(created("s", bad, T0)).expect_err("refused");
        assert!(err.to_string().contains("no_such_fault"), "{err}");
        assert!(Scheduler::schedules(&rig.store).expect("read").is_empty());
    }

    #[test]
    fn several_experiments_fire_one_run_each_per_tick_and_forbid_waits_for_all() {
        let mut rig = rig(T0);
        let mut two = spec("*/10 * * * *", ConcurrencyPolicy::Forbid, 5);
        let mut second = two.experiments[0].clone();
        second.experiment.name = "second".into();
        two.experiments.push(second);
        rig.apply(created("s", two, T0));
        let out = rig.tick(TimestampMs(T0 + 10 * MIN));
        let ids: Vec<RunId> = out
            .iter()
            .filter_map(|e| match e {
                Event::RunRequested(r) => Some(r.run_id.clone()),
                _ => None,
            })
            .collect();
        let id = ScheduleId::new("s");
        let tick = TimestampMs(T0 + 10 * MIN);
        assert_eq!(ids, vec![RunId::for_tick_entry(&id, tick, 0), RunId::for_tick_entry(&id, tick, 1)]);
        rig.apply(completed(&ids[0], T0 + 12 * MIN));
        assert_eq!(summary(&rig.tick(TimestampMs(T0 + 20 * MIN))).1, vec!["in_flight:1".to_owned()]);
        rig.apply(completed(&ids[1], T0 + 22 * MIN));
        assert_eq!(summary(&rig.tick(TimestampMs(T0 + 30 * MIN))).0, vec![30, 30]);

        // The client's fold of the same events agrees with the scheduler on the runs.
        let mut view = Schedules::default();
        view.apply(&created("s", spec("*/10 * * * *", ConcurrencyPolicy::Forbid, 5), T0));
        for e in out.iter().chain([completed(&ids[0], T0 + 12 * MIN)].iter()) {
            view.apply(e);
        }
        let runs: Vec<_> = view.get(&id).expect("known").runs.recent().map(|r| r.outcome.is_finished()).collect();
        assert_eq!(runs, vec![true, false]);
    }
}

use chaoseater_schemas::events::{Event, EventKind, FaultHeld, RegionHealthSampled, RollbackStepApplied};
use chaoseater_schemas::experiment::RollbackStrategy;
use chaoseater_schemas::ids::EventId;
use chaoseater_schemas::samples;
use proptest::prelude::*;

use super::*;

fn config(strategy: RollbackStrategy) -> RollbackConfig {
    RollbackConfig { strategy, health_check_interval_s: 1.0, timeout_seconds: 60, ..RollbackConfig::default() }
}

fn requested(outputs: &[Output]) -> Vec<(i32, f64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Request { step, percentage, .. } => Some((*step, *percentage)),
            _ => None,
        })
        .collect()
}

fn healthy(at: i64) -> Input {
    Input::Sample { at, healthy: true, error_rate: Some(0.0), detail: String::new() }
}

#[test]
fn plans_follow_the_strategy() {
    let pct = |s| plan(s, &config(s)).iter().map(|s| s.percentage).collect::<Vec<_>>();
    assert_eq!(pct(RollbackStrategy::Gradual), [20.0, 40.0, 60.0, 80.0, 100.0]);
    assert_eq!(pct(RollbackStrategy::Canary), [10.0, 100.0]);
    assert_eq!(pct(RollbackStrategy::Immediate), [100.0]);
    assert_eq!(pct(RollbackStrategy::CircuitBreaker), [100.0]);
    let three = RollbackConfig { gradual_steps: 3, ..config(RollbackStrategy::Gradual) };
    assert_eq!(plan(RollbackStrategy::Gradual, &three).last().map(|s| s.percentage), Some(100.0));
    let green = plan(RollbackStrategy::BlueGreen, &config(RollbackStrategy::BlueGreen));
    assert_eq!(green, [Step { percentage: 100.0, upstream: Some(GREEN.into()) }]);
}

#[test]
fn gradual_steps_wait_for_a_health_check_taken_after_the_interval() {
    let (mut r, first) = Rollback::start(&config(RollbackStrategy::Gradual), RollbackTrigger::DurationEnded, 0);
    assert_eq!(requested(&[first]), [(1, 20.0)]);
    assert!(r.on(Input::Applied { step: 1, at: 100 }, 100).is_empty());
    assert!(r.on(healthy(900), 900).is_empty(), "a sample before the interval is not the check");
    assert_eq!(requested(&r.on(healthy(1_100), 1_100)), [(2, 40.0)]);
    assert!(r.on(Input::Applied { step: 1, at: 1_200 }, 1_200).is_empty(), "a repeated ack changes nothing");
    for (step, at) in [(2, 2_000), (3, 4_000), (4, 6_000)] {
        assert!(r.on(Input::Applied { step, at }, at).is_empty());
        let next = r.on(healthy(at + 1_000), at + 1_000);
        assert_eq!(requested(&next), [(step + 1, 20.0 * f64::from(step + 1))]);
    }
    let done = r.on(Input::Applied { step: 5, at: 8_500 }, 8_500);
    assert_eq!(done, [Output::Completed { steps: 5, duration_ms: 8_500 }]);
    assert!(r.on(healthy(20_000), 20_000).is_empty(), "final");
}

#[test]
fn a_failed_check_pauses_and_resume_continues() {
    let (mut r, _) = Rollback::start(&config(RollbackStrategy::Canary), RollbackTrigger::Manual, 0);
    r.on(Input::Applied { step: 1, at: 0 }, 0);
    let unhealthy = Input::Sample { at: 1_000, healthy: false, error_rate: None, detail: "HTTP 503".into() };
    let paused = r.on(unhealthy, 1_000);
    assert!(matches!(&paused[..], [Output::Paused { step: 1, reason }] if reason.contains("HTTP 503")), "{paused:?}");
    assert!(r.on(healthy(2_000), 2_000).is_empty(), "paused stays paused");
    assert_eq!(requested(&r.on(Input::Resume, 3_000)), [(2, 100.0)]);
}

#[test]
fn the_failure_threshold_halts_even_without_auto_pause() {
    let cfg = RollbackConfig { auto_pause_on_error: false, ..config(RollbackStrategy::Gradual) };
    let (mut r, _) = Rollback::start(&cfg, RollbackTrigger::DurationEnded, 0);
    r.on(Input::Applied { step: 1, at: 0 }, 0);
    let unhealthy = Input::Sample { at: 1_000, healthy: false, error_rate: Some(0.0), detail: "slow".into() };
    assert_eq!(requested(&r.on(unhealthy, 1_000)), [(2, 40.0)], "without auto-pause an unhealthy check goes on");
    r.on(Input::Applied { step: 2, at: 1_000 }, 1_000);
    let errors = Input::Sample { at: 2_000, healthy: true, error_rate: Some(0.3), detail: String::new() };
    let halted = r.on(errors, 2_000);
    assert!(matches!(&halted[..], [Output::Paused { step: 2, reason }] if reason.contains("0.300")), "{halted:?}");
}

#[test]
fn blue_green_completes_on_a_healthy_green_and_switches_back_otherwise() {
    let cfg = config(RollbackStrategy::BlueGreen);
    let (mut r, first) = Rollback::start(&cfg, RollbackTrigger::DurationEnded, 0);
    assert!(matches!(&first, Output::Request { upstream: Some(u), check_after_ms: Some(1_000), .. } if u == GREEN));
    r.on(Input::Applied { step: 1, at: 0 }, 0);
    assert!(matches!(r.on(healthy(1_000), 1_000)[..], [Output::Completed { steps: 1, .. }]));

    let (mut r, _) = Rollback::start(&cfg, RollbackTrigger::DurationEnded, 0);
    r.on(Input::Applied { step: 1, at: 0 }, 0);
    let sick = Input::Sample { at: 1_000, healthy: false, error_rate: None, detail: "HTTP 503".into() };
    let back = r.on(sick, 1_000);
    assert!(matches!(&back[..], [Output::Request { step: 2, upstream: Some(u), .. }] if u == BLUE), "{back:?}");
    let failed = r.on(Input::Applied { step: 2, at: 1_100 }, 1_100);
    assert!(matches!(&failed[..], [Output::Failed { reason }] if reason.contains("switched back")), "{failed:?}");
}

#[test]
fn emergencies_roll_back_at_once_and_escalate_a_rollback_in_progress() {
    let (r, first) = Rollback::start(&config(RollbackStrategy::Gradual), RollbackTrigger::CircuitOpen, 0);
    assert_eq!(r.strategy, RollbackStrategy::Immediate);
    assert!(matches!(first, Output::Request { step: 1, percentage: 100.0, check_after_ms: None, .. }));

    let (mut r, _) = Rollback::start(&config(RollbackStrategy::Gradual), RollbackTrigger::DurationEnded, 0);
    r.on(Input::Applied { step: 1, at: 0 }, 0);
    let now = r.on(Input::Escalate, 10);
    assert_eq!(requested(&now), [(2, 100.0)]);
    assert!(matches!(r.on(Input::Applied { step: 2, at: 20 }, 20)[..], [Output::Completed { steps: 2, .. }]));
}

#[test]
fn timeouts_fail_and_a_fault_gone_early_fails_unless_at_100() {
    let (mut r, _) = Rollback::start(&config(RollbackStrategy::Gradual), RollbackTrigger::DurationEnded, 0);
    assert!(r.on(Input::Tick { now: 59_999 }, 59_999).is_empty());
    assert!(
        matches!(&r.on(Input::Tick { now: 60_000 }, 60_000)[..], [Output::Failed { reason }] if reason.contains("timed out"))
    );

    let (mut r, _) = Rollback::start(&config(RollbackStrategy::Gradual), RollbackTrigger::DurationEnded, 0);
    assert!(matches!(r.on(Input::FaultGone, 5)[..], [Output::Failed { .. }]));
    let (mut r, _) = Rollback::start(&config(RollbackStrategy::Immediate), RollbackTrigger::Abort, 0);
    assert!(matches!(r.on(Input::FaultGone, 5)[..], [Output::Completed { steps: 1, .. }]), "100% requested");
}

fn input_strategy() -> impl Strategy<Value = Input> {
    prop_oneof![
        (1..8i32, 0..20_000i64).prop_map(|(step, at)| Input::Applied { step, at }),
        (0..20_000i64, any::<bool>(), proptest::option::of(0.0..1.0f64))
            .prop_map(|(at, healthy, error_rate)| Input::Sample { at, healthy, error_rate, detail: "d".into() }),
        Just(Input::Resume),
        Just(Input::Escalate),
        Just(Input::FaultGone),
        (0..90_000i64).prop_map(|now| Input::Tick { now }),
    ]
}

fn strategy_strategy() -> impl Strategy<Value = RollbackStrategy> {
    proptest::sample::select(RollbackStrategy::ALL.to_vec())
}

fn trigger_strategy() -> impl Strategy<Value = RollbackTrigger> {
    proptest::sample::select(vec![
        RollbackTrigger::DurationEnded,
        RollbackTrigger::Abort,
        RollbackTrigger::FailureThreshold,
        RollbackTrigger::CircuitOpen,
        RollbackTrigger::Manual,
    ])
}

proptest! {
    /// Any sequence of inputs: each step is requested once, in order; percentages never shrink; the stage
    /// always points into the plan; a completed rollback requested and reached 100%; a final one is silent.
    #[test]
    fn any_sequence_keeps_the_rollback_legal(
        strategy in strategy_strategy(),
        trigger in trigger_strategy(),
        steps in 1..8i32,
        canary in 1.0..99.0f64,
        inputs in proptest::collection::vec(input_strategy(), 0..60),
    ) {
        let cfg = RollbackConfig { strategy, gradual_steps: steps, canary_percentage: canary, ..config(strategy) };
        let (mut r, first) = Rollback::start(&cfg, trigger, 0);
        let mut seen: Vec<(i32, f64)> = requested(&[first]);
        let mut now = 0;
        for input in inputs {
            now += 10;
            let was_final = r.is_final();
            let outputs = r.on(input, now);
            if was_final {
                prop_assert!(outputs.is_empty());
            }
            seen.extend(requested(&outputs));
            for output in &outputs {
                if let Output::Completed { steps, .. } = output {
                    prop_assert_eq!(*steps as usize, seen.len());
                    prop_assert_eq!(seen.last().map(|s| s.1), Some(100.0));
                    prop_assert_eq!(r.applied_percentage, 100.0);
                }
            }
            match &r.stage {
                Stage::Requested { index } | Stage::Checking { index, .. } | Stage::Paused { index, .. } => {
                    prop_assert!(*index < r.plan.len());
                    prop_assert_eq!(*index + 1, r.requested);
                }
                _ => {}
            }
        }
        for (i, pair) in seen.windows(2).enumerate() {
            prop_assert_eq!(pair[1].0, pair[0].0 + 1, "step {} requested out of order: {:?}", i, seen);
            prop_assert!(pair[1].1 >= pair[0].1, "percentages shrank: {:?}", seen);
        }
        prop_assert!(seen.iter().all(|(_, p)| *p > 0.0 && *p <= 100.0));
    }
}

type Rig = chaoseater_schemas::bus::testing::Rig<RollbackProcessor>;

/// A run with `strategy` dispatched to `region`: its fault may be in place.
fn dispatch(rig: &mut Rig, run: &str, region: &str, strategy: RollbackStrategy) {
    let Event::RegionDispatched(mut d) = samples::sample(EventKind::RegionDispatched) else { unreachable!() };
    d.run_id = RunId::new(run);
    d.region = RegionName::new(region);
    d.dispatch_id = DispatchId::for_region(&d.run_id, &d.region);
    d.experiment.rollback = config(strategy);
    rig.apply(Event::RegionDispatched(d));
}

fn sample(region: &str, at: i64, error_rate: Option<f64>) -> Event {
    let region = RegionName::new(region);
    Event::RegionHealthSampled(RegionHealthSampled {
        event_id: RegionHealthSampled::id_for(&region, TimestampMs(at)),
        occurred_at: TimestampMs(at),
        region,
        status: HealthStatus::Healthy,
        latency_ms: Some(1.0),
        http_status: Some(200),
        message: None,
        error_rate,
    })
}

fn applied(run: &str, region: &str, step: i32, at: i64) -> Event {
    Event::RollbackStepApplied(RollbackStepApplied {
        event_id: EventId::derive("test-applied", &[run, region, &step.to_string()]),
        occurred_at: TimestampMs(at),
        run_id: RunId::new(run),
        region: RegionName::new(region),
        step,
        percentage: 0.0,
    })
}

fn steps(events: &[Event]) -> Vec<(i32, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RollbackStepRequested(s) => Some((s.step, s.percentage)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_held_fault_is_rolled_back_step_by_step_from_events() {
    let mut rig = Rig::new(RollbackProcessor);
    dispatch(&mut rig, "r1", "eu", RollbackStrategy::Canary);
    let held = rig.apply(Event::FaultHeld(FaultHeld {
        event_id: EventId::derive("test-held", &["r1"]),
        occurred_at: TimestampMs(1_000),
        run_id: RunId::new("r1"),
        region: RegionName::new("eu"),
        dispatch_id: DispatchId::new("r1.eu"),
        hold_limit_ms: 60_000,
    }));
    assert!(matches!(&held[0], Event::RollbackStarted(s) if s.planned_percentages == [10.0, 100.0]));
    assert_eq!(steps(&held), [(1, 10.0)]);
    assert!(rig.apply(applied("r1", "eu", 1, 1_100)).is_empty());
    assert_eq!(steps(&rig.apply(sample("eu", 2_100, Some(0.0)))), [(2, 100.0)]);
    let done = rig.apply(applied("r1", "eu", 2, 2_200));
    assert!(matches!(&done[..], [Event::RollbackCompleted(c)] if c.steps == 2));
}

#[test]
fn the_failure_threshold_and_an_open_circuit_start_immediate_rollbacks() {
    let mut rig = Rig::new(RollbackProcessor);
    dispatch(&mut rig, "r1", "eu", RollbackStrategy::Gradual);
    dispatch(&mut rig, "r2", "us", RollbackStrategy::Gradual);
    assert!(rig.apply(sample("eu", 1_000, Some(0.05))).is_empty(), "below the 0.1 threshold");
    assert!(rig.apply(sample("eu", 1_100, None)).is_empty(), "no fault in place");
    let out = rig.apply(sample("eu", 1_200, Some(0.5)));
    assert!(matches!(&out[0], Event::RollbackStarted(s) if s.trigger == RollbackTrigger::FailureThreshold));
    assert_eq!(steps(&out), [(1, 100.0)]);
    assert!(rig.apply(sample("eu", 1_300, Some(0.5))).is_empty(), "one rollback per run and region");

    let Event::CircuitStateChanged(mut open) = samples::sample(EventKind::CircuitStateChanged) else { unreachable!() };
    open.region = RegionName::new("us");
    let out = rig.apply(Event::CircuitStateChanged(open));
    assert!(
        matches!(&out[0], Event::RollbackStarted(s) if s.trigger == RollbackTrigger::CircuitOpen && s.run_id.as_str() == "r2")
    );
    assert_eq!(steps(&out), [(1, 100.0)]);
}

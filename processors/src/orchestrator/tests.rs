use chaoseater_schemas::events::{Event, RegionRegistered, RegionStatus, RunStatus};
use chaoseater_schemas::experiment::RunMode;
use chaoseater_schemas::ids::{DispatchId, EventId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::samples;
use proptest::prelude::*;

use super::*;

fn entry(name: &str, priority: i32) -> RegionEntry {
    RegionEntry { name: RegionName::new(name), endpoint: format!("http://{name}"), priority }
}

fn names(entries: &[RegionEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn choice_and_order_follow_the_mode() {
    let regions = vec![entry("a", 1), entry("b", 5), entry("c", 3), entry("d", 2), entry("e", 4)];
    assert_eq!(names(&choose(RunMode::Sequential, regions.clone(), false, 0.0)), ["b", "e", "c", "d", "a"]);
    assert_eq!(names(&choose(RunMode::BlastRadius, regions.clone(), false, 40.0)), ["a", "d"]);
    assert_eq!(names(&choose(RunMode::BlastRadius, regions.clone(), false, 10.0)), ["a"], "at least one");
    assert_eq!(names(&choose(RunMode::BlastRadius, regions.clone(), false, 100.0)).len(), 5);
    assert_eq!(names(&choose(RunMode::Parallel, regions.clone(), false, 0.0)), ["a", "b", "c", "d", "e"]);
    assert_eq!(names(&choose(RunMode::Parallel, regions, true, 0.0)), ["b", "e", "c", "d", "a"]);
}

type Rig = chaoseater_schemas::bus::testing::Rig<Orchestrator>;

/// An orchestrator that knows `regions` (name, priority).
fn rig(regions: &[(&str, i32)]) -> Rig {
    let mut rig = Rig::new(Orchestrator);
    for (name, priority) in regions {
        rig.apply(Event::RegionRegistered(RegionRegistered {
            event_id: EventId::derive("test", &[name]),
            occurred_at: TimestampMs(0),
            region: RegionName::new(*name),
            endpoint: format!("http://{name}"),
            priority: *priority,
            metadata: Default::default(),
        }));
    }
    rig
}

fn request(run: &str, mode: RunMode, regions: &[&str]) -> Event {
    let Event::RunRequested(mut r) = samples::sample(chaoseater_schemas::events::EventKind::RunRequested) else {
        unreachable!("sample kind")
    };
    r.run_id = RunId::new(run);
    r.experiment.layer = chaoseater_schemas::experiment::Layer::Infrastructure;
    r.experiment.fault_type = "network_latency".into();
    r.experiment.parameters =
        chaoseater_schemas::faults::validate(r.experiment.layer, "network_latency", &serde_json::Map::new())
            .expect("defaults are valid");
    r.mode = mode;
    r.regions = regions.iter().map(|n| RegionName::new(*n)).collect();
    r.max_concurrent = 2;
    r.fail_fast = true;
    r.blast_radius_percent = 50.0;
    Event::RunRequested(r)
}

fn result(run: &str, region: &str, status: RegionStatus, score: f64) -> Event {
    let Event::RegionResult(mut r) = samples::sample(chaoseater_schemas::events::EventKind::RegionResult) else {
        unreachable!("sample kind")
    };
    r.run_id = RunId::new(run);
    r.region = RegionName::new(region);
    r.dispatch_id = dispatch_id(&r.run_id, &r.region);
    r.event_id = EventId::derive("RegionResult", &[r.dispatch_id.as_str()]);
    r.status = status;
    r.resilience_score = (status == RegionStatus::Completed).then_some(score);
    Event::RegionResult(r)
}

fn dispatched(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| if let Event::RegionDispatched(d) = e { Some(d.region.to_string()) } else { None })
        .collect()
}

fn completed(events: &[Event]) -> Option<&chaoseater_schemas::events::RunCompleted> {
    events.iter().find_map(|e| if let Event::RunCompleted(c) = e { Some(c) } else { None })
}

#[test]
fn parallel_keeps_max_concurrent_in_flight_and_reports_once() {
    let mut rig = rig(&[("a", 1), ("b", 2), ("c", 3)]);
    let out = rig.apply(request("r1", RunMode::Parallel, &[]));
    assert!(matches!(out[0], Event::RunStarted(_)), "{out:?}");
    assert_eq!(dispatched(&out), ["c", "b"], "all regions, by priority, two at a time");
    let out = rig.apply(result("r1", "c", RegionStatus::Completed, 80.0));
    assert_eq!(dispatched(&out), ["a"]);
    assert!(rig.apply(result("r1", "c", RegionStatus::Completed, 80.0)).is_empty(), "duplicate result ignored");
    assert!(rig.apply(request("r1", RunMode::Parallel, &[])).is_empty(), "replayed request ignored");
    rig.apply(result("r1", "a", RegionStatus::Failed, 0.0));
    let out = rig.apply(result("r1", "b", RegionStatus::Completed, 60.0));
    let done = completed(&out).expect("run completed");
    assert_eq!(done.status, RunStatus::Failed);
    let report = &done.report;
    assert_eq!((report.regions_total, report.regions_succeeded), (3, 2));
    assert!((report.mean_score - 140.0 / 3.0).abs() < 1e-9, "failed regions count as 0");
    assert_eq!(report.max_region.as_ref().map(RegionName::as_str), Some("c"));
    assert_eq!(report.min_region.as_ref().map(RegionName::as_str), Some("a"));
}

#[test]
fn sequential_fail_fast_stops_after_the_first_failure() {
    let mut rig = rig(&[("a", 1), ("b", 2), ("c", 3)]);
    let out = rig.apply(request("r2", RunMode::Sequential, &["a", "b", "c"]));
    assert_eq!(dispatched(&out), ["c"]);
    let out = rig.apply(result("r2", "c", RegionStatus::Failed, 0.0));
    let done = completed(&out).expect("stopped");
    assert_eq!(done.report.regions_total, 1);
    assert_eq!(done.report.regions.len(), 3, "skipped regions listed");
    assert!(done.report.regions[1].message.as_deref().is_some_and(|m| m.contains("fail_fast")));
}

#[test]
fn blast_radius_abort_and_rejections() {
    let mut rig = rig(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
    let out = rig.apply(request("r3", RunMode::BlastRadius, &[]));
    assert_eq!(dispatched(&out), ["a", "b"], "floor(4 · 50%) = 2, lowest priority first");

    let out = rig.apply(request("r4", RunMode::Sequential, &[]));
    assert_eq!(dispatched(&out), ["d"]);
    let Event::AbortRequested(mut abort) = samples::sample(chaoseater_schemas::events::EventKind::AbortRequested)
    else {
        unreachable!("sample kind")
    };
    abort.run_id = RunId::new("r4");
    assert!(completed(&rig.apply(Event::AbortRequested(abort))).is_none(), "waits for the region in flight");
    let out = rig.apply(result("r4", "d", RegionStatus::Aborted, 0.0));
    assert_eq!(completed(&out).map(|c| c.status), Some(RunStatus::Aborted));

    // A region nobody registers: the run waits REGION_WAIT_MS, then is rejected, once.
    assert!(rig.apply(request("r5", RunMode::Parallel, &["a", "mars"])).is_empty(), "waits for the region");
    assert!(rig.tick(TimestampMs::now()).is_empty(), "not yet");
    let out = rig.tick(TimestampMs(TimestampMs::now().0 + REGION_WAIT_MS + 1));
    assert!(matches!(&out[..], [Event::RunRejected(r)] if r.reason.contains("\"mars\"")), "{out:?}");
    assert!(rig.apply(request("r5", RunMode::Parallel, &["a", "mars"])).is_empty(), "rejected once");

    // A region registered just after the request: the waiting run starts then.
    assert!(rig.apply(request("r7", RunMode::Parallel, &["venus"])).is_empty());
    let out = rig.apply(Event::RegionRegistered(RegionRegistered {
        event_id: EventId::derive("test", &["venus"]),
        occurred_at: TimestampMs(0),
        region: RegionName::new("venus"),
        endpoint: "http://venus".into(),
        priority: 0,
        metadata: Default::default(),
    }));
    assert_eq!(dispatched(&out), ["venus"]);
    assert!(rig.tick(TimestampMs(TimestampMs::now().0 + REGION_WAIT_MS + 1)).is_empty(), "no longer waiting");
    let Event::RunRequested(mut bad) = request("r6", RunMode::Parallel, &[]) else { unreachable!("request") };
    bad.experiment.parameters.insert("loss_rate".into(), chaoseater_schemas::experiment::ParamValue::Float(7.0));
    bad.experiment.fault_type = "packet_loss".into();
    bad.experiment.layer = chaoseater_schemas::experiment::Layer::Infrastructure;
    let out = rig.apply(Event::RunRequested(bad));
    assert!(matches!(&out[..], [Event::RunRejected(r)] if r.reason.contains("loss_rate")), "{out:?}");
}

fn arb_mode() -> impl Strategy<Value = RunMode> {
    prop_oneof![Just(RunMode::Parallel), Just(RunMode::Sequential), Just(RunMode::BlastRadius)]
}

proptest! {
    /// Any order of results, duplicates and an abort at any point: never more in flight than allowed, no
    /// region dispatched twice, blast radius exact, and exactly one completion, with nothing in flight.
    #[test]
    fn saga_invariants(
        n in 1usize..8,
        mode in arb_mode(),
        max_concurrent in 1usize..4,
        percent in 1.0f64..100.0,
        fail_fast in any::<bool>(),
        script in proptest::collection::vec((0usize..8, 0u8..3, any::<bool>()), 0..40),
        abort_at in proptest::option::of(0usize..40),
    ) {
        let regions: Vec<RegionEntry> = (0..n).map(|i| entry(&format!("r{i}"), (i * 7 % 5) as i32)).collect();
        let chosen = choose(mode, regions, true, percent);
        if mode == RunMode::BlastRadius {
            prop_assert_eq!(chosen.len(), ((n as f64 * percent / 100.0).floor() as usize).max(1).min(n));
        }
        let run_id = RunId::new("p");
        let mut saga = Saga {
            run_id: run_id.clone(),
            experiment: match samples::sample(chaoseater_schemas::events::EventKind::RunRequested) {
                Event::RunRequested(r) => r.experiment,
                _ => unreachable!("sample kind"),
            },
            mode,
            max_concurrent,
            fail_fast,
            regions: chosen.iter().map(|e| SagaRegion { name: e.name.clone(), priority: e.priority, state: RegionState::Pending }).collect(),
            started_at_ms: 0,
            aborted: None,
            completed: false,
        };
        let limit = if mode == RunMode::Sequential { 1 } else { max_concurrent };
        let mut dispatched_once = std::collections::HashSet::new();
        let mut completions = 0;
        let mut check = |steps: Vec<Step>, saga: &Saga| -> Result<(), TestCaseError> {
            for step in steps {
                match step {
                    Step::Dispatch(r) => prop_assert!(dispatched_once.insert(r.to_string()), "dispatched twice"),
                    Step::Complete => completions += 1,
                }
            }
            let in_flight = saga.regions.iter().filter(|r| matches!(r.state, RegionState::Dispatched { .. })).count();
            prop_assert!(in_flight <= limit);
            Ok(())
        };
        let steps = saga.advance(0);
        check(steps, &saga)?;
        for (i, (pick, status, duplicate)) in script.into_iter().enumerate() {
            if abort_at == Some(i) {
                saga.abort("test");
                let steps = saga.advance(0);
                check(steps, &saga)?;
            }
            let in_flight: Vec<RegionName> = saga.regions.iter().filter(|r| matches!(r.state, RegionState::Dispatched { .. })).map(|r| r.name.clone()).collect();
            if in_flight.is_empty() { continue; }
            let region = in_flight[pick % in_flight.len()].clone();
            let status = [RegionStatus::Completed, RegionStatus::Failed, RegionStatus::Aborted][status as usize];
            let id = dispatch_id(&run_id, &region);
            prop_assert!(saga.record(&region, &id, status, Some(50.0), 1, None));
            if duplicate {
                prop_assert!(!saga.record(&region, &id, status, Some(50.0), 1, None), "a duplicate is not recorded");
                prop_assert!(!saga.record(&region, &DispatchId::new("other"), status, None, 1, None));
            }
            let steps = saga.advance(0);
            check(steps, &saga)?;
        }
        prop_assert!(completions <= 1);
        if completions == 1 {
            prop_assert!(saga.completed);
            let settled = saga.regions.iter().all(|r| matches!(r.state, RegionState::Done { .. } | RegionState::Skipped { .. }));
            prop_assert!(settled, "completed with regions unsettled");
        }
    }
}

fn rejection(events: &[Event]) -> Option<String> {
    events.iter().find_map(|e| if let Event::RunRejected(r) = e { Some(r.reason.clone()) } else { None })
}

#[test]
fn non_finite_rollback_settings_are_rejected_naming_the_field() {
    for (i, bad) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY].into_iter().enumerate() {
        let mut rig = rig(&[("eu", 1)]);
        let Event::RunRequested(mut r) = request(&format!("nan-{i}"), RunMode::Parallel, &["eu"]) else {
            unreachable!()
        };
        r.experiment.rollback.health_check_interval_s = bad;
        let reason = rejection(&rig.apply(Event::RunRequested(r.clone()))).expect("rejected");
        assert!(reason.contains("rollback.health_check_interval"), "{reason}");
        r.run_id = RunId::new(format!("canary-{i}"));
        r.experiment.rollback.health_check_interval_s = 5.0;
        r.experiment.rollback.canary_percentage = bad;
        let reason = rejection(&rig.apply(Event::RunRequested(r))).expect("rejected");
        assert!(reason.contains("rollback.canary_percentage"), "{reason}");
    }
}

#[test]
fn what_every_agent_refuses_is_rejected_before_dispatch() {
    let mut rig = rig(&[("eu", 1)]);
    type Change = fn(&mut RunRequested);
    let cases: [(&str, Change); 3] = [
        ("duration", |r| r.experiment.duration_ms = 1_000_000_000),
        ("rollback.timeout_seconds", |r| r.experiment.rollback.timeout_seconds = -5),
        ("rollback.gradual_steps", |r| r.experiment.rollback.gradual_steps = 0),
    ];
    for (i, (field, change)) in cases.into_iter().enumerate() {
        let Event::RunRequested(mut r) = request(&format!("refused-{i}"), RunMode::Parallel, &["eu"]) else {
            unreachable!()
        };
        change(&mut r);
        let out = rig.apply(Event::RunRequested(r));
        assert!(dispatched(&out).is_empty(), "{field}: nothing dispatched");
        let reason = rejection(&out).expect("rejected");
        assert!(reason.contains(field), "{field}: {reason}");
    }
}

#[test]
fn a_control_character_fault_type_gives_a_short_rejection_and_a_bad_run_id_goes_to_the_dlq() {
    let mut rig = rig(&[("eu", 1)]);
    let Event::RunRequested(mut r) = request("ctl", RunMode::Parallel, &["eu"]) else { unreachable!() };
    r.experiment.fault_type = "\u{1}".repeat(250_000);
    let reason = rejection(&rig.apply(Event::RunRequested(r.clone()))).expect("rejected");
    assert!(reason.contains("fault_type") && reason.len() < 1_000, "{} bytes", reason.len());
    r.run_id = RunId::new("\u{7}".repeat(300_000));
    match rig.try_apply(Event::RunRequested(r)) {
        Err(chaoseater_schemas::bus::ApplyError::Rejected(why)) => assert!(why.0.len() < 1_000, "{}", why.0.len()),
        other => panic!("expected a rejection for the DLQ, got {other:?}"),
    }
}

//! The coordinator on the test rig: samples interleaved and never two on one region, measured outcomes
//! (failed samples included), aborts, refusals, and a restart from the committed state.

use chaoseater_schemas::bus::testing::Rig;
use chaoseater_schemas::events::{
    AbSide, AbTestConcluded, AbTestRequested, AbTestStatus, AbVariant, AbVerdict, AbortRequested, AggregateReport,
    Event, EventKind, RegionStatus, RunCompleted, RunRejected, RunRequested, RunStatus,
};
use chaoseater_schemas::experiment::{ExperimentSpec, Layer, RollbackConfig};
use chaoseater_schemas::ids::{EventId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::samples;

use super::AbCoordinator;

fn experiment(duration_ms: i64) -> ExperimentSpec {
    ExperimentSpec {
        name: "corrupt".into(),
        layer: Layer::Data,
        fault_type: "data_corruption".into(),
        parameters: chaoseater_schemas::faults::validate(Layer::Data, "data_corruption", &serde_json::Map::new())
            .expect("defaults are valid"),
        duration_ms,
        rollback: RollbackConfig::default(),
        tags: Default::default(),
    }
}

fn request(id: &str, regions_a: &[&str], regions_b: &[&str], n: i32) -> AbTestRequested {
    let regions = |names: &[&str]| names.iter().map(|n| RegionName::new(*n)).collect();
    let run_id = RunId::new(id);
    AbTestRequested {
        event_id: AbTestRequested::id_for(&run_id),
        occurred_at: TimestampMs(1),
        run_id,
        experiment: experiment(1_000),
        variant_a: AbVariant { label: "none".into(), regions: regions(regions_a), experiment: None },
        variant_b: AbVariant { label: "validate".into(), regions: regions(regions_b), experiment: None },
        samples_per_variant: n,
        metrics: Vec::new(),
        confidence: 0.98,
        tolerance: 0.25,
        alpha: None,
        requested_by: "test".into(),
    }
}

fn started(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| if let Event::RunRequested(r) = e { Some(r.run_id.to_string()) } else { None })
        .collect()
}

fn concluded(events: &[Event]) -> Option<AbTestConcluded> {
    events.iter().find_map(|e| if let Event::AbTestConcluded(c) = e { Some(c.clone()) } else { None })
}

/// A region's result for a sample run, with `score` and the sample metrics' shape.
fn result(run: &str, region: &str, status: RegionStatus, score: f64) -> Event {
    let Event::RegionResult(mut r) = samples::sample(EventKind::RegionResult) else { unreachable!("sample kind") };
    r.run_id = RunId::new(run);
    r.region = RegionName::new(region);
    r.event_id = EventId::derive("RegionResult", &[run, region]);
    r.status = status;
    r.resilience_score = (status == RegionStatus::Completed).then_some(score);
    if status != RegionStatus::Completed {
        r.metrics = None;
    } else if let Some(m) = r.metrics.as_mut() {
        m.latency_p95_ms = 200.0 - score;
    }
    Event::RegionResult(r)
}

fn completed(run: &str, status: RunStatus, mean_score: f64) -> Event {
    let run_id = RunId::new(run);
    Event::RunCompleted(RunCompleted {
        event_id: RunCompleted::id_for(&run_id),
        occurred_at: TimestampMs(2),
        run_id,
        experiment_name: "corrupt".into(),
        status,
        report: AggregateReport {
            regions_total: 1,
            regions_succeeded: i32::from(status == RunStatus::Completed),
            success_rate: 1.0,
            mean_score,
            min_region: None,
            min_score: None,
            max_region: None,
            max_score: None,
            duration_ms: 1_000,
            regions: Vec::new(),
        },
    })
}

/// Runs sample `run` in `region` to completion with `score`; returns what the coordinator published.
fn finish(rig: &mut Rig<AbCoordinator>, run: &str, region: &str, score: f64) -> Vec<Event> {
    assert!(rig.apply(result(run, region, RegionStatus::Completed, score)).is_empty());
    rig.apply(completed(run, RunStatus::Completed, score))
}

#[test]
fn disjoint_variants_run_a_pair_at_a_time_interleaved_and_conclude_with_the_judgement() {
    let mut rig = Rig::new(AbCoordinator);
    let out = rig.apply(Event::AbTestRequested(request("t1", &["us"], &["eu"], 6)));
    assert_eq!(started(&out), ["t1.a1", "t1.b1"], "a pair at once: their regions are disjoint");
    let Event::RunRequested(first) = &out[0] else { unreachable!() };
    assert_eq!(first.regions, [RegionName::new("us")]);
    assert_eq!(first.experiment.tags.get("ab_variant").map(String::as_str), Some("A"));
    assert_eq!(first.event_id, RunRequested::id_for(&first.run_id));

    let mut all = Vec::new();
    for number in 1..=6 {
        // B holds up far better under the fault than A.
        let a = finish(&mut rig, &format!("t1.a{number}"), "us", 40.0 + number as f64);
        let b = finish(&mut rig, &format!("t1.b{number}"), "eu", 90.0 - number as f64);
        if number < 6 {
            assert_eq!(started(&a), [format!("t1.a{}", number + 1)]);
            assert_eq!(started(&b), [format!("t1.b{}", number + 1)]);
        }
        all.extend(a);
        all.extend(b);
    }
    let report = concluded(&all).expect("concluded after the last sample");
    assert_eq!(report.status, AbTestStatus::Concluded);
    assert_eq!(report.samples.len(), 12);
    let order: Vec<(AbSide, i32)> = report.samples.iter().map(|s| (s.variant, s.number)).collect();
    assert_eq!(order[..4], [(AbSide::A, 1), (AbSide::B, 1), (AbSide::A, 2), (AbSide::B, 2)]);
    let judgement = report.judgement.expect("judged");
    let score = &judgement.metrics[0];
    assert_eq!(score.metric, "resilience_score");
    assert_eq!(score.samples_a, [41.0, 42.0, 43.0, 44.0, 45.0, 46.0]);
    // Six against six, all apart: p = 0.005, below the 2% of 98% confidence (four against four give 0.03).
    assert!(score.p_value < 0.01, "{score:?}");
    assert_eq!(judgement.verdict, AbVerdict::BBetter, "{judgement:?}");
    // Latency p95 follows the score down: lower is better there, so B is better on it too.
    let p95 = judgement.metrics.iter().find(|m| m.metric == "latency_p95_ms").expect("p95 judged");
    assert!(p95.hl_estimate < 0.0);
    assert_eq!(report.event_id, AbTestConcluded::id_for(&RunId::new("t1")));
}

/// Samples scored with different versions of the formula (an agent upgraded mid-test) are not judged
/// against each other: the test fails and says why.
#[test]
fn samples_of_different_score_versions_fail_the_test_instead_of_being_judged() {
    let mut rig = Rig::new(AbCoordinator);
    rig.apply(Event::AbTestRequested(request("t9", &["us"], &["eu"], 3)));
    let mut all = Vec::new();
    for number in 1..=3 {
        all.extend(finish(&mut rig, &format!("t9.a{number}"), "us", 40.0));
        // B's agent still runs the first formula.
        let Event::RegionResult(mut r) = result(&format!("t9.b{number}"), "eu", RegionStatus::Completed, 90.0) else {
            unreachable!()
        };
        r.score_version = 1;
        assert!(rig.apply(Event::RegionResult(r)).is_empty());
        all.extend(rig.apply(completed(&format!("t9.b{number}"), RunStatus::Completed, 90.0)));
    }
    let report = concluded(&all).expect("concluded");
    assert_eq!(report.status, AbTestStatus::Failed);
    assert!(report.judgement.is_none());
    assert!(report.reason.as_deref().is_some_and(|r| r.contains("different score versions")), "{report:?}");
    assert_eq!(report.samples[0].values.get("score_version"), Some(&2.0));
}

#[test]
fn variants_sharing_regions_run_one_sample_at_a_time_and_tests_share_regions_in_turn() {
    let mut rig = Rig::new(AbCoordinator);
    let mut shared = request("t2", &["eu"], &["eu"], 3);
    shared.variant_b.experiment = Some(Box::new(experiment(2_000)));
    assert_eq!(started(&rig.apply(Event::AbTestRequested(shared))), ["t2.a1"]);
    // A second test on the same region waits for it.
    assert!(started(&rig.apply(Event::AbTestRequested(request("t3", &["eu"], &["us"], 3)))).is_empty());
    let out = finish(&mut rig, "t2.a1", "eu", 50.0);
    assert_eq!(started(&out), ["t2.b1"], "the test that holds its turn goes on first");
    let Event::RunRequested(b1) = &out[0] else { unreachable!() };
    assert_eq!(b1.experiment.duration_ms, 2_000, "B runs its own experiment");
    let mut out = Vec::new();
    for run in ["t2.b1", "t2.a2", "t2.b2", "t2.a3", "t2.b3"] {
        out = finish(&mut rig, run, "eu", 50.0);
    }
    assert!(concluded(&out).is_some());
    assert_eq!(started(&out), ["t3.a1", "t3.b1"], "the waiting test starts once the region is free");
}

#[test]
fn a_failed_sample_is_measured_an_abort_stops_the_test_and_a_refusal_fails_it() {
    let mut rig = Rig::new(AbCoordinator);
    rig.apply(Event::AbTestRequested(request("t4", &["us"], &["eu"], 3)));
    // A failed region: a measured outcome, scored 0 by the aggregate rules, never dropped.
    rig.apply(result("t4.a1", "us", RegionStatus::Failed, 0.0));
    rig.apply(completed("t4.a1", RunStatus::Failed, 0.0));
    let abort = AbortRequested {
        event_id: AbortRequested::id_for(&RunId::new("t4"), TimestampMs(5)),
        occurred_at: TimestampMs(5),
        run_id: RunId::new("t4"),
        reason: "enough".into(),
        requested_by: "sre".into(),
    };
    let out = rig.apply(Event::AbortRequested(abort.clone()));
    let aborted: Vec<&str> = out
        .iter()
        .filter_map(|e| if let Event::AbortRequested(a) = e { Some(a.run_id.as_str()) } else { None })
        .collect();
    assert_eq!(aborted, ["t4.b1", "t4.a2"], "the samples still running are aborted");
    assert!(rig.apply(Event::AbortRequested(abort)).is_empty(), "a second abort changes nothing");
    rig.apply(completed("t4.a2", RunStatus::Aborted, 0.0));
    let out = rig.apply(completed("t4.b1", RunStatus::Aborted, 0.0));
    assert!(started(&out).is_empty());
    let report = concluded(&out).expect("concluded once nothing runs");
    assert_eq!(report.status, AbTestStatus::Aborted);
    assert!(report.judgement.is_none());
    let failed = &report.samples[0];
    assert_eq!((failed.status, failed.values.get("resilience_score")), (RunStatus::Failed, Some(&0.0)));

    rig.apply(Event::AbTestRequested(request("t5", &["us"], &["eu"], 3)));
    let out = rig.apply(Event::RunRejected(RunRejected {
        event_id: RunRejected::id_for(&RunId::new("t5.a1")),
        occurred_at: TimestampMs(3),
        run_id: RunId::new("t5.a1"),
        reason: "unknown region \"us\"".into(),
    }));
    assert!(out.is_empty(), "B1 still runs");
    let report = concluded(&rig.apply(completed("t5.b1", RunStatus::Completed, 80.0))).expect("concluded");
    assert_eq!(report.status, AbTestStatus::Failed);
    assert!(report.reason.as_deref().is_some_and(|r| r.contains("unknown region")), "{report:?}");
}

#[test]
fn bad_requests_from_other_systems_get_a_run_rejected_naming_the_field() {
    let mut rig = Rig::new(AbCoordinator);
    let cases: Vec<(AbTestRequested, &str)> = vec![
        (request("bad1", &["us"], &["eu"], 2), "samples_per_variant"),
        (request("bad2", &["eu"], &["eu"], 3), "identical"),
        (request("bad3", &["eu", "us"], &["eu"], 3), "overlap"),
        (
            {
                let mut r = request("bad4", &["us"], &["eu"], 3);
                r.confidence = 1.0;
                r
            },
            "confidence",
        ),
        (
            {
                let mut r = request("bad5", &["us"], &["eu"], 3);
                r.metrics = vec![chaoseater_schemas::events::AbMetricSpec {
                    name: "vibes".into(),
                    direction: chaoseater_schemas::events::AbDirection::HigherIsBetter,
                }];
                r
            },
            "unknown metric",
        ),
    ];
    for (bad, needle) in cases {
        let id = bad.run_id.clone();
        let out = rig.apply(Event::AbTestRequested(bad.clone()));
        let [Event::RunRejected(rejected)] = out.as_slice() else { panic!("{id}: {out:?}") };
        assert_eq!(rejected.run_id, id);
        assert!(rejected.reason.contains(needle), "{id}: {}", rejected.reason);
        assert!(rig.apply(Event::AbTestRequested(bad)).is_empty(), "rejected once");
    }
}

#[test]
fn a_restarted_coordinator_resumes_from_its_store_without_starting_a_sample_twice() {
    let mut rig = Rig::new(AbCoordinator);
    let request = request("t6", &["us"], &["eu"], 3);
    rig.apply(Event::AbTestRequested(request.clone()));
    finish(&mut rig, "t6.a1", "us", 10.0);
    // A new coordinator over the same store (what a SIGKILL and restart leave), and the request and a
    // result read again from before the committed offsets.
    rig.processor = AbCoordinator;
    assert!(rig.apply(Event::AbTestRequested(request)).is_empty());
    assert!(finish(&mut rig, "t6.a1", "us", 10.0).is_empty(), "a replayed completion starts nothing");
    let mut started_runs = Vec::new();
    for run in ["t6.b1", "t6.a2", "t6.b2", "t6.a3", "t6.b3"] {
        let region = if run.contains(".a") { "us" } else { "eu" };
        let out = finish(&mut rig, run, region, 20.0);
        started_runs.extend(started(&out));
        if run == "t6.b3" {
            assert_eq!(concluded(&out).expect("concluded").samples.len(), 6);
        }
    }
    assert_eq!(started_runs, ["t6.b2", "t6.a3", "t6.b3"], "each sample started once, in turn");
}

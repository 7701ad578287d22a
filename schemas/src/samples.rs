//! Deterministic example events, one per type: the fixtures of the golden-bytes and interop tests, the
//! benchmarks, and `chaoseater schemas --samples`. Changing one changes a golden file on purpose.

use std::collections::BTreeMap;

use crate::events::*;
use crate::experiment::{ExperimentSpec, Layer, ParamValue, RollbackConfig, RollbackStrategy, RunMode};
use crate::ids::{DispatchId, EventId, RegionName, RunId, ScheduleId, TimestampMs};

const AT: TimestampMs = TimestampMs(1_767_225_600_000); // 2026-01-01T00:00:00Z

fn run() -> RunId {
    RunId::new("7d3c1a52-0d4e-4b9a-9a55-0c1f3e2b8a01")
}

fn region(name: &str) -> RegionName {
    RegionName::new(name)
}

/// A network-latency experiment with a gradual rollback and one tag.
pub fn experiment() -> ExperimentSpec {
    ExperimentSpec {
        name: "latency-eu".into(),
        layer: Layer::Infrastructure,
        fault_type: "network_latency".into(),
        parameters: BTreeMap::from([
            ("latency_ms".to_owned(), ParamValue::Int(100)),
            ("jitter_ms".to_owned(), ParamValue::Int(20)),
            ("hosts".to_owned(), ParamValue::List(vec!["model".into(), "features".into()])),
            ("note".to_owned(), ParamValue::Text("sample".into())),
            ("ratio".to_owned(), ParamValue::Float(0.25)),
            ("strict".to_owned(), ParamValue::Bool(true)),
        ]),
        duration_ms: 2_000,
        rollback: RollbackConfig { strategy: RollbackStrategy::Gradual, ..RollbackConfig::default() },
        tags: BTreeMap::from([("team".to_owned(), "ml-platform".to_owned())]),
    }
}

/// Version-1 region metrics (the fields version 2 added are null).
fn metrics_v1() -> RegionMetrics {
    RegionMetrics {
        pipeline_downtime_s: 1.5,
        recovery_time_s: Some(0.75),
        accuracy_degradation: 2.5,
        error_count: 3,
        requests_total: 400,
        latency_p50_ms: 104.0,
        latency_p95_ms: 121.5,
        latency_p99_ms: 130.25,
        baseline_accuracy: 0.93,
        baseline_latency_p50_ms: 3.5,
        baseline_availability: 1.0,
        ..RegionMetrics::default()
    }
}

/// The sample of one event type.
pub fn sample(kind: EventKind) -> Event {
    let id = EventId::derive(kind.name(), &["sample"]);
    let metrics = RegionMetrics {
        slo_latency_ms: Some(52.5),
        slo_latency_quantile: Some(0.99),
        latency_within_objective: Some(0.125),
        slow_count: Some(35),
        coverage: Some(0.975),
        accuracy_degradation_low: Some(0.5),
        accuracy_degradation_high: Some(4.5),
        baseline_latency_p95_ms: Some(4.25),
        baseline_latency_p99_ms: Some(5.0),
        ..metrics_v1()
    };
    match kind {
        EventKind::RunRequested => Event::RunRequested(RunRequested {
            event_id: RunRequested::id_for(&run()),
            occurred_at: AT,
            run_id: run(),
            experiment: experiment(),
            regions: vec![region("eu-west"), region("us-east")],
            mode: RunMode::Parallel,
            max_concurrent: 3,
            fail_fast: false,
            blast_radius_percent: 100.0,
            min_score: Some(70.0),
            requested_by: "ci@build-7".into(),
        }),
        EventKind::AbortRequested => Event::AbortRequested(AbortRequested {
            event_id: AbortRequested::id_for(&run(), AT),
            occurred_at: AT,
            run_id: run(),
            reason: "operator request".into(),
            requested_by: "sre@laptop".into(),
        }),
        EventKind::RollbackRequested => Event::RollbackRequested(RollbackRequested {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: None,
            action: RollbackAction::Resume,
            requested_by: "cli".into(),
        }),
        EventKind::AbTestRequested => Event::AbTestRequested(AbTestRequested {
            event_id: AbTestRequested::id_for(&run()),
            occurred_at: AT,
            run_id: run(),
            experiment: experiment(),
            variant_a: AbVariant { label: "baseline".into(), regions: vec![region("eu-west")], experiment: None },
            variant_b: AbVariant {
                label: "shorter-fault".into(),
                regions: vec![region("eu-west")],
                experiment: Some(Box::new(ExperimentSpec { duration_ms: 1_000, ..experiment() })),
            },
            samples_per_variant: 8,
            metrics: vec![AbMetric::ResilienceScore.spec(), AbMetric::LatencyP95Ms.spec()],
            confidence: 0.95,
            tolerance: 0.25,
            alpha: None,
            requested_by: "analyst".into(),
        }),
        EventKind::AbTestConcluded => Event::AbTestConcluded(ab_test_concluded()),
        EventKind::ModelTrained => Event::ModelTrained(ModelTrained {
            event_id: ModelTrained::id_for("model-1767225600000"),
            occurred_at: AT,
            model_id: "model-1767225600000".into(),
            window_days: Some(30),
            first_finished_at: TimestampMs(AT.0 - 30 * 86_400_000),
            last_finished_at: AT,
            rows: 1_200,
            runs: 400,
            seconds: 2.5,
            trigger: "cli".into(),
            models: vec![ModelQuality {
                metric: "resilience_score".into(),
                scope: "data_corruption".into(),
                rows: 600,
                runs: 200,
                folds: 5,
                model_mae: 2.75,
                model_r2: 0.91,
                baseline_mae: 13.5,
                baseline_r2: -0.01,
                coverage: 0.905,
                level: 0.9,
                median_width: 10.25,
                used: true,
            }],
        }),
        EventKind::ExperimentProposed => Event::ExperimentProposed(ExperimentProposed {
            event_id: ExperimentProposed::id_for("prop-5f1c2a9e0b7d"),
            occurred_at: AT,
            proposal_id: "prop-5f1c2a9e0b7d".into(),
            model_id: "model-1767225600000".into(),
            region: region("eu-west"),
            experiment: experiment(),
            reason: ProposalReason::Uncertain,
            predicted_score: 61.5,
            lower: 48.25,
            upper: 74.75,
            level: 0.9,
            expected_gain: 26.5,
            near_runs: 1,
            explanation: "the model is least sure here".into(),
            proposed_by: "cli".into(),
        }),
        EventKind::RegionRegistered => Event::RegionRegistered(RegionRegistered {
            event_id: id,
            occurred_at: AT,
            region: region("eu-west"),
            endpoint: "http://127.0.0.2:8080".into(),
            priority: 2,
            metadata: BTreeMap::from([("zone".to_owned(), "eu-west-1a".to_owned())]),
        }),
        EventKind::RegionRemoved => {
            Event::RegionRemoved(RegionRemoved { event_id: id, occurred_at: AT, region: region("eu-west") })
        }
        EventKind::RegionDispatched => Event::RegionDispatched(RegionDispatched {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            dispatch_id: DispatchId::new("dispatch-eu-west-1"),
            region: region("eu-west"),
            experiment: experiment(),
            timeout_ms: 32_000,
        }),
        EventKind::RollbackStepRequested => Event::RollbackStepRequested(RollbackStepRequested {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: region("eu-west"),
            step: 2,
            percentage: 40.0,
            strategy: RollbackStrategy::Gradual,
            upstream: None,
            check_after_ms: Some(5_000),
        }),
        EventKind::RunStarted => Event::RunStarted(RunStarted {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            experiment_name: "latency-eu".into(),
            regions: vec![region("eu-west"), region("us-east")],
            mode: RunMode::Sequential,
        }),
        EventKind::RegionResult => Event::RegionResult(RegionResult {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            dispatch_id: DispatchId::new("dispatch-eu-west-1"),
            region: region("eu-west"),
            experiment_name: "latency-eu".into(),
            layer: Layer::Infrastructure,
            fault_type: "network_latency".into(),
            parameters: experiment().parameters,
            tags: experiment().tags,
            status: RegionStatus::Completed,
            resilience_score: Some(82.35),
            score_version: 2,
            metrics: Some(metrics),
            message: None,
            started_at: TimestampMs(AT.0 - 2_500),
            finished_at: AT,
        }),
        EventKind::RunCompleted => Event::RunCompleted(RunCompleted {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            experiment_name: "latency-eu".into(),
            status: RunStatus::Failed,
            report: AggregateReport {
                regions_total: 2,
                regions_succeeded: 1,
                success_rate: 0.5,
                mean_score: 41.175,
                min_region: Some(region("us-east")),
                min_score: Some(0.0),
                max_region: Some(region("eu-west")),
                max_score: Some(82.35),
                duration_ms: 2_900,
                regions: vec![
                    RegionSummary {
                        region: region("eu-west"),
                        status: RegionStatus::Completed,
                        resilience_score: Some(82.35),
                        duration_ms: 2_500,
                        message: None,
                    },
                    RegionSummary {
                        region: region("us-east"),
                        status: RegionStatus::Failed,
                        resilience_score: None,
                        duration_ms: 2_900,
                        message: Some("agent answered HTTP 500".into()),
                    },
                ],
            },
        }),
        EventKind::RunRejected => Event::RunRejected(RunRejected {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            reason: "unknown region \"mars-1\"".into(),
        }),
        EventKind::RegionHealthSampled => Event::RegionHealthSampled(RegionHealthSampled {
            event_id: RegionHealthSampled::id_for(&region("eu-west"), AT),
            occurred_at: AT,
            region: region("eu-west"),
            status: HealthStatus::Degraded,
            latency_ms: Some(812.5),
            http_status: Some(503),
            message: Some("target unhealthy".into()),
            error_rate: Some(0.25),
        }),
        EventKind::FaultHeld => Event::FaultHeld(FaultHeld {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: region("eu-west"),
            dispatch_id: DispatchId::new("dispatch-eu-west-1"),
            hold_limit_ms: 300_000,
        }),
        EventKind::RollbackStarted => Event::RollbackStarted(RollbackStarted {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: region("eu-west"),
            strategy: RollbackStrategy::Gradual,
            trigger: RollbackTrigger::DurationEnded,
            planned_percentages: vec![20.0, 40.0, 60.0, 80.0, 100.0],
        }),
        EventKind::RollbackStepApplied => Event::RollbackStepApplied(RollbackStepApplied {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: region("eu-west"),
            step: 2,
            percentage: 40.0,
        }),
        EventKind::RollbackPaused => Event::RollbackPaused(RollbackPaused {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: region("eu-west"),
            step: 2,
            reason: "health check failed: HTTP 503".into(),
        }),
        EventKind::RollbackCompleted => Event::RollbackCompleted(RollbackCompleted {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: region("eu-west"),
            steps: 5,
            duration_ms: 25_000,
        }),
        EventKind::RollbackFailed => Event::RollbackFailed(RollbackFailed {
            event_id: id,
            occurred_at: AT,
            run_id: run(),
            region: region("eu-west"),
            reason: "timed out after 300 s".into(),
        }),
        EventKind::CircuitStateChanged => Event::CircuitStateChanged(CircuitStateChanged {
            event_id: id,
            occurred_at: AT,
            region: region("eu-west"),
            from_state: CircuitState::Closed,
            to_state: CircuitState::Open,
            reason: "5 consecutive failed health samples".into(),
        }),
        EventKind::ScheduleCreated => Event::ScheduleCreated(ScheduleCreated {
            event_id: ScheduleCreated::id_for(&schedule(), AT),
            occurred_at: AT,
            schedule_id: schedule(),
            spec: schedule_spec(),
            requested_by: "sre@laptop".into(),
        }),
        EventKind::ScheduleUpdated => Event::ScheduleUpdated(ScheduleUpdated {
            event_id: ScheduleUpdated::id_for(&schedule(), AT),
            occurred_at: AT,
            schedule_id: schedule(),
            spec: ScheduleSpec { suspended: true, concurrency: ConcurrencyPolicy::Replace, ..schedule_spec() },
            requested_by: "sre@laptop".into(),
        }),
        EventKind::ScheduleRemoved => Event::ScheduleRemoved(ScheduleRemoved {
            event_id: ScheduleRemoved::id_for(&schedule(), AT),
            occurred_at: AT,
            schedule_id: schedule(),
            requested_by: "sre@laptop".into(),
        }),
        EventKind::ScheduleTicksSkipped => Event::ScheduleTicksSkipped(ScheduleTicksSkipped {
            event_id: ScheduleTicksSkipped::id_for(&schedule(), SkipReason::InFlight, AT),
            occurred_at: AT,
            schedule_id: schedule(),
            reason: SkipReason::InFlight,
            first_tick: AT,
            last_tick: AT,
            count: 1,
            truncated: false,
            in_flight_run_id: Some(run().to_string()),
        }),
    }
}

fn schedule() -> ScheduleId {
    ScheduleId::new("nightly-latency")
}

/// Two experiments at 03:00 Paris time, forbid, a ten-minute starting deadline.
fn schedule_spec() -> ScheduleSpec {
    let run = |experiment, mode| ScheduledExperiment {
        experiment,
        regions: vec![region("eu-west")],
        mode,
        max_concurrent: 3,
        fail_fast: false,
        blast_radius_percent: 100.0,
        min_score: Some(70.0),
    };
    ScheduleSpec {
        cron: "0 3 * * *".into(),
        time_zone: "Europe/Paris".into(),
        experiments: vec![
            run(experiment(), RunMode::Parallel),
            run(
                ExperimentSpec { name: "latency-eu-long".into(), duration_ms: 4_000, ..experiment() },
                RunMode::Sequential,
            ),
        ],
        concurrency: ConcurrencyPolicy::Forbid,
        starting_deadline_ms: 600_000,
        suspended: false,
    }
}

/// One sample of every event type, in catalogue order.
pub fn all() -> Vec<Event> {
    EventKind::ALL.iter().map(|&kind| sample(kind)).collect()
}

/// What the version-1 RegionResult sample (`tests/golden/previous/region_result.v1.bin`) reads as today:
/// score_version 1, and null for every metric version 2 added.
pub fn region_result_v1() -> RegionResult {
    let Event::RegionResult(mut result) = sample(EventKind::RegionResult) else { unreachable!() };
    result.score_version = 1;
    result.metrics = Some(metrics_v1());
    result
}

/// What the version-1 AbTestRequested sample (`tests/golden/previous/ab_test_requested.v1.bin`) reads as
/// today: its variants run the test's experiment, the metrics are the defaults, and its alpha stays.
pub fn ab_test_requested_v1() -> AbTestRequested {
    AbTestRequested {
        event_id: EventId::derive("AbTestRequested", &["sample"]),
        occurred_at: AT,
        run_id: run(),
        experiment: experiment(),
        variant_a: AbVariant { label: "baseline".into(), regions: vec![region("eu-west")], experiment: None },
        variant_b: AbVariant { label: "with-retries".into(), regions: vec![region("us-east")], experiment: None },
        samples_per_variant: 10,
        metrics: Vec::new(),
        confidence: crate::events::ab::DEFAULT_CONFIDENCE,
        tolerance: crate::events::ab::DEFAULT_TOLERANCE,
        alpha: Some(0.05),
        requested_by: "analyst".into(),
    }
}

fn ab_test_concluded() -> AbTestConcluded {
    let sample = |variant, number: i32, score: f64| AbSample {
        variant,
        number,
        run_id: AbTestRequested::sample_run_id(&run(), variant, number),
        status: RunStatus::Completed,
        values: BTreeMap::from([("resilience_score".to_owned(), score)]),
    };
    AbTestConcluded {
        event_id: AbTestConcluded::id_for(&run()),
        occurred_at: AT,
        run_id: run(),
        status: AbTestStatus::Concluded,
        reason: None,
        label_a: "baseline".into(),
        label_b: "validate".into(),
        samples_per_variant: 3,
        confidence: 0.98,
        tolerance: 0.25,
        samples: vec![
            sample(AbSide::A, 1, 40.0),
            sample(AbSide::B, 1, 90.0),
            sample(AbSide::A, 2, 42.5),
            sample(AbSide::B, 2, 88.0),
            sample(AbSide::A, 3, 41.0),
            sample(AbSide::B, 3, 91.5),
        ],
        judgement: Some(AbJudgement {
            metrics: vec![AbMetricJudgement {
                metric: "resilience_score".into(),
                direction: AbDirection::HigherIsBetter,
                samples_a: vec![40.0, 42.5, 41.0],
                samples_b: vec![90.0, 88.0, 91.5],
                n_a: 3,
                n_b: 3,
                u: 9.0,
                z: 1.7457,
                p_value: 0.0809,
                hl_estimate: 49.0,
                ci_low: 45.5,
                ci_high: 51.5,
                confidence: 0.98,
                mean_ratio: Some(2.1565),
                prob_superiority: 1.0,
                label: AbLabel::NoDifference,
                mde: 4.12,
            }],
            verdict: AbVerdict::NoSignificantDifference,
            score: 100.0,
            mde: 3.1,
        }),
    }
}

//! Dispatch overhead of one parallel run over 1,000 regions (max_concurrent 1,000), on the embedded broker
//! (and on a real one with CHAOSEATER_BENCH_BROKERS=host:port).
//!
//! cargo bench --bench dispatch
//!
//! The regions' agents are one in-process HTTP server that speaks the agent API and answers at once
//! (an experiment is finished the moment it is started): the point is to measure what the orchestrator,
//! the dispatcher and the bus add, not what faults take. Prints the run's wall time (RunRequested
//! published → RunCompleted consumed), the slowest region (its RegionResult's finished − started), the
//! overhead (wall − slowest) and the events per second through the saga.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::routing::{get, post};
use chaoseater_processors::orchestrator::Orchestrator;
use chaoseater_producers::dispatcher::{AgentTokens, Dispatcher, Workers};
use chaoseater_schemas::bus::{
    BusContext, EmbeddedBroker, EventConsumer, EventProducer, ProcessorRunner, RunnerOptions, StartFrom, StateStore,
};
use chaoseater_schemas::events::{Event, EventKind, RegionRegistered};
use chaoseater_schemas::experiment::RunMode;
use chaoseater_schemas::ids::{EventId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::samples;
use chaoseater_schemas::topics::{Topic, TopicNames};
use serde_json::json;
use tokio::sync::watch;

const REGIONS: usize = 1_000;

/// The instant agent: every experiment is completed as soon as it is asked for.
async fn instant_agent() -> (String, Arc<AtomicU64>) {
    let started = Arc::new(AtomicU64::new(0));
    let counter = started.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/experiments",
            post(move || {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    (axum::http::StatusCode::ACCEPTED, axum::Json(json!({"status": "baseline"})))
                }
            }),
        )
        .route(
            "/api/v1/experiments/{id}",
            get(|Path(id): Path<String>| async move {
                axum::Json(json!({"id": id, "status": "completed", "result": {"status": "completed", "resilience_score": 100.0, "metrics": null, "error": null}}))
            }),
        )
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), started)
}

async fn measure(label: &str, brokers: &str, embedded: Option<&EmbeddedBroker>) {
    let ctx = common::context(&format!("benchd{}-{label}", std::process::id()), brokers, embedded).await;
    let (endpoint, asked) = instant_agent().await;
    let producer = EventProducer::new(&ctx).expect("producer");
    let at = TimestampMs::now();
    let registrations: Vec<Event> = (0..REGIONS)
        .map(|i| {
            let name = format!("r{i:04}");
            Event::RegionRegistered(RegionRegistered {
                event_id: EventId::derive("RegionRegistered", &[&name]),
                occurred_at: at,
                region: RegionName::new(name.as_str()),
                endpoint: endpoint.clone(),
                priority: (i % 10) as i32,
                metadata: Default::default(),
            })
        })
        .collect();
    producer.publish_all(&registrations).await.expect("registrations");

    let dir = tempfile::tempdir().expect("tempdir");
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopper = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let orchestrator = ProcessorRunner::new(
        ctx.clone(),
        Orchestrator,
        StateStore::open(&dir.path().join("o")).expect("store"),
        RunnerOptions::default(),
    )
    .expect("runner");
    let o = tokio::spawn(orchestrator.run(stopper(stop_rx.clone())));
    let (dispatcher, queue) = Dispatcher::new();
    tokio::spawn(Workers::new(producer.clone(), AgentTokens::default()).run(Vec::new(), queue));
    let dispatcher = ProcessorRunner::new(
        ctx.clone(),
        dispatcher,
        StateStore::open(&dir.path().join("d")).expect("store"),
        RunnerOptions::default(),
    )
    .expect("runner");
    let d = tokio::spawn(dispatcher.run(stopper(stop_rx)));

    let results = EventConsumer::assign(
        &ctx,
        "bench-follow",
        &[&ctx.topics.name(Topic::Results)],
        &Default::default(),
        StartFrom::Beginning,
    )
    .await
    .expect("consumer");
    // The first run warms up the processors (consumers assigned, registry read); the second is measured.
    for round in ["warm-up", "measured"] {
        let (wall, slowest, events) = one_run(&ctx, &producer, &results).await;
        if round == "measured" {
            println!(
                "  {label:<9} regions {REGIONS}  agent calls {}  wall {:>7.3} s  slowest region {:>6.3} s  overhead {:>7.3} s  events/s {:>8.0}",
                asked.load(Ordering::Relaxed) / 2,
                wall.as_secs_f64(),
                slowest,
                wall.as_secs_f64() - slowest,
                events as f64 / wall.as_secs_f64()
            );
        }
    }
    let _ = stop_tx.send(true);
    let _ = o.await;
    let _ = d.await;
}

/// One parallel run over every region: (wall time, slowest region in seconds, saga events).
async fn one_run(ctx: &BusContext, producer: &EventProducer, results: &EventConsumer) -> (Duration, f64, u64) {
    let Event::RunRequested(mut request) = samples::sample(EventKind::RunRequested) else {
        unreachable!("sample kind")
    };
    request.run_id = RunId::random();
    request.event_id = chaoseater_schemas::events::RunRequested::id_for(&request.run_id);
    request.regions.clear();
    request.mode = RunMode::Parallel;
    request.max_concurrent = REGIONS as i32;
    request.experiment.layer = chaoseater_schemas::experiment::Layer::Infrastructure;
    request.experiment.fault_type = "network_latency".into();
    request.experiment.parameters =
        chaoseater_schemas::faults::validate(request.experiment.layer, "network_latency", &Default::default())
            .expect("valid");
    request.experiment.duration_ms = 1;
    let run_id = request.run_id.clone();
    let started = Instant::now();
    let t0 = TimestampMs::now().0;
    producer.publish(&Event::RunRequested(request)).await.expect("request");
    let (mut slowest, mut events, mut wall) = (0i64, 0u64, None);
    while wall.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the run did not complete in 2 minutes ({events} events seen)"
        );
        for message in results.next_batch(2_000, Duration::from_millis(100)).await.expect("batch") {
            let Some(Ok(event)) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) else { continue };
            if event.run_id() != Some(&run_id) {
                continue;
            }
            events += 1;
            if std::env::var("BENCH_TRACE").is_ok() {
                eprintln!(
                    "{:>6} ms  {:?} at {} (+{} ms from publish)",
                    started.elapsed().as_millis(),
                    event.kind(),
                    event.occurred_at().0,
                    event.occurred_at().0 - t0
                );
            }
            match event {
                Event::RegionResult(r) => slowest = slowest.max(r.finished_at.0 - r.started_at.0),
                Event::RunRejected(r) => panic!("the run was rejected: {}", r.reason),
                Event::RunCompleted(c) => {
                    wall = Some(started.elapsed());
                    assert_eq!(c.report.regions_total as usize, REGIONS);
                    assert_eq!(c.report.regions_succeeded as usize, REGIONS);
                }
                _ => {}
            }
        }
    }
    // RunStarted + RunCompleted + the results on the results topic, and one RegionDispatched per region.
    (wall.expect("completed"), slowest as f64 / 1000.0, events + REGIONS as u64)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!(
        "dispatch overhead: one parallel run over {REGIONS} regions (max_concurrent {REGIONS}), agents that answer at once"
    );
    let state = std::env::temp_dir().join(format!("chaoseater-bench-d{}", std::process::id()));
    let embedded = EmbeddedBroker::start(&state, &TopicNames::with_prefix("bench-unused")).expect("embedded broker");
    let brokers = embedded.bootstrap_servers();
    runtime.block_on(measure("embedded", &brokers, Some(&embedded)));
    if let Ok(brokers) = std::env::var("CHAOSEATER_BENCH_BROKERS") {
        runtime.block_on(measure("broker", &brokers, None));
    }
    drop(runtime);
    drop(embedded);
    let _ = std::fs::remove_dir_all(&state);
}

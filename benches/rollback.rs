//! Reaction time of the rollback processor: from a failing health sample event (its error rate above the
//! run's failure threshold) to the RollbackStepRequested it causes, under a load of 10,000 health events
//! per second, on the embedded broker (and on a real one with CHAOSEATER_BENCH_BROKERS=host:port).
//!
//! cargo bench --bench rollback
//!
//! 400 regions each have a run whose fault is in place (RegionDispatched, gradual strategy, failure
//! threshold 0.1). A generator publishes healthy samples (error rate 0) for all of them at 10,000 per
//! second, in batches every 10 ms; every 50 ms one batch also carries a failing sample (error rate 0.5)
//! for a region not yet rolled back. A consumer of the dispatch topic timestamps each step request; the
//! reaction time is its arrival minus the moment the failing sample's batch was handed to the producer.
//! Everything is on the bus: produce, broker, the processor's batch and commit, its outbox, broker,
//! consume.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chaoseater_processors::rollback::RollbackProcessor;
use chaoseater_schemas::bus::{
    EmbeddedBroker, EventConsumer, EventProducer, ProcessorRunner, RunnerOptions, StartFrom, StateStore,
};
use chaoseater_schemas::events::{Event, EventKind, HealthStatus, RegionHealthSampled};
use chaoseater_schemas::experiment::{RollbackConfig, RollbackStrategy};
use chaoseater_schemas::ids::{DispatchId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::samples;
use chaoseater_schemas::topics::{Topic, TopicNames};
use tokio::sync::watch;

const REGIONS: usize = 400;
const RATE: usize = 10_000;
const BATCH_EVERY: Duration = Duration::from_millis(10);
const FAIL_EVERY: usize = 5; // batches: one failing sample every 50 ms
const SECONDS: usize = 12;

fn sample(region: &RegionName, at: TimestampMs, seq: u64, error_rate: f64) -> Event {
    Event::RegionHealthSampled(RegionHealthSampled {
        // Distinct ids: samples of one region within one millisecond are still distinct facts here.
        event_id: chaoseater_schemas::ids::EventId::derive("bench-sample", &[region.as_str(), &seq.to_string()]),
        occurred_at: at,
        region: region.clone(),
        status: HealthStatus::Healthy,
        latency_ms: Some(1.0),
        http_status: Some(200),
        message: None,
        error_rate: Some(error_rate),
    })
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(label: &str, brokers: &str, embedded: Option<&EmbeddedBroker>) {
    let ctx = common::context(&format!("benchr{}-{label}", std::process::id()), brokers, embedded).await;
    let producer = EventProducer::new(&ctx).expect("producer");
    let regions: Vec<RegionName> = (0..REGIONS).map(|i| RegionName::new(format!("r{i:04}"))).collect();
    let runs: Vec<RunId> = regions.iter().map(|_| RunId::random()).collect();
    let Event::RegionDispatched(template) = samples::sample(EventKind::RegionDispatched) else { unreachable!() };
    let dispatches: Vec<Event> = regions
        .iter()
        .zip(&runs)
        .map(|(region, run)| {
            let mut d = template.clone();
            d.run_id = run.clone();
            d.region = region.clone();
            d.dispatch_id = DispatchId::for_region(run, region);
            d.event_id = chaoseater_schemas::ids::EventId::derive("bench-dispatch", &[run.as_str()]);
            d.experiment.rollback = RollbackConfig { strategy: RollbackStrategy::Gradual, ..RollbackConfig::default() };
            Event::RegionDispatched(d)
        })
        .collect();
    producer.publish_all(&dispatches).await.expect("dispatches");

    let dir = tempfile::tempdir().expect("tempdir");
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let runner = ProcessorRunner::new(
        ctx.clone(),
        RollbackProcessor,
        StateStore::open(dir.path()).expect("store"),
        RunnerOptions::default(),
    )
    .expect("runner");
    let processor = tokio::spawn(runner.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let steps = EventConsumer::assign(
        &ctx,
        "bench-steps",
        &[&ctx.topics.name(Topic::Dispatch)],
        &Default::default(),
        StartFrom::Beginning,
    )
    .await
    .expect("consumer");

    // The step watcher: arrival instants of each run's first step request.
    let (arrived_tx, mut arrived_rx) = tokio::sync::mpsc::unbounded_channel::<(RunId, Instant)>();
    let watch_ctx = ctx.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let Ok(batch) = steps.next_batch(1_000, Duration::from_millis(20)).await else { return };
            let now = Instant::now();
            for message in batch {
                if let Some(Ok(Event::RollbackStepRequested(s))) =
                    message.payload.as_deref().map(|p| watch_ctx.codec.decode(p))
                    && arrived_tx.send((s.run_id, now)).is_err()
                {
                    return;
                }
            }
        }
    });

    // Load: RATE samples a second in batches every 10 ms; a failing one every FAIL_EVERY batches.
    let per_batch = RATE * BATCH_EVERY.as_millis() as usize / 1000;
    let batches = SECONDS * 1000 / BATCH_EVERY.as_millis() as usize;
    let mut sent_failing: HashMap<RunId, Instant> = HashMap::new();
    let mut next_failing = 0usize;
    let mut ticker = tokio::time::interval(BATCH_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut seq = 0u64;
    let mut published = 0usize;
    for b in 0..batches {
        ticker.tick().await;
        let at = TimestampMs::now();
        let mut events: Vec<Event> = (0..per_batch)
            .map(|i| {
                seq += 1;
                sample(&regions[(b * per_batch + i) % REGIONS], at, seq, 0.0)
            })
            .collect();
        // The first two seconds warm up (consumers assigned, dispatches applied); then failures start.
        let failing = b % FAIL_EVERY == 0 && started.elapsed() > Duration::from_secs(2) && next_failing < REGIONS;
        if failing {
            seq += 1;
            let i = next_failing;
            next_failing += 1;
            // Healthy samples of this region in the same batch come first; the failing one is last.
            events.retain(|e| !matches!(e, Event::RegionHealthSampled(s) if s.region == regions[i]));
            events.push(sample(&regions[i], at, seq, 0.5));
            sent_failing.insert(runs[i].clone(), Instant::now());
        }
        published += events.len();
        producer.publish_all(&events).await.expect("samples");
    }
    let load_elapsed = started.elapsed();

    // Collect the reactions (every failing sample must get its step request).
    let mut reactions: Vec<f64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while reactions.len() < sent_failing.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), arrived_rx.recv()).await {
            Ok(Some((run, at))) => {
                if let Some(sent) = sent_failing.get(&run) {
                    reactions.push(at.duration_since(*sent).as_secs_f64() * 1e3);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    assert_eq!(reactions.len(), sent_failing.len(), "every failing sample must cause a step request");
    reactions.sort_by(f64::total_cmp);
    println!(
        "  {label:<9} health events {published} in {:.1} s ({:>6.0}/s)  failing samples {}  reaction p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
        load_elapsed.as_secs_f64(),
        published as f64 / load_elapsed.as_secs_f64(),
        reactions.len(),
        percentile(&reactions, 0.5),
        percentile(&reactions, 0.99),
        reactions.last().copied().unwrap_or(f64::NAN),
    );
    let _ = stop_tx.send(true);
    let _ = processor.await;
    watcher.abort();
}

#[tokio::main]
async fn main() {
    println!("rollback reaction: failing health sample → RollbackStepRequested, under {RATE} health events/s");
    let dir = tempfile::tempdir().expect("tempdir");
    let names = TopicNames::default();
    let embedded = EmbeddedBroker::start(dir.path(), &names).expect("embedded broker");
    measure("embedded", &embedded.bootstrap_servers(), Some(&embedded)).await;
    if let Ok(brokers) = std::env::var("CHAOSEATER_BENCH_BROKERS") {
        measure("broker", &brokers, None).await;
    }
}

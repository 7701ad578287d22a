//! The bus against Apache Kafka (started by `.ci/run` with `tests/kafka/kafka.sh`): volume, order, crash
//! recovery of a processor, the dead-letter path, and a broker restart.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chaoseater_processors::ledger::RunLedger;
use chaoseater_schemas::bus::producer::RawMessage;
use chaoseater_schemas::bus::{EventConsumer, EventProducer, ProcessorRunner, RunnerOptions, StartFrom, StateStore};
use chaoseater_schemas::events::{Event, HealthStatus, RegionHealthSampled, RunStarted};
use chaoseater_schemas::experiment::RunMode;
use chaoseater_schemas::ids::{EventId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::topics::{Topic, headers};
use common::*;

fn health(i: u64, regions: u64) -> Event {
    let region = RegionName::new(format!("r{}", i % regions));
    let at = TimestampMs(i as i64);
    Event::RegionHealthSampled(RegionHealthSampled {
        event_id: RegionHealthSampled::id_for(&region, at),
        occurred_at: at,
        region,
        status: HealthStatus::Healthy,
        latency_ms: Some(1.0),
        http_status: Some(200),
        message: None,
        error_rate: None,
    })
}

fn run_started(i: u64) -> Event {
    run_started_at(i, i, i as i64)
}

/// The `i`th RunStarted, of run `run` (its key, so its partition), at `at_ms`.
fn run_started_at(run: u64, i: u64, at_ms: i64) -> Event {
    let run_id = RunId::new(format!("run-{}", run % 997));
    Event::RunStarted(RunStarted {
        event_id: EventId::derive("RunStarted", &[run_id.as_str(), &i.to_string()]),
        occurred_at: TimestampMs(at_ms),
        run_id,
        experiment_name: "volume".into(),
        regions: vec![RegionName::new("eu")],
        mode: RunMode::Parallel,
    })
}

/// Consumes every message of `topic` from the beginning until `expected` arrived or the deadline passed.
async fn consume_all(consumer: &EventConsumer, expected: usize) -> Vec<chaoseater_schemas::bus::Received> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected && Instant::now() < deadline {
        out.extend(consumer.next_batch(5_000, Duration::from_millis(500)).await.expect("consume"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_events_none_lost_and_per_key_order_kept() {
    const N: u64 = 100_000;
    const REGIONS: u64 = 64;
    let ctx = context(&brokers(), &unique_prefix("volume"));
    create_topics(&ctx).await;
    let producer = EventProducer::new(&ctx).unwrap();
    let events: Vec<Event> = (0..N).map(|i| health(i, REGIONS)).collect();
    for chunk in events.chunks(10_000) {
        producer.publish_all(chunk).await.expect("every event acknowledged");
    }

    let topic = ctx.topics.name(Topic::Health);
    let consumer =
        EventConsumer::assign(&ctx, "volume", &[&topic], &HashMap::new(), StartFrom::Beginning).await.unwrap();
    let received = consume_all(&consumer, N as usize).await;
    assert_eq!(received.len() as u64, N, "events lost");

    let mut ids = HashSet::new();
    let mut last_per_key: HashMap<String, i64> = HashMap::new();
    for message in &received {
        let Event::RegionHealthSampled(event) = ctx.codec.decode(message.payload.as_deref().unwrap()).unwrap() else {
            panic!("unexpected event type");
        };
        assert!(ids.insert(event.event_id.clone()), "duplicate {}", event.event_id);
        let last = last_per_key.entry(event.region.to_string()).or_insert(-1);
        assert!(
            event.occurred_at.0 > *last,
            "order broken for {}: {} after {}",
            event.region,
            event.occurred_at.0,
            last
        );
        *last = event.occurred_at.0;
    }
    assert_eq!(last_per_key.len() as u64, REGIONS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_goes_to_the_dlq_and_the_partition_moves_on() {
    let ctx = context(&brokers(), &unique_prefix("dlq"));
    create_topics(&ctx).await;
    let producer = EventProducer::new(&ctx).unwrap();
    // RunStarted belongs on the results topic (a processor applies an event only from its own topic).
    let results = ctx.topics.name(Topic::Results);
    // Same key, so all three land on one partition in this order: event, garbage, event.
    let key = b"run-7".to_vec();
    let good = |i| {
        let mut event = run_started(i);
        if let Event::RunStarted(e) = &mut event {
            e.run_id = RunId::new("run-7");
        }
        RawMessage {
            topic: results.clone(),
            key: Some(key.clone()),
            payload: ctx.codec.encode(&event).unwrap(),
            headers: vec![],
        }
    };
    let garbage = RawMessage {
        topic: results.clone(),
        key: Some(key.clone()),
        payload: b"\xC3\x01garbage!".to_vec(),
        headers: vec![],
    };
    let delivered = producer.publish_raw(&[good(1), garbage, good(2)]).await.unwrap();
    assert_eq!(delivered[0].partition, delivered[1].partition);

    let dir = tempfile::tempdir().unwrap();
    let reader =
        run_ledger_until_applied(&ctx, StateStore::open(dir.path()).unwrap(), 2, Duration::from_secs(60)).await;
    let stats = reader.stats().unwrap();
    assert_eq!((stats.applied, stats.dead_lettered), (2, 1), "{stats:?}");
    assert_eq!(RunLedger::timeline(&reader, &RunId::new("run-7")).unwrap().len(), 2);

    let dlq = ctx.topics.name(Topic::Dlq);
    let consumer =
        EventConsumer::assign(&ctx, "dlq-check", &[&dlq], &HashMap::new(), StartFrom::Beginning).await.unwrap();
    let dead = consume_all(&consumer, 1).await;
    assert_eq!(dead.len(), 1);
    let header = |name: &str| {
        dead[0]
            .headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| text(v))
            .unwrap_or_else(|| panic!("no header {name}"))
    };
    assert_eq!(dead[0].payload.as_deref(), Some(&b"\xC3\x01garbage!"[..]));
    assert_eq!(dead[0].key.as_deref(), Some(&key[..]));
    assert_eq!(header(headers::DLQ_TOPIC), results);
    assert_eq!(header(headers::DLQ_PARTITION), delivered[1].partition.to_string());
    assert_eq!(header(headers::DLQ_OFFSET), delivered[1].offset.to_string());
    assert!(header(headers::DLQ_ERROR).contains("cannot decode"), "{}", header(headers::DLQ_ERROR));
}

/// Runs the ledger in-process until its store has applied `count` events (or `timeout` passed), stops it
/// cleanly, and returns the store for inspection.
async fn run_ledger_until_applied(
    ctx: &chaoseater_schemas::bus::BusContext,
    store: StateStore,
    count: u64,
    timeout: Duration,
) -> StateStore {
    let done = move |s: &StateStore| s.stats().expect("stats").applied >= count;
    run_ledger_until(ctx, store, RunnerOptions::default(), done, timeout).await
}

/// Runs the ledger in-process until `done` holds of its store (or `timeout` passed), stops it cleanly,
/// and returns the store for inspection.
async fn run_ledger_until(
    ctx: &chaoseater_schemas::bus::BusContext,
    store: StateStore,
    options: RunnerOptions,
    done: impl Fn(&StateStore) -> bool,
    timeout: Duration,
) -> StateStore {
    let reader = store.clone();
    let runner = ProcessorRunner::new(ctx.clone(), RunLedger, store, options).expect("runner");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runner.run(async move {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + timeout;
    while !done(&reader) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    task.await.expect("runner task").expect("runner stopped cleanly");
    reader
}

/// A processor drops a re-published duplicate, and remembers applied ids only for its dedupe window of
/// event time behind the newest event it applied (forgetting when it starts and then once a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_ids_are_remembered_for_the_dedupe_window() {
    const DAY: i64 = 86_400_000;
    let ctx = context(&brokers(), &unique_prefix("window"));
    create_topics(&ctx).await;
    let producer = EventProducer::new(&ctx).unwrap();
    // A run started a day for ten days, then the last one again (a producer re-publishing after a crash;
    // likely in the same batch as its original, so the batch's own set drops it). One key, so one
    // partition: the window follows each partition's newest event.
    let events: Vec<Event> = (0..10).map(|d| run_started_at(1, d, d as i64 * DAY)).collect();
    producer.publish_all(&events).await.unwrap();
    producer.publish_all(&events[9..]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = RunnerOptions { dedupe_window: Duration::from_secs(3 * 86_400), ..RunnerOptions::default() };
    let timeout = Duration::from_secs(60);
    let read_all = |s: &StateStore| {
        let stats = s.stats().expect("stats");
        stats.applied + stats.duplicates_dropped >= 11
    };
    let store = run_ledger_until(&ctx, StateStore::open(dir.path()).unwrap(), options.clone(), read_all, timeout).await;
    let stats = store.stats().unwrap();
    assert_eq!((stats.applied, stats.duplicates_dropped), (10, 1), "{stats:?}");
    // Started again: days 6 to 9 are within three days of the newest (day 9); days 0 to 5 are forgotten.
    let store = run_ledger_until(&ctx, store, options.clone(), |s| s.applied_ids() <= 4, timeout).await;
    assert_eq!(store.applied_ids(), 4);
    for (day, event) in events.iter().enumerate() {
        assert_eq!(store.was_applied(event.event_id().as_str()).unwrap(), day >= 6, "day {day}");
    }
    // Copies published now, read in batches without their originals: day 7's is still known and
    // dropped; day 2's is past the window and applied again.
    producer.publish_all(&[events[7].clone(), events[2].clone()]).await.unwrap();
    let read_copies = |s: &StateStore| {
        let stats = s.stats().expect("stats");
        stats.applied + stats.duplicates_dropped >= 13
    };
    let store = run_ledger_until(&ctx, store, options, read_copies, timeout).await;
    let stats = store.stats().unwrap();
    assert_eq!((stats.applied, stats.duplicates_dropped), (11, 2), "{stats:?}");
}

/// A tiny deterministic generator for kill times (the seed is printed, so a failure can be replayed).
struct Lcg(u64);

impl Lcg {
    fn next_in(&mut self, low: u64, high: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        low + (self.0 >> 33) % (high - low)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_killed_with_sigkill_resumes_without_loss_or_duplicates() {
    const N: u64 = 100_000;
    let brokers = brokers();
    let prefix = unique_prefix("kill");
    let ctx = context(&brokers, &prefix);
    create_topics(&ctx).await;
    let producer = EventProducer::new(&ctx).unwrap();
    let events: Vec<Event> = (0..N).map(run_started).collect();
    let mut per_partition: HashMap<i32, u64> = HashMap::new();
    for chunk in events.chunks(10_000) {
        for delivery in producer.publish_all(chunk).await.unwrap() {
            *per_partition.entry(delivery.partition).or_default() += 1;
        }
    }

    let state = tempfile::tempdir().unwrap();
    let store_dir = state.path().join("processors").join(RunLedger::NAME);
    let seed = std::env::var("KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("kill seed {seed} (set KILL_SEED to replay), topic prefix {prefix}");
    let mut rng = Lcg(seed);
    let mut progress = Vec::new();
    for _ in 0..4 {
        let child = Command::new(env!("CARGO_BIN_EXE_chaoseater"))
            .args(["serve", "--processors", "ledger", "--brokers", &brokers, "--topic-prefix", &prefix])
            .arg("--state-dir")
            .arg(state.path())
            .env("CHAOSEATER_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        // Kill times are the point of this test, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(rng.next_in(300, 2_500))).await;
        child.0.kill().unwrap(); // SIGKILL: no shutdown code runs.
        child.0.wait().unwrap();
        if store_dir.exists() {
            let store = StateStore::open(&store_dir).unwrap();
            let stats = store.stats().unwrap();
            let read: i64 = store.positions().unwrap().values().sum();
            let filed: u64 = RunLedger::applied_counts(&store).unwrap().iter().map(|(_, _, n)| n).sum();
            eprintln!("after kill: {stats:?} read {read} filed {filed} ids {}", store.applied_ids());
            // Whatever the kill interrupted, state, offsets and counters agree.
            assert_eq!(read as u64, stats.applied + stats.duplicates_dropped + stats.dead_lettered, "{stats:?}");
            assert_eq!(filed, stats.applied);
            assert_eq!(store.applied_ids() as u64, stats.applied);
            progress.push(stats.applied);
        }
    }
    eprintln!("applied after each SIGKILL: {progress:?}");
    assert!(
        progress.iter().any(|&applied| applied > 0 && applied < N),
        "no kill landed mid-stream ({progress:?}); the test proved nothing"
    );

    // Finish in-process, reading the store as the runner commits.
    let reader =
        run_ledger_until_applied(&ctx, StateStore::open(&store_dir).unwrap(), N, Duration::from_secs(180)).await;

    let stats = reader.stats().unwrap();
    assert_eq!(stats.applied, N, "lost events: {stats:?}");
    // State and offsets move together, so no message committed before a crash is ever read again.
    assert_eq!(stats.duplicates_dropped, 0, "{stats:?}");
    let topic = ctx.topics.name(Topic::Results);
    let mut counted: HashMap<i32, u64> = HashMap::new();
    for (t, partition, count) in RunLedger::applied_counts(&reader).unwrap() {
        assert_eq!(t, topic);
        counted.insert(partition, count);
    }
    assert_eq!(counted, per_partition, "per-partition counts differ from what was produced");
    let positions = reader.positions().unwrap();
    for (partition, count) in &per_partition {
        assert_eq!(positions[&(topic.clone(), *partition)], *count as i64);
    }
    let mut ids = HashSet::new();
    for i in 0..997u64 {
        for entry in RunLedger::timeline(&reader, &RunId::new(format!("run-{i}"))).unwrap() {
            assert!(ids.insert(entry.event_id.clone()), "event {} filed twice", entry.event_id);
        }
    }
    assert_eq!(ids.len() as u64, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_every_acknowledged_event() {
    const N: u64 = 5_000;
    let kafka = OwnKafka::start(1);
    let ctx = context(&kafka.bootstrap, &unique_prefix("restart"));
    create_topics(&ctx).await;
    let producer = EventProducer::new(&ctx).unwrap();
    let events: Vec<Event> = (0..N).map(|i| health(i, 8)).collect();
    producer.publish_all(&events).await.expect("acknowledged");
    drop(producer);
    // SIGKILL: no controlled shutdown, no flush. What the broker acknowledged is in its log (the page
    // cache outlives the process), and it recovers the unclean log on start.
    kafka.kill(1);
    kafka.restart(1);

    let topic = ctx.topics.name(Topic::Health);
    let consumer =
        EventConsumer::assign(&ctx, "restart", &[&topic], &HashMap::new(), StartFrom::Beginning).await.unwrap();
    let received = consume_all(&consumer, N as usize).await;
    let ids: HashSet<String> = received
        .iter()
        .map(|m| ctx.codec.decode(m.payload.as_deref().unwrap()).unwrap().event_id().to_string())
        .collect();
    assert_eq!(ids.len() as u64, N, "acknowledged events lost across the restart");
}

/// A state store that fails its next commit (as a full disk would) leaves the event applied exactly
/// once and nothing in the DLQ: a transient failure is retried, never dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_retried_not_dead_lettered() {
    let ctx = context(&brokers(), &unique_prefix("transient"));
    create_topics(&ctx).await;
    let producer = EventProducer::new(&ctx).unwrap();
    producer.publish_all(&[run_started_at(3, 0, 1_000), run_started_at(3, 1, 2_000)]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    store.fail_next_commits(1);
    let store = run_ledger_until_applied(&ctx, store, 2, Duration::from_secs(60)).await;
    let stats = store.stats().unwrap();
    assert_eq!((stats.applied, stats.dead_lettered, stats.duplicates_dropped), (2, 0, 0), "{stats:?}");
    assert_eq!(RunLedger::timeline(&store, &RunId::new("run-3")).unwrap().len(), 2, "each applied once");
    let dlq = ctx.topics.name(Topic::Dlq);
    let dead = EventConsumer::read_to_end(&ctx, "dlq-check", &[&dlq]).await.unwrap();
    assert!(dead.is_empty(), "nothing dead-lettered: {} messages", dead.len());
}

/// A message as large as the broker takes is dead-lettered within the producer's limit (its payload
/// replaced by its length and digest, its headers kept), an event on a topic it does not belong to is
/// dead-lettered unapplied, and the processor goes on to the next valid event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_or_misplaced_message_is_dead_lettered_and_the_processor_goes_on() {
    let mut ctx = context(&brokers(), &unique_prefix("oversized"));
    create_topics(&ctx).await;
    let commands = ctx.topics.name(Topic::Commands);
    let huge = RawMessage {
        topic: commands.clone(),
        key: Some(b"huge".to_vec()),
        payload: vec![0xAB; 600_000],
        headers: vec![("origin".into(), b"elsewhere".to_vec())],
    };
    EventProducer::new(&ctx).unwrap().publish_raw(&[huge]).await.unwrap();
    // The ledger's producer takes less than that message (as ours take less than a broker's limit plus
    // the DLQ headers): its copy must be cut to fit.
    ctx.properties.insert("message.max.bytes".into(), "500000".into());
    let sample = chaoseater_schemas::samples::sample(chaoseater_schemas::events::EventKind::RegionRegistered);
    let forged = RawMessage {
        topic: commands.clone(),
        key: Some(b"forged".to_vec()),
        payload: ctx.codec.encode(&sample).unwrap(),
        headers: vec![],
    };
    let producer = EventProducer::new(&ctx).unwrap();
    producer.publish_raw(&[forged]).await.unwrap();
    producer.publish_all(&[run_started_at(5, 0, 1_000)]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The valid event and the two bad ones are on different topics, whose order no one promised: wait for
    // all three to be dealt with.
    let done = |s: &StateStore| s.stats().is_ok_and(|stats| stats.applied >= 1 && stats.dead_lettered >= 2);
    let store = run_ledger_until(
        &ctx,
        StateStore::open(dir.path()).unwrap(),
        RunnerOptions::default(),
        done,
        Duration::from_secs(60),
    )
    .await;
    let stats = store.stats().unwrap();
    assert_eq!((stats.applied, stats.dead_lettered), (1, 2), "{stats:?}");
    let dlq = ctx.topics.name(Topic::Dlq);
    let dead = EventConsumer::read_to_end(&ctx, "dlq-check", &[&dlq]).await.unwrap();
    assert_eq!(dead.len(), 2);
    let header = |m: &chaoseater_schemas::bus::Received, name: &str| {
        m.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| text(v))
    };
    let letter = dead.iter().find(|m| m.key.as_deref() == Some(b"huge")).expect("the huge one");
    assert_eq!(letter.payload.as_deref().map(<[u8]>::len).unwrap_or(0), 0);
    assert_eq!(header(letter, headers::DLQ_DROPPED).as_deref(), Some("payload"));
    assert_eq!(header(letter, headers::DLQ_PAYLOAD_BYTES).as_deref(), Some("600000"));
    assert!(header(letter, headers::DLQ_PAYLOAD_DIGEST).is_some_and(|d| d.starts_with("crc64-avro:")));
    assert_eq!(header(letter, "origin").as_deref(), Some("elsewhere"), "the original's headers are kept");
    let misplaced = dead.iter().find(|m| m.key.as_deref() == Some(b"forged")).expect("the forged one");
    let error = header(misplaced, headers::DLQ_ERROR).unwrap_or_default();
    assert!(error.contains("RegionRegistered") && error.contains("does not belong"), "{error}");
    assert!(RunLedger::timeline(&store, &RunId::new("run-5")).unwrap().len() == 1);
}

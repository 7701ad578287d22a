//! Bus throughput: produce and consume rates of ChaosEater's bus (typed events, Avro encoding, headers,
//! decoding) next to a raw rdkafka producer and consumer moving the same bytes, in the same run.
//!
//! Run: `cargo bench --bench bus` (embedded broker), and with `CHAOSEATER_BENCH_BROKERS=127.0.0.1:PORT` to
//! add a real broker (Apache Kafka: `tests/kafka/kafka.sh start DIR`). Target: the bus keeps at least 80%
//! of the raw rate. Figures go to benches/README.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chaoseater_schemas::bus::{BusContext, EmbeddedBroker, EventConsumer, EventProducer, StartFrom, admin};
use chaoseater_schemas::codec::Codec;
use chaoseater_schemas::events::{Event, HealthStatus, RegionHealthSampled};
use chaoseater_schemas::ids::{RegionName, TimestampMs};
use chaoseater_schemas::topics::headers;
use chaoseater_schemas::topics::{Topic, TopicNames};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

// The embedded mock cluster keeps a bounded log per partition; larger runs stall there, so stay small.
const EVENTS: usize = 20_000;
// A real broker's log is not bounded: run long enough that start-up (metadata, the first fetch) is noise.
const BROKER_EVENTS: usize = 200_000;
const ROUNDS: usize = 3;

fn events(count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let region = RegionName::new(format!("region-{}", i % 64));
            let at = TimestampMs(1_767_225_600_000 + i as i64);
            Event::RegionHealthSampled(RegionHealthSampled {
                event_id: RegionHealthSampled::id_for(&region, at),
                occurred_at: at,
                region,
                status: HealthStatus::Healthy,
                latency_ms: Some(1.25),
                http_status: Some(200),
                message: None,
                error_rate: None,
            })
        })
        .collect()
}

/// Key, payload, and the two headers the bus writes (type, id).
type Encoded = (String, Vec<u8>, String, String);

fn raw_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// The same producer settings as the bus (idempotent, acks=all, same batching), sending the same bytes
/// and headers, encoded beforehand.
async fn raw_produce(brokers: &str, topic: &str, payloads: &[Encoded]) -> f64 {
    let producer: FutureProducer = raw_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .expect("raw producer");
    let start = Instant::now();
    let mut pending = Vec::with_capacity(payloads.len());
    for (key, payload, kind, id) in payloads {
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: headers::EVENT_TYPE, value: Some(kind.as_str()) })
            .insert(Header { key: headers::EVENT_ID, value: Some(id.as_str()) });
        let mut record = FutureRecord::to(topic).key(key.as_str()).payload(payload.as_slice()).headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(future) => {
                    pending.push(future);
                    break;
                }
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for future in pending {
        future.await.expect("delivery").expect("acknowledged");
    }
    payloads.len() as f64 / start.elapsed().as_secs_f64()
}

/// What the raw consumer reads of each message.
#[derive(Clone, Copy)]
enum RawReads {
    /// The payload alone: the least any consumer does.
    Payload,
    /// Key, payload and every header, read in place (not copied): what librdkafka must do for a
    /// consumer that keeps the headers, as the bus does (the DLQ copies them).
    Everything,
}

/// The same librdkafka settings as the bus consumer (`EventConsumer::assign`), reading the same bytes
/// without decoding or copying them.
async fn raw_consume(brokers: &str, topic: &str, partitions: i32, expected: usize, reads: RawReads) -> f64 {
    let consumer: StreamConsumer = raw_config(brokers)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "20")
        .set("fetch.queue.backoff.ms", "10")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .create()
        .expect("raw consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut start = None;
    let mut bytes = 0usize;
    let mut received = 0;
    while received < expected {
        let message = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(message) => message.expect("message"),
            Err(_) => panic!("raw consumer got {received} of {expected} messages, then nothing for 30 s"),
        };
        // The clock starts at the first message, for both consumers: connecting and the first fetch are
        // start-up, not throughput.
        start.get_or_insert_with(Instant::now);
        bytes += read(&message, reads);
        received += 1;
        // Drain what is ready without waiting, as the bus consumer does.
        while received < expected {
            match futures::FutureExt::now_or_never(consumer.recv()) {
                Some(message) => {
                    bytes += read(&message.expect("message"), reads);
                    received += 1;
                }
                None => break,
            }
        }
    }
    assert!(bytes > 0);
    (expected - 1) as f64 / start.expect("a first message").elapsed().as_secs_f64()
}

/// Touches what `reads` names of a message; returns its byte count.
fn read(message: &rdkafka::message::BorrowedMessage<'_>, reads: RawReads) -> usize {
    use rdkafka::message::Headers;
    let payload = rdkafka::Message::payload(message).map_or(0, <[u8]>::len);
    match reads {
        RawReads::Payload => payload,
        RawReads::Everything => {
            let key = rdkafka::Message::key(message).map_or(0, <[u8]>::len);
            let headers = rdkafka::Message::headers(message).map_or(0, |h| {
                h.iter().map(|h| std::hint::black_box(h.key).len() + h.value.map_or(0, <[u8]>::len)).sum()
            });
            payload + key + headers
        }
    }
}

async fn bus_produce(ctx: &BusContext, events: &[Event]) -> f64 {
    let producer = EventProducer::new(ctx).expect("producer");
    let start = Instant::now();
    producer.publish_all(events).await.expect("acknowledged");
    events.len() as f64 / start.elapsed().as_secs_f64()
}

/// The bus consumer's rate, decoding every event or (to split the cost) only taking the messages; with
/// or without the headers (processors skip them, `EventConsumer::without_headers`).
async fn bus_consume(ctx: &BusContext, expected: usize, decode: bool, headers: bool) -> f64 {
    let topic = ctx.topics.name(Topic::Health);
    let consumer = EventConsumer::assign(ctx, "bench-bus", &[&topic], &HashMap::new(), StartFrom::Beginning)
        .await
        .expect("consumer");
    let consumer = if headers { consumer } else { consumer.without_headers() };
    let mut start = None;
    let mut decoded = 0usize;
    while decoded < expected {
        for message in consumer.next_batch(10_000, Duration::from_secs(10)).await.expect("batch") {
            start.get_or_insert_with(Instant::now);
            if decode {
                ctx.codec.decode(message.payload.as_deref().unwrap_or_default()).expect("decodes");
            }
            decoded += 1;
        }
    }
    (expected - 1) as f64 / start.expect("a first message").elapsed().as_secs_f64()
}

struct Figures {
    produce_raw: f64,
    produce_bus: f64,
    consume_raw: f64,
    consume_bus: f64,
    consume_bus_undecoded: f64,
    consume_bus_headers: f64,
    consume_raw_everything: f64,
}

async fn measure(name: &str, brokers: &str, embedded: Option<&EmbeddedBroker>, events: &[Event]) -> Figures {
    let codec = Codec::new().expect("codec");
    let payloads: Vec<Encoded> = events
        .iter()
        .map(|e| {
            let encoded = codec.encode(e).expect("encode");
            (e.key().to_owned(), encoded, e.kind().name().to_owned(), e.event_id().to_string())
        })
        .collect();
    let mut best = Figures {
        produce_raw: 0.0,
        produce_bus: 0.0,
        consume_raw: 0.0,
        consume_bus: 0.0,
        consume_bus_undecoded: 0.0,
        consume_bus_headers: 0.0,
        consume_raw_everything: 0.0,
    };
    for round in 0..ROUNDS {
        let prefix = format!("bench{}-{}-{round}", std::process::id(), name);
        let mut ctx = BusContext::new(brokers, codec.clone());
        ctx.topics = TopicNames::with_prefix(&prefix);
        let raw_topic = format!("{prefix}.raw");
        match embedded {
            Some(broker) => {
                broker.create_topic(&ctx.topics.name(Topic::Health), Topic::Health.partitions()).expect("topic");
                broker.create_topic(&raw_topic, Topic::Health.partitions()).expect("topic");
            }
            None => {
                admin::ensure_topics(&ctx, &[Topic::Health]).await.expect("topics");
                let mut raw_ctx = ctx.clone();
                raw_ctx.topics = TopicNames::with_prefix(format!("{prefix}.rawp"));
                admin::ensure_topics(&raw_ctx, &[Topic::Health]).await.expect("topics");
            }
        }
        let raw_topic = if embedded.is_some() { raw_topic } else { format!("{prefix}.rawp.health") };
        // Alternate which path goes first, so neither always meets a warmer broker.
        eprintln!("  {name} round {round}: producing");
        let (produce_raw, produce_bus) = if round % 2 == 0 {
            let raw = raw_produce(brokers, &raw_topic, &payloads).await;
            (raw, bus_produce(&ctx, events).await)
        } else {
            let bus = bus_produce(&ctx, events).await;
            (raw_produce(brokers, &raw_topic, &payloads).await, bus)
        };
        eprintln!("  {name} round {round}: consuming");
        let consume_raw =
            raw_consume(brokers, &raw_topic, Topic::Health.partitions(), events.len(), RawReads::Payload).await;
        let consume_raw_everything =
            raw_consume(brokers, &raw_topic, Topic::Health.partitions(), events.len(), RawReads::Everything).await;
        let consume_bus = bus_consume(&ctx, events.len(), true, false).await;
        let consume_bus_undecoded = bus_consume(&ctx, events.len(), false, false).await;
        let consume_bus_headers = bus_consume(&ctx, events.len(), true, true).await;
        eprintln!(
            "  {name} round {round}: produce raw {produce_raw:.0}/s bus {produce_bus:.0}/s, consume raw {consume_raw:.0}/s bus {consume_bus:.0}/s"
        );
        best.produce_raw = best.produce_raw.max(produce_raw);
        best.produce_bus = best.produce_bus.max(produce_bus);
        best.consume_raw = best.consume_raw.max(consume_raw);
        best.consume_bus = best.consume_bus.max(consume_bus);
        best.consume_bus_undecoded = best.consume_bus_undecoded.max(consume_bus_undecoded);
        best.consume_bus_headers = best.consume_bus_headers.max(consume_bus_headers);
        best.consume_raw_everything = best.consume_raw_everything.max(consume_raw_everything);
    }
    best
}

fn report(name: &str, f: &Figures) {
    println!(
        "{name:<10} produce  raw {:>9.0} ev/s   bus {:>9.0} ev/s   bus/raw {:>5.1}%",
        f.produce_raw,
        f.produce_bus,
        100.0 * f.produce_bus / f.produce_raw
    );
    println!(
        "{name:<10} consume  raw, payload only {:>9.0} ev/s   raw, key+payload+headers in place {:>9.0} ev/s",
        f.consume_raw, f.consume_raw_everything
    );
    for (what, rate) in [
        ("bus, not decoding", f.consume_bus_undecoded),
        ("bus, decoding", f.consume_bus),
        ("bus, decoding, with headers", f.consume_bus_headers),
    ] {
        println!(
            "{name:<10} consume  {what:<28} {rate:>9.0} ev/s   of raw payload-only {:>5.1}%   of raw key+payload+headers {:>5.1}%",
            100.0 * rate / f.consume_raw,
            100.0 * rate / f.consume_raw_everything
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    println!(
        "bus throughput, RegionHealthSampled events per path ({EVENTS} embedded, {BROKER_EVENTS} on a real \
         broker), best of {ROUNDS} rounds; all consumers: fetch.wait.max.ms=20, fetch.queue.backoff.ms=10, no auto commit"
    );
    let state = std::env::temp_dir().join(format!("chaoseater-bench-{}", std::process::id()));
    let embedded = EmbeddedBroker::start(&state, &TopicNames::with_prefix("bench-unused")).expect("embedded broker");
    let brokers = embedded.bootstrap_servers();
    let figures = runtime.block_on(measure("embedded", &brokers, Some(&embedded), &events(EVENTS)));
    report("embedded", &figures);
    if let Ok(brokers) = std::env::var("CHAOSEATER_BENCH_BROKERS") {
        let figures = runtime.block_on(measure("broker", &brokers, None, &events(BROKER_EVENTS)));
        report("broker", &figures);
    }
    drop(runtime);
    drop(embedded);
    let _ = std::fs::remove_dir_all(&state);
}

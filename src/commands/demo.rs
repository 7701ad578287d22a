//! `chaoseater demo`: the README's first command. With nothing installed it starts the embedded broker,
//! runs the processors, submits the example campaign through the same gateway as `submit`, sends one
//! malformed message to show the dead-letter path, and prints what the ledger recorded.
//!
//! What it shows grows with the project: region agents, the orchestrator and results join it as they land.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chaoseater_processors::ledger::RunLedger;
use chaoseater_producers::gateway::{RunOverrides, parse_experiments};
use chaoseater_schemas::bus::producer::RawMessage;
use chaoseater_schemas::bus::{EventConsumer, EventProducer, StartFrom, StateStore};
use chaoseater_schemas::events::Event;
use chaoseater_schemas::ids::TimestampMs;
use chaoseater_schemas::topics::Topic;
use tokio::sync::watch;

use crate::cli::DemoArgs;
use crate::config::Config;
use crate::{broker, commands};

const CAMPAIGN: &str = include_str!("../../examples/campaign.yaml");
const DEADLINE: Duration = Duration::from_secs(60);

pub async fn run(args: DemoArgs, config: &Config) -> Result<()> {
    let started = Instant::now();
    let (name, text) = match &args.experiments {
        Some(path) => (path.display().to_string(), std::fs::read_to_string(path)?),
        None => ("examples/campaign.yaml".to_owned(), CAMPAIGN.to_owned()),
    };
    let requests =
        parse_experiments(&name, &text, &RunOverrides::default(), &commands::submit::requester(), TimestampMs::now())
            .map_err(|e| crate::Exit(crate::EXIT_INVALID_INPUT, e.to_string()))?;

    println!("== ChaosEater demo ==");
    let (ctx, embedded) = broker::service_context(config)?;
    commands::ensure_topics(&ctx, embedded.is_some()).await?;
    match &embedded {
        Some(_) => println!("broker     embedded (librdkafka mock cluster) at {}", ctx.brokers),
        None => println!("broker     {}", ctx.brokers),
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let ledger = commands::serve::spawn_processor(RunLedger::NAME, &ctx, config, embedded.is_some(), stop_rx)?;
    println!(
        "processors {} (state in {})",
        RunLedger::NAME,
        commands::processor_state_dir(config, embedded.is_some(), RunLedger::NAME).display()
    );

    let producer = EventProducer::new(&ctx)?;
    let events: Vec<Event> = requests.iter().cloned().map(Event::RunRequested).collect();
    let deliveries = producer.publish_all(&events).await?;
    println!("\nsubmitted {} runs from {name}:", requests.len());
    for (request, delivery) in requests.iter().zip(&deliveries) {
        let e = &request.experiment;
        println!(
            "  {}  {:<20} {:<15} {:<18} {:<13} over {}  -> {}[{}]@{}",
            request.run_id,
            e.name,
            e.layer.as_str(),
            e.fault_type,
            request.mode.as_str(),
            request.regions.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
            ctx.topics.name(Topic::Commands),
            delivery.partition,
            delivery.offset
        );
    }

    // A malformed command, as a broken producer elsewhere might send: it must land in the DLQ, not stop us.
    let marker = format!("malformed-{}", TimestampMs::now().0);
    producer
        .publish_raw(&[RawMessage {
            topic: ctx.topics.name(Topic::Commands),
            key: Some(marker.clone().into_bytes()),
            payload: b"{\"this is\": \"not avro\"}".to_vec(),
            headers: Vec::new(),
        }])
        .await?;
    let dlq = EventConsumer::assign(
        &ctx,
        "chaoseater-demo",
        &[&ctx.topics.name(Topic::Dlq)],
        &Default::default(),
        StartFrom::Beginning,
    )
    .await?;
    let dead = wait_for_dead_letter(&dlq, &marker).await?;
    println!("\nmalformed message sent to {} -> dead-lettered:", ctx.topics.name(Topic::Commands));
    println!("  {}", commands::tail::render(&ctx.codec, &dead));

    // Stop the ledger, then read what it committed (its store is closed once the task ends). Clients go
    // before the embedded broker, or they would log its disappearance as errors.
    let _ = stop_tx.send(true);
    ledger.await??;
    drop(dlq);
    drop(producer);
    let store = StateStore::open(&commands::processor_state_dir(config, embedded.is_some(), RunLedger::NAME))?;
    println!("\nthe run ledger recorded:");
    for request in &requests {
        for entry in RunLedger::timeline(&store, &request.run_id)? {
            println!(
                "  {}  {:<13} {}[{}]@{}",
                request.run_id, entry.event_type, entry.topic, entry.partition, entry.offset
            );
        }
    }
    println!("\nnext: `chaoseater tail --from-beginning` shows the events while `chaoseater serve` runs;");
    println!("region agents and the orchestrator that execute these runs are being built (issues 3 and 4).");
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    drop(embedded);
    Ok(())
}

/// Waits for the dead letter keyed `marker` (a broker that outlives one demo holds older ones too).
async fn wait_for_dead_letter(dlq: &EventConsumer, marker: &str) -> Result<chaoseater_schemas::bus::Received> {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        for message in dlq.next_batch(100, Duration::from_millis(500)).await? {
            if message.key.as_deref() == Some(marker.as_bytes()) {
                return Ok(message);
            }
        }
    }
    bail!("the malformed message did not reach the dead-letter topic within {} s", DEADLINE.as_secs())
}

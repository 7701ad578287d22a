//! Which broker a command talks to: the configured Kafka, or the embedded one.

use anyhow::{Context, Result, anyhow};
use chaoseater_schemas::bus::{BusContext, EmbeddedBroker, embedded};
use chaoseater_schemas::codec::{Codec, ConfluentIds, Encoding, SchemaStore};
use chaoseater_schemas::events::EventKind;
use chaoseater_schemas::topics::TopicNames;
use tracing::info;

use crate::config::Config;

/// The codec of this process: the shipped schemas plus any extra writer schemas configured.
pub fn codec(config: &Config) -> Result<Codec> {
    let mut store = SchemaStore::builtin()?;
    if let Some(dir) = &config.schemas.extra_dir {
        let added = store.add_writer_schemas_from_dir(dir)?;
        info!(dir = %dir.display(), added, "Loaded extra writer schemas.");
    }
    if config.schemas.confluent_ids.is_empty() {
        return Ok(Codec::with_store(store, Encoding::SingleObject));
    }
    let mut ids = ConfluentIds::default();
    for (name, &id) in &config.schemas.confluent_ids {
        let kind = EventKind::from_name(name).ok_or_else(|| {
            let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
            anyhow!("schemas.confluent_ids: unknown event {name:?}; one of {}", names.join(", "))
        })?;
        ids.insert(kind, id);
    }
    Ok(Codec::with_store(store, Encoding::Confluent(ids)))
}

fn context(config: &Config, brokers: String) -> Result<BusContext> {
    let mut ctx = BusContext::new(brokers, codec(config)?);
    ctx.properties = config.kafka.clone();
    ctx.topics = TopicNames::with_prefix(&config.topic_prefix);
    Ok(ctx)
}

/// For client commands (`submit`, `tail`, ...): the configured brokers, or an embedded broker that a
/// `demo` or `serve` started with the same state directory.
pub fn client_context(config: &Config) -> Result<BusContext> {
    if let Some(brokers) = &config.brokers {
        return context(config, brokers.clone());
    }
    match embedded::discover(&config.state_dir) {
        Some(address) => context(config, address),
        None => Err(anyhow!(
            "no broker configured and no embedded broker running for state dir {}.\n\
             Start one in another shell with `chaoseater serve` (same --state-dir), \
             or point at Kafka with --brokers HOST:PORT or CHAOSEATER_BROKERS.",
            config.state_dir.display()
        )),
    }
}

/// For long-running commands (`demo`, `serve`): the configured brokers, or a new embedded broker whose
/// address is written to the state directory. Keep the returned broker alive as long as the service runs.
pub fn service_context(config: &Config) -> Result<(BusContext, Option<EmbeddedBroker>)> {
    if let Some(brokers) = &config.brokers {
        return Ok((context(config, brokers.clone())?, None));
    }
    let names = TopicNames::with_prefix(&config.topic_prefix);
    let broker = EmbeddedBroker::start(&config.state_dir, &names).context("cannot start the embedded broker")?;
    let address = broker.bootstrap_servers();
    info!(
        bootstrap = %address,
        address_file = %config.state_dir.join(embedded::ADDRESS_FILE).display(),
        "No broker configured: started the embedded broker (in memory, gone when this process exits)."
    );
    Ok((context(config, address)?, Some(broker)))
}

//! Topic administration on a real broker (the embedded mock cluster has no CreateTopics: see
//! [`super::embedded`]).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::BusContext;
use super::consumer::METADATA_TIMEOUT;
use crate::error::{Error, Result};
use crate::topics::Topic;

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

/// How long a created topic may take to show in the broker's metadata with a leader for every
/// partition: the controller answers CreateTopics before the brokers' metadata caches have the topic,
/// and a reader that asks at once is told it does not exist.
const VISIBLE_PATIENCE: Duration = Duration::from_secs(30);

/// Creates the topics that are missing; existing ones are left as they are. Returns once every
/// topic it created is in the broker's metadata with its partitions led, so the caller may use them.
pub async fn ensure_topics(ctx: &BusContext, roles: &[Topic]) -> Result<Vec<(String, TopicOutcome)>> {
    let admin: AdminClient<DefaultClientContext> = ctx.client_config().create()?;
    let names: Vec<String> = roles.iter().map(|&role| ctx.topics.name(role)).collect();
    let new_topics: Vec<NewTopic<'_>> = roles
        .iter()
        .zip(&names)
        .map(|(role, name)| {
            // -1: the broker's default.replication.factor, which a production cluster sets (to 3, with
            // min.insync.replicas=2, as the tests' three-node cluster does).
            let topic = NewTopic::new(name, role.partitions(), TopicReplication::Fixed(-1));
            if role.compacted() { topic.set("cleanup.policy", "compact") } else { topic }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut out = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(name) => out.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, TopicOutcome::AlreadyExisted)),
            Err((name, code)) => {
                return Err(Error::Invalid(format!("cannot create topic {name}: {code}")));
            }
        }
    }
    let created: Vec<String> =
        out.iter().filter(|(_, o)| *o == TopicOutcome::Created).map(|(name, _)| name.clone()).collect();
    if !created.is_empty() {
        wait_visible(ctx, created).await?;
    }
    Ok(out)
}

/// Waits until every topic of `names` is in the broker's metadata, each partition with a leader.
async fn wait_visible(ctx: &BusContext, names: Vec<String>) -> Result<()> {
    let consumer = std::sync::Arc::new(ctx.client_config().create::<BaseConsumer>()?);
    let deadline = std::time::Instant::now() + VISIBLE_PATIENCE;
    loop {
        let asking = std::sync::Arc::clone(&consumer);
        // All topics (`None`): asking for one by name would make a broker that auto-creates topics
        // create it, with its defaults.
        let metadata =
            super::consumer::metadata("created topics", move || asking.fetch_metadata(None, METADATA_TIMEOUT)).await?;
        let ready = |name: &String| {
            metadata.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0)
            })
        };
        let missing: Vec<&String> = names.iter().filter(|n| !ready(n)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let missing: Vec<&str> = missing.iter().map(|n| n.as_str()).collect();
            return Err(Error::Invalid(format!(
                "created topics not in the broker's metadata after {} s: {}",
                VISIBLE_PATIENCE.as_secs(),
                missing.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every topic on the broker with its partition count, sorted by name.
pub async fn list_topics(ctx: &BusContext) -> Result<Vec<(String, usize)>> {
    let consumer: BaseConsumer = ctx.client_config().create()?;
    let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, Duration::from_secs(10)))
        .await
        .map_err(|e| Error::Invalid(format!("metadata task failed: {e}")))??;
    let mut topics: Vec<(String, usize)> =
        metadata.topics().iter().map(|t| (t.name().to_owned(), t.partitions().len())).collect();
    topics.sort();
    Ok(topics)
}

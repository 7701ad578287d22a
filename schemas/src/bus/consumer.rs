//! The consumer: manual partition assignment, no auto-commit. Where to start is the caller's business
//! (a processor's state store, or the end of the log for a live `tail`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use tracing::warn;

use super::BusContext;
use crate::error::{Error, Result};

/// Where to start on a partition with no stored position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest message still in the log: processors replay history.
    Beginning,
    /// Only messages written from now on: live subscribers.
    End,
}

/// One message as read from the log.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Received {
    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        let headers = message
            .headers()
            .map(|hdrs| {
                hdrs.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Stored positions: the next offset to read, per (topic, partition).
pub type Positions = HashMap<(String, i32), i64>;

/// A consumer of every partition of some topics.
pub struct EventConsumer {
    partitions: Vec<(String, i32)>,
    /// Arc: the blocking metadata calls run on the blocking pool with a clone of it.
    inner: Arc<StreamConsumer>,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer").field("partitions", &self.partitions.len()).finish_non_exhaustive()
    }
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl EventConsumer {
    /// Assigns every partition of `topics`, each at its stored position or at `default`.
    ///
    /// Offsets are never committed to the broker: `group` only names the client in broker logs.
    pub async fn assign(
        ctx: &BusContext,
        group: &str,
        topics: &[&str],
        positions: &Positions,
        default: StartFrom,
    ) -> Result<Self> {
        let mut config = ctx.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // The embedded mock cluster does not answer a long-poll fetch early (it holds it for the full
            // wait), which would add up to the default 500 ms at every hop of a saga. The wait is what a
            // hop costs there when the topic was idle: 50 ms gave the rollback's reaction a p99 of 110 ms,
            // 20 ms gives ~55 ms (benches/README.md). Kafka answers as soon as data arrives, so on Kafka
            // the setting costs only idle fetches (50 a second per idle consumer).
            .set("fetch.wait.max.ms", "20")
            .set(
                "auto.offset.reset",
                match default {
                    StartFrom::Beginning => "earliest",
                    StartFrom::End => "latest",
                },
            );
        let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
        let mut partitions = Vec::new();
        let mut assignment = TopicPartitionList::new();
        for &topic in topics {
            for partition in partitions_of(&consumer, topic).await? {
                let key = (topic.to_owned(), partition);
                // Kafka answers a fetch at a stored position with the batch that holds it, and librdkafka
                // drops the records before it: a resumed partition starts exactly there.
                let offset = match positions.get(&key) {
                    Some(&next) => Offset::Offset(next),
                    None if default == StartFrom::Beginning => Offset::Beginning,
                    None => Offset::End,
                };
                assignment.add_partition_offset(topic, partition, offset)?;
                partitions.push(key);
            }
        }
        consumer.assign(&assignment)?;
        Ok(Self { partitions, inner: consumer })
    }

    /// The end of every assigned partition now (the offset the next message will get).
    pub async fn high_watermarks(&self) -> Result<Positions> {
        let consumer = Arc::clone(&self.inner);
        let partitions = self.partitions.clone();
        metadata("high watermarks", move || {
            let mut out = Positions::new();
            for (topic, partition) in &partitions {
                let (_, high) = consumer.fetch_watermarks(topic, *partition, METADATA_TIMEOUT)?;
                out.insert((topic.clone(), *partition), high);
            }
            Ok(out)
        })
        .await
    }

    /// Everything in `topics` from the beginning up to their ends as of now, in per-partition order:
    /// reads until every partition reached the high watermark it had at the start.
    pub async fn read_to_end(ctx: &super::BusContext, group: &str, topics: &[&str]) -> Result<Vec<Received>> {
        let consumer = Self::assign(ctx, group, topics, &Positions::new(), StartFrom::Beginning).await?;
        let mut remaining: Positions =
            consumer.high_watermarks().await?.into_iter().filter(|(_, high)| *high > 0).collect();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !remaining.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Invalid(format!("reading {topics:?} to their end took over a minute")));
            }
            for message in consumer.next_batch(1_000, Duration::from_millis(300)).await? {
                let key = (message.topic.clone(), message.partition);
                if remaining.get(&key).is_some_and(|high| message.offset + 1 >= *high) {
                    remaining.remove(&key);
                }
                out.push(message);
            }
        }
        Ok(out)
    }

    /// Waits up to `wait` for a first message, then takes whatever else is ready, up to `max` messages.
    /// Returns an empty batch when nothing arrived in time.
    ///
    /// A broker of the cluster going away is reported by librdkafka as a consumption error, but it is
    /// news, not a failure: librdkafka reconnects and fetches from the new leaders by itself. Such errors
    /// are logged and waited out; only what retrying cannot mend (a topic gone, access refused) is
    /// returned.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> Result<Vec<Received>> {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        let first = loop {
            match tokio::time::timeout_at(deadline, self.inner.recv()).await {
                Err(_elapsed) => return Ok(batch),
                Ok(Ok(message)) => break message,
                Ok(Err(e)) if is_transient(&e) => {
                    warn!(error = %e, "Broker unreachable for now; waiting for librdkafka to reconnect.")
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        };
        batch.push(Received::from_message(&first));
        drop(first);
        while batch.len() < max {
            match self.inner.recv().now_or_never() {
                Some(Ok(message)) => batch.push(Received::from_message(&message)),
                Some(Err(e)) if is_transient(&e) => break,
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        Ok(batch)
    }
}

/// Whether a consumer error only reports the cluster's weather (a broker down, a leader moving, a
/// request timing out), which librdkafka recovers from by itself.
fn is_transient(e: &KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    !matches!(
        e.rdkafka_error_code(),
        Some(
            C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
                | C::Fatal
                | C::InvalidArgument
                | C::UnsupportedFeature
        )
    )
}

/// How long a metadata call keeps retrying while the cluster has no answer (a broker down, a leader
/// being elected: Kafka fences a dead broker after `broker.session.timeout.ms`, 9 s by default).
const METADATA_PATIENCE: Duration = Duration::from_secs(60);

/// Runs a blocking metadata call off the async workers, retrying errors that may pass: with one broker
/// of several gone, a later attempt reaches another.
async fn metadata<T: Send + 'static>(
    what: &str,
    call: impl Fn() -> rdkafka::error::KafkaResult<T> + Send + Sync + 'static,
) -> Result<T> {
    let call = Arc::new(call);
    let deadline = std::time::Instant::now() + METADATA_PATIENCE;
    loop {
        let attempt = Arc::clone(&call);
        let outcome = tokio::task::spawn_blocking(move || attempt())
            .await
            .map_err(|e| Error::Invalid(format!("metadata task failed: {e}")))?;
        match outcome.map_err(Error::from) {
            Ok(value) => return Ok(value),
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                warn!(what, error = %e, "Broker metadata not available yet; retrying.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The partitions of a topic, from broker metadata. A missing topic is an error that says what to do.
async fn partitions_of(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<Vec<i32>> {
    let consumer = Arc::clone(consumer);
    let name = topic.to_owned();
    let metadata = metadata("topic partitions", move || consumer.fetch_metadata(Some(&name), METADATA_TIMEOUT)).await?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().iter().map(|p| p.id()).collect())
        }
        _ => Err(Error::Invalid(format!(
            "topic {topic} does not exist on the broker; create it with `chaoseater topics create`"
        ))),
    }
}

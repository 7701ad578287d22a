//! The consumer: manual partition assignment, no auto-commit. Where to start is the caller's business
//! (a processor's state store, or the end of the log for a live `tail`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

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
                hdrs.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
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
    inner: Arc<StreamConsumer>,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer").finish_non_exhaustive()
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
            .set(
                "auto.offset.reset",
                match default {
                    StartFrom::Beginning => "earliest",
                    StartFrom::End => "latest",
                },
            );
        let consumer: Arc<StreamConsumer> = Arc::new(config.create()?);
        let mut assignment = TopicPartitionList::new();
        for &topic in topics {
            let partitions = partitions_of(&consumer, topic).await?;
            for partition in partitions {
                let offset = match positions.get(&(topic.to_owned(), partition)) {
                    Some(&next) => Offset::Offset(next),
                    None if default == StartFrom::Beginning => Offset::Beginning,
                    None => Offset::End,
                };
                assignment.add_partition_offset(topic, partition, offset)?;
            }
        }
        consumer.assign(&assignment)?;
        Ok(Self { inner: consumer })
    }

    /// Waits up to `wait` for a first message, then takes whatever else is ready, up to `max` messages.
    /// Returns an empty batch when nothing arrived in time.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> Result<Vec<Received>> {
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(wait, self.inner.recv()).await {
            Err(_elapsed) => return Ok(batch),
            Ok(message) => message?,
        };
        batch.push(Received::from_message(&first));
        drop(first);
        while batch.len() < max {
            match self.inner.recv().now_or_never() {
                Some(message) => batch.push(Received::from_message(&message?)),
                None => break,
            }
        }
        Ok(batch)
    }
}

/// The partitions of a topic, from broker metadata. A missing topic is an error that says what to do.
async fn partitions_of(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<Vec<i32>> {
    let consumer = Arc::clone(consumer);
    let name = topic.to_owned();
    // fetch_metadata blocks on the network; keep it off the async workers.
    let metadata =
        tokio::task::spawn_blocking(move || consumer.fetch_metadata(Some(&name), METADATA_TIMEOUT))
            .await
            .map_err(|e| Error::Invalid(format!("metadata task failed: {e}")))??;
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

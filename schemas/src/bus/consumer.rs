//! The consumer: manual partition assignment, no auto-commit. Where to start is the caller's business
//! (a processor's state store, or the end of the log for a live `tail`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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
    config: ClientConfig,
    partitions: Vec<(String, i32)>,
    default: StartFrom,
    /// The librdkafka consumer; replaced when a resumed partition has to be re-read (see `check_resumed`).
    /// std Mutex: held only to clone or swap the Arc, never across an await.
    inner: Mutex<Arc<StreamConsumer>>,
    /// Next offset per partition, and partitions resumed at a stored position whose first record has not
    /// arrived yet. std Mutex, for the same reason.
    tracking: Mutex<Tracking>,
}

#[derive(Debug, Default)]
struct Tracking {
    next: Positions,
    resuming: HashMap<(String, i32), Resume>,
}

/// A partition resumed at `position`; `from_beginning` once it is being re-read from the log start.
#[derive(Debug, Clone, Copy)]
struct Resume {
    position: i64,
    from_beginning: bool,
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
            // Brokers that do not answer a long-poll fetch early (the mock cluster and Tansu hold it for the
            // full wait) would add up to the default 500 ms at every hop of a saga. The wait is what a hop
            // costs when the topic was idle: 50 ms gave the rollback's reaction a p99 of 110 ms, 20 ms gives
            // ~55 ms (benches/README.md) for 50 fetches a second per idle consumer.
            .set("fetch.wait.max.ms", "20")
            .set(
                "auto.offset.reset",
                match default {
                    StartFrom::Beginning => "earliest",
                    StartFrom::End => "latest",
                },
            );
        let probe: Arc<StreamConsumer> = Arc::new(config.create()?);
        let mut partitions = Vec::new();
        let mut tracking = Tracking::default();
        for &topic in topics {
            for partition in partitions_of(&probe, topic).await? {
                let key = (topic.to_owned(), partition);
                if let Some(&next) = positions.get(&key) {
                    tracking.next.insert(key.clone(), next);
                    if next > 0 {
                        tracking.resuming.insert(key.clone(), Resume { position: next, from_beginning: false });
                    }
                }
                partitions.push(key);
            }
        }
        let this =
            Self { config, partitions, default, inner: Mutex::new(Arc::clone(&probe)), tracking: Mutex::new(tracking) };
        this.assign_to(&probe)?;
        Ok(this)
    }

    /// Assigns every partition to `consumer` at its tracked position.
    fn assign_to(&self, consumer: &StreamConsumer) -> Result<()> {
        let tracking = lock(&self.tracking);
        let mut assignment = TopicPartitionList::new();
        for key in &self.partitions {
            let offset = match (tracking.resuming.get(key), tracking.next.get(key)) {
                (Some(resume), _) if resume.from_beginning => Offset::Beginning,
                (_, Some(&next)) => Offset::Offset(next),
                (_, None) if self.default == StartFrom::Beginning => Offset::Beginning,
                (_, None) => Offset::End,
            };
            assignment.add_partition_offset(&key.0, key.1, offset)?;
        }
        consumer.assign(&assignment)?;
        Ok(())
    }

    /// The end of every assigned partition now (the offset the next message will get).
    pub async fn high_watermarks(&self) -> Result<Positions> {
        let consumer = Arc::clone(&lock(&self.inner));
        let partitions = self.partitions.clone();
        // fetch_watermarks blocks on the network; keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            let mut out = Positions::new();
            for (topic, partition) in partitions {
                let (_, high) = consumer.fetch_watermarks(&topic, partition, METADATA_TIMEOUT)?;
                out.insert((topic, partition), high);
            }
            Ok(out)
        })
        .await
        .map_err(|e| Error::Invalid(format!("watermark task failed: {e}")))?
    }

    /// Everything in `topics` from the beginning up to their ends as of now, in per-partition order.
    ///
    /// Reads until every partition reached the high watermark it had at the start, then until the log
    /// stays quiet for a moment: Tansu 0.6.0 reports a high watermark short of the last records of a
    /// batch (seen with 2 records in one batch: watermark 1), so the watermark alone would lose them.
    pub async fn read_to_end(ctx: &super::BusContext, group: &str, topics: &[&str]) -> Result<Vec<Received>> {
        let consumer = Self::assign(ctx, group, topics, &Positions::new(), StartFrom::Beginning).await?;
        let mut remaining: Positions =
            consumer.high_watermarks().await?.into_iter().filter(|(_, high)| *high > 0).collect();
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if std::time::Instant::now() > deadline {
                return Err(Error::Invalid(format!("reading {topics:?} to their end took over a minute")));
            }
            let batch = consumer.next_batch(1_000, Duration::from_millis(300)).await?;
            if batch.is_empty() && remaining.is_empty() {
                return Ok(out);
            }
            for message in batch {
                let key = (message.topic.clone(), message.partition);
                if remaining.get(&key).is_some_and(|high| message.offset + 1 >= *high) {
                    remaining.remove(&key);
                }
                out.push(message);
            }
        }
    }

    /// Waits up to `wait` for a first message, then takes whatever else is ready, up to `max` messages.
    /// Returns an empty batch when nothing arrived in time.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> Result<Vec<Received>> {
        let consumer = Arc::clone(&lock(&self.inner));
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_elapsed) => return Ok(batch),
            Ok(message) => message?,
        };
        batch.push(Received::from_message(&first));
        drop(first);
        while batch.len() < max {
            match consumer.recv().now_or_never() {
                Some(message) => batch.push(Received::from_message(&message?)),
                None => break,
            }
        }
        self.check_resumed(batch)
    }

    /// Makes sure a resumed partition really starts at its stored position.
    ///
    /// Kafka answers a fetch at offset P with the record batch that contains P, and librdkafka drops the
    /// records before P. Tansu 0.6 answers with the first batch that starts at or after P instead, which
    /// silently skips the rest of P's batch. When the first record of a resumed partition lies beyond P,
    /// the partition is re-read from the start of the log on a fresh consumer (so nothing fetched before
    /// can still arrive) and records before P are dropped here. On Kafka this triggers only where offsets
    /// legitimately have gaps (compaction, transaction markers), at the cost of one re-read.
    fn check_resumed(&self, batch: Vec<Received>) -> Result<Vec<Received>> {
        let mut rebuild = false;
        let mut kept = Vec::with_capacity(batch.len());
        {
            let mut tracking = lock(&self.tracking);
            for message in batch {
                let key = (message.topic.clone(), message.partition);
                if let Some(resume) = tracking.resuming.get(&key).copied() {
                    if message.offset < resume.position {
                        continue;
                    }
                    if message.offset > resume.position && !resume.from_beginning {
                        warn!(
                            topic = %message.topic,
                            partition = message.partition,
                            position = resume.position,
                            first_offset = message.offset,
                            "Broker skipped records after the stored position; re-reading the partition."
                        );
                        tracking.resuming.insert(key, Resume { from_beginning: true, ..resume });
                        rebuild = true;
                        break;
                    }
                    tracking.resuming.remove(&key);
                }
                tracking.next.insert(key, message.offset + 1);
                kept.push(message);
            }
        }
        if rebuild {
            // The messages kept so far are returned; everything else is fetched again from the tracked
            // positions by a new consumer.
            let fresh: Arc<StreamConsumer> = Arc::new(self.config.create()?);
            self.assign_to(&fresh)?;
            *lock(&self.inner) = fresh;
        }
        Ok(kept)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The partitions of a topic, from broker metadata. A missing topic is an error that says what to do.
async fn partitions_of(consumer: &Arc<StreamConsumer>, topic: &str) -> Result<Vec<i32>> {
    let consumer = Arc::clone(consumer);
    let name = topic.to_owned();
    // fetch_metadata blocks on the network; keep it off the async workers.
    let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(Some(&name), METADATA_TIMEOUT))
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

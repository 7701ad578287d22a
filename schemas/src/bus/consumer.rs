//! The consumer: manual partition assignment, no auto-commit. Where to start is the caller's business
//! (a processor's state store, or the end of the log for a live `tail`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
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
///
/// A batch's keys, payloads and headers are copied out of librdkafka's buffers into one allocation that
/// its messages share (`Bytes` slices of it): copying each into its own `Vec`s cost seven allocations a
/// message, most of the consumer's time (benches/README.md, "bus").
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub payload: Option<Bytes>,
    pub headers: MessageHeaders,
}

impl Received {
    /// A message built by hand (a refused outbox entry, a test), as if read at `partition`/`offset`.
    pub fn new(
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: &[(String, Vec<u8>)],
    ) -> Self {
        let mut batch = BatchBuilder::default();
        batch.push(
            Arc::from(topic),
            partition,
            offset,
            key,
            payload,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        );
        batch.finish().pop().unwrap_or_else(|| unreachable!("one message pushed"))
    }
}

/// A message's headers, packed: `(key length u32 LE, key, value length u32 LE, value)` per header, in
/// the order the producer wrote them. A header without a value reads as an empty one.
#[derive(Debug, Clone)]
pub struct MessageHeaders {
    packed: Bytes,
    /// False when the consumer did not take the headers (see [`EventConsumer::without_headers`]).
    read: bool,
}

impl Default for MessageHeaders {
    fn default() -> Self {
        Self { packed: Bytes::new(), read: true }
    }
}

impl MessageHeaders {
    /// Whether these are the message's headers, or the consumer skipped them (then they are empty and
    /// [`EventConsumer::headers_of`] reads them again).
    pub fn were_read(&self) -> bool {
        self.read
    }

    /// The headers in order, as (key, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut rest: &[u8] = &self.packed;
        std::iter::from_fn(move || {
            let key = take_field(&mut rest)?;
            let value = take_field(&mut rest)?;
            // Keys were &str when packed; a key that is not UTF-8 cannot occur.
            Some((std::str::from_utf8(key).unwrap_or_default(), value))
        })
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// The headers as owned pairs (to publish them again).
    pub fn to_pairs(&self) -> Vec<(String, Vec<u8>)> {
        self.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect()
    }
}

fn take_field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let (field, tail) = (tail.get(..len)?, &tail[len..]);
    *rest = tail;
    Some(field)
}

/// The messages of one batch, copied into one buffer, then handed out as `Received`s sharing it.
#[derive(Default)]
struct BatchBuilder {
    buffer: Vec<u8>,
    messages: Vec<Spans>,
    /// Whether message headers are taken (see [`EventConsumer::without_headers`]).
    skip_headers: bool,
}

/// Where one message's parts lie in the batch buffer.
struct Spans {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
    headers: Range<usize>,
}

impl BatchBuilder {
    fn with_capacity(messages: usize, skip_headers: bool) -> Self {
        // Events are a few hundred bytes; the buffer grows if they are larger.
        Self {
            buffer: Vec::with_capacity(messages.min(1_024) * 256),
            messages: Vec::with_capacity(messages.min(1_024)),
            skip_headers,
        }
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    fn push<'h>(
        &mut self,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) {
        let key = key.map(|k| self.append(k));
        let payload = payload.map(|p| self.append(p));
        let start = self.buffer.len();
        for (k, v) in headers {
            for field in [k.as_bytes(), v] {
                // Headers are bounded far below 4 GiB by the broker's message limit.
                self.buffer.extend_from_slice(&(field.len() as u32).to_le_bytes());
                self.buffer.extend_from_slice(field);
            }
        }
        let headers = start..self.buffer.len();
        self.messages.push(Spans { topic, partition, offset, key, payload, headers });
    }

    fn push_message(&mut self, topic: Arc<str>, message: &BorrowedMessage<'_>) {
        // Asking librdkafka for the headers makes it parse them (a list and a copy per header): skipped
        // messages never pay for it.
        let headers = if self.skip_headers { None } else { message.headers() };
        let headers = headers.iter().flat_map(|h| h.iter()).map(|h| (h.key, h.value.unwrap_or_default()));
        self.push(topic, message.partition(), message.offset(), message.key(), message.payload(), headers);
    }

    fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.buffer.len();
        self.buffer.extend_from_slice(bytes);
        start..self.buffer.len()
    }

    fn finish(self) -> Vec<Received> {
        let buffer = Bytes::from(self.buffer);
        self.messages
            .into_iter()
            .map(|m| Received {
                topic: m.topic,
                partition: m.partition,
                offset: m.offset,
                key: m.key.map(|r| buffer.slice(r)),
                payload: m.payload.map(|r| buffer.slice(r)),
                headers: MessageHeaders { packed: buffer.slice(m.headers), read: !self.skip_headers },
            })
            .collect()
    }
}

/// Stored positions: the next offset to read, per (topic, partition).
pub type Positions = HashMap<(String, i32), i64>;

/// A consumer of every partition of some topics.
pub struct EventConsumer {
    partitions: Vec<(String, i32)>,
    /// The assigned topics' names, shared by every message read from them.
    topics: Vec<Arc<str>>,
    /// Whether messages come without their headers (see [`EventConsumer::without_headers`]).
    skip_headers: bool,
    /// Arc: the blocking metadata calls run on the blocking pool with a clone of it.
    inner: Arc<StreamConsumer>,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer").field("partitions", &self.partitions.len()).finish_non_exhaustive()
    }
}

pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

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
            // Once more than `queued.min.messages` (100,000) wait in the local queue, librdkafka stops
            // fetching for this long (1 s by default since librdkafka 2.4): a processor replaying
            // history drains the queue long before that and then sits idle. At 10 ms the bus bench's
            // consumer on Kafka went from ~140k to ~290k events/s (benches/README.md).
            .set("fetch.queue.backoff.ms", "10")
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
        let topics = topics.iter().map(|&t| Arc::from(t)).collect();
        Ok(Self { partitions, topics, inner: consumer, skip_headers: false })
    }

    /// Messages come without their headers (`MessageHeaders::were_read` is false): for a consumer
    /// that needs them only for the rare message it dead-letters, and then reads them again with
    /// [`EventConsumer::headers_of`]. On Kafka, librdkafka parsing every message's headers took the
    /// consumer from about 1.1 million to 430,000 events/s (benches/README.md, "bus").
    pub fn without_headers(mut self) -> Self {
        self.skip_headers = true;
        self
    }

    /// The headers of the messages at `places` (topic, partition, offset), read again from the log.
    /// A place the log no longer holds (deleted by retention) is left out of the answer.
    pub async fn headers_of(
        ctx: &BusContext,
        places: &[(&str, i32, i64)],
    ) -> Result<HashMap<(String, i32, i64), MessageHeaders>> {
        let mut from: Positions = Positions::new();
        for &(topic, partition, offset) in places {
            let start = from.entry((topic.to_owned(), partition)).or_insert(offset);
            *start = (*start).min(offset);
        }
        let topics: Vec<&str> = {
            let mut t: Vec<&str> = places.iter().map(|p| p.0).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        // Partitions with nothing wanted start at their end and stay idle.
        let consumer = Self::assign(ctx, "chaoseater-dlq-headers", &topics, &from, StartFrom::End).await?;
        let mut wanted: std::collections::BTreeSet<(String, i32, i64)> =
            places.iter().map(|&(t, p, o)| (t.to_owned(), p, o)).collect();
        let mut out = HashMap::new();
        let deadline = std::time::Instant::now() + METADATA_PATIENCE;
        while !wanted.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "reading back the headers of {} messages took too long",
                    wanted.len()
                )));
            }
            for message in consumer.next_batch(1_000, Duration::from_millis(300)).await? {
                let here = (message.topic.to_string(), message.partition, message.offset);
                if wanted.remove(&here) {
                    out.insert(here, message.headers);
                }
                // Past a wanted offset of this partition without meeting it: the log no longer has it.
                wanted.retain(|(t, p, o)| {
                    !(t.as_str() == &*message.topic && *p == message.partition && *o < message.offset)
                });
            }
        }
        Ok(out)
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
                let key = (message.topic.to_string(), message.partition);
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
        let mut batch = BatchBuilder::with_capacity(max, self.skip_headers);
        let deadline = tokio::time::Instant::now() + wait;
        // One stream for the whole batch: each `recv()` would register and drop a waker of its own.
        let mut stream = self.inner.stream();
        let first = loop {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(None) => return Err(Error::Invalid("the consumer's stream ended".into())),
                Ok(Some(Ok(message))) => break message,
                Ok(Some(Err(e))) if is_transient(&e) => {
                    warn!(error = %e, "Broker unreachable for now; waiting for librdkafka to reconnect.")
                }
                Ok(Some(Err(e))) => return Err(e.into()),
            }
        };
        batch.push_message(self.topic_of(&first), &first);
        drop(first);
        while batch.len() < max {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push_message(self.topic_of(&message), &message),
                Some(Some(Err(e))) if is_transient(&e) => break,
                Some(Some(Err(e))) => return Err(e.into()),
                Some(None) | None => break,
            }
        }
        Ok(batch.finish())
    }

    /// The shared name of a message's topic (one of the assigned ones).
    fn topic_of(&self, message: &BorrowedMessage<'_>) -> Arc<str> {
        let name = message.topic();
        self.topics.iter().find(|t| ***t == *name).cloned().unwrap_or_else(|| Arc::from(name))
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
pub(super) async fn metadata<T: Send + 'static>(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_shares_one_buffer_and_each_message_keeps_its_own_parts() {
        let mut batch = BatchBuilder::with_capacity(2, false);
        let topic: Arc<str> = Arc::from("chaoseater.results");
        let first = [("chaoseater.type", &b"RunCompleted"[..]), ("empty", &b""[..])];
        batch.push(Arc::clone(&topic), 0, 7, Some(b"run-1"), Some(b"\xC3\x01abc"), first.into_iter());
        batch.push(Arc::clone(&topic), 1, 9, None, None, std::iter::empty());
        let [a, b] = <[Received; 2]>::try_from(batch.finish()).expect("two messages");
        assert_eq!((a.partition, a.offset, b.partition, b.offset), (0, 7, 1, 9));
        assert_eq!(a.key.as_deref(), Some(&b"run-1"[..]));
        assert_eq!(a.payload.as_deref(), Some(&b"\xC3\x01abc"[..]));
        assert_eq!(a.headers.iter().collect::<Vec<_>>(), first.to_vec());
        assert_eq!(a.headers.get("chaoseater.type"), Some(&b"RunCompleted"[..]));
        assert_eq!(a.headers.len(), 2);
        assert_eq!((b.key, b.payload), (None, None));
        assert!(b.headers.is_empty() && b.headers.get("chaoseater.type").is_none());
        assert!(Arc::ptr_eq(&a.topic, &b.topic));
    }

    #[test]
    fn a_message_built_by_hand_reads_back_as_given() {
        let headers = vec![("k".to_owned(), vec![1, 2]), ("k".to_owned(), vec![3])];
        let m = Received::new("t", -1, -1, Some(b"key"), Some(b""), &headers);
        assert_eq!(m.headers.to_pairs(), headers);
        assert_eq!(m.headers.get("k"), Some(&[1, 2][..]), "the first of repeated headers");
        assert_eq!((m.key.as_deref(), m.payload.as_deref()), (Some(&b"key"[..]), Some(&b""[..])));
    }
}

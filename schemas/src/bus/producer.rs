//! The event producer: idempotent, `acks=all`, batching.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::BusContext;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::topics::{TopicNames, headers};

/// Where a message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A raw message to publish (the DLQ forwards bytes it could not decode).
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Publishes typed events. Clone it freely: clones share one librdkafka producer.
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
    codec: Codec,
    topics: TopicNames,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").finish_non_exhaustive()
    }
}

impl EventProducer {
    /// An idempotent `acks=all` producer, batching with a short linger (ARCHITECTURE.md, "Guarantees").
    pub fn new(ctx: &BusContext) -> Result<Self> {
        let mut config = ctx.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set("message.timeout.ms", "60000");
        Ok(Self { inner: config.create()?, codec: ctx.codec.clone(), topics: ctx.topics.clone() })
    }

    /// The codec events are encoded with.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Publishes one event and waits until the broker acknowledged it.
    pub async fn publish(&self, event: &Event) -> Result<Delivered> {
        let future = self.enqueue_event(event).await?;
        wait(future).await
    }

    /// Publishes events in order (per key, order is kept) and waits for every acknowledgement.
    pub async fn publish_all(&self, events: &[Event]) -> Result<Vec<Delivered>> {
        let mut pending = Vec::with_capacity(events.len());
        for event in events {
            pending.push(self.enqueue_event(event).await?);
        }
        wait_all(pending).await
    }

    /// Publishes raw messages in order and waits for every acknowledgement.
    pub async fn publish_raw(&self, messages: &[RawMessage]) -> Result<Vec<Delivered>> {
        self.publish_each(messages).await.into_iter().collect()
    }

    /// Publishes raw messages, trying again with a doubling backoff (100 ms up to 10 s) while the
    /// failure is transient, at most `retries` times; a retry may publish a message twice.
    pub async fn publish_raw_retrying(&self, messages: &[RawMessage], retries: u32) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match self.publish_raw(messages).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_retryable() && attempt < retries => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "Publishing failed; trying again.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishes raw messages in order and tells, for each, whether the broker acknowledged it: one
    /// message refused (too large) does not hide what happened to the others.
    pub async fn publish_each(&self, messages: &[RawMessage]) -> Vec<Result<Delivered>> {
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let mut hdrs = OwnedHeaders::new_with_capacity(message.headers.len());
            for (key, value) in &message.headers {
                hdrs = hdrs.insert(Header { key, value: Some(value) });
            }
            pending.push(self.enqueue(&message.topic, message.key.as_deref(), &message.payload, hdrs).await);
        }
        let mut out = Vec::with_capacity(pending.len());
        for future in pending {
            out.push(match future {
                Ok(future) => wait(future).await,
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Encodes and enqueues an event; the returned future resolves on acknowledgement.
    pub async fn enqueue_event(&self, event: &Event) -> Result<DeliveryFuture> {
        let payload = self.codec.encode(event)?;
        let hdrs = OwnedHeaders::new_with_capacity(2)
            .insert(Header { key: headers::EVENT_TYPE, value: Some(event.kind().name()) })
            .insert(Header { key: headers::EVENT_ID, value: Some(event.event_id().as_str()) });
        self.enqueue(&self.topics.name(event.topic()), Some(event.key().as_bytes()), &payload, hdrs).await
    }

    async fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        hdrs: OwnedHeaders,
    ) -> Result<DeliveryFuture> {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload).headers(hdrs);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.inner.send_result(record) {
                Ok(future) => return Ok(future),
                // The local queue is full: librdkafka drains it in its own thread; give it a moment.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((err, _)) => return Err(err.into()),
            }
        }
    }

    /// Waits until every enqueued message is delivered, or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        Ok(self.inner.flush(timeout)?)
    }
}

/// Waits for every acknowledgement, in order.
async fn wait_all(pending: Vec<DeliveryFuture>) -> Result<Vec<Delivered>> {
    let mut out = Vec::with_capacity(pending.len());
    for future in pending {
        out.push(wait(future).await?);
    }
    Ok(out)
}

async fn wait(future: DeliveryFuture) -> Result<Delivered> {
    match future.await {
        Ok(Ok(delivery)) => Ok(Delivered { partition: delivery.partition, offset: delivery.offset }),
        Ok(Err((err, _))) => Err(err.into()),
        Err(_canceled) => Err(Error::Kafka(KafkaError::Canceled)),
    }
}

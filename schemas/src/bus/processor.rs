//! The processor loop: consume a batch, apply each event to state, dead-letter what cannot be decoded or
//! is invalid, commit state + offsets + outbox + applied ids in one sled transaction, then publish the
//! outbox. A crash anywhere loses nothing: before the commit, the batch is simply read again; after it,
//! the outbox is published on restart. Duplicates that a crash between publish and outbox cleanup may
//! cause carry the same deterministic event ids, and every consumer drops ids it already applied.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::BusContext;
use super::consumer::{EventConsumer, Positions, Received, StartFrom};
use super::producer::{EventProducer, RawMessage};
use super::state::{Applied, Commit, OutboxEntry, RunnerStats, StateStore};
use crate::error::Result;
use crate::events::Event;
use crate::ids::TimestampMs;
use crate::topics::{Topic, headers};

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Why a processor refused an event: it goes to the DLQ with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

/// A component that turns events into state changes and new events.
///
/// All durable state goes through the [`StateView`]: the runner commits it atomically with the offsets.
/// A processor keeps nothing in memory that it could not rebuild from the store.
pub trait Processor: Send {
    /// Names the component: its state directory and its client id.
    fn name(&self) -> &'static str;

    /// Topics it consumes.
    fn topics(&self) -> Vec<Topic>;

    /// Applies one event. Returns the events to publish, or a rejection that sends the event to the DLQ.
    fn apply(&mut self, event: &Event, origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, Rejection>;

    /// Topics whose messages are applied first within a batch (a registry the other events refer to).
    /// Order across partitions was never promised, so this reorders nothing a producer could rely on:
    /// it makes "registered, then requested" hold whenever both arrive in one fetch. Defaults to none.
    fn applied_first(&self) -> Vec<Topic> {
        Vec::new()
    }

    /// How often [`Processor::tick`] runs; `None` (the default) never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Time passing, for what no event will trigger (a wait that expires). Its writes and events are
    /// committed like a batch's. Defaults to nothing.
    fn tick(&mut self, _now: TimestampMs, _state: &mut StateView<'_>) -> Result<Vec<Event>, Rejection> {
        Ok(Vec::new())
    }

    /// Called after each committed batch, with the store as committed. Defaults to nothing.
    fn on_commit(&mut self, _store: &StateStore) {}
}

/// A processor's view of its state during a batch: committed values overlaid with the batch's own writes.
#[derive(Debug)]
pub struct StateView<'a> {
    store: &'a StateStore,
    pending: &'a mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> StateView<'a> {
    /// A view over `store` that records writes in `pending` (the runner commits them with the offsets).
    pub fn new(store: &'a StateStore, pending: &'a mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Self {
        Self { store, pending }
    }

    /// The current value of a key, including writes earlier in this batch.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.store.get(key),
        }
    }

    /// Every key with `prefix` and its current value, in key order, including this batch's writes.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = self.store.scan_prefix(prefix)?.into_iter().collect();
        for (key, value) in self.pending.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)) {
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Sets a key.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), Some(value.into()));
    }

    /// Deletes a key.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), None);
    }
}

/// Tuning of the loop.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Most messages applied per commit.
    pub batch_max: usize,
    /// How long to wait for a message before checking for shutdown again.
    pub poll_wait: Duration,
    /// Where to start on partitions with no stored offset.
    pub start_from: StartFrom,
    /// How long applied event ids are remembered to drop duplicates, in event time behind the newest
    /// event applied from the same partition ([`StateStore::forget_applied`]).
    pub dedupe_window: Duration,
}

/// The default dedupe window: a week, far beyond the minutes in which a producer re-publishes after a
/// crash, and the default retention of a Kafka topic.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// How often the runner forgets ids older than the window.
const FORGET_EVERY: Duration = Duration::from_secs(60);

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_max: 1_000,
            poll_wait: Duration::from_millis(200),
            start_from: StartFrom::Beginning,
            dedupe_window: DEFAULT_DEDUPE_WINDOW,
        }
    }
}

/// Runs one processor against the bus.
#[derive(Debug)]
pub struct ProcessorRunner<P> {
    ctx: BusContext,
    processor: P,
    store: StateStore,
    producer: EventProducer,
    options: RunnerOptions,
    /// When a pass forgetting ids past the dedupe window last started, and the pass if it is running.
    forgot_at: Option<std::time::Instant>,
    forgetting: Option<tokio::task::JoinHandle<Result<usize>>>,
}

impl<P: Processor> ProcessorRunner<P> {
    /// A runner for `processor` with its state in `store`.
    pub fn new(ctx: BusContext, processor: P, store: StateStore, options: RunnerOptions) -> Result<Self> {
        let producer = EventProducer::new(&ctx)?;
        Ok(Self { ctx, processor, store, producer, options, forgot_at: None, forgetting: None })
    }

    /// The state store, for readers of the processor's view.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Consumes until `shutdown` resolves, then commits what it applied and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<RunnerStats> {
        let result = self.consume(shutdown).await;
        // Also when consuming failed: the pass holds a handle on the store, which must be released.
        self.finish_forgetting().await;
        result
    }

    async fn consume(&mut self, shutdown: impl Future<Output = ()>) -> Result<RunnerStats> {
        let mut stats = RunnerStats::default();
        // Events committed before a crash but not yet published go out first.
        stats.published += self.drain_outbox().await?;
        self.start_forgetting().await;
        self.finish_forgetting().await;
        let positions = self.store.positions()?;
        let name = self.processor.name();
        let topics: Vec<String> = self.processor.topics().into_iter().map(|t| self.ctx.topics.name(t)).collect();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let consumer = EventConsumer::assign(
            &self.ctx,
            &format!("chaoseater-{name}"),
            &topic_refs,
            &positions,
            self.options.start_from,
        )
        .await?;
        info!(processor = name, topics = ?topics, resumed_partitions = positions.len(), "Processor started.");
        let first: Vec<String> = self.processor.applied_first().into_iter().map(|t| self.ctx.topics.name(t)).collect();
        // Tables first: until the applied-first topics are read up to where they ended at start-up, other
        // topics' messages wait (unapplied, uncommitted), so a restarted or new processor never judges a
        // command against a registry it has only half read.
        let mut catching_up: Positions = if first.is_empty() {
            Positions::new()
        } else {
            consumer
                .high_watermarks()
                .await?
                .into_iter()
                .filter(|(key, high)| first.contains(&key.0) && positions.get(key).copied().unwrap_or(0) < *high)
                .collect()
        };
        let mut held: Vec<Received> = Vec::new();
        let mut ticker = tokio::time::interval(self.processor.tick_interval().unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ticking = self.processor.tick_interval().is_some();
        let mut shutdown = pin!(shutdown);
        loop {
            let mut batch = tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = ticker.tick(), if ticking && catching_up.is_empty() => {
                    self.process_tick(&mut stats).await?;
                    continue;
                }
                batch = consumer.next_batch(self.options.batch_max, self.options.poll_wait) => batch?,
            };
            if !catching_up.is_empty() {
                let (table, rest): (Vec<Received>, Vec<Received>) =
                    batch.into_iter().partition(|m| first.contains(&m.topic));
                held.extend(rest);
                for m in &table {
                    let key = (m.topic.clone(), m.partition);
                    if catching_up.get(&key).is_some_and(|high| m.offset + 1 >= *high) {
                        catching_up.remove(&key);
                    }
                }
                batch = table;
                if catching_up.is_empty() {
                    debug!(processor = name, held = held.len(), "Caught up with the applied-first topics.");
                    batch.append(&mut held);
                }
            }
            if batch.is_empty() {
                continue;
            }
            if !first.is_empty() {
                // Stable: each partition keeps its order.
                batch.sort_by_key(|m| !first.contains(&m.topic));
            }
            self.process(batch, &mut stats).await?;
        }
        self.store.flush()?;
        info!(processor = name, applied = stats.applied, dead_lettered = stats.dead_lettered, "Processor stopped.");
        Ok(stats)
    }

    async fn process(&mut self, batch: Vec<Received>, total: &mut RunnerStats) -> Result<()> {
        let codec = self.ctx.codec.clone();
        let mut commit = Commit::default();
        let stats = &mut commit.stats;
        let mut dead = Vec::new();
        let mut seen_in_batch = std::collections::HashSet::new();
        for message in batch {
            commit.offsets.insert((message.topic.clone(), message.partition), message.offset + 1);
            let origin = Origin { topic: message.topic.clone(), partition: message.partition, offset: message.offset };
            let event = match codec.decode(message.payload.as_deref().unwrap_or_default()) {
                Ok(event) => event,
                Err(err) => {
                    warn!(topic = %origin.topic, partition = origin.partition, offset = origin.offset, error = %err, "Dead-lettered an undecodable message.");
                    dead.push(dead_letter(&self.ctx, &message, &err.to_string(), self.processor.name()));
                    continue;
                }
            };
            let id = event.event_id().as_str().to_owned();
            if seen_in_batch.contains(&id) || self.store.was_applied(&id)? {
                debug!(event_id = %id, "Dropped an event already applied.");
                stats.duplicates_dropped += 1;
                continue;
            }
            let mut view = StateView { store: &self.store, pending: &mut commit.state };
            match self.processor.apply(&event, &origin, &mut view) {
                Ok(outputs) => {
                    for output in outputs {
                        commit.outbox.push(self.outbox_entry(&codec, &output)?);
                    }
                    commit.applied.push(Applied {
                        id: id.clone(),
                        at: event.occurred_at().0,
                        topic: origin.topic.clone(),
                        partition: origin.partition,
                    });
                    seen_in_batch.insert(id);
                    stats.applied += 1;
                }
                Err(Rejection(reason)) => {
                    warn!(topic = %origin.topic, offset = origin.offset, event_id = %id, %reason, "Dead-lettered an invalid event.");
                    dead.push(dead_letter(&self.ctx, &message, &reason, self.processor.name()));
                }
            }
        }
        // Dead letters are acknowledged before the offsets move past them, so none can be lost.
        if !dead.is_empty() {
            self.producer.publish_raw(&dead).await?;
            commit.stats.dead_lettered += dead.len() as u64;
        }
        let has_outbox = !commit.outbox.is_empty();
        let batch_stats = commit.stats;
        self.store.commit(commit)?;
        self.processor.on_commit(&self.store);
        self.start_forgetting().await;
        total.applied += batch_stats.applied;
        total.duplicates_dropped += batch_stats.duplicates_dropped;
        total.dead_lettered += batch_stats.dead_lettered;
        if has_outbox {
            total.published += self.drain_outbox().await?;
        }
        Ok(())
    }

    /// Starts a pass forgetting applied ids older than the dedupe window, on a blocking thread beside
    /// this task (it reads every id), at most once a minute and one at a time.
    async fn start_forgetting(&mut self) {
        if self.forgetting.as_ref().is_some_and(|pass| !pass.is_finished()) {
            return;
        }
        self.finish_forgetting().await;
        if self.forgot_at.is_some_and(|at| at.elapsed() < FORGET_EVERY) {
            return;
        }
        self.forgot_at = Some(std::time::Instant::now());
        let (store, window) = (self.store.clone(), self.options.dedupe_window);
        self.forgetting = Some(tokio::task::spawn_blocking(move || store.forget_applied(window, TimestampMs::now().0)));
    }

    /// Waits for the pass under way, if any, and reports it. A failed pass is retried at the next one:
    /// forgetting is housekeeping, never a reason to stop consuming.
    async fn finish_forgetting(&mut self) {
        let Some(pass) = self.forgetting.take() else {
            return;
        };
        let name = self.processor.name();
        match pass.await {
            Ok(Ok(0)) => {}
            Ok(Ok(forgotten)) => {
                debug!(processor = name, forgotten, "Forgot applied ids older than the dedupe window.")
            }
            Ok(Err(e)) => warn!(processor = name, error = %e, "Could not forget old applied ids; trying again later."),
            Err(e) => warn!(processor = name, error = %e, "The pass forgetting old applied ids failed."),
        }
    }

    fn outbox_entry(&self, codec: &crate::codec::Codec, output: &Event) -> Result<OutboxEntry> {
        Ok(OutboxEntry {
            topic: self.ctx.topics.name(output.topic()),
            key: output.key().as_bytes().to_vec(),
            payload: codec.encode(output)?,
            event_type: output.kind().name().to_owned(),
            event_id: output.event_id().as_str().to_owned(),
        })
    }

    /// Lets the processor see time pass; commits what it wrote and publishes what it emitted.
    async fn process_tick(&mut self, total: &mut RunnerStats) -> Result<()> {
        let codec = self.ctx.codec.clone();
        let mut commit = Commit::default();
        let outputs = {
            let mut view = StateView { store: &self.store, pending: &mut commit.state };
            match self.processor.tick(TimestampMs::now(), &mut view) {
                Ok(outputs) => outputs,
                Err(Rejection(reason)) => {
                    warn!(processor = self.processor.name(), %reason, "A tick failed; nothing of it was committed.");
                    return Ok(());
                }
            }
        };
        if commit.state.is_empty() && outputs.is_empty() {
            return Ok(());
        }
        for output in outputs {
            commit.outbox.push(self.outbox_entry(&codec, &output)?);
        }
        let has_outbox = !commit.outbox.is_empty();
        self.store.commit(commit)?;
        self.processor.on_commit(&self.store);
        if has_outbox {
            total.published += self.drain_outbox().await?;
        }
        Ok(())
    }

    /// Publishes every pending outbox entry, oldest first, and forgets them once acknowledged.
    async fn drain_outbox(&self) -> Result<u64> {
        let pending = self.store.pending_outbox()?;
        if pending.is_empty() {
            return Ok(0);
        }
        let messages: Vec<RawMessage> = pending
            .iter()
            .map(|(_, entry)| RawMessage {
                topic: entry.topic.clone(),
                key: Some(entry.key.clone()),
                payload: entry.payload.clone(),
                headers: vec![
                    (headers::EVENT_TYPE.to_owned(), entry.event_type.clone().into_bytes()),
                    (headers::EVENT_ID.to_owned(), entry.event_id.clone().into_bytes()),
                ],
            })
            .collect();
        self.producer.publish_raw(&messages).await?;
        let seqs: Vec<u64> = pending.iter().map(|(seq, _)| *seq).collect();
        self.store.remove_outbox(&seqs)?;
        Ok(seqs.len() as u64)
    }
}

/// The DLQ copy of a message: same key and bytes, headers naming the error and the origin.
pub fn dead_letter(ctx: &BusContext, message: &Received, error: &str, consumer: &str) -> RawMessage {
    let mut hdrs = message.headers.clone();
    hdrs.push((headers::DLQ_ERROR.to_owned(), error.as_bytes().to_vec()));
    hdrs.push((headers::DLQ_TOPIC.to_owned(), message.topic.clone().into_bytes()));
    hdrs.push((headers::DLQ_PARTITION.to_owned(), message.partition.to_string().into_bytes()));
    hdrs.push((headers::DLQ_OFFSET.to_owned(), message.offset.to_string().into_bytes()));
    hdrs.push((headers::DLQ_CONSUMER.to_owned(), consumer.as_bytes().to_vec()));
    RawMessage {
        topic: ctx.topics.name(Topic::Dlq),
        key: message.key.clone(),
        payload: message.payload.clone().unwrap_or_default(),
        headers: hdrs,
    }
}

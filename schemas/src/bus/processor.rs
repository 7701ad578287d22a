//! The processor loop: consume a batch, apply each event to state, dead-letter what cannot be decoded or
//! is invalid, commit state + offsets + outbox + applied ids in one sled transaction, then publish the
//! outbox. A crash anywhere loses nothing: before the commit, the batch is simply read again; after it,
//! the outbox is published on restart. Duplicates that a crash between publish and outbox cleanup may
//! cause carry the same deterministic event ids, and every consumer drops ids it already applied.
//!
//! Two kinds of failure, never confused: bad input (an undecodable message, an event type that does not
//! belong on its topic, an event the processor refuses) goes to the DLQ and the partition moves on; a
//! transient failure (the state store, the broker) commits nothing and the same batch is applied again
//! after a backoff, as it would be from the stored offsets after a restart. Only when retries run out
//! does the runner return the error, for its supervisor to restart it.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::BusContext;
use super::consumer::{EventConsumer, Positions, Received, StartFrom};
use super::dead_letter::{DeadLetterDuty, dead_letter, misplaced};
use super::producer::{EventProducer, RawMessage};
use super::state::{Applied, Commit, OutboxEntry, RunnerStats, StateStore};
pub use super::view::StateView;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::ids::TimestampMs;
use crate::limits::truncate;
use crate::topics::{Topic, headers};

/// Where an event came from, and when it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The runner's clock as it applies the batch (one reading per batch): the time a processor
    /// stamps and measures deadlines by, so that no processor reads the wall clock itself and tests
    /// set the time ([`RunnerOptions::clock`]).
    pub now: TimestampMs,
}

/// The runner's clock: the wall clock in production, a test's own in tests.
pub type Clock = fn() -> TimestampMs;

/// Why a processor refused an event: it goes to the DLQ with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

/// Why an event (or a tick) was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Bad input: the event goes to the DLQ with this reason and its partition moves on.
    #[error("rejected: {}", .0.0)]
    Rejected(Rejection),
    /// A failure a retry may cure (the state store, the broker): nothing of the batch is committed and
    /// the batch is applied again.
    #[error("transient: {0}")]
    Transient(Error),
    /// The processor cannot go on (its own state does not parse): nothing is committed and the runner
    /// stops with this error, since neither a retry nor the DLQ can mend it (`serve` shows the
    /// processor degraded and restarts it).
    #[error("fatal: {0}")]
    Fatal(Error),
}

impl From<Rejection> for ApplyError {
    fn from(r: Rejection) -> Self {
        ApplyError::Rejected(r)
    }
}

/// A store or broker error is transient when a retry can help (see [`Error::is_retryable`]); anything
/// else the crate's error names is bad input.
impl From<Error> for ApplyError {
    fn from(e: Error) -> Self {
        match e {
            Error::CorruptState { .. } => ApplyError::Fatal(e),
            e if e.is_retryable() => ApplyError::Transient(e),
            e => ApplyError::Rejected(Rejection(e.to_string())),
        }
    }
}

/// A component that turns events into state changes and new events.
///
/// All durable state goes through the [`StateView`]: the runner commits it atomically with the offsets.
/// A processor keeps nothing in memory that it could not rebuild from the store.
pub trait Processor: Send {
    /// Names the component: its state directory and its client id.
    fn name(&self) -> &'static str;

    /// Topics it consumes.
    fn topics(&self) -> Vec<Topic>;

    /// Applies one event. Returns the events to publish; a rejection sends the event to the DLQ, a
    /// transient error has the whole batch applied again. The runner only passes events whose type
    /// belongs on the topic they were read from (the catalogue's [`Event::topic`]); others are
    /// dead-lettered unapplied.
    fn apply(&mut self, event: &Event, origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError>;

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
    fn tick(&mut self, _now: TimestampMs, _state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        Ok(Vec::new())
    }

    /// Called after each committed batch, with the store as committed. Defaults to nothing.
    fn on_commit(&mut self, _store: &StateStore) {}

    /// Called when a batch (or tick) is abandoned uncommitted after a transient failure: forget what
    /// was kept for `on_commit`, since the batch will be applied again. Defaults to nothing.
    fn on_discard(&mut self) {}
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
    /// Which topics' undecodable or misplaced messages this runner copies to the DLQ.
    pub dead_letters: DeadLetterDuty,
    /// How often a transient failure is retried (with a doubling backoff) before the runner gives up
    /// and returns the error to its supervisor.
    pub retries: u32,
    /// Where `apply` ([`Origin::now`]), `tick` and the dedupe window get the time.
    pub clock: Clock,
}

/// The first wait after a transient failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
            dead_letters: DeadLetterDuty::All,
            retries: 8,
            clock: TimestampMs::now,
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
    /// Per partition, the offset up to which dead letters are already published: a batch applied again
    /// after a transient failure does not publish its dead letters twice.
    dead_through: std::collections::HashMap<(String, i32), i64>,
}

impl<P: Processor> ProcessorRunner<P> {
    /// A runner for `processor` with its state in `store`.
    pub fn new(ctx: BusContext, processor: P, store: StateStore, options: RunnerOptions) -> Result<Self> {
        let producer = EventProducer::new(&ctx)?;
        Ok(Self {
            ctx,
            processor,
            store,
            producer,
            options,
            forgot_at: None,
            forgetting: None,
            dead_through: Default::default(),
        })
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
        // Headers are read back only for the messages dead-lettered (see `dead_letters`).
        let consumer = EventConsumer::assign(
            &self.ctx,
            &format!("chaoseater-{name}"),
            &topic_refs,
            &positions,
            self.options.start_from,
        )
        .await?
        .without_headers();
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
                    batch.into_iter().partition(|m| first.iter().any(|t| **t == *m.topic));
                held.extend(rest);
                for m in &table {
                    let key = (m.topic.to_string(), m.partition);
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
                batch.sort_by_key(|m| !first.iter().any(|t| **t == *m.topic));
            }
            self.process(batch, &mut stats).await?;
        }
        self.store.flush()?;
        info!(processor = name, applied = stats.applied, dead_lettered = stats.dead_lettered, "Processor stopped.");
        Ok(stats)
    }

    /// Applies a batch and commits it; after a transient failure (nothing committed) applies the same
    /// batch again, with a doubling backoff, until the retries run out.
    async fn process(&mut self, batch: Vec<Received>, total: &mut RunnerStats) -> Result<()> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        let batch_stats = loop {
            match self.apply_and_commit(&batch).await {
                Ok(stats) => break stats,
                Err(e) => {
                    self.processor.on_discard();
                    if !e.is_retryable() || attempt >= self.options.retries {
                        return Err(e);
                    }
                    attempt += 1;
                    warn!(processor = self.processor.name(), attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "A batch failed and nothing of it was committed; applying it again.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        self.processor.on_commit(&self.store);
        self.start_forgetting().await;
        total.applied += batch_stats.applied;
        total.duplicates_dropped += batch_stats.duplicates_dropped;
        total.dead_lettered += batch_stats.dead_lettered;
        total.published += self.drain_outbox().await?;
        Ok(())
    }

    /// One try at a batch: apply every event, publish the dead letters, commit. Returns what it did.
    async fn apply_and_commit(&mut self, batch: &[Received]) -> Result<RunnerStats> {
        let codec = self.ctx.codec.clone();
        let mut commit = Commit::default();
        let mut dead: Vec<(&Received, String)> = Vec::new();
        let mut seen_in_batch = std::collections::HashSet::new();
        let now = (self.options.clock)();
        for message in batch {
            commit.offsets.insert((message.topic.to_string(), message.partition), message.offset + 1);
            let origin =
                Origin { topic: message.topic.to_string(), partition: message.partition, offset: message.offset, now };
            let role = self.ctx.topics.role_of(&origin.topic);
            let duty = self.options.dead_letters.covers(role);
            let event = match codec.decode(message.payload.as_deref().unwrap_or_default()) {
                Ok(event) => event,
                Err(err) => {
                    if duty {
                        warn!(topic = %origin.topic, partition = origin.partition, offset = origin.offset, error = %err, "Dead-lettered an undecodable message.");
                        dead.push((message, err.to_string()));
                    }
                    continue;
                }
            };
            if let Some(reason) = misplaced(&self.ctx.topics, &origin.topic, role, &event) {
                if duty {
                    warn!(topic = %origin.topic, offset = origin.offset, kind = event.kind().name(), "Dead-lettered an event on a topic it does not belong to.");
                    dead.push((message, reason));
                }
                continue;
            }
            let id = event.event_id().as_str().to_owned();
            if seen_in_batch.contains(&id) || self.store.was_applied(&id)? {
                debug!(event_id = %truncate(&id, 128), "Dropped an event already applied.");
                commit.stats.duplicates_dropped += 1;
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
                    commit.stats.applied += 1;
                }
                Err(ApplyError::Rejected(Rejection(reason))) => {
                    warn!(topic = %origin.topic, offset = origin.offset, event_id = %truncate(&id, 128), reason = %truncate(&reason, 512), "Dead-lettered an invalid event.");
                    dead.push((message, reason));
                }
                Err(ApplyError::Transient(e) | ApplyError::Fatal(e)) => return Err(e),
            }
        }
        // Those published by an earlier try at this batch are not published again.
        dead.retain(|(m, _)| {
            self.dead_through.get(&(m.topic.to_string(), m.partition)).is_none_or(|through| m.offset >= *through)
        });
        // Dead letters are acknowledged before the offsets move past them, so none can be lost.
        if !dead.is_empty() {
            let letters = self.dead_letters(&dead).await?;
            self.producer.publish_raw(&letters).await?;
            for (m, _) in &dead {
                let through = self.dead_through.entry((m.topic.to_string(), m.partition)).or_insert(0);
                *through = (*through).max(m.offset + 1);
            }
            commit.stats.dead_lettered += dead.len() as u64;
        }
        let stats = commit.stats;
        self.store.commit(commit)?;
        Ok(stats)
    }

    /// The DLQ copies of `dead` (message, reason), each with its original headers: the consumer skips
    /// headers, so those are read back from the log here (dead letters are rare).
    async fn dead_letters(&self, dead: &[(&Received, String)]) -> Result<Vec<RawMessage>> {
        let unread: Vec<(&str, i32, i64)> = dead
            .iter()
            .filter(|(m, _)| !m.headers.were_read())
            .map(|(m, _)| (&*m.topic, m.partition, m.offset))
            .collect();
        let found = if unread.is_empty() {
            std::collections::HashMap::new()
        } else {
            EventConsumer::headers_of(&self.ctx, &unread).await?
        };
        let name = self.processor.name();
        Ok(dead
            .iter()
            .map(|(m, reason)| match found.get(&(m.topic.to_string(), m.partition, m.offset)) {
                Some(headers) => {
                    let original = Received { headers: headers.clone(), ..(*m).clone() };
                    dead_letter(&self.ctx, &original, reason, name)
                }
                None => {
                    if !m.headers.were_read() {
                        warn!(topic = %m.topic, partition = m.partition, offset = m.offset, "Dead-lettered without the original headers: the log no longer holds the message.");
                    }
                    dead_letter(&self.ctx, m, reason, name)
                }
            })
            .collect())
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
        let (store, window, now) = (self.store.clone(), self.options.dedupe_window, (self.options.clock)());
        self.forgetting = Some(tokio::task::spawn_blocking(move || store.forget_applied(window, now.0)));
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

    /// Lets the processor see time pass; commits what it wrote and publishes what it emitted. A tick
    /// that fails commits nothing; the next one tries again.
    async fn process_tick(&mut self, total: &mut RunnerStats) -> Result<()> {
        let codec = self.ctx.codec.clone();
        let mut commit = Commit::default();
        let outputs = {
            let mut view = StateView { store: &self.store, pending: &mut commit.state };
            match self.processor.tick((self.options.clock)(), &mut view) {
                Ok(outputs) => outputs,
                Err(ApplyError::Fatal(e)) => {
                    self.processor.on_discard();
                    return Err(e);
                }
                Err(e) => {
                    self.processor.on_discard();
                    warn!(processor = self.processor.name(), error = %e, "A tick failed; nothing of it was committed.");
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
        if let Err(e) = self.store.commit(commit) {
            self.processor.on_discard();
            if !e.is_retryable() {
                return Err(e);
            }
            warn!(processor = self.processor.name(), error = %e, "Committing a tick failed; the next tick tries again.");
            return Ok(());
        }
        self.processor.on_commit(&self.store);
        total.published += self.drain_outbox().await?;
        Ok(())
    }

    /// Publishes every pending outbox entry, oldest first, and forgets each once acknowledged. A
    /// transient failure is retried with a doubling backoff; an entry the broker refuses for good
    /// (larger than its limit: a bug, since events are bounded by construction) is logged at error and
    /// goes to the DLQ, cut to fit, so that it blocks nothing and is not lost without trace.
    async fn drain_outbox(&self) -> Result<u64> {
        let mut backoff = FIRST_BACKOFF;
        let mut published = 0;
        for attempt in 0.. {
            let pending = self.store.pending_outbox()?;
            if pending.is_empty() {
                return Ok(published);
            }
            let messages: Vec<RawMessage> = pending.iter().map(|(_, entry)| outbox_message(entry)).collect();
            let results = self.producer.publish_each(&messages).await;
            let mut done = Vec::new();
            let mut refused = Vec::new();
            let mut failure = None;
            for (((seq, _), message), result) in pending.iter().zip(&messages).zip(results) {
                match result {
                    Ok(_) => done.push(*seq),
                    Err(e) if !e.is_retryable() => {
                        error!(processor = self.processor.name(), topic = %message.topic, error = %e, "The broker refused an event of ours; it goes to the DLQ instead.");
                        let as_read = Received::new(
                            &message.topic,
                            -1,
                            -1,
                            message.key.as_deref(),
                            Some(&message.payload),
                            &message.headers,
                        );
                        let reason = format!("the broker refused this event: {e}");
                        refused.push((*seq, dead_letter(&self.ctx, &as_read, &reason, self.processor.name())));
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            let letters: Vec<RawMessage> = refused.iter().map(|(_, letter)| letter.clone()).collect();
            for ((seq, _), result) in refused.iter().zip(self.producer.publish_each(&letters).await) {
                match result {
                    Ok(_) => done.push(*seq),
                    Err(e) => {
                        failure.get_or_insert(e);
                    }
                }
            }
            self.store.remove_outbox(&done)?;
            published += done.len() as u64;
            let Some(e) = failure else { return Ok(published) };
            if attempt >= self.options.retries {
                return Err(e);
            }
            warn!(processor = self.processor.name(), attempt = attempt + 1, error = %e, backoff_ms = backoff.as_millis() as u64, "Publishing the outbox failed; trying again.");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Ok(published)
    }
}

/// An outbox entry as the message to publish.
fn outbox_message(entry: &OutboxEntry) -> RawMessage {
    RawMessage {
        topic: entry.topic.clone(),
        key: Some(entry.key.clone()),
        payload: entry.payload.clone(),
        headers: vec![
            (headers::EVENT_TYPE.to_owned(), entry.event_type.clone().into_bytes()),
            (headers::EVENT_ID.to_owned(), entry.event_id.clone().into_bytes()),
        ],
    }
}

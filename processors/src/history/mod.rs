//! The history materializer: consumes chaoseater.results, .health and .rollback and writes them as Parquet
//! tables under the history directory (hive partitions `date=YYYY-MM-DD/`), for DataFusion, DuckDB,
//! pyarrow and polars alike.
//!
//! It keeps no offsets in a state store: the files are the state. What it consumed from each topic
//! partition since its last flush is written as one segment ([`files`]) whose file names carry the offset
//! range; a restart resumes each partition at the end of its last committed segment, so a crash at any
//! point loses nothing and writes nothing twice. Buffers flush when they hold `max_rows` rows or the oldest
//! row is `max_age` old, and at shutdown. Small segments are compacted now and then. A result published
//! twice (same event id at another offset, e.g. a dispatcher that crashed after publishing) is kept once.

mod component;
mod files;
pub mod synthetic;
pub mod tables;

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::{Duration, Instant};

use chaoseater_schemas::bus::dead_letter::{DeadLetterDuty, dead_letter, misplaced};
use chaoseater_schemas::bus::{BusContext, EventConsumer, EventProducer, StartFrom};
use chaoseater_schemas::events::Event;
use chaoseater_schemas::topics::{Topic, TopicNames};
pub use component::{HistoryComponent, HistoryConfig};
pub use files::{HistoryDir, HistoryError, Pruned, Recovery, Segment, day};
use tables::Rows;

/// When the materializer writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryOptions {
    /// Flush when this many rows are buffered.
    pub max_rows: usize,
    /// Flush when the oldest buffered message is this old.
    pub max_age: Duration,
    /// Compact segments under this many rows, every `compact_every` flushes.
    pub compact_rows: u64,
    pub compact_every: u32,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        Self { max_rows: 100_000, max_age: Duration::from_secs(10), compact_rows: 100_000, compact_every: 20 }
    }
}

/// What a materializer run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistoryStats {
    pub messages: u64,
    pub rows: u64,
    pub segments: u64,
    pub duplicates_dropped: u64,
    pub dead_lettered: u64,
}

/// Messages of one partition since the last flush.
#[derive(Debug)]
pub struct Pending {
    pub start: i64,
    pub end: i64,
    pub rows: Rows,
}

/// The event ids of the results already in the history, as 128-bit keys: a UUID (what our producers
/// write) is its own key, any other id its 128-bit hash. 16 bytes an id instead of a String's ~60, and no
/// string hashing on the hot path.
#[derive(Debug, Default, Clone)]
pub struct SeenIds(HashSet<u128>);

impl SeenIds {
    /// Records an id; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        self.0.insert(Self::key(id))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn key(id: &str) -> u128 {
        // Only the canonical form (lower-case, hyphenated, as our ids are) is read as a UUID: the parser
        // also takes upper case, braces and bare hex, and two ids that differ as strings must stay two.
        let canonical = id.len() == 36
            && id.bytes().enumerate().all(|(i, b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        let parsed = if canonical { uuid::Uuid::try_parse(id).ok() } else { None };
        parsed.map(|u| u.as_u128()).unwrap_or_else(|| {
            // Two differently salted 64-bit hashes (std's SipHash with fixed keys: stable across runs).
            let half = |salt: u8| {
                let mut h = std::hash::DefaultHasher::new();
                (salt, id).hash(&mut h);
                h.finish()
            };
            (u128::from(half(1)) << 64) | u128::from(half(2))
        })
    }
}

/// What the materializer holds between flushes: the rows of each partition's messages since the last
/// segment, and the ids of the results already in the history (a result published twice is kept once).
#[derive(Debug, Default)]
pub struct Buffer {
    pending: BTreeMap<String, BTreeMap<i32, Pending>>,
    seen: SeenIds,
    rows: usize,
    oldest: Option<Instant>,
}

impl Buffer {
    /// A buffer that knows the results already in the history.
    pub fn new(seen: SeenIds) -> Self {
        Self { seen, ..Self::default() }
    }

    /// Takes one message: its offset always (a segment covers every offset it read), its rows when it
    /// decodes. An undecodable payload is returned as an error, for the dead-letter topic.
    pub fn absorb(
        &mut self,
        codec: &chaoseater_schemas::codec::Codec,
        topics: &TopicNames,
        (topic, partition, offset): (&str, i32, i64),
        payload: &[u8],
        stats: &mut HistoryStats,
    ) -> Result<(), chaoseater_schemas::Error> {
        stats.messages += 1;
        // Looked up by &str: no allocation per message once the topic is known.
        if !self.pending.contains_key(topic) {
            self.pending.insert(topic.to_owned(), BTreeMap::new());
        }
        let part = self.pending.get_mut(topic).expect("just inserted").entry(partition).or_insert(Pending {
            start: offset,
            end: offset,
            rows: Rows::default(),
        });
        part.end = offset + 1;
        self.oldest.get_or_insert_with(Instant::now);
        let event = codec.decode(payload)?;
        // The catalogue gives each type one topic: a RegionResult on the health topic is no result. The
        // runner's rule, under the same prefix.
        if let Some(reason) = misplaced(topics, topic, topics.role_of(topic), &event) {
            return Err(chaoseater_schemas::Error::Invalid(reason));
        }
        // A result or an A/B report published twice (a producer retrying after a crash) is kept once.
        if matches!(event, Event::RegionResult(_) | Event::AbTestConcluded(_))
            && !self.seen.insert(event.event_id().as_str())
        {
            stats.duplicates_dropped += 1;
            return Ok(());
        }
        self.rows += part.rows.push(&event);
        Ok(())
    }

    /// Whether it is time to write: `max_rows` rows held, or the oldest message `max_age` old.
    pub fn due(&self, options: &HistoryOptions) -> bool {
        self.rows >= options.max_rows || self.oldest.is_some_and(|t| t.elapsed() >= options.max_age)
    }

    /// Everything held, by partition; the buffer is empty afterwards.
    pub fn take(&mut self) -> Vec<((String, i32), Pending)> {
        self.rows = 0;
        self.oldest = None;
        std::mem::take(&mut self.pending)
            .into_iter()
            .flat_map(|(topic, parts)| parts.into_iter().map(move |(p, pending)| ((topic.clone(), p), pending)))
            .collect()
    }
}

/// The materializer.
#[derive(Debug)]
pub struct Materializer {
    ctx: BusContext,
    dir: HistoryDir,
    options: HistoryOptions,
    /// Names the log being read when it is not the one durable Kafka log: the embedded broker starts
    /// empty every session, so its offsets are kept apart (`{topic}@{log}` in segment names) and a new
    /// session reads from the start without touching the files of earlier ones.
    log: Option<String>,
    /// Which topics' undecodable or misplaced messages it copies to the DLQ.
    dead_letters: DeadLetterDuty,
}

/// The topics the history keeps.
pub const TOPICS: [Topic; 3] = [Topic::Results, Topic::Health, Topic::Rollback];

impl Materializer {
    pub const NAME: &'static str = "history";

    /// Opens the history directory at `root` (recovering from an interrupted write).
    pub fn open(ctx: BusContext, root: &Path, options: HistoryOptions) -> Result<Self, HistoryError> {
        let (dir, recovery) = HistoryDir::open(root)?;
        if recovery.orphan_files > 0 || recovery.superseded_segments > 0 {
            tracing::warn!(
                orphan_files = recovery.orphan_files,
                superseded_segments = recovery.superseded_segments,
                "History: removed the remains of an interrupted write."
            );
        }
        Ok(Self { ctx, dir, options, log: None, dead_letters: DeadLetterDuty::All })
    }

    /// Keeps this log's offsets apart from other logs' (see the field).
    pub fn with_log(mut self, log: impl Into<String>) -> Self {
        self.log = Some(log.into());
        self
    }

    /// Copies to the DLQ only what `duty` covers (other consumers of the same topics cover the rest).
    pub fn with_dead_letter_duty(mut self, duty: DeadLetterDuty) -> Self {
        self.dead_letters = duty;
        self
    }

    /// The name a topic has in segment names.
    fn segment_topic(&self, topic: &str) -> String {
        match &self.log {
            Some(log) => format!("{topic}@{log}"),
            None => topic.to_owned(),
        }
    }

    /// Consumes until `shutdown` resolves, then flushes what it holds.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<HistoryStats, MaterializerError> {
        let mut stats = HistoryStats::default();
        // The start-up scan reads every segment's name and the experiment ids in the results: file
        // work, off the async threads.
        let dir = self.dir.clone();
        let (written, seen) =
            tokio::task::spawn_blocking(move || Ok::<_, HistoryError>((dir.positions()?, dir.experiment_ids()?)))
                .await
                .map_err(|e| HistoryError::Invalid(format!("start-up scan task: {e}")))??;
        let positions: chaoseater_schemas::bus::consumer::Positions = written
            .into_iter()
            .filter_map(|((key, partition), end)| {
                let topic = match &self.log {
                    Some(log) => key.strip_suffix(&format!("@{log}"))?.to_owned(),
                    None if key.contains('@') => return None,
                    None => key,
                };
                Some(((topic, partition), end))
            })
            .collect();
        let topics: Vec<String> = TOPICS.iter().map(|t| self.ctx.topics.name(*t)).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let consumer =
            EventConsumer::assign(&self.ctx, "chaoseater-history", &refs, &positions, StartFrom::Beginning).await?;
        let producer = EventProducer::new(&self.ctx)?;
        let mut buffer = Buffer::new(seen);
        tracing::info!(dir = %self.dir.root().display(), resumed_partitions = positions.len(), "History materializer started.");
        let mut flushes = 0u32;
        let mut ticker = tokio::time::interval(Duration::from_millis(250));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let batch = tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = ticker.tick() => Vec::new(),
                batch = consumer.next_batch(10_000, Duration::from_millis(200)) => batch?,
            };
            let mut dead = Vec::new();
            for message in batch {
                let place = (&*message.topic, message.partition, message.offset);
                let payload = message.payload.as_deref().unwrap_or_default();
                if let Err(e) = buffer.absorb(&self.ctx.codec, &self.ctx.topics, place, payload, &mut stats)
                    && self.dead_letters.covers(self.ctx.topics.role_of(&message.topic))
                {
                    tracing::warn!(topic = %message.topic, offset = message.offset, error = %e, "Dead-lettered an undecodable message.");
                    dead.push(dead_letter(&self.ctx, &message, &e.to_string(), Self::NAME));
                }
            }
            if !dead.is_empty() {
                // Acknowledged before the segment covering them is committed, so none is lost.
                producer.publish_raw_retrying(&dead, 8).await?;
                stats.dead_lettered += dead.len() as u64;
            }
            if buffer.due(&self.options) {
                self.flush(buffer.take(), &mut stats).await?;
                flushes += 1;
                if flushes.is_multiple_of(self.options.compact_every) {
                    self.compact().await;
                }
            }
        }
        self.flush(buffer.take(), &mut stats).await?;
        tracing::info!(rows = stats.rows, segments = stats.segments, "History materializer stopped.");
        Ok(stats)
    }

    /// Writes every partition's pending rows as a committed segment, off the async workers.
    async fn flush(&self, work: Vec<((String, i32), Pending)>, stats: &mut HistoryStats) -> Result<(), HistoryError> {
        let work: Vec<((String, i32), Pending)> =
            work.into_iter().map(|((t, p), rows)| ((self.segment_topic(&t), p), rows)).collect();
        if work.is_empty() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for ((topic, partition), p) in work {
                out.push(dir.write_segment(&topic, partition, p.start, p.end, p.rows)?);
            }
            Ok::<_, HistoryError>(out)
        })
        .await
        .map_err(|e| HistoryError::Invalid(format!("flush task: {e}")))??;
        for segment in written {
            stats.rows += segment.rows;
            stats.segments += 1;
            tracing::debug!(segment = %segment.name(), rows = segment.rows, "History segment committed.");
        }
        Ok(())
    }

    async fn compact(&self) {
        let (dir, rows) = (self.dir.clone(), self.options.compact_rows);
        match tokio::task::spawn_blocking(move || dir.compact(rows)).await {
            Ok(Ok(merged)) if merged > 0 => tracing::info!(merged, "History: compacted small segments."),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "History: compaction failed; the segments stay as they are."),
            Err(e) => tracing::warn!(error = %e, "History: compaction task failed."),
        }
    }
}

/// The materializer's error: the history directory's or the bus's.
#[derive(Debug, thiserror::Error)]
pub enum MaterializerError {
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Bus(#[from] chaoseater_schemas::Error),
}

#[cfg(test)]
mod tests;

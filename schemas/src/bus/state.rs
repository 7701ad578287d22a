//! A component's sled state store: its state, the next offset of every partition it read, its outbox of
//! events to publish, and the ids of the events it applied. One [`Commit`] changes all four atomically, so
//! a crash at any point leaves state and offsets in step: the component resumes exactly where its state is.
//!
//! Applied ids are remembered for a window of event time ([`StateStore::forget_applied`]), not forever:
//! a duplicate is a producer publishing an event again after a crash (its outbox, a retried send), which
//! lands beside the original in the log, and a store that kept every id would grow with every event.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Transactional, Tree};

use super::consumer::Positions;
use crate::error::{Error, Result};

/// Parses a stored JSON value; what does not parse is [`Error::CorruptState`] naming the key.
pub fn parse_state<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::CorruptState { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

/// An event waiting to be published, already encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub topic: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub event_type: String,
    pub event_id: String,
}

impl OutboxEntry {
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 128);
        for field in
            [self.topic.as_bytes(), &self.key, self.event_type.as_bytes(), self.event_id.as_bytes(), &self.payload]
        {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }

    fn from_bytes(mut bytes: &[u8]) -> Option<Self> {
        let mut take = || -> Option<Vec<u8>> {
            let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let field = bytes.get(4..4 + len)?.to_vec();
            bytes = &bytes[4 + len..];
            Some(field)
        };
        Some(Self {
            topic: String::from_utf8(take()?).ok()?,
            key: take()?,
            event_type: String::from_utf8(take()?).ok()?,
            event_id: String::from_utf8(take()?).ok()?,
            payload: take()?,
        })
    }
}

/// Counts of what a processor did, kept in its store across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerStats {
    /// Events applied to state.
    pub applied: u64,
    /// Events dropped because their id was already applied (a redelivery).
    pub duplicates_dropped: u64,
    /// Messages sent to the DLQ.
    pub dead_lettered: u64,
    /// Outbox events published.
    pub published: u64,
}

impl RunnerStats {
    const NAMES: [&'static str; 4] = ["applied", "duplicates_dropped", "dead_lettered", "published"];

    fn values(&self) -> [u64; 4] {
        [self.applied, self.duplicates_dropped, self.dead_lettered, self.published]
    }

    fn from_values(v: [u64; 4]) -> Self {
        Self { applied: v[0], duplicates_dropped: v[1], dead_lettered: v[2], published: v[3] }
    }
}

/// An event applied: its id, when it happened, and the partition it was read from (the window in
/// which its id is remembered follows that partition's progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub id: String,
    pub at: i64,
    pub topic: String,
    pub partition: i32,
}

/// Everything one batch changes, written in one transaction.
#[derive(Debug, Default)]
pub struct Commit {
    /// State writes (`None` deletes).
    pub state: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Next offset per partition read.
    pub offsets: Positions,
    /// Events to publish after the commit.
    pub outbox: Vec<OutboxEntry>,
    /// The events applied.
    pub applied: Vec<Applied>,
    /// What the batch did, added to the stored totals.
    pub stats: RunnerStats,
}

/// The state store of one component.
#[derive(Debug, Clone)]
pub struct StateStore {
    db: sled::Db,
    state: Tree,
    offsets: Tree,
    outbox: Tree,
    applied: Tree,
    meta: Tree,
    /// Commits still to fail on purpose ([`StateStore::fail_next_commits`]).
    fail_commits: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl StateStore {
    /// Opens (or creates) the store in `dir`. One process at a time: sled locks the directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
        let db = sled::Config::new().path(dir).flush_every_ms(Some(200)).open()?;
        Ok(Self {
            state: db.open_tree("state")?,
            offsets: db.open_tree("offsets")?,
            outbox: db.open_tree("outbox")?,
            applied: db.open_tree("applied")?,
            meta: db.open_tree("meta")?,
            fail_commits: Default::default(),
            db,
        })
    }

    /// Makes the next `n` commits fail as a full disk would, committing nothing (clones share it). For
    /// tests of what a transient failure does; one relaxed atomic read per commit otherwise.
    pub fn fail_next_commits(&self, n: u32) {
        self.fail_commits.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The committed value of a state key.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.state.get(key)?.map(|v| v.to_vec()))
    }

    /// Committed state entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.state
            .scan_prefix(prefix)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from))
            .collect()
    }

    /// The committed value at `key` as JSON of type `T`; corrupt state is an error, never absent (see
    /// [`StateView::get_json`](super::StateView::get_json)).
    pub fn get_json<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        self.get(key)?.map(|bytes| parse_state(key, &bytes)).transpose()
    }

    /// Every committed value under `prefix` as JSON of type `T`, with its key, in key order.
    pub fn scan_json<T: serde::de::DeserializeOwned>(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, T)>> {
        self.scan_prefix(prefix)?.into_iter().map(|(k, v)| parse_state(&k, &v).map(|t| (k, t))).collect()
    }

    /// Writes a key outside any batch: for bookkeeping a component does beside its event transactions
    /// (a sender removing what it delivered from its outbox). Never for state derived from events.
    pub fn put_state(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.state.insert(key, value)?;
        Ok(())
    }

    /// Removes a key outside any batch (see [`StateStore::put_state`]).
    pub fn remove_state(&self, key: &[u8]) -> Result<()> {
        self.state.remove(key)?;
        Ok(())
    }

    /// The stored next offset of every partition.
    pub fn positions(&self) -> Result<Positions> {
        let mut out = HashMap::new();
        for item in self.offsets.iter() {
            let (key, value) = item?;
            let Some((topic, partition)) = decode_partition_key(&key) else {
                continue;
            };
            let offset = i64::from_be_bytes(value.as_ref().try_into().unwrap_or([0; 8]));
            out.insert((topic, partition), offset);
        }
        Ok(out)
    }

    /// What the processor did over its whole life (every run, across restarts).
    pub fn stats(&self) -> Result<RunnerStats> {
        let mut values = [0u64; 4];
        for (value, name) in values.iter_mut().zip(RunnerStats::NAMES) {
            *value = read_u64(self.meta.get(name.as_bytes())?.as_deref());
        }
        Ok(RunnerStats::from_values(values))
    }

    /// How many event ids are recorded as applied.
    pub fn applied_ids(&self) -> usize {
        self.applied.len()
    }

    /// Whether an event id was already applied (within the window [`StateStore::forget_applied`] keeps).
    pub fn was_applied(&self, event_id: &str) -> Result<bool> {
        Ok(self.applied.contains_key(event_id.as_bytes())?)
    }

    /// Forgets the ids of events that happened more than `window` before the newest event applied from
    /// the same partition (or before `now_ms`, if an event claims a later time: a producer's clock ahead
    /// must not wipe the window). Returns how many were forgotten.
    ///
    /// A duplicate lands in its original's partition (same key), after it. So each partition's window
    /// follows that partition's own progress: a partition read to its end cannot make a lagging one
    /// forget ids whose duplicates it has yet to read, and a processor stopped for longer than the window
    /// still knows, when it comes back, every id a duplicate waiting in the log can carry. Ids applied
    /// before partitions were recorded follow the slowest partition.
    ///
    /// One pass over the ids, removing in slices. Not indexed by time on purpose: an index is a second
    /// write per event inside every commit's transaction, which halved the commit rate (`cargo bench
    /// --bench state`), while this pass runs once in a while, off the processor's task. Safe beside
    /// commits: an id removed while a batch looks it up was past its window either way.
    pub fn forget_applied(&self, window: std::time::Duration, now_ms: i64) -> Result<usize> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let cutoff = |newest: i64| newest.min(now_ms).saturating_sub(window_ms);
        let mut cutoffs: HashMap<Vec<u8>, i64> = HashMap::new(); // by partition number
        for item in self.meta.scan_prefix(NEWEST_PREFIX) {
            let (key, value) = item?;
            cutoffs.insert(key[NEWEST_PREFIX.len()..].to_vec(), cutoff(read_time(&value)));
        }
        let Some(slowest) = cutoffs.values().min().copied() else {
            return Ok(0);
        };
        let mut forgotten = 0;
        let (mut batch, mut in_batch) = (sled::Batch::default(), 0);
        for item in self.applied.iter() {
            let (id, value) = item?;
            let partition = value.get(8..12).unwrap_or_default();
            let limit = if partition.is_empty() { Some(slowest) } else { cutoffs.get(partition).copied() };
            if limit.is_some_and(|limit| read_time(&value) < limit) {
                batch.remove(id);
                in_batch += 1;
            }
            if in_batch == FORGET_SLICE {
                self.applied.apply_batch(std::mem::take(&mut batch))?;
                forgotten += in_batch;
                in_batch = 0;
            }
        }
        self.applied.apply_batch(batch)?;
        Ok(forgotten + in_batch)
    }

    /// The number standing for an applied event's partition in its id's value (4 bytes rather than the
    /// partition's name, which made commits a quarter slower): assigned at first sight, kept in meta.
    /// Outside the commit's transaction: a number assigned for a commit that then fails stays unused.
    fn partition_number(&self, a: &Applied) -> Result<[u8; 4]> {
        let key = [PARTITION_PREFIX, &encode_partition_key(&a.topic, a.partition)].concat();
        if let Some(n) = self.meta.get(&key)? {
            return Ok(n.as_ref().try_into().unwrap_or_default());
        }
        let count = self.meta.update_and_fetch(PARTITION_COUNT, |old| {
            let n = old.and_then(|v| v.try_into().ok()).map_or(0, u32::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        let number: [u8; 4] = count.as_deref().and_then(|v| v.try_into().ok()).unwrap_or_default();
        match self.meta.compare_and_swap(&key, None as Option<&[u8]>, Some(&number[..]))? {
            Ok(()) => Ok(number),
            // Another writer numbered it first: theirs stands.
            Err(e) => Ok(e.current.as_deref().and_then(|v| v.try_into().ok()).unwrap_or_default()),
        }
    }

    /// Writes a batch's state, offsets, outbox and applied ids in one transaction. Returns the outbox keys.
    pub fn commit(&self, commit: Commit) -> Result<Vec<u64>> {
        if self
            .fail_commits
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                n.checked_sub(1)
            })
            .is_ok()
        {
            return Err(Error::State(sled::Error::Io(std::io::Error::other("injected commit failure"))));
        }
        let outbox_keys: Vec<u64> = commit.outbox.iter().map(|_| self.db.generate_id()).collect::<Result<_, _>>()?;
        // An applied id's value: when it happened, then its partition's number. And per partition, the
        // newest event time in this batch.
        let mut numbers: HashMap<(&str, i32), [u8; 4]> = HashMap::new();
        let mut newest: BTreeMap<[u8; 4], i64> = BTreeMap::new();
        let mut applied: Vec<(&[u8], [u8; 12])> = Vec::with_capacity(commit.applied.len());
        for a in &commit.applied {
            let number = match numbers.entry((a.topic.as_str(), a.partition)) {
                std::collections::hash_map::Entry::Occupied(n) => *n.get(),
                std::collections::hash_map::Entry::Vacant(slot) => *slot.insert(self.partition_number(a)?),
            };
            let at = newest.entry(number).or_insert(a.at);
            *at = (*at).max(a.at);
            let mut value = [0; 12];
            value[..8].copy_from_slice(&a.at.to_be_bytes());
            value[8..].copy_from_slice(&number);
            applied.push((a.id.as_bytes(), value));
        }
        let newest: Vec<(Vec<u8>, i64)> =
            newest.into_iter().map(|(n, at)| ([NEWEST_PREFIX, &n].concat(), at)).collect();
        let result: Result<(), TransactionError<()>> =
            (&self.state, &self.offsets, &self.outbox, &self.applied, &self.meta).transaction(
                |(state, offsets, outbox, applied_tree, meta)| {
                    for (key, value) in &commit.state {
                        match value {
                            Some(v) => state.insert(key.as_slice(), v.as_slice())?,
                            None => state.remove(key.as_slice())?,
                        };
                    }
                    for ((topic, partition), next) in &commit.offsets {
                        offsets.insert(encode_partition_key(topic, *partition), &next.to_be_bytes())?;
                    }
                    for (entry, key) in commit.outbox.iter().zip(&outbox_keys) {
                        outbox.insert(&key.to_be_bytes(), entry.to_bytes())?;
                    }
                    for (key, value) in &applied {
                        applied_tree.insert(*key, value)?;
                    }
                    for (key, at) in &newest {
                        let stored = meta.get(key.as_slice())?.map(|v| read_time(&v));
                        if stored.is_none_or(|stored| stored < *at) {
                            meta.insert(key.as_slice(), &at.to_be_bytes())?;
                        }
                    }
                    for (name, delta) in RunnerStats::NAMES.iter().zip(commit.stats.values()) {
                        if delta > 0 {
                            let total = read_u64(meta.get(name.as_bytes())?.as_deref()) + delta;
                            meta.insert(name.as_bytes(), &total.to_be_bytes())?;
                        }
                    }
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        match result {
            Ok(()) => Ok(outbox_keys),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => Err(Error::Invalid("state transaction aborted".into())),
        }
    }

    /// Outbox entries not yet published, oldest first.
    pub fn pending_outbox(&self) -> Result<Vec<(u64, OutboxEntry)>> {
        let mut out = Vec::new();
        for item in self.outbox.iter() {
            let (key, value) = item?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8]));
            let entry =
                OutboxEntry::from_bytes(&value).ok_or_else(|| Error::Invalid(format!("corrupt outbox entry {seq}")))?;
            out.push((seq, entry));
        }
        Ok(out)
    }

    /// Forgets published outbox entries.
    pub fn remove_outbox(&self, seqs: &[u64]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(&seq.to_be_bytes());
        }
        Ok(self.outbox.apply_batch(batch)?)
    }

    /// Makes every commit so far durable on disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// Ids removed per sled batch when forgetting.
const FORGET_SLICE: usize = 10_000;

/// Meta keys of each partition's newest applied event time: this prefix, then the partition's number.
const NEWEST_PREFIX: &[u8] = b"newest\0";

/// Meta keys of the partitions' numbers: this prefix, then the partition's key; and their count.
const PARTITION_PREFIX: &[u8] = b"partition\0";
const PARTITION_COUNT: &[u8] = b"partitions";

/// A time stored big-endian in the first 8 bytes of a value.
fn read_time(value: &[u8]) -> i64 {
    value.get(..8).and_then(|v| v.try_into().ok()).map_or(0, i64::from_be_bytes)
}

fn read_u64(value: Option<&[u8]>) -> u64 {
    value.and_then(|v| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

fn encode_partition_key(topic: &str, partition: i32) -> Vec<u8> {
    let mut key = topic.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn decode_partition_key(key: &[u8]) -> Option<(String, i32)> {
    let split = key.iter().position(|&b| b == 0)?;
    let topic = std::str::from_utf8(&key[..split]).ok()?.to_owned();
    let partition = i32::from_be_bytes(key.get(split + 1..split + 5)?.try_into().ok()?);
    Some((topic, partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_writes_state_offsets_outbox_and_ids_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let entry = OutboxEntry {
            topic: "t".into(),
            key: b"k".to_vec(),
            payload: vec![1, 2, 3],
            event_type: "RunStarted".into(),
            event_id: "e".into(),
        };
        let mut commit = Commit::default();
        commit.state.insert(b"a".to_vec(), Some(b"1".to_vec()));
        commit.offsets.insert(("topic.x".into(), 2), 41);
        commit.outbox.push(entry.clone());
        commit.applied.push(Applied { id: "id-1".into(), at: 7, topic: "topic.x".into(), partition: 2 });
        commit.stats.applied = 1;
        let keys = store.commit(commit).unwrap();
        store.flush().unwrap();
        drop(store);

        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.positions().unwrap()[&("topic.x".to_owned(), 2)], 41);
        assert_eq!(store.pending_outbox().unwrap(), vec![(keys[0], entry)]);
        assert!(store.was_applied("id-1").unwrap());
        assert_eq!(store.stats().unwrap().applied, 1);
        store.remove_outbox(&keys).unwrap();
        assert!(store.pending_outbox().unwrap().is_empty());
    }

    const DAY: i64 = 86_400_000;

    /// Commits ids applied from `partition` of one topic.
    fn commit_ids(store: &StateStore, partition: i32, ids: &[(&str, i64)]) {
        let applied = ids
            .iter()
            .map(|(id, at)| Applied { id: (*id).to_owned(), at: *at, topic: "t".into(), partition })
            .collect();
        store.commit(Commit { applied, ..Commit::default() }).unwrap();
    }

    #[test]
    fn applied_ids_are_forgotten_a_window_behind_the_newest_event_of_their_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..=10).map(|d| format!("id-{d}")).collect();
        let applied: Vec<(&str, i64)> = ids.iter().zip(0..).map(|(id, d)| (id.as_str(), d * DAY)).collect();
        // Out of order and over two commits: the newest is what counts, not the last.
        commit_ids(&store, 0, &applied[5..]);
        commit_ids(&store, 0, &applied[..5]);
        let window = std::time::Duration::from_secs(3 * 86_400);
        // The wall clock far ahead (a processor back after a long stop): the newest event sets the window.
        assert_eq!(store.forget_applied(window, 1_000 * DAY).unwrap(), 7);
        for (d, id) in ids.iter().enumerate() {
            assert_eq!(store.was_applied(id).unwrap(), d >= 7, "{id}");
        }
        assert_eq!(store.applied_ids(), 4);
        assert_eq!(store.forget_applied(window, 1_000 * DAY).unwrap(), 0);
        // Another partition far ahead (read to its end while this one lags) moves only its own window.
        commit_ids(&store, 1, &[("p1-old", 20 * DAY), ("p1-new", 100 * DAY)]);
        assert_eq!(store.forget_applied(window, 1_000 * DAY).unwrap(), 1);
        assert!(store.was_applied("id-7").unwrap() && !store.was_applied("p1-old").unwrap());
        // An event from a clock far ahead does not push the window past the wall clock.
        commit_ids(&store, 0, &[("from-the-future", 500 * DAY)]);
        assert_eq!(store.forget_applied(window, 10 * DAY).unwrap(), 0);
        assert_eq!(store.forget_applied(window, 12 * DAY).unwrap(), 2);
        assert!(store.was_applied("id-9").unwrap() && store.was_applied("from-the-future").unwrap());
    }

    #[test]
    fn ids_applied_before_partitions_were_recorded_follow_the_slowest_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        // As a store written before: an id's value is its time alone.
        store.applied.insert("old", &(-2 * DAY).to_be_bytes()).unwrap();
        store.applied.insert("mid", &(DAY).to_be_bytes()).unwrap();
        let window = std::time::Duration::from_secs(2 * 86_400);
        assert_eq!(store.forget_applied(window, 100 * DAY).unwrap(), 0, "no partition's progress known yet");
        commit_ids(&store, 0, &[("p0", 5 * DAY)]);
        commit_ids(&store, 1, &[("p1", 2 * DAY)]);
        // The slowest partition (day 2) keeps what is after day 0.
        assert_eq!(store.forget_applied(window, 100 * DAY).unwrap(), 1);
        assert!(!store.was_applied("old").unwrap() && store.was_applied("mid").unwrap());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(StateStore::open(empty.path()).unwrap().forget_applied(std::time::Duration::ZERO, DAY).unwrap(), 0);
    }
}

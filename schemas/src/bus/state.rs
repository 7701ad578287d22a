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

/// Everything one batch changes, written in one transaction.
#[derive(Debug, Default)]
pub struct Commit {
    /// State writes (`None` deletes).
    pub state: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Next offset per partition read.
    pub offsets: Positions,
    /// Events to publish after the commit.
    pub outbox: Vec<OutboxEntry>,
    /// Ids of the events applied, with when they happened.
    pub applied: Vec<(String, i64)>,
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
            db,
        })
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

    /// The time of the newest event applied: kept with every commit; a store committed to before it was
    /// kept has it found once from its ids.
    fn newest_applied(&self) -> Result<Option<i64>> {
        if let Some(v) = self.meta.get(NEWEST_APPLIED)? {
            return Ok(v.as_ref().try_into().ok().map(i64::from_be_bytes));
        }
        let mut newest = None;
        for item in self.applied.iter() {
            let at = read_time(&item?.1);
            newest = Some(newest.map_or(at, |n: i64| n.max(at)));
        }
        if let Some(at) = newest {
            self.meta.insert(NEWEST_APPLIED, &at.to_be_bytes())?;
        }
        Ok(newest)
    }

    /// Forgets the ids of events that happened more than `window` before the newest event applied (or
    /// before `now_ms`, if an event claims a later time: a producer's clock ahead must not wipe the
    /// window). Event time, not the wall clock: a processor stopped for longer than the window still
    /// knows, when it comes back, every id a duplicate still in the log could carry. Returns how many
    /// were forgotten.
    ///
    /// One pass over the ids, removing in slices. Not indexed by time on purpose: an index is a second
    /// write per event inside every commit's transaction, which halved the commit rate (`cargo bench
    /// --bench state`), while this pass runs once in a while, off the processor's task. Safe beside
    /// commits: an id removed while a batch looks it up was older than the window either way.
    pub fn forget_applied(&self, window: std::time::Duration, now_ms: i64) -> Result<usize> {
        let Some(newest) = self.newest_applied()? else {
            return Ok(0);
        };
        let cutoff = newest.min(now_ms).saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        let mut forgotten = 0;
        let (mut batch, mut in_batch) = (sled::Batch::default(), 0);
        for item in self.applied.iter() {
            let (id, at) = item?;
            if read_time(&at) < cutoff {
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

    /// Writes a batch's state, offsets, outbox and applied ids in one transaction. Returns the outbox keys.
    pub fn commit(&self, commit: Commit) -> Result<Vec<u64>> {
        let outbox_keys: Vec<u64> = commit.outbox.iter().map(|_| self.db.generate_id()).collect::<Result<_, _>>()?;
        let result: Result<(), TransactionError<()>> =
            (&self.state, &self.offsets, &self.outbox, &self.applied, &self.meta).transaction(
                |(state, offsets, outbox, applied, meta)| {
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
                    for (id, at) in &commit.applied {
                        applied.insert(id.as_bytes(), &at.to_be_bytes())?;
                    }
                    if let Some(at) = commit.applied.iter().map(|(_, at)| *at).max() {
                        let newest = meta.get(NEWEST_APPLIED)?.and_then(|v| v.as_ref().try_into().ok());
                        if newest.is_none_or(|n| i64::from_be_bytes(n) < at) {
                            meta.insert(NEWEST_APPLIED, &at.to_be_bytes())?;
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

/// The meta key of the newest applied event's time.
const NEWEST_APPLIED: &[u8] = b"newest_applied";

/// An applied id's time (its value).
fn read_time(value: &[u8]) -> i64 {
    value.try_into().map(i64::from_be_bytes).unwrap_or(0)
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
        commit.applied.push(("id-1".into(), 7));
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

    fn commit_ids(store: &StateStore, ids: &[(&str, i64)]) {
        let applied = ids.iter().map(|(id, at)| ((*id).to_owned(), *at)).collect();
        store.commit(Commit { applied, ..Commit::default() }).unwrap();
    }

    #[test]
    fn applied_ids_are_forgotten_a_window_behind_the_newest_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let ids: Vec<String> = (0..=10).map(|d| format!("id-{d}")).collect();
        let applied: Vec<(&str, i64)> = ids.iter().zip(0..).map(|(id, d)| (id.as_str(), d * DAY)).collect();
        // Out of order and over two commits: the newest is what counts, not the last.
        commit_ids(&store, &applied[5..]);
        commit_ids(&store, &applied[..5]);
        let window = std::time::Duration::from_secs(3 * 86_400);
        // The wall clock far ahead (a processor back after a long stop): the newest event sets the window.
        assert_eq!(store.forget_applied(window, 1_000 * DAY).unwrap(), 7);
        for (d, id) in ids.iter().enumerate() {
            assert_eq!(store.was_applied(id).unwrap(), d >= 7, "{id}");
        }
        assert_eq!(store.applied_ids(), 4);
        assert_eq!(store.forget_applied(window, 1_000 * DAY).unwrap(), 0);
        // An event from a clock far ahead does not push the window past the wall clock.
        commit_ids(&store, &[("from-the-future", 500 * DAY)]);
        assert_eq!(store.forget_applied(window, 10 * DAY).unwrap(), 0);
        assert_eq!(store.applied_ids(), 5);
        assert_eq!(store.forget_applied(window, 12 * DAY).unwrap(), 2);
        assert!(store.was_applied("id-9").unwrap() && store.was_applied("from-the-future").unwrap());
    }

    #[test]
    fn a_store_from_before_the_window_finds_its_newest_event_from_its_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        commit_ids(&store, &[("old", -2 * DAY), ("new", 5 * DAY), ("mid", DAY)]);
        // As a store written before the newest time was kept: ids only.
        store.meta.remove(NEWEST_APPLIED).unwrap();
        store.flush().unwrap();
        drop(store);
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.forget_applied(std::time::Duration::from_secs(2 * 86_400), 100 * DAY).unwrap(), 2);
        assert!(!store.was_applied("old").unwrap() && !store.was_applied("mid").unwrap());
        assert!(store.was_applied("new").unwrap());
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(StateStore::open(empty.path()).unwrap().forget_applied(std::time::Duration::ZERO, DAY).unwrap(), 0);
    }
}

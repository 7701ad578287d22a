//! A component's sled state store: its state, the next offset of every partition it read, its outbox of
//! events to publish, and the ids of the events it applied. One [`Commit`] changes all four atomically, so
//! a crash at any point leaves state and offsets in step: the component resumes exactly where its state is.

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

    /// Whether an event id was already applied.
    pub fn was_applied(&self, event_id: &str) -> Result<bool> {
        Ok(self.applied.contains_key(event_id.as_bytes())?)
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
}

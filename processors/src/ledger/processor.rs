//! The ledger's state machine. Keys in its state store:
//! - `run/{run_id}\0{seq:016x}` → a [`LedgerEntry`] (JSON), `seq` counting per run from 0;
//! - `seq/{run_id}` → the next `seq` of that run;
//! - `count/{topic}\0{partition}` → events applied from that partition (u64, big-endian).

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, StateStore, StateView};
use chaoseater_schemas::events::Event;
use chaoseater_schemas::ids::RunId;
use chaoseater_schemas::topics::Topic;
use serde::{Deserialize, Serialize};

/// One line of a run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub event_type: String,
    pub event_id: String,
    pub occurred_at: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The run ledger processor.
#[derive(Debug, Default)]
pub struct RunLedger;

impl RunLedger {
    /// The processor's name: its state directory under the state dir.
    pub const NAME: &'static str = "ledger";

    fn run_prefix(run_id: &str) -> Vec<u8> {
        let mut key = format!("run/{run_id}").into_bytes();
        key.push(0);
        key
    }

    fn count_key(topic: &str, partition: i32) -> Vec<u8> {
        let mut key = format!("count/{topic}").into_bytes();
        key.push(0);
        key.extend_from_slice(&partition.to_be_bytes());
        key
    }

    /// The timeline of one run, oldest first.
    pub fn timeline(store: &StateStore, run_id: &RunId) -> chaoseater_schemas::Result<Vec<LedgerEntry>> {
        Ok(store.scan_json(&Self::run_prefix(run_id.as_str()))?.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Events applied per (topic, partition).
    pub fn applied_counts(store: &StateStore) -> chaoseater_schemas::Result<Vec<(String, i32, u64)>> {
        let mut out = Vec::new();
        for (key, value) in store.scan_prefix(b"count/")? {
            let rest = &key[b"count/".len()..];
            let Some(split) = rest.iter().position(|&b| b == 0) else {
                continue;
            };
            let topic = String::from_utf8_lossy(&rest[..split]).into_owned();
            let Ok(partition) = rest[split + 1..].try_into().map(i32::from_be_bytes) else {
                continue;
            };
            out.push((topic, partition, read_u64(Some(value))));
        }
        Ok(out)
    }
}

fn read_u64(value: Option<Vec<u8>>) -> u64 {
    value.and_then(|v| v.as_slice().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

impl Processor for RunLedger {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Commands, Topic::Dispatch, Topic::Results, Topic::Rollback]
    }

    fn apply(&mut self, event: &Event, origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let count_key = Self::count_key(&origin.topic, origin.partition);
        let count = read_u64(state.get(&count_key)?);
        state.put(count_key, (count + 1).to_be_bytes().to_vec());

        // Region and circuit events on the rollback topic belong to no run: counted, not filed.
        let Some(run_id) = event.run_id() else {
            return Ok(Vec::new());
        };
        let seq_key = format!("seq/{run_id}").into_bytes();
        let seq = read_u64(state.get(&seq_key)?);
        state.put(seq_key, (seq + 1).to_be_bytes().to_vec());
        let mut key = Self::run_prefix(run_id.as_str());
        key.extend_from_slice(format!("{seq:016x}").as_bytes());
        let entry = LedgerEntry {
            event_type: event.kind().name().to_owned(),
            event_id: event.event_id().to_string(),
            occurred_at: event.occurred_at().0,
            topic: origin.topic.clone(),
            partition: origin.partition,
            offset: origin.offset,
        };
        state.put_json(key, &entry)?;
        Ok(Vec::new())
    }
}

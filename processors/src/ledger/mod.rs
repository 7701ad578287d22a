//! The run ledger: every command, dispatch, result and rollback event of every run, in the order the
//! ledger consumed them, plus how many events it applied from each partition.
//!
//! It answers "what happened to run X" from local state (the timeline `chaoseater status` prints) and is
//! the simplest complete processor: its tests hold the bus's guarantees to account, since an event applied
//! twice or skipped shows in its counts.

mod processor;

pub use processor::{LedgerEntry, RunLedger};

#[cfg(test)]
mod tests;

//! The run ledger: every command, dispatch, result and rollback event of every run, in the order the
//! ledger consumed them, plus how many events it applied from each partition.
//!
//! It answers "what happened to run X" from local state (the timeline `chaoseater status` prints) and is
//! the simplest complete processor: its tests hold the bus's guarantees to account, since an event applied
//! twice or skipped shows in its counts.
//!
//! [`RunView`] is the same history seen from one run: the projection the CLI follows and gates on.

mod processor;
mod run_view;

pub use processor::{LedgerEntry, RunLedger};
pub use run_view::{RegionView, RollbackState, RollbackView, RunView};

#[cfg(test)]
mod tests;

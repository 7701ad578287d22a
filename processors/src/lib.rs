//! ChaosEater's processors: components that consume events and keep durable state.
//!
//! - [`ledger`]: the run ledger, every event of every run in order, kept in its sled state store. It is
//!   the first processor on the bus and the reference for how the others hold state: everything it
//!   knows goes through the `StateView`, committed atomically with the offsets it consumed.
//!
//! - [`orchestrator`]: runs as sagas: RunRequested → region dispatches by mode → RunCompleted with the
//!   aggregate report.
//!
//! - [`circuit`]: a circuit breaker per region fed by health samples.
//!
//! - [`rollback`]: a rollback state machine per run and region (immediate, gradual, canary, blue-green,
//!   circuit breaker), steps gated on health samples.
//!
//! - [`history`]: the history materializer, results, health and rollback events as Parquet tables.
//!
//! - [`analytics`]: DataFusion over the history: query, trends, compare, summary, read-only SQL. Processors never import producers or sinks: they talk through topics.

pub mod analytics;
pub mod circuit;
pub mod history;
pub mod ledger;
pub mod orchestrator;
pub mod rollback;
#[cfg(test)]
mod testing;

//! ChaosEater's processors: components that consume events and keep durable state.
//!
//! - [`ledger`]: the run ledger, every event of every run in order, kept in its sled state store. It is
//!   the first processor on the bus and the reference for how the others hold state: everything it
//!   knows goes through the `StateView`, committed atomically with the offsets it consumed.
//!
//! Later issues add the orchestrator, the rollback processor, the circuit breaker, the history
//! materializer and the analytics. Processors never import producers or sinks: they talk through topics.

pub mod ledger;

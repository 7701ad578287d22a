//! The Kafka plumbing every role shares.
//!
//! - [`context`]: where the brokers are and how to talk to them (one `BusContext`, built once, passed down).
//! - [`producer`]: idempotent, `acks=all`, batching producer of typed events.
//! - [`consumer`]: manual partition assignment, no auto-commit; positions come from the caller.
//! - [`state`]: the sled state store holding a component's state, its next offsets, its outbox and the
//!   ids it applied, all changed in one atomic write.
//! - [`dead_letter`]: the DLQ copy of a bad message, cut to fit the broker, and which consumer writes it.
//! - [`processor`]: the loop that ties them together: consume a batch, apply it, dead-letter what cannot
//!   be decoded or is invalid, commit state + offsets + outbox atomically, then publish the outbox.
//! - [`regions`]: the region registry, folded from the regions topic the same way by every reader.
//! - [`component`]: the shape of every long-running part: its name and topics, a prepare-once and
//!   start-per-try, a [`Handle`] owning the tasks it spawned, one [`Shutdown`] signal.
//! - `testing` (feature `testing`): the processor test rig, a processor over a real store without a broker.
//! - [`admin`]: topic creation and listing on a real broker.
//! - [`embedded`]: librdkafka's in-process mock cluster for `demo` and `serve` without a broker.

pub mod admin;
pub mod component;
pub mod consumer;
pub mod context;
pub mod dead_letter;
pub mod embedded;
pub mod processor;
pub mod producer;
pub mod regions;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
pub mod view;

pub use component::{
    Component, ComponentError, ConfigError, Env, Handle, Prepared, ProcessorComponent, RunnerConfig, Shutdown,
};
pub use consumer::{EventConsumer, MessageHeaders, Received, StartFrom};
pub use context::BusContext;
pub use dead_letter::DeadLetterDuty;
pub use embedded::EmbeddedBroker;
pub use processor::{
    ApplyError, DEFAULT_DEDUPE_WINDOW, Origin, Processor, ProcessorRunner, Rejection, RunnerOptions, StateView,
};
pub use producer::EventProducer;
pub use state::{RunnerStats, StateStore};

//! ChaosEater's producers: the components that bring facts into the event log.
//!
//! - [`gateway`]: the command gateway. Reads experiment files (the Python tool's YAML plus our
//!   extensions), validates every experiment against the fault catalogue, and turns each into a
//!   `RunRequested` command. Nothing invalid gets through: the caller publishes only when all are valid.
//!
//! - [`dispatcher`]: calls region agents for RegionDispatched and rollback steps, publishes results.
//! - [`agent`]: the region agent (fault-injecting proxy, host injectors, probes, its HTTP API).
//! - [`demo_target`]: the demo ML target the demo and tests put faults on.
//!
//! The HTTP client and the accept loop of every server are `chaoseater-net`'s.
//!
//! [`components`] lists what `serve` runs of them. Producers never import processors or sinks: they
//! talk through topics.

pub mod agent;
pub mod demo_target;
pub mod dispatcher;
pub mod gateway;

use chaoseater_schemas::bus::Component;

/// Every long-running component of this crate `serve` runs: the dispatcher (its workers and health
/// monitor come with it). A new one is a folder and one entry here.
pub fn components(dispatcher: &dispatcher::DispatcherConfig) -> Vec<Box<dyn Component>> {
    vec![Box::new(dispatcher::DispatcherComponent::new(dispatcher))]
}

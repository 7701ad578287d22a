//! ChaosEater's producers: the components that bring facts into the event log.
//!
//! - [`gateway`]: the command gateway. Reads experiment files (the Python tool's YAML plus our
//!   extensions), validates every experiment against the fault catalogue, and turns each into a
//!   `RunRequested` command. Nothing invalid gets through: the caller publishes only when all are valid.
//!
//! - [`dispatcher`]: calls region agents for RegionDispatched and rollback steps, publishes results.
//! - [`agent`]: the region agent (fault-injecting proxy, host injectors, probes, its HTTP API).
//! - [`demo_target`]: the demo ML target the demo and tests put faults on.
//! - [`http`]: the pooled client; [`server`]: the accept loop every HTTP server of ours runs (connection
//!   limit, header-read and idle timeouts, accept backoff).
//!
//! Producers never import processors or sinks: they talk through topics.

pub mod agent;
pub mod demo_target;
pub mod dispatcher;
pub mod gateway;
pub mod http;
pub mod rng;
pub mod server;

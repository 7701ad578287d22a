//! ChaosEater's producers: the components that bring facts into the event log.
//!
//! - [`gateway`]: the command gateway. Reads experiment files (the Python tool's YAML plus our
//!   extensions), validates every experiment against the fault catalogue, and turns each into a
//!   `RunRequested` command. Nothing invalid gets through: the caller publishes only when all are valid.
//!
//! Later issues add the dispatcher, the region agent and the demo ML target here. Producers never import
//! processors or sinks: they talk through topics.

pub mod agent;
pub mod demo_target;
pub mod dispatcher;
pub mod gateway;
pub mod http;
pub mod rng;

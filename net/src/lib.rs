//! HTTP plumbing every role shares, so that each peer we call and each server we run behaves the same.
//!
//! - [`http`]: one pooled client with a per-request deadline and a body limit, and JSON response helpers.
//!   The dispatcher calls agents with it, the agent its upstream and probes, the Grafana sink Grafana.
//! - [`server`]: the accept loop every HTTP server of ours runs (connection limit, header-read and idle
//!   timeouts, accept backoff): the agent's API and proxy, the demo target, the metrics endpoint.

pub mod http;
pub mod server;

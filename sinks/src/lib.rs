//! ChaosEater's sinks: where operators already look.
//!
//! - [`metrics`]: the Prometheus exporter, a view of the results and rollback topics served at `/metrics`.
//! - [`grafana`]: the dashboard, alert rules (Grafana provisioning payloads) and a Prometheus rules file,
//!   generated from the names the exporter writes; the Grafana sink that pushes them and annotates runs.
//!
//! Sinks never import producers or processors: they consume topics.

pub mod grafana;
pub mod http;
pub mod metrics;

//! ChaosEater's sinks: where operators already look.
//!
//! - [`metrics`]: the Prometheus exporter, a view of the results and rollback topics served at `/metrics`.
//! - [`grafana`]: the dashboard, alert rules (Grafana provisioning payloads) and a Prometheus rules file,
//!   generated from the names the exporter writes.
//!
//! Sinks never import producers or processors: they consume topics.

pub mod grafana;
pub mod metrics;

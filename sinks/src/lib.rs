//! ChaosEater's sinks: where operators already look.
//!
//! - [`metrics`]: the Prometheus exporter, a view of the results and rollback topics served at `/metrics`.
//! - [`grafana`]: the dashboard, alert rules (Grafana provisioning payloads) and a Prometheus rules file,
//!   generated from the names the exporter writes; the Grafana sink that pushes them and annotates runs.
//! - [`pushgateway`]: a run's results pushed to a Prometheus Pushgateway (`chaoseater run` with an
//!   experiment file's `prometheus:` block).
//!
//! [`components`] lists the sinks `serve` and `demo` run. Sinks never import producers or processors:
//! they consume topics.

pub mod grafana;
pub mod metrics;
pub mod pushgateway;

use chaoseater_schemas::bus::Component;
use serde::Deserialize;

use grafana::sink::{GrafanaComponent, GrafanaConfig};
use metrics::{MetricsComponent, ServiceHealth};

/// The sinks' settings (`[sinks]`); what is absent keeps its default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinksConfig {
    /// Where `serve` exposes Prometheus metrics (`/metrics`) and its health (`/health`).
    pub metrics_listen: std::net::SocketAddr,
    /// Grafana, for the `grafana` processor and `chaoseater grafana push`.
    pub grafana: Option<GrafanaConfig>,
    /// Also export the Python tool's metric names that break Prometheus conventions
    /// (`chaos_error_count`, now `chaos_probe_errors`), for dashboards written for it. Deprecated; with it
    /// on, `promtool check metrics` reports those names.
    pub deprecated_metric_names: bool,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            metrics_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            grafana: None,
            deprecated_metric_names: false,
        }
    }
}

/// Every sink, in the order `serve` gives DLQ duty. A new sink is a folder and one entry here.
pub fn components(config: &SinksConfig, health: &ServiceHealth) -> Vec<Box<dyn Component>> {
    vec![
        Box::new(MetricsComponent::new(config.metrics_listen, config.deprecated_metric_names, health)),
        Box::new(GrafanaComponent::new(config.grafana.as_ref())),
    ]
}

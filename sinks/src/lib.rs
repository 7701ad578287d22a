//! ChaosEater's sinks: Prometheus metrics and Grafana dashboards, alert rules and annotations.
//!
//! Empty until issue 7 builds them; the crate exists so the workspace has its four roles from the start.

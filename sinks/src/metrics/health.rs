//! The service's own health: which processors are running and how often each was restarted. Filled by
//! `serve`'s supervisor, shown at `/health` (503 while a processor is down) and as metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use chaoseater_schemas::limits::truncate;
use chaoseater_schemas::sync::lock;

use super::names::{PROCESSOR_RESTARTS_TOTAL as RESTARTS_METRIC, PROCESSOR_UP as UP_METRIC};

#[derive(Debug, Default, Clone)]
struct ProcessorHealth {
    up: bool,
    restarts: u64,
    last_error: Option<String>,
}

/// Shared by the supervisor and the metrics endpoint; cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct ServiceHealth {
    // A std mutex: held for a map update or a render, never across an await.
    inner: Arc<Mutex<BTreeMap<String, ProcessorHealth>>>,
}

impl ServiceHealth {
    pub fn new() -> Self {
        Self::default()
    }

    fn with(&self, f: impl FnOnce(&mut BTreeMap<String, ProcessorHealth>)) {
        // A poisoned lock means a panic mid-update of plain counters: the data is still usable.
        let mut map = lock(&self.inner);
        f(&mut map);
    }

    /// `name` is running (again).
    pub fn started(&self, name: &str) {
        self.with(|m| m.entry(name.to_owned()).or_default().up = true);
    }

    /// `name` failed with `error` and will be restarted.
    pub fn failed(&self, name: &str, error: &str) {
        self.with(|m| {
            let entry = m.entry(name.to_owned()).or_default();
            entry.up = false;
            entry.last_error = Some(truncate(error, 512).into_owned());
        });
    }

    /// `name` is being restarted.
    pub fn restarted(&self, name: &str) {
        self.with(|m| m.entry(name.to_owned()).or_default().restarts += 1);
    }

    /// Whether every processor runs.
    pub fn healthy(&self) -> bool {
        let map = lock(&self.inner);
        map.values().all(|p| p.up)
    }

    /// `/health`'s body: `ok` or `degraded`, and each processor's state.
    pub fn report(&self) -> serde_json::Value {
        let map = lock(&self.inner);
        let processors: serde_json::Map<String, serde_json::Value> = map
            .iter()
            .map(|(name, p)| {
                let value = serde_json::json!({
                    "up": p.up,
                    "restarts": p.restarts,
                    "last_error": p.last_error,
                });
                (name.clone(), value)
            })
            .collect();
        let status = if map.values().all(|p| p.up) { "ok" } else { "degraded" };
        serde_json::json!({ "status": status, "processors": processors })
    }

    /// The two metrics in the text exposition format.
    pub fn render(&self) -> String {
        let map = lock(&self.inner);
        let mut out = String::new();
        let _ = writeln!(out, "# HELP {RESTARTS_METRIC} Restarts of a processor after it failed.");
        let _ = writeln!(out, "# TYPE {RESTARTS_METRIC} counter");
        for (name, p) in map.iter() {
            let _ = writeln!(out, "{RESTARTS_METRIC}{{processor=\"{name}\"}} {}", p.restarts);
        }
        let _ = writeln!(out, "# HELP {UP_METRIC} 1 while a processor runs, 0 while it waits to be restarted.");
        let _ = writeln!(out, "# TYPE {UP_METRIC} gauge");
        for (name, p) in map.iter() {
            let _ = writeln!(out, "{UP_METRIC}{{processor=\"{name}\"}} {}", u8::from(p.up));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_processor_degrades_health_until_it_runs_again() {
        let health = ServiceHealth::new();
        health.started("ledger");
        health.started("orchestrator");
        assert!(health.healthy());
        health.failed("orchestrator", &"x".repeat(10_000));
        health.restarted("orchestrator");
        assert!(!health.healthy());
        let report = health.report();
        assert_eq!(report["status"], "degraded");
        assert!(report["processors"]["orchestrator"]["last_error"].as_str().is_some_and(|e| e.len() < 600));
        let text = health.render();
        assert!(text.contains("chaos_processor_restarts_total{processor=\"orchestrator\"} 1"), "{text}");
        assert!(text.contains("chaos_processor_up{processor=\"orchestrator\"} 0"), "{text}");
        health.started("orchestrator");
        assert!(health.healthy());
        assert_eq!(health.report()["status"], "ok");
    }
}

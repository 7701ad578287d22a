//! The Prometheus exporter: a view of the results and rollback topics as metrics, served at `/metrics` in
//! the text exposition format. Like every view it is rebuilt by replaying the topics: the processor runs
//! from the beginning of the log on each start (its offsets live in a throwaway store).
//!
//! Every name and label here is what the generated dashboard and alert rules query ([`crate::grafana`]);
//! the tests check that they agree, since the Python tool's dashboard queried labels its exporter never set.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, StateView};
use chaoseater_schemas::events::{AbTestConcluded, AbVerdict, CircuitState, Event, RegionResult};
use chaoseater_schemas::sync::lock;
use chaoseater_schemas::topics::Topic;

mod component;
mod health;
pub mod names;
pub use component::MetricsComponent;
pub use health::ServiceHealth;
use names::*;

/// Buckets of `chaos_experiment_duration_seconds`, in seconds.
pub const DURATION_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Every metric the exporter writes: name, type, help. The dashboard and rules may use only these.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        RESILIENCE_SCORE,
        "gauge",
        "Resilience score of the latest experiment (0-100; its formula: chaos_resilience_score_version).",
    ),
    (
        SCORE_VERSION,
        "gauge",
        "Version of the score formula behind chaos_resilience_score (1: the Python tool's; 2: with a latency objective).",
    ),
    (RECOVERY_TIME_SECONDS, "gauge", "Seconds from fault removal until the steady state held again."),
    (PROBE_ERRORS, "gauge", "Failed probe requests in the latest experiment."),
    (ERROR_COUNT_DEPRECATED, "gauge", "Deprecated name of chaos_probe_errors (the Python tool's)."),
    (ACCURACY_DEGRADATION_PERCENT, "gauge", "Accuracy lost under the fault, percentage points."),
    (EXPERIMENT_DURATION_SECONDS, "histogram", "Wall time of region experiments."),
    (EXPERIMENT_STATUS, "gauge", "1 for the status of the latest experiment, 0 for the others."),
    (EXPERIMENTS_TOTAL, "counter", "Region experiments by outcome."),
    (ERRORS_TOTAL, "counter", "Failed probe requests across experiments."),
    (RUNS_TOTAL, "counter", "Runs completed, by status."),
    (ROLLBACK_STARTED_TOTAL, "counter", "Rollbacks started."),
    (ROLLBACK_STEPS_TOTAL, "counter", "Rollback steps applied."),
    (ROLLBACK_PERCENTAGE, "gauge", "Share of traffic rolled back from the fault (latest step)."),
    (ROLLBACK_COMPLETED_TOTAL, "counter", "Rollbacks completed."),
    (ROLLBACK_FAILED_TOTAL, "counter", "Rollbacks failed."),
    (ROLLBACK_PAUSED_TOTAL, "counter", "Rollbacks paused by a failed health check."),
    (CIRCUIT_STATE, "gauge", "Circuit breaker state per region: 0 closed, 1 half-open, 2 open."),
    (
        AB_VERDICT,
        "gauge",
        "1 for each A/B test's verdict (B_BETTER, B_WORSE, MIXED, NO_SIGNIFICANT_DIFFERENCE), 0 for the others.",
    ),
    (AB_SCORE, "gauge", "Group score of each A/B test: percentage of metrics B does not do worse on."),
];

/// Label sets, kept as ordered name=value pairs.
type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Series {
    values: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    histograms: BTreeMap<Labels, Histogram>,
}

impl Series {
    fn set(&mut self, name: &'static str, labels: Labels, value: f64) {
        self.values.entry(name).or_default().insert(labels, value);
    }

    fn add(&mut self, name: &'static str, labels: Labels, value: f64) {
        *self.values.entry(name).or_default().entry(labels).or_insert(0.0) += value;
    }
}

/// The metrics, shared by the processor that fills them and the server that renders them.
#[derive(Debug, Default, Clone)]
pub struct MetricsView {
    inner: Arc<Mutex<Series>>,
    /// Whether to render [`names::ERROR_COUNT_DEPRECATED`] too.
    deprecated_names: bool,
}

impl MetricsView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Renders the deprecated names beside the current ones (see [`names::ERROR_COUNT_DEPRECATED`]).
    pub fn with_deprecated_names(mut self, on: bool) -> Self {
        self.deprecated_names = on;
        self
    }

    fn with(&self, f: impl FnOnce(&mut Series)) {
        f(&mut lock(&self.inner));
    }

    /// Applies one event to the metrics.
    pub fn apply(&self, event: &Event) {
        match event {
            Event::RegionResult(r) => self.result(r),
            Event::RunCompleted(c) => {
                self.with(|s| s.add(RUNS_TOTAL, vec![("status", c.status.as_str().to_owned())], 1.0))
            }
            Event::RollbackStarted(e) => self.with(|s| {
                s.add(
                    ROLLBACK_STARTED_TOTAL,
                    vec![("region", e.region.to_string()), ("strategy", e.strategy.as_str().to_owned())],
                    1.0,
                );
                s.set(ROLLBACK_PERCENTAGE, vec![("region", e.region.to_string())], 0.0);
            }),
            Event::RollbackStepApplied(e) => self.with(|s| {
                s.add(ROLLBACK_STEPS_TOTAL, vec![("region", e.region.to_string())], 1.0);
                s.set(ROLLBACK_PERCENTAGE, vec![("region", e.region.to_string())], e.percentage);
            }),
            Event::RollbackCompleted(e) => {
                self.with(|s| s.add(ROLLBACK_COMPLETED_TOTAL, vec![("region", e.region.to_string())], 1.0))
            }
            Event::RollbackFailed(e) => {
                self.with(|s| s.add(ROLLBACK_FAILED_TOTAL, vec![("region", e.region.to_string())], 1.0))
            }
            Event::RollbackPaused(e) => {
                self.with(|s| s.add(ROLLBACK_PAUSED_TOTAL, vec![("region", e.region.to_string())], 1.0))
            }
            Event::AbTestConcluded(c) => self.ab_test(c),
            Event::CircuitStateChanged(e) => self.with(|s| {
                let value = match e.to_state {
                    CircuitState::Closed => 0.0,
                    CircuitState::HalfOpen => 1.0,
                    CircuitState::Open => 2.0,
                };
                s.set(CIRCUIT_STATE, vec![("region", e.region.to_string())], value);
            }),
            _ => {}
        }
    }

    /// A concluded test's verdict, as a state set labelled with the test and its variants; tests that
    /// were aborted or failed have no verdict and export nothing.
    fn ab_test(&self, c: &AbTestConcluded) {
        let Some(judgement) = &c.judgement else { return };
        let labels: Labels =
            vec![("test_id", c.run_id.to_string()), ("label_a", c.label_a.clone()), ("label_b", c.label_b.clone())];
        self.with(|s| {
            for verdict in [AbVerdict::BBetter, AbVerdict::BWorse, AbVerdict::Mixed, AbVerdict::NoSignificantDifference]
            {
                let mut with_verdict = labels.clone();
                with_verdict.push(("verdict", verdict.as_str().to_owned()));
                s.set(AB_VERDICT, with_verdict, if verdict == judgement.verdict { 1.0 } else { 0.0 });
            }
            s.set(AB_SCORE, labels.clone(), judgement.score);
        });
    }

    fn result(&self, r: &RegionResult) {
        let status = r.status.as_str().to_owned();
        let base: Labels = vec![
            ("layer", r.layer.as_str().to_owned()),
            ("fault_type", r.fault_type.clone()),
            ("region", r.region.to_string()),
        ];
        let with_status = |mut labels: Labels| {
            labels.push(("status", status.clone()));
            labels
        };
        let seconds = (r.finished_at.0 - r.started_at.0).max(0) as f64 / 1000.0;
        self.with(|s| {
            if let Some(score) = r.resilience_score {
                s.set(RESILIENCE_SCORE, with_status(base.clone()), score);
                s.set(SCORE_VERSION, with_status(base.clone()), f64::from(r.score_version));
            }
            if let Some(m) = &r.metrics {
                if let Some(recovery) = m.recovery_time_s {
                    s.set(RECOVERY_TIME_SECONDS, with_status(base.clone()), recovery);
                }
                s.set(PROBE_ERRORS, with_status(base.clone()), m.error_count as f64);
                s.set(ERROR_COUNT_DEPRECATED, with_status(base.clone()), m.error_count as f64);
                s.set(ACCURACY_DEGRADATION_PERCENT, with_status(base.clone()), m.accuracy_degradation);
                s.add(ERRORS_TOTAL, with_status(base.clone()), m.error_count as f64);
            }
            s.add(EXPERIMENTS_TOTAL, with_status(base.clone()), 1.0);
            for other in ["COMPLETED", "FAILED", "ABORTED"] {
                let mut labels = base.clone();
                labels.push(("status", other.to_owned()));
                s.set(EXPERIMENT_STATUS, labels, if other == status { 1.0 } else { 0.0 });
            }
            let h = s.histograms.entry(base.clone()).or_default();
            for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += seconds;
        });
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let series = lock(&self.inner);
        let mut out = String::new();
        for (name, kind, help) in METRICS {
            if *name == ERROR_COUNT_DEPRECATED && !self.deprecated_names {
                continue;
            }
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if *kind == "histogram" {
                for (labels, h) in &series.histograms {
                    for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                        let le = format!("{bound}");
                        let _ = writeln!(out, "{name}_bucket{} {}", render_labels(labels, Some(&le)), h.buckets[i]);
                    }
                    let _ = writeln!(out, "{name}_bucket{} {}", render_labels(labels, Some("+Inf")), h.count);
                    let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels, None), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", render_labels(labels, None), h.count);
                }
                continue;
            }
            if let Some(values) = series.values.get(name) {
                for (labels, value) in values {
                    let _ = writeln!(out, "{name}{} {value}", render_labels(labels, None));
                }
            }
        }
        out
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// The processor feeding a [`MetricsView`]. It keeps no durable state of its own: run it on a fresh
/// store so that it replays the topics from the beginning.
#[derive(Debug, Clone)]
pub struct MetricsSink {
    view: MetricsView,
    /// This batch's events, counted once it commits: a batch applied again after a transient failure
    /// must not count twice.
    pending: Vec<Event>,
}

impl MetricsSink {
    pub const NAME: &'static str = "metrics";

    /// A sink that feeds `view`.
    pub fn new(view: MetricsView) -> Self {
        Self { view, pending: Vec::new() }
    }
}

impl Processor for MetricsSink {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Results, Topic::Rollback]
    }

    fn apply(&mut self, event: &Event, _origin: &Origin, _state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        self.pending.push(event.clone());
        Ok(Vec::new())
    }

    fn on_commit(&mut self, _store: &chaoseater_schemas::bus::StateStore) {
        for event in self.pending.drain(..) {
            self.view.apply(&event);
        }
    }

    fn on_discard(&mut self) {
        self.pending.clear();
    }
}

/// `GET /metrics` (the view and the service's health metrics) and `GET /health` (200 `ok`, or 503
/// `degraded` while a processor is down). The binary serves it with the limits every server of ours has.
pub fn router(view: MetricsView, health: ServiceHealth) -> axum::Router {
    let metrics_health = health.clone();
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let (view, health) = (view.clone(), metrics_health.clone());
                async move {
                    let mut text = view.render();
                    text.push_str(&health.render());
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                }
            }),
        )
        .route(
            "/health",
            axum::routing::get(move || {
                let health = health.clone();
                async move {
                    let status = if health.healthy() {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, axum::Json(health.report()))
                }
            }),
        )
}

#[cfg(test)]
mod tests;

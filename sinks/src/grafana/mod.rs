//! Grafana resources generated from what the exporter really writes: the dashboard (the Python tool's
//! eight panels, with templating over region, layer and fault type, and the A/B tests' verdicts), alert rules as Grafana provisioning
//! payloads, and the same rules as a Prometheus rules file for Alertmanager users.

pub mod provisioning;
pub mod sink;

use serde_json::{Value as Json, json};

use crate::metrics::names::{
    AB_SCORE, AB_VERDICT, ACCURACY_DEGRADATION_PERCENT, ERRORS_TOTAL, EXPERIMENT_DURATION_SECONDS, EXPERIMENTS_TOTAL,
    RECOVERY_TIME_SECONDS, RESILIENCE_SCORE, SCORE_VERSION,
};

/// What the dashboard is built from.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    pub title: String,
    /// The Prometheus data source's uid in Grafana.
    pub datasource_uid: String,
    /// Extra panels (Grafana panel JSON), appended below the built-in ones.
    pub custom_panels: Vec<Json>,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self { title: "ChaosEater".to_owned(), datasource_uid: "prometheus".to_owned(), custom_panels: Vec::new() }
    }
}

/// The label filter every panel applies, from the dashboard's variables.
pub const FILTER: &str = r#"region=~"$region",layer=~"$layer",fault_type=~"$fault_type""#;

/// The dashboard's PromQL, panel by panel: (title, type, expressions).
pub fn panel_queries() -> Vec<(&'static str, &'static str, Vec<String>)> {
    let f = FILTER;
    vec![
        // Beside the score, the versions of the formula it averages (one, unless agents were upgraded).
        (
            "Resilience score",
            "gauge",
            vec![format!("avg({RESILIENCE_SCORE}{{{f}}})"), format!("max({SCORE_VERSION}{{{f}}})")],
        ),
        ("Experiment status", "stat", vec![format!("sum by (status) ({EXPERIMENTS_TOTAL}{{{f}}})")]),
        ("Recovery time", "timeseries", vec![format!("max by (region) ({RECOVERY_TIME_SECONDS}{{{f}}})")]),
        ("Error rate", "timeseries", vec![format!("sum by (region) (rate({ERRORS_TOTAL}{{{f}}}[5m]))")]),
        ("Accuracy degradation", "gauge", vec![format!("max({ACCURACY_DEGRADATION_PERCENT}{{{f}}})")]),
        (
            "Experiment duration",
            "heatmap",
            vec![format!("sum by (le) (increase({EXPERIMENT_DURATION_SECONDS}_bucket{{{f}}}[$__rate_interval]))")],
        ),
        ("Fault types", "piechart", vec![format!("sum by (fault_type) ({EXPERIMENTS_TOTAL}{{{f}}})")]),
        (
            "Success rate by layer",
            "bargauge",
            vec![format!(
                "100 * sum by (layer) ({EXPERIMENTS_TOTAL}{{status=\"COMPLETED\",{f}}}) / sum by (layer) ({EXPERIMENTS_TOTAL}{{{f}}})"
            )],
        ),
        // A/B tests have no region, layer or fault type of their own: the panel shows every test, its
        // group score with the verdict beside it.
        (
            "A/B tests: group score and verdict",
            "stat",
            vec![format!("{AB_SCORE} * on (test_id) group_left (verdict) ({AB_VERDICT} == 1)")],
        ),
    ]
}

fn thresholds(steps: &[(&str, Option<f64>)]) -> Json {
    json!({
        "mode": "absolute",
        "steps": steps.iter().map(|(color, value)| json!({"color": color, "value": value})).collect::<Vec<_>>(),
    })
}

fn reduce() -> Json {
    json!({"calcs": ["lastNotNull"], "fields": "", "values": false})
}

fn options(kind: &str) -> Json {
    match kind {
        "gauge" => json!({
            "showThresholdLabels": false, "showThresholdMarkers": true, "sizing": "auto",
            "minVizWidth": 75, "minVizHeight": 75, "reduceOptions": reduce(), "orientation": "auto",
        }),
        "stat" => json!({
            "graphMode": "none", "colorMode": "value", "justifyMode": "auto", "textMode": "value_and_name",
            "wideLayout": true, "showPercentChange": false, "reduceOptions": reduce(),
            "percentChangeColorMode": "standard", "orientation": "auto",
        }),
        "timeseries" => json!({
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }),
        "heatmap" => json!({
            "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange", "exponent": 0.5, "steps": 64, "reverse": false},
            "showValue": "auto", "yAxis": {"unit": "s"}, "legend": {"show": true},
            "tooltip": {"mode": "single", "yHistogram": false}, "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "calculate": false,
        }),
        "piechart" => json!({
            "pieType": "pie", "tooltip": {"mode": "single", "sort": "none"}, "reduceOptions": reduce(),
            "legend": {"values": ["value"], "displayMode": "list", "placement": "right", "showLegend": true, "calcs": []},
            "orientation": "auto",
        }),
        "bargauge" => json!({
            "displayMode": "gradient", "valueMode": "color", "namePlacement": "auto", "showUnfilled": true,
            "sizing": "auto", "minVizWidth": 8, "minVizHeight": 16, "maxVizHeight": 300,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": false, "calcs": []},
            "reduceOptions": reduce(), "orientation": "horizontal",
        }),
        _ => json!({}),
    }
}

fn field_defaults(title: &str) -> Json {
    match title {
        "Resilience score" => json!({
            "unit": "none", "min": 0, "max": 100,
            "thresholds": thresholds(&[("red", None), ("orange", Some(50.0)), ("green", Some(70.0))]),
        }),
        "Accuracy degradation" => json!({
            "unit": "percent", "min": 0, "max": 100,
            "thresholds": thresholds(&[("green", None), ("orange", Some(10.0)), ("red", Some(30.0))]),
        }),
        "Success rate by layer" => json!({
            "unit": "percent", "min": 0, "max": 100,
            "thresholds": thresholds(&[("red", None), ("orange", Some(70.0)), ("green", Some(90.0))]),
        }),
        "Recovery time" => json!({"unit": "s", "thresholds": thresholds(&[("green", None)])}),
        "Error rate" => json!({"unit": "reqps", "thresholds": thresholds(&[("green", None), ("red", Some(0.1))])}),
        _ => json!({"thresholds": thresholds(&[("green", None)])}),
    }
}

fn variable(name: &str, datasource: &Json) -> Json {
    let query = format!("label_values({EXPERIMENTS_TOTAL}, {name})");
    json!({
        "type": "query", "name": name, "label": name.replace('_', " "),
        "datasource": datasource, "query": query,
        "definition": query, "refresh": 2, "includeAll": true, "multi": true, "allValue": ".*",
        "current": {"text": ["All"], "value": ["$__all"]}, "sort": 1,
    })
}

/// The dashboard model (`dashboard` of `POST /api/dashboards/db`).
pub fn dashboard(opts: &DashboardOptions) -> Json {
    let datasource = json!({"type": "prometheus", "uid": opts.datasource_uid});
    let mut panels = Vec::new();
    for (i, (title, kind, exprs)) in panel_queries().into_iter().enumerate() {
        let targets: Vec<Json> = exprs
            .iter()
            .enumerate()
            .map(|(j, expr)| {
                let mut target = json!({
                    "refId": ((b'A' + j as u8) as char).to_string(), "expr": expr, "datasource": datasource,
                    "legendFormat": if kind == "heatmap" { "{{le}}" } else { "__auto" }, "range": true,
                });
                if kind == "heatmap" {
                    target["format"] = json!("heatmap");
                }
                target
            })
            .collect();
        let (w, h) = (12, 8);
        panels.push(json!({
            "id": i + 1, "type": kind, "title": title, "datasource": datasource,
            "gridPos": {"h": h, "w": w, "x": (i % 2) * 12, "y": (i / 2) * 8},
            "targets": targets, "options": options(kind),
            "fieldConfig": {"defaults": field_defaults(title), "overrides": []},
        }));
    }
    let variables: Vec<Json> = ["region", "layer", "fault_type"].iter().map(|n| variable(n, &datasource)).collect();
    let mut next_y = panel_queries().len().div_ceil(2) * 8;
    for (k, custom) in opts.custom_panels.iter().enumerate() {
        let mut panel = custom.clone();
        panel["id"] = json!(100 + k);
        if panel.get("gridPos").is_none() {
            panel["gridPos"] = json!({"h": 8, "w": 24, "x": 0, "y": next_y});
            next_y += 8;
        }
        if panel.get("datasource").is_none() {
            panel["datasource"] = datasource.clone();
        }
        panels.push(panel);
    }
    json!({
        "uid": "chaoseater", "title": opts.title, "tags": ["chaoseater", "chaos-engineering"],
        "timezone": "browser", "editable": true, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
        "refresh": "5s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "annotations": {"list": [{
            "name": "ChaosEater runs", "enable": true, "iconColor": "rgba(255, 96, 96, 1)",
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "target": {"limit": 100, "matchAny": true, "tags": ["chaoseater"], "type": "tags"},
        }]},
        "panels": panels,
    })
}

/// Alert thresholds.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// Fire when a region's latest score is below this (the Python tool's gate, 70).
    pub min_score: f64,
    /// Fire when failed probe requests exceed this many per second over 5 minutes.
    pub max_error_rate: f64,
    pub folder_uid: String,
    pub datasource_uid: String,
}

impl Default for AlertOptions {
    fn default() -> Self {
        Self {
            min_score: 70.0,
            max_error_rate: 0.1,
            folder_uid: "chaoseater".to_owned(),
            datasource_uid: "prometheus".to_owned(),
        }
    }
}

/// The rule group's name and evaluation interval (seconds).
pub const RULE_GROUP: &str = "chaoseater";
pub const RULE_INTERVAL_S: u64 = 60;

/// The alert expressions: (uid, title, PromQL that returns the offending series, summary).
pub fn alert_expressions(opts: &AlertOptions) -> Vec<(&'static str, &'static str, String, String)> {
    vec![
        (
            "chaoseater-low-score",
            "ChaosEater: low resilience score",
            format!("min by (region, layer, fault_type) ({RESILIENCE_SCORE}) < {}", opts.min_score),
            format!("A region scored below {} in its latest experiment.", opts.min_score),
        ),
        (
            "chaoseater-high-error-rate",
            "ChaosEater: high error rate",
            format!("sum by (region) (rate({ERRORS_TOTAL}[5m])) > {}", opts.max_error_rate),
            format!("Failed probe requests above {}/s over 5 minutes.", opts.max_error_rate),
        ),
    ]
}

/// Grafana provisioning payloads (`POST /api/v1/provisioning/alert-rules`, one per rule).
pub fn alert_rules(opts: &AlertOptions) -> Vec<Json> {
    alert_expressions(opts)
        .into_iter()
        .map(|(uid, title, expr, summary)| {
            json!({
                "uid": uid, "title": title, "ruleGroup": RULE_GROUP, "folderUID": opts.folder_uid, "orgID": 1,
                "condition": "B", "for": "1m", "noDataState": "OK", "execErrState": "Error",
                "labels": {"team": "chaoseater", "severity": "warning"},
                "annotations": {"summary": summary},
                "data": [
                    {
                        "refId": "A", "datasourceUid": opts.datasource_uid,
                        "relativeTimeRange": {"from": 600, "to": 0},
                        "model": {"refId": "A", "expr": expr, "instant": true, "range": false},
                    },
                    {
                        "refId": "B", "datasourceUid": "__expr__",
                        "model": {"refId": "B", "type": "threshold", "expression": "A",
                                  "conditions": [{"evaluator": {"type": "gt", "params": [0]}}]},
                    }
                ],
            })
        })
        .collect()
}

/// The rule group (`PUT /api/v1/provisioning/folder/{folder}/rule-groups/{group}`), to set the interval.
pub fn rule_group(opts: &AlertOptions) -> Json {
    json!({"title": RULE_GROUP, "folderUid": opts.folder_uid, "interval": RULE_INTERVAL_S, "rules": alert_rules(opts)})
}

/// The same alerts as a Prometheus rules file (YAML), for Alertmanager users.
pub fn prometheus_rules(opts: &AlertOptions) -> String {
    let mut out =
        String::from("# Generated by `chaoseater grafana rules`. The same alerts as the Grafana rules.\ngroups:\n");
    out.push_str(&format!("  - name: {RULE_GROUP}\n    interval: {RULE_INTERVAL_S}s\n    rules:\n"));
    for (uid, title, expr, summary) in alert_expressions(opts) {
        let alert: String = title.trim_start_matches("ChaosEater: ").split(' ').map(capitalise).collect();
        out.push_str(&format!(
            "      - alert: ChaosEater{alert}\n        expr: {expr}\n        for: 1m\n        labels:\n          severity: warning\n          rule_uid: {uid}\n        annotations:\n          summary: \"{summary}\"\n"
        ));
    }
    out
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests;

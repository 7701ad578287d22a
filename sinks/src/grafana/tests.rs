use std::collections::BTreeSet;

use serde_json::{Value as Json, json};

use super::*;
use crate::metrics::METRICS;

fn schema_file(name: &str) -> Json {
    let path = chaoseater_schemas::package_dir!().join("grafana-schemas").join(format!("{name}.jsonschema.json"));
    serde_json::from_slice(&std::fs::read(&path).expect("schema file")).expect("schema JSON")
}

/// A validator for `definition` of a schema file (or its root when `None`).
fn validator(file: &str, definition: Option<&str>) -> jsonschema::Validator {
    let mut schema = schema_file(file);
    if let Some(def) = definition {
        schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$ref": format!("#/definitions/{def}"),
            "definitions": schema["definitions"].clone(),
        });
    }
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn assert_valid(validator: &jsonschema::Validator, instance: &Json, what: &str) {
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "{what} is not valid:\n{}", errors.join("\n"));
}

#[test]
fn dashboard_validates_against_grafanas_schemas() {
    let custom = json!({"type": "text", "title": "Runbook", "options": {"mode": "markdown", "content": "see docs"}});
    let board = dashboard(&DashboardOptions { custom_panels: vec![custom], ..DashboardOptions::default() });
    assert_valid(&validator("dashboard", None), &board, "the dashboard");
    let query = validator("prometheus", Some("Dataquery"));
    let panels = board["panels"].as_array().expect("panels");
    assert_eq!(panels.len(), 10, "nine built-in panels and the custom one");
    for panel in panels {
        let kind = panel["type"].as_str().expect("type");
        assert_valid(&validator(kind, Some("Options")), &panel["options"], &format!("{kind} options"));
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_valid(&query, target, "a Prometheus target");
        }
    }
    assert_eq!(board["refresh"], "5s");
    assert_eq!(board["time"]["from"], "now-1h");
    let variables: Vec<&str> =
        board["templating"]["list"].as_array().expect("vars").iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(variables, ["region", "layer", "fault_type"]);
    let steps = |title: &str| -> Vec<Json> {
        let panel = panels.iter().find(|p| p["title"] == title).expect("panel");
        panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["value"].clone())
            .collect()
    };
    assert_eq!(steps("Resilience score"), [Json::Null, json!(50.0), json!(70.0)]);
    assert_eq!(steps("Accuracy degradation"), [Json::Null, json!(10.0), json!(30.0)]);
    assert_eq!(steps("Success rate by layer"), [Json::Null, json!(70.0), json!(90.0)]);
}

#[test]
fn alert_rules_validate_against_grafanas_schema() {
    let opts = AlertOptions::default();
    let rule = validator("alerting", Some("Rule"));
    let rules = alert_rules(&opts);
    assert_eq!(rules.len(), 2);
    for r in &rules {
        assert_valid(&rule, r, "an alert rule");
    }
    assert_valid(&validator("alerting", Some("RuleGroup")), &rule_group(&opts), "the rule group");
    let expr = rules[0]["data"][0]["model"]["expr"].as_str().expect("expr");
    assert!(expr.ends_with("< 70"), "{expr}");
}

/// Metric names and labels in every PromQL expression we generate.
fn names_and_labels(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    let words: Vec<&str> =
        expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$')).filter(|w| !w.is_empty()).collect();
    for w in &words {
        if w.starts_with("chaos_") {
            names.insert((*w).to_owned());
        }
    }
    // Label names appear before =, =~, != inside braces, and inside by (...).
    for part in expr.split(['{', ',', '(']) {
        let part = part.trim();
        if let Some((name, _)) = part.split_once(['=', '!'])
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.is_empty()
        {
            labels.insert(name.to_owned());
        }
    }
    for by in expr.split("by (").skip(1) {
        for label in by.split(')').next().unwrap_or_default().split(',') {
            labels.insert(label.trim().to_owned());
        }
    }
    (names, labels)
}

#[test]
fn every_query_uses_names_and_labels_the_exporter_writes() {
    let known: BTreeSet<String> = METRICS
        .iter()
        .flat_map(|(name, kind, _)| {
            if *kind == "histogram" {
                vec![format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")]
            } else {
                vec![(*name).to_owned()]
            }
        })
        .collect();
    let exporter_labels: BTreeSet<String> =
        ["region", "layer", "fault_type", "status", "le", "strategy", "test_id", "label_a", "label_b", "verdict"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut exprs: Vec<String> = panel_queries().into_iter().flat_map(|(_, _, e)| e).collect();
    exprs.extend(alert_expressions(&AlertOptions::default()).into_iter().map(|(_, _, e, _)| e));
    for expr in &exprs {
        let (names, labels) = names_and_labels(expr);
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(known.contains(&name), "{expr}: {name} is not written by the exporter");
        }
        for label in labels {
            assert!(exporter_labels.contains(&label), "{expr}: label {label} is never set");
        }
    }
}

#[test]
fn the_checked_in_prometheus_rules_are_the_generated_ones() {
    let path = chaoseater_schemas::package_dir!().join("../deploy/prometheus/chaoseater-rules.yml");
    let generated = prometheus_rules(&AlertOptions::default());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).expect("write rules");
    }
    let checked_in =
        std::fs::read_to_string(&path).expect("deploy/prometheus/chaoseater-rules.yml (UPDATE_GOLDEN=1 writes it)");
    assert_eq!(checked_in, generated);
    assert!(generated.contains("alert: ChaosEaterLowResilienceScore"));
}

/// `deploy/grafana/` is what docker-compose.yml mounts into Grafana: it must be what the generator
/// writes today (UPDATE_GOLDEN=1 rewrites it, as `chaoseater grafana provision --out-dir deploy/grafana` does).
#[test]
fn the_checked_in_grafana_provisioning_is_the_generated_one() {
    let dir = chaoseater_schemas::package_dir!().join("../deploy/grafana");
    let opts = provisioning::ProvisioningOptions::default();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        provisioning::write_all(&dir, &opts).expect("write the provisioning files");
    }
    for file in provisioning::files(&opts) {
        let path = dir.join(file.path);
        let checked_in = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(checked_in, file.text, "{} differs from the generator's", file.path);
    }
}

#[test]
fn provisioning_files_validate_and_refer_to_each_other() {
    let opts = provisioning::ProvisioningOptions::default();
    let parse = |path: &str| -> Json {
        let file = provisioning::files(&opts).into_iter().find(|f| f.path == path).expect("generated");
        if path.ends_with(".json") {
            serde_json::from_str(&file.text).expect("JSON")
        } else {
            serde_yaml::from_str(&file.text).expect("YAML")
        }
    };
    let board = parse("dashboards/chaoseater.json");
    assert_valid(&validator("dashboard", None), &board, "the provisioned dashboard");

    // The file shape names the group and folder once; the API's Rule carries them per rule.
    let alerting = parse("provisioning/alerting/chaoseater.yaml");
    assert_eq!(alerting["apiVersion"], 1);
    let group = &alerting["groups"][0];
    assert_eq!(group["interval"], "60s");
    let rule_schema = validator("alerting", Some("Rule"));
    let rules = group["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), alert_expressions(&opts.alerts).len());
    for rule in rules {
        let mut api_shape = rule.clone();
        api_shape["folderUID"] = json!("resolved-by-grafana");
        api_shape["ruleGroup"] = group["name"].clone();
        api_shape["orgID"] = group["orgId"].clone();
        assert_valid(&rule_schema, &api_shape, "a provisioned alert rule");
    }

    // Every query of the dashboard and of the rules reads the provisioned data source.
    let datasource = &parse("provisioning/datasources/chaoseater.yaml")["datasources"][0];
    assert_eq!(datasource["type"], "prometheus");
    assert_eq!(datasource["url"], "http://prometheus:9090");
    let uid = datasource["uid"].as_str().expect("uid");
    for panel in board["panels"].as_array().expect("panels") {
        assert_eq!(panel["datasource"]["uid"], uid, "panel {}", panel["title"]);
    }
    for rule in rules {
        assert_eq!(rule["data"][0]["datasourceUid"], uid, "rule {}", rule["title"]);
    }
    let provider = &parse("provisioning/dashboards/chaoseater.yaml")["providers"][0];
    assert_eq!(provider["options"]["path"], "/etc/grafana/dashboards", "docker-compose.yml mounts it there");
    assert_eq!(provider["folder"], group["folder"], "the dashboard and the rules share a folder");
}

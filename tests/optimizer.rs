//! The optimizer's commands end to end: a history written by the test (score = f(corruption rate) +
//! noise, f known), then `optimizer train` (the model saved, ModelTrained on the real broker),
//! `predict`, `suggest` and `analyze`, and the refusals that name the field with exit code 2.

mod common;

use chaoseater_processors::history::{HistoryDir, synthetic, tables};
use chaoseater_schemas::experiment::ParamValue;
use chaoseater_schemas::rng::Rng;
use common::cluster::*;
use common::*;
use serde_json::Value;

const END_MS: i64 = 1_795_823_999_999; // 2026-11-27T23:59:59.999Z

/// The truth the test owns: 95 points, less 80 per unit of corruption rate (40 in ap-south).
fn truth(region: &str, rate: f64) -> f64 {
    95.0 - if region == "ap-south" { 40.0 } else { 80.0 } * rate
}

/// 1,800 results of the synthetic generator, rewritten: the corruption runs draw their rate and score by
/// the truth, the others keep theirs. Dated up to now, so `--days` windows include them.
fn write_history(c: &Cluster) {
    let state = c.dir.path().join("state");
    let (dir, _) = HistoryDir::open(&state.join("history")).expect("history");
    let now = chaoseater_schemas::ids::TimestampMs::now().0;
    let mut rng = Rng::new(5);
    let mut rates = std::collections::BTreeMap::new();
    let results: Vec<_> = synthetic::results(1_800, 20, 3, now - 60_000)
        .map(|mut r| {
            if r.fault_type == "data_corruption" {
                let rate = *rates.entry(r.run_id.clone()).or_insert_with(|| rng.uniform(0.0, 0.6));
                r.parameters.insert("corruption_rate".into(), ParamValue::Float(rate));
                if r.resilience_score.is_some() {
                    r.resilience_score = Some((truth(r.region.as_str(), rate) + 3.0 * rng.normal()).clamp(0.0, 100.0));
                }
            }
            r
        })
        .collect();
    let _ = END_MS;
    dir.write_segment("t.results", 0, 0, results.len() as i64, tables::Rows::of_results(&results)).expect("segment");
}

fn json(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

#[test]
fn train_predict_suggest_and_analyze_answer_from_the_history() {
    let c = Cluster::new("optimizer");
    // Before any training: a clear refusal.
    let out = c.run(&["optimizer", "predict", "data_corruption"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    write_history(&c);

    let out = c.run(&["optimizer", "train", "--days", "30", "--format", "json"]);
    let trained = json(&out);
    let models = trained["models"].as_array().expect("models");
    let corruption = models.iter().find(|m| m["scope"] == "data_corruption").expect("a data_corruption model");
    assert!(corruption["cv"]["model_r2"].as_f64().expect("r2") >= 0.8, "{corruption}");
    assert!(corruption["beats_baseline"].as_bool().expect("bool"), "{corruption}");
    assert!(c.dir.path().join("state/optimizer/model.json").is_file());
    // Every training is on the results topic.
    let events = c.results("ModelTrained");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["model_id"], trained["model_id"]);

    let out = c.run(&[
        "optimizer",
        "predict",
        "data_corruption",
        "--param",
        "corruption_rate=0.5",
        "--region",
        "eu-west",
        "--format",
        "json",
    ]);
    let p = &json(&out)[0];
    let (value, lower, upper) =
        (p["value"].as_f64().unwrap(), p["lower"].as_f64().unwrap(), p["upper"].as_f64().unwrap());
    assert!((value - truth("eu-west", 0.5)).abs() < 6.0, "{p}");
    assert!(lower < value && value < upper, "{p}");
    let out = c.run(&["optimizer", "predict", "data_corruption", "--param", "corruption_rate=0.5"]);
    let shown = text(&out.stdout);
    assert!(out.status.success() && shown.contains("ap-south") && shown.contains("90% interval"), "{shown}");

    let out = c.run(&["optimizer", "suggest", "data_corruption", "--target-score", "70", "--format", "json"]);
    let s = json(&out);
    let rate: f64 = s["params"]["corruption_rate"].as_str().expect("rate").parse().expect("number");
    for region in ["eu-west", "us-east", "ap-south"] {
        assert!(truth(region, rate) >= 70.0 - 3.0, "{region} at {rate}: {s}");
    }
    assert!(rate > 0.15, "{s}");

    // Refusals name what to fix.
    for (args, field) in [
        (vec!["optimizer", "predict", "data_corruptio"], "fault_type"),
        (vec!["optimizer", "predict", "data_corruption", "--param", "corruption=0.1"], "corruption"),
        (vec!["optimizer", "predict", "data_corruption", "--param", "corruption_rate=1.5"], "corruption_rate"),
        (vec!["optimizer", "suggest", "data_corruption", "--target-score", "101"], "--target-score"),
        (vec!["optimizer", "predict", "packet_loss"], "packet_loss"),
        (vec!["optimizer", "train", "--metric", "nope"], "--metric"),
    ] {
        let out = c.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(field), "{args:?}: {}", text(&out.stderr));
    }

    // The analysis: ap-south answers corruption better; its numbers come back from its own SQL.
    let out = c.run(&["optimizer", "analyze", "--days", "30", "--format", "json"]);
    let analysis = json(&out);
    let recommendations = analysis["recommendations"].as_array().expect("recommendations");
    let architecture = recommendations
        .iter()
        .find(|r| {
            r["category"] == "architecture" && r["title"].as_str().unwrap_or_default().contains("data_corruption")
        })
        .unwrap_or_else(|| panic!("{analysis:#}"));
    assert!(architecture["title"].as_str().unwrap().contains("up to ap-south's"), "{architecture}");
    let sql = architecture["sql"].as_str().expect("sql");
    let out = c.run(&["sql", "--format", "json", sql]);
    let rows = json(&out);
    let ap = rows.as_array().expect("rows").iter().find(|r| r["region"] == "ap-south").expect("ap-south row");
    let evidence = architecture["evidence"].as_str().expect("evidence");
    let mean = ap["mean_score"].as_f64().expect("mean");
    let shown: f64 = evidence
        .split("ap-south scores ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ap-south mean in {evidence}"));
    assert!((shown - mean).abs() <= 0.051, "{evidence} / {mean}");
    for format in ["text", "markdown"] {
        let out = c.run(&["optimizer", "analyze", "--format", format]);
        assert!(out.status.success() && text(&out.stdout).contains("Recommendations"), "{}", text(&out.stdout));
    }
}

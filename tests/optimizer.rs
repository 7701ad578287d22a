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

#[test]
fn plan_proposes_within_the_caps_and_open_circuits_and_approve_runs_a_proposal() {
    use chaoseater_schemas::bus::EventProducer;
    use chaoseater_schemas::events::{CircuitState, CircuitStateChanged, Event};
    use chaoseater_schemas::ids::{EventId, RegionName, TimestampMs};
    use std::time::Duration;

    let mut c = Cluster::new("plan");
    // No model yet: a clear refusal.
    let out = c.run(&["plan"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    write_history(&c);
    json(&c.run(&["optimizer", "train", "--format", "json"]));

    // eu-west: a real agent allowing 2 s faults; us-east: its circuit is open; ap-south: no agent answers.
    c.region("eu-west", "127.0.0.61", 3, "[caps]\nmax_duration_s = 2");
    c.region("us-east", "127.0.0.62", 2, "");
    c.register("ap-south", "http://127.0.0.63:9", 1);
    let ctx = context(&c.brokers, &c.prefix);
    let open = Event::CircuitStateChanged(CircuitStateChanged {
        event_id: EventId::derive("CircuitStateChanged", &["us-east", "test"]),
        occurred_at: TimestampMs::now(),
        region: RegionName::new("us-east"),
        from_state: CircuitState::Closed,
        to_state: CircuitState::Open,
        reason: "the test opened it".into(),
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async { EventProducer::new(&ctx).expect("producer").publish(&open).await }).expect("publish");

    let out = c.run(&["plan", "--budget", "3", "--fault-type", "data_corruption", "--format", "json"]);
    let plan = json(&out);
    let proposals = plan["proposals"].as_array().expect("proposals");
    assert_eq!(proposals.len(), 3, "{plan:#}");
    for p in proposals {
        assert_eq!(p["prediction"]["region"], "eu-west", "{p}");
        assert!(p["prediction"]["duration_s"].as_f64().expect("duration") <= 2.0, "{p}");
        let rate: f64 = p["prediction"]["params"]["corruption_rate"].as_str().expect("rate").parse().expect("number");
        assert!((0.0..=1.0).contains(&rate), "{p}");
    }
    let notes = plan["notes"].to_string();
    assert!(notes.contains("us-east: circuit open"), "{notes}");
    assert!(notes.contains("ap-south: its agent did not report its caps"), "{notes}");
    let published = c.results("ExperimentProposed");
    assert_eq!(published.len(), 3, "{published:?}");

    // A human approves one: it runs in eu-west, once, however often it is approved.
    c.serve("ledger,orchestrator,dispatcher");
    let id = proposals[0]["proposal_id"].as_str().expect("id").to_owned();
    for _ in 0..2 {
        let out = c.run(&["plan", "approve", &id]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains(&format!("run run-{id} requested")), "{}", text(&out.stdout));
    }
    let run_id = format!("run-{id}");
    wait_until(Duration::from_secs(120), "the approved run completes", || {
        c.results("RunCompleted").iter().any(|e| e["run_id"] == run_id.as_str())
    });
    let results: Vec<Value> =
        c.results("RegionResult").into_iter().filter(|e| e["run_id"] == run_id.as_str()).collect();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["region"], "eu-west");
    // Approved proposals are not proposed again; an unknown one is refused.
    let again = json(&c.run(&["plan", "--budget", "3", "--fault-type", "data_corruption", "--format", "json"]));
    assert!(again["proposals"].as_array().expect("proposals").iter().all(|p| p["proposal_id"] != id.as_str()));
    let out = c.run(&["plan", "approve", "prop-000000000000"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = c.run(&["plan", "--budget", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--budget"), "{}", text(&out.stderr));
}

#[test]
fn serve_auto_approves_within_its_daily_budget() {
    use std::time::Duration;

    let mut c = Cluster::new("auto-plan")
        .with_config("[optimizer]\ncheck_interval_s = 0.5\nauto_approve_per_day = 2\nplan_budget = 5\n");
    write_history(&c);
    c.region("eu-west", "127.0.0.64", 1, "[caps]\nmax_duration_s = 1");
    c.serve("ledger,orchestrator,dispatcher,optimizer");
    wait_until(Duration::from_secs(180), "two auto-approved runs complete", || {
        let runs: Vec<String> = c
            .events(chaoseater_schemas::topics::Topic::Commands, "RunRequested")
            .iter()
            .filter(|r| r["requested_by"].as_str().unwrap_or_default().contains("auto-approve"))
            .map(|r| r["run_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let completed = c.results("RunCompleted");
        runs.len() == 2 && runs.iter().all(|id| completed.iter().any(|e| e["run_id"] == id.as_str()))
    });
    let proposed = c.results("ExperimentProposed");
    assert_eq!(proposed.len(), 2, "the day's budget is 2: {proposed:?}");
    assert!(proposed.iter().all(|p| p["proposed_by"] == "auto" && p["region"] == "eu-west"), "{proposed:?}");
    assert!(c.dir.path().join("state/optimizer/auto_approved.json").is_file());
}

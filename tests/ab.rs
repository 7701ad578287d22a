//! A/B tests end to end on the real broker: agents in front of demo targets with and without input
//! validation, `serve` running the coordinator, the orchestrator and the dispatcher, and `chaoseater ab`.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use common::cluster::*;
use common::*;
use serde_json::Value;

/// A data-corruption A/B test between two regions.
fn ab_file(a: &str, b: &str, metrics: &str) -> String {
    format!(
        r#"ab:
  metrics: {metrics}
  variant_a: {{label: {a}, regions: [{a}]}}
  variant_b: {{label: {b}, regions: [{b}]}}
experiments:
  - name: corrupt
    layer: data
    fault_type: data_corruption
    duration: 1
    parameters: {{corruption_rate: 0.3}}
    rollback: {{failure_threshold: 0.95}}
"#
    )
}

/// Starts `chaoseater ab ARGS` with its output captured, to wait for later.
fn spawn_ab(c: &Cluster, args: &[&str]) -> std::process::Child {
    c.cmd()
        .arg("ab")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ab")
}

fn report(out: &std::process::Output) -> Value {
    let stdout = text(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", text(&out.stderr)))
}

fn metric<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["metrics"].as_array().expect("metrics").iter().find(|m| m["metric"] == name).expect("metric judged")
}

/// The sample runs of test `id` that started, and how often each did.
fn sample_starts(c: &Cluster, id: &str) -> BTreeMap<String, usize> {
    let mut starts = BTreeMap::new();
    for started in c.results("RunStarted") {
        let run = started["run_id"].as_str().unwrap_or_default();
        if run.starts_with(&format!("{id}.")) {
            *starts.entry(run.to_owned()).or_insert(0) += 1;
        }
    }
    starts
}

#[test]
fn a_real_defence_is_judged_better_and_an_a_a_test_no_different() {
    let mut c = Cluster::new("ab-judged");
    c.region("none-1", "127.0.0.41", 1, "");
    c.defended_region("validate", "127.0.0.42", 1, "", "validate");
    c.region("none-2", "127.0.0.43", 1, "");
    c.region("none-3", "127.0.0.46", 1, "");
    c.serve("ledger,orchestrator,dispatcher,ab,history");

    // B validates its inputs, A does not; both face 30% corrupted cells. Run as a child, with the A/A
    // test beside it on other regions: the coordinator runs both at once.
    let better = c.write("better.yaml", &ab_file("none-1", "validate", "[resilience_score]"));
    let same = c.write("same.yaml", &ab_file("none-2", "none-3", "[resilience_score]"));
    let better_run = spawn_ab(
        &c,
        &[
            better.to_str().expect("path"),
            "--samples",
            "8",
            "--expect",
            "b-better",
            "--format",
            "json",
            "--timeout",
            "300",
        ],
    );
    let same_run = spawn_ab(
        &c,
        &[
            same.to_str().expect("path"),
            "--samples",
            "6",
            "--expect",
            "not-worse",
            "--format",
            "json",
            "--timeout",
            "300",
        ],
    );
    let out = better_run.wait_with_output().expect("ab finished");

    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let judged = report(&out);
    assert_eq!(judged["status"], "CONCLUDED");
    assert_eq!(judged["verdict"], "B_BETTER", "{judged:#}");
    let score = metric(&judged, "resilience_score");
    assert_eq!((score["n_a"].as_i64(), score["n_b"].as_i64()), (Some(8), Some(8)));
    assert!(score["p_value"].as_f64().expect("p") < 0.05, "{score:#}");
    assert!(score["hl_estimate"].as_f64().expect("shift") > 0.0, "{score:#}");
    assert_eq!(score["label"], "BETTER");
    // Progress went to stderr, a line per sample.
    assert_eq!(text(&out.stderr).matches("done: A").count(), 16, "{}", text(&out.stderr));
    let id = judged["test_id"].as_str().expect("id").to_owned();
    assert_eq!(sample_starts(&c, &id).len(), 16);

    // The history has the test: `ab report` rebuilds the same report, and its samples' rows say which
    // test, variant and sample they were.
    let mut rebuilt = Value::Null;
    wait_until(Duration::from_secs(90), "the report in the history", || {
        let out = c.run(&["ab", "report", &id, "--format", "json"]);
        rebuilt = serde_json::from_str(&text(&out.stdout)).unwrap_or(Value::Null);
        out.status.success()
    });
    assert_eq!(rebuilt, judged, "the report from the history is the one the coordinator concluded");
    let sql = format!(
        "SELECT ab_variant, count(*) AS n FROM experiments WHERE ab_test_id = '{id}' GROUP BY ab_variant ORDER BY ab_variant"
    );
    wait_until(Duration::from_secs(60), "the samples' rows in the history", || {
        let out = c.run(&["sql", &sql, "--format", "json"]);
        let rows: Value = serde_json::from_str(&text(&out.stdout)).unwrap_or(Value::Null);
        rows == serde_json::json!([{"ab_variant": "A", "n": 8}, {"ab_variant": "B", "n": 8}])
    });

    // A/A: the same target and fault on both sides. Not judged different; the gate `not-worse` passes.
    let out = same_run.wait_with_output().expect("ab finished");
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let aa = report(&out);
    assert_eq!(aa["verdict"], "NO_SIGNIFICANT_DIFFERENCE", "{aa:#}");
    assert_eq!(metric(&aa, "resilience_score")["label"], "NO_DIFFERENCE");
    // The same file gated on b-better fails with exit code 1: the CI gate.
    let out = c.run(&["ab", same.to_str().expect("path"), "--samples", "3", "--expect", "b-better"]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("NO SIGNIFICANT DIFFERENCE"), "{}", text(&out.stdout));
}

#[test]
fn a_coordinator_killed_mid_test_ends_with_exactly_2n_samples_and_a_complete_report() {
    let mut c = Cluster::new("ab-kill");
    let a = c.region("kill-a", "127.0.0.44", 1, "");
    let b = c.defended_region("kill-b", "127.0.0.45", 1, "", "validate");
    c.serve("ledger,orchestrator,dispatcher");
    let coordinator = c.serve("ab");
    let file = c.write("kill.yaml", &ab_file("kill-a", "kill-b", "[resilience_score]"));
    let child = spawn_ab(&c, &[file.to_str().expect("path"), "--samples", "4", "--format", "json", "--timeout", "300"]);

    // SIGKILL the coordinator once the first samples are in, then start a new one on the same state.
    let completed = |c: &Cluster| {
        c.results("RunCompleted").iter().filter(|e| e["run_id"].as_str().is_some_and(|r| r.contains(".a"))).count()
    };
    wait_until(Duration::from_secs(120), "a first sample done", || completed(&c) >= 1);
    let mut killed = c.services.remove(coordinator);
    killed.0.kill().expect("SIGKILL the coordinator");
    killed.0.wait().expect("reaped");
    assert!(c.results("AbTestConcluded").is_empty(), "killed mid-test, not after it");
    c.serve("ab");

    let out = child.wait_with_output().expect("ab finished");
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let report = report(&out);
    assert_eq!(report["status"], "CONCLUDED", "{report:#}");
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 8, "{report:#}");
    let score = metric(&report, "resilience_score");
    assert_eq!((score["n_a"].as_i64(), score["n_b"].as_i64()), (Some(4), Some(4)));
    // Every sample ran once: one start each, one experiment on its region's agent.
    let id = report["test_id"].as_str().expect("id").to_owned();
    let starts = sample_starts(&c, &id);
    assert_eq!(starts.len(), 8, "{starts:?}");
    assert!(starts.values().all(|n| *n == 1), "{starts:?}");
    for sample in samples {
        let run = sample["run_id"].as_str().expect("run id");
        let agent = if sample["variant"] == "A" { &a } else { &b };
        assert_eq!(ran(agent, run), 1, "{run}");
    }
    assert_eq!(c.results("AbTestConcluded").len(), 1, "one report");
}

#[test]
fn bad_ab_files_are_refused_with_exit_code_2_before_anything_runs() {
    let c = Cluster::new("ab-refused");
    let good = ab_file("x", "y", "[resilience_score]");
    let cases = [
        ("samples", good.replace("  metrics:", "  samples: 2\n  metrics:")),
        ("ab.metrics", good.replace("[resilience_score]", "[vibes]")),
        ("ab.confidence", good.replace("  metrics:", "  confidence: 1.0\n  metrics:")),
        ("identical", good.replace("regions: [y]", "regions: [x]").replace("label: y", "label: z")),
        ("overlap", good.replace("regions: [y]", "regions: [x, y]")),
    ];
    for (needle, yaml) in cases {
        let file = c.write("bad.yaml", &yaml);
        let out = c.run(&["ab", file.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{needle}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{needle}: {}", text(&out.stderr));
    }
}

#[test]
fn an_aborted_test_aborts_its_samples_in_flight_and_ends_not_judged() {
    let mut c = Cluster::new("ab-abort");
    c.region("abort-a", "127.0.0.47", 1, "");
    c.region("abort-b", "127.0.0.48", 1, "");
    c.serve("ledger,orchestrator,dispatcher,ab");
    let file = c.write("abort.yaml", &ab_file("abort-a", "abort-b", "[resilience_score]"));
    let child =
        spawn_ab(&c, &[file.to_str().expect("path"), "--samples", "10", "--format", "json", "--timeout", "300"]);
    let mut id = String::new();
    wait_until(Duration::from_secs(120), "the first samples started", || {
        let requested = c.events(chaoseater_schemas::topics::Topic::Commands, "AbTestRequested");
        id = requested.first().and_then(|r| r["run_id"].as_str()).unwrap_or_default().to_owned();
        !id.is_empty() && !sample_starts(&c, &id).is_empty()
    });
    let out = c.run(&["abort", &id, "--reason", "enough"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = child.wait_with_output().expect("ab finished");
    assert_eq!(out.status.code(), Some(1), "an aborted test is no pass: {}", text(&out.stderr));
    let report = report(&out);
    assert_eq!(report["status"], "ABORTED", "{report:#}");
    assert!(report["reason"].as_str().is_some_and(|r| r.contains("enough")), "{report:#}");
    assert!(report["verdict"].is_null(), "not judged");
    let ran = report["samples"].as_array().expect("samples").len();
    assert!(ran < 20, "no sample starts after the abort: {ran}");
    // Each sample in flight was asked to abort, and no sample started that did not end.
    let aborts: Vec<Value> = c
        .events(chaoseater_schemas::topics::Topic::Commands, "AbortRequested")
        .into_iter()
        .filter(|a| a["run_id"].as_str().is_some_and(|r| r.starts_with(&format!("{id}."))))
        .collect();
    assert!(!aborts.is_empty(), "the samples in flight were aborted");
    assert_eq!(sample_starts(&c, &id).len(), ran, "every sample that started is in the report");
}

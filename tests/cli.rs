//! The binary as a user runs it: submit, tail, topics, the embedded broker found from another process,
//! and the demo.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const GOOD: &str = r#"
experiments:
  - name: latency-check
    layer: infrastructure
    fault_type: network_latency
    duration: 2
    parameters: {latency_ms: 150}
    rollback_strategy: auto
"#;

/// Counts the messages on a topic (from the beginning, until idle).
fn count_messages(brokers: &str, prefix: &str, topic: &str) -> usize {
    let out = run(bin()
        .args(["--brokers", brokers, "--topic-prefix", prefix, "tail", topic, "--from-beginning"])
        .args(["--idle-timeout", "3"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().count()
}

#[test]
fn submit_refuses_bad_files_with_exit_code_2_and_publishes_nothing() {
    let brokers = brokers();
    let prefix = unique_prefix("submit-bad");
    let out = run(bin().args(["--brokers", &brokers, "--topic-prefix", &prefix, "topics", "create"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.yaml",
            "experiments:\n  - {name: a, layer: data, fault_type: data_explosion, duration: 1}\n",
            "field fault_type: unknown fault_type \"data_explosion\"",
        ),
        (
            "range.yaml",
            "experiments:\n  - {name: a, layer: infrastructure, fault_type: packet_loss, duration: 1, parameters: {loss_rate: 1.5}}\n",
            r#"field parameters.loss_rate: fault parameter "loss_rate" must be in [0, 1], got 1.5"#,
        ),
        (
            "duration.yaml",
            "experiments:\n  - {name: a, layer: model, fault_type: model_drift}\n",
            "field duration: missing",
        ),
        ("syntax.yaml", "experiments:\n  - {name: a, layer: model\n", "not a valid experiment file"),
        (
            "push.yaml",
            "experiments:\n  - {name: b, layer: model, fault_type: model_drift, duration: 1}\nprometheus: {pushgateway_url: \"https://pg:9091\"}\n",
            "field prometheus: pushgateway_url \"https://pg:9091\": only http:// is supported",
        ),
    ];
    for (file, body, expected) in cases {
        let path = dir.path().join(file);
        // A good experiment first: one bad experiment must keep the whole file from being published.
        std::fs::write(&path, format!("{}{}", GOOD, body.trim_start_matches("experiments:\n"))).unwrap();
        let out = run(bin().args(["--brokers", &brokers, "--topic-prefix", &prefix, "submit"]).arg(&path));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains(file), "{file}: error does not name the file: {stderr}");
        assert!(stderr.contains(expected), "{file}: expected {expected:?} in {stderr}");
    }
    assert_eq!(count_messages(&brokers, &prefix, "commands"), 0, "a refused file published something");
}

/// The Python tool's `config.example.yaml` shape: its experiments and its `prometheus:` block.
#[test]
fn submit_dry_run_accepts_the_python_tools_config_with_its_prometheus_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.example.yaml");
    std::fs::write(
        &path,
        "experiments:\n  - name: data_corruption_test\n    description: Corrupt 10% of input data\n    layer: data\n    fault_type: data_corruption\n    duration: 60\n    parameters:\n      corruption_rate: 0.1\n    rollback_strategy: auto\n  - name: model_unavailable_test\n    layer: model\n    fault_type: model_unavailable\n    duration: 30\n    parameters:\n      failure_rate: 0.5\n\nprometheus:\n  pushgateway_url: \"localhost:9091\"\n  job_name: \"chaos_engineering\"\n",
    )
    .unwrap();
    let out = run(bin().args(["submit", "--dry-run"]).arg(&path));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON")["experiment"]["name"].to_string())
        .collect();
    assert_eq!(names, ["\"data_corruption_test\"", "\"model_unavailable_test\""]);
}

#[test]
fn submitted_runs_appear_in_tail() {
    let brokers = brokers();
    let prefix = unique_prefix("submit-good");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, GOOD).unwrap();
    // Topics are created on demand by submit against a configured broker.
    let out = run(bin().args(["--brokers", &brokers, "submit"]).arg(&path).args(["--topic-prefix", &prefix]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let run_id = stdout.split('\t').next().unwrap().trim().to_owned();
    assert_eq!(run_id.len(), 36, "{stdout}");

    let out = run(bin()
        .args(["--brokers", &brokers, "--topic-prefix", &prefix, "tail", "commands", "--from-beginning"])
        .args(["--max-messages", "1", "--idle-timeout", "30"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line: serde_json::Value = serde_json::from_str(text(&out.stdout).lines().next().expect("one line")).unwrap();
    assert_eq!(line["event"]["type"], "RunRequested");
    assert_eq!(line["event"]["run_id"], run_id.as_str());
    assert_eq!(line["event"]["experiment"]["parameters"]["latency_ms"], 150);
    assert_eq!(line["key"], run_id.as_str());
    assert_eq!(line["topic"], format!("{prefix}.commands"));
}

#[test]
fn client_without_a_broker_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin().current_dir(dir.path()).args(["tail", "results"]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("chaoseater serve") && stderr.contains("--brokers"), "{stderr}");
}

#[test]
fn serve_without_a_broker_embeds_one_that_other_processes_find() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Every processor, the metrics endpoint on a free port.
    std::fs::write(dir.path().join("chaoseater.toml"), "[sinks]\nmetrics_listen = \"127.0.0.1:0\"\n").unwrap();
    let child = bin()
        .current_dir(dir.path())
        .args(["serve", "--state-dir"])
        .arg(&state)
        .env("CHAOSEATER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut serve = KillOnDrop(child);
    let address_file = state.join("broker.addr");
    wait_until(Duration::from_secs(30), "the embedded broker's address file", || exists(&address_file));

    let experiments = dir.path().join("e.yaml");
    std::fs::write(&experiments, GOOD).unwrap();
    let out = run(bin().current_dir(dir.path()).args(["submit", "--state-dir"]).arg(&state).arg(&experiments));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(bin()
        .current_dir(dir.path())
        .args(["tail", "commands", "--from-beginning", "--max-messages", "1", "--idle-timeout", "30", "--state-dir"])
        .arg(&state));
    assert!(text(&out.stdout).contains("\"RunRequested\""), "{}", text(&out.stderr));

    terminate(&serve.0);
    let status = serve.0.wait().unwrap();
    assert!(status.success(), "serve did not stop cleanly on SIGTERM");
    let log: Vec<String> = BufReader::new(serve.0.stderr.take().unwrap()).lines().map_while(Result::ok).collect();
    let log = log.join("\n");
    assert!(log.contains("started the embedded broker"), "{log}");
    assert!(log.contains("applied=1"), "the ledger did not apply the run: {log}");
    assert!(!exists(&address_file), "the address file outlived the broker");

    let out = run(bin().current_dir(dir.path()).args(["tail", "results", "--state-dir"]).arg(&state));
    assert_eq!(out.status.code(), Some(1), "a stale embedded broker was used");
}

#[test]
fn demo_runs_on_the_embedded_broker_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new(env!("CARGO_BIN_EXE_chaoseater"))
        .current_dir(dir.path())
        .env_remove("CHAOSEATER_BROKERS")
        .arg("demo"));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("embedded (librdkafka mock cluster)"), "{stdout}");
    // Four runs executed on three regions' agents, each with its aggregate report.
    assert_eq!(stdout.matches("\" (parallel): COMPLETED").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("\" (sequential): COMPLETED").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("\" (blast-radius): COMPLETED").count(), 1, "{stdout}");
    assert_eq!(stdout.matches("success rate").count(), 4, "{stdout}");
    assert_eq!(stdout.matches("gate (min score").count(), 4, "{stdout}");
    assert!(stdout.contains("chaoseater.dlq.error"), "{stdout}");
    assert!(stdout.contains("everything it started has stopped"), "{stdout}");
    // Served metrics and generated Grafana files.
    assert!(stdout.matches("\n  chaos_resilience_score{").count() >= 5, "{stdout}");
    let grafana = dir.path().join(".chaoseater/grafana");
    for file in ["dashboard.json", "grafana-alert-rules.json", "grafana-rule-group.json", "chaoseater-rules.yml"] {
        assert!(grafana.join(file).exists(), "{file} written");
    }
    assert!(!dir.path().join(".chaoseater/broker.addr").exists());
}

#[test]
fn topics_and_schemas_commands() {
    let brokers = brokers();
    let prefix = unique_prefix("topics");
    let out = run(bin().args(["--brokers", &brokers, "--topic-prefix", &prefix, "topics", "create"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("created").count(), 8);
    let out = run(bin().args(["topics", "create", "--brokers", &brokers, "--topic-prefix", &prefix]));
    assert_eq!(text(&out.stdout).matches("exists").count(), 8, "not idempotent: {}", text(&out.stdout));
    let out = run(bin().args(["--brokers", &brokers, "topics", "list"]));
    assert!(text(&out.stdout).contains(&format!("{prefix}.regions\t1 partition(s)")));

    let out = run(bin().args(["schemas", "list"]));
    assert_eq!(text(&out.stdout).lines().count(), 28, "a header and 27 event types");
    let dir = tempfile::tempdir().unwrap();
    let out = run(bin().args(["schemas", "export"]).arg(dir.path()));
    assert!(out.status.success());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 27);
    let out = run(bin().args(["schemas", "show", "Nope"]));
    assert_eq!(out.status.code(), Some(2));
}

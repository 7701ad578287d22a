//! Rollback strategies end to end on the real broker: `chaoseater serve` with the rollback processor, an
//! agent in front of a demo target, a real network_latency fault, and the share of faulted traffic
//! measured at the agent between the steps.

mod common;

use std::time::Duration;

use chaoseater_schemas::topics::Topic;
use common::cluster::*;
use common::*;
use serde_json::Value;

/// The agent's view of the run's experiment in `region`.
fn agent_experiment(api: &str, run_id: &str, region: &str) -> Value {
    let (status, body) = http(api, "GET", &format!("/api/v1/experiments/{run_id}.{region}"), None, None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// The share of requests the fault acted on in each stretch: from injecting to the first step, between
/// steps, and after the last step until the experiment ended. With `n` requests in the stretch.
fn faulted_shares(view: &Value) -> Vec<(f64, u64)> {
    let count = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let mut marks: Vec<(u64, u64, u64)> = vec![(0, 0, 0)];
    for step in view["rollback_steps"].as_array().expect("rollback_steps") {
        marks.push((count(step, "requests"), count(step, "faulted"), count(step, "bypassed")));
    }
    let t = &view["traffic"];
    marks.push((count(t, "requests"), count(t, "faulted"), count(t, "bypassed")));
    marks
        .windows(2)
        .map(|w| {
            let (faulted, bypassed) = (w[1].1 - w[0].1, w[1].2 - w[0].2);
            // After the last step the fault is gone: nothing is faulted or bypassed, every request is clean.
            let n = if faulted + bypassed > 0 { faulted + bypassed } else { w[1].0 - w[0].0 };
            (if n == 0 { f64::NAN } else { faulted as f64 / n as f64 }, n)
        })
        .collect()
}

/// Each measured share within one request (two for rounding at the stretch's edges) of the expected one.
fn assert_shares(measured: &[(f64, u64)], expected: &[f64]) {
    assert_eq!(measured.len(), expected.len(), "stretches: {measured:?}");
    for ((share, n), want) in measured.iter().zip(expected) {
        assert!(*n >= 5, "too few requests to measure a share: {measured:?}");
        assert!(
            (share - want).abs() <= 2.0 / *n as f64,
            "faulted share {share:.3} of {n}, expected {want}: {measured:?}"
        );
    }
}

fn latency(name: &str, rollback: &str) -> String {
    experiment(name, "network_latency", "{latency_ms: 40, jitter_ms: 0}", &format!("    rollback: {rollback}\n"))
}

fn step_numbers(c: &Cluster, topic: Topic, kind: &str, run_id: &str) -> Vec<i64> {
    let mut steps: Vec<i64> = c
        .events(topic, kind)
        .iter()
        .filter(|e| e["run_id"] == run_id)
        .map(|e| e["step"].as_i64().expect("step"))
        .collect();
    steps.sort_unstable();
    steps
}

#[test]
fn gradual_and_canary_rollbacks_lift_a_real_latency_fault_step_by_step() {
    let mut c = Cluster::new("rb-steps");
    let api = c.region("eu", "127.0.0.21", 1, "");
    c.serve("orchestrator,dispatcher,rollback");

    let file = c.write(
        "gradual.yaml",
        &latency("lat", "{strategy: gradual, gradual_steps: 5, health_check_interval: 0.5, timeout_seconds: 60}"),
    );
    let out = c.run(&["run", file.to_str().expect("path"), "--regions", "eu", "--timeout", "120"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("rollback gradual (duration_ended): 5 of 5 steps [20% → 40% → 60% → 80% → 100%], completed"),
        "{stdout}"
    );
    let id = run_ids(&out).remove(0);
    let view = agent_experiment(&api, &id, "eu");
    assert_eq!(view["status"], "completed", "{view}");
    assert_shares(&faulted_shares(&view), &[1.0, 0.8, 0.6, 0.4, 0.2, 0.0]);
    let started = c.rollback_events("RollbackStarted");
    let started = started.iter().find(|e| e["run_id"] == id.as_str()).expect("RollbackStarted");
    assert_eq!(started["trigger"], "DURATION_ENDED");
    assert_eq!(step_numbers(&c, Topic::Rollback, "RollbackStepApplied", &id), [1, 2, 3, 4, 5]);
    let completed = c.rollback_events("RollbackCompleted");
    assert!(completed.iter().any(|e| e["run_id"] == id.as_str() && e["steps"] == 5), "{completed:?}");

    // Canary: 10% first, checked, then the rest.
    let file =
        c.write("canary.yaml", &latency("can", "{strategy: canary, health_check_interval: 0.5, timeout_seconds: 60}"));
    let out = c.run(&["run", file.to_str().expect("path"), "--regions", "eu", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let id = run_ids(&out).remove(0);
    let view = agent_experiment(&api, &id, "eu");
    let percentages: Vec<f64> =
        view["rollback_steps"].as_array().expect("steps").iter().filter_map(|s| s["percentage"].as_f64()).collect();
    assert_eq!(percentages, [10.0, 100.0]);
    assert_shares(&faulted_shares(&view), &[1.0, 0.9, 0.0]);
}

#[test]
fn blue_green_switches_to_a_healthy_green_and_back_from_a_sick_one() {
    let mut c = Cluster::new("rb-bluegreen");
    let (green, green_addr) = spawn_target("127.0.0.22");
    c.keep.push(green);
    let good = c.region("good", "127.0.0.22", 1, &format!("[alternates]\ngreen = \"http://{green_addr}\""));
    let dead = format!("127.0.0.23:{}", free_port());
    let sick = c.region("sick", "127.0.0.23", 2, &format!("[alternates]\ngreen = \"http://{dead}\""));
    c.serve("orchestrator,dispatcher,rollback");
    let rollback = "{strategy: blue_green, health_check_interval: 0.5, timeout_seconds: 60}";

    let file = c.write("bg.yaml", &latency("bg", rollback));
    let out = c.run(&["run", file.to_str().expect("path"), "--regions", "good", "--timeout", "120"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("rollback blue_green (duration_ended): 1 of 1 steps [100%], completed"), "{stdout}");
    let (_, health) = http(&good, "GET", "/health", None, None);
    assert!(health.contains("\"upstream\":\"green\""), "traffic stays on green: {health}");

    // Green is not there: its check fails and traffic goes back to blue.
    let out =
        c.run(&["run", file.to_str().expect("path"), "--regions", "sick", "--min-score", "0", "--timeout", "120"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("switched back to blue"), "{stdout}\n{}", text(&out.stderr));
    let id = run_ids(&out).remove(0);
    let failed = c.rollback_events("RollbackFailed");
    let failed = failed.iter().find(|e| e["run_id"] == id.as_str()).expect("RollbackFailed");
    assert!(failed["reason"].as_str().expect("reason").contains("green is unhealthy"), "{failed}");
    let (_, health) = http(&sick, "GET", "/health", None, None);
    assert!(health.contains("\"upstream\":\"primary\""), "traffic back on blue: {health}");
}

#[test]
fn an_unhealthy_target_pauses_a_gradual_rollback_until_resumed() {
    let mut c = Cluster::new("rb-pause");
    let dead = format!("127.0.0.24:{}", free_port());
    let api = c.region("eu", "127.0.0.24", 1, &format!("[alternates]\ndead = \"http://{dead}\""));
    c.serve("orchestrator,dispatcher,rollback");
    // failure_threshold 1.0: only the health check, not the error rate, judges this rollback.
    let file = c.write(
        "pause.yaml",
        &experiment(
            "pause",
            "network_latency",
            "{latency_ms: 20, jitter_ms: 0}",
            "    duration: 3\n    rollback: {strategy: gradual, gradual_steps: 2, health_check_interval: 0.5, failure_threshold: 1.0, timeout_seconds: 60}\n",
        )
        .replace("    duration: 1\n", ""),
    );
    let out = c.run(&["submit", file.to_str().expect("path"), "--regions", "eu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_ids(&out).remove(0);

    // While the fault is in place, the target behind the agent goes away (its upstream points nowhere).
    let dispatch = format!("/api/v1/experiments/{id}.eu");
    wait_until(Duration::from_secs(30), "the fault to be injected", || {
        http(&api, "GET", &dispatch, None, None).1.contains("\"status\":\"injecting\"")
    });
    let (status, body) = http(&api, "POST", "/api/v1/upstream", Some(r#"{"name":"dead"}"#), Some(AGENT_TOKEN));
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(30), "the rollback to pause", || {
        c.rollback_events("RollbackPaused").iter().any(|e| e["run_id"] == id.as_str())
    });
    let paused = c.rollback_events("RollbackPaused");
    let paused = paused.iter().find(|e| e["run_id"] == id.as_str()).expect("paused");
    assert_eq!(paused["step"], 1);
    assert!(paused["reason"].as_str().expect("reason").contains("health check failed"), "{paused}");
    let out = c.run(&["rollback", "status", &id]);
    assert!(text(&out.stdout).contains("1 of 2 steps [50%], paused"), "{}", text(&out.stdout));
    assert_eq!(step_numbers(&c, Topic::Dispatch, "RollbackStepRequested", &id), [1], "no step after a failed check");

    // The target is back; resume finishes the rollback and the run.
    let (status, body) = http(&api, "POST", "/api/v1/upstream", Some(r#"{"name":"primary"}"#), Some(AGENT_TOKEN));
    assert_eq!(status, 200, "{body}");
    let out = c.run(&["rollback", "resume", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(60), "the run to complete", || {
        c.results("RunCompleted").iter().any(|e| e["run_id"] == id.as_str())
    });
    assert!(c.rollback_events("RollbackCompleted").iter().any(|e| e["run_id"] == id.as_str()));
    let out = c.run(&["rollback", "resume", &id]);
    assert_eq!(out.status.code(), Some(2), "nothing paused any more: {}", text(&out.stderr));
}

#[test]
fn a_rollback_processor_killed_mid_rollback_finishes_it_once_restarted() {
    let mut c = Cluster::new("rb-kill");
    let api = c.region("eu", "127.0.0.25", 1, "");
    c.serve("orchestrator,dispatcher");
    let rollback = c.serve("rollback");
    let file = c.write(
        "kill.yaml",
        &latency("kill", "{strategy: gradual, gradual_steps: 5, health_check_interval: 1.0, timeout_seconds: 60}"),
    );
    let out = c.run(&["submit", file.to_str().expect("path"), "--regions", "eu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_ids(&out).remove(0);
    wait_until(Duration::from_secs(60), "step 2 to be applied", || {
        step_numbers(&c, Topic::Rollback, "RollbackStepApplied", &id).contains(&2)
    });
    c.services[rollback].0.kill().expect("SIGKILL the rollback processor");
    let _ = c.services[rollback].0.wait();
    c.serve("rollback");
    wait_until(Duration::from_secs(90), "the run to complete", || {
        c.results("RunCompleted").iter().any(|e| e["run_id"] == id.as_str())
    });
    assert!(c.rollback_events("RollbackCompleted").iter().any(|e| e["run_id"] == id.as_str()));
    let view = agent_experiment(&api, &id, "eu");
    let percentages: Vec<f64> =
        view["rollback_steps"].as_array().expect("steps").iter().filter_map(|s| s["percentage"].as_f64()).collect();
    assert_eq!(percentages, [20.0, 40.0, 60.0, 80.0, 100.0], "each step applied once at the agent: {view}");
    // Every request published more than once carries the same id: one decision per step.
    let mut ids: Vec<(i64, String)> = c
        .events(Topic::Dispatch, "RollbackStepRequested")
        .iter()
        .filter(|e| e["run_id"] == id.as_str())
        .map(|e| (e["step"].as_i64().expect("step"), e["event_id"].as_str().expect("id").to_owned()))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3, 4, 5], "{ids:?}");
}

//! Distributed runs end to end on the real broker: agents on distinct 127.0.0.x addresses in front of
//! demo targets, `chaoseater serve` running the orchestrator and the dispatcher, and the CLI.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::Value;

#[test]
fn parallel_sequential_blast_radius_and_fail_fast_on_real_agents() {
    let mut c = Cluster::new("modes");
    let eu = c.region("eu-west", "127.0.0.2", 3, "");
    let us = c.region("us-east", "127.0.0.3", 2, "");
    let ap = c.region("ap-south", "127.0.0.4", 1, "");
    // A region whose agent allows little memory: memory_pressure there is refused (FAILED at once).
    let tiny = c.region("tiny", "127.0.0.5", 4, "[caps]\nmax_memory_mb = 8");
    c.serve("ledger,orchestrator,dispatcher");

    // Parallel over three regions: a latency fault every region survives; the gate passes.
    let file = c.write("parallel.yaml", &experiment("lat", "network_latency", "{latency_ms: 30, jitter_ms: 0}", ""));
    let out = c.run(&[
        "run",
        file.to_str().expect("path"),
        "--regions",
        "eu-west,us-east,ap-south",
        "--mode",
        "parallel",
        "--timeout",
        "120",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("(parallel): COMPLETED"), "{stdout}");
    assert!(stdout.contains("success rate 100%"), "{stdout}");
    assert!(stdout.contains("gate: PASSED"), "{stdout}");
    let id = run_ids(&out).remove(0);
    assert_eq!([ran(&eu, &id), ran(&us, &id), ran(&ap, &id), ran(&tiny, &id)], [1, 1, 1, 0]);

    // Sequential: by priority, one at a time; the results come back in that order.
    let file = c.write("sequential.yaml", &experiment("seq", "model_unavailable", "{failure_rate: 0.2}", ""));
    let out = c.run(&[
        "run",
        file.to_str().expect("path"),
        "--regions",
        "ap-south,eu-west,us-east",
        "--mode",
        "sequential",
        "--min-score",
        "0",
        "--timeout",
        "120",
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let id = run_ids(&out).remove(0);
    let mut finished: Vec<(i64, String)> = c
        .results("RegionResult")
        .iter()
        .filter(|r| r["run_id"] == id.as_str())
        .map(|r| (r["finished_at"].as_i64().expect("finished_at"), r["region"].as_str().expect("region").to_owned()))
        .collect();
    finished.sort();
    let order: Vec<&str> = finished.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(order, ["eu-west", "us-east", "ap-south"], "priority order");

    // Blast radius 50% of four regions: exactly two, the lowest priorities, counted at the agents.
    let file = c.write("blast.yaml", &experiment("blast", "network_latency", "{latency_ms: 10}", ""));
    let out = c.run(&[
        "run",
        file.to_str().expect("path"),
        "--mode",
        "blast-radius",
        "--blast-radius-percent",
        "50",
        "--timeout",
        "120",
    ]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let id = run_ids(&out).remove(0);
    assert_eq!([ran(&eu, &id), ran(&us, &id), ran(&ap, &id), ran(&tiny, &id)], [0, 1, 1, 0]);

    // fail_fast: tiny (highest priority) fails, nothing else runs; the gate fails with exit code 1.
    let file = c.write("failfast.yaml", &experiment("ff", "memory_pressure", "{memory_mb: 64}", ""));
    let out = c.run(&[
        "run",
        file.to_str().expect("path"),
        "--regions",
        "tiny,eu-west,us-east",
        "--mode",
        "sequential",
        "--fail-fast",
        "--timeout",
        "120",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("max_memory_mb"), "the agent's reason is in the report: {stdout}");
    assert_eq!(stdout.matches("not run: fail_fast").count(), 2, "{stdout}");
    let id = run_ids(&out).remove(0);
    assert_eq!([ran(&eu, &id), ran(&us, &id), ran(&tiny, &id)], [0, 0, 0]);

    // The health monitor has sampled every region.
    let out = c.run(&["health"]);
    let health = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(health.matches("HEALTHY").count(), 4, "{health}");
}

/// A server that answers every request with 500.
fn answer_500() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let body = r#"{"error":"internal failure"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// A server that accepts connections and never answers.
fn hang() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    addr
}

#[test]
fn agents_down_hanging_or_failing_fail_their_region_and_the_run_completes() {
    let mut c = Cluster::new("failures");
    let ok = c.region("ok", "127.0.0.6", 4, "");
    c.register("down", &format!("http://127.0.0.1:{}", free_port()), 3);
    c.register("hang", &format!("http://{}", hang()), 2);
    c.register("err500", &format!("http://{}", answer_500()), 1);
    c.serve("orchestrator,dispatcher");
    let file = c.write("f.yaml", &experiment("failures", "network_latency", "{latency_ms: 10}", ""));
    let started = Instant::now();
    let out = c.run(&[
        "run",
        file.to_str().expect("path"),
        "--mode",
        "parallel",
        "--max-concurrent",
        "4",
        "--timeout",
        "120",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(1 + 30 + 20), "within duration + 30 s (+ slack)");
    let line =
        |region: &str| stdout.lines().find(|l| l.trim_start().starts_with(region)).unwrap_or_default().to_owned();
    assert!(line("ok").contains("COMPLETED"), "{stdout}");
    assert!(line("down").contains("FAILED") && line("down").contains("timeout"), "{stdout}");
    assert!(line("down").contains("onnect"), "the connection error is named: {stdout}");
    assert!(line("hang").contains("FAILED") && line("hang").contains("timeout"), "{stdout}");
    assert!(line("err500").contains("FAILED") && line("err500").contains("HTTP 500"), "{stdout}");
    assert!(stdout.contains("(parallel): FAILED"), "the run completes: {stdout}");
    let id = run_ids(&out).remove(0);
    assert_eq!(ran(&ok, &id), 1);
    let out = c.run(&["health", "--probe"]);
    let health = text(&out.stdout);
    let row = |region: &str| health.lines().find(|l| l.starts_with(region)).unwrap_or_default().to_owned();
    assert!(row("ok").contains("HEALTHY"), "{health}");
    assert!(row("down").contains("FAILED"), "{health}");
    assert!(row("hang").contains("FAILED"), "{health}");
    assert!(row("err500").contains("DEGRADED"), "{health}");
}

#[test]
fn an_orchestrator_killed_mid_run_resumes_and_every_region_runs_once() {
    let mut c = Cluster::new("kill");
    let apis =
        [c.region("r1", "127.0.0.7", 3, ""), c.region("r2", "127.0.0.8", 2, ""), c.region("r3", "127.0.0.9", 1, "")];
    c.serve("ledger,dispatcher");
    let orchestrator = c.serve("orchestrator");
    let file = c.write("k.yaml", &experiment("killed", "network_latency", "{latency_ms: 10}", ""));
    let out = c.run(&["submit", file.to_str().expect("path"), "--mode", "sequential"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_ids(&out).remove(0);
    // Kill it once the second region is running: one result consumed, one dispatch in flight.
    wait_until(Duration::from_secs(60), "the second region to start", || ran(&apis[1], &id) == 1);
    c.services[orchestrator].0.kill().expect("SIGKILL");
    c.services[orchestrator].0.wait().expect("reaped");
    c.serve("orchestrator");
    wait_until(Duration::from_secs(90), "the run to complete", || {
        !c.results("RunCompleted").iter().all(|e| e["run_id"] != id.as_str())
    });
    assert_eq!(apis.iter().map(|a| ran(a, &id)).collect::<Vec<_>>(), [1, 1, 1], "every region ran exactly once");
    // Copies of a fact carry the same id: one distinct id per region result and per completion.
    for kind in ["RegionResult", "RunStarted", "RunCompleted"] {
        let events: Vec<Value> = c.results(kind).into_iter().filter(|e| e["run_id"] == id.as_str()).collect();
        let mut by_meaning: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for e in &events {
            let meaning = e["region"].as_str().unwrap_or("run").to_owned();
            by_meaning.entry(meaning).or_default().insert(e["event_id"].as_str().expect("id").to_owned());
        }
        let expected = if kind == "RegionResult" { 3 } else { 1 };
        assert_eq!(by_meaning.len(), expected, "{kind}: {events:?}");
        assert!(by_meaning.values().all(|ids| ids.len() == 1), "{kind} duplicated with another id: {by_meaning:?}");
    }
    let out = c.run(&["status", &id]);
    assert!(text(&out.stdout).contains("(sequential): COMPLETED"), "{}", text(&out.stdout));
}

#[test]
fn unknown_regions_and_invalid_experiments_are_rejected() {
    let mut c = Cluster::new("reject");
    c.region("only", "127.0.0.10", 1, "");
    c.serve("orchestrator");
    let file = c.write("r.yaml", &experiment("nowhere", "network_latency", "{latency_ms: 10}", ""));
    let out = c.run(&["submit", file.to_str().expect("path"), "--regions", "mars"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_ids(&out).remove(0);
    wait_until(Duration::from_secs(30), "RunRejected", || {
        c.results("RunRejected").iter().any(|e| e["run_id"] == id.as_str())
    });
    let out = c.run(&["status", &id]);
    assert!(text(&out.stdout).contains("REJECTED: unknown region \"mars\""), "{}", text(&out.stdout));

    // Another system publishes a command our gateway would have refused: the orchestrator refuses it too.
    let out = c.run(&["submit", file.to_str().expect("path"), "--dry-run"]);
    let line = text(&out.stdout).lines().next().expect("a command").to_owned();
    let mut event: chaoseater_schemas::events::Event = serde_json::from_str(&line).expect("event");
    let bad_id = "00000000-0000-4000-8000-00000000bad1";
    if let chaoseater_schemas::events::Event::RunRequested(r) = &mut event {
        r.run_id = chaoseater_schemas::ids::RunId::new(bad_id);
        r.event_id = chaoseater_schemas::events::RunRequested::id_for(&r.run_id);
        r.regions.clear();
        r.experiment.parameters.insert("latency_ms".into(), chaoseater_schemas::experiment::ParamValue::Int(-5));
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let ctx = context(&c.brokers, &c.prefix);
        chaoseater_schemas::bus::EventProducer::new(&ctx).expect("producer").publish(&event).await.expect("published");
    });
    wait_until(Duration::from_secs(30), "RunRejected for the invalid experiment", || {
        c.results("RunRejected")
            .iter()
            .any(|e| e["run_id"] == bad_id && e["reason"].as_str().is_some_and(|r| r.contains("latency_ms")))
    });
}

#[test]
fn an_abort_reaches_the_region_in_flight_and_stops_the_rest() {
    let mut c = Cluster::new("abort");
    let first = c.region("a1", "127.0.0.11", 2, "");
    let second = c.region("a2", "127.0.0.12", 1, "");
    c.serve("orchestrator,dispatcher");
    let file = c.write(
        "a.yaml",
        "experiments:\n  - name: long\n    layer: model\n    fault_type: model_unavailable\n    duration: 30\n    parameters: {failure_rate: 1.0}\n",
    );
    let out = c.run(&["submit", file.to_str().expect("path"), "--mode", "sequential"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_ids(&out).remove(0);
    wait_until(Duration::from_secs(60), "the first region to inject", || {
        let (_, body) = http(&first, "GET", "/api/v1/experiments", None, None);
        body.contains("\"injecting\"")
    });
    let asked = Instant::now();
    let out = c.run(&["abort", &id, "--reason", "test abort"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until(Duration::from_secs(90), "the run to complete as aborted", || {
        c.results("RunCompleted").iter().any(|e| e["run_id"] == id.as_str() && e["status"] == "ABORTED")
    });
    assert!(asked.elapsed() < Duration::from_secs(25), "well before the 30 s fault would have ended");
    let (_, body) = http(&first, "GET", "/api/v1/experiments", None, None);
    assert!(body.contains("\"aborted\""), "the agent aborted its experiment: {body}");
    assert_eq!(ran(&second, &id), 0, "the second region was never dispatched");
    let out = c.run(&["status", &id]);
    let status = text(&out.stdout);
    assert!(status.contains("(sequential): ABORTED"), "{status}");
    assert!(status.contains("not run: aborted (test abort)"), "{status}");
}

/// Circuit transitions of `region` so far, as (from, to, occurred_at).
#[test]
fn a_failing_region_opens_its_circuit_its_run_is_rolled_back_and_new_dispatches_wait() {
    let interval_ms = 1_000;
    let config = format!(
        "[dispatcher]\nhealth_interval_s = {}\n[circuit]\nfailures_to_open = 2\ncooldown_s = 1.0\nprobes_to_close = 2\n",
        interval_ms as f64 / 1000.0
    );
    let mut c = Cluster::new("circuit").with_config(&config);
    let flaky = c.region("flaky", "127.0.0.14", 1, "");
    // "later" has no agent yet: its health fails and its circuit opens.
    let later_port = free_port();
    c.register("later", &format!("http://127.0.0.15:{later_port}"), 0);
    c.serve("orchestrator,dispatcher,circuit,rollback");

    // A total model outage makes the agent's health probe fail: the circuit opens and the run in flight
    // there is rolled back at once (immediate, whatever its strategy) long before its 20 s. Its failure
    // threshold is out of reach so that the circuit, not the error rate, is what acts.
    let outage = c.write(
        "outage.yaml",
        "experiments:\n  - name: outage\n    layer: model\n    fault_type: model_unavailable\n    duration: 20\n    parameters: {failure_rate: 1.0}\n    rollback: {strategy: gradual, failure_threshold: 1.0}\n",
    );
    let started = Instant::now();
    let out =
        c.run(&["run", outage.to_str().expect("path"), "--regions", "flaky", "--min-score", "0", "--timeout", "60"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("rollback immediate (circuit_open): 1 of 1 steps [100%], completed"), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "rolled back well before the fault's 20 s: {:?}",
        started.elapsed()
    );
    let id = run_ids(&out).remove(0);
    let (_, body) = http(&flaky, "GET", &format!("/api/v1/experiments/{id}.flaky"), None, None);
    assert!(body.contains("\"status\":\"completed\"") && body.contains("\"rolled_back_percentage\":100.0"), "{body}");
    let opened_at =
        transitions(&c, "flaky").iter().find(|(_, to, _)| to == "OPEN").map(|(_, _, at)| *at).expect("open");
    let applied = c.rollback_events("RollbackStepApplied");
    let applied_at = applied.iter().find(|e| e["run_id"] == id.as_str()).and_then(|e| e["occurred_at"].as_i64());
    let reaction = applied_at.expect("step applied") - opened_at;
    assert!(
        (0..2 * interval_ms).contains(&reaction),
        "rolled back within two health intervals of the circuit opening: {reaction} ms"
    );
    wait_until(Duration::from_secs(30), "flaky's circuit to close again", || {
        transitions(&c, "flaky").iter().any(|(_, to, _)| to == "CLOSED")
    });
    let seen: Vec<(String, String)> = transitions(&c, "flaky").into_iter().map(|(f, t, _)| (f, t)).collect();
    assert_eq!(
        seen[..3],
        [("CLOSED".into(), "OPEN".into()), ("OPEN".into(), "HALF_OPEN".into()), ("HALF_OPEN".into(), "CLOSED".into())]
    );

    // A run for "later" while its circuit is open is held; once an agent answers there and the circuit
    // closes, the dispatch goes out (started after the close) and completes.
    wait_until(Duration::from_secs(30), "later's circuit to open", || {
        transitions(&c, "later").iter().any(|(_, to, _)| to == "OPEN")
    });
    let quick = c.write("quick.yaml", &experiment("quick", "network_latency", "{latency_ms: 10}", ""));
    let out = c.run(&["submit", quick.to_str().expect("path"), "--regions", "later"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = run_ids(&out).remove(0);
    let (target, target_addr) = spawn_target("127.0.0.15");
    let agent_dir = c.dir.path().join("agents").join("later");
    let config = agent_config(&agent_dir, "127.0.0.15", &target_addr, "");
    let toml = std::fs::read_to_string(&config)
        .expect("agent.toml")
        .replace("listen = \"127.0.0.15:0\"\nproxy", &format!("listen = \"127.0.0.15:{later_port}\"\nproxy"));
    std::fs::write(&config, toml).expect("agent.toml");
    let (agent, _api, _proxy) = spawn_agent(&config);
    let _later = (target, KillOnDrop(agent));
    wait_until(Duration::from_secs(60), "the held run to complete", || {
        c.results("RunCompleted").iter().any(|e| e["run_id"] == id.as_str())
    });
    let closed_at = transitions(&c, "later")
        .iter()
        .filter(|(_, to, _)| to == "CLOSED")
        .map(|(_, _, at)| *at)
        .min()
        .expect("closed");
    let result = c.results("RegionResult").into_iter().find(|e| e["run_id"] == id.as_str()).expect("result");
    assert_eq!(result["status"], "COMPLETED", "{result}");
    assert!(
        result["started_at"].as_i64().expect("started_at") >= closed_at,
        "dispatched only after the circuit closed: {result}"
    );
}

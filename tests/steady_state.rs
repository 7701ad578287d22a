//! The steady state users feel, end to end on the real broker (score_version 2): a latency objective
//! that a slow fault breaches, and one it does not.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;

/// Runs `fault` with `params` for `duration` seconds in `region`; returns its RegionResult.
fn run_one(c: &Cluster, region: &str, name: &str, fault: &str, params: &str, duration: u32) -> Value {
    let layer = if fault == "network_latency" { "infrastructure" } else { "model" };
    let yaml = format!(
        "experiments:\n  - name: {name}\n    layer: {layer}\n    fault_type: {fault}\n    duration: {duration}\n    parameters: {params}\n"
    );
    let file = c.write(&format!("{name}.yaml"), &yaml);
    let out =
        c.run(&["run", file.to_str().expect("path"), "--regions", region, "--min-score", "0", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let id = run_ids(&out).remove(0);
    c.results("RegionResult").into_iter().find(|e| e["run_id"] == id.as_str()).expect("the region's result")
}

#[test]
fn latency_beyond_the_objective_is_downtime_and_within_it_is_not() {
    let mut c = Cluster::new("latency-objective");
    // Every probe request within 100 ms.
    c.region("objective", "127.0.0.51", 1, "latency_ms = 100\nlatency_quantile = 1.0");
    c.serve("ledger,orchestrator,dispatcher");

    // Five times the objective for 2 s: every window of the fault is down, every request a bad one.
    let slow = run_one(&c, "objective", "slow", "network_latency", "{latency_ms: 500, jitter_ms: 0}", 2);
    let (score, m) = (slow["resilience_score"].as_f64().expect("score"), &slow["metrics"]);
    assert_eq!(slow["score_version"], 2, "{slow}");
    assert_eq!((m["slo_latency_ms"].as_f64(), m["slo_latency_quantile"].as_f64()), (Some(100.0), Some(1.0)), "{m}");
    let downtime = m["pipeline_downtime_s"].as_f64().expect("downtime");
    assert!((downtime - 2.0).abs() <= 0.5, "downtime {downtime} s for a 2 s fault: {m}");
    assert!(score < 100.0, "{slow}");
    assert!(m["slow_count"].as_i64().expect("slow") > 0 && m["latency_within_objective"].as_f64() == Some(0.0), "{m}");
    assert!(m["latency_p50_ms"].as_f64().expect("p50") >= 500.0, "{m}");

    // A tenth of the objective: nothing is breached.
    let quick = run_one(&c, "objective", "quick", "network_latency", "{latency_ms: 10, jitter_ms: 0}", 2);
    let m = &quick["metrics"];
    assert_eq!(quick["resilience_score"].as_f64(), Some(100.0), "{quick}");
    assert_eq!((m["pipeline_downtime_s"].as_f64(), m["slow_count"].as_i64()), (Some(0.0), Some(0)), "{m}");
    assert_eq!(m["latency_within_objective"].as_f64(), Some(1.0), "{m}");
}

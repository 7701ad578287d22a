//! The steady state users feel, end to end on the real broker (score_version 2): a latency objective
//! that a slow fault breaches, and one it does not; faults struck between a gateway and its model
//! server, where the gateway's defences answer them; accuracy over every request.

mod common;

use common::cluster::*;
use common::*;
use serde_json::Value;

/// Runs `fault` with `params` for `duration` seconds in `region`; returns its RegionResult.
fn run_one(c: &Cluster, region: &str, name: &str, fault: &str, params: &str, duration: u32) -> Value {
    let layer = match fault {
        "network_latency" | "packet_loss" => "infrastructure",
        "data_corruption" => "data",
        _ => "model",
    };
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

fn score(result: &Value) -> f64 {
    result["resilience_score"].as_f64().unwrap_or_else(|| panic!("a score: {result}"))
}

#[test]
fn a_gateways_defences_answer_the_faults_struck_behind_it() {
    let mut c = Cluster::new("defences");
    c.gateway_region("bare", "127.0.0.52", "", "none");
    c.gateway_region("fallback", "127.0.0.53", "", "fallback");
    c.gateway_region("retry", "127.0.0.54", "", "retry");
    c.serve("ledger,orchestrator,dispatcher");

    // Half the model server's answers fail on the inner hop: the fallback model answers them instead.
    let bare = run_one(&c, "bare", "outage-bare", "model_unavailable", "{failure_rate: 0.5}", 2);
    let fallback = run_one(&c, "fallback", "outage-fallback", "model_unavailable", "{failure_rate: 0.5}", 2);
    assert!(score(&fallback) >= score(&bare) + 20.0, "fallback {fallback}\nbare {bare}");
    assert!(fallback["metrics"]["coverage"].as_f64() > bare["metrics"]["coverage"].as_f64(), "{fallback}\n{bare}");

    // Lost connections between the gateway and the model server: retries get most requests through.
    let bare = run_one(&c, "bare", "loss-bare", "packet_loss", "{loss_rate: 0.3}", 2);
    let retry = run_one(&c, "retry", "loss-retry", "packet_loss", "{loss_rate: 0.3}", 2);
    assert!(score(&retry) > score(&bare), "retry {retry}\nbare {bare}");
    assert!(retry["metrics"]["error_count"].as_i64() < bare["metrics"]["error_count"].as_i64(), "{retry}\n{bare}");
}

#[test]
fn accuracy_counts_every_request_and_its_interval_holds_the_noise() {
    let mut c = Cluster::new("accuracy");
    // A strict target refuses corrupted records (400); a fallback target answers them from its
    // nearest-centroid model, right or wrong.
    c.region("strict", "127.0.0.55", 1, "");
    c.defended_region("answers", "127.0.0.56", 1, "", "fallback");
    c.serve("ledger,orchestrator,dispatcher");
    let corrupt = "{corruption_rate: 0.3}";
    let strict = run_one(&c, "strict", "refuses", "data_corruption", corrupt, 2);
    let answers = run_one(&c, "answers", "answers", "data_corruption", corrupt, 2);
    let lost = |r: &Value| r["metrics"]["accuracy_degradation"].as_f64().unwrap_or_else(|| panic!("{r}"));
    assert!(lost(&strict) >= lost(&answers), "refusing loses at least answering: {strict}\n{answers}");
    assert!(strict["metrics"]["coverage"].as_f64() < Some(1.0), "the strict target refused some: {strict}");

    // Ten repetitions: a negative degradation (corruption that happened to help) stays inside its interval.
    for n in 0..10 {
        let r = run_one(&c, "answers", &format!("repeat-{n}"), "data_corruption", "{corruption_rate: 0.1}", 1);
        let m = &r["metrics"];
        let (point, high) = (lost(&r), m["accuracy_degradation_high"].as_f64().expect("interval"));
        assert!(m["accuracy_degradation_low"].as_f64().expect("interval") <= point && point <= high, "{m}");
        assert!(point >= 0.0 || high >= 0.0, "run {n}: a negative degradation outside its interval: {m}");
    }
}

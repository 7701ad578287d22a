//! The agent against a real demo target over real sockets: every proxy fault's effect on traffic, and its
//! revert; the API's contract, auth and validation; abort and rollback.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, Rig, TOKEN, body, experiment};
use hyper::Method;
use serde_json::{Value as Json, json};

fn metric(result: &Json, name: &str) -> f64 {
    result["metrics"][name].as_f64().unwrap_or_else(|| panic!("metric {name} in {result}"))
}

/// Sends `n` single predictions through the proxy while the experiment is injected; returns the status
/// codes (0 for a request that got no answer).
async fn traffic(rig: &Rig, n: usize) -> Vec<u16> {
    let records = rig.records(1);
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(rig.predict(records.clone()).await.map(|a| a.status.as_u16()).unwrap_or(0));
    }
    codes
}

async fn back_to_normal(rig: &Rig) {
    let answer = rig.predict(rig.records(4)).await.expect("answer after revert");
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(body(&answer)["predictions"].as_array().map(Vec::len), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_run_answers_in_the_python_tools_shape_and_network_latency_adds_its_delay() {
    let rig = Rig::start(Opts::default()).await;
    let result =
        rig.run(experiment("infrastructure", "network_latency", json!({"latency_ms": 100, "jitter_ms": 0}), 1.5)).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert!(result["resilience_score"].is_number());
    for key in ["pipeline_downtime_s", "recovery_time_s", "accuracy_degradation", "error_count", "latency_p50_ms"] {
        assert!(result["metrics"].get(key).is_some(), "missing {key}: {result}");
    }
    let added = metric(&result, "latency_p50_ms") - metric(&result, "baseline_latency_p50_ms");
    assert!((85.0..=115.0).contains(&added), "p50 raised by {added} ms, not 100 ± 15%: {result}");
    assert_eq!(metric(&result, "error_count"), 0.0);
    assert_eq!(metric(&result, "accuracy_degradation"), 0.0, "a latency fault loses no accuracy");
    let started = Instant::now();
    back_to_normal(&rig).await;
    assert!(started.elapsed() < Duration::from_millis(80), "latency reverted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_loss_fails_its_share_of_requests() {
    let rig = Rig::start(Opts::default()).await;
    let id = rig.inject(experiment("infrastructure", "packet_loss", json!({"loss_rate": 0.3}), 8.0)).await;
    // At least 800 requests and at least 1.5 s of fault, so the probes see it too (a release build sends
    // 800 requests in a fraction of a second).
    let started = Instant::now();
    let mut codes = traffic(&rig, 800).await;
    while started.elapsed() < Duration::from_millis(1500) {
        codes.extend(traffic(&rig, 50).await);
    }
    let lost = codes.iter().filter(|c| **c == 0).count() as f64 / codes.len() as f64;
    assert!(codes.iter().all(|c| *c == 0 || *c == 200), "only drops or answers: {codes:?}");
    assert!((0.25..=0.35).contains(&lost), "lost share {lost}");
    rig.call(Method::POST, &format!("/api/v1/experiments/{id}/abort"), None, Some(TOKEN)).await;
    let result = rig.outcome(&id).await;
    assert_eq!(result["status"], "aborted");
    assert!(metric(&result, "error_count") > 0.0);
    back_to_normal(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_unavailable_answers_503_and_abort_reverts_within_a_second() {
    let rig = Rig::start(Opts::default()).await;
    let id = rig.inject(experiment("model", "model_unavailable", json!({"failure_rate": 1.0}), 25.0)).await;
    let codes = traffic(&rig, 20).await;
    assert!(codes.iter().all(|c| *c == 503), "{codes:?}");
    let asked = Instant::now();
    let answer = rig.call(Method::POST, &format!("/api/v1/experiments/{id}/abort"), None, Some(TOKEN)).await;
    assert_eq!(answer.status, 200);
    loop {
        if rig.predict(rig.records(1)).await.map(|a| a.status == 200).unwrap_or(false) {
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(1), "not reverted within 1 s of the abort");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let result = rig.outcome(&id).await;
    assert_eq!(result["status"], "aborted", "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_percentage_takes_that_share_of_traffic_out_of_the_fault() {
    let rig = Rig::start(Opts::default()).await;
    let id = rig.inject(experiment("model", "model_unavailable", json!({"failure_rate": 1.0}), 25.0)).await;
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/experiments/{id}/rollback"),
            Some(&json!({"percentage": 40})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let codes = traffic(&rig, 200).await;
    let healthy = codes.iter().filter(|c| **c == 200).count() as f64 / codes.len() as f64;
    assert!((0.3..=0.5).contains(&healthy), "share out of the fault {healthy}");
    let answer = rig
        .call(
            Method::POST,
            &format!("/api/v1/experiments/{id}/rollback"),
            Some(&json!({"percentage": 100})),
            Some(TOKEN),
        )
        .await;
    assert_eq!(answer.status, 200);
    let result = rig.outcome(&id).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert!(metric(&result, "fault_duration_s") < 20.0, "rollback to 100% ended the fault early");
    back_to_normal(&rig).await;
    let status = rig.status(&id).await;
    assert_eq!(status["rollback_steps"].as_array().map(Vec::len), Some(2), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_faults_lower_measured_accuracy() {
    let rig = Rig::start(Opts::default()).await;
    let numeric = json!(["temperature", "vibration", "pressure", "current"]);
    let corrupted =
        rig.run(experiment("data", "data_corruption", json!({"corruption_rate": 0.5, "columns": numeric}), 1.5)).await;
    assert!(metric(&corrupted, "accuracy_degradation") >= 5.0, "{corrupted}");
    let drifted = rig.run(experiment("data", "distribution_drift", json!({"magnitude": 0.5}), 1.5)).await;
    assert!(metric(&drifted, "accuracy_degradation") >= 5.0, "{drifted}");
    let outliers =
        rig.run(experiment("data", "outlier_injection", json!({"outlier_rate": 0.5, "magnitude": 6.0}), 1.5)).await;
    assert!(metric(&outliers, "accuracy_degradation") >= 5.0, "{outliers}");
    for result in [&corrupted, &drifted, &outliers] {
        assert!(result["metrics"]["recovery_time_s"].is_number(), "steady state came back: {result}");
    }
    back_to_normal(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_validation_scores_higher_under_data_corruption() {
    let fragile = Rig::start(Opts::default()).await;
    let validated = Rig::start(Opts { resilience: "validate", ..Opts::default() }).await;
    let fault = experiment("data", "data_corruption", json!({}), 1.5);
    let (a, b) = tokio::join!(fragile.run(fault.clone()), validated.run(fault));
    let (score_none, score_validate) = (a["resilience_score"].as_f64(), b["resilience_score"].as_f64());
    assert!(metric(&a, "error_count") > 0.0, "nulled cells break the strict target: {a}");
    assert_eq!(metric(&b, "error_count"), 0.0, "validation imputes them: {b}");
    assert!(score_validate > score_none.map(|s| s + 10.0), "validate {score_validate:?} vs none {score_none:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_shape_faults_reach_the_model() {
    let rig = Rig::start(Opts::default()).await;
    let records = rig.records(3);

    rig.inject(experiment("data", "missing_data", json!({"missing_rate": 1.0, "columns": ["site"]}), 1.0)).await;
    let answer = rig.predict(records.clone()).await.expect("answer");
    assert_eq!(answer.status, 400);
    assert!(body(&answer)["error"].as_str().is_some_and(|e| e.contains("null")), "{}", body(&answer));
    wait_idle(&rig).await;

    rig.inject(experiment("data", "schema_drift", json!({"drift_type": "add_column", "column_name": "extra"}), 1.0))
        .await;
    let answer = rig.predict(records.clone()).await.expect("answer");
    assert!(body(&answer)["error"].as_str().is_some_and(|e| e.contains("extra")), "{}", body(&answer));
    wait_idle(&rig).await;

    rig.inject(experiment("data", "duplicate_records", json!({"duplication_rate": 1.0}), 1.0)).await;
    let answer = rig.predict(records.clone()).await.expect("answer");
    assert_eq!(body(&answer)["predictions"].as_array().map(Vec::len), Some(6), "every record twice");
    wait_idle(&rig).await;

    rig.inject(experiment("model", "batch_processing_failure", json!({"failure_rate": 1.0}), 1.0)).await;
    assert_eq!(rig.predict(records.clone()).await.expect("answer").status, 500, "a batch fails whole");
    assert_eq!(rig.predict(rig.records(1)).await.expect("answer").status, 200, "a single record passes");
    wait_idle(&rig).await;
    back_to_normal(&rig).await;
}

/// Waits until no experiment runs on the agent.
async fn wait_idle(rig: &Rig) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = rig.call(Method::GET, "/health", None, None).await;
        if body(&answer)["experiment"].is_null() {
            return;
        }
        assert!(Instant::now() < deadline, "agent still busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_at_the_data_and_model_layers() {
    let rig = Rig::start(Opts::default()).await;
    let slow = rig.run(experiment("model", "slow_inference", json!({"latency_ms": 150, "variance": 0.0}), 1.5)).await;
    let added = metric(&slow, "latency_p50_ms") - metric(&slow, "baseline_latency_p50_ms");
    assert!((135.0..=170.0).contains(&added), "slow_inference added {added} ms");
    let delayed = rig.run(experiment("data", "latency_injection", json!({"delay_ms": 120}), 1.5)).await;
    let added = metric(&delayed, "latency_p50_ms") - metric(&delayed, "baseline_latency_p50_ms");
    assert!((105.0..=140.0).contains(&added), "latency_injection added {added} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prediction_faults_rewrite_answers() {
    let rig = Rig::start(Opts::default()).await;
    let flipped = rig
        .run(experiment("model", "prediction_corruption", json!({"corruption_rate": 1.0, "type": "flip"}), 1.5))
        .await;
    assert!(metric(&flipped, "accuracy_degradation") >= 40.0, "{flipped}");
    let drifted =
        rig.run(experiment("model", "model_drift", json!({"drift_rate": 0.9, "drift_type": "sudden"}), 1.5)).await;
    assert!(metric(&drifted, "accuracy_degradation") >= 30.0, "{drifted}");

    rig.inject(experiment("model", "parameter_degradation", json!({"degradation_factor": 0.9}), 1.0)).await;
    let answer = rig.predict(rig.records(4)).await.expect("answer");
    for p in body(&answer)["predictions"].as_array().expect("predictions") {
        let top = p.as_array().expect("scores").iter().filter_map(Json::as_f64).fold(0.0, f64::max);
        assert!(top < 0.45, "scores shrink toward the uniform prior: {p}");
    }
    wait_idle(&rig).await;
    back_to_normal(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_version_routes_to_the_alternate() {
    let rig = Rig::start(Opts { alternates: vec![("canary", "2")], ..Opts::default() }).await;
    let version = |a: &chaoseater_net::http::Answer| body(a)["model_version"].clone();
    assert_eq!(version(&rig.predict(rig.records(1)).await.expect("answer")), "1");
    rig.inject(experiment("model", "wrong_version", json!({"fallback_model": "canary"}), 1.0)).await;
    assert_eq!(version(&rig.predict(rig.records(1)).await.expect("answer")), "2");
    wait_idle(&rig).await;
    assert_eq!(version(&rig.predict(rig.records(1)).await.expect("answer")), "1");
    // Blue-green: the switch is an API call, and it stays until switched back.
    let answer = rig.call(Method::POST, "/api/v1/upstream", Some(&json!({"name": "canary"})), Some(TOKEN)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(version(&rig.predict(rig.records(1)).await.expect("answer")), "2");
    let unknown = experiment("model", "wrong_version", json!({"fallback_model": "nope"}), 1.0);
    let answer = rig.call(Method::POST, "/api/v1/experiments", Some(&unknown), Some(TOKEN)).await;
    assert_eq!(answer.status, 400);
    assert!(body(&answer)["error"].as_str().is_some_and(|e| e.starts_with("fallback_model")), "{}", body(&answer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_failures_crash_hang_and_slow() {
    let rig = Rig::start(Opts::default()).await;
    rig.inject(experiment("infrastructure", "node_failure", json!({"failure_type": "crash"}), 1.0)).await;
    let refused = tokio::net::TcpStream::connect(rig.agent.proxy_addr).await;
    assert_eq!(refused.map_err(|e| e.kind()).err(), Some(std::io::ErrorKind::ConnectionRefused));
    wait_idle(&rig).await;
    back_to_normal(&rig).await;

    rig.inject(experiment("infrastructure", "node_failure", json!({"failure_type": "hang"}), 1.5)).await;
    let url = format!("http://{}/v1/models/demo:predict", rig.agent.proxy_addr);
    let hung = rig
        .http
        .json(Method::POST, &url, Some(&json!({"instances": rig.records(1)})), None, Duration::from_millis(500))
        .await;
    assert!(matches!(hung, Err(chaoseater_net::http::HttpError::Timeout(_))), "{hung:?}");
    wait_idle(&rig).await;
    back_to_normal(&rig).await;

    rig.inject(experiment("infrastructure", "node_failure", json!({"failure_type": "slow"}), 4.0)).await;
    let started = Instant::now();
    let answer = rig.predict(rig.records(1)).await.expect("slow answer");
    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(2900), "slow node: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_gpu_partition_and_dns() {
    let rig = Rig::start(Opts::default()).await;
    rig.inject(experiment("infrastructure", "gpu_unavailable", json!({}), 1.0)).await;
    let answer = rig.predict(rig.records(1)).await.expect("answer");
    assert_eq!(answer.status, 503);
    assert!(body(&answer)["error"].as_str().is_some_and(|e| e.contains("accelerator")));
    wait_idle(&rig).await;

    rig.inject(experiment("infrastructure", "network_partition", json!({"blocked_hosts": ["127.0.0.1"]}), 1.0)).await;
    let answer = rig.predict(rig.records(1)).await.expect("answer");
    assert_eq!(answer.status, 502);
    assert!(body(&answer)["error"].as_str().is_some_and(|e| e.contains("refused")));
    wait_idle(&rig).await;

    rig.inject(experiment("infrastructure", "network_partition", json!({"blocked_hosts": ["10.9.9.9"]}), 1.0)).await;
    assert_eq!(rig.predict(rig.records(1)).await.expect("answer").status, 200, "other hosts stay reachable");
    wait_idle(&rig).await;

    rig.inject(experiment("infrastructure", "dns_failure", json!({"failure_rate": 1.0}), 1.0)).await;
    let answer = rig.predict(rig.records(1)).await.expect("answer");
    assert_eq!(answer.status, 502);
    assert!(body(&answer)["error"].as_str().is_some_and(|e| e.contains("resolve")));
    wait_idle(&rig).await;
    back_to_normal(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_inference_protocol_v2_traffic_is_rewritten_too() {
    let opts = Opts {
        top: "protocol = \"v2\"".to_owned(),
        probe: "path = \"/v2/models/demo/infer\"".to_owned(),
        ..Opts::default()
    };
    let rig = Rig::start(opts).await;
    let result = rig.run(experiment("data", "distribution_drift", json!({"magnitude": 0.5}), 1.5)).await;
    assert_eq!(result["status"], "completed", "{result}");
    assert!(metric(&result, "baseline_accuracy") > 0.8, "v2 probes are scored: {result}");
    assert!(metric(&result, "accuracy_degradation") >= 5.0, "{result}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_it_must() {
    let rig = Rig::start(Opts::default()).await;
    let fault = experiment("model", "model_unavailable", json!({}), 1.0);
    for token in [None, Some("wrong")] {
        let answer = rig.call(Method::POST, "/api/v1/experiments", Some(&fault), token).await;
        assert_eq!(answer.status, 401, "token {token:?}");
    }
    let answer = rig.call(Method::POST, "/api/v1/experiments/x/abort", None, None).await;
    assert_eq!(answer.status, 401);
    let malformed = rig
        .http
        .send(
            hyper::Request::post(rig.api("/api/v1/experiments/run"))
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{not json")))
                .expect("request"),
            Duration::from_secs(5),
        )
        .await
        .expect("answer");
    assert_eq!(malformed.status, 400);
    assert!(body(&malformed)["error"].as_str().is_some_and(|e| e.contains("invalid request body")));
    let cases = [
        (experiment("model", "meteor_strike", json!({}), 1.0), "fault_type"),
        (experiment("data", "packet_loss", json!({}), 1.0), "layer"),
        (experiment("infrastructure", "packet_loss", json!({"loss_rate": 1.5}), 1.0), "loss_rate"),
        (experiment("infrastructure", "memory_pressure", json!({"memory_mb": 4096}), 1.0), "memory_mb"),
        (experiment("infrastructure", "disk_full", json!({"bytes": 1_000_000_000_000u64}), 1.0), "bytes"),
        (experiment("infrastructure", "cpu_throttle", json!({"throttle_percent": 90}), 1.0), "throttle_percent"),
        (experiment("infrastructure", "cpu_throttle", json!({"cgroup": "no/such"}), 1.0), "cgroup"),
        (experiment("model", "model_unavailable", json!({}), 3600.0), "duration"),
        // Caps hold in a cgroup too; paths stay under the scratch directory or the allowed ones.
        (
            experiment("infrastructure", "cpu_throttle", json!({"throttle_percent": 90, "cgroup": "pipeline"}), 1.0),
            "throttle_percent",
        ),
        (
            experiment("infrastructure", "cpu_throttle", json!({"throttle_percent": 10, "cgroup": "../../etc"}), 1.0),
            "cgroup",
        ),
        (experiment("infrastructure", "disk_full", json!({"bytes": 1000, "path": "/etc"}), 1.0), "path"),
        (experiment("infrastructure", "storage_bottleneck", json!({"path": "relative/dir"}), 1.0), "path"),
        (
            experiment(
                "infrastructure",
                "disk_full",
                json!({"bytes": 1000, "path": format!("{}/../outside", rig.dir.path().display())}),
                1.0,
            ),
            "path",
        ),
        (
            experiment("infrastructure", "disk_full", json!({"bytes": 1000, "path": rig.dir.path().join("new")}), 1.0),
            "path",
        ),
        (
            {
                let mut e = experiment("model", "model_unavailable", json!({}), 1.0);
                e["id"] = json!("../escape");
                e
            },
            "id",
        ),
        (
            {
                let mut e = experiment("model", "model_unavailable", json!({}), 1.0);
                e["id"] = json!("two\nlines");
                e
            },
            "id",
        ),
    ];
    for (request, field) in cases {
        let answer = rig.call(Method::POST, "/api/v1/experiments/run", Some(&request), Some(TOKEN)).await;
        assert_eq!(answer.status, 400, "{request}");
        let message = body(&answer)["error"].as_str().unwrap_or_default().to_owned();
        assert!(message.starts_with(field), "{field}: {message}");
    }
    let list = body(&rig.call(Method::GET, "/api/v1/experiments", None, None).await);
    assert_eq!(list["experiments"], json!([]), "nothing was started by refused requests");
    // One at a time: a second experiment while one runs is a conflict.
    rig.inject(experiment("model", "model_unavailable", json!({}), 2.0)).await;
    let answer = rig.call(Method::POST, "/api/v1/experiments", Some(&fault), Some(TOKEN)).await;
    assert_eq!(answer.status, 409);
}

/// A two-stage pipeline: probes enter at a gateway target, whose calls to the model go through the agent's
/// proxy. The gateway's retries (or its fallback model) absorb what packet loss does to that inner hop.
async fn gateway_run(resilience: &str) -> Json {
    use chaoseater_producers::demo_target::{self, DemoTarget, DemoTargetConfig, Resilience};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
    let gateway = listener.local_addr().expect("gateway address");
    let opts = Opts { probe: format!("endpoint = \"http://{gateway}/v1/models/demo:predict\""), ..Opts::default() };
    let rig = Rig::start(opts).await;
    let config = DemoTargetConfig {
        resilience: Resilience::parse(resilience).expect("resilience"),
        upstream: Some(format!("http://{}", rig.agent.proxy_addr)),
        ..DemoTargetConfig::default()
    };
    tokio::spawn(demo_target::serve(
        std::sync::Arc::new(DemoTarget::new(config)),
        listener,
        chaoseater_schemas::bus::Shutdown::new(),
    ));
    rig.run(experiment("infrastructure", "packet_loss", json!({"loss_rate": 0.3}), 1.5)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_retries_and_fallback_absorb_packet_loss_on_the_inner_hop() {
    let (none, retry, fallback) = tokio::join!(gateway_run("none"), gateway_run("retry"), gateway_run("fallback"));
    let errors = |r: &Json| metric(r, "error_count");
    assert!(errors(&none) >= 5.0, "without defences the loss reaches the client: {none}");
    assert!(errors(&retry) <= 2.0, "retries hide it: {retry}");
    assert_eq!(errors(&fallback), 0.0, "the fallback model answers: {fallback}");
    assert!(retry["resilience_score"].as_f64() > none["resilience_score"].as_f64().map(|s| s + 10.0));
}

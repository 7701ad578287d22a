use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use chaoseater_schemas::bus::{Shutdown, StateStore, testing};
use chaoseater_schemas::events::{Event, EventKind};
use chaoseater_schemas::ids::TimestampMs;
use chaoseater_schemas::samples;

use super::*;

/// A stand-in for Grafana's HTTP API: records every request; answers 503 while `unavailable` is set,
/// 404 for alert rules it has not seen created, 400 for annotations whose text says "refuse".
#[derive(Debug, Default)]
struct FakeGrafana {
    requests: Mutex<Vec<(String, String, String, Json)>>,
    unavailable: Mutex<bool>,
    rules: Mutex<Vec<String>>,
}

async fn handle(
    State(fake): State<Arc<FakeGrafana>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let path = uri.path().to_owned();
    fake.requests.lock().expect("lock").push((method.to_string(), path.clone(), auth, body.clone()));
    if *fake.unavailable.lock().expect("lock") {
        return (StatusCode::SERVICE_UNAVAILABLE, "{\"message\":\"down\"}".into());
    }
    if method == Method::PUT && path.starts_with("/api/v1/provisioning/alert-rules/") {
        let uid = path.rsplit('/').next().unwrap_or_default().to_owned();
        if !fake.rules.lock().expect("lock").contains(&uid) {
            return (StatusCode::NOT_FOUND, "{\"message\":\"rule not found\"}".into());
        }
    }
    if method == Method::POST && path == "/api/v1/provisioning/alert-rules" {
        fake.rules.lock().expect("lock").push(body["uid"].as_str().unwrap_or_default().to_owned());
        return (StatusCode::CREATED, "{}".into());
    }
    if path == "/api/annotations" && body["text"].as_str().is_some_and(|t| t.contains("refuse")) {
        return (StatusCode::BAD_REQUEST, "{\"message\":\"bad annotation\"}".into());
    }
    (StatusCode::OK, "{}".into())
}

async fn fake_grafana() -> (Arc<FakeGrafana>, String) {
    let fake = Arc::new(FakeGrafana::default());
    let app = axum::Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fake, format!("http://{addr}"))
}

fn target(url: &str) -> GrafanaTarget {
    GrafanaTarget {
        url: url.to_owned(),
        api_key: "secret-key".into(),
        dashboard: DashboardOptions::default(),
        alerts: AlertOptions::default(),
    }
}

/// A tick, then `events`, each committed as the runner would.
fn feed(sink: &mut testing::Rig<GrafanaSink>, events: &[Event]) {
    sink.tick(TimestampMs::now());
    for event in events {
        sink.apply(event.clone());
    }
}

fn run_events(n: usize, text_marker: &str) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let Event::RunStarted(mut s) = samples::sample(EventKind::RunStarted) else { unreachable!("kind") };
            s.run_id = chaoseater_schemas::ids::RunId::new(format!("run-{i}"));
            s.experiment_name = format!("{text_marker}-{i}");
            Event::RunStarted(s)
        })
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stand-in Grafana (unavailable from the start if asked), a store, the sink and its running sender.
struct Rig {
    fake: Arc<FakeGrafana>,
    url: String,
    /// The sink's store, which the sender drains.
    store: StateStore,
    sink: testing::Rig<GrafanaSink>,
    _stop: Shutdown,
}

impl Rig {
    async fn start(unavailable: bool) -> Self {
        let (fake, url) = fake_grafana().await;
        *fake.unavailable.lock().expect("lock") = unavailable;
        let (sink, wake) = GrafanaSink::new(&target(&url));
        let sink = testing::Rig::new(sink);
        let (store, stop) = (sink.store.clone(), Shutdown::new());
        tokio::spawn(sender(store.clone(), target(&url), wake, stop.clone()));
        Self { fake, url, store, sink, _stop: stop }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_provisioning_and_annotations_with_the_key_as_bearer() {
    let Rig { fake, url, store, mut sink, _stop } = Rig::start(false).await;
    feed(&mut sink, &run_events(2, "exp"));
    wait_for("every request", || store.scan_prefix(OUTBOX).map(|p| p.is_empty()).unwrap_or(false)).await;
    let requests = fake.requests.lock().expect("lock").clone();
    assert!(requests.iter().all(|(_, _, auth, _)| auth == "Bearer secret-key"));
    let paths: Vec<(String, String)> = requests.iter().map(|(m, p, _, _)| (m.clone(), p.clone())).collect();
    assert_eq!(paths[0], ("POST".to_owned(), "/api/dashboards/db".to_owned()));
    assert!(requests[0].3["overwrite"] == true && requests[0].3["dashboard"]["uid"] == "chaoseater");
    // Each rule: PUT (404, unknown) then POST to create it.
    assert_eq!(paths.iter().filter(|(m, p)| m == "POST" && p == "/api/v1/provisioning/alert-rules").count(), 2);
    assert!(
        paths.contains(&("PUT".to_owned(), "/api/v1/provisioning/folder/chaoseater/rule-groups/chaoseater".to_owned()))
    );
    let annotations: Vec<&Json> =
        requests.iter().filter(|(_, p, _, _)| p == "/api/annotations").map(|(_, _, _, b)| b).collect();
    assert_eq!(annotations.len(), 2);
    let tags = annotations[0]["tags"].as_array().expect("tags");
    assert!(tags.iter().any(|t| t == "run_id:run-0") && tags.iter().any(|t| t == "experiment:exp-0"));
    assert!(tags.iter().any(|t| t.as_str().is_some_and(|t| t.starts_with("region:"))));
    assert!(!format!("{:?}", target(&url)).contains("secret-key"), "the key never shows in Debug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_no_annotation_and_a_refusal_is_parked() {
    let Rig { fake, url: _, store, mut sink, _stop } = Rig::start(true).await;
    let mut events = run_events(5, "during-outage");
    events.extend(run_events(1, "refuse"));
    feed(&mut sink, &events);
    wait_for("a few refused attempts", || fake.requests.lock().expect("lock").len() >= 3).await;
    assert!(!store.scan_prefix(OUTBOX).expect("outbox").is_empty(), "kept while Grafana is down");
    *fake.unavailable.lock().expect("lock") = false;
    wait_for("the outbox to drain", || store.scan_prefix(OUTBOX).map(|p| p.is_empty()).unwrap_or(false)).await;
    let requests = fake.requests.lock().expect("lock").clone();
    // After the outage: every annotation delivered exactly once (503 answers do not count).
    let delivered: Vec<String> = requests
        .iter()
        .filter(|(_, p, _, b)| p == "/api/annotations" && !b["text"].as_str().unwrap_or_default().contains("refuse"))
        .map(|(_, _, _, b)| b["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    let mut unique = delivered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((delivered.len(), unique.len()), (5, 5), "each once: {delivered:?}");
    let parked = parked(&store);
    assert_eq!(parked.len(), 1);
    assert!(parked[0].body["text"].as_str().is_some_and(|t| t.contains("refuse")));
}

#[test]
fn provisioning_thrown_away_with_a_failed_commit_is_queued_again_once() {
    let (sink, _wake) = GrafanaSink::new(&target("http://127.0.0.1:1"));
    let mut sink = testing::Rig::new(sink);
    // A tick whose commit fails: the runner throws its writes away and tells the sink.
    {
        let mut thrown_away = Default::default();
        let mut view = chaoseater_schemas::bus::StateView::new(&sink.store, &mut thrown_away);
        chaoseater_schemas::bus::Processor::tick(&mut sink.processor, TimestampMs(0), &mut view).expect("tick");
    }
    chaoseater_schemas::bus::Processor::on_discard(&mut sink.processor);
    let queued = |sink: &testing::Rig<GrafanaSink>| sink.store.scan_prefix(OUTBOX).expect("outbox").len();
    assert_eq!(queued(&sink), 0);
    sink.tick(TimestampMs(1));
    let expected = provisioning(&target("http://127.0.0.1:1")).len();
    assert_eq!(queued(&sink), expected, "queued again by the next tick");
    sink.tick(TimestampMs(2));
    assert_eq!(queued(&sink), expected, "and only once");
}

//! The Grafana sink: pushes the dashboard and the alert rules when it starts, and an annotation at the
//! start and the end of every run. What it must send is written to a durable outbox in its sled store,
//! in the same commit as the offsets of the events that caused it, so a crash loses nothing; a sender task
//! drains the outbox: 2xx removes an item, 5xx or no answer retries it with backoff, 4xx parks it with
//! Grafana's message (retrying a request Grafana refuses would never end).

use std::time::Duration;

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, Shutdown, StateStore, StateView};
use chaoseater_schemas::events::Event;
use chaoseater_schemas::topics::Topic;
use serde_json::{Value as Json, json};
use tokio::sync::watch;

use super::{AlertOptions, DashboardOptions, alert_rules, dashboard, rule_group};
use chaoseater_net::http::{HttpClient, HttpError};

mod component;
pub use component::{GrafanaComponent, GrafanaConfig};

/// How long one request to Grafana may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One request for Grafana.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Outgoing {
    pub method: String,
    pub path: String,
    pub body: Json,
}

/// Where Grafana is and how to reach it. The API key is never logged (Debug hides it).
#[derive(Clone)]
pub struct GrafanaTarget {
    pub url: String,
    pub api_key: String,
    pub dashboard: DashboardOptions,
    pub alerts: AlertOptions,
}

impl std::fmt::Debug for GrafanaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrafanaTarget").field("url", &self.url).field("api_key", &"<hidden>").finish()
    }
}

const OUTBOX: &[u8] = b"gout/";
const PARKED: &[u8] = b"gparked/";
const SEQ: &[u8] = b"gseq";

/// Queues `items` in the outbox of `state`.
fn enqueue(state: &mut StateView<'_>, items: Vec<Outgoing>) -> Result<(), ApplyError> {
    let mut seq = state.get(SEQ)?.and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0);
    for item in items {
        let mut key = OUTBOX.to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        state.put_json(key, &item)?;
        seq += 1;
    }
    state.put(SEQ.to_vec(), seq.to_be_bytes().to_vec());
    Ok(())
}

/// The dashboard, the rules and the rule group's interval, as Grafana's API takes them.
pub fn provisioning(target: &GrafanaTarget) -> Vec<Outgoing> {
    let mut out = vec![Outgoing {
        method: "POST".into(),
        path: "/api/dashboards/db".into(),
        body: json!({"dashboard": dashboard(&target.dashboard), "overwrite": true, "message": "ChaosEater"}),
    }];
    for rule in alert_rules(&target.alerts) {
        let uid = rule["uid"].as_str().unwrap_or_default().to_owned();
        // PUT updates a rule that exists; the sender falls back to POST on 404.
        out.push(Outgoing {
            method: "PUT".into(),
            path: format!("/api/v1/provisioning/alert-rules/{uid}"),
            body: rule,
        });
    }
    out.push(Outgoing {
        method: "PUT".into(),
        path: format!("/api/v1/provisioning/folder/{}/rule-groups/{}", target.alerts.folder_uid, super::RULE_GROUP),
        body: rule_group(&target.alerts),
    });
    out
}

/// The Grafana sink processor.
#[derive(Debug)]
pub struct GrafanaSink {
    /// Provisioning requests to queue with the first tick after start, kept until that tick commits.
    pending_provisioning: Option<Vec<Outgoing>>,
    /// The provisioning is in the outbox of the tick being committed.
    provisioning_queued: bool,
    wake: watch::Sender<u64>,
}

impl GrafanaSink {
    pub const NAME: &'static str = "grafana";

    pub fn new(target: &GrafanaTarget) -> (Self, watch::Receiver<u64>) {
        let (wake, rx) = watch::channel(0);
        (Self { pending_provisioning: Some(provisioning(target)), provisioning_queued: false, wake }, rx)
    }
}

fn annotation(text: String, time_ms: i64, tags: Vec<String>) -> Outgoing {
    Outgoing {
        method: "POST".into(),
        path: "/api/annotations".into(),
        body: json!({"time": time_ms, "tags": tags, "text": text}),
    }
}

impl Processor for GrafanaSink {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Results]
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    /// Queues the dashboard and rules once per start (there may be no event to carry them).
    fn tick(
        &mut self,
        _now: chaoseater_schemas::ids::TimestampMs,
        state: &mut StateView<'_>,
    ) -> Result<Vec<Event>, ApplyError> {
        if let Some(items) = &self.pending_provisioning {
            enqueue(state, items.clone())?;
            self.provisioning_queued = true;
        }
        Ok(Vec::new())
    }

    fn apply(&mut self, event: &Event, _origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let item = match event {
            Event::RunStarted(s) => {
                let mut tags = vec![
                    "chaoseater".to_owned(),
                    format!("run_id:{}", s.run_id),
                    format!("experiment:{}", s.experiment_name),
                ];
                tags.extend(s.regions.iter().map(|r| format!("region:{r}")));
                Some(annotation(
                    format!("ChaosEater run started: {} ({})", s.experiment_name, s.mode.as_str()),
                    s.occurred_at.0,
                    tags,
                ))
            }
            Event::RunCompleted(c) => {
                let mut tags = vec![
                    "chaoseater".to_owned(),
                    format!("run_id:{}", c.run_id),
                    format!("experiment:{}", c.experiment_name),
                ];
                tags.extend(c.report.regions.iter().map(|r| format!("region:{}", r.region)));
                Some(annotation(
                    format!(
                        "ChaosEater run {}: {} (mean score {:.1}, success rate {:.0}%)",
                        c.status.as_str(),
                        c.experiment_name,
                        c.report.mean_score,
                        c.report.success_rate * 100.0
                    ),
                    c.occurred_at.0,
                    tags,
                ))
            }
            _ => None,
        };
        if let Some(item) = item {
            enqueue(state, vec![item])?;
        }
        Ok(Vec::new())
    }

    fn on_commit(&mut self, _store: &StateStore) {
        if std::mem::take(&mut self.provisioning_queued) {
            self.pending_provisioning = None;
        }
        self.wake.send_modify(|n| *n += 1);
    }

    fn on_discard(&mut self) {
        // The tick's outbox was thrown away with it: the provisioning is queued again by the next one.
        self.provisioning_queued = false;
    }
}

/// What happened to one send.
#[derive(Debug, PartialEq)]
enum Sent {
    Done,
    Retry(String),
    Park(String),
}

/// `item` to Grafana with the API key as bearer: the status and the start of the answer's text.
async fn request(client: &HttpClient, target: &GrafanaTarget, item: &Outgoing) -> Result<(u16, String), String> {
    let url = format!("{}{}", target.url.trim_end_matches('/'), item.path);
    let method = hyper::Method::from_bytes(item.method.as_bytes()).map_err(|e| format!("{url}: {e}"))?;
    match client.json(method, &url, Some(&item.body), Some(&target.api_key), TIMEOUT).await {
        Ok(answer) => {
            let text = String::from_utf8_lossy(&answer.body).chars().take(500).collect();
            Ok((answer.status.as_u16(), text))
        }
        Err(HttpError::Timeout(t)) => Err(format!("{url}: no answer within {t:?}")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

async fn send(client: &HttpClient, target: &GrafanaTarget, item: &Outgoing) -> Sent {
    match request(client, target, item).await {
        Ok((status, _)) if (200..300).contains(&status) => Sent::Done,
        // A rule that does not exist yet is created instead.
        Ok((404, _)) if item.method == "PUT" && item.path.starts_with("/api/v1/provisioning/alert-rules/") => {
            let create = Outgoing {
                method: "POST".into(),
                path: "/api/v1/provisioning/alert-rules".into(),
                body: item.body.clone(),
            };
            Box::pin(send(client, target, &create)).await
        }
        Ok((status, body)) if (400..500).contains(&status) => Sent::Park(format!("HTTP {status}: {body}")),
        Ok((status, body)) => Sent::Retry(format!("HTTP {status}: {body}")),
        Err(e) => Sent::Retry(e),
    }
}

/// Drains the outbox in order until `stop` fires; woken by commits, retrying with backoff.
pub async fn sender(store: StateStore, target: GrafanaTarget, mut wake: watch::Receiver<u64>, stop: Shutdown) {
    let client = HttpClient::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        if stop.is_triggered() {
            return;
        }
        let pending = store.scan_prefix(OUTBOX).unwrap_or_default();
        let mut blocked = false;
        for (key, value) in pending {
            if stop.is_triggered() {
                return;
            }
            let Ok(item) = serde_json::from_slice::<Outgoing>(&value) else {
                let _ = store.remove_state(&key);
                continue;
            };
            match send(&client, &target, &item).await {
                Sent::Done => {
                    let _ = store.remove_state(&key);
                    backoff = Duration::from_millis(200);
                }
                Sent::Park(message) => {
                    tracing::error!(method = %item.method, path = %item.path, %message, "Grafana refused a request; parked, not retried");
                    let mut parked = PARKED.to_vec();
                    parked.extend_from_slice(&key[OUTBOX.len()..]);
                    let _ = store.put_state(&parked, &value);
                    let _ = store.remove_state(&key);
                }
                Sent::Retry(message) => {
                    tracing::warn!(method = %item.method, path = %item.path, %message, retry_in = ?backoff, "Grafana unavailable; will retry");
                    blocked = true;
                    break;
                }
            }
        }
        let wait = if blocked { backoff } else { Duration::from_secs(3600) };
        if blocked {
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.changed() => {}
            () = stop.wait() => return,
        }
    }
}

/// Sends the dashboard and the rules once, now (`chaoseater grafana push`): each request with its outcome.
pub async fn push_once(target: &GrafanaTarget) -> Vec<(Outgoing, Result<(), String>)> {
    let client = HttpClient::new();
    let mut out = Vec::new();
    for item in provisioning(target) {
        let outcome = match send(&client, target, &item).await {
            Sent::Done => Ok(()),
            Sent::Park(m) | Sent::Retry(m) => Err(m),
        };
        out.push((item, outcome));
    }
    out
}

/// Requests parked after a 4xx, with Grafana's message logged when they were parked.
pub fn parked(store: &StateStore) -> Vec<Outgoing> {
    store.scan_prefix(PARKED).unwrap_or_default().iter().filter_map(|(_, v)| serde_json::from_slice(v).ok()).collect()
}

#[cfg(test)]
mod tests;

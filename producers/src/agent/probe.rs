//! Steady-state probes: labelled requests sent on a fixed schedule through the proxy (or the pipeline's
//! entry), and the recorder of what they saw. What those samples mean is `super::steady`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaoseater_schemas::bus::Shutdown;
use http_body_util::Full;
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use serde_json::{Value as Json, json};

use super::config::{AgentConfig, Protocol};
use super::payload::{Prediction, Predictions};
use crate::demo_target::ProbeSet;
use chaoseater_net::http::HttpClient;
use chaoseater_schemas::sync::lock;

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was sent, from the recorder's origin.
    pub sent: Duration,
    /// Which probe batch it carried.
    pub batch: usize,
    pub latency: Duration,
    pub ok: bool,
    /// Correct predictions (0 when the request failed) and the records the batch carried (whatever the
    /// outcome: a request without a prediction is a record not predicted correctly).
    pub correct: usize,
    pub total: usize,
    pub error: Option<String>,
}

/// The probe requests, prepared once.
#[derive(Debug)]
pub struct ProbeTarget {
    url: String,
    client: HttpClient,
    batches: Vec<(Bytes, Vec<usize>)>,
    protocol: Protocol,
    predictions_pointer: Option<String>,
    timeout: Duration,
}

impl ProbeTarget {
    /// Probes go to `probe.endpoint` or, by default, through the proxy at `proxy` to the probe set's path.
    pub fn new(config: &AgentConfig, set: &ProbeSet, proxy: std::net::SocketAddr) -> Result<Self, String> {
        if set.instances.is_empty() || set.instances.len() != set.labels.len() {
            return Err(format!(
                "the probe set needs labelled instances ({} instances, {} labels)",
                set.instances.len(),
                set.labels.len()
            ));
        }
        let url = config
            .probe
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{proxy}{}", config.probe.path.as_deref().unwrap_or(&set.path)));
        let size = config.probe.batch_size;
        let batches = set
            .instances
            .chunks(size)
            .zip(set.labels.chunks(size))
            .map(|(rows, labels)| (Bytes::from(body(config, set, rows).to_string()), labels.to_vec()))
            .collect();
        Ok(Self {
            url,
            client: HttpClient::new(),
            batches,
            protocol: config.protocol,
            predictions_pointer: config.predictions_pointer.clone(),
            timeout: config.probe.timeout(),
        })
    }

    pub fn batches(&self) -> usize {
        self.batches.len()
    }

    /// Records in batch `i` (modulo the number of batches).
    pub fn records(&self, i: usize) -> usize {
        self.batches[i % self.batches.len()].1.len()
    }

    /// The reference pass: every batch once, before the fault, giving the number of correct predictions
    /// per batch. Accuracy under fault is compared batch by batch against it (a paired comparison), so
    /// that which batches happened to be sent in a phase does not show up as accuracy lost or gained.
    pub async fn reference(&self) -> Result<Vec<usize>, ReferenceFailed> {
        let mut correct = Vec::with_capacity(self.batches.len());
        let (mut sent, mut failed) = (0, 0);
        for i in 0..self.batches.len() {
            let mut outcome = self.probe(i).await;
            sent += 1;
            if !outcome.0 {
                failed += 1;
                outcome = self.probe(i).await;
                sent += 1;
            }
            match outcome {
                (true, c, _, _) => correct.push(c),
                (false, _, _, error) => {
                    let message = format!("probe batch {i} failed twice: {}", error.unwrap_or_default());
                    return Err(ReferenceFailed { message, sent, failed: failed + 1 });
                }
            }
        }
        Ok(correct)
    }

    /// Sends batch `i` (modulo the number of batches) and judges the answer.
    pub async fn probe(&self, i: usize) -> (bool, usize, usize, Option<String>) {
        let (payload, labels) = &self.batches[i % self.batches.len()];
        let request =
            Request::post(&self.url).header(CONTENT_TYPE, "application/json").body(Full::new(payload.clone()));
        let Ok(request) = request else { return (false, 0, 0, Some(format!("invalid probe URL {}", self.url))) };
        let answer = match self.client.send(request, self.timeout).await {
            Ok(a) => a,
            Err(e) => return (false, 0, 0, Some(e.to_string())),
        };
        if !answer.status.is_success() {
            let text = String::from_utf8_lossy(&answer.body);
            return (false, 0, 0, Some(format!("{}: {}", answer.status, text.chars().take(200).collect::<String>())));
        }
        let parsed = serde_json::from_slice::<Json>(&answer.body)
            .ok()
            .and_then(|json| Predictions::read(&json, self.protocol, self.predictions_pointer.as_deref()));
        let Some(predictions) = parsed else {
            return (false, 0, 0, Some("answer without readable predictions".to_owned()));
        };
        if predictions.items.len() != labels.len() {
            return (
                false,
                0,
                0,
                Some(format!("{} predictions for {} records", predictions.items.len(), labels.len())),
            );
        }
        let correct = predictions.items.iter().zip(labels).filter(|(p, label)| predicted(p) == Some(**label)).count();
        (true, correct, labels.len(), None)
    }
}

/// A reference pass that could not finish, with the requests it sent and saw fail.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceFailed {
    pub message: String,
    pub sent: u64,
    pub failed: u64,
}

/// The class a prediction names: the argmax of a score vector, or a value read as a class index.
fn predicted(p: &Prediction) -> Option<usize> {
    match p {
        Prediction::Vector(v) => (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])),
        Prediction::Scalar(x) if *x >= 0.0 => Some(x.round() as usize),
        Prediction::Scalar(_) => None,
    }
}

/// A request body for `rows` in the configured protocol.
fn body(config: &AgentConfig, set: &ProbeSet, rows: &[Json]) -> Json {
    match config.protocol {
        Protocol::V1 => json!({ "instances": rows }),
        Protocol::V2 => {
            let inputs: Vec<Json> = set
                .features
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let data: Vec<Json> = rows
                        .iter()
                        .map(|r| match r {
                            Json::Object(o) => o.get(name).cloned().unwrap_or(Json::Null),
                            Json::Array(a) => a.get(i).cloned().unwrap_or(Json::Null),
                            _ => Json::Null,
                        })
                        .collect();
                    let datatype = if data.iter().all(Json::is_number) { "FP64" } else { "BYTES" };
                    json!({"name": name, "datatype": datatype, "shape": [data.len()], "data": data})
                })
                .collect();
            json!({ "inputs": inputs })
        }
        Protocol::Records => {
            let mut out = Json::Array(rows.to_vec());
            let pointer = config.records_pointer.as_deref().unwrap_or("");
            for token in pointer.split('/').skip(1).collect::<Vec<_>>().into_iter().rev() {
                out = json!({ token.replace("~1", "/").replace("~0", "~"): out });
            }
            out
        }
    }
}

/// Probe outcomes of one experiment, with the probes still in flight.
#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    samples: Mutex<Vec<Sample>>,
    inflight: Mutex<BTreeMap<u64, Duration>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self { origin: Instant::now(), samples: Mutex::new(Vec::new()), inflight: Mutex::new(BTreeMap::new()) }
    }

    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    /// Everything sent before this instant has an outcome.
    pub fn settled_until(&self) -> Duration {
        let now = self.now();
        lock(&self.inflight).values().min().copied().map_or(now, |oldest| oldest.min(now))
    }
}

/// Sends a probe every `interval` until `stop` fires; each probe runs on its own task, so a hung
/// request does not hold the schedule up.
pub async fn run(target: Arc<ProbeTarget>, recorder: Arc<Recorder>, interval: Duration, stop: Shutdown) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.wait() => break,
        }
        let (target, recorder) = (target.clone(), recorder.clone());
        let id = n;
        n += 1;
        let sent = recorder.now();
        lock(&recorder.inflight).insert(id, sent);
        tasks.spawn(async move {
            let started = Instant::now();
            let (ok, correct, _, error) = target.probe(id as usize).await;
            let batch = id as usize % target.batches();
            let total = target.records(batch);
            let sample = Sample { sent, batch, latency: started.elapsed(), ok, correct, total, error };
            lock(&recorder.samples).push(sample);
            lock(&recorder.inflight).remove(&id);
        });
        while tasks.try_join_next().is_some() {}
    }
    // Probes already sent finish (each is bounded by the probe timeout), so every window gets judged.
    while tasks.join_next().await.is_some() {}
}

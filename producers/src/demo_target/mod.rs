//! The demo ML target (`chaoseater demo-target`): a small classifier served over the model-serving
//! protocols the agent's proxy understands, with switchable defences so that experiments and A/B tests
//! measure real differences.
//!
//! - `POST /v1/models/NAME:predict` (TF-Serving/KServe v1): `{"instances": [...]}` → `{"predictions": [[p…]]}`,
//!   one probability per class.
//! - `POST /v2/models/NAME/infer` (Open Inference Protocol): one input tensor per feature (or one `[n, 5]`
//!   tensor) → an output `probabilities` of shape `[n, classes]`.
//! - `GET /health`, `GET /v1/models/NAME`, `GET /v2/models/NAME`, `GET /probe-set` (the labelled probe set).
//!
//! With `--upstream URL` the target is a gateway stage: it forwards predictions to another model server,
//! retrying failures when `retry` is on and answering from its own model when `fallback` is on.

pub mod data;
pub mod model;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};

pub use data::ProbeSet;
pub use model::{Model, Resilience};

use chaoseater_net::http::HttpClient;
use chaoseater_schemas::bus::Shutdown;

/// How the demo target runs.
#[derive(Debug, Clone)]
pub struct DemoTargetConfig {
    pub model_name: String,
    /// Reported in every answer (`model_version`), so that routing to another version is visible.
    pub model_version: String,
    pub resilience: Resilience,
    /// Gateway mode: forward predictions to this model server (base URL).
    pub upstream: Option<String>,
}

impl Default for DemoTargetConfig {
    fn default() -> Self {
        Self {
            model_name: "demo".to_owned(),
            model_version: "1".to_owned(),
            resilience: Resilience::default(),
            upstream: None,
        }
    }
}

/// Retries in gateway mode: attempts after the first, and the first backoff (doubling).
const RETRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The trained target.
#[derive(Debug)]
pub struct DemoTarget {
    config: DemoTargetConfig,
    model: Model,
    probe_set: ProbeSet,
    client: HttpClient,
}

impl DemoTarget {
    /// Trains the model (deterministic; a few milliseconds) and builds the probe set.
    pub fn new(config: DemoTargetConfig) -> Self {
        let model = Model::train(&data::generate(data::TRAIN_SEED, 300));
        let probe_set = ProbeSet::demo(&config.model_name, 100);
        Self { config, model, probe_set, client: HttpClient::new() }
    }

    pub fn probe_set(&self) -> &ProbeSet {
        &self.probe_set
    }

    /// The HTTP routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/health", get(|| async { axum::Json(json!({"status": "ok"})) }))
            .route("/probe-set", get(|State(t): State<Arc<Self>>| async move { axum::Json(t.probe_set.clone()) }))
            .route("/v1/models/{spec}", get(v1_status).post(v1_predict))
            .route("/v2/models/{name}", get(v2_metadata))
            .route("/v2/models/{name}/infer", axum::routing::post(v2_infer))
            .with_state(self)
    }

    #[allow(clippy::result_large_err)] // the error is the 404 response itself
    fn check_model(&self, name: &str) -> Result<(), Response> {
        if name == self.config.model_name {
            Ok(())
        } else {
            Err(reply(StatusCode::NOT_FOUND, json!({"error": format!("model {name:?} not found")})))
        }
    }

    /// Scores instances locally; the first unusable one fails the whole request, as a strict service would.
    fn score(&self, instances: &[Json]) -> Result<Vec<[f64; 3]>, String> {
        instances
            .iter()
            .enumerate()
            .map(|(i, inst)| self.model.predict(inst, self.config.resilience).map_err(|e| format!("instance {i}: {e}")))
            .collect()
    }

    /// Scores through the upstream model server (gateway mode), with the configured defences.
    async fn score_upstream(&self, upstream: &str, instances: &[Json]) -> Result<Vec<Vec<f64>>, (StatusCode, String)> {
        let url = format!("{}/v1/models/{}:predict", upstream.trim_end_matches('/'), self.config.model_name);
        let body = json!({ "instances": instances });
        let attempts = if self.config.resilience.retry { RETRIES + 1 } else { 1 };
        let mut backoff = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            match self.client.json(hyper::Method::POST, &url, Some(&body), None, UPSTREAM_TIMEOUT).await {
                Ok(answer) if answer.status.is_success() => {
                    let parsed: Json = serde_json::from_slice(&answer.body)
                        .map_err(|e| (StatusCode::BAD_GATEWAY, format!("upstream answered invalid JSON: {e}")))?;
                    let predictions = parsed["predictions"]
                        .as_array()
                        .map(|rows| rows.iter().map(prob_row).collect::<Option<Vec<_>>>())
                        .unwrap_or(None)
                        .ok_or((StatusCode::BAD_GATEWAY, "upstream answered without predictions".to_owned()))?;
                    return Ok(predictions);
                }
                // A client error will not get better by retrying: pass it through.
                Ok(answer) if answer.status.is_client_error() => {
                    return Err((answer.status, String::from_utf8_lossy(&answer.body).into_owned()));
                }
                Ok(answer) => last = format!("upstream answered {}", answer.status),
                Err(e) => last = format!("upstream unreachable: {e}"),
            }
        }
        Err((StatusCode::BAD_GATEWAY, last))
    }

    async fn predict(&self, instances: &[Json]) -> Result<Vec<Vec<f64>>, (StatusCode, String)> {
        if instances.is_empty() {
            return Err((StatusCode::BAD_REQUEST, "no instances".to_owned()));
        }
        if let Some(upstream) = &self.config.upstream {
            // A validating gateway repairs the records before the model server sees them.
            let repaired: Vec<Json>;
            let instances = if self.config.resilience.validate {
                repaired = instances.iter().map(|i| self.model.validated(i)).collect();
                &repaired[..]
            } else {
                instances
            };
            match self.score_upstream(upstream, instances).await {
                Ok(p) => return Ok(p),
                Err(e) if !self.config.resilience.fallback => return Err(e),
                Err((_, message)) => tracing::debug!(%message, "Upstream failed; answering from the local model."),
            }
        }
        self.score(instances)
            .map(|rows| rows.into_iter().map(|p| p.iter().map(|x| round6(*x)).collect()).collect())
            .map_err(|message| (StatusCode::BAD_REQUEST, message))
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn prob_row(row: &Json) -> Option<Vec<f64>> {
    row.as_array()?.iter().map(Json::as_f64).collect()
}

fn reply(status: StatusCode, body: Json) -> Response {
    (status, axum::Json(body)).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    reply(StatusCode::BAD_REQUEST, json!({"error": message.into()}))
}

async fn v1_status(State(target): State<Arc<DemoTarget>>, Path(spec): Path<String>) -> Response {
    if let Err(r) = target.check_model(&spec) {
        return r;
    }
    reply(
        StatusCode::OK,
        json!({"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK"}}]}),
    )
}

async fn v1_predict(State(target): State<Arc<DemoTarget>>, Path(spec): Path<String>, body: Bytes) -> Response {
    let Some(name) = spec.strip_suffix(":predict") else {
        return reply(StatusCode::NOT_FOUND, json!({"error": format!("unknown verb in {spec:?}; use NAME:predict")}));
    };
    if let Err(r) = target.check_model(name) {
        return r;
    }
    let request: Json = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    let Some(instances) = request.get("instances").or_else(|| request.get("inputs")).and_then(Json::as_array) else {
        return bad_request("the body needs an \"instances\" array");
    };
    match target.predict(instances).await {
        Ok(predictions) => {
            reply(StatusCode::OK, json!({ "predictions": predictions, "model_version": target.config.model_version }))
        }
        Err((status, message)) => reply(status, json!({"error": message})),
    }
}

async fn v2_metadata(State(target): State<Arc<DemoTarget>>, Path(name): Path<String>) -> Response {
    if let Err(r) = target.check_model(&name) {
        return r;
    }
    let inputs: Vec<Json> = target
        .probe_set
        .features
        .iter()
        .map(|f| {
            let datatype = if f == data::CATEGORICAL { "BYTES" } else { "FP64" };
            json!({"name": f, "datatype": datatype, "shape": [-1]})
        })
        .collect();
    reply(
        StatusCode::OK,
        json!({
            "name": name, "versions": ["1"], "platform": "chaoseater-demo",
            "inputs": inputs,
            "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [-1, data::CLASSES.len()]}],
        }),
    )
}

async fn v2_infer(State(target): State<Arc<DemoTarget>>, Path(name): Path<String>, body: Bytes) -> Response {
    if let Err(r) = target.check_model(&name) {
        return r;
    }
    let request: Json = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON: {e}")),
    };
    let instances = match v2_instances(&request) {
        Ok(rows) => rows,
        Err(message) => return bad_request(message),
    };
    match target.predict(&instances).await {
        Ok(predictions) => {
            let n = predictions.len();
            let flat: Vec<f64> = predictions.into_iter().flatten().collect();
            let mut answer = json!({
                "model_name": name,
                "model_version": target.config.model_version,
                "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [n, data::CLASSES.len()], "data": flat}],
            });
            if let Some(id) = request.get("id") {
                answer["id"] = id.clone();
            }
            reply(StatusCode::OK, answer)
        }
        Err((status, message)) => reply(status, json!({"error": message})),
    }
}

/// Rows out of Open Inference Protocol inputs: one tensor per feature (shape `[n]` or `[n, 1]`), or a single
/// `[n, k]` tensor in feature order.
pub fn v2_instances(request: &Json) -> Result<Vec<Json>, String> {
    let inputs = request.get("inputs").and_then(Json::as_array).ok_or("the body needs an \"inputs\" array")?;
    let tensor = |input: &Json| -> Result<(String, Vec<u64>, Vec<Json>), String> {
        let name = input.get("name").and_then(Json::as_str).ok_or("every input needs a name")?.to_owned();
        let shape: Vec<u64> = input
            .get("shape")
            .and_then(Json::as_array)
            .and_then(|s| s.iter().map(Json::as_u64).collect())
            .ok_or_else(|| format!("input {name:?} needs a shape"))?;
        let data = input.get("data").and_then(Json::as_array).ok_or_else(|| format!("input {name:?} needs data"))?;
        // Data may be nested row-major or flat: flatten one level of nesting.
        let flat: Vec<Json> =
            data.iter().flat_map(|v| if let Json::Array(a) = v { a.clone() } else { vec![v.clone()] }).collect();
        if shape.iter().product::<u64>() != flat.len() as u64 {
            return Err(format!("input {name:?}: shape {shape:?} does not match {} values", flat.len()));
        }
        Ok((name, shape, flat))
    };
    if inputs.len() == 1 {
        let (_, shape, flat) = tensor(&inputs[0])?;
        if shape.len() == 2 && shape[1] > 1 {
            let width = shape[1] as usize;
            return Ok(flat.chunks(width).map(|row| Json::Array(row.to_vec())).collect());
        }
    }
    let mut rows: Vec<serde_json::Map<String, Json>> = Vec::new();
    for input in inputs {
        let (name, shape, flat) = tensor(input)?;
        if shape.len() > 1 && shape[1..].iter().any(|d| *d != 1) {
            return Err(format!("input {name:?}: expected one value per row, got shape {shape:?}"));
        }
        if rows.is_empty() {
            rows = vec![serde_json::Map::new(); flat.len()];
        } else if rows.len() != flat.len() {
            return Err(format!("input {name:?} has {} rows, others have {}", flat.len(), rows.len()));
        }
        for (row, value) in rows.iter_mut().zip(flat) {
            row.insert(name.clone(), value);
        }
    }
    Ok(rows.into_iter().map(Json::Object).collect())
}

/// Serves the target on `listener` until `shutdown` fires.
pub async fn serve(
    target: Arc<DemoTarget>,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let service = chaoseater_net::server::router_service(target.router());
    let limits = chaoseater_net::server::ServerLimits::default();
    chaoseater_net::server::serve("demo-target", listener, service, limits, shutdown).await;
    Ok(())
}

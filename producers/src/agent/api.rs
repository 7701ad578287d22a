//! The agent's HTTP API. Mutating routes need the bearer token, checked by a layer before the body is
//! read (see [`auth`] for the one exception a configuration can make); bodies are capped at
//! [`MAX_BODY_BYTES`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chaoseater_schemas::experiment::Layer;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::experiment::{ExperimentRequest, Outcome, SYNC_ANSWER_SLACK};
use super::{AgentCore, auth};

/// The largest request body the API reads (an experiment request is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

pub fn router(core: Arc<AgentCore>) -> Router {
    let token = axum::middleware::from_fn_with_state(core.clone(), auth::require_token);
    let sync_auth = axum::middleware::from_fn_with_state(core.clone(), auth::require_token_or_network);
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/experiments/run", post(run_sync).route_layer(sync_auth))
        .route("/api/v1/experiments", post(start).route_layer(token.clone()).get(list))
        .route("/api/v1/experiments/{id}", get(status))
        .route("/api/v1/experiments/{id}/rollback", post(rollback).route_layer(token.clone()))
        .route("/api/v1/experiments/{id}/abort", post(abort).route_layer(token.clone()))
        .route("/api/v1/upstream", post(switch_upstream).route_layer(token))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(core)
}

fn reply(status: StatusCode, body: Json) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reply(status, json!({ "error": message.into() }))
}

#[allow(clippy::result_large_err)]
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}")))
}

async fn health(State(core): State<Arc<AgentCore>>) -> Response {
    let (healthy, detail) = core.check_target().await;
    let window = Duration::from_millis(core.config.probe.window_ms.max(1_000));
    let active =
        core.active().map(|e| json!({"id": e.id, "status": e.phase(), "error_rate": e.live_error_rate(window)}));
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "target": detail,
        "upstream": core.proxy.active_upstream(),
        // Where each layer's faults act (the inner hop sits between a gateway and its model server).
        "hops": Layer::ALL.iter().map(|l| (l.as_str().to_owned(), json!(core.hop(*l).hop.as_str()))).collect::<serde_json::Map<_, _>>(),
        "experiment": active,
        // What `chaoseater plan` keeps its proposals within.
        "caps": {
            "max_memory_mb": core.config.caps.max_memory_mb,
            "max_disk_bytes": core.config.caps.max_disk_bytes,
            "max_cpu_percent": core.config.caps.max_cpu_percent,
            "max_duration_s": core.config.caps.max_duration_s,
        },
        "warnings": core.config.auth.warning().into_iter().collect::<Vec<_>>(),
    });
    reply(if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

/// Runs an experiment and answers with its outcome within its duration + [`SYNC_ANSWER_SLACK`]: the
/// recovery wait is cut to fit, and should the baseline itself overrun, the experiment is aborted and the
/// answer says so. Never a null score or metrics (see [`Outcome::sync_body`]).
async fn run_sync(State(core): State<Arc<AgentCore>>, body: Bytes) -> Response {
    let mut request: ExperimentRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if request.duration.is_finite() && request.duration > 0.0 {
        request.answer_within = Some(Duration::from_secs_f64(request.duration.min(1e6)) + SYNC_ANSWER_SLACK);
    }
    let experiment = match core.start(request).await {
        Ok(e) => e,
        Err((status, message)) => return error(status, message),
    };
    let outcome = match experiment.answer_by() {
        Some(by) => tokio::time::timeout_at(by, experiment.finished()).await,
        // A retried id returns the first experiment, which may have come from the asynchronous route.
        None => Ok(experiment.finished().await),
    };
    match outcome {
        Ok(Some(outcome)) => reply(StatusCode::OK, outcome.sync_body(&experiment.id)),
        Ok(None) => error(StatusCode::INTERNAL_SERVER_ERROR, "the experiment ended without an outcome"),
        Err(_) => {
            experiment.abort();
            let late = Outcome {
                status: super::experiment::Phase::Failed,
                resilience_score: None,
                metrics: None,
                error: Some(format!(
                    "no outcome within duration + {} s (phase {:?}); the experiment is being aborted",
                    SYNC_ANSWER_SLACK.as_secs() + 1,
                    experiment.phase()
                )),
                partial: None,
            };
            reply(StatusCode::OK, late.sync_body(&experiment.id))
        }
    }
}

async fn start(State(core): State<Arc<AgentCore>>, body: Bytes) -> Response {
    let request: ExperimentRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match core.start(request).await {
        Ok(experiment) => reply(
            StatusCode::ACCEPTED,
            json!({"id": experiment.id, "status": experiment.phase(), "href": format!("/api/v1/experiments/{}", experiment.id)}),
        ),
        Err((status, message)) => error(status, message),
    }
}

async fn list(State(core): State<Arc<AgentCore>>) -> Response {
    let all: Vec<Json> = core.experiments().iter().map(|e| e.view(core.traffic_of(e))).collect();
    reply(StatusCode::OK, json!({ "experiments": all }))
}

async fn status(State(core): State<Arc<AgentCore>>, Path(id): Path<String>) -> Response {
    match core.experiment(&id) {
        Some(e) => reply(StatusCode::OK, e.view(core.traffic_of(&e))),
        None => error(StatusCode::NOT_FOUND, format!("no experiment {id:?}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    percentage: f64,
    /// Blue-green: route traffic to this upstream as part of the step.
    #[serde(default)]
    upstream: Option<String>,
    /// Idempotency: a step number already applied to this experiment is not applied again.
    #[serde(default)]
    step: Option<u32>,
}

async fn rollback(State(core): State<Arc<AgentCore>>, Path(id): Path<String>, body: Bytes) -> Response {
    let request: RollbackRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(experiment) = core.experiment(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no experiment {id:?}"));
    };
    // Blue-green switches the upstream of the hop the fault acts on (the model server's alternates on
    // the inner hop).
    if let Some(upstream) = &request.upstream
        && let Err(message) = core.hop(experiment.layer).state.switch_upstream(upstream)
    {
        return error(StatusCode::BAD_REQUEST, message);
    }
    match experiment.rollback(request.percentage, request.step) {
        Ok(applied) => {
            let mut view = experiment.view(core.traffic_of(&experiment));
            view["step_applied"] = json!(applied);
            reply(StatusCode::OK, view)
        }
        Err(message) => error(StatusCode::CONFLICT, message),
    }
}

async fn abort(State(core): State<Arc<AgentCore>>, Path(id): Path<String>) -> Response {
    let Some(experiment) = core.experiment(&id) else {
        return error(StatusCode::NOT_FOUND, format!("no experiment {id:?}"));
    };
    experiment.abort();
    reply(StatusCode::OK, experiment.view(core.traffic_of(&experiment)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamRequest {
    name: String,
}

async fn switch_upstream(State(core): State<Arc<AgentCore>>, body: Bytes) -> Response {
    let request: UpstreamRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match core.proxy.switch_upstream(&request.name) {
        Ok(()) => reply(StatusCode::OK, json!({"upstream": request.name})),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

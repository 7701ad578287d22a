//! The fault-injecting proxy: clients of the pipeline talk to it, it forwards to the pipeline's endpoint,
//! and an active fault acts on the connections, the requests and the answers that pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Request, Response, StatusCode};
use serde_json::Value as Json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::config::{AgentConfig, Hop, Protocol};
use super::faults::{Fault, NODE_SLOW_DELAY, NodeFailure};
use super::payload::{self, Batch, ColumnStats, Predictions};
use super::upstream::{Links, send_upstream};
use chaoseater_net::http::{MAX_BODY_BYTES, error_response};
use chaoseater_schemas::bus::Shutdown;
use chaoseater_schemas::rng::Rng;
use chaoseater_schemas::sync::lock;

/// How long the proxy waits for the upstream: generous, since slow models are what we measure.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// Name of the configured `upstream` among the routable upstreams.
pub const PRIMARY: &str = "primary";

/// A fault the proxy applies, with the share of traffic rolled back from it.
#[derive(Debug)]
pub struct ActiveFault {
    pub fault: Fault,
    /// Basis points (1/100 of a percent) of traffic that no longer sees the fault.
    rolled_back_bp: AtomicU64,
    /// Requests this fault acted on (model_drift's gradual growth counts them).
    hits: AtomicU64,
    rng: Mutex<Rng>,
}

impl ActiveFault {
    fn chance(&self, p: f64) -> bool {
        lock(&self.rng).chance(p)
    }
    fn with_rng<T>(&self, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut lock(&self.rng))
    }
}

/// Requests seen by the proxy, by what happened to them.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: AtomicU64,
    /// A fault acted on the request (or its connection).
    pub faulted: AtomicU64,
    /// A fault was active but this request was in the rolled-back share.
    pub bypassed: AtomicU64,
    /// A data or model fault was active but the body had no shape the proxy knows.
    pub unrecognised: AtomicU64,
    /// Connections reset or refused by a fault.
    pub connections_dropped: AtomicU64,
}

/// Counters as numbers, for the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TrafficSnapshot {
    pub requests: u64,
    pub faulted: u64,
    pub bypassed: u64,
    pub unrecognised: u64,
    pub connections_dropped: u64,
}

/// What the proxy shares with the experiment runner.
#[derive(Debug)]
pub struct ProxyState {
    fault: RwLock<Option<Arc<ActiveFault>>>,
    /// Bumped on every change of fault or rollback share; a hung request and the listener watch it.
    generation: watch::Sender<u64>,
    upstreams: BTreeMap<String, String>,
    active_upstream: RwLock<String>,
    protocol: Protocol,
    records_pointer: Option<String>,
    predictions_pointer: Option<String>,
    features: Vec<String>,
    stats: ColumnStats,
    /// Decides which requests fall in the rolled-back share: exact proportions, not coin flips.
    selector: AtomicU64,
    pub traffic: Traffic,
}

impl ProxyState {
    /// The proxy of `hop`: it forwards to that hop's upstream (the configured `upstream`, or the inner
    /// hop's model server).
    pub fn new(config: &AgentConfig, hop: Hop, features: Vec<String>, stats: ColumnStats) -> Self {
        let upstreams = match (hop, &config.inner) {
            (Hop::Inner, Some(inner)) => {
                let mut all = inner.alternates.clone();
                all.insert(PRIMARY.to_owned(), inner.upstream.clone());
                all
            }
            _ => {
                let mut all = config.alternates.clone();
                all.insert(PRIMARY.to_owned(), config.upstream.clone());
                all
            }
        };
        Self {
            fault: RwLock::new(None),
            generation: watch::channel(0).0,
            upstreams,
            active_upstream: RwLock::new(PRIMARY.to_owned()),
            protocol: config.protocol,
            records_pointer: config.records_pointer.clone(),
            predictions_pointer: config.predictions_pointer.clone(),
            features,
            stats,
            selector: AtomicU64::new(0),
            traffic: Traffic::default(),
        }
    }

    /// Makes `fault` act on traffic until the returned guard is dropped.
    pub fn install(self: &Arc<Self>, fault: Fault, seed: u64) -> ProxyFaultGuard {
        let active = Arc::new(ActiveFault {
            fault,
            rolled_back_bp: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            rng: Mutex::new(Rng::new(seed)),
        });
        if let Ok(mut slot) = self.fault.write() {
            *slot = Some(active.clone());
        }
        self.bump();
        ProxyFaultGuard { state: self.clone(), active }
    }

    fn bump(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn current(&self) -> Option<Arc<ActiveFault>> {
        self.fault.read().ok().and_then(|f| f.clone())
    }

    /// The fault acting on the next request, or `None` (no fault, or this request is in the rolled-back share).
    fn select(&self) -> Option<Arc<ActiveFault>> {
        let active = self.current()?;
        let bp = active.rolled_back_bp.load(Ordering::Relaxed);
        let n = self.selector.fetch_add(1, Ordering::Relaxed);
        // Request n is rolled back when the running count of rolled-back requests steps up at n: exactly
        // bp/10000 of any long stretch of requests, spread evenly.
        if (n + 1) * bp / 10_000 > n * bp / 10_000 {
            self.traffic.bypassed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(active)
    }

    /// Whether the listener must refuse connections (a crash not rolled back at all).
    fn refusing(&self) -> bool {
        self.current().is_some_and(|a| {
            matches!(a.fault, Fault::NodeFailure { kind: NodeFailure::Crash, .. })
                && a.rolled_back_bp.load(Ordering::Relaxed) == 0
        })
    }

    /// Routes traffic to another configured upstream (blue-green).
    pub fn switch_upstream(&self, name: &str) -> Result<(), String> {
        if !self.upstreams.contains_key(name) {
            return Err(format!(
                "unknown upstream {name:?}; known: {}",
                self.upstreams.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Ok(mut active) = self.active_upstream.write() {
            *active = name.to_owned();
        }
        Ok(())
    }

    pub fn active_upstream(&self) -> String {
        self.active_upstream.read().map(|a| a.clone()).unwrap_or_else(|_| PRIMARY.to_owned())
    }

    pub fn traffic(&self) -> TrafficSnapshot {
        let t = &self.traffic;
        TrafficSnapshot {
            requests: t.requests.load(Ordering::Relaxed),
            faulted: t.faulted.load(Ordering::Relaxed),
            bypassed: t.bypassed.load(Ordering::Relaxed),
            unrecognised: t.unrecognised.load(Ordering::Relaxed),
            connections_dropped: t.connections_dropped.load(Ordering::Relaxed),
        }
    }

    fn upstream_url(&self, name: &str) -> String {
        self.upstreams.get(name).cloned().unwrap_or_default()
    }
}

/// Removes the proxy fault when dropped: at the end of the duration, on abort, on shutdown, on panic.
#[derive(Debug)]
pub struct ProxyFaultGuard {
    state: Arc<ProxyState>,
    active: Arc<ActiveFault>,
}

impl ProxyFaultGuard {
    /// Sets the share of traffic (percent) that no longer sees the fault.
    pub fn set_rolled_back(&self, percent: f64) {
        let bp = (percent.clamp(0.0, 100.0) * 100.0).round() as u64;
        self.active.rolled_back_bp.store(bp, Ordering::Relaxed);
        self.state.bump();
    }
}

impl Drop for ProxyFaultGuard {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.state.fault.write()
            && slot.as_ref().is_some_and(|a| Arc::ptr_eq(a, &self.active))
        {
            *slot = None;
        }
        self.state.bump();
    }
}

/// Why a request ends without an answer: the connection is closed under the client.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

/// Accepts connections on `addr` until `shutdown` fires; stops listening while a crash is injected.
/// Connections are admitted within `limits` (see [`chaoseater_net::server`]).
pub async fn serve(
    state: Arc<ProxyState>,
    listener: TcpListener,
    limits: chaoseater_net::server::ServerLimits,
    shutdown: Shutdown,
) {
    let addr = listener.local_addr().ok();
    let mut listener = Some(listener);
    let mut generation = state.generation.subscribe();
    let mut acceptor = chaoseater_net::server::Acceptor::new("agent-proxy", limits);
    loop {
        if shutdown.is_triggered() {
            break;
        }
        if state.refusing() {
            // A crashed node refuses connections: close the socket so that clients get ECONNREFUSED.
            if listener.take().is_some() {
                tracing::info!(?addr, "Proxy stopped listening (node_failure crash).");
            }
        } else if listener.is_none() {
            let Some(addr) = addr else { break };
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(%addr, "Proxy listening again.");
                    listener = Some(l);
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "Proxy cannot listen again yet; retrying.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        match &listener {
            Some(l) => {
                tokio::select! {
                    accepted = l.accept() => {
                        if let Some((stream, peer, slot)) = acceptor.take(accepted).await {
                            acceptor.spawn(slot.clone(), connection(state.clone(), stream, peer, slot));
                        }
                    }
                    _ = generation.changed() => {}
                    () = shutdown.wait() => {}
                }
            }
            None => {
                tokio::select! {
                    _ = generation.changed() => {}
                    () = shutdown.wait() => {}
                }
            }
        }
    }
    drop(listener);
    acceptor.close().await;
}

async fn connection(state: Arc<ProxyState>, stream: TcpStream, peer: SocketAddr, slot: chaoseater_net::server::Slot) {
    // A crash rolled back in part: the connections still in the faulty share are reset.
    if let Some(active) = state.current()
        && matches!(active.fault, Fault::NodeFailure { kind: NodeFailure::Crash, .. })
        && state.select().is_some()
    {
        state.traffic.faulted.fetch_add(1, Ordering::Relaxed);
        state.traffic.connections_dropped.fetch_add(1, Ordering::Relaxed);
        reset(stream);
        return;
    }
    let links = Arc::new(tokio::sync::Mutex::new(Links::default()));
    let service = hyper::service::service_fn(move |request| {
        let (state, links) = (state.clone(), links.clone());
        async move { handle(state, &links, request).await }
    });
    chaoseater_net::server::serve_http(stream, peer, service, slot).await;
}

/// Closes with RST rather than FIN, as a lost or reset connection looks to the client.
fn reset(stream: TcpStream) {
    if let Ok(std) = stream.into_std() {
        let socket = socket2_free_linger(std);
        drop(socket);
    }
}

/// Sets SO_LINGER to zero so that closing sends RST.
fn socket2_free_linger(stream: std::net::TcpStream) -> std::net::TcpStream {
    let fd = rustix::fd::AsFd::as_fd(&stream);
    let _ = rustix::net::sockopt::set_socket_linger(fd, Some(Duration::ZERO));
    stream
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(name) && name.as_str() != "keep-alive" && !name.as_str().starts_with("proxy-") {
            to.append(name.clone(), value.clone());
        }
    }
}

fn answer(status: StatusCode, message: &str) -> Result<Response<Full<Bytes>>, Dropped> {
    Ok(error_response(status, message))
}

async fn handle(
    state: Arc<ProxyState>,
    links: &tokio::sync::Mutex<Links>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    state.traffic.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return answer(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body: {e}")),
    };
    let hit = state.select();
    let mut upstream = state.active_upstream();
    let mut body = body;
    if let Some(active) = &hit {
        state.traffic.faulted.fetch_add(1, Ordering::Relaxed);
        active.hits.fetch_add(1, Ordering::Relaxed);
        if let Some(early) = before_forward(&state, active, &mut body, &mut upstream).await? {
            return Ok(early);
        }
    }
    let base = state.upstream_url(&upstream);
    let authority = base.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut forward = Request::builder().method(parts.method.clone()).uri(path).header(header::HOST, &authority);
    if let Some(headers) = forward.headers_mut() {
        copy_headers(&parts.headers, headers);
    }
    let Ok(forward) = forward.body(Full::new(body)) else {
        return answer(StatusCode::BAD_GATEWAY, "could not build the upstream request");
    };
    let reply = match tokio::time::timeout(UPSTREAM_TIMEOUT, send_upstream(links, &authority, forward)).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => return answer(StatusCode::BAD_GATEWAY, &format!("upstream {upstream}: {e}")),
        Err(_) => {
            return answer(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("upstream {upstream}: no answer within {UPSTREAM_TIMEOUT:?}"),
            );
        }
    };
    let mut reply_body = reply.body;
    if let Some(active) = &hit {
        after_forward(&state, active, reply.status, &mut reply_body).await;
    }
    let mut response = Response::new(Full::new(reply_body));
    *response.status_mut() = reply.status;
    copy_headers(&reply.headers, response.headers_mut());
    Ok(response)
}

fn jittered(base: Duration, spread: Duration, rng: &mut Rng) -> Duration {
    let ms = base.as_secs_f64() * 1e3 + rng.uniform(-1.0, 1.0) * spread.as_secs_f64() * 1e3;
    Duration::from_secs_f64(ms.max(0.0) / 1e3)
}

/// The part of a fault that acts before the request reaches the upstream. `Some` answers in its place.
async fn before_forward(
    state: &ProxyState,
    active: &ActiveFault,
    body: &mut Bytes,
    upstream: &mut String,
) -> Result<Option<Response<Full<Bytes>>>, Dropped> {
    let early = |status, message: String| Ok(Some(error_response(status, &message)));
    match &active.fault {
        Fault::NetworkLatency { latency, jitter } => {
            let delay = active.with_rng(|r| jittered(*latency, *jitter, r));
            tokio::time::sleep(delay).await;
        }
        Fault::PacketLoss { rate } if active.chance(*rate) => {
            state.traffic.connections_dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Dropped);
        }
        Fault::NodeFailure { kind: NodeFailure::Crash, .. } => {
            state.traffic.connections_dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Dropped);
        }
        Fault::NodeFailure { kind: NodeFailure::Hang, .. } => {
            // Accepted, never answered: hold the request until the fault changes, then drop the connection.
            let mut generation = state.generation.subscribe();
            let _ = generation.changed().await;
            return Err(Dropped);
        }
        Fault::NodeFailure { kind: NodeFailure::Slow, .. } => tokio::time::sleep(NODE_SLOW_DELAY).await,
        Fault::GpuUnavailable => {
            return early(
                StatusCode::SERVICE_UNAVAILABLE,
                "accelerator unavailable: no CUDA device is visible to the model server (injected gpu_unavailable)"
                    .to_owned(),
            );
        }
        Fault::NetworkPartition { hosts } => {
            let url = state.upstream_url(upstream);
            let authority = url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned();
            let host = authority.rsplit_once(':').map(|(h, _)| h.to_owned()).unwrap_or(authority.clone());
            if hosts.iter().any(|h| *h == authority || *h == host || h == upstream) {
                return early(
                    StatusCode::BAD_GATEWAY,
                    format!("upstream {authority}: connection refused (injected network_partition)"),
                );
            }
        }
        Fault::DnsFailure { rate } if active.chance(*rate) => {
            let url = state.upstream_url(upstream);
            let host = url.trim_start_matches("http://").split([':', '/']).next().unwrap_or_default().to_owned();
            return early(
                StatusCode::BAD_GATEWAY,
                format!("upstream {host}: failed to resolve host name (injected dns_failure)"),
            );
        }
        Fault::ModelUnavailable { rate } if active.chance(*rate) => {
            return early(StatusCode::SERVICE_UNAVAILABLE, "model unavailable (injected model_unavailable)".to_owned());
        }
        Fault::BatchProcessingFailure { rate } => {
            let rows = parse(body)
                .and_then(|json| Batch::read(&json, state.protocol, state.records_pointer.as_deref(), &state.features))
                .map(|b| b.rows.len());
            match rows {
                Some(n) if n > 1 && active.chance(*rate) => {
                    return early(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("batch of {n} records failed (injected batch_processing_failure)"),
                    );
                }
                Some(_) => {}
                None => {
                    state.traffic.unrecognised.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Fault::LatencyInjection { delay } => tokio::time::sleep(*delay).await,
        Fault::WrongVersion { upstream: version } => *upstream = version.clone(),
        Fault::DataCorruption { .. }
        | Fault::MissingData { .. }
        | Fault::SchemaDrift(_)
        | Fault::DistributionDrift { .. }
        | Fault::OutlierInjection { .. }
        | Fault::DuplicateRecords { .. } => {
            let rewritten = parse(body).and_then(|mut json| {
                let mut batch = Batch::read(&json, state.protocol, state.records_pointer.as_deref(), &state.features)?;
                active.with_rng(|rng| rewrite(&active.fault, &mut batch.rows, &state.stats, rng));
                batch.write(&mut json);
                Some(json)
            });
            match rewritten {
                Some(json) => *body = Bytes::from(json.to_string()),
                None => {
                    state.traffic.unrecognised.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        _ => {}
    }
    Ok(None)
}

fn rewrite(fault: &Fault, rows: &mut Vec<payload::Row>, stats: &ColumnStats, rng: &mut Rng) {
    match fault {
        Fault::DataCorruption { rate, columns } => payload::corrupt(rows, *rate, columns, stats, rng),
        Fault::MissingData { rate, columns } => payload::blank(rows, *rate, columns, rng),
        Fault::SchemaDrift(drift) => payload::drift_schema(rows, drift),
        Fault::DistributionDrift { magnitude, columns } => payload::shift(rows, *magnitude, columns, stats),
        Fault::OutlierInjection { rate, magnitude, columns } => {
            payload::outliers(rows, *rate, *magnitude, columns, stats, rng)
        }
        Fault::DuplicateRecords { rate } => payload::duplicate(rows, *rate, rng),
        _ => {}
    }
}

fn parse(body: &Bytes) -> Option<Json> {
    serde_json::from_slice(body).ok()
}

/// The part of a fault that acts on the upstream's answer.
async fn after_forward(state: &ProxyState, active: &ActiveFault, status: StatusCode, body: &mut Bytes) {
    let rewrite = |f: &mut dyn FnMut(&mut Vec<payload::Prediction>)| {
        if !status.is_success() {
            return None;
        }
        let mut json = parse(body)?;
        let mut predictions = Predictions::read(&json, state.protocol, state.predictions_pointer.as_deref())?;
        f(&mut predictions.items);
        predictions.write(&mut json);
        Some(Bytes::from(json.to_string()))
    };
    let rewritten = match &active.fault {
        Fault::SlowInference { latency, variance } => {
            let spread = latency.mul_f64(*variance);
            let delay = active.with_rng(|r| jittered(*latency, spread, r));
            tokio::time::sleep(delay).await;
            return;
        }
        Fault::ModelDrift { rate, gradual } => {
            let bias = if *gradual { (active.hits.load(Ordering::Relaxed) as f64 * 0.001).min(*rate) } else { *rate };
            rewrite(&mut |items| payload::bias_predictions(items, bias))
        }
        Fault::PredictionCorruption { rate, kind } => rewrite(&mut |items| {
            active.with_rng(|rng| payload::corrupt_predictions(items, *rate, *kind, rng));
        }),
        Fault::ParameterDegradation { factor } => rewrite(&mut |items| payload::degrade_predictions(items, *factor)),
        _ => return,
    };
    match rewritten {
        Some(bytes) => *body = bytes,
        None if status.is_success() => {
            state.traffic.unrecognised.fetch_add(1, Ordering::Relaxed);
        }
        None => {}
    }
}

//! The region agent (`chaoseater agent`): a fault-injecting proxy in front of the pipeline under test,
//! host-level injectors, steady-state probes, and the HTTP API the dispatcher (or the Python tool's
//! client) drives. The fault catalogue is `chaoseater_schemas::faults`.

pub mod api;
pub mod auth;
pub mod config;
pub mod experiment;
pub mod faults;
pub mod hops;
pub mod host;
pub mod payload;
pub mod probe;
pub mod proxy;
pub mod steady;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use chaoseater_schemas::bus::Shutdown;
use chaoseater_schemas::experiment::Layer;
use chaoseater_schemas::limits;
use chaoseater_schemas::sync::lock;
use tokio::net::TcpListener;

pub use config::AgentConfig;
use config::Hop;
use experiment::{Experiment, ExperimentRequest};
use faults::Fault;
use host::{Journal, Leftover};
use payload::ColumnStats;
use probe::ProbeTarget;
use proxy::ProxyState;

use crate::demo_target::ProbeSet;
use chaoseater_net::http::HttpClient;

/// Ids of every experiment this agent started, one per line.
const EXPERIMENT_LOG: &str = "experiments.log";

/// Longest experiment id an agent accepts: a dispatch id is a run id, a dot and a region name.
pub const MAX_EXPERIMENT_ID_LEN: usize = limits::MAX_ID_LEN + 1 + limits::MAX_REGION_LEN;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the journal in {dir}: {source}")]
    Journal { dir: String, source: std::io::Error },
    #[error("loading the probe set {set:?}: {message}")]
    ProbeSet { set: String, message: String },
}

/// State shared by the API, the experiments and the proxy.
#[derive(Debug)]
pub struct AgentCore {
    pub config: Arc<AgentConfig>,
    token: String,
    /// The outer hop: where clients and probes enter.
    pub proxy: Arc<ProxyState>,
    pub proxy_addr: SocketAddr,
    /// The inner hop, between a gateway and its model server, when configured.
    pub inner: Option<HopProxy>,
    pub journal: Arc<Journal>,
    pub probe: Arc<ProbeTarget>,
    /// Records in the probe set.
    pub probe_records: usize,
    experiments: Mutex<BTreeMap<String, Arc<Experiment>>>,
    active: Mutex<Option<Arc<Experiment>>>,
    /// Ids of experiments started by earlier processes of this agent (`experiments.log` in the state
    /// directory): a dispatcher retrying after an agent restart must not run the same dispatch twice.
    earlier_ids: std::collections::HashSet<String>,
}

/// A proxy hop the agent serves.
#[derive(Debug, Clone)]
pub struct HopProxy {
    pub hop: Hop,
    pub state: Arc<ProxyState>,
    pub addr: SocketAddr,
}

impl AgentCore {
    /// The proxy `layer`'s faults act on (`[hops]`).
    pub fn hop(&self, layer: Layer) -> HopProxy {
        match (self.config.hops.of(layer, self.inner.is_some()), &self.inner) {
            (Hop::Inner, Some(inner)) => inner.clone(),
            _ => HopProxy { hop: Hop::Outer, state: self.proxy.clone(), addr: self.proxy_addr },
        }
    }

    /// The traffic counters of the hop `experiment`'s fault acts on.
    pub fn traffic_of(&self, experiment: &Experiment) -> proxy::TrafficSnapshot {
        self.hop(experiment.layer).state.traffic()
    }

    /// Validates `request` and starts it; only one experiment runs at a time (two faults at once would
    /// confound each other's measurements).
    pub async fn start(self: &Arc<Self>, request: ExperimentRequest) -> Result<Arc<Experiment>, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::BAD_REQUEST, m);
        // Ids name files and lines of the id log: a safe alphabet and length, or nothing runs.
        if let Some(id) = &request.id {
            limits::check_id("id", id, MAX_EXPERIMENT_ID_LEN).map_err(|e| bad(e.to_string()))?;
            if let Some(existing) = self.experiment(id) {
                return Ok(existing);
            }
            if self.earlier_ids.contains(id) {
                return Err((
                    StatusCode::GONE,
                    format!("experiment {id} already ran on this agent before it restarted; its outcome is lost"),
                ));
            }
        }
        limits::check_text("name", &request.name, limits::MAX_NAME_LEN).map_err(|e| bad(e.to_string()))?;
        limits::check_id("fault_type", &request.fault_type, limits::MAX_FAULT_TYPE_LEN)
            .map_err(|e| bad(e.to_string()))?;
        let layer = Layer::parse(&request.layer.to_ascii_lowercase()).ok_or_else(|| {
            bad(format!("layer: unknown layer {:?}; known: data, model, infrastructure", request.layer))
        })?;
        if !(request.duration.is_finite() && request.duration > 0.0) {
            return Err(bad(format!("duration: must be a positive number of seconds, got {}", request.duration)));
        }
        if let Some(hold) = request.hold_s
            && !(hold.is_finite() && hold > 0.0 && hold <= self.config.caps.max_duration_s)
        {
            return Err(bad(format!(
                "hold_s: must be a positive number of seconds within max_duration_s {}, got {hold}",
                self.config.caps.max_duration_s
            )));
        }
        if request.duration > self.config.caps.max_duration_s {
            return Err(bad(format!(
                "duration: {} s exceeds this agent's cap max_duration_s {}",
                request.duration, self.config.caps.max_duration_s
            )));
        }
        let fault = Fault::parse(layer, &request.fault_type, &request.parameters, &self.config)
            .map_err(|e| bad(format!("{}: {}", e.field, e.message)))?;
        let id = request.id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let traffic = self.hop(layer).state.traffic();
        let experiment = Arc::new(Experiment::new(id.clone(), request, layer, fault, traffic));
        {
            let mut active = lock(&self.active);
            match active.as_ref() {
                Some(running) if running.id == id => {
                    // A retry of this request: the experiment once it is recorded, else come back.
                    return match self.experiment(&id) {
                        Some(existing) => Ok(existing),
                        None => Err((StatusCode::CONFLICT, format!("experiment {id} is being recorded; retry"))),
                    };
                }
                Some(running) => {
                    let message = format!("experiment {} is still running on this agent", running.id);
                    return Err((StatusCode::CONFLICT, message));
                }
                // The slot is taken from here, so a second request conflicts while the id is synced.
                None => *active = Some(experiment.clone()),
            }
        }
        // Recorded and started on a task of its own: a caller that hangs up mid-fsync (its request timed
        // out) must not leave the slot taken by an experiment that never runs.
        let core = self.clone();
        let started = tokio::spawn(async move {
            let (recorder, logged) = (core.clone(), id.clone());
            let remembered = tokio::task::spawn_blocking(move || recorder.remember(&logged))
                .await
                .unwrap_or_else(|join| Err(std::io::Error::other(join.to_string())));
            if let Err(e) = remembered {
                core.release(&id);
                return Err((StatusCode::INTERNAL_SERVER_ERROR, format!("recording the experiment id: {e}")));
            }
            lock(&core.experiments).insert(id.clone(), experiment.clone());
            tracing::info!(experiment = %id, fault_type = %experiment.request.fault_type, "Experiment accepted.");
            tokio::spawn(experiment::run(core.clone(), experiment.clone()));
            Ok(experiment)
        });
        started
            .await
            .unwrap_or_else(|e| Err((StatusCode::INTERNAL_SERVER_ERROR, format!("starting the experiment: {e}"))))
    }

    /// Appends `id` to the experiment log before the experiment starts (a few bytes, synced).
    fn remember(&self, id: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.config.state_dir.join(EXPERIMENT_LOG))?;
        writeln!(log, "{id}")?;
        log.sync_data()
    }

    fn release(&self, id: &str) {
        let mut active = lock(&self.active);
        if active.as_ref().is_some_and(|e| e.id == id) {
            *active = None;
        }
    }

    pub fn active(&self) -> Option<Arc<Experiment>> {
        lock(&self.active).clone()
    }

    pub fn experiment(&self, id: &str) -> Option<Arc<Experiment>> {
        lock(&self.experiments).get(id).cloned()
    }

    pub fn experiments(&self) -> Vec<Arc<Experiment>> {
        lock(&self.experiments).values().cloned().collect()
    }

    /// One probe through the proxy: the target as its clients see it, faults included.
    async fn check_target(&self) -> (bool, serde_json::Value) {
        let started = std::time::Instant::now();
        let (ok, _, _, error) = self.probe.probe(0).await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        (ok, serde_json::json!({"ok": ok, "latency_ms": (latency_ms * 1000.0).round() / 1000.0, "error": error}))
    }
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    pub core: Arc<AgentCore>,
    pub api_addr: SocketAddr,
    pub proxy_addr: SocketAddr,
    /// Leftovers of a previous process reverted at start.
    pub cleaned: Vec<Leftover>,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Loads the probe set from a file or an `http://` URL (retrying for a while: the target may be starting).
pub async fn load_probe_set(set: &str) -> Result<ProbeSet, AgentError> {
    let err = |message: String| AgentError::ProbeSet { set: set.to_owned(), message };
    if set.starts_with("http://") {
        let client = HttpClient::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = client.json(hyper::Method::GET, set, None, None, Duration::from_secs(5)).await;
            match attempt {
                Ok(answer) if answer.status.is_success() => {
                    return serde_json::from_slice(&answer.body).map_err(|e| err(e.to_string()));
                }
                Ok(answer) if std::time::Instant::now() >= deadline => {
                    return Err(err(format!("answered {}", answer.status)));
                }
                Err(e) if std::time::Instant::now() >= deadline => return Err(err(e.to_string())),
                _ => {
                    tracing::info!(set, "Waiting for the probe set.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let text = tokio::fs::read(set).await.map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| err(e.to_string()))
}

impl Agent {
    /// Reverts leftovers of a previous process, loads the probe set, binds both listeners and serves.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let token = config.token().map_err(AgentError::Config)?;
        let (journal, cleaned) = Journal::open(&config.state_dir)
            .map_err(|source| AgentError::Journal { dir: config.state_dir.display().to_string(), source })?;
        let earlier_ids = match std::fs::read_to_string(config.state_dir.join(EXPERIMENT_LOG)) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(source) => return Err(AgentError::Journal { dir: config.state_dir.display().to_string(), source }),
        };
        let set = load_probe_set(&config.probe.set).await?;
        let rows: Vec<payload::Row> = set
            .instances
            .iter()
            .filter_map(|i| {
                payload::Batch::read(
                    &serde_json::json!({ "instances": [i] }),
                    config::Protocol::V1,
                    None,
                    &set.features,
                )
            })
            .flat_map(|b| b.rows)
            .collect();
        let stats = ColumnStats::from_rows(&rows);
        let proxy_listener = TcpListener::bind(config.proxy_listen)
            .await
            .map_err(|source| AgentError::Bind { addr: config.proxy_listen, source })?;
        let api_listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| AgentError::Bind { addr: config.listen, source })?;
        let proxy_addr =
            proxy_listener.local_addr().map_err(|source| AgentError::Bind { addr: config.proxy_listen, source })?;
        let api_addr = api_listener.local_addr().map_err(|source| AgentError::Bind { addr: config.listen, source })?;
        let probe = ProbeTarget::new(&config, &set, proxy_addr).map_err(AgentError::Config)?;
        let inner = match &config.inner {
            Some(hop) => {
                let listener = TcpListener::bind(hop.listen)
                    .await
                    .map_err(|source| AgentError::Bind { addr: hop.listen, source })?;
                let addr = listener.local_addr().map_err(|source| AgentError::Bind { addr: hop.listen, source })?;
                let state = Arc::new(ProxyState::new(&config, Hop::Inner, set.features.clone(), stats.clone()));
                Some((HopProxy { hop: Hop::Inner, state, addr }, listener))
            }
            None => None,
        };
        let proxy = Arc::new(ProxyState::new(&config, Hop::Outer, set.features.clone(), stats));
        let core = Arc::new(AgentCore {
            config: Arc::new(config),
            token,
            proxy: proxy.clone(),
            proxy_addr,
            inner: inner.as_ref().map(|(hop, _)| hop.clone()),
            journal,
            probe: Arc::new(probe),
            probe_records: set.labels.len(),
            experiments: Mutex::new(BTreeMap::new()),
            active: Mutex::new(None),
            earlier_ids,
        });
        let shutdown = Shutdown::new();
        let mut tasks = Vec::new();
        let limits = core.config.limits.clone();
        tasks.push(tokio::spawn(proxy::serve(proxy, proxy_listener, limits.proxy.clone(), shutdown.clone())));
        if let Some((hop, listener)) = inner {
            let (state, addr) = (hop.state, hop.addr);
            tracing::info!(%addr, upstream = ?core.config.inner.as_ref().map(|i| &i.upstream), "Inner hop serving.");
            tasks.push(tokio::spawn(proxy::serve(state, listener, limits.proxy.clone(), shutdown.clone())));
        }
        let service = chaoseater_net::server::router_service(api::router(core.clone()));
        tasks.push(tokio::spawn(chaoseater_net::server::serve(
            "agent-api",
            api_listener,
            service,
            limits.api,
            shutdown.clone(),
        )));
        tracing::info!(%api_addr, %proxy_addr, upstream = %core.config.upstream, "Agent serving.");
        if let Some(warning) = core.config.auth.warning() {
            tracing::warn!(%warning, "Unauthenticated experiments are allowed.");
        }
        if let Some(warning) = core.config.slo.deprecation() {
            tracing::warn!(%warning, "Deprecated setting.");
        }
        Ok(Self { core, api_addr, proxy_addr, cleaned, shutdown, tasks })
    }

    /// Aborts the running experiment, waits for its fault to be reverted, and stops serving.
    pub async fn shutdown(self) {
        if let Some(active) = self.core.active() {
            tracing::info!(experiment = %active.id, "Shutting down: aborting the running experiment.");
            active.abort();
            let _ = tokio::time::timeout(Duration::from_secs(10), active.finished()).await;
        }
        self.shutdown.trigger();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

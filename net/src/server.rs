//! The accept loop every HTTP server of ours runs (the agent's API and proxy, the demo target, the
//! metrics endpoint): an unauthenticated peer must not be able to stop it from answering.
//!
//! - A connection limit. At the limit, a new connection evicts the oldest one with no request in
//!   flight (an idle keep-alive or a peer that never finished its headers); when every connection is
//!   busy, the new one is closed. So a flood of idle connections cannot keep `/health` from an answer.
//! - A header-read timeout (hyper's, per request head) and an idle timeout between requests.
//! - Accept errors (EMFILE when file descriptors run out) back off, doubling from 10 ms to 1 s, and
//!   are logged at most once per [`LOG_EVERY`] with the count of those not logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaoseater_schemas::bus::Shutdown;
use chaoseater_schemas::sync::lock;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use chaoseater_schemas::bus::component::BoxError;

/// What [`serve`] and [`serve_http`] run for each request: a hyper service answering with a body `B`.
pub trait Handler<B>:
    hyper::service::Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> Handler<B> for S where
    S: hyper::service::Service<
            hyper::Request<Incoming>,
            Response = hyper::Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// How often an accept error is logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limits of one server (in agent.toml: `[limits]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerLimits {
    /// Most connections open at once; at the limit the oldest idle one is closed for a new one.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers.
    pub header_read_timeout_s: f64,
    /// Seconds a connection may stay open with no request in flight.
    pub idle_timeout_s: f64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self { max_connections: 256, header_read_timeout_s: 10.0, idle_timeout_s: 60.0 }
    }
}

impl ServerLimits {
    /// Checks the values (positive and finite).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        for (name, v) in
            [("header_read_timeout_s", self.header_read_timeout_s), ("idle_timeout_s", self.idle_timeout_s)]
        {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(format!("{name} must be in (0, 86400] seconds, got {v}"));
            }
        }
        Ok(())
    }
}

/// One open connection, as the registry sees it.
#[derive(Debug)]
struct Conn {
    /// Requests in flight on it.
    busy: Arc<AtomicUsize>,
    /// Closes it (dropping its task drops the socket).
    abort: tokio::task::AbortHandle,
}

/// The open connections, oldest first (ids grow).
#[derive(Debug, Default)]
struct Registry {
    // A std mutex: held for a map operation, never across an await.
    conns: Mutex<BTreeMap<u64, Conn>>,
    next: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Conn>> {
        lock(&self.conns)
    }

    /// Makes room for one more: true when there is (or was made) room.
    fn admit(&self, max: usize) -> bool {
        let mut conns = self.lock();
        if conns.len() < max {
            return true;
        }
        let idle = conns.iter().find(|(_, c)| c.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id);
        match idle.and_then(|id| conns.remove(&id)) {
            Some(evicted) => {
                evicted.abort.abort();
                true
            }
            None => false,
        }
    }
}

/// Counts accept errors and says when to log one.
#[derive(Debug)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

/// A connection's place in the registry: what [`serve_http`] needs to mark it busy and to stop.
#[derive(Debug, Clone)]
pub struct Slot {
    id: u64,
    busy: Arc<AtomicUsize>,
    limits: ServerLimits,
    stop: Shutdown,
}

/// The accepting side of a server: admits connections within the limit, backs off on accept errors,
/// and owns the connection tasks. For servers with their own accept loop (the proxy stops listening
/// while a crash is injected); others call [`serve`].
#[derive(Debug)]
pub struct Acceptor {
    name: &'static str,
    limits: ServerLimits,
    registry: Arc<Registry>,
    errors: AcceptErrors,
    backoff: Duration,
    tasks: tokio::task::JoinSet<()>,
    /// Tells the connections to finish their request in flight and close.
    stop: Shutdown,
}

impl Acceptor {
    /// An acceptor for the server `name` (in log lines).
    pub fn new(name: &'static str, limits: ServerLimits) -> Self {
        Self {
            name,
            limits,
            registry: Arc::default(),
            errors: AcceptErrors { last_logged: None, suppressed: 0 },
            backoff: Duration::from_millis(10),
            tasks: tokio::task::JoinSet::new(),
            stop: Shutdown::new(),
        }
    }

    /// Takes one result of `accept`: an admitted connection with its slot, or `None` (an error, after
    /// its backoff, or a connection closed because every other one is busy).
    pub async fn take(
        &mut self,
        accepted: std::io::Result<(TcpStream, SocketAddr)>,
    ) -> Option<(TcpStream, SocketAddr, Slot)> {
        while self.tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => {
                self.backoff = Duration::from_millis(10);
                pair
            }
            Err(e) => {
                log_accept_error(self.name, &e, &mut self.errors);
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
                return None;
            }
        };
        if !self.registry.admit(self.limits.max_connections) {
            tracing::debug!(server = self.name, %peer, "Every connection is busy; closing a new one.");
            return None;
        }
        let id = self.registry.next.fetch_add(1, Ordering::Relaxed);
        let slot =
            Slot { id, busy: Arc::new(AtomicUsize::new(0)), limits: self.limits.clone(), stop: self.stop.clone() };
        Some((stream, peer, slot))
    }

    /// Runs a connection's task in `slot`; the registry forgets it when the task ends.
    pub fn spawn(&mut self, slot: Slot, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let registry = self.registry.clone();
        let id = slot.id;
        let abort = self.tasks.spawn(async move {
            // Registered before it runs, so that its removal cannot come first.
            let _ = ready_rx.await;
            task.await;
            registry.lock().remove(&id);
        });
        self.registry.lock().insert(id, Conn { busy: slot.busy, abort });
        let _ = ready_tx.send(());
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.registry.lock().len()
    }

    /// Asks every connection to finish its request in flight and close; waits at most 5 s.
    pub async fn close(mut self) {
        self.stop.trigger();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain).await.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// Serves `service` on `listener` within `limits` until `shutdown` fires, then lets requests in
/// flight finish (at most 5 s). `name` labels its log lines.
pub async fn serve<S, B>(
    name: &'static str,
    listener: TcpListener,
    service: S,
    limits: ServerLimits,
    shutdown: Shutdown,
) where
    S: Handler<B>,
    B: hyper::body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    let mut acceptor = Acceptor::new(name, limits);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.wait() => break,
        };
        if let Some((stream, peer, slot)) = acceptor.take(accepted).await {
            let task = serve_http(stream, peer, service.clone(), slot.clone());
            acceptor.spawn(slot, task);
        }
    }
    drop(listener);
    acceptor.close().await;
}

fn log_accept_error(name: &str, error: &std::io::Error, errors: &mut AcceptErrors) {
    if errors.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
        errors.suppressed += 1;
        return;
    }
    tracing::warn!(server = name, error = %error, not_logged_since = errors.suppressed, "Cannot accept connections; backing off.");
    errors.last_logged = Some(Instant::now());
    errors.suppressed = 0;
}

/// Marks a request in flight on its connection while it lives.
struct InFlight {
    busy: Arc<AtomicUsize>,
    last: Arc<Mutex<Instant>>,
}

impl InFlight {
    fn new(busy: &Arc<AtomicUsize>, last: &Arc<Mutex<Instant>>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        Self { busy: busy.clone(), last: last.clone() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *lock(&self.last) = Instant::now();
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves HTTP/1.1 on one admitted connection: hyper's header-read timeout, the idle timeout between
/// requests, a graceful close when the server stops.
pub async fn serve_http<S, B>(stream: TcpStream, peer: SocketAddr, service: S, slot: Slot)
where
    S: Handler<B>,
    B: hyper::body::Body<Data: Send, Error: Into<BoxError>> + Send + 'static,
{
    let Slot { busy, limits, stop, .. } = slot;
    let _ = stream.set_nodelay(true);
    let last = Arc::new(Mutex::new(Instant::now()));
    let (busy_in, last_in) = (busy.clone(), last.clone());
    let wrapped = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // The peer's address, for handlers that decide by network (axum's `ConnectInfo` extractor).
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let guard = InFlight::new(&busy_in, &last_in);
        let call = service.call(request);
        async move {
            let response = call.await;
            // Idle again once the response is ready: our bodies are whole buffers, written at once.
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs_f64(limits.header_read_timeout_s));
    let conn = builder.serve_connection(TokioIo::new(stream), wrapped);
    let mut conn = std::pin::pin!(conn);
    let idle = Duration::from_secs_f64(limits.idle_timeout_s);
    let mut check = tokio::time::interval(idle.min(Duration::from_secs(1)).max(Duration::from_millis(50)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(%peer, error = %e, "Connection ended.");
                }
                return;
            }
            _ = check.tick() => {
                let since = lock(&last).elapsed();
                if busy.load(Ordering::Acquire) == 0 && since >= idle {
                    tracing::trace!(%peer, idle_s = since.as_secs_f64(), "Closing an idle connection.");
                    return;
                }
            }
            () = stop.wait(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// An axum router as a service for [`serve`].
pub fn router_service(router: axum::Router) -> hyper_util::service::TowerToHyperService<axum::Router> {
    hyper_util::service::TowerToHyperService::new(router)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(ServerLimits::default().validate().is_ok());
        let bad = ServerLimits { idle_timeout_s: f64::NAN, ..Default::default() };
        assert!(bad.validate().is_err());
        let bad = ServerLimits { max_connections: 0, ..Default::default() };
        assert!(bad.validate().is_err());
    }
}

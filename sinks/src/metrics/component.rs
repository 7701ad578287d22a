//! The metrics sink as a component: a view rebuilt by replay at every start, served at `/metrics` and
//! `/health` on the socket bound once when it is prepared.

use std::net::SocketAddr;

use chaoseater_net::server::{ServerLimits, router_service, serve};
use chaoseater_schemas::bus::{Component, ComponentError, Env, Handle, Prepared, StateStore};
use chaoseater_schemas::topics::Topic;

use super::{MetricsSink, MetricsView, ServiceHealth, router};

/// The Prometheus exporter on `listen`, with the service's `health`.
#[derive(Debug, Clone)]
pub struct MetricsComponent {
    listen: SocketAddr,
    deprecated_names: bool,
    health: ServiceHealth,
}

impl MetricsComponent {
    pub fn new(listen: SocketAddr, deprecated_names: bool, health: &ServiceHealth) -> Self {
        Self { listen, deprecated_names, health: health.clone() }
    }
}

impl Component for MetricsComponent {
    fn name(&self) -> &'static str {
        MetricsSink::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        chaoseater_schemas::bus::Processor::topics(&MetricsSink::new(MetricsView::new()))
    }

    fn prepare(&self, env: Env) -> Result<Prepared, ComponentError> {
        let listener = std::net::TcpListener::bind(self.listen)
            .map_err(|e| ComponentError::new(format!("binding the metrics endpoint {}", self.listen), e))?;
        let addr = listener.local_addr().map_err(|e| ComponentError::new("the metrics endpoint", e))?;
        tracing::info!(%addr, "Prometheus metrics at /metrics, service health at /health.");
        let (deprecated, health) = (self.deprecated_names, self.health.clone());
        Ok(Prepared::new(move |shutdown| {
            let mut handle = Handle::new(MetricsSink::NAME, &shutdown);
            let view = MetricsView::new().with_deprecated_names(deprecated);
            // A view, rebuilt by replay: its store (offsets only) is thrown away at every start.
            let _ = std::fs::remove_dir_all(&env.state_dir);
            let store = StateStore::open(&env.state_dir)
                .map_err(|e| ComponentError::new("opening the metrics view's store", e))?;
            let socket = listener.try_clone().and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            });
            let socket = socket.map_err(|e| ComponentError::new("the metrics endpoint", e))?;
            let service = router_service(router(view.clone(), health.clone()));
            let stop = handle.shutdown();
            handle.spawn("server", async move {
                serve("metrics", socket, service, ServerLimits::default(), stop).await;
                Ok::<_, ComponentError>(())
            });
            handle.spawn_runner(&env.bus, MetricsSink::new(view), store, env.runner.clone())?;
            Ok(handle)
        })
        .listening_on(addr))
    }
}

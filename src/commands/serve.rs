//! `chaoseater serve`: processors as a long-lived service, until Ctrl-C or SIGTERM.

use anyhow::{Context, Result, bail};
use std::time::Duration;

use chaoseater_processors::circuit::CircuitBreaker;
use chaoseater_processors::history::Materializer;
use chaoseater_processors::ledger::RunLedger;
use chaoseater_processors::orchestrator::Orchestrator;
use chaoseater_processors::rollback::RollbackProcessor;
use chaoseater_producers::dispatcher::{AgentTokens, Dispatcher, Workers, health};
use chaoseater_schemas::bus::{BusContext, EventProducer, Processor, ProcessorRunner, StateStore};
use chaoseater_sinks::grafana::sink::GrafanaSink;
use chaoseater_sinks::metrics::{self, MetricsSink, MetricsView};
use tokio::sync::watch;
use tracing::info;

use crate::broker;
use crate::cli::ServeArgs;
use crate::config::Config;

/// Every processor `serve` knows, by name. A plain list: later issues append theirs. The dispatcher
/// brings its agent-calling workers and the health monitor along.
pub const PROCESSORS: &[&str] = &[
    RunLedger::NAME,
    Orchestrator::NAME,
    Dispatcher::NAME,
    CircuitBreaker::NAME,
    RollbackProcessor::NAME,
    Materializer::NAME,
    MetricsSink::NAME,
    GrafanaSink::NAME,
];

pub async fn run(args: ServeArgs, config: &Config) -> Result<()> {
    // All of them by default; the Grafana sink only when Grafana is configured.
    let selected = args.processors.unwrap_or_else(|| {
        PROCESSORS
            .iter()
            .filter(|p| **p != GrafanaSink::NAME || config.sinks.grafana.is_some())
            .map(|s| (*s).to_owned())
            .collect()
    });
    for name in &selected {
        if !PROCESSORS.contains(&name.as_str()) {
            bail!("unknown processor {name:?}; one of {}", PROCESSORS.join(", "));
        }
    }
    let (ctx, embedded) = broker::service_context(config)?;
    super::ensure_topics(&ctx, embedded.is_some()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for name in &selected {
        tasks.push(spawn_processor(name, &ctx, config, embedded.is_some(), stop_rx.clone())?);
    }
    info!(processors = ?selected, brokers = %ctx.brokers, "Serving. Stop with Ctrl-C.");
    super::shutdown_signal().await;
    info!("Stopping.");
    let _ = stop_tx.send(true);
    for task in tasks {
        task.await??;
    }
    drop(embedded);
    Ok(())
}

/// Starts one processor by name; it stops when `stop` turns true.
pub fn spawn_processor(
    name: &str,
    ctx: &BusContext,
    config: &Config,
    embedded: bool,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    if name == MetricsSink::NAME {
        let listener = std::net::TcpListener::bind(config.sinks.metrics_listen)
            .with_context(|| format!("binding the metrics endpoint {}", config.sinks.metrics_listen))?;
        info!(addr = %listener.local_addr()?, "Prometheus metrics at /metrics.");
        return spawn_metrics(ctx, config, listener, stop, MetricsView::new());
    }
    if name == GrafanaSink::NAME {
        let Some(grafana) = &config.sinks.grafana else {
            bail!("the grafana processor needs [sinks.grafana] url in chaoseater.toml");
        };
        let target = grafana.target()?;
        let store = open_store(config, embedded, name)?;
        let (sink, wake) = GrafanaSink::new(&target);
        tokio::spawn(chaoseater_sinks::grafana::sink::sender(store.clone(), target, wake, stop.clone()));
        return spawn(ctx, config, sink, store, stop);
    }
    if name == Materializer::NAME {
        return spawn_history(ctx, config, embedded, stop);
    }
    let store = open_store(config, embedded, name)?;
    match name {
        RunLedger::NAME => spawn(ctx, config, RunLedger, store, stop),
        Orchestrator::NAME => spawn(ctx, config, Orchestrator, store, stop),
        CircuitBreaker::NAME => spawn(ctx, config, CircuitBreaker { config: config.circuit.to_config() }, store, stop),
        RollbackProcessor::NAME => spawn(ctx, config, RollbackProcessor, store, stop),
        Dispatcher::NAME => {
            let tokens = AgentTokens::load(config.dispatcher.tokens_file.as_deref(), std::env::vars())
                .map_err(|e| anyhow::anyhow!("agent tokens: {e}"))?;
            spawn_dispatcher(ctx, config, store, stop, tokens)
        }
        other => bail!("unknown processor {other:?}"),
    }
}

/// Starts the metrics view (replaying the topics from the beginning) and serves it on `listener`.
pub fn spawn_metrics(
    ctx: &BusContext,
    config: &Config,
    listener: std::net::TcpListener,
    stop: watch::Receiver<bool>,
    view: MetricsView,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    // A view, rebuilt by replay: its store (offsets only) is thrown away at every start.
    let dir = config.state_dir.join("views").join(MetricsSink::NAME);
    let _ = std::fs::remove_dir_all(&dir);
    let store = StateStore::open(&dir)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut server_stop = stop.clone();
    let server_view = view.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = server_stop.wait_for(|s| *s).await;
        };
        if let Err(e) = metrics::serve(server_view, listener, shutdown).await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    spawn(ctx, config, MetricsSink { view }, store, stop)
}

/// Starts the history materializer on `[history] dir`. On the embedded broker (a new, empty log each
/// session) it keeps this session's offsets apart, so earlier sessions' history stays and this one's is
/// read from the start.
pub fn spawn_history(
    ctx: &BusContext,
    config: &Config,
    embedded: bool,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let dir = config.history_dir();
    let mut materializer = Materializer::open(ctx.clone(), &dir, config.history.options())
        .with_context(|| format!("opening the history in {}", dir.display()))?;
    if embedded {
        materializer = materializer.with_log(format!("embedded-{}", chaoseater_schemas::ids::TimestampMs::now().0));
    }
    info!(dir = %dir.display(), "History materializer writing Parquet.");
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        materializer.run(stop).await?;
        Ok(())
    }))
}

/// Opens a processor's state store.
pub fn open_store(config: &Config, embedded: bool, name: &str) -> Result<StateStore> {
    let dir = super::processor_state_dir(config, embedded, name);
    if embedded {
        // The embedded broker's log starts empty: offsets from an earlier session would point past its end.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(StateStore::open(&dir)?)
}

/// Starts the dispatcher with its workers and health monitor, calling agents with `tokens`.
pub fn spawn_dispatcher(
    ctx: &BusContext,
    config: &Config,
    store: StateStore,
    stop: watch::Receiver<bool>,
    tokens: AgentTokens,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let (dispatcher, queue) = Dispatcher::new();
    let producer = EventProducer::new(ctx)?;
    let unfinished = Dispatcher::unfinished(&store)?;
    let workers = Workers::new(producer.clone(), tokens);
    tokio::spawn(workers.run(unfinished, queue));
    let interval = Duration::from_secs_f64(config.dispatcher.health_interval_s);
    tokio::spawn(health::monitor(store.clone(), producer, interval, stop.clone()));
    spawn(ctx, config, dispatcher, store, stop)
}

fn spawn<P: Processor + Sync + 'static>(
    ctx: &BusContext,
    config: &Config,
    processor: P,
    store: StateStore,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let runner = ProcessorRunner::new(ctx.clone(), processor, store, config.processors.runner_options())?;
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        runner.run(stop).await?;
        Ok(())
    }))
}

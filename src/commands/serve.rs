//! `chaoseater serve`: processors as a long-lived service, until Ctrl-C or SIGTERM.
//!
//! Each processor runs under a supervisor: when it fails (its retries against a broker or store outage
//! ran out, or it panicked) the failure is logged at error, counted in `chaos_processor_restarts_total`,
//! shown at `/health` as degraded, and the processor is started again after a backoff, from its stored
//! state and offsets. One that fails [`MAX_FAILURES`] times in a row, each within [`HEALTHY_AFTER`] of
//! its start, stops `serve` with a non-zero exit, for the service manager to see.

use anyhow::{Context, Result, anyhow, bail};
use std::time::{Duration, Instant};

use chaoseater_processors::circuit::CircuitBreaker;
use chaoseater_processors::history::{self, Materializer};
use chaoseater_processors::ledger::RunLedger;
use chaoseater_processors::orchestrator::Orchestrator;
use chaoseater_processors::rollback::RollbackProcessor;
use chaoseater_producers::dispatcher::{AgentTokens, Dispatcher, Workers, health};
use chaoseater_schemas::bus::{BusContext, DeadLetterDuty, EventProducer, Processor, ProcessorRunner, StateStore};
use chaoseater_schemas::topics::Topic;
use chaoseater_sinks::grafana::sink::GrafanaSink;
use chaoseater_sinks::metrics::{self, MetricsSink, MetricsView, ServiceHealth};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::broker;
use crate::cli::ServeArgs;
use crate::config::Config;

/// Every processor `serve` knows, by name. A plain list: later issues append theirs. The dispatcher
/// brings its agent-calling workers and the health monitor along. The order also decides which of the
/// processors reading a topic copies its bad messages to the DLQ: the first.
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

/// Failures in a row, each soon after its start, that end `serve`.
pub const MAX_FAILURES: u32 = 5;
/// A processor that ran this long before failing starts a new count.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(300);
/// The first wait before a restart; it doubles up to [`MAX_RESTART_BACKOFF`].
const FIRST_RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// How long `serve` waits for its processors to stop before it leaves them.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The topics a processor reads, by name.
pub fn topics_of(name: &str) -> Vec<Topic> {
    match name {
        RunLedger::NAME => RunLedger.topics(),
        Orchestrator::NAME => Orchestrator.topics(),
        Dispatcher::NAME => Dispatcher::new().0.topics(),
        CircuitBreaker::NAME => vec![Topic::Health],
        RollbackProcessor::NAME => RollbackProcessor.topics(),
        Materializer::NAME => history::TOPICS.to_vec(),
        MetricsSink::NAME => MetricsSink::new(MetricsView::new()).topics(),
        GrafanaSink::NAME => vec![Topic::Results],
        _ => Vec::new(),
    }
}

/// Each selected processor's share of the DLQ duty (see [`DeadLetterDuty::share`]), in `selected` order.
pub fn dead_letter_duties(selected: &[String]) -> Vec<DeadLetterDuty> {
    let mut ordered: Vec<&str> = PROCESSORS.iter().copied().filter(|p| selected.iter().any(|s| s == p)).collect();
    ordered.extend(selected.iter().map(String::as_str).filter(|s| !PROCESSORS.contains(s)));
    let consumers: Vec<(&str, Vec<Topic>)> = ordered.iter().map(|name| (*name, topics_of(name))).collect();
    let shared = DeadLetterDuty::share(&consumers);
    selected
        .iter()
        .map(|name| ordered.iter().position(|o| o == name).map(|i| shared[i].clone()).unwrap_or_default())
        .collect()
}

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
    let health = ServiceHealth::new();
    let mut supervisors = tokio::task::JoinSet::new();
    for (name, duty) in selected.iter().zip(dead_letter_duties(&selected)) {
        let attempt = prepare(name, &ctx, config, embedded.is_some(), duty, &health)?;
        supervisors.spawn(supervise(name.clone(), attempt, stop_rx.clone(), health.clone(), FIRST_RESTART_BACKOFF));
    }
    info!(processors = ?selected, brokers = %ctx.brokers, "Serving. Stop with Ctrl-C.");
    let outcome = tokio::select! {
        () = super::shutdown_signal() => Ok(()),
        Some(joined) = supervisors.join_next() => match joined {
            Ok(Ok(())) => Err(anyhow!("a processor supervisor ended on its own")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow!("a processor supervisor panicked: {e}")),
        },
    };
    info!("Stopping.");
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(STOP_TIMEOUT, async {
        while let Some(joined) = supervisors.join_next().await {
            if let Ok(Err(e)) = joined {
                warn!(error = %e, "A processor failed while stopping.");
            }
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            timeout_s = STOP_TIMEOUT.as_secs(),
            "Processors did not stop in time; leaving them (their state is committed)."
        );
        supervisors.abort_all();
    }
    drop(embedded);
    outcome
}

/// Starts one try of a processor, to stop when its receiver turns true.
type Attempt = Box<dyn FnMut(watch::Receiver<bool>) -> Result<tokio::task::JoinHandle<Result<()>>> + Send>;

/// Runs tries of one processor until `stop`, restarting it after each failure (see the module doc).
async fn supervise(
    name: String,
    mut attempt: Attempt,
    mut stop: watch::Receiver<bool>,
    health: ServiceHealth,
    first_backoff: Duration,
) -> Result<()> {
    let mut failures = 0u32;
    let mut backoff = first_backoff;
    loop {
        // Each try has its own stop, so that what it started beside its runner (workers, a sender, a
        // server) stops when the runner fails, not only at shutdown.
        let (try_tx, try_rx) = watch::channel(false);
        let started = Instant::now();
        health.started(&name);
        let outcome = match attempt(try_rx) {
            Ok(mut task) => {
                let ended = tokio::select! {
                    joined = &mut task => Some(joined),
                    _ = stop.wait_for(|s| *s) => None,
                };
                match ended {
                    Some(joined) => joined,
                    None => {
                        let _ = try_tx.send(true);
                        task.await
                    }
                }
            }
            Err(e) => Ok(Err(e)),
        };
        let _ = try_tx.send(true);
        let error = match outcome {
            Ok(Ok(())) if *stop.borrow() => return Ok(()),
            Ok(Ok(())) => anyhow!("it stopped on its own"),
            Ok(Err(e)) => e,
            Err(join) => anyhow!("it panicked: {join}"),
        };
        if *stop.borrow() {
            return Err(error.context(format!("processor {name} failed while stopping")));
        }
        if started.elapsed() >= HEALTHY_AFTER {
            failures = 0;
            backoff = first_backoff;
        }
        failures += 1;
        health.failed(&name, &format!("{error:#}"));
        if failures >= MAX_FAILURES {
            error!(processor = %name, failures, error = %format!("{error:#}"), "Processor keeps failing; stopping the service.");
            return Err(error.context(format!("processor {name} failed {failures} times in a row")));
        }
        error!(processor = %name, failures, retry_in_s = backoff.as_secs(), error = %format!("{error:#}"), "Processor failed; restarting it.");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
        health.restarted(&name);
    }
}

/// What a processor needs across its tries (its store, opened once, its listener, its tokens), and
/// the function that starts one try.
fn prepare(
    name: &str,
    ctx: &BusContext,
    config: &Config,
    embedded: bool,
    duty: DeadLetterDuty,
    health: &ServiceHealth,
) -> Result<Attempt> {
    let (ctx, config) = (ctx.clone(), config.clone());
    if name == MetricsSink::NAME {
        let listener = std::net::TcpListener::bind(config.sinks.metrics_listen)
            .with_context(|| format!("binding the metrics endpoint {}", config.sinks.metrics_listen))?;
        info!(addr = %listener.local_addr()?, "Prometheus metrics at /metrics, service health at /health.");
        let health = health.clone();
        return Ok(Box::new(move |stop| {
            // A view rebuilt by replay each try, served from the same socket.
            spawn_metrics(&ctx, &config, listener.try_clone()?, stop, health.clone(), duty.clone())
        }));
    }
    if name == Materializer::NAME {
        // Named once: a restarted materializer keeps reading this session's embedded log into the same files.
        let log = embedded.then(|| format!("embedded-{}", chaoseater_schemas::ids::TimestampMs::now().0));
        return Ok(Box::new(move |stop| spawn_history(&ctx, &config, log.clone(), duty.clone(), stop)));
    }
    let store = open_store(&config, embedded, name)?;
    let name = name.to_owned();
    let tokens = if name == Dispatcher::NAME { Some(load_tokens(&config)?) } else { None };
    Ok(Box::new(move |stop| start(&name, &ctx, &config, store.clone(), tokens.clone(), duty.clone(), stop)))
}

/// Starts one processor by name on `store`; it stops when `stop` turns true.
fn start(
    name: &str,
    ctx: &BusContext,
    config: &Config,
    store: StateStore,
    tokens: Option<AgentTokens>,
    duty: DeadLetterDuty,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    match name {
        RunLedger::NAME => spawn(ctx, config, RunLedger, store, duty, stop),
        Orchestrator::NAME => spawn(ctx, config, Orchestrator, store, duty, stop),
        CircuitBreaker::NAME => {
            spawn(ctx, config, CircuitBreaker { config: config.circuit.to_config() }, store, duty, stop)
        }
        RollbackProcessor::NAME => spawn(ctx, config, RollbackProcessor, store, duty, stop),
        Dispatcher::NAME => spawn_dispatcher(ctx, config, store, stop, tokens.unwrap_or_default(), duty),
        GrafanaSink::NAME => {
            let Some(grafana) = &config.sinks.grafana else {
                bail!("the grafana processor needs [sinks.grafana] url in chaoseater.toml");
            };
            let target = grafana.target()?;
            let (sink, wake) = GrafanaSink::new(&target);
            tokio::spawn(chaoseater_sinks::grafana::sink::sender(store.clone(), target, wake, stop.clone()));
            spawn(ctx, config, sink, store, duty, stop)
        }
        other => bail!("unknown processor {other:?}"),
    }
}

/// Starts one processor by name, unsupervised (the demo runs them so); it stops when `stop` turns true.
pub fn spawn_processor(
    name: &str,
    ctx: &BusContext,
    config: &Config,
    embedded: bool,
    duty: DeadLetterDuty,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    if name == MetricsSink::NAME {
        bail!("start the metrics sink with spawn_metrics (it needs a listener)");
    }
    // The same preparation as a supervised processor's, started once.
    let mut attempt = prepare(name, ctx, config, embedded, duty, &ServiceHealth::new())?;
    attempt(stop)
}

/// The dispatcher's agent tokens, warning when one token stands for every region.
fn load_tokens(config: &Config) -> Result<AgentTokens> {
    let tokens = AgentTokens::load(config.dispatcher.tokens_file.as_deref(), std::env::vars())
        .map_err(|e| anyhow!("agent tokens: {e}"))?;
    if let Some(source) = tokens.shared_fallback() {
        warn!(
            source,
            "One agent token serves every region without its own: whoever holds it can act on all of them. \
             Prefer a token per region (CHAOSEATER_AGENT_TOKEN_<REGION> or tokens_file)."
        );
    }
    Ok(tokens)
}

/// Starts the metrics view (replaying the topics from the beginning) and serves it, with `health`, on
/// `listener`.
pub fn spawn_metrics(
    ctx: &BusContext,
    config: &Config,
    listener: std::net::TcpListener,
    stop: watch::Receiver<bool>,
    health: ServiceHealth,
    duty: DeadLetterDuty,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let view = MetricsView::new().with_deprecated_names(config.sinks.deprecated_metric_names);
    // A view, rebuilt by replay: its store (offsets only) is thrown away at every start.
    let dir = config.state_dir.join("views").join(MetricsSink::NAME);
    let _ = std::fs::remove_dir_all(&dir);
    let store = StateStore::open(&dir)?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let service = chaoseater_producers::server::router_service(metrics::router(view.clone(), health));
    let limits = chaoseater_producers::server::ServerLimits::default();
    tokio::spawn(chaoseater_producers::server::serve("metrics", listener, service, limits, stop.clone()));
    spawn(ctx, config, MetricsSink::new(view), store, duty, stop)
}

/// Starts the history materializer on `[history] dir`. On the embedded broker (a new, empty log each
/// session) `log` names this session's log, so earlier sessions' history stays and this one's is read
/// from the start.
pub fn spawn_history(
    ctx: &BusContext,
    config: &Config,
    log: Option<String>,
    duty: DeadLetterDuty,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let dir = config.history_dir();
    let mut materializer = Materializer::open(ctx.clone(), &dir, config.history.options())
        .with_context(|| format!("opening the history in {}", dir.display()))?
        .with_dead_letter_duty(duty);
    if let Some(log) = log {
        materializer = materializer.with_log(log);
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
    duty: DeadLetterDuty,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let (dispatcher, queue) = Dispatcher::new();
    let dispatcher = dispatcher.with_endpoints(config.dispatcher.endpoints.clone());
    let producer = EventProducer::new(ctx)?;
    let unfinished = Dispatcher::unfinished(&store)?;
    let workers = Workers::new(producer.clone(), tokens);
    tokio::spawn(workers.run(unfinished, queue));
    let interval = Duration::from_secs_f64(config.dispatcher.health_interval_s);
    tokio::spawn(health::monitor(store.clone(), producer, interval, stop.clone()));
    spawn(ctx, config, dispatcher, store, duty, stop)
}

fn spawn<P: Processor + Sync + 'static>(
    ctx: &BusContext,
    config: &Config,
    processor: P,
    store: StateStore,
    duty: DeadLetterDuty,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let options = chaoseater_schemas::bus::RunnerOptions { dead_letters: duty, ..config.processors.runner_options() };
    let runner = ProcessorRunner::new(ctx.clone(), processor, store, options)?;
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        runner.run(stop).await?;
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Tries that fail `failing` times, then run until stopped.
    fn flaky(failing: u32, tries: Arc<AtomicU32>) -> Attempt {
        Box::new(move |mut stop| {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            Ok(tokio::spawn(async move {
                if n < failing {
                    anyhow::bail!("store unavailable (try {n})");
                }
                let _ = stop.wait_for(|s| *s).await;
                Ok(())
            }))
        })
    }

    #[tokio::test]
    async fn a_failed_processor_is_restarted_counted_and_shown_degraded_until_it_runs() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (health, tries) = (ServiceHealth::new(), Arc::new(AtomicU32::new(0)));
        let attempt = flaky(2, tries.clone());
        let task =
            tokio::spawn(supervise("ledger".into(), attempt, stop_rx, health.clone(), Duration::from_millis(10)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while tries.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(tries.load(Ordering::SeqCst), 3, "two failures, then a try that runs");
        assert!(health.healthy(), "running again");
        assert!(
            health.render().contains("chaos_processor_restarts_total{processor=\"ledger\"} 2"),
            "{}",
            health.render()
        );
        let _ = stop_tx.send(true);
        task.await.expect("supervisor").expect("a clean stop");
    }

    #[tokio::test]
    async fn a_processor_that_keeps_failing_ends_the_service() {
        let (_stop_tx, stop_rx) = watch::channel(false);
        let health = ServiceHealth::new();
        let attempt = flaky(u32::MAX, Arc::new(AtomicU32::new(0)));
        let outcome =
            supervise("orchestrator".into(), attempt, stop_rx, health.clone(), Duration::from_millis(1)).await;
        let error = format!("{:#}", outcome.expect_err("gives up"));
        assert!(error.contains("orchestrator failed 5 times") && error.contains("store unavailable"), "{error}");
        assert!(!health.healthy());
        assert_eq!(health.report()["status"], "degraded");
    }
}

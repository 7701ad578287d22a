//! `chaoseater serve`: the components as a long-lived service, until Ctrl-C or SIGTERM.
//!
//! Each component runs under a supervisor: when it fails (its retries against a broker or store outage
//! ran out, or it panicked) the failure is logged at error, counted in `chaos_processor_restarts_total`,
//! shown at `/health` as degraded, and the component is started again after a backoff, from its stored
//! state and offsets. One that fails [`MAX_FAILURES`] times in a row, each within [`HEALTHY_AFTER`] of
//! its start, stops `serve` with a non-zero exit, for the service manager to see.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use chaoseater_processors::optimizer::auto::PlanSpace;
use chaoseater_schemas::bus::{BusContext, Component, DeadLetterDuty, Env, Prepared, RunnerOptions, Shutdown};
use chaoseater_schemas::topics::Topic;
use chaoseater_sinks::metrics::ServiceHealth;
use tracing::{error, info, warn};

use crate::broker;
use crate::cli::ServeArgs;
use crate::config::Config;

/// Failures in a row, each soon after its start, that end `serve`.
pub const MAX_FAILURES: u32 = 5;
/// A component that ran this long before failing starts a new count.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(300);
/// The first wait before a restart; it doubles up to [`MAX_RESTART_BACKOFF`].
const FIRST_RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);
/// How long `serve` waits for its components to stop before it leaves them.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Every component `serve` can run, from each role crate's list: processors, producers, sinks. The
/// order decides which of those reading a topic copies its bad messages to the DLQ: the first.
pub fn catalog(config: &Config, health: &ServiceHealth) -> Vec<Box<dyn Component>> {
    let space: std::sync::Arc<dyn PlanSpace> = std::sync::Arc::new(super::plan::AgentSpace);
    let clock = super::schedule::clock();
    let settings = chaoseater_processors::Settings {
        circuit: &config.circuit,
        history: &config.history,
        optimizer: &config.optimizer,
        state_dir: &config.state_dir,
        schedule_clock: &clock,
        plan_space: Some(&space),
    };
    let mut all = chaoseater_processors::components(settings);
    all.extend(chaoseater_producers::components(&config.dispatcher));
    all.extend(chaoseater_sinks::components(&config.sinks, health));
    all
}

/// The components of `catalog` named in `names` (all those enabled by default when `None`), in catalog
/// order, each with its share of the DLQ duty.
pub fn select(
    catalog: Vec<Box<dyn Component>>,
    names: Option<&[String]>,
) -> Result<Vec<(Box<dyn Component>, DeadLetterDuty)>> {
    let known: Vec<&str> = catalog.iter().map(|c| c.name()).collect();
    if let Some(names) = names {
        for name in names {
            if !known.contains(&name.as_str()) {
                bail!("unknown processor {name:?}; one of {}", known.join(", "));
            }
        }
    }
    let chosen: Vec<Box<dyn Component>> = catalog
        .into_iter()
        .filter(|c| match names {
            Some(names) => names.iter().any(|n| n == c.name()),
            None => c.enabled_by_default(),
        })
        .collect();
    let readers: Vec<(&str, Vec<Topic>)> = chosen.iter().map(|c| (c.name(), c.topics())).collect();
    let duties = DeadLetterDuty::share(&readers);
    Ok(chosen.into_iter().zip(duties).collect())
}

/// What `component` is given: the bus, its state directory, the runner options with its `duty`.
pub fn env(ctx: &BusContext, config: &Config, embedded: bool, name: &str, duty: DeadLetterDuty) -> Env {
    Env {
        bus: ctx.clone(),
        state_dir: super::processor_state_dir(config, embedded, name),
        embedded,
        runner: RunnerOptions { dead_letters: duty, ..config.processors.options() },
    }
}

pub async fn run(args: ServeArgs, config: &Config) -> Result<()> {
    let health = ServiceHealth::new();
    let chosen = select(catalog(config, &health), args.processors.as_deref())?;
    let (ctx, embedded) = broker::service_context(config)?;
    super::ensure_topics(&ctx, embedded.is_some()).await?;
    let shutdown = Shutdown::new();
    let mut supervisors = tokio::task::JoinSet::new();
    let mut names = Vec::new();
    for (component, duty) in chosen {
        let name = component.name();
        let prepared =
            component.prepare(env(&ctx, config, embedded.is_some(), name, duty)).map_err(|e| anyhow!("{name}: {e}"))?;
        supervisors.spawn(supervise(name, prepared, shutdown.clone(), health.clone(), FIRST_RESTART_BACKOFF));
        names.push(name);
    }
    info!(processors = ?names, brokers = %ctx.brokers, "Serving. Stop with Ctrl-C.");
    let outcome = tokio::select! {
        () = super::shutdown_signal() => Ok(()),
        Some(joined) = supervisors.join_next() => match joined {
            Ok(Ok(())) => Err(anyhow!("a processor supervisor ended on its own")),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow!("a processor supervisor panicked: {e}")),
        },
    };
    info!("Stopping.");
    shutdown.trigger();
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

/// Runs tries of one component until `stop`, restarting it after each failure (see the module doc).
async fn supervise(
    name: &'static str,
    mut prepared: Prepared,
    stop: Shutdown,
    health: ServiceHealth,
    first_backoff: Duration,
) -> Result<()> {
    let mut failures = 0u32;
    let mut backoff = first_backoff;
    loop {
        let started = Instant::now();
        health.started(name);
        // The handle stops what the try started beside its runner (workers, a sender, a server) when any
        // of them fails, not only at shutdown.
        let outcome = match prepared.start(stop.clone()) {
            Ok(handle) => handle.join().await,
            Err(e) => Err(e),
        };
        let error = match outcome {
            Ok(()) if stop.is_triggered() => return Ok(()),
            Ok(()) => anyhow!("it stopped on its own"),
            Err(e) => anyhow::Error::new(e),
        };
        if stop.is_triggered() {
            return Err(error.context(format!("processor {name} failed while stopping")));
        }
        if started.elapsed() >= HEALTHY_AFTER {
            failures = 0;
            backoff = first_backoff;
        }
        failures += 1;
        health.failed(name, &format!("{error:#}"));
        if failures >= MAX_FAILURES {
            error!(processor = name, failures, error = %format!("{error:#}"), "Processor keeps failing; stopping the service.");
            return Err(error.context(format!("processor {name} failed {failures} times in a row")));
        }
        error!(processor = name, failures, retry_in_s = backoff.as_secs(), error = %format!("{error:#}"), "Processor failed; restarting it.");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.wait() => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
        health.restarted(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Tries that fail `failing` times, then run until stopped.
    fn flaky(failing: u32, tries: Arc<AtomicU32>) -> Prepared {
        Prepared::new(move |stop| {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            let mut handle = chaoseater_schemas::bus::Handle::new("flaky", &stop);
            let stop = handle.shutdown();
            handle.spawn("runner", async move {
                if n < failing {
                    return Err(format!("store unavailable (try {n})"));
                }
                stop.wait().await;
                Ok(())
            });
            Ok(handle)
        })
    }

    #[tokio::test]
    async fn a_failed_processor_is_restarted_counted_and_shown_degraded_until_it_runs() {
        let stop = Shutdown::new();
        let (health, tries) = (ServiceHealth::new(), Arc::new(AtomicU32::new(0)));
        let attempt = flaky(2, tries.clone());
        let task = tokio::spawn(supervise("ledger", attempt, stop.clone(), health.clone(), Duration::from_millis(10)));
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
        stop.trigger();
        task.await.expect("supervisor").expect("a clean stop");
    }

    #[tokio::test]
    async fn a_processor_that_keeps_failing_ends_the_service() {
        let health = ServiceHealth::new();
        let attempt = flaky(u32::MAX, Arc::new(AtomicU32::new(0)));
        let outcome =
            supervise("orchestrator", attempt, Shutdown::new(), health.clone(), Duration::from_millis(1)).await;
        let error = format!("{:#}", outcome.expect_err("gives up"));
        assert!(error.contains("orchestrator failed 5 times") && error.contains("store unavailable"), "{error}");
        assert!(!health.healthy());
        assert_eq!(health.report()["status"], "degraded");
    }
}

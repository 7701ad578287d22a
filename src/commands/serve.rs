//! `chaoseater serve`: processors as a long-lived service, until Ctrl-C or SIGTERM.

use anyhow::{Result, bail};
use chaoseater_processors::ledger::RunLedger;
use chaoseater_schemas::bus::{BusContext, ProcessorRunner, RunnerOptions, StateStore};
use tokio::sync::watch;
use tracing::info;

use crate::broker;
use crate::cli::ServeArgs;
use crate::config::Config;

/// Every processor `serve` knows, by name. A plain list: later issues append theirs.
pub const PROCESSORS: &[&str] = &[RunLedger::NAME];

pub async fn run(args: ServeArgs, config: &Config) -> Result<()> {
    let selected = args.processors.unwrap_or_else(|| PROCESSORS.iter().map(|s| (*s).to_owned()).collect());
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
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let dir = super::processor_state_dir(config, embedded, name);
    if embedded {
        // The embedded broker's log starts empty: offsets from an earlier session would point past its end.
        let _ = std::fs::remove_dir_all(&dir);
    }
    let store = StateStore::open(&dir)?;
    let runner = match name {
        RunLedger::NAME => ProcessorRunner::new(ctx.clone(), RunLedger, store, RunnerOptions::default())?,
        other => bail!("unknown processor {other:?}"),
    };
    Ok(tokio::spawn(async move {
        let stop = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        runner.run(stop).await?;
        Ok(())
    }))
}

//! One module per subcommand; each builds its components from the configuration and runs them.

pub mod ab;
pub mod ab_report;
pub mod agent;
mod demo;
pub mod follow;
mod grafana;
pub mod history;
mod ledger;
pub mod optimizer;
pub mod plan;
mod rollback;
pub mod runs;
mod schedule;
mod schemas;
pub mod serve;
pub mod submit;
pub mod tail;
mod topics;

use std::path::PathBuf;

use anyhow::Result;
use chaoseater_schemas::bus::{BusContext, admin};
use chaoseater_schemas::topics::Topic;
use tracing::info;

use crate::cli::Command;
use crate::config::Config;

/// Runs one subcommand.
pub async fn run(command: Command, config: Config) -> Result<()> {
    match command {
        Command::Demo(args) => demo::run(args, &config).await,
        Command::Submit(args) => submit::run(args, &config).await,
        Command::Tail(args) => tail::run(args, &config).await,
        Command::Topics(cmd) => topics::run(cmd, &config).await,
        Command::Schemas(cmd) => schemas::run(cmd, &config),
        Command::Serve(args) => serve::run(args, &config).await,
        Command::Ledger(args) => ledger::run(args, &config),
        Command::Region(cmd) => runs::region(cmd, &config).await,
        Command::Run(args) => runs::run(args, &config).await,
        Command::Status(args) => runs::status(args, &config).await,
        Command::Abort(args) => runs::abort(args, &config).await,
        Command::Health(args) => runs::health(args, &config).await,
        Command::Rollback(cmd) => rollback::run(cmd, &config).await,
        Command::Schedule(cmd) => schedule::run(cmd, &config).await,
        Command::Query(args) => history::query(args, &config).await,
        Command::Trends(args) => history::trends(args, &config).await,
        Command::Compare(args) => history::compare(args, &config).await,
        Command::Ab(args) => ab::run(args, &config).await,
        Command::Optimizer(cmd) => optimizer::run(cmd, &config).await,
        Command::Plan(args) => plan::run(args, &config).await,
        Command::Summary(args) => history::summary(args, &config).await,
        Command::Export(args) => history::export(args, &config).await,
        Command::Sql(args) => history::sql(args, &config).await,
        Command::History(cmd) => history::maintain(cmd, &config).await,
        Command::Grafana(cmd) => grafana::run(cmd, &config).await,
        Command::Agent | Command::DemoTarget(_) => {
            anyhow::bail!("standalone commands run before the configuration loads")
        }
    }
}

/// Creates missing topics on a configured broker (Kafka and Tansu create none by themselves). The
/// embedded broker made its topics when it started.
pub async fn ensure_topics(ctx: &BusContext, embedded: bool) -> Result<()> {
    if embedded {
        return Ok(());
    }
    let outcomes = admin::ensure_topics(ctx, &Topic::ALL).await?;
    for (name, outcome) in outcomes {
        if outcome == admin::TopicOutcome::Created {
            info!(topic = %name, "Created topic.");
        }
    }
    Ok(())
}

/// Where a processor keeps its state. Stored offsets only mean something for the log they were read
/// from, so with the embedded (in-memory) broker each session starts from a fresh directory.
pub fn processor_state_dir(config: &Config, embedded: bool, name: &str) -> PathBuf {
    if embedded { config.state_dir.join("embedded").join(name) } else { config.state_dir.join("processors").join(name) }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

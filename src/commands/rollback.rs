//! `chaoseater rollback status|start|resume RUN_ID`: a run's rollbacks as the log tells them, and the
//! commands (RollbackRequested) the rollback processor acts on.

use anyhow::{Result, bail};
use chaoseater_schemas::bus::EventProducer;
use chaoseater_schemas::events::{Event, RollbackAction, RollbackRequested};
use chaoseater_schemas::ids::{RegionName, RunId, TimestampMs};

use super::follow::RollbackState;
use super::runs::{load_run, print_circuits};
use crate::cli::{RollbackArgs, RollbackCommand};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit, broker};

pub async fn run(command: RollbackCommand, config: &Config) -> Result<()> {
    match command {
        RollbackCommand::Status(args) => status(&RunId::new(args.run_id.as_str()), config).await,
        RollbackCommand::Start(args) => request(args, RollbackAction::Start, config).await,
        RollbackCommand::Resume(args) => request(args, RollbackAction::Resume, config).await,
    }
}

async fn status(run_id: &RunId, config: &Config) -> Result<()> {
    let (view, circuits) = load_run(config, run_id, false).await?;
    println!("run {run_id} \"{}\"", view.name);
    for region in &view.regions {
        let line = match &region.rollback {
            Some(rollback) => super::follow::rollback_line(rollback),
            None if region.result.is_some() => "no rollback (the fault ended on time)".to_owned(),
            None => "no rollback".to_owned(),
        };
        println!("  {:<12} {line}", region.name);
    }
    print_circuits(&circuits);
    Ok(())
}

async fn request(args: RollbackArgs, action: RollbackAction, config: &Config) -> Result<()> {
    let run_id = RunId::new(args.run_id.as_str());
    // Refuse what cannot act: an unknown run, a region outside it, a resume with nothing paused.
    let (view, _) = load_run(config, &run_id, false).await?;
    if let Some(region) = &args.region
        && !view.regions.iter().any(|r| r.name.as_str() == region)
    {
        bail!(Exit(EXIT_INVALID_INPUT, format!("run {run_id} has no region {region:?}")));
    }
    let chosen = |name: &str| args.region.as_deref().is_none_or(|r| r == name);
    match action {
        RollbackAction::Resume
            if !view
                .regions
                .iter()
                .filter(|r| chosen(r.name.as_str()))
                .any(|r| r.rollback.as_ref().is_some_and(|rb| matches!(rb.state, RollbackState::Paused { .. }))) =>
        {
            bail!(Exit(EXIT_INVALID_INPUT, format!("no paused rollback in run {run_id}")));
        }
        RollbackAction::Start if view.completed.is_some() => {
            bail!(Exit(EXIT_INVALID_INPUT, format!("run {run_id} is finished: its faults are already reverted")));
        }
        _ => {}
    }
    let ctx = broker::client_context(config)?;
    let at = TimestampMs::now();
    let event = Event::RollbackRequested(RollbackRequested {
        event_id: RollbackRequested::id_for(&run_id, action, at),
        occurred_at: at,
        run_id: run_id.clone(),
        region: args.region.as_deref().map(RegionName::new),
        action,
        requested_by: super::submit::requester(),
    });
    EventProducer::new(&ctx)?.publish(&event).await?;
    let verb = match action {
        RollbackAction::Start => "start",
        RollbackAction::Resume => "resume",
    };
    println!("rollback {verb} requested for run {run_id} (follow it with: chaoseater rollback status {run_id})");
    Ok(())
}

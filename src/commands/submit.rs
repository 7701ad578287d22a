//! `chaoseater submit FILE`: validate every experiment, then publish one RunRequested each.

use anyhow::Result;
use chaoseater_producers::gateway::{ExperimentPlan, RunOverrides, load_experiment_file};
use chaoseater_schemas::bus::EventProducer;
use chaoseater_schemas::events::Event;

use crate::cli::{OverrideArgs, SubmitArgs};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit, broker};

/// Who is asking, for the `requested_by` field.
pub fn requester() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// Reads and validates an experiment file: every experiment is checked before anything is published, so
/// one bad experiment publishes nothing.
pub fn load(file: &std::path::Path, args: &OverrideArgs) -> Result<ExperimentPlan> {
    let overrides = RunOverrides {
        regions: args.regions.clone(),
        mode: args.mode.clone(),
        max_concurrent: args.max_concurrent,
        fail_fast: args.fail_fast.then_some(true),
        blast_radius_percent: args.blast_radius_percent,
        min_score: args.min_score,
    };
    Ok(load_experiment_file(file, &overrides, &requester()).map_err(|e| Exit(EXIT_INVALID_INPUT, e.to_string()))?)
}

pub async fn run(args: SubmitArgs, config: &Config) -> Result<()> {
    let requests = load(&args.file, &args.overrides)?.requests;
    if args.dry_run {
        for request in requests {
            println!("{}", serde_json::to_string(&Event::RunRequested(request))?);
        }
        return Ok(());
    }
    let ctx = broker::client_context(config)?;
    super::ensure_topics(&ctx, config.brokers.is_none()).await?;
    let producer = EventProducer::new(&ctx)?;
    let events: Vec<Event> = requests.into_iter().map(Event::RunRequested).collect();
    producer.publish_all(&events).await?;
    for event in &events {
        if let Event::RunRequested(request) = event {
            println!("{}\t{}", request.run_id, request.experiment.name);
        }
    }
    Ok(())
}

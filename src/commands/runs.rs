//! `region`, `run`, `status`, `abort`, `health`: the commands around distributed runs.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use chaoseater_net::http::HttpClient;
use chaoseater_producers::dispatcher::health;
use chaoseater_producers::gateway::PrometheusBlock;
use chaoseater_schemas::bus::regions::{RegionEntry, Registry};
use chaoseater_schemas::bus::{EventConsumer, EventProducer};
use chaoseater_schemas::events::{
    AbortRequested, CircuitStateChanged, Event, RegionHealthSampled, RegionRegistered, RegionRemoved,
};
use chaoseater_schemas::ids::{RegionName, RunId, TimestampMs};
use chaoseater_schemas::topics::Topic;
use chaoseater_sinks::pushgateway::Pushgateway;

use super::follow::{self, RunView};
use crate::cli::{AbortArgs, HealthArgs, RegionCommand, RunArgs, RunIdArgs};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit, broker};

/// The Python tool's default gate.
pub const DEFAULT_MIN_SCORE: f64 = 70.0;

pub async fn region(command: RegionCommand, config: &Config) -> Result<()> {
    let ctx = broker::client_context(config)?;
    super::ensure_topics(&ctx, config.brokers.is_none()).await?;
    match command {
        RegionCommand::Add { name, endpoint, priority, meta } => {
            if let Err(e) =
                chaoseater_schemas::limits::check_id("region", &name, chaoseater_schemas::limits::MAX_REGION_LEN)
            {
                bail!(Exit(EXIT_INVALID_INPUT, e.to_string()));
            }
            if !endpoint.starts_with("http://") || endpoint.len() > chaoseater_producers::dispatcher::MAX_ENDPOINT_LEN {
                bail!(Exit(EXIT_INVALID_INPUT, format!("--endpoint {endpoint:?} must be an http:// URL")));
            }
            let mut metadata = BTreeMap::new();
            for pair in meta {
                let Some((k, v)) = pair.split_once('=') else {
                    bail!(Exit(EXIT_INVALID_INPUT, format!("--meta {pair:?} must be key=value")));
                };
                metadata.insert(k.to_owned(), v.to_owned());
            }
            let at = TimestampMs::now();
            let region = RegionName::new(name.as_str());
            let event = Event::RegionRegistered(RegionRegistered {
                event_id: RegionRegistered::id_for(&region, at),
                occurred_at: at,
                region,
                endpoint: endpoint.clone(),
                priority,
                metadata,
            });
            EventProducer::new(&ctx)?.publish(&event).await?;
            println!("registered {name} at {endpoint} (priority {priority})");
        }
        RegionCommand::Remove { name } => {
            let at = TimestampMs::now();
            let region = RegionName::new(name.as_str());
            let event = Event::RegionRemoved(RegionRemoved {
                event_id: RegionRemoved::id_for(&region, at),
                occurred_at: at,
                region,
            });
            EventProducer::new(&ctx)?.publish(&event).await?;
            println!("removed {name}");
        }
        RegionCommand::List => {
            let regions = registry(&ctx).await?;
            if regions.is_empty() {
                println!("no regions registered (chaoseater region add NAME --endpoint URL --priority N)");
            }
            println!("{:<16} {:>8}  endpoint", "region", "priority");
            for r in regions {
                println!("{:<16} {:>8}  {}", r.name.as_str(), r.priority, r.endpoint);
            }
        }
    }
    Ok(())
}

/// The registry as the regions topic tells it now, highest priority first.
pub(crate) async fn registry(ctx: &chaoseater_schemas::bus::BusContext) -> Result<Vec<RegionEntry>> {
    let topic = ctx.topics.name(Topic::Regions);
    let mut registry = Registry::default();
    for message in EventConsumer::read_to_end(ctx, "chaoseater-region-list", &[&topic]).await? {
        if let Some(Ok(event)) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) {
            registry.apply(&event);
        }
    }
    Ok(registry.by_priority())
}

pub async fn run(args: RunArgs, config: &Config) -> Result<()> {
    let plan = super::submit::load(&args.file, &args.overrides)?;
    let requests = plan.requests;
    let ctx = broker::client_context(config)?;
    super::ensure_topics(&ctx, config.brokers.is_none()).await?;
    let views: Vec<RunView> = requests
        .iter()
        .map(|r| RunView::new(r.run_id.clone(), &r.experiment.name, r.experiment.duration_ms, r.min_score))
        .collect();
    let events: Vec<Event> = requests.into_iter().map(Event::RunRequested).collect();
    EventProducer::new(&ctx)?.publish_all(&events).await?;
    for view in &views {
        eprintln!("submitted run {} \"{}\"", view.run_id, view.name);
    }
    let finished = follow::follow(&ctx, views, Duration::from_secs_f64(args.timeout)).await?;
    if let Some(block) = &plan.prometheus
        && let Err(e) = push(block, &finished).await
    {
        // The results are on the log either way: a Pushgateway outage must not turn the gate's verdict.
        eprintln!("pushgateway: FAILED: {e:#}");
    }
    gate(&finished, args.overrides.min_score)
}

/// Pushes each run's results to the file's Pushgateway (the Python tool's observer did after each run).
async fn push(block: &PrometheusBlock, runs: &[RunView]) -> Result<()> {
    let gateway = Pushgateway::new(&block.url(), &block.job_name);
    for view in runs {
        let events: Vec<Event> =
            view.regions.iter().filter_map(|r| r.result.clone()).map(Event::RegionResult).collect();
        if events.is_empty() {
            eprintln!("pushgateway: run {} has no region results to push", view.run_id);
            continue;
        }
        gateway.push(&view.name, &events).await?;
        eprintln!(
            "pushgateway: pushed {} region results of \"{}\" to {} (job {})",
            events.len(),
            view.name,
            block.url(),
            block.job_name
        );
    }
    Ok(())
}

/// Prints every report and applies the CI/CD gate: exit 1 unless every region passed.
pub fn gate(runs: &[RunView], min_score: Option<f64>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut failures = Vec::new();
    for view in runs {
        follow::print_report(view, &mut out)?;
        let threshold = min_score.or(view.min_score).unwrap_or(DEFAULT_MIN_SCORE);
        if !view.passes(threshold) {
            failures.push(format!("{} (\"{}\", threshold {threshold})", view.run_id, view.name));
        }
    }
    if failures.is_empty() {
        println!("gate: PASSED");
        Ok(())
    } else {
        bail!(Exit(1, format!("gate: FAILED: {}", failures.join(", "))))
    }
}

/// A run as the log tells it, with the latest circuit state of each of its regions. Prints each change
/// with `print_lines`. Fails with exit code 2 when the run is not in the log.
pub async fn load_run(
    config: &Config,
    run_id: &RunId,
    print_lines: bool,
) -> Result<(RunView, BTreeMap<String, CircuitStateChanged>)> {
    let ctx = broker::client_context(config)?;
    let topics: Vec<String> = [Topic::Commands, Topic::Dispatch, Topic::Results, Topic::Rollback]
        .iter()
        .map(|&t| ctx.topics.name(t))
        .collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut view = RunView::new(run_id.clone(), "?", 0, None);
    let mut circuits = BTreeMap::new();
    let mut seen = false;
    for message in EventConsumer::read_to_end(&ctx, "chaoseater-status", &refs).await? {
        let Some(Ok(event)) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) else { continue };
        if let Event::CircuitStateChanged(c) = &event {
            circuits.insert(c.region.to_string(), c.clone());
        }
        if event.run_id() == Some(run_id) {
            seen = true;
            if view.apply(&event)
                && print_lines
                && let Some(line) = follow::change_line(&event, &view)
            {
                println!("{} {line}", event.occurred_at().0);
            }
        }
    }
    if !seen {
        bail!(Exit(EXIT_INVALID_INPUT, format!("no run {run_id} in the log")));
    }
    circuits.retain(|region, _| view.regions.iter().any(|r| r.name.as_str() == region));
    Ok((view, circuits))
}

pub async fn status(args: RunIdArgs, config: &Config) -> Result<()> {
    let run_id = RunId::new(args.run_id.as_str());
    let (view, circuits) = load_run(config, &run_id, true).await?;
    println!();
    follow::print_report(&view, &mut std::io::stdout().lock())?;
    if view.completed.is_none() && view.rejected.is_none() {
        for r in &view.regions {
            let state = match (&r.dispatched_at, &r.result) {
                (_, Some(result)) => result.status.as_str().to_owned(),
                (Some(_), None) => "running".to_owned(),
                (None, None) => "waiting".to_owned(),
            };
            println!("  {:<12} {state}", r.name);
        }
    }
    print_circuits(&circuits);
    Ok(())
}

/// The circuit of each region, as last changed.
pub fn print_circuits(circuits: &BTreeMap<String, CircuitStateChanged>) {
    for (region, c) in circuits {
        println!("  {region:<12} circuit {} since {} ({})", c.to_state.as_str(), c.occurred_at.0, c.reason);
    }
}

pub async fn abort(args: AbortArgs, config: &Config) -> Result<()> {
    let ctx = broker::client_context(config)?;
    let at = TimestampMs::now();
    let run_id = RunId::new(args.run_id.as_str());
    let event = Event::AbortRequested(AbortRequested {
        event_id: AbortRequested::id_for(&run_id, at),
        occurred_at: at,
        run_id: run_id.clone(),
        reason: args.reason,
        requested_by: super::submit::requester(),
    });
    EventProducer::new(&ctx)?.publish(&event).await?;
    println!("abort requested for run {run_id}");
    Ok(())
}

pub async fn health(args: HealthArgs, config: &Config) -> Result<()> {
    let ctx = broker::client_context(config)?;
    let regions = registry(&ctx).await?;
    let mut latest: BTreeMap<String, RegionHealthSampled> = BTreeMap::new();
    if args.probe {
        let client = HttpClient::new();
        let samples = futures::future::join_all(regions.iter().map(|r| health::sample(&client, r))).await;
        let events: Vec<Event> = samples.iter().cloned().map(Event::RegionHealthSampled).collect();
        EventProducer::new(&ctx)?.publish_all(&events).await?;
        latest = samples.into_iter().map(|s| (s.region.to_string(), s)).collect();
    } else {
        let topic = ctx.topics.name(Topic::Health);
        for message in EventConsumer::read_to_end(&ctx, "chaoseater-health", &[&topic]).await? {
            if let Some(Ok(Event::RegionHealthSampled(s))) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) {
                latest.insert(s.region.to_string(), s);
            }
        }
    }
    println!("{:<16} {:<9} {:>10} {:>8}  {:<28} message", "region", "status", "latency", "http", "endpoint");
    for r in &regions {
        match latest.get(r.name.as_str()) {
            Some(s) => println!(
                "{:<16} {:<9} {:>10} {:>8}  {:<28} {}",
                r.name.as_str(),
                s.status.as_str(),
                s.latency_ms.map_or("-".to_owned(), |l| format!("{l:.1} ms")),
                s.http_status.map_or("-".to_owned(), |h| h.to_string()),
                r.endpoint,
                s.message.as_deref().unwrap_or("")
            ),
            None => {
                println!("{:<16} {:<9} {:>10} {:>8}  {:<28} no sample yet", r.name.as_str(), "-", "-", "-", r.endpoint)
            }
        }
    }
    Ok(())
}

//! `chaoseater schedule`: schedules as events on the compacted schedules topic. Every change publishes
//! the schedule's whole definition; the scheduler processor in `serve` fires the ticks.

use anyhow::{Result, bail};
use chaoseater_processors::scheduler::check;
use chaoseater_processors::scheduler::clock::ScheduleClock;
use chaoseater_processors::scheduler::cron::{Timing, show_utc};
use chaoseater_processors::scheduler::runs::{Outcome, parse_deadline};
use chaoseater_processors::scheduler::view::{ScheduleView, Schedules};
use chaoseater_schemas::bus::{BusContext, EventConsumer, EventProducer};
use chaoseater_schemas::events::{
    ConcurrencyPolicy, Event, ScheduleCreated, ScheduleRemoved, ScheduleSpec, ScheduleUpdated, ScheduledExperiment,
};
use chaoseater_schemas::ids::{ScheduleId, TimestampMs};
use chaoseater_schemas::topics::Topic;

use crate::cli::{ScheduleAddArgs, ScheduleCommand};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit, broker};

pub async fn run(command: ScheduleCommand, config: &Config) -> Result<()> {
    // Everything the command line can get wrong is refused before the broker is touched.
    let add = match &command {
        ScheduleCommand::Add(args) => Some(definition(args)?),
        _ => None,
    };
    let ctx = broker::client_context(config)?;
    super::ensure_topics(&ctx, config.brokers.is_none()).await?;
    let with_runs = matches!(command, ScheduleCommand::Status { .. });
    let schedules = read(&ctx, with_runs).await?;
    let now = clock().now()?;
    let by = super::submit::requester();
    match command {
        ScheduleCommand::Add(args) => {
            let (id, spec, timing) = add.expect("parsed above");
            let event = match schedules.get(&id) {
                Some(_) if !args.replace => bail!(Exit(
                    EXIT_INVALID_INPUT,
                    format!("schedule {id} exists: give --replace to change it, or another --id")
                )),
                Some(_) => Event::ScheduleUpdated(ScheduleUpdated {
                    event_id: ScheduleUpdated::id_for(&id, now),
                    occurred_at: now,
                    schedule_id: id.clone(),
                    spec: spec.clone(),
                    requested_by: by,
                }),
                None => Event::ScheduleCreated(ScheduleCreated {
                    event_id: ScheduleCreated::id_for(&id, now),
                    occurred_at: now,
                    schedule_id: id.clone(),
                    spec: spec.clone(),
                    requested_by: by,
                }),
            };
            publish(&ctx, event).await?;
            let runs = spec.experiments.len();
            println!(
                "scheduled {id}: \"{}\" in {}, {runs} run{} per tick, {}{}",
                spec.cron,
                spec.time_zone,
                if runs == 1 { "" } else { "s" },
                spec.concurrency.as_str(),
                if spec.suspended { ", paused" } else { "" }
            );
            println!("next tick {}", next_tick(&timing, &spec, now));
        }
        ScheduleCommand::List => {
            if schedules.all().next().is_none() {
                println!("no schedules (chaoseater schedule add FILE --cron \"0 3 * * *\")");
                return Ok(());
            }
            println!("{:<24} {:<16} {:<16} {:<8} {:>9}  next tick", "schedule", "cron", "zone", "policy", "deadline");
            for view in schedules.all() {
                let timing = timing(view)?;
                println!(
                    "{:<24} {:<16} {:<16} {:<8} {:>9}  {}",
                    view.id.as_str(),
                    view.spec.cron,
                    view.spec.time_zone,
                    view.spec.concurrency.as_str(),
                    format!("{}s", view.spec.starting_deadline_ms / 1000),
                    next_tick(&timing, &view.spec, now)
                );
            }
        }
        ScheduleCommand::Pause { id } => suspend(&ctx, &schedules, &id, true, now, by).await?,
        ScheduleCommand::Resume { id } => suspend(&ctx, &schedules, &id, false, now, by).await?,
        ScheduleCommand::Remove { id } => {
            let id = ScheduleId::new(id.as_str());
            if schedules.get(&id).is_none() {
                bail!(Exit(EXIT_INVALID_INPUT, format!("no schedule {id} (chaoseater schedule list)")));
            }
            publish(
                &ctx,
                Event::ScheduleRemoved(ScheduleRemoved {
                    event_id: ScheduleRemoved::id_for(&id, now),
                    occurred_at: now,
                    schedule_id: id.clone(),
                    requested_by: by,
                }),
            )
            .await?;
            println!("removed {id}: it fires no more ticks (runs in flight go on)");
        }
        ScheduleCommand::Status { id } => {
            let Some(view) = schedules.get(&ScheduleId::new(id.as_str())) else {
                bail!(Exit(EXIT_INVALID_INPUT, format!("no schedule {id} (chaoseater schedule list)")));
            };
            status(view, now)?;
        }
    }
    Ok(())
}

/// Where schedules take the time from: the system clock, or the file [`ScheduleClock::ENV`] names (for
/// tests, so that the commands' stamps and the scheduler's ticks read one controlled clock).
pub fn clock() -> ScheduleClock {
    ScheduleClock::from_var(std::env::var_os(ScheduleClock::ENV))
}

/// The schedule `add` publishes, checked as the scheduler will check it.
fn definition(args: &ScheduleAddArgs) -> Result<(ScheduleId, ScheduleSpec, Timing)> {
    let invalid = |message: String| Exit(EXIT_INVALID_INPUT, message);
    Timing::parse(&args.cron, &args.tz).map_err(|e| invalid(e.to_string()))?;
    let concurrency: ConcurrencyPolicy = args.concurrency.parse().map_err(invalid)?;
    let starting_deadline_ms = parse_deadline(&args.starting_deadline).map_err(invalid)?;
    let plan = super::submit::load(&args.file, &args.overrides)?;
    let experiments = plan
        .requests
        .into_iter()
        .map(|r| ScheduledExperiment {
            experiment: r.experiment,
            regions: r.regions,
            mode: r.mode,
            max_concurrent: r.max_concurrent,
            fail_fast: r.fail_fast,
            blast_radius_percent: r.blast_radius_percent,
            min_score: r.min_score,
        })
        .collect();
    let id = match &args.id {
        Some(id) => id.clone(),
        None => args.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    let id = ScheduleId::new(id.as_str());
    let spec = ScheduleSpec {
        cron: args.cron.clone(),
        time_zone: args.tz.clone(),
        experiments,
        concurrency,
        starting_deadline_ms,
        suspended: args.paused,
    };
    let timing = check(&id, &spec).map_err(|e| invalid(format!("{}: {e}", args.file.display())))?;
    Ok((id, spec, timing))
}

async fn publish(ctx: &BusContext, event: Event) -> Result<()> {
    EventProducer::new(ctx)?.publish(&event).await?;
    Ok(())
}

/// Pauses or resumes the schedule `id`.
async fn suspend(
    ctx: &BusContext,
    schedules: &Schedules,
    id: &str,
    suspended: bool,
    now: TimestampMs,
    by: String,
) -> Result<()> {
    let id = ScheduleId::new(id);
    let Some(view) = schedules.get(&id) else {
        bail!(Exit(EXIT_INVALID_INPUT, format!("no schedule {id} (chaoseater schedule list)")));
    };
    let word = if suspended { "paused" } else { "active" };
    if view.spec.suspended == suspended {
        println!("{id} is already {word}");
        return Ok(());
    }
    let spec = ScheduleSpec { suspended, ..view.spec.clone() };
    publish(
        ctx,
        Event::ScheduleUpdated(ScheduleUpdated {
            event_id: ScheduleUpdated::id_for(&id, now),
            occurred_at: now,
            schedule_id: id.clone(),
            spec: spec.clone(),
            requested_by: by,
        }),
    )
    .await?;
    println!("{id} is {word}; next tick {}", next_tick(&timing(view)?, &spec, now));
    Ok(())
}

/// The schedules as the topics tell them; with their runs when `with_runs` (reads the commands and
/// results topics too).
async fn read(ctx: &BusContext, with_runs: bool) -> Result<Schedules> {
    let mut roles = vec![Topic::Schedules];
    if with_runs {
        roles.extend([Topic::Commands, Topic::Results]);
    }
    let topics: Vec<String> = roles.iter().map(|&t| ctx.topics.name(t)).collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut messages = EventConsumer::read_to_end(ctx, "chaoseater-schedule", &refs).await?;
    // Definitions first (a run is a schedule's only once the schedule is known), then the requests,
    // then the results (a result is a run's only once its request is known); each topic in its order.
    messages.sort_by_key(|m| topics.iter().position(|t| **t == *m.topic));
    let mut schedules = Schedules::default();
    for message in messages {
        if let Some(Ok(event)) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) {
            schedules.apply(&event);
        }
    }
    Ok(schedules)
}

fn timing(view: &ScheduleView) -> Result<Timing> {
    Ok(Timing::parse(&view.spec.cron, &view.spec.time_zone)?)
}

fn next_tick(timing: &Timing, spec: &ScheduleSpec, now: TimestampMs) -> String {
    if spec.suspended {
        return "none: paused (chaoseater schedule resume ID)".to_owned();
    }
    match timing.next_after(now) {
        Some(at) => timing.show(at),
        None => "none: the expression matches no future time".to_owned(),
    }
}

fn status(view: &ScheduleView, now: TimestampMs) -> Result<()> {
    let timing = timing(view)?;
    let spec = &view.spec;
    println!("schedule     {}", view.id);
    println!("cron         \"{}\" in {}", spec.cron, spec.time_zone);
    println!("concurrency  {}", spec.concurrency.as_str());
    println!("deadline     {} s", spec.starting_deadline_ms / 1000);
    println!("state        {}", if spec.suspended { "paused" } else { "active" });
    println!("created      {} by {}", show_utc(view.created_at), view.requested_by);
    if view.updated_at != view.created_at {
        println!("changed      {}", show_utc(view.updated_at));
    }
    let names: Vec<&str> = spec.experiments.iter().map(|e| e.experiment.name.as_str()).collect();
    println!("experiments  {}", names.join(", "));
    println!("next tick    {}", next_tick(&timing, spec, now));
    let runs: Vec<_> = view.runs.recent().collect();
    if runs.is_empty() {
        println!("last runs    none yet");
    } else {
        println!("last runs (tick, run, state):");
        for run in runs {
            let state = match run.outcome {
                Outcome::Requested => "requested".to_owned(),
                Outcome::Running => "running".to_owned(),
                Outcome::Ended(status) => status.as_str().to_lowercase(),
                Outcome::Rejected => "rejected".to_owned(),
            };
            let ended = run.finished_at.map(|at| format!(" at {}", show_utc(at))).unwrap_or_default();
            println!("  {}  {}  {state}{ended}", timing.show(run.tick), run.run_id);
        }
    }
    for skip in &view.skips {
        let count = if skip.truncated { format!("at least {}", skip.count) } else { skip.count.to_string() };
        let why = match &skip.in_flight_run_id {
            Some(run) => format!("{} ({run})", skip.reason.as_str()),
            None => skip.reason.as_str().to_owned(),
        };
        println!(
            "skipped      {count} tick(s) {} .. {}: {why}",
            timing.show(skip.first_tick),
            timing.show(skip.last_tick)
        );
    }
    Ok(())
}

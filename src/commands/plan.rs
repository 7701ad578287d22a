//! `chaoseater plan [--budget N]` and `plan approve ID`: the optimizer proposes the next experiments, a
//! human approves them. Where experiments may run comes from the bus (the registry, each region's latest
//! circuit state) and from the agents (their caps, on `/health`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::Result;
use chaoseater_net::http::HttpClient;
use chaoseater_processors::optimizer::Model;
use chaoseater_processors::optimizer::auto::{PlanSpace, SpaceFuture};
use chaoseater_processors::optimizer::plan::{self, Caps, Plan, PlanRequest, RegionLimits};
use chaoseater_producers::dispatcher::health::HEALTH_TIMEOUT;
use chaoseater_schemas::bus::{BusContext, EventConsumer, EventProducer};
use chaoseater_schemas::events::{CircuitState, Event, ExperimentProposed};
use chaoseater_schemas::ids::TimestampMs;
use chaoseater_schemas::topics::Topic;

use super::optimizer::optimizer_err;
use crate::cli::{PlanApproveArgs, PlanArgs, PlanCommand};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit, broker};

pub async fn run(args: PlanArgs, config: &Config) -> Result<()> {
    match args.command {
        Some(PlanCommand::Approve(approve_args)) => approve(approve_args, config).await,
        None => propose(args, config).await,
    }
}

/// Where a plan may put experiments, and what was left out: registered regions whose latest circuit state
/// is not open, with the caps their agents report. A region whose agent does not answer is left out too
/// (its caps are unknown, and a run there would fail anyway).
pub async fn space(ctx: &BusContext) -> Result<(Vec<RegionLimits>, Vec<String>)> {
    let regions = super::runs::registry(ctx).await?;
    let topic = ctx.topics.name(Topic::Rollback);
    let mut circuits = BTreeMap::new();
    for message in EventConsumer::read_to_end(ctx, "chaoseater-plan-circuits", &[&topic]).await? {
        if let Some(Ok(Event::CircuitStateChanged(c))) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) {
            circuits.insert(c.region.to_string(), c.to_state);
        }
    }
    let client = HttpClient::new();
    let mut limits = Vec::new();
    let mut notes = Vec::new();
    for region in regions {
        let name = region.name.to_string();
        if circuits.get(&name) == Some(&CircuitState::Open) {
            notes.push(format!("{name}: circuit open, left out"));
            continue;
        }
        let url = format!("{}/health", region.endpoint.trim_end_matches('/'));
        let answer = client.json(hyper::Method::GET, &url, None, None, HEALTH_TIMEOUT).await;
        let caps = answer
            .ok()
            .and_then(|a| serde_json::from_slice::<serde_json::Value>(&a.body).ok())
            .and_then(|body| body.get("caps").cloned().and_then(|caps| serde_json::from_value::<Caps>(caps).ok()));
        match caps {
            Some(caps) => limits.push(RegionLimits { region: name, caps }),
            None => notes.push(format!("{name}: its agent did not report its caps at {url}, left out")),
        }
    }
    Ok((limits, notes))
}

/// The registry, the circuits and the agents' caps, for serve's auto-approve.
#[derive(Debug)]
pub struct AgentSpace;

impl PlanSpace for AgentSpace {
    fn space(&self, bus: &BusContext) -> SpaceFuture {
        let bus = bus.clone();
        Box::pin(async move { space(&bus).await.map_err(|e| format!("{e:#}")) })
    }
}

/// Proposals already approved (their runs requested), so a plan does not propose them again.
async fn approved(ctx: &BusContext) -> Result<BTreeSet<String>> {
    let topic = ctx.topics.name(Topic::Commands);
    let mut ids = BTreeSet::new();
    for message in EventConsumer::read_to_end(ctx, "chaoseater-plan-approved", &[&topic]).await? {
        if let Some(Ok(Event::RunRequested(r))) = message.payload.as_deref().map(|p| ctx.codec.decode(p))
            && let Some(id) = ExperimentProposed::proposal_of(&r.run_id)
        {
            ids.insert(id.to_owned());
        }
    }
    Ok(ids)
}

async fn propose(args: PlanArgs, config: &Config) -> Result<()> {
    let json = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => return Err(Exit(EXIT_INVALID_INPUT, format!("--format {other:?}: one of text, json")).into()),
    };
    let model = Model::load(&config.state_dir).map_err(optimizer_err)?;
    let ctx = broker::client_context(config).ok();
    let (regions, mut notes, skip) = match &ctx {
        Some(ctx) => {
            super::ensure_topics(ctx, config.brokers.is_none()).await?;
            let (regions, notes) = space(ctx).await?;
            (regions, notes, approved(ctx).await?)
        }
        None => (
            model.regions.iter().map(|r| RegionLimits { region: r.clone(), caps: Caps::default() }).collect(),
            vec!["no broker: the regions are the history's, their circuits and caps unknown; nothing published".into()],
            BTreeSet::new(),
        ),
    };
    let request = PlanRequest {
        budget: args.budget,
        regions,
        fault_types: args.fault_types,
        target_score: args.target_score,
        skip: skip.into_iter().collect(),
    };
    let mut plan = model.plan(&request).map_err(|e| {
        let mut e = optimizer_err(e);
        if !notes.is_empty() {
            e = e.context(notes.join("; "));
        }
        e
    })?;
    notes.append(&mut plan.notes);
    plan.notes = notes;
    let at = TimestampMs::now();
    let events: Vec<Event> = plan
        .proposals
        .iter()
        .map(|p| p.event(&model.model_id, at, "cli").map(Event::ExperimentProposed))
        .collect::<Result<_, _>>()
        .map_err(optimizer_err)?;
    {
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&plan)?)?;
        } else {
            write!(out, "{}", plan_text(&plan))?;
        }
    }
    if let Some(ctx) = &ctx {
        EventProducer::new(ctx)?.publish_all(&events).await?;
        eprintln!("published {} ExperimentProposed; approve one with `chaoseater plan approve ID`", events.len());
    }
    Ok(())
}

/// A plan as text: one block per proposal.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = format!(
        "{} proposal{} from model {} ({} candidates searched; target score {})\n",
        plan.proposals.len(),
        if plan.proposals.len() == 1 { "" } else { "s" },
        plan.model_id,
        plan.candidates,
        plan.target_score
    );
    for p in &plan.proposals {
        let params: Vec<String> = p.point.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!(
            "\n{}  {}  {} in {}, {} s: {}\n  predicted {:.1} [{:.1}, {:.1}], expected gain {:.2}\n  {}\n",
            p.proposal_id,
            p.reason.as_str(),
            p.point.fault_type,
            p.point.region,
            p.point.duration_s,
            params.join(" "),
            p.prediction.value,
            p.prediction.lower,
            p.prediction.upper,
            p.expected_gain,
            p.explanation
        ));
    }
    for note in &plan.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

async fn approve(args: PlanApproveArgs, config: &Config) -> Result<()> {
    let ctx = broker::client_context(config)?;
    let topic = ctx.topics.name(Topic::Results);
    let mut proposal: Option<ExperimentProposed> = None;
    for message in EventConsumer::read_to_end(&ctx, "chaoseater-plan-approve", &[&topic]).await? {
        if let Some(Ok(Event::ExperimentProposed(p))) = message.payload.as_deref().map(|p| ctx.codec.decode(p))
            && p.proposal_id == args.proposal_id
        {
            proposal = Some(p);
        }
    }
    let Some(proposal) = proposal else {
        return Err(Exit(
            EXIT_INVALID_INPUT,
            format!("no proposal {} in the log (run `chaoseater plan` to make some)", args.proposal_id),
        )
        .into());
    };
    let (regions, notes) = space(&ctx).await?;
    if !regions.iter().any(|r| r.region == proposal.region.as_str()) {
        let why = notes.iter().find(|n| n.starts_with(&format!("{}:", proposal.region))).cloned();
        return Err(Exit(
            1,
            format!("not approved: {}", why.unwrap_or_else(|| format!("region {} is not registered", proposal.region))),
        )
        .into());
    }
    let run = plan::approve(&proposal, &format!("{} (plan approve)", super::submit::requester()), TimestampMs::now());
    chaoseater_schemas::limits::check_run_request(&run).map_err(|e| Exit(EXIT_INVALID_INPUT, e.to_string()))?;
    let run_id = run.run_id.clone();
    EventProducer::new(&ctx)?.publish(&Event::RunRequested(run)).await?;
    println!(
        "approved {}: run {run_id} requested ({} in {}); follow it with `chaoseater status {run_id}`",
        proposal.proposal_id, proposal.experiment.fault_type, proposal.region
    );
    Ok(())
}

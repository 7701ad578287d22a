//! Serve's auto-approve (`[optimizer] auto_approve_per_day`, off by default: a human approves): after each
//! training the trainer plans, publishes each proposal with its RunRequested, and keeps within a budget of
//! runs per rolling 24 hours.
//!
//! The budget's ledger (`optimizer/auto_approved.json`) is written before anything is published: a crash
//! between the two loses that batch's runs rather than exceeding the budget, the safe side for a tool that
//! injects faults. Its ids are also the plan's `skip`, so a proposal is never approved twice.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use chaoseater_schemas::bus::BusContext;
use chaoseater_schemas::events::Event;
use chaoseater_schemas::ids::TimestampMs;

use super::plan::{self, PlanRequest, RegionLimits};
use super::{Model, OptimizerConfig, OptimizerError};

/// The ledger of auto-approvals, in the state directory.
pub const LEDGER_FILE: &str = "optimizer/auto_approved.json";
const DAY_MS: i64 = 86_400_000;
/// Approvals the ledger remembers (oldest dropped first): years of a daily budget, a few hundred KB.
const MAX_REMEMBERED: usize = 10_000;

/// Where experiments may run now, and what was left out (the binary asks the registry, the circuits and
/// the agents; this crate has no HTTP client).
pub type SpaceFuture = Pin<Box<dyn Future<Output = Result<(Vec<RegionLimits>, Vec<String>), String>> + Send>>;

/// The source of a plan's regions and caps.
pub trait PlanSpace: Send + Sync + std::fmt::Debug {
    fn space(&self, bus: &BusContext) -> SpaceFuture;
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Ledger {
    /// Proposal id and when it was approved (ms since the epoch).
    approved: Vec<(String, i64)>,
}

fn ledger_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEDGER_FILE)
}

fn load(state_dir: &Path) -> Result<Ledger, OptimizerError> {
    match std::fs::read(ledger_path(state_dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| OptimizerError::Io(format!("{LEDGER_FILE}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ledger::default()),
        Err(e) => Err(OptimizerError::Io(format!("{LEDGER_FILE}: {e}"))),
    }
}

fn save(state_dir: &Path, ledger: &Ledger) -> Result<(), OptimizerError> {
    let path = ledger_path(state_dir);
    let io = |e: std::io::Error| OptimizerError::Io(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(path.parent().unwrap_or(state_dir)).map_err(io)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(ledger).map_err(|e| OptimizerError::Io(e.to_string()))?).map_err(io)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// The events one auto-approval round publishes (each proposal, then its RunRequested), after recording
/// them in the ledger; empty when the day's budget is spent or there is nothing to propose.
pub fn approve_round(
    model: &Model,
    config: &OptimizerConfig,
    regions: Vec<RegionLimits>,
    state_dir: &Path,
    now: TimestampMs,
) -> Result<Vec<Event>, OptimizerError> {
    let mut ledger = load(state_dir)?;
    // The budget counts the last 24 hours; the skip list is every approval the ledger keeps (the newest
    // MAX_REMEMBERED), so a proposal approved yesterday is not approved again today.
    let today = ledger.approved.iter().filter(|(_, at)| now.0 - at < DAY_MS).count();
    let excess = ledger.approved.len().saturating_sub(MAX_REMEMBERED);
    ledger.approved.drain(..excess);
    let remaining = (config.auto_approve_per_day as usize).saturating_sub(today);
    if remaining == 0 || config.plan_budget == 0 {
        return Ok(Vec::new());
    }
    let request = PlanRequest {
        budget: remaining.min(config.plan_budget).min(plan::MAX_BUDGET),
        regions,
        fault_types: Vec::new(),
        target_score: config.target_score,
        skip: ledger.approved.iter().map(|(id, _)| id.clone()).collect(),
    };
    let plan = model.plan(&request)?;
    let mut events = Vec::with_capacity(plan.proposals.len() * 2);
    for p in &plan.proposals {
        let proposal = p.event(&model.model_id, now, "auto")?;
        let by = format!("optimizer auto-approve ({} a day)", config.auto_approve_per_day);
        events.push(Event::RunRequested(plan::approve(&proposal, &by, now)));
        events.push(Event::ExperimentProposed(proposal));
        ledger.approved.push((p.proposal_id.clone(), now.0));
    }
    // The proposal before its run on the bus.
    for pair in events.chunks_mut(2) {
        pair.swap(0, 1);
    }
    save(state_dir, &ledger)?;
    Ok(events)
}

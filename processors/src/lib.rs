//! ChaosEater's processors: components that consume events and keep durable state.
//!
//! - [`ledger`]: the run ledger, every event of every run in order, kept in its sled state store. It is
//!   the first processor on the bus and the reference for how the others hold state: everything it
//!   knows goes through the `StateView`, committed atomically with the offsets it consumed.
//!
//! - [`orchestrator`]: runs as sagas: RunRequested → region dispatches by mode → RunCompleted with the
//!   aggregate report.
//!
//! - [`circuit`]: a circuit breaker per region fed by health samples.
//!
//! - [`rollback`]: a rollback state machine per run and region (immediate, gradual, canary, blue-green,
//!   circuit breaker), steps gated on health samples.
//!
//! - [`history`]: the history materializer, results, health and rollback events as Parquet tables.
//!
//! - [`ab`]: A/B tests of resilience: the coordinator runs a test's samples interleaved through the
//!   orchestrator and concludes with AbTestConcluded; [`ab::judge`] says whether B holds up better than A,
//!   metric by metric (Mann-Whitney U, Hodges-Lehmann shift and interval, Kayenta's classification).
//!
//! - [`analytics`]: DataFusion over the history: query, trends, compare, summary, read-only SQL.
//!
//! - [`optimizer`]: forests trained on the history predict a fault's damage with conformal intervals,
//!   suggest the harshest parameters that meet a target, and analyze weak points; its trainer retrains
//!   in `serve`.
//!
//! - [`scheduler`]: schedules as events on the compacted schedules topic; one RunRequested per tick,
//!   its run id derived from the schedule and the tick, under the schedule's concurrency policy and
//!   starting deadline.
//!
//! [`components`] lists the processors `serve` and `demo` run. Processors never import producers or
//! sinks: they talk through topics.

pub mod ab;
pub mod analytics;
pub mod circuit;
pub mod history;
pub mod ledger;
pub mod optimizer;
pub mod orchestrator;
pub mod rollback;
pub mod scheduler;

use std::path::Path;

use chaoseater_schemas::bus::{Component, ProcessorComponent};

/// The sections of `chaoseater.toml` this crate's processors read.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pub circuit: &'a circuit::CircuitConfig,
    pub history: &'a history::HistoryConfig,
    pub optimizer: &'a optimizer::OptimizerConfig,
    /// The state directory (the history's default home).
    pub state_dir: &'a Path,
    /// Where the scheduler takes the schedules' time from.
    pub schedule_clock: &'a scheduler::clock::ScheduleClock,
    /// Where the optimizer's auto-approved runs may go (the binary asks the registry and the agents).
    pub plan_space: Option<&'a std::sync::Arc<dyn optimizer::auto::PlanSpace>>,
}

/// Every processor of this crate, in the order `serve` gives DLQ duty (the first reader of a topic
/// copies its bad messages). A new processor is a folder and one entry here.
pub fn components(settings: Settings<'_>) -> Vec<Box<dyn Component>> {
    let circuit = settings.circuit.clone();
    let clock = settings.schedule_clock.clone();
    vec![
        Box::new(ProcessorComponent::new(|| ledger::RunLedger)),
        Box::new(ProcessorComponent::new(|| orchestrator::Orchestrator)),
        Box::new(ProcessorComponent::new(|| ab::AbCoordinator)),
        Box::new(ProcessorComponent::new(move || circuit::CircuitBreaker { config: circuit.clone() })),
        Box::new(ProcessorComponent::new(|| rollback::RollbackProcessor)),
        Box::new(ProcessorComponent::new(move || scheduler::Scheduler::new(clock.clone()))),
        Box::new(history::HistoryComponent::new(settings.history, settings.state_dir)),
        Box::new(optimizer::Trainer::new(
            settings.optimizer,
            settings.history,
            settings.state_dir,
            settings.plan_space.cloned(),
        )),
    ]
}

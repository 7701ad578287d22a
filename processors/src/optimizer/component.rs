//! The trainer in `serve`: retrains the optimizer on a schedule and after enough new results, saves the
//! model where `chaoseater optimizer predict` finds it, and publishes ModelTrained; with
//! `auto_approve_per_day` set, then plans and approves runs within that budget (see [`auto`]).
//!
//! It reads the Parquet history (which the materializer writes), not a topic: the history already holds
//! the rows joined with their parameters and tags, and a training is a pure function of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chaoseater_schemas::bus::{Component, ComponentError, ConfigError, Env, EventProducer, Handle, Prepared};
use chaoseater_schemas::events::Event;
use chaoseater_schemas::ids::TimestampMs;
use chaoseater_schemas::topics::Topic;
use serde::Deserialize;

use super::auto::{self, PlanSpace};
use super::{ForestParams, Model, OptimizerError, Target, dataset};
use crate::analytics::{Analytics, render};
use crate::history::HistoryConfig;

/// When `serve` retrains (`[optimizer]`); what is absent keeps its default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Retrain at least this often (seconds), when there are new results.
    pub train_interval_s: f64,
    /// Retrain as soon as this many results arrived since the last training.
    pub retrain_after_results: u64,
    /// How often to count the history's results (seconds).
    pub check_interval_s: f64,
    /// Learn from the last N days (default: the whole history).
    pub days: Option<u32>,
    /// Metrics besides the resilience score to learn.
    pub metrics: Vec<String>,
    /// Runs the trainer may approve itself per rolling 24 hours, planning after each training
    /// (`chaoseater plan`'s proposals). 0, the default: a human approves with `chaoseater plan approve`.
    pub auto_approve_per_day: u32,
    /// Most proposals one auto-approval round makes.
    pub plan_budget: usize,
    /// The score a region should keep (a weak proposal says how far its lower bound falls below).
    pub target_score: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            train_interval_s: 3_600.0,
            retrain_after_results: 500,
            check_interval_s: 30.0,
            days: None,
            metrics: Vec::new(),
            auto_approve_per_day: 0,
            plan_budget: 5,
            target_score: 70.0,
        }
    }
}

impl OptimizerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.train_interval_s) || !positive(self.check_interval_s) {
            return Err(ConfigError(
                "optimizer.train_interval_s and optimizer.check_interval_s must be positive".into(),
            ));
        }
        if self.retrain_after_results == 0 || self.days == Some(0) {
            return Err(ConfigError("optimizer.retrain_after_results and optimizer.days must be at least 1".into()));
        }
        if !(0.0..=100.0).contains(&self.target_score) {
            return Err(ConfigError(format!("optimizer.target_score must be within 0-100, got {}", self.target_score)));
        }
        if !(1..=super::plan::MAX_BUDGET).contains(&self.plan_budget) {
            return Err(ConfigError(format!(
                "optimizer.plan_budget must be 1 to {}, got {}",
                super::plan::MAX_BUDGET,
                self.plan_budget
            )));
        }
        self.targets().map(drop)
    }

    /// The resilience score and the metrics asked.
    pub fn targets(&self) -> Result<Vec<Target>, ConfigError> {
        Target::with_score(&self.metrics).map_err(|e| ConfigError(format!("optimizer.metrics: {e}")))
    }
}

/// The trainer.
#[derive(Debug, Clone)]
pub struct Trainer {
    config: OptimizerConfig,
    history: PathBuf,
    state_dir: PathBuf,
    /// Where auto-approved runs may go; without it auto-approve is off.
    space: Option<Arc<dyn PlanSpace>>,
}

impl Trainer {
    pub const NAME: &'static str = "optimizer";

    pub fn new(
        config: &OptimizerConfig,
        history: &HistoryConfig,
        state_dir: &Path,
        space: Option<Arc<dyn PlanSpace>>,
    ) -> Self {
        Self { config: config.clone(), history: history.dir_in(state_dir), state_dir: state_dir.to_owned(), space }
    }
}

impl Component for Trainer {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        Vec::new()
    }

    fn prepare(&self, env: Env) -> Result<Prepared, ComponentError> {
        let targets = self.config.targets().map_err(|e| ComponentError::new("[optimizer]", e.0))?;
        let this = self.clone();
        Ok(Prepared::new(move |shutdown| {
            let mut handle = Handle::new(Self::NAME, &shutdown);
            let (this, targets, bus, stop) = (this.clone(), targets.clone(), env.bus.clone(), handle.shutdown());
            handle.spawn("trainer", async move {
                let producer = EventProducer::new(&bus).map_err(|e| ComponentError::new("the producer", e))?;
                // What the saved model was trained on: a restart does not retrain for nothing.
                let mut trained_rows = Model::load(&this.state_dir).ok().map(|m| (m.rows as u64, m.trained_at_ms));
                let check = Duration::from_secs_f64(this.config.check_interval_s);
                loop {
                    tokio::select! {
                        _ = stop.wait() => return Ok::<(), ComponentError>(()),
                        _ = tokio::time::sleep(check) => {}
                    }
                    let rows = match count_results(&this.history).await {
                        Ok(rows) => rows,
                        Err(e) => {
                            tracing::warn!(error = %e, "Optimizer: cannot count the history's results; trying again.");
                            continue;
                        }
                    };
                    let trigger = match trained_rows {
                        None => "new_results",
                        Some((before, _)) if rows >= before + this.config.retrain_after_results => "new_results",
                        Some((before, at))
                            if rows > before
                                && (TimestampMs::now().0 - at) as f64 >= this.config.train_interval_s * 1_000.0 =>
                        {
                            "schedule"
                        }
                        _ => continue,
                    };
                    match this.train(&targets).await {
                        Ok(model) => {
                            trained_rows = Some((rows, model.trained_at_ms));
                            let event = Event::ModelTrained(model.event(trigger));
                            // The model is saved already; the event is retried by the producer, and a
                            // failure ends this try (the supervisor restarts the component).
                            producer
                                .publish(&event)
                                .await
                                .map_err(|e| ComponentError::new("publishing ModelTrained", e))?;
                            tracing::info!(model = %model.model_id, rows = model.rows, trigger, "Optimizer trained.");
                            if this.config.auto_approve_per_day > 0
                                && let Some(space) = &this.space
                            {
                                this.auto_approve(&model, space.as_ref(), &bus, &producer).await?;
                            }
                        }
                        Err(OptimizerError::TooLittle(why)) => {
                            tracing::info!(%why, "Optimizer: too little history to train yet.");
                            trained_rows = Some((rows, TimestampMs::now().0));
                        }
                        Err(e) => return Err(ComponentError::new("training", e)),
                    }
                }
            });
            Ok(handle)
        }))
    }
}

impl Trainer {
    async fn train(&self, targets: &[Target]) -> Result<Model, OptimizerError> {
        let analytics = Analytics::open(&self.history).await?;
        let since =
            self.config.days.map(|d| crate::history::day(TimestampMs::now().0 - i64::from(d.max(1) - 1) * 86_400_000));
        let window = dataset::Window::newest(&analytics, since.as_deref()).await?;
        let samples = dataset::load(&analytics, &window).await?;
        let (targets, days, state_dir) = (targets.to_vec(), self.config.days, self.state_dir.clone());
        tokio::task::spawn_blocking(move || {
            let model = Model::train(&samples, &targets, days, &ForestParams::default(), &mut |_, _, _| {})?;
            model.save(&state_dir)?;
            Ok(model)
        })
        .await
        .map_err(|e| OptimizerError::Model(e.to_string()))?
    }
}

impl Trainer {
    /// Plans and approves within the day's budget. Where runs may go comes from the bus and the agents; a
    /// failure to learn it skips this round (the next training tries again).
    async fn auto_approve(
        &self,
        model: &Model,
        space: &dyn PlanSpace,
        bus: &chaoseater_schemas::bus::BusContext,
        producer: &EventProducer,
    ) -> Result<(), ComponentError> {
        let (regions, notes) = match space.space(bus).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "Optimizer: cannot learn where runs may go; no auto-approval this round.");
                return Ok(());
            }
        };
        let events = match auto::approve_round(model, &self.config, regions, &self.state_dir, TimestampMs::now()) {
            Ok(events) => events,
            Err(e) if e.is_user_error() => {
                tracing::info!(why = %e, ?notes, "Optimizer: nothing to auto-approve.");
                return Ok(());
            }
            Err(e) => return Err(ComponentError::new("auto-approve", e)),
        };
        if events.is_empty() {
            return Ok(());
        }
        producer.publish_all(&events).await.map_err(|e| ComponentError::new("publishing auto-approved runs", e))?;
        tracing::info!(
            runs = events.len() / 2,
            per_day = self.config.auto_approve_per_day,
            "Optimizer auto-approved runs."
        );
        Ok(())
    }
}

/// Results in the history so far.
async fn count_results(history: &Path) -> Result<u64, OptimizerError> {
    let analytics = Analytics::open(history).await?;
    let batches = analytics.sql("SELECT count(*) FROM experiments").await?;
    Ok(render::floats(&batches, 0).first().copied().flatten().unwrap_or(0.0) as u64)
}

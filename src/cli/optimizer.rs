//! The optimizer's subcommands and their flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum OptimizerCommand {
    /// Train on the history (a forest per fault type and one pooled), 5-fold cross-validated by run
    /// against the mean of the last 50; saves the model in the state directory and publishes ModelTrained
    /// when a broker is configured.
    Train(OptimizerTrainArgs),
    /// Predict a fault's score (or another metric) with its 90% interval, the model's cross-validated
    /// error, and the past runs near the point. Exit code 2 for an unknown fault type or parameter, an
    /// out-of-bounds value, or too little history.
    Predict(OptimizerPredictArgs),
    /// The harshest parameters within the catalogue's bounds whose predicted lower bound still meets
    /// the target score (in every region seen, unless --region). Exit code 1 when none does.
    Suggest(OptimizerSuggestArgs),
    /// Weak points (fault types, regions, layers scoring low or falling, with their significance),
    /// anomalies (robust z-scores naming run, region and metric) and recommendations, each with the SQL
    /// statement that reproduces its numbers. Needs no trained model.
    Analyze(OptimizerAnalyzeArgs),
}

#[derive(Debug, Args)]
pub struct OptimizerAnalyzeArgs {
    /// Analyze the last N days.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// text, json or markdown.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Show at most this many anomalies (the worst first); json has them all.
    #[arg(long, default_value_t = 10)]
    pub anomalies: usize,
    /// The history directory (default: `[history] dir`, else history/ in the state directory).
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OptimizerTrainArgs {
    /// Learn from the last N days (default: the whole history).
    #[arg(long)]
    pub days: Option<u32>,
    /// Also learn these metrics (repeatable): pipeline_downtime_s, recovery_time_s,
    /// accuracy_degradation, error_count, latency_p95_ms. The resilience score always.
    #[arg(long = "metric", value_name = "METRIC")]
    pub metrics: Vec<String>,
    /// text or json.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// The history directory (default: `[history] dir`, else history/ in the state directory).
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
}

/// Where a question's fault strikes.
#[derive(Debug, Clone, Args)]
pub struct OptimizerPointArgs {
    /// The fault type (see faults.md), e.g. data_corruption.
    pub fault_type: String,
    /// A fault parameter, NAME=VALUE (repeatable); the catalogue's default where not given.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The region (default: every region in the history, one answer each).
    #[arg(long)]
    pub region: Option<String>,
    /// The run's duration in seconds (default: the fault type's median in the history).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// A run tag, KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// text or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

#[derive(Debug, Args)]
pub struct OptimizerPredictArgs {
    #[command(flatten)]
    pub point: OptimizerPointArgs,
    /// The metric to predict (default: resilience_score).
    #[arg(long, default_value = "resilience_score")]
    pub metric: String,
}

#[derive(Debug, Args)]
pub struct OptimizerSuggestArgs {
    #[command(flatten)]
    pub point: OptimizerPointArgs,
    /// The score the fault must still leave, 0-100 (its predicted lower bound must meet it).
    #[arg(long)]
    pub target_score: f64,
}

/// `chaoseater plan`: propose the next experiments, or approve one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: Option<PlanCommand>,
    /// How many experiments to propose (1 to 100).
    #[arg(long, default_value_t = 5)]
    pub budget: usize,
    /// Only these fault types (repeatable; default: every one the model covers).
    #[arg(long = "fault-type", value_name = "FAULT_TYPE")]
    pub fault_types: Vec<String>,
    /// The score a region should keep: a weak proposal says how far its lower bound falls below.
    #[arg(long, default_value_t = 70.0)]
    pub target_score: f64,
    /// text or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Turn a proposal into a RunRequested (its experiment, in its region). Approving twice requests the
    /// same run, which runs once. Exit code 2 when the log has no such proposal, 1 when its region's
    /// circuit is open.
    Approve(PlanApproveArgs),
}

#[derive(Debug, Args)]
pub struct PlanApproveArgs {
    /// The proposal's id (prop-...), as `chaoseater plan` printed it.
    pub proposal_id: String,
}

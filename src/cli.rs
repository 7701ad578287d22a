//! The command line. Global flags work before or after the subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod optimizer;
mod schedule;
pub use optimizer::*;
pub use schedule::*;

/// Chaos engineering for ML pipelines: real faults, measured damage, event-sourced history.
#[derive(Debug, Parser)]
#[command(name = "chaoseater", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes; they override `chaoseater.toml` and `CHAOSEATER_*` variables.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Kafka bootstrap servers, host:port[,host:port]. Without it (or CHAOSEATER_BROKERS), `demo` and
    /// `serve` start an embedded broker and client commands use the one they started.
    #[arg(long, global = true, value_name = "HOST:PORT[,..]")]
    pub brokers: Option<String>,
    /// Directory for state stores, history, generated files and the embedded broker's address.
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Prefix of every topic name (default: chaoseater).
    #[arg(long, global = true, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Configuration file (default: ./chaoseater.toml when present).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the demo on the embedded broker: no setup needed.
    Demo(DemoArgs),
    /// Validate an experiment file and publish one RunRequested per experiment.
    Submit(SubmitArgs),
    /// Print events from topics as JSON lines, live.
    Tail(TailArgs),
    /// Create or list ChaosEater's topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Print, export or decode with the event schemas.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Run processors as a long-lived service (until Ctrl-C or SIGTERM).
    Serve(ServeArgs),
    /// Show the timeline of a run from a processor's state (stop `serve` first: its store is locked).
    Ledger(LedgerArgs),
    /// Register, remove or list regions (their agents), on the compacted regions topic.
    #[command(subcommand)]
    Region(RegionCommand),
    /// Submit experiments and follow every run to its aggregate report. Exit code 1 when a region
    /// failed or scored below --min-score (default: the file's, else 70): the CI/CD gate.
    Run(RunArgs),
    /// A run's state and report, from the event log.
    Status(RunIdArgs),
    /// Abort a run (regions in flight revert their faults, the rest are not dispatched) or an A/B test
    /// (its samples in flight are aborted, no more start).
    Abort(AbortArgs),
    /// Health of every registered region's agent.
    Health(HealthArgs),
    /// Experiments in the Parquet history, filtered and ordered.
    Query(QueryArgs),
    /// One experiment over the last N days: totals, daily series, slope of the score.
    Trends(TrendsArgs),
    /// Runs side by side, every metric (mean over each run's regions).
    Compare(CompareArgs),
    /// A/B tests of resilience: does configuration B hold up better than A under the same fault.
    /// `chaoseater ab FILE` runs the test in an experiment file's `ab:` section (needs `serve`) and
    /// prints its report; `ab judge` judges samples given on the command line.
    Ab(AbArgs),
    /// The resilience optimizer, trained on the history: `train` a model (cross-validated against the
    /// mean of the last 50 runs), `predict` a fault's damage with its interval, `suggest` the harshest
    /// parameters that still meet a target score.
    #[command(subcommand)]
    Optimizer(OptimizerCommand),
    /// Propose the next experiments where the model is least sure or the pipeline may be weakest, within
    /// the catalogue's bounds and the agents' caps, skipping regions whose circuit is open; each is
    /// published as ExperimentProposed. `plan approve ID` runs one. Needs a trained model.
    Plan(PlanArgs),
    /// Totals by layer, fault type, region and status.
    Summary(OutputArgs),
    /// Write a query's rows (the query filters, or --sql) as CSV with a header.
    Export(ExportArgs),
    /// Run one read-only SQL query over the history's tables (experiments, parameters, tags,
    /// rollback_events, health_samples). DDL, DML, COPY and paths are refused (exit code 2).
    Sql(SqlArgs),
    /// Maintain the history: prune old days, compact small files, generate a synthetic history.
    #[command(subcommand)]
    History(HistoryCommand),
    /// A run's rollbacks: their state, or start / resume one (the rollback processor carries them out).
    #[command(subcommand)]
    Rollback(RollbackCommand),
    /// Generate Grafana dashboards and alert rules from the metrics the exporter writes.
    #[command(subcommand)]
    Grafana(GrafanaCommand),
    /// Run experiments on a cron schedule: add, list, pause, resume, remove, status. Schedules are
    /// events on the compacted schedules topic; the scheduler processor in `serve` fires their ticks.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Run a region agent: fault-injecting proxy, host injectors, steady-state probes, HTTP API.
    /// Its configuration is the file given with --config (agent.toml; see examples/agent.toml).
    Agent,
    /// Serve the demo ML target: a small classifier over the v1/v2 model-serving protocols.
    DemoTarget(DemoTargetArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoTargetArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8501", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Defences: none, or a comma-separated list of validate, retry, fallback.
    #[arg(long, default_value = "none")]
    pub resilience: String,
    /// Model name in the protocol paths (/v1/models/NAME:predict).
    #[arg(long, default_value = "demo")]
    pub model_name: String,
    /// Version reported in every answer (model_version).
    #[arg(long, default_value = "1")]
    pub model_version: String,
    /// Gateway mode: forward predictions to this model server (http://host:port).
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// Write the labelled probe set to FILE and exit.
    #[arg(long, value_name = "FILE")]
    pub export_probe_set: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Example experiment file to submit (default: the built-in campaign).
    #[arg(long, value_name = "FILE")]
    pub experiments: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Experiment file (the Python tool's YAML: a top-level `experiments:` list).
    pub file: PathBuf,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Validate and print the commands as JSON without publishing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How runs are dispatched, overriding the experiment file.
#[derive(Debug, Clone, Args)]
pub struct OverrideArgs {
    /// Regions to run in (comma-separated); overrides the file.
    #[arg(long, value_delimiter = ',')]
    pub regions: Option<Vec<String>>,
    /// Dispatch mode: parallel, sequential or blast-radius.
    #[arg(long)]
    pub mode: Option<String>,
    /// Parallel mode: most regions in flight.
    #[arg(long)]
    pub max_concurrent: Option<i64>,
    /// Sequential mode: stop at the first failed region.
    #[arg(long)]
    pub fail_fast: bool,
    /// Blast-radius mode: percentage of regions touched.
    #[arg(long)]
    pub blast_radius_percent: Option<f64>,
    /// CI/CD gate: minimum resilience score of every region.
    #[arg(long)]
    pub min_score: Option<f64>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment file (the Python tool's YAML).
    pub file: PathBuf,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Give up following after this many seconds (the runs go on).
    #[arg(long, default_value_t = 3600.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct RunIdArgs {
    /// The run's id (printed by `submit` and `run`).
    pub run_id: String,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// The run's id.
    pub run_id: String,
    /// Why, for the record.
    #[arg(long, default_value = "aborted from the command line")]
    pub reason: String,
}

/// Where the history is and how answers are printed.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// The history directory (default: `[history] dir`, else history/ in the state directory).
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    /// table (aligned, rounded), csv or json.
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// The filters of `query` and `export`.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Experiment name.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub layer: Option<String>,
    #[arg(long)]
    pub fault_type: Option<String>,
    /// COMPLETED, FAILED or ABORTED.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub min_score: Option<f64>,
    #[arg(long)]
    pub max_score: Option<f64>,
    /// Only results scored with this version of the score formula (1 or 2; see the README).
    #[arg(long)]
    pub score_version: Option<i32>,
    /// key=value; repeat for several (all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// From this day (YYYY-MM-DD, or Nd for N days ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this day (YYYY-MM-DD, or Nd).
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
    /// newest, oldest, lowest (score) or highest (score).
    #[arg(long, default_value = "newest")]
    pub order: String,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct TrendsArgs {
    /// Experiment name.
    pub name: String,
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run ids.
    #[arg(required = true, num_args = 1..)]
    pub run_ids: Vec<String>,
    /// Rank the runs by this metric instead, best first (higher is better for resilience_score and
    /// completed, lower for the times, errors, latencies and accuracy lost); ties share a rank.
    #[arg(long, value_name = "METRIC")]
    pub rank: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Export the rows of this SQL query instead of the filters'.
    #[arg(long)]
    pub sql: Option<String>,
    /// The CSV file (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The history directory.
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// One SELECT query.
    pub query: String,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum HistoryCommand {
    /// Delete the days older than the given age in every table (e.g. 90d), and the rows of the results
    /// deleted that other tables filed under a later day.
    Prune {
        #[arg(long, value_name = "AGE")]
        older_than: String,
        #[arg(long, value_name = "DIR")]
        history: Option<PathBuf>,
    },
    /// Merge small files (segments under --rows rows) now.
    Compact {
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        #[arg(long, value_name = "DIR")]
        history: Option<PathBuf>,
    },
    /// Write a synthetic history (deterministic per seed) to try queries on, or to measure them.
    Generate {
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Spread over this many days up to today.
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_name = "DIR")]
        history: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RollbackCommand {
    /// Each region's rollback: strategy, trigger, steps applied, state; and the regions' circuits.
    Status(RunIdArgs),
    /// Roll back a fault still in place now, with the run's strategy.
    Start(RollbackArgs),
    /// Continue a paused rollback with its next step.
    Resume(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The run's id.
    pub run_id: String,
    /// Only this region (default: every region of the run).
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Sample every region's agent now (and publish the samples) instead of showing the latest ones.
    #[arg(long)]
    pub probe: bool,
}

#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Register a region's agent (or change it).
    Add {
        name: String,
        /// Base URL of the region's agent API.
        #[arg(long)]
        endpoint: String,
        /// Higher runs first in sequential mode; lower is touched first by blast radius.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Metadata, key=value (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Remove a region.
    Remove { name: String },
    /// List the registered regions.
    List,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Topics, by role (results) or full name (chaoseater.results). Default: every ChaosEater topic.
    pub topics: Vec<String>,
    /// Start at the oldest message instead of only new ones.
    #[arg(long)]
    pub from_beginning: bool,
    /// Exit after printing this many messages.
    #[arg(long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Exit when no message arrived for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every ChaosEater topic that is missing (idempotent).
    Create,
    /// List the broker's topics with their partition counts.
    List,
}

#[derive(Debug, Subcommand)]
pub enum SchemasCommand {
    /// List every event schema with its topic and fingerprint.
    List,
    /// Print one schema (by record name, e.g. RunRequested).
    Show { name: String },
    /// Write every .avsc file into a directory.
    Export { dir: PathBuf },
    /// Decode one encoded event (a file, or standard input) and print it as JSON.
    Decode { file: Option<PathBuf> },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Processors to run (comma-separated). Default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub processors: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// The run id.
    pub run_id: Option<String>,
    /// Print events applied per partition instead of a run's timeline.
    #[arg(long)]
    pub counts: bool,
}

#[derive(Debug, Subcommand)]
pub enum GrafanaCommand {
    /// Write the dashboard JSON (the model `POST /api/dashboards/db` takes as `dashboard`).
    Dashboard {
        /// Output file (default: standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[arg(long, default_value = "ChaosEater")]
        title: String,
        /// Uid of the Prometheus data source in Grafana.
        #[arg(long, default_value = "prometheus")]
        datasource: String,
        /// Extra panels (Grafana panel JSON), repeatable.
        #[arg(long = "panel-file", value_name = "FILE")]
        panel_files: Vec<PathBuf>,
    },
    /// Push the dashboard and the alert rules to Grafana now ([sinks.grafana] in chaoseater.toml).
    Push,
    /// Write Grafana's file provisioning: the Prometheus data source, a dashboard provider, the alert
    /// rules (OUT_DIR/provisioning/) and the dashboard (OUT_DIR/dashboards/), as docker-compose.yml mounts.
    Provision {
        /// Directory for provisioning/ and dashboards/ (the repository's copy is deploy/grafana).
        #[arg(long, value_name = "DIR", default_value = "deploy/grafana")]
        out_dir: PathBuf,
        /// Prometheus as Grafana reaches it.
        #[arg(long, value_name = "URL", default_value = "http://prometheus:9090")]
        prometheus_url: String,
        /// Where the dashboard files are mounted inside Grafana.
        #[arg(long, value_name = "PATH", default_value = "/etc/grafana/dashboards")]
        dashboards_path: String,
    },
    /// Write the alert rules: Grafana provisioning payloads and a Prometheus rules file.
    Rules {
        /// Directory for grafana-alert-rules.json, grafana-rule-group.json and chaoseater-rules.yml.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out_dir: PathBuf,
        /// Alert when a region scores below this.
        #[arg(long, default_value_t = 70.0)]
        min_score: f64,
        /// Alert when failed probe requests exceed this many per second over 5 minutes.
        #[arg(long, default_value_t = 0.1)]
        max_error_rate: f64,
        /// Grafana folder uid for the rules.
        #[arg(long, default_value = "chaoseater")]
        folder: String,
        #[arg(long, default_value = "prometheus")]
        datasource: String,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AbArgs {
    #[command(subcommand)]
    pub command: Option<AbCommand>,
    #[command(flatten)]
    pub test: AbTestArgs,
}

#[derive(Debug, Args)]
pub struct AbTestArgs {
    /// An experiment file with an `ab:` section (see examples/ab-test.yaml): submits the test, shows
    /// the samples done per variant, prints the report. Exit code 0 when the test concluded (and its
    /// verdict meets --expect), 1 when it did not, 2 for a file that cannot run (nothing is published).
    #[arg(required = true, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Samples per variant (at least 3); overrides the file's `ab.samples`.
    #[arg(long)]
    pub samples: Option<i64>,
    /// CI gate: `b-better` (B judged better, significantly) or `not-worse` (no metric of B judged worse).
    #[arg(long, value_name = "b-better|not-worse")]
    pub expect: Option<String>,
    /// The report: text, json (the report's field names) or markdown.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Validate and print the request as JSON; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Give up following after this many seconds (the test goes on).
    #[arg(long, default_value_t = 3600.0)]
    pub timeout: f64,
}

#[derive(Debug, Subcommand)]
pub enum AbCommand {
    /// Judge two sets of samples of one metric, as an A/B test judges each metric: the two-sided
    /// Mann-Whitney U test of B against A, the Hodges-Lehmann shift with its confidence interval, effect
    /// sizes and Kayenta's label. Exit code 2 for samples it cannot judge.
    Judge(AbJudgeArgs),
    /// A past test's report, rebuilt from the Parquet history (its ab_tests and ab_samples tables).
    Report(AbReportArgs),
}

#[derive(Debug, Args)]
pub struct AbReportArgs {
    /// The test's id (printed by `chaoseater ab FILE`).
    pub test_id: String,
    /// text, json (the report's field names) or markdown.
    #[arg(long, default_value = "text")]
    pub format: String,
    /// The history directory (default: `[history] dir`, else history/ in the state directory).
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AbJudgeArgs {
    /// Variant A's values, comma-separated (at least one).
    #[arg(long, value_name = "V,V,..", allow_hyphen_values = true)]
    pub a: String,
    /// Variant B's values, comma-separated (at least one).
    #[arg(long, value_name = "V,V,..", allow_hyphen_values = true)]
    pub b: String,
    /// The metric's name, in the report.
    #[arg(long, default_value = "value")]
    pub metric: String,
    /// Lower values are better (recovery time, errors); by default higher ones are (a score).
    #[arg(long)]
    pub lower_is_better: bool,
    /// Confidence level of the interval, in (0, 1).
    #[arg(long, default_value_t = 0.98)]
    pub confidence: f64,
    /// Kayenta's tolerance: the interval must clear this share of the shift's size to label a difference.
    #[arg(long, default_value_t = 0.25)]
    pub tolerance: f64,
    /// text or json (the report's field names).
    #[arg(long, default_value = "text")]
    pub format: String,
}

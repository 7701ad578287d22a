//! Every metric name ChaosEater exports. The exporter writes these; the dashboard, the alert rules and
//! the demo read them, so a name is spelled once.

pub const RESILIENCE_SCORE: &str = "chaos_resilience_score";
/// The score formula's version of the latest [`RESILIENCE_SCORE`] (same labels).
pub const SCORE_VERSION: &str = "chaos_resilience_score_version";
pub const RECOVERY_TIME_SECONDS: &str = "chaos_recovery_time_seconds";
/// Failed probe requests in the latest experiment (gauge).
pub const PROBE_ERRORS: &str = "chaos_probe_errors";
/// The Python tool's name for [`PROBE_ERRORS`], **deprecated**: a gauge named like a histogram's
/// `_count` series, which `promtool check metrics` refuses. Exported only with
/// `[sinks] deprecated_metric_names = true`, for dashboards written for the Python tool.
pub const ERROR_COUNT_DEPRECATED: &str = "chaos_error_count";
pub const ACCURACY_DEGRADATION_PERCENT: &str = "chaos_accuracy_degradation_percent";
pub const EXPERIMENT_DURATION_SECONDS: &str = "chaos_experiment_duration_seconds";
pub const EXPERIMENT_STATUS: &str = "chaos_experiment_status";
pub const EXPERIMENTS_TOTAL: &str = "chaos_experiments_total";
pub const ERRORS_TOTAL: &str = "chaos_errors_total";
pub const RUNS_TOTAL: &str = "chaos_runs_total";
pub const ROLLBACK_STARTED_TOTAL: &str = "chaos_rollback_started_total";
pub const ROLLBACK_STEPS_TOTAL: &str = "chaos_rollback_steps_total";
pub const ROLLBACK_PERCENTAGE: &str = "chaos_rollback_percentage";
pub const ROLLBACK_COMPLETED_TOTAL: &str = "chaos_rollback_completed_total";
pub const ROLLBACK_FAILED_TOTAL: &str = "chaos_rollback_failed_total";
pub const ROLLBACK_PAUSED_TOTAL: &str = "chaos_rollback_paused_total";
pub const CIRCUIT_STATE: &str = "chaos_circuit_state";
/// Restarts of a processor after it failed (counter; `serve`'s supervisor).
pub const PROCESSOR_RESTARTS_TOTAL: &str = "chaos_processor_restarts_total";
/// 1 while a processor runs, 0 while it waits to be restarted (gauge).
pub const PROCESSOR_UP: &str = "chaos_processor_up";
/// 1 for the latest verdict of each A/B test, 0 for the other verdicts (a state set; gauge).
pub const AB_VERDICT: &str = "chaos_ab_verdict";
/// Kayenta's group score of each A/B test: the percentage of metrics B does not do worse on (gauge).
pub const AB_SCORE: &str = "chaos_ab_score";

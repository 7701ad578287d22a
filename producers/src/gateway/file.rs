//! The experiment file: the Python tool's YAML (a top-level `experiments:` list of {name, layer,
//! fault_type, duration, parameters, rollback_strategy}) plus our extensions (regions, mode, rollback
//! configuration, tags, CI gate), at file level as defaults and per experiment as overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use chaoseater_schemas::events::RunRequested;
use chaoseater_schemas::experiment::{ExperimentSpec, Layer, RollbackConfig, RollbackStrategy, RunMode};
use chaoseater_schemas::faults;
use chaoseater_schemas::ids::{RegionName, RunId, TimestampMs};
use chaoseater_schemas::limits;
use serde::Deserialize;

/// Longest fault a file may ask for: longer chaos belongs in a schedule of shorter runs.
const MAX_DURATION_MS: i64 = 24 * 3600 * 1000;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    /// The experiments, each run as its own run (or, with `ab:`, the faults an A/B test's variants face).
    experiments: Vec<ExperimentEntry>,
    /// An A/B test of two variants under these experiments (`chaoseater ab FILE`).
    ab: Option<super::ab::AbSection>,
    /// The Python tool's block: `chaoseater run` pushes each run's results to this Pushgateway.
    prometheus: Option<PrometheusBlock>,
    /// Default run settings for every experiment of the file.
    #[serde(flatten)]
    run: RunSettings,
}

/// The Python tool's `prometheus:` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusBlock {
    /// Base URL of a Prometheus Pushgateway (`http://host:9091`).
    pub pushgateway_url: String,
    /// The `job` label of the pushed groups (the Python tool's default).
    #[serde(default = "default_job_name")]
    pub job_name: String,
}

fn default_job_name() -> String {
    "chaos_engineering".to_owned()
}

impl PrometheusBlock {
    /// The Pushgateway's base URL. Like the Python tool's client (`push_to_gateway`), a bare
    /// `host:port` means `http://host:port`.
    pub fn url(&self) -> String {
        let url = self.pushgateway_url.trim();
        if url.contains("://") { url.to_owned() } else { format!("http://{url}") }
    }

    /// Checked before anything runs: a push that cannot work is an error now, not after the runs.
    pub fn check(&self) -> Result<(), String> {
        let (given, url) = (&self.pushgateway_url, self.url());
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("pushgateway_url {given:?}: only http:// is supported"))?;
        if rest.trim_end_matches('/').is_empty() || url.parse::<hyper::Uri>().is_err() {
            return Err(format!("pushgateway_url {given:?} is not a URL with a host"));
        }
        if self.job_name.trim().is_empty() {
            return Err("job_name must not be empty".to_owned());
        }
        Ok(())
    }
}

/// A checked experiment file: one `RunRequested` per experiment, and where `run` pushes the results.
#[derive(Debug, Clone)]
pub struct ExperimentPlan {
    pub requests: Vec<RunRequested>,
    pub prometheus: Option<PrometheusBlock>,
}

/// Run settings: file-level defaults, overridable per experiment and by command-line flags.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunSettings {
    /// Regions to run in; empty or absent means every registered region.
    regions: Option<Vec<String>>,
    /// parallel | sequential | blast-radius (or blast_radius).
    mode: Option<String>,
    /// Parallel mode: most regions in flight.
    max_concurrent: Option<i64>,
    /// Sequential mode: stop at the first failure.
    fail_fast: Option<bool>,
    /// Blast-radius mode: percentage of regions touched.
    blast_radius_percent: Option<f64>,
    /// CI/CD gate: minimum score of every region.
    min_score: Option<f64>,
}

/// One experiment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentEntry {
    name: Option<String>,
    /// Free text, kept by the Python tool's files; not used.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    layer: Option<String>,
    fault_type: Option<String>,
    /// Seconds (a number) or a string with a unit: 500ms, 2s, 1.5m, 1h.
    duration: Option<serde_yaml::Value>,
    #[serde(default)]
    parameters: Option<serde_yaml::Value>,
    /// The Python tool's field: `auto` (the default strategy) or a strategy name.
    rollback_strategy: Option<String>,
    rollback: Option<RollbackEntry>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(flatten)]
    run: RunSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackEntry {
    strategy: Option<String>,
    timeout_seconds: Option<i64>,
    health_check_interval: Option<f64>,
    failure_threshold: Option<f64>,
    canary_percentage: Option<f64>,
    gradual_steps: Option<i64>,
    auto_pause_on_error: Option<bool>,
}

/// Command-line overrides of run settings (they win over the file).
#[derive(Debug, Default, Clone)]
pub struct RunOverrides {
    pub regions: Option<Vec<String>>,
    pub mode: Option<String>,
    pub max_concurrent: Option<i64>,
    pub fail_fast: Option<bool>,
    pub blast_radius_percent: Option<f64>,
    pub min_score: Option<f64>,
}

/// An experiment file that cannot be run, naming the file, the experiment and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct GatewayError {
    pub file: String,
    /// 1-based position and name of the experiment, when the error is inside one.
    pub experiment: Option<(usize, String)>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some((index, name)) = &self.experiment {
            write!(f, ": experiment {index} ({})", limits::shown(name))?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads and validates an experiment file: one `RunRequested` per experiment and its `prometheus:`
/// block, or the first error.
pub fn load_experiment_file(
    path: &Path,
    overrides: &RunOverrides,
    requested_by: &str,
) -> Result<ExperimentPlan, GatewayError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| GatewayError {
        file: file.clone(),
        experiment: None,
        field: None,
        message: format!("cannot read: {e}"),
    })?;
    let parsed = parse_file(&file, &text, overrides, requested_by, TimestampMs::now())?;
    refuse_ab(&file, &parsed)?;
    Ok(ExperimentPlan { requests: parsed.requests, prometheus: parsed.prometheus })
}

/// What [`parse_file`] read.
pub(super) struct ParsedFile {
    pub ab: Option<super::ab::AbSection>,
    pub requests: Vec<RunRequested>,
    pub prometheus: Option<PrometheusBlock>,
}

fn refuse_ab(file: &str, parsed: &ParsedFile) -> Result<(), GatewayError> {
    if parsed.ab.is_some() {
        return Err(GatewayError {
            file: file.to_owned(),
            experiment: None,
            field: Some("ab".into()),
            message: "this file describes an A/B test: run it with `chaoseater ab FILE`".into(),
        });
    }
    Ok(())
}

/// Parses and validates experiment YAML (`file` names it in errors). A file with an `ab:` section is
/// an A/B test: it is refused here, with the command that runs it.
pub fn parse_experiments(
    file: &str,
    text: &str,
    overrides: &RunOverrides,
    requested_by: &str,
    now: TimestampMs,
) -> Result<Vec<RunRequested>, GatewayError> {
    let parsed = parse_file(file, text, overrides, requested_by, now)?;
    refuse_ab(file, &parsed)?;
    Ok(parsed.requests)
}

/// The file's A/B section and `prometheus:` block, if any, and one validated `RunRequested` per experiment.
pub(super) fn parse_file(
    file: &str,
    text: &str,
    overrides: &RunOverrides,
    requested_by: &str,
    now: TimestampMs,
) -> Result<ParsedFile, GatewayError> {
    let whole = |field: Option<&str>, message: String| GatewayError {
        file: file.to_owned(),
        experiment: None,
        field: field.map(str::to_owned),
        message,
    };
    let parsed: ExperimentFile =
        serde_yaml::from_str(text).map_err(|e| whole(None, format!("not a valid experiment file: {e}")))?;
    if parsed.experiments.is_empty() {
        return Err(whole(Some("experiments"), "the list is empty: nothing to run".into()));
    }
    if let Some(block) = &parsed.prometheus {
        block.check().map_err(|m| whole(Some("prometheus"), m))?;
    }
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(parsed.experiments.len());
    for (index, entry) in parsed.experiments.into_iter().enumerate() {
        let label = entry.name.clone().unwrap_or_else(|| "<unnamed>".into());
        let at = |field: &str, message: String| GatewayError {
            file: file.to_owned(),
            experiment: Some((index + 1, label.clone())),
            field: Some(field.to_owned()),
            message,
        };
        let request = build(&entry, &parsed.run, overrides, requested_by, now, &at)?;
        if !names.insert(request.experiment.name.clone()) {
            return Err(at("name", "another experiment in this file has the same name".into()));
        }
        out.push(request);
    }
    Ok(ParsedFile { ab: parsed.ab, requests: out, prometheus: parsed.prometheus })
}

fn build(
    entry: &ExperimentEntry,
    file_run: &RunSettings,
    overrides: &RunOverrides,
    requested_by: &str,
    now: TimestampMs,
    at: &dyn Fn(&str, String) -> GatewayError,
) -> Result<RunRequested, GatewayError> {
    let name = match entry.name.as_deref().map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(at("name", "missing: every experiment needs a name".into())),
    };
    let layer_text =
        entry.layer.as_deref().ok_or_else(|| at("layer", "missing: one of data, model, infrastructure".into()))?;
    let layer = Layer::parse(layer_text)
        .ok_or_else(|| at("layer", format!("unknown layer {layer_text:?}; one of data, model, infrastructure")))?;
    let fault_type = entry.fault_type.as_deref().ok_or_else(|| {
        at("fault_type", format!("missing; for layer {layer}: {}", faults::fault_types(layer).join(", ")))
    })?;
    limits::check_id("fault_type", fault_type, limits::MAX_FAULT_TYPE_LEN).map_err(|e| at(&e.field, e.message))?;
    let params = match &entry.parameters {
        None | Some(serde_yaml::Value::Null) => serde_json::Map::new(),
        Some(value) => match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Err(at("parameters", "must be a mapping of parameter names to values".into()));
            }
        },
    };
    let parameters = faults::validate(layer, fault_type, &params).map_err(|e| {
        at(
            &format!("parameters.{}", e.field)
                .replace("parameters.fault_type", "fault_type")
                .replace("parameters.layer", "layer"),
            e.message,
        )
    })?;
    let duration_ms = parse_duration(entry.duration.as_ref()).map_err(|m| at("duration", m))?;
    let rollback = rollback_config(entry).map_err(|(field, m)| at(&field, m))?;

    // Precedence: command line, then the experiment, then the file.
    let run = &entry.run;
    let regions: Vec<String> = pick(&overrides.regions, &run.regions, &file_run.regions).unwrap_or_default();
    let mut region_names = Vec::with_capacity(regions.len());
    for region in regions {
        let region = region.trim().to_owned();
        if region.is_empty() || region.contains(char::is_whitespace) {
            return Err(at("regions", format!("invalid region name {region:?}")));
        }
        if region_names.iter().any(|r: &RegionName| r.as_str() == region) {
            return Err(at("regions", format!("region {region:?} is listed twice")));
        }
        region_names.push(RegionName::new(region));
    }
    let mode_text = pick(&overrides.mode, &run.mode, &file_run.mode).unwrap_or_else(|| "parallel".into());
    let mode = match mode_text.as_str() {
        "parallel" => RunMode::Parallel,
        "sequential" => RunMode::Sequential,
        "blast-radius" | "blast_radius" => RunMode::BlastRadius,
        other => {
            return Err(at("mode", format!("unknown mode {other:?}; one of parallel, sequential, blast-radius")));
        }
    };
    let max_concurrent = pick(&overrides.max_concurrent, &run.max_concurrent, &file_run.max_concurrent).unwrap_or(3);
    if !(1..=10_000).contains(&max_concurrent) {
        return Err(at("max_concurrent", format!("must be in [1, 10000], got {max_concurrent}")));
    }
    let fail_fast = pick(&overrides.fail_fast, &run.fail_fast, &file_run.fail_fast).unwrap_or(false);
    let blast = pick(&overrides.blast_radius_percent, &run.blast_radius_percent, &file_run.blast_radius_percent)
        .unwrap_or(100.0);
    if !(blast > 0.0 && blast <= 100.0) {
        return Err(at("blast_radius_percent", format!("must be in (0, 100], got {blast}")));
    }
    let min_score = pick(&overrides.min_score, &run.min_score, &file_run.min_score);
    if let Some(score) = min_score
        && !(0.0..=100.0).contains(&score)
    {
        return Err(at("min_score", format!("must be in [0, 100], got {score}")));
    }

    let run_id = RunId::random();
    let request = RunRequested {
        event_id: RunRequested::id_for(&run_id),
        occurred_at: now,
        run_id,
        experiment: ExperimentSpec {
            name,
            layer,
            fault_type: fault_type.to_owned(),
            parameters,
            duration_ms,
            rollback,
            tags: entry.tags.clone(),
        },
        regions: region_names,
        mode,
        max_concurrent: max_concurrent as i32,
        fail_fast,
        blast_radius_percent: blast,
        min_score,
        requested_by: requested_by.to_owned(),
    };
    // The platform's own bounds (lengths, alphabets, finite numbers), as the orchestrator checks them.
    limits::check_run_request(&request).map_err(|e| at(&e.field, e.message))?;
    Ok(request)
}

/// The first value set: command line, then experiment, then file.
fn pick<T: Clone>(flag: &Option<T>, experiment: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.clone().or_else(|| experiment.clone()).or_else(|| file.clone())
}

/// Seconds as a number, or a string with a unit (ms, s, m, h).
fn parse_duration(value: Option<&serde_yaml::Value>) -> Result<i64, String> {
    let value = value.ok_or("missing: how long the fault lasts, in seconds (e.g. 30) or with a unit (e.g. 1500ms)")?;
    let seconds = match value {
        serde_yaml::Value::Number(n) => n.as_f64().ok_or("not a number")?,
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
                (n, 0.001)
            } else if let Some(n) = s.strip_suffix('s') {
                (n, 1.0)
            } else if let Some(n) = s.strip_suffix('m') {
                (n, 60.0)
            } else if let Some(n) = s.strip_suffix('h') {
                (n, 3600.0)
            } else {
                (s, 1.0)
            };
            number
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("cannot read {s:?} as a duration (e.g. 30, 1500ms, 2m)"))?
                * scale
        }
        other => {
            return Err(format!("must be seconds or a string with a unit, got {other:?}"));
        }
    };
    let ms = (seconds * 1000.0).round();
    if !ms.is_finite() || ms < 1.0 {
        return Err(format!("must be positive, got {seconds} s"));
    }
    if ms > MAX_DURATION_MS as f64 {
        return Err(format!("must be at most 24 h, got {seconds} s"));
    }
    Ok(ms as i64)
}

fn rollback_config(entry: &ExperimentEntry) -> Result<RollbackConfig, (String, String)> {
    let mut config = RollbackConfig::default();
    let strategy_text = entry
        .rollback
        .as_ref()
        .and_then(|r| r.strategy.clone())
        .map(|s| ("rollback.strategy", s))
        .or_else(|| entry.rollback_strategy.clone().map(|s| ("rollback_strategy", s)));
    if let Some((field, text)) = strategy_text
        && text != "auto"
    {
        config.strategy = RollbackStrategy::parse(&text).ok_or_else(|| {
            (
                field.to_owned(),
                format!(
                    "unknown strategy {text:?}; one of auto, immediate, gradual, canary, blue_green, circuit_breaker"
                ),
            )
        })?;
    }
    let Some(r) = &entry.rollback else {
        return Ok(config);
    };
    let err = |field: &str, message: String| (format!("rollback.{field}"), message);
    if let Some(v) = r.timeout_seconds {
        if !(1..=86_400).contains(&v) {
            return Err(err("timeout_seconds", format!("must be in [1, 86400], got {v}")));
        }
        config.timeout_seconds = v;
    }
    if let Some(v) = r.health_check_interval {
        if !(v > 0.0 && v <= 3600.0) {
            return Err(err("health_check_interval", format!("must be in (0, 3600] seconds, got {v}")));
        }
        config.health_check_interval_s = v;
    }
    if let Some(v) = r.failure_threshold {
        if !(0.0..=1.0).contains(&v) {
            return Err(err("failure_threshold", format!("must be in [0, 1], got {v}")));
        }
        config.failure_threshold = v;
    }
    if let Some(v) = r.canary_percentage {
        if !(v > 0.0 && v < 100.0) {
            return Err(err("canary_percentage", format!("must be in (0, 100), got {v}")));
        }
        config.canary_percentage = v;
    }
    if let Some(v) = r.gradual_steps {
        if !(1..=100).contains(&v) {
            return Err(err("gradual_steps", format!("must be in [1, 100], got {v}")));
        }
        config.gradual_steps = v as i32;
    }
    if let Some(v) = r.auto_pause_on_error {
        config.auto_pause_on_error = v;
    }
    Ok(config)
}

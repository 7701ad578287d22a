//! The one layered configuration: built-in defaults, then `chaoseater.toml` (or `--config FILE`), then
//! `CHAOSEATER_*` environment variables, then command-line flags. Loaded once in `main` and passed down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The configuration file, every field optional: what is absent keeps its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Kafka bootstrap servers, `host:port[,host:port]`. Absent: the embedded broker.
    pub brokers: Option<String>,
    /// Directory for sled stores, history, generated files and the embedded broker's address.
    pub state_dir: Option<PathBuf>,
    /// Prefix of every topic name (`{prefix}.commands`, ...).
    pub topic_prefix: Option<String>,
    /// librdkafka properties passed through unchanged: TLS (`security.protocol`, `ssl.ca.location`),
    /// SASL (`sasl.mechanisms`, `sasl.username`, `sasl.password`), timeouts.
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// Event schemas.
    #[serde(default)]
    pub schemas: SchemasConfig,
    /// The dispatcher and its health monitor.
    #[serde(default)]
    pub dispatcher: DispatcherConfig,
    /// The sinks.
    #[serde(default)]
    pub sinks: SinksConfig,
    /// The circuit breakers.
    #[serde(default)]
    pub circuit: CircuitFileConfig,
    /// The Parquet history.
    #[serde(default)]
    pub history: HistoryConfig,
    /// The event processors.
    #[serde(default)]
    pub processors: ProcessorsConfig,
    /// Limits of one SQL query (memory, time): `sql` and every history question.
    #[serde(default)]
    pub sql: chaoseater_processors::analytics::QueryLimits,
}

/// How the processors consume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorsConfig {
    /// Hours an applied event's id is remembered to drop a duplicate of it, in event time behind the
    /// newest event applied.
    #[serde(default = "default_dedupe_window_h")]
    pub dedupe_window_h: f64,
}

fn default_dedupe_window_h() -> f64 {
    chaoseater_schemas::bus::DEFAULT_DEDUPE_WINDOW.as_secs_f64() / 3600.0
}

impl Default for ProcessorsConfig {
    fn default() -> Self {
        Self { dedupe_window_h: default_dedupe_window_h() }
    }
}

impl ProcessorsConfig {
    pub fn runner_options(&self) -> chaoseater_schemas::bus::RunnerOptions {
        chaoseater_schemas::bus::RunnerOptions {
            dedupe_window: std::time::Duration::from_secs_f64(self.dedupe_window_h * 3600.0),
            ..Default::default()
        }
    }
}

/// Where the Parquet history lives and when the materializer writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// The history directory (default: `history/` in the state directory).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Write a segment when this many rows are buffered.
    #[serde(default = "default_history_rows")]
    pub max_rows: usize,
    /// Write a segment when the oldest buffered event is this old (seconds).
    #[serde(default = "default_history_age")]
    pub max_age_s: f64,
}

fn default_history_rows() -> usize {
    100_000
}

fn default_history_age() -> f64 {
    10.0
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self { dir: None, max_rows: default_history_rows(), max_age_s: default_history_age() }
    }
}

impl HistoryConfig {
    pub fn options(&self) -> chaoseater_processors::history::HistoryOptions {
        chaoseater_processors::history::HistoryOptions {
            max_rows: self.max_rows,
            max_age: std::time::Duration::from_secs_f64(self.max_age_s),
            ..Default::default()
        }
    }
}

/// When a region's circuit opens and closes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitFileConfig {
    /// Consecutive failed (or degraded) health samples that open the circuit.
    #[serde(default = "default_failures_to_open")]
    pub failures_to_open: u32,
    /// Share of non-healthy samples over the last `window` above which it opens.
    #[serde(default = "default_error_rate")]
    pub error_rate_threshold: f64,
    #[serde(default = "default_window")]
    pub window: usize,
    /// Seconds open before probes are let through (half-open).
    #[serde(default = "default_cooldown")]
    pub cooldown_s: f64,
    /// Consecutive healthy samples in half-open that close it.
    #[serde(default = "default_probes_to_close")]
    pub probes_to_close: u32,
}

impl Default for CircuitFileConfig {
    fn default() -> Self {
        Self {
            failures_to_open: default_failures_to_open(),
            error_rate_threshold: default_error_rate(),
            window: default_window(),
            cooldown_s: default_cooldown(),
            probes_to_close: default_probes_to_close(),
        }
    }
}

impl CircuitFileConfig {
    pub fn to_config(&self) -> chaoseater_processors::circuit::CircuitConfig {
        chaoseater_processors::circuit::CircuitConfig {
            failures_to_open: self.failures_to_open,
            error_rate_threshold: self.error_rate_threshold,
            window: self.window,
            cooldown_ms: (self.cooldown_s * 1000.0) as i64,
            probes_to_close: self.probes_to_close,
        }
    }
}

fn default_failures_to_open() -> u32 {
    3
}
fn default_error_rate() -> f64 {
    0.5
}
fn default_window() -> usize {
    10
}
fn default_cooldown() -> f64 {
    30.0
}
fn default_probes_to_close() -> u32 {
    2
}

/// Sink settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Where `serve` exposes Prometheus metrics (`/metrics`).
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: std::net::SocketAddr,
    /// Grafana, for the `grafana` processor and `chaoseater grafana push`.
    #[serde(default)]
    pub grafana: Option<GrafanaConfig>,
    /// Also export the Python tool's metric names that break Prometheus conventions
    /// (`chaos_error_count`, now `chaos_probe_errors`), for dashboards written for it. Deprecated; with it
    /// on, `promtool check metrics` reports those names.
    #[serde(default)]
    pub deprecated_metric_names: bool,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self { metrics_listen: default_metrics_listen(), grafana: None, deprecated_metric_names: false }
    }
}

/// Where Grafana is. The API key comes from `api_key_file` or `CHAOSEATER_GRAFANA_API_KEY`, never from
/// this file itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaConfig {
    pub url: String,
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    #[serde(default = "default_datasource")]
    pub datasource_uid: String,
    #[serde(default = "default_folder")]
    pub folder_uid: String,
}

fn default_datasource() -> String {
    "prometheus".to_owned()
}

fn default_folder() -> String {
    "chaoseater".to_owned()
}

impl GrafanaConfig {
    /// The sink's target, with the API key read now.
    pub fn target(&self) -> Result<chaoseater_sinks::grafana::sink::GrafanaTarget> {
        let api_key = match &self.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("reading the Grafana API key file {}", path.display()))?
                .trim()
                .to_owned(),
            None => std::env::var("CHAOSEATER_GRAFANA_API_KEY").unwrap_or_default(),
        };
        if api_key.is_empty() {
            bail!("no Grafana API key: set [sinks.grafana] api_key_file or CHAOSEATER_GRAFANA_API_KEY");
        }
        Ok(chaoseater_sinks::grafana::sink::GrafanaTarget {
            url: self.url.clone(),
            api_key,
            dashboard: chaoseater_sinks::grafana::DashboardOptions {
                datasource_uid: self.datasource_uid.clone(),
                ..Default::default()
            },
            alerts: chaoseater_sinks::grafana::AlertOptions {
                folder_uid: self.folder_uid.clone(),
                datasource_uid: self.datasource_uid.clone(),
                ..Default::default()
            },
        })
    }
}

fn default_metrics_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// Dispatcher settings. Agent tokens come from `tokens_file` (`region = "token"` lines, optional
/// `default`) or the environment (`CHAOSEATER_AGENT_TOKEN_<REGION>`, `CHAOSEATER_AGENT_TOKEN`), never
/// from events; a region's token is sent only to that region's endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    /// TOML file of agent tokens: `region = "token"` lines, and `default` for a token shared by all.
    pub tokens_file: Option<PathBuf>,
    /// Seconds between health samples of every region.
    #[serde(default = "default_health_interval")]
    pub health_interval_s: f64,
    /// Endpoints pinned by the operator, region → URL. A region is otherwise pinned to the endpoint it
    /// was first registered with; moving it to another needs an entry here.
    #[serde(default)]
    pub endpoints: std::collections::BTreeMap<String, String>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self { tokens_file: None, health_interval_s: default_health_interval(), endpoints: Default::default() }
    }
}

fn default_health_interval() -> f64 {
    10.0
}

/// Schema settings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemasConfig {
    /// A directory of extra writer schemas (`*.avsc`, other versions of our events) to decode with.
    pub extra_dir: Option<PathBuf>,
    /// Write the Confluent wire format (magic 0 + schema id) instead of Avro single-object encoding, with
    /// the ids your schema registry assigned, by event name: `{ RunRequested = 7, RegionResult = 8 }`.
    /// Every event this process writes needs an id. Reading accepts both formats either way.
    #[serde(default)]
    pub confluent_ids: std::collections::BTreeMap<String, u32>,
}

/// Flags that override everything else.
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides {
    pub config: Option<PathBuf>,
    pub brokers: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub topic_prefix: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Configured brokers; `None` means the embedded broker.
    pub brokers: Option<String>,
    pub state_dir: PathBuf,
    pub topic_prefix: String,
    pub kafka: BTreeMap<String, String>,
    pub schemas: SchemasConfig,
    pub dispatcher: DispatcherConfig,
    pub sinks: SinksConfig,
    pub circuit: CircuitFileConfig,
    pub history: HistoryConfig,
    pub processors: ProcessorsConfig,
    pub sql: chaoseater_processors::analytics::QueryLimits,
}

impl Config {
    /// The history directory: `[history] dir`, else `history/` in the state directory.
    pub fn history_dir(&self) -> PathBuf {
        self.history.dir.clone().unwrap_or_else(|| self.state_dir.join("history"))
    }
}

const DEFAULT_FILE: &str = "chaoseater.toml";
const ENV_PREFIX: &str = "CHAOSEATER_";
const ENV_KAFKA_PREFIX: &str = "CHAOSEATER_KAFKA_";

impl Config {
    /// Resolves the layers. `env` is the process environment (passed in so tests can supply their own).
    pub fn load(flags: &FlagOverrides, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let env: BTreeMap<String, String> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        let file_path = flags
            .config
            .clone()
            .or_else(|| env.get("CHAOSEATER_CONFIG").map(PathBuf::from))
            .map(|path| (path, true))
            .unwrap_or_else(|| (PathBuf::from(DEFAULT_FILE), false));
        let file = read_file(&file_path.0, file_path.1)?;

        let mut config = Config {
            brokers: file.brokers,
            state_dir: file.state_dir.unwrap_or_else(|| PathBuf::from(".chaoseater")),
            topic_prefix: file.topic_prefix.unwrap_or_else(|| chaoseater_schemas::topics::DEFAULT_PREFIX.to_owned()),
            kafka: file.kafka,
            schemas: file.schemas,
            dispatcher: file.dispatcher,
            sinks: file.sinks,
            circuit: file.circuit,
            history: file.history,
            processors: file.processors,
            sql: file.sql,
        };

        for (key, value) in &env {
            match key.as_str() {
                "CHAOSEATER_BROKERS" => config.brokers = Some(value.clone()),
                "CHAOSEATER_STATE_DIR" => config.state_dir = PathBuf::from(value),
                "CHAOSEATER_TOPIC_PREFIX" => config.topic_prefix = value.clone(),
                "CHAOSEATER_CONFIG" | "CHAOSEATER_LOG" => {}
                k if k.starts_with(ENV_KAFKA_PREFIX) => {
                    // CHAOSEATER_KAFKA_SASL_PASSWORD → sasl.password (librdkafka keys use dots, never underscores).
                    let property = k[ENV_KAFKA_PREFIX.len()..].to_ascii_lowercase().replace('_', ".");
                    config.kafka.insert(property, value.clone());
                }
                _ => {} // Other tools' CHAOSEATER_* variables (agent tokens, tests) are not ours to reject.
            }
        }

        if let Some(brokers) = &flags.brokers {
            config.brokers = Some(brokers.clone());
        }
        if let Some(dir) = &flags.state_dir {
            config.state_dir = dir.clone();
        }
        if let Some(prefix) = &flags.topic_prefix {
            config.topic_prefix = prefix.clone();
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&mut self) -> Result<()> {
        if let Some(brokers) = &self.brokers {
            let brokers = brokers.trim();
            if brokers.is_empty() {
                self.brokers = None;
            } else if brokers.split(',').any(|b| !b.trim().contains(':')) {
                bail!("brokers must be host:port[,host:port...], got {brokers:?}");
            }
        }
        if self.topic_prefix.is_empty()
            || !self.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            bail!("topic prefix must be letters, digits, '.', '_' or '-', got {:?}", self.topic_prefix);
        }
        if self.history.max_rows == 0 || !(self.history.max_age_s.is_finite() && self.history.max_age_s > 0.0) {
            bail!("history.max_rows and history.max_age_s must be positive");
        }
        // Above ten years: a window that long is "remember every id", and seconds beyond that overflow.
        if !(self.processors.dedupe_window_h.is_finite()
            && self.processors.dedupe_window_h > 0.0
            && self.processors.dedupe_window_h <= 87_600.0)
        {
            bail!("processors.dedupe_window_h must be a positive number of hours (at most 87600)");
        }
        if !(self.dispatcher.health_interval_s.is_finite() && self.dispatcher.health_interval_s > 0.0) {
            bail!("dispatcher.health_interval_s must be a positive number of seconds");
        }
        if self.kafka.contains_key("bootstrap.servers") {
            bail!("set brokers with --brokers, CHAOSEATER_BROKERS or `brokers =`, not kafka.bootstrap.servers");
        }
        Ok(())
    }
}

fn read_file(path: &Path, must_exist: bool) -> Result<FileConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("configuration file {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => Ok(FileConfig::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read configuration file {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "brokers = \"file:1\"\nstate_dir = \"/from/file\"\n[kafka]\n\"security.protocol\" = \"SSL\"\n",
        )
        .unwrap();
        let flags = FlagOverrides { config: Some(file.clone()), ..Default::default() };

        let c = Config::load(&flags, env(&[])).unwrap();
        assert_eq!(c.brokers.as_deref(), Some("file:1"));
        assert_eq!(c.kafka["security.protocol"], "SSL");

        let c = Config::load(&flags, env(&[("CHAOSEATER_BROKERS", "env:2"), ("CHAOSEATER_KAFKA_SASL_USERNAME", "u")]))
            .unwrap();
        assert_eq!(c.brokers.as_deref(), Some("env:2"));
        assert_eq!(c.state_dir, PathBuf::from("/from/file"));
        assert_eq!(c.kafka["sasl.username"], "u");

        let flags = FlagOverrides { brokers: Some("flag:3".into()), ..flags };
        let c = Config::load(&flags, env(&[("CHAOSEATER_BROKERS", "env:2")])).unwrap();
        assert_eq!(c.brokers.as_deref(), Some("flag:3"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "brokerz = \"x:1\"\n").unwrap();
        let flags = FlagOverrides { config: Some(file), ..Default::default() };
        let err = format!("{:#}", Config::load(&flags, env(&[])).unwrap_err());
        assert!(err.contains("unknown field `brokerz`"), "{err}");

        let flags = FlagOverrides { brokers: Some("nohost".into()), ..Default::default() };
        assert!(Config::load(&flags, env(&[])).is_err());
        let flags = FlagOverrides { config: Some(dir.path().join("missing.toml")), ..Default::default() };
        assert!(Config::load(&flags, env(&[])).is_err());
    }

    #[test]
    fn the_dedupe_window_is_read_in_hours_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(&FlagOverrides { config: Some(file.clone()), ..Default::default() }, env(&[]))
        };
        let default = load("").unwrap().processors.runner_options().dedupe_window;
        assert_eq!(default, chaoseater_schemas::bus::DEFAULT_DEDUPE_WINDOW);
        let c = load("[processors]\ndedupe_window_h = 1.5\n").unwrap();
        assert_eq!(c.processors.runner_options().dedupe_window, std::time::Duration::from_secs(5_400));
        for bad in ["0", "-1", "nan", "inf", "100000"] {
            let err = format!("{:#}", load(&format!("[processors]\ndedupe_window_h = {bad}\n")).unwrap_err());
            assert!(err.contains("dedupe_window_h"), "{bad}: {err}");
        }
    }
}

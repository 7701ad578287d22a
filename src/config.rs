//! The one layered configuration: built-in defaults, then `chaoseater.toml` (or `--config FILE`), then
//! `CHAOSEATER_*` environment variables, then command-line flags. Loaded once in `main` and passed down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chaoseater_processors::circuit::CircuitConfig;
use chaoseater_processors::history::HistoryConfig;
use chaoseater_producers::dispatcher::DispatcherConfig;
use chaoseater_schemas::bus::RunnerConfig;
use chaoseater_sinks::SinksConfig;
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
    pub circuit: CircuitConfig,
    /// The Parquet history.
    #[serde(default)]
    pub history: HistoryConfig,
    /// How every processor consumes.
    #[serde(default)]
    pub processors: RunnerConfig,
    /// Limits of one SQL query (memory, time): `sql` and every history question.
    #[serde(default)]
    pub sql: chaoseater_processors::analytics::QueryLimits,
    /// When `serve` retrains the optimizer.
    #[serde(default)]
    pub optimizer: chaoseater_processors::optimizer::OptimizerConfig,
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
    pub circuit: CircuitConfig,
    pub history: HistoryConfig,
    pub processors: RunnerConfig,
    pub sql: chaoseater_processors::analytics::QueryLimits,
    pub optimizer: chaoseater_processors::optimizer::OptimizerConfig,
}

impl Config {
    /// The history directory: `[history] dir`, else `history/` in the state directory.
    pub fn history_dir(&self) -> PathBuf {
        self.history.dir_in(&self.state_dir)
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
            optimizer: file.optimizer,
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
        // Each component checks its own section.
        self.history.validate()?;
        self.processors.validate()?;
        self.dispatcher.validate()?;
        self.circuit.validate()?;
        self.optimizer.validate()?;
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

    /// The files docker-compose.yml and the Kubernetes manifests mount for `serve` and the init job.
    #[test]
    fn the_deployments_configuration_files_are_valid() {
        for file in ["deploy/compose/chaoseater.toml", "deploy/k8s/config/chaoseater.toml"] {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file);
            let flags = FlagOverrides { config: Some(path), ..Default::default() };
            let c = Config::load(&flags, env(&[])).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            assert_eq!(c.brokers.as_deref(), Some("kafka:9092"), "{file}");
            assert_eq!(c.state_dir, PathBuf::from("/var/lib/chaoseater"), "{file}");
            assert!(c.dispatcher.tokens_file.is_some(), "{file}: the agents need their tokens");
        }
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
        let default = load("").unwrap().processors.options().dedupe_window;
        assert_eq!(default, chaoseater_schemas::bus::DEFAULT_DEDUPE_WINDOW);
        let c = load("[processors]\ndedupe_window_h = 1.5\n").unwrap();
        assert_eq!(c.processors.options().dedupe_window, std::time::Duration::from_secs(5_400));
        for bad in ["0", "-1", "nan", "inf", "100000"] {
            let err = format!("{:#}", load(&format!("[processors]\ndedupe_window_h = {bad}\n")).unwrap_err());
            assert!(err.contains("dedupe_window_h"), "{bad}: {err}");
        }
    }
}

//! The history materializer as a component: its `[history]` section and how `serve` starts it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chaoseater_schemas::bus::{Component, ComponentError, ConfigError, Env, Handle, Prepared};
use chaoseater_schemas::ids::TimestampMs;
use chaoseater_schemas::topics::Topic;
use serde::Deserialize;

use super::{HistoryOptions, Materializer, TOPICS};

/// Where the Parquet history lives and when the materializer writes it (`[history]`); what is absent
/// keeps its default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// The history directory (default: `history/` in the state directory).
    pub dir: Option<PathBuf>,
    /// Write a segment when this many rows are buffered.
    pub max_rows: usize,
    /// Write a segment when the oldest buffered event is this old (seconds).
    pub max_age_s: f64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let options = HistoryOptions::default();
        Self { dir: None, max_rows: options.max_rows, max_age_s: options.max_age.as_secs_f64() }
    }
}

impl HistoryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_rows == 0 || !(self.max_age_s.is_finite() && self.max_age_s > 0.0) {
            return Err(ConfigError("history.max_rows and history.max_age_s must be positive".into()));
        }
        Ok(())
    }

    /// The history directory: `dir`, else `history/` in `state_dir`.
    pub fn dir_in(&self, state_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state_dir.join("history"))
    }

    pub fn options(&self) -> HistoryOptions {
        HistoryOptions {
            max_rows: self.max_rows,
            max_age: Duration::from_secs_f64(self.max_age_s),
            ..Default::default()
        }
    }
}

/// The materializer, writing into `dir`.
#[derive(Debug, Clone)]
pub struct HistoryComponent {
    dir: PathBuf,
    options: HistoryOptions,
}

impl HistoryComponent {
    pub fn new(config: &HistoryConfig, state_dir: &Path) -> Self {
        Self { dir: config.dir_in(state_dir), options: config.options() }
    }
}

impl Component for HistoryComponent {
    fn name(&self) -> &'static str {
        Materializer::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        TOPICS.to_vec()
    }

    fn prepare(&self, env: Env) -> Result<Prepared, ComponentError> {
        // Named once: a restarted materializer keeps reading this session's embedded log into the same
        // files, and earlier sessions' history stays apart.
        let log = env.embedded.then(|| format!("embedded-{}", TimestampMs::now().0));
        let (dir, options) = (self.dir.clone(), self.options);
        Ok(Prepared::new(move |shutdown| {
            let mut handle = Handle::new(Materializer::NAME, &shutdown);
            let (bus, dir, log, duty, stop) =
                (env.bus.clone(), dir.clone(), log.clone(), env.runner.dead_letters.clone(), handle.shutdown());
            handle.spawn("materializer", async move {
                // Opening recovers an interrupted write: file work, off the async threads.
                let opened = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || Materializer::open(bus, &dir, options)
                })
                .await
                .map_err(|e| ComponentError::new("opening the history", e.to_string()))?;
                let mut materializer = opened
                    .map_err(|e| ComponentError::new(format!("opening the history in {}", dir.display()), e))?
                    .with_dead_letter_duty(duty);
                if let Some(log) = log {
                    materializer = materializer.with_log(log);
                }
                tracing::info!(dir = %dir.display(), "History materializer writing Parquet.");
                materializer.run(stop.wait()).await.map(drop).map_err(|e| ComponentError::new("materializing", e))
            });
            Ok(handle)
        }))
    }
}

//! The Grafana sink as a component: its `[sinks.grafana]` section, and the runner with the sender that
//! drains its outbox.

use std::path::PathBuf;

use chaoseater_schemas::bus::{Component, ComponentError, Env, Handle, Prepared};
use chaoseater_schemas::topics::Topic;
use serde::Deserialize;

use super::{GrafanaSink, GrafanaTarget, sender};
use crate::grafana::{AlertOptions, DashboardOptions};

/// Where Grafana is (`[sinks.grafana]`). The API key comes from `api_key_file` or
/// `CHAOSEATER_GRAFANA_API_KEY`, never from this file itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrafanaConfig {
    /// Grafana's base URL, `http://host:3000`.
    pub url: String,
    /// A file holding the API key (a service account token).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// The uid of the Prometheus data source the dashboard and the rules query.
    #[serde(default = "default_datasource")]
    pub datasource_uid: String,
    /// The uid of the folder the alert rules go in.
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
    pub fn target(&self) -> Result<GrafanaTarget, ComponentError> {
        let api_key = match &self.api_key_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| ComponentError::new(format!("reading the Grafana API key file {}", path.display()), e))?
                .trim()
                .to_owned(),
            None => std::env::var("CHAOSEATER_GRAFANA_API_KEY").unwrap_or_default(),
        };
        if api_key.is_empty() {
            return Err(ComponentError::new(
                "no Grafana API key",
                "set [sinks.grafana] api_key_file or CHAOSEATER_GRAFANA_API_KEY",
            ));
        }
        Ok(GrafanaTarget {
            url: self.url.clone(),
            api_key,
            dashboard: DashboardOptions { datasource_uid: self.datasource_uid.clone(), ..Default::default() },
            alerts: AlertOptions {
                folder_uid: self.folder_uid.clone(),
                datasource_uid: self.datasource_uid.clone(),
                ..Default::default()
            },
        })
    }
}

/// The Grafana sink, run by default only when Grafana is configured.
#[derive(Debug, Clone)]
pub struct GrafanaComponent {
    config: Option<GrafanaConfig>,
}

impl GrafanaComponent {
    pub fn new(config: Option<&GrafanaConfig>) -> Self {
        Self { config: config.cloned() }
    }
}

impl Component for GrafanaComponent {
    fn name(&self) -> &'static str {
        GrafanaSink::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Results]
    }

    fn enabled_by_default(&self) -> bool {
        self.config.is_some()
    }

    fn prepare(&self, env: Env) -> Result<Prepared, ComponentError> {
        let Some(config) = &self.config else {
            return Err(ComponentError::new(
                "the grafana processor",
                "it needs [sinks.grafana] url in chaoseater.toml",
            ));
        };
        // Checked now, so a missing key stops `serve` at once; read again at every try, so a rotated key
        // is taken up by a restart of the sink.
        config.target()?;
        let (config, store) = (config.clone(), env.open_store()?);
        Ok(Prepared::new(move |shutdown| {
            let target = config.target()?;
            let mut handle = Handle::new(GrafanaSink::NAME, &shutdown);
            let (sink, wake) = GrafanaSink::new(&target);
            let sent = sender(store.clone(), target.clone(), wake, handle.shutdown());
            handle.spawn("sender", async move {
                sent.await;
                Ok::<_, ComponentError>(())
            });
            handle.spawn_runner(&env.bus, sink, store.clone(), env.runner.clone())?;
            Ok(handle)
        }))
    }
}

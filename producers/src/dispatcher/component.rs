//! The dispatcher as a component: its `[dispatcher]` section, and the runner, the workers calling agents
//! and the health monitor it starts together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chaoseater_schemas::bus::{
    Component, ComponentError, ConfigError, Env, EventProducer, Handle, Prepared, Processor,
};
use chaoseater_schemas::topics::Topic;
use serde::Deserialize;

use super::{AgentTokens, Dispatcher, Workers, health};

/// Dispatcher settings (`[dispatcher]`); what is absent keeps its default. Agent tokens come from
/// `tokens_file` or the environment (`CHAOSEATER_AGENT_TOKEN_<REGION>`, `CHAOSEATER_AGENT_TOKEN`), never
/// from events; a region's token is sent only to that region's endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// TOML file of agent tokens: `region = "token"` lines, and `default` for a token shared by all.
    pub tokens_file: Option<PathBuf>,
    /// Seconds between health samples of every region.
    pub health_interval_s: f64,
    /// Endpoints pinned by the operator, region → URL. A region is otherwise pinned to the endpoint it
    /// was first registered with; moving it to another needs an entry here.
    pub endpoints: BTreeMap<String, String>,
    /// Also take tokens from `CHAOSEATER_AGENT_TOKEN*` variables. Not a file setting: the demo turns it
    /// off, since its agents have a token of their own that a user's variables must not replace.
    #[serde(skip)]
    pub tokens_from_environment: bool,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self { tokens_file: None, health_interval_s: 10.0, endpoints: BTreeMap::new(), tokens_from_environment: true }
    }
}

impl DispatcherConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.health_interval_s.is_finite() && self.health_interval_s > 0.0) {
            return Err(ConfigError("dispatcher.health_interval_s must be a positive number of seconds".into()));
        }
        Ok(())
    }

    /// The agent tokens from `tokens_file` and `env`, warning when one token stands for every region.
    pub fn tokens(&self, env: impl IntoIterator<Item = (String, String)>) -> Result<AgentTokens, ComponentError> {
        let tokens =
            AgentTokens::load(self.tokens_file.as_deref(), env).map_err(|e| ComponentError::new("agent tokens", e))?;
        if let Some(source) = tokens.shared_fallback() {
            tracing::warn!(
                source,
                "One agent token serves every region without its own: whoever holds it can act on all of \
                 them. Prefer a token per region (CHAOSEATER_AGENT_TOKEN_<REGION> or tokens_file)."
            );
        }
        Ok(tokens)
    }
}

/// The dispatcher with its workers and health monitor.
#[derive(Debug, Clone)]
pub struct DispatcherComponent {
    config: DispatcherConfig,
}

impl DispatcherComponent {
    pub fn new(config: &DispatcherConfig) -> Self {
        Self { config: config.clone() }
    }
}

impl Component for DispatcherComponent {
    fn name(&self) -> &'static str {
        Dispatcher::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        Dispatcher::new().0.topics()
    }

    fn prepare(&self, env: Env) -> Result<Prepared, ComponentError> {
        let environment: Vec<(String, String)> =
            if self.config.tokens_from_environment { std::env::vars().collect() } else { Vec::new() };
        let tokens = self.config.tokens(environment)?;
        let store = env.open_store()?;
        let config = self.config.clone();
        Ok(Prepared::new(move |shutdown| {
            let mut handle = Handle::new(Dispatcher::NAME, &shutdown);
            let (dispatcher, queue) = Dispatcher::new();
            let dispatcher = dispatcher.with_endpoints(config.endpoints.clone());
            let producer = EventProducer::new(&env.bus).map_err(|e| ComponentError::new("the producer", e))?;
            let unfinished =
                Dispatcher::unfinished(&store).map_err(|e| ComponentError::new("reading unfinished dispatches", e))?;
            // The workers end when the runner drops the dispatcher and with it the queue's sender.
            let workers = Workers::new(producer.clone(), tokens.clone());
            handle.spawn("workers", async move {
                workers.run(unfinished, queue).await;
                Ok::<_, ComponentError>(())
            });
            let interval = Duration::from_secs_f64(config.health_interval_s);
            let (monitored, stop) = (store.clone(), handle.shutdown());
            handle.spawn("health monitor", async move {
                health::monitor(monitored, producer, interval, stop).await;
                Ok::<_, ComponentError>(())
            });
            handle.spawn_runner(&env.bus, dispatcher, store.clone(), env.runner.clone())?;
            Ok(handle)
        }))
    }
}

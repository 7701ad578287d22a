//! The agent's configuration (`agent.toml`), with `deny_unknown_fields` everywhere so that a typo is an
//! error at start-up rather than a default silently used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use super::hops::{Hop, Hops, InnerHop};

/// Everything `chaoseater agent --config agent.toml` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the control API listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the fault-injecting proxy listens: clients of the pipeline send their requests here.
    #[serde(default = "default_proxy_listen")]
    pub proxy_listen: SocketAddr,
    /// The pipeline endpoint the proxy forwards to (base URL, `http://host:port`).
    pub upstream: String,
    /// Other versions of the endpoint by name: targets of `wrong_version` and blue-green switches.
    #[serde(default)]
    pub alternates: BTreeMap<String, String>,
    /// The body shape the proxy rewrites: `v1`, `v2` or `records` (with `records_pointer`).
    #[serde(default)]
    pub protocol: Protocol,
    /// For `records`: a JSON pointer to the array of feature records in a request body.
    #[serde(default)]
    pub records_pointer: Option<String>,
    /// For `records`: a JSON pointer to the predictions in an answer body.
    #[serde(default)]
    pub predictions_pointer: Option<String>,
    /// Journal of host leftovers and scratch files.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// File holding the bearer token for mutating routes. Otherwise `token_env` names the variable.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Exceptions to the token, off by default.
    #[serde(default)]
    pub auth: super::auth::AuthConfig,
    /// A second proxy hop between a gateway and its model server (see `hops.rs`).
    #[serde(default)]
    pub inner: Option<InnerHop>,
    /// Which hop each layer's faults act on.
    #[serde(default)]
    pub hops: Hops,
    pub probe: ProbeConfig,
    #[serde(default)]
    pub slo: SloConfig,
    #[serde(default)]
    pub caps: Caps,
    #[serde(default)]
    pub host: HostConfig,
    /// Connection limit and timeouts of the control API and of the proxy (each has its own).
    #[serde(default)]
    pub limits: AgentLimits,
}

/// `[limits.api]` and `[limits.proxy]`: how much an unauthenticated peer can hold of the agent. With the
/// defaults (256 connections each) the two stay well inside a 1,024 file-descriptor limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLimits {
    /// The control API (`listen`).
    #[serde(default)]
    pub api: chaoseater_net::server::ServerLimits,
    /// The proxy (`proxy_listen`).
    #[serde(default)]
    pub proxy: chaoseater_net::server::ServerLimits,
}

/// The request shapes the proxy understands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TF-Serving/KServe v1: `{"instances": [...]}` → `{"predictions": [...]}`.
    #[default]
    V1,
    /// Open Inference Protocol (KServe v2): named input and output tensors.
    V2,
    /// Plain JSON: records at `records_pointer`, predictions at `predictions_pointer` in the answer.
    Records,
}

/// The steady-state probes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// The labelled probe set: a JSON file, or an `http://` URL (the demo target serves `/probe-set`).
    pub set: String,
    /// Where probes are sent; by default through the proxy, to the path the probe set names. Set it to the
    /// entry of a longer pipeline when the proxy sits on an inner hop.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Request path for probes through the proxy, instead of the one the probe set names (for example
    /// `/v2/models/demo/infer` with protocol v2).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Records per probe request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long the baseline is measured before injecting.
    #[serde(default = "default_baseline_ms")]
    pub baseline_ms: u64,
    /// Width of the windows availability and the steady state are judged on.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
}

/// What "steady state" means.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Share of successful probes a window needs.
    #[serde(default = "default_availability")]
    pub availability: f64,
    /// The latency objective: the `latency_quantile` of a window's answered probes must stay within it,
    /// and a request answered later is a bad request. By default max(5 × baseline p99, baseline p99 +
    /// 50 ms), measured before each experiment.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Which quantile `latency_ms` bounds (0.99: p99 ≤ latency_ms; 1.0: every request within it).
    #[serde(default = "default_latency_quantile")]
    pub latency_quantile: f64,
    /// Deprecated: `latency_p95_ms = X` is `latency_ms = X` with `latency_quantile = 0.95`.
    #[serde(default)]
    pub latency_p95_ms: Option<f64>,
    /// How far accuracy may fall below the baseline, in percentage points.
    #[serde(default = "default_accuracy_drop")]
    pub accuracy_drop_pp: f64,
    /// The steady state must hold this long to count as restored.
    #[serde(default = "default_stability_ms")]
    pub stability_window_ms: u64,
    /// Give up waiting for recovery after this long (recovery_time_s is then null).
    #[serde(default = "default_recovery_timeout_ms")]
    pub recovery_timeout_ms: u64,
}

/// Hard limits: a fault asking for more is refused before anything is injected.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    #[serde(default = "default_max_memory_mb")]
    pub max_memory_mb: u64,
    #[serde(default = "default_max_disk_bytes")]
    pub max_disk_bytes: u64,
    /// Share of the host's CPU a throttle may take, in percent.
    #[serde(default = "default_max_cpu_percent")]
    pub max_cpu_percent: f64,
    #[serde(default = "default_max_duration_s")]
    pub max_duration_s: f64,
}

/// Where host faults act.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Default directory for disk_full and storage_bottleneck when the experiment names no path.
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// Directories besides the scratch directory where disk_full and storage_bottleneck may write their
    /// files (absolute; each must exist). Nothing else on the host is ever written.
    #[serde(default)]
    pub allowed_paths: Vec<PathBuf>,
    /// Root of the cgroup v2 hierarchy (`cgroup` parameters are relative to it).
    #[serde(default = "default_cgroup_root")]
    pub cgroup_root: PathBuf,
}

impl AgentConfig {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Every default, in front of `upstream`, probing with the labelled set at `probe_set` (a file or an
    /// `http://` URL): what a file naming only those two gives. Check it with [`AgentConfig::validate`].
    pub fn new(upstream: impl Into<String>, probe_set: impl Into<String>) -> Self {
        Self {
            listen: default_listen(),
            proxy_listen: default_proxy_listen(),
            upstream: upstream.into(),
            alternates: BTreeMap::new(),
            protocol: Protocol::default(),
            records_pointer: None,
            predictions_pointer: None,
            state_dir: default_state_dir(),
            token_file: None,
            token_env: default_token_env(),
            auth: super::auth::AuthConfig::default(),
            inner: None,
            hops: Hops::default(),
            probe: ProbeConfig::new(probe_set),
            slo: SloConfig::default(),
            caps: Caps::default(),
            host: HostConfig::default(),
            limits: AgentLimits::default(),
        }
    }

    /// The named alternates of the hop `layer`'s faults act on.
    pub fn alternates_of(&self, layer: chaoseater_schemas::experiment::Layer) -> &BTreeMap<String, String> {
        match (&self.inner, self.hops.of(layer, self.inner.is_some())) {
            (Some(inner), Hop::Inner) => &inner.alternates,
            _ => &self.alternates,
        }
    }

    /// Checks what serde cannot: URLs, ranges, the settings that need each other.
    pub fn validate(&self) -> Result<(), String> {
        // Every URL the proxies forward to, on either hop.
        let inner = self.inner.iter().flat_map(|hop| {
            std::iter::once(("inner.upstream", &hop.upstream))
                .chain(hop.alternates.iter().map(|(k, v)| (k.as_str(), v)))
        });
        for (name, url) in std::iter::once(("upstream", &self.upstream))
            .chain(self.alternates.iter().map(|(k, v)| (k.as_str(), v)))
            .chain(inner)
        {
            if !url.starts_with("http://") {
                return Err(format!("{name}: {url:?} must be an http:// URL"));
            }
        }
        self.limits.api.validate().map_err(|e| format!("limits.api: {e}"))?;
        self.limits.proxy.validate().map_err(|e| format!("limits.proxy: {e}"))?;
        if self.protocol == Protocol::Records && self.records_pointer.is_none() {
            return Err("protocol = \"records\" needs records_pointer".to_owned());
        }
        if !(0.0..=1.0).contains(&self.slo.availability) {
            return Err(format!("slo.availability must be in [0, 1], got {}", self.slo.availability));
        }
        self.slo.validate()?;
        self.hops.validate(self.inner.as_ref())?;
        if self.probe.interval_ms == 0 || self.probe.batch_size == 0 || self.probe.window_ms == 0 {
            return Err("probe.interval_ms, probe.batch_size and probe.window_ms must be positive".to_owned());
        }
        if !(0.0..=100.0).contains(&self.caps.max_cpu_percent) {
            return Err(format!("caps.max_cpu_percent must be in [0, 100], got {}", self.caps.max_cpu_percent));
        }
        Ok(())
    }

    /// The bearer token, from `token_file` or the `token_env` variable. Required: the agent injects faults
    /// into a live system and must not take orders from anyone who can reach its port.
    pub fn token(&self) -> Result<String, String> {
        let token = match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("reading token_file {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            None => std::env::var(&self.token_env).unwrap_or_default().trim().to_owned(),
        };
        if token.is_empty() {
            return Err(format!(
                "no API token: set token_file in the agent config or the {} environment variable",
                self.token_env
            ));
        }
        Ok(token)
    }

    pub fn scratch_dir(&self) -> PathBuf {
        self.host.scratch_dir.clone().unwrap_or_else(|| self.state_dir.join("scratch"))
    }
}

impl ProbeConfig {
    /// The defaults, probing with the labelled set at `set`.
    pub fn new(set: impl Into<String>) -> Self {
        Self {
            set: set.into(),
            endpoint: None,
            path: None,
            interval_ms: default_interval_ms(),
            batch_size: default_batch_size(),
            timeout_ms: default_timeout_ms(),
            baseline_ms: default_baseline_ms(),
            window_ms: default_window_ms(),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl SloConfig {
    fn validate(&self) -> Result<(), String> {
        if self.latency_ms.is_some() && self.latency_p95_ms.is_some() {
            return Err("slo: set latency_ms (with latency_quantile), not also the deprecated latency_p95_ms".into());
        }
        if let Some(ms) = self.latency_ms.or(self.latency_p95_ms)
            && !(ms > 0.0 && ms.is_finite())
        {
            return Err(format!("slo.latency_ms must be a positive number of milliseconds, got {ms}"));
        }
        if !(self.latency_quantile > 0.0 && self.latency_quantile <= 1.0) {
            return Err(format!("slo.latency_quantile must be in (0, 1], got {}", self.latency_quantile));
        }
        Ok(())
    }

    /// The configured latency objective as (milliseconds, quantile), if one is set.
    pub fn latency_objective(&self) -> Option<(f64, f64)> {
        match (self.latency_ms, self.latency_p95_ms) {
            (Some(ms), _) => Some((ms, self.latency_quantile)),
            (None, Some(ms)) => Some((ms, 0.95)),
            (None, None) => None,
        }
    }

    /// Why the configuration reads as it does, for the start-up log.
    pub fn deprecation(&self) -> Option<String> {
        self.latency_p95_ms.map(|ms| {
            format!("slo.latency_p95_ms is deprecated: read as latency_ms = {ms} with latency_quantile = 0.95")
        })
    }
}

impl Default for SloConfig {
    fn default() -> Self {
        Self {
            availability: default_availability(),
            latency_ms: None,
            latency_quantile: default_latency_quantile(),
            latency_p95_ms: None,
            accuracy_drop_pp: default_accuracy_drop(),
            stability_window_ms: default_stability_ms(),
            recovery_timeout_ms: default_recovery_timeout_ms(),
        }
    }
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            max_memory_mb: default_max_memory_mb(),
            max_disk_bytes: default_max_disk_bytes(),
            max_cpu_percent: default_max_cpu_percent(),
            max_duration_s: default_max_duration_s(),
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        Self { scratch_dir: None, allowed_paths: Vec::new(), cgroup_root: default_cgroup_root() }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8700))
}
fn default_proxy_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8701))
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(".chaoseater/agent")
}
fn default_token_env() -> String {
    "CHAOSEATER_AGENT_TOKEN".to_owned()
}
fn default_interval_ms() -> u64 {
    50
}
fn default_batch_size() -> usize {
    4
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_baseline_ms() -> u64 {
    2_000
}
fn default_window_ms() -> u64 {
    500
}
fn default_availability() -> f64 {
    0.95
}
fn default_latency_quantile() -> f64 {
    0.99
}

fn default_accuracy_drop() -> f64 {
    5.0
}
fn default_stability_ms() -> u64 {
    2_000
}
fn default_recovery_timeout_ms() -> u64 {
    30_000
}
fn default_max_memory_mb() -> u64 {
    2_048
}
fn default_max_disk_bytes() -> u64 {
    1 << 30
}
fn default_max_cpu_percent() -> f64 {
    50.0
}
fn default_max_duration_s() -> f64 {
    600.0
}
fn default_cgroup_root() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_slo(slo: &str) -> Result<AgentConfig, String> {
        AgentConfig::parse(&format!(
            "upstream = \"http://127.0.0.1:8501\"\n[probe]\nset = \"http://127.0.0.1:8501/probe-set\"\n[slo]\n{slo}"
        ))
    }

    /// The agent files docker-compose.yml and the Kubernetes manifests mount: an agent refuses a bad one
    /// at start-up, which no schema check of the deployment would see.
    #[test]
    fn the_deployments_agent_files_are_valid() {
        let deploy = chaoseater_schemas::package_dir!().join("../deploy");
        for dir in ["compose", "k8s/config"] {
            for region in ["eu-west", "us-east"] {
                let path = deploy.join(dir).join(format!("agent-{region}.toml"));
                let config = AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(config.upstream.contains(&format!("target-{region}:8501")), "{}", path.display());
                assert!(config.token_file.is_some(), "{}: the control API needs a token", path.display());
            }
        }
    }

    #[test]
    fn wrong_version_routes_among_the_alternates_of_the_model_hop() {
        use chaoseater_schemas::experiment::Layer;
        let text = "upstream = \"http://127.0.0.1:8510\"\n[alternates]\ngateway-v2 = \"http://127.0.0.1:8511\"\n\
                    [inner]\nlisten = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:8501\"\n\
                    [inner.alternates]\nmodel-v2 = \"http://127.0.0.1:8502\"\n\
                    [probe]\nset = \"http://127.0.0.1:8501/probe-set\"\n";
        let config = AgentConfig::parse(text).expect("valid");
        assert_eq!(config.alternates_of(Layer::Model).keys().collect::<Vec<_>>(), ["model-v2"]);
        assert_eq!(config.alternates_of(Layer::Data).keys().collect::<Vec<_>>(), ["gateway-v2"]);
    }

    #[test]
    fn the_latency_objective_is_checked_and_the_old_setting_still_reads() {
        let set = with_slo("latency_ms = 250\nlatency_quantile = 1.0").expect("valid");
        assert_eq!((set.slo.latency_objective(), set.slo.deprecation()), (Some((250.0, 1.0)), None));
        let old = with_slo("latency_p95_ms = 80").expect("deprecated, still valid");
        assert_eq!(old.slo.latency_objective(), Some((80.0, 0.95)));
        assert!(old.slo.deprecation().is_some_and(|w| w.contains("latency_ms = 80")));
        assert_eq!(with_slo("").expect("defaults").slo.latency_objective(), None, "derived from the baseline");
        for (bad, named) in [
            ("latency_ms = 250\nlatency_p95_ms = 80", "not also"),
            ("latency_ms = 0", "latency_ms"),
            ("latency_quantile = 0", "latency_quantile"),
            ("latency_quantile = 1.5", "latency_quantile"),
        ] {
            let err = with_slo(bad).expect_err(bad);
            assert!(err.contains(named), "{bad}: {err}");
        }
    }
}

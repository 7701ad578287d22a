//! A test cluster: a broker prefix, a state directory, `chaoseater serve` processes, agents in front of
//! demo targets on distinct 127.0.0.x addresses, and readers of the topics.

use std::process::Output;

use chaoseater_schemas::topics::Topic;
use serde_json::Value;

use super::*;

/// A broker prefix, a state directory and the service processes of one test.
pub struct Cluster {
    pub brokers: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub services: Vec<KillOnDrop>,
    pub keep: Vec<KillOnDrop>,
    pub config: Option<std::path::PathBuf>,
}

impl Cluster {
    pub fn new(name: &str) -> Self {
        Self::on(&brokers(), name)
    }

    /// A cluster on other brokers than the suite's (a test's own Kafka, say).
    pub fn on(brokers: &str, name: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            prefix: unique_prefix(name),
            dir: tempfile::tempdir().expect("tempdir"),
            services: Vec::new(),
            keep: Vec::new(),
            config: None,
        }
    }

    /// Uses `toml` as the chaoseater.toml of every command.
    pub fn with_config(mut self, toml: &str) -> Self {
        let path = self.dir.path().join("chaoseater.toml");
        std::fs::write(&path, toml).expect("chaoseater.toml");
        self.config = Some(path);
        self
    }

    pub fn cmd(&self) -> std::process::Command {
        let mut cmd = bin();
        cmd.args(["--brokers", &self.brokers, "--topic-prefix", &self.prefix, "--state-dir"])
            .arg(self.dir.path().join("state"))
            .env("CHAOSEATER_AGENT_TOKEN", AGENT_TOKEN);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd
    }

    /// Events of one kind from the rollback topic, as JSON.
    pub fn rollback_events(&self, kind: &str) -> Vec<Value> {
        self.events(Topic::Rollback, kind)
    }

    pub fn run(&self, args: &[&str]) -> Output {
        run(self.cmd().args(args))
    }

    /// Where a service's log goes: a file under $CHAOSEATER_TEST_LOGS when set (for debugging), else nowhere.
    fn log_sink(prefix: &str, n: usize) -> std::process::Stdio {
        match std::env::var_os("CHAOSEATER_TEST_LOGS") {
            Some(dir) => std::fs::File::create(std::path::Path::new(&dir).join(format!("{prefix}-serve-{n}.log")))
                .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from),
            None => std::process::Stdio::null(),
        }
    }

    /// Starts `serve` with `processors`; waits until its consumers run.
    pub fn serve(&mut self, processors: &str) -> usize {
        let child = self
            .cmd()
            .args(["serve", "--processors", processors])
            .env("CHAOSEATER_LOG", "info")
            .stderr(Self::log_sink(&self.prefix, self.services.len()))
            .spawn()
            .expect("spawn serve");
        self.services.push(KillOnDrop(child));
        self.services.len() - 1
    }

    /// Starts a demo target and an agent on `ip`; registers it as `region`. Returns the agent's API address.
    pub fn region(&mut self, region: &str, ip: &str, priority: i32, extra: &str) -> String {
        self.defended_region(region, ip, priority, extra, "none")
    }

    /// As [`Cluster::region`], the target with `resilience` (its defences).
    pub fn defended_region(&mut self, region: &str, ip: &str, priority: i32, extra: &str, resilience: &str) -> String {
        let (target, target_addr) = spawn_target_with(ip, resilience);
        let config = agent_config(&self.dir.path().join("agents").join(region), ip, &target_addr, extra);
        let (agent, api, _proxy) = spawn_agent(&config);
        self.keep.push(target);
        self.keep.push(KillOnDrop(agent));
        self.register(region, &format!("http://{api}"), priority);
        api
    }

    /// A region as the demo builds it: a model server (no defences), a gateway in front of it with
    /// `resilience`, and an agent on both hops (data faults before the gateway, model and
    /// infrastructure faults between the gateway and the model server). Returns the agent's API address.
    pub fn gateway_region(&mut self, region: &str, ip: &str, extra: &str, resilience: &str) -> String {
        let (model, model_addr) = spawn_target(ip);
        // The gateway's port is chosen first: the agent forwards to it, and it forwards to the agent.
        let gateway_addr = format!("{ip}:{}", free_port_on(ip));
        let inner = format!("[inner]\nlisten = \"{ip}:0\"\nupstream = \"http://{model_addr}\"\n");
        let config =
            agent_config(&self.dir.path().join("agents").join(region), ip, &gateway_addr, &format!("{extra}\n{inner}"));
        // The probe set comes from the model server: the gateway starts after the agent.
        let toml = std::fs::read_to_string(&config).expect("agent.toml").replace(
            &format!("set = \"http://{gateway_addr}/probe-set\""),
            &format!("set = \"http://{model_addr}/probe-set\""),
        );
        std::fs::write(&config, toml).expect("agent.toml");
        let (agent, api, _proxy, inner_addr) = spawn_agent_with_inner(&config);
        let gateway = spawn_gateway(&gateway_addr, &format!("http://{inner_addr}"), resilience);
        self.keep.extend([model, gateway, KillOnDrop(agent)]);
        self.register(region, &format!("http://{api}"), 1);
        api
    }

    pub fn register(&self, region: &str, endpoint: &str, priority: i32) {
        let out = self.run(&["region", "add", region, "--endpoint", endpoint, "--priority", &priority.to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    pub fn write(&self, name: &str, yaml: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, yaml).expect("experiment file");
        path
    }

    /// Events of one kind on `topic` so far, as JSON (read up to the log's end: `tail --idle-timeout`
    /// would never go idle while a processor keeps publishing).
    pub fn events(&self, topic: Topic, kind: &str) -> Vec<Value> {
        let ctx = context(&self.brokers, &self.prefix);
        let name = ctx.topics.name(topic);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let messages = rt
            .block_on(chaoseater_schemas::bus::EventConsumer::read_to_end(&ctx, "test-reader", &[&name]))
            .expect("read the topic");
        messages
            .iter()
            .filter_map(|m| m.payload.as_deref().and_then(|p| ctx.codec.decode(p).ok()))
            .filter(|e| e.kind().name() == kind)
            .map(|e| serde_json::to_value(&e).expect("JSON"))
            .collect()
    }

    /// Events of one kind from the results topic, as JSON.
    pub fn results(&self, kind: &str) -> Vec<Value> {
        self.events(Topic::Results, kind)
    }
}

/// Experiments this agent ran for `run_id` (its dispatch ids start with the run id).
pub fn ran(api: &str, run_id: &str) -> usize {
    let (status, body) = http(api, "GET", "/api/v1/experiments", None, None);
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).expect("JSON");
    list["experiments"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|id| id.starts_with(run_id)))
        .count()
}

/// The run ids `run`/`submit` printed.
pub fn run_ids(output: &Output) -> Vec<String> {
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    all.split_whitespace()
        .filter(|w| w.len() == 36 && w.chars().filter(|c| *c == '-').count() == 4)
        .map(str::to_owned)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

pub fn experiment(name: &str, fault: &str, params: &str, extra: &str) -> String {
    format!(
        "experiments:\n  - name: {name}\n    layer: {layer}\n    fault_type: {fault}\n    duration: 1\n    parameters: {params}\n{extra}",
        layer = if fault == "memory_pressure" || fault == "network_latency" { "infrastructure" } else { "model" }
    )
}

pub fn transitions(c: &Cluster, region: &str) -> Vec<(String, String, i64)> {
    c.rollback_events("CircuitStateChanged")
        .iter()
        .filter(|e| e["region"] == region)
        .map(|e| {
            (
                e["from_state"].as_str().unwrap_or_default().to_owned(),
                e["to_state"].as_str().unwrap_or_default().to_owned(),
                e["occurred_at"].as_i64().unwrap_or_default(),
            )
        })
        .collect()
}

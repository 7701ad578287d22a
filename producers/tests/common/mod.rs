//! A demo target and an agent in front of it, in this process, on free ports, with their own state
//! directory: what every agent test starts from.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chaoseater_net::http::{Answer, HttpClient};
use chaoseater_producers::agent::{Agent, AgentConfig};
use chaoseater_producers::demo_target::{self, DemoTarget, DemoTargetConfig, Resilience};
use hyper::Method;
use serde_json::{Value as Json, json};

pub const TOKEN: &str = "test-token-0123456789";

/// Starts a demo target on a free port; it serves until the test's runtime ends.
pub async fn target(resilience: &str, version: &str) -> SocketAddr {
    let config = DemoTargetConfig {
        model_name: "demo".to_owned(),
        model_version: version.to_owned(),
        resilience: Resilience::parse(resilience).expect("resilience"),
        upstream: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let addr = listener.local_addr().expect("target address");
    tokio::spawn(demo_target::serve(
        Arc::new(DemoTarget::new(config)),
        listener,
        chaoseater_schemas::bus::Shutdown::new(),
    ));
    addr
}

#[derive(Debug, Default)]
pub struct Opts {
    pub resilience: &'static str,
    /// Lines for the top level of agent.toml.
    pub top: String,
    /// Lines for [probe].
    pub probe: String,
    /// Alternate upstreams: name → model version of a second demo target.
    pub alternates: Vec<(&'static str, &'static str)>,
}

#[derive(Debug)]
pub struct Rig {
    pub target: SocketAddr,
    pub agent: Agent,
    pub http: HttpClient,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start(opts: Opts) -> Self {
        let resilience = if opts.resilience.is_empty() { "none" } else { opts.resilience };
        let target = target(resilience, "1").await;
        let mut alternates = String::new();
        for (name, version) in &opts.alternates {
            let addr = self::target(resilience, version).await;
            alternates.push_str(&format!("{name} = \"http://{addr}\"\n"));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("token"), TOKEN).expect("token file");
        std::fs::create_dir_all(dir.path().join("cgroup")).expect("cgroup dir");
        let d = dir.path().display();
        let toml = format!(
            r#"
listen = "127.0.0.1:0"
proxy_listen = "127.0.0.1:0"
upstream = "http://{target}"
state_dir = "{d}/state"
token_file = "{d}/token"
{top}
[alternates]
{alternates}
[probe]
set = "http://{target}/probe-set"
interval_ms = 25
batch_size = 4
timeout_ms = 1000
baseline_ms = 500
window_ms = 200
{probe}
[slo]
stability_window_ms = 400
recovery_timeout_ms = 5000
[caps]
max_memory_mb = 512
max_disk_bytes = 104857600
max_cpu_percent = 60
max_duration_s = 30
[host]
scratch_dir = "{d}/scratch"
allowed_paths = ["{d}"]
cgroup_root = "{d}/cgroup"
"#,
            top = opts.top,
            probe = opts.probe,
        );
        let config = AgentConfig::parse(&toml).expect("agent config");
        let agent = Agent::start(config).await.expect("agent starts");
        Self { target, agent, http: HttpClient::new(), dir }
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.agent.api_addr)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<&Json>, token: Option<&str>) -> Answer {
        self.http.json(method, &self.api(path), body, token, Duration::from_secs(60)).await.expect("agent answers")
    }

    /// Runs an experiment synchronously and returns the answer's JSON.
    pub async fn run(&self, body: Json) -> Json {
        let answer = self.call(Method::POST, "/api/v1/experiments/run", Some(&body), Some(TOKEN)).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        serde_json::from_slice(&answer.body).expect("JSON answer")
    }

    /// Starts an experiment and waits until its fault is injected; returns its id.
    pub async fn inject(&self, body: Json) -> String {
        let answer = self.call(Method::POST, "/api/v1/experiments", Some(&body), Some(TOKEN)).await;
        assert_eq!(answer.status, 202, "{}", String::from_utf8_lossy(&answer.body));
        let id = serde_json::from_slice::<Json>(&answer.body).expect("JSON")["id"].as_str().expect("id").to_owned();
        self.wait_status(&id, "injecting").await;
        id
    }

    pub async fn status(&self, id: &str) -> Json {
        let answer = self.call(Method::GET, &format!("/api/v1/experiments/{id}"), None, None).await;
        serde_json::from_slice(&answer.body).expect("JSON status")
    }

    pub async fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(id).await;
            if s["status"] == status {
                return;
            }
            assert!(Instant::now() < deadline, "experiment never reached {status}: {s}");
            if s["result"].is_object() && status != "completed" && status != "aborted" {
                panic!("experiment finished before {status}: {s}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the outcome of `id`.
    pub async fn outcome(&self, id: &str) -> Json {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let s = self.status(id).await;
            if s["result"].is_object() {
                return s["result"].clone();
            }
            assert!(Instant::now() < deadline, "experiment never finished: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A prediction request through the proxy.
    pub async fn predict(&self, instances: Json) -> Result<Answer, String> {
        let url = format!("http://{}/v1/models/demo:predict", self.agent.proxy_addr);
        self.http
            .json(Method::POST, &url, Some(&json!({ "instances": instances })), None, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())
    }

    /// The first `n` probe-set records.
    pub fn records(&self, n: usize) -> Json {
        let set = chaoseater_producers::demo_target::ProbeSet::demo("demo", 100);
        Json::Array(set.instances.into_iter().take(n).collect())
    }
}

pub fn experiment(layer: &str, fault_type: &str, parameters: Json, duration: f64) -> Json {
    json!({"name": format!("test-{fault_type}"), "layer": layer, "fault_type": fault_type, "parameters": parameters, "duration": duration, "seed": 7})
}

/// Reads the JSON body of an answer.
pub fn body(answer: &Answer) -> Json {
    serde_json::from_slice(&answer.body).unwrap_or(Json::Null)
}

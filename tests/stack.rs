//! The compose stack as local processes: `docker-compose.yml` read as it is, every service started from
//! the very files it mounts, in the order its `depends_on` conditions give, each waited on by its own
//! healthcheck. Then the README's campaign and A/B test run against it, Prometheus scrapes `serve`, and
//! every dashboard and alert query returns data.
//!
//! What is translated, and only that: a service's container paths become the files they mount (bind
//! mounts copied with the translation applied, named volumes as fresh folders, secrets as their files),
//! and `SERVICE:PORT`, `localhost:PORT` and `0.0.0.0:PORT` become free ports on 127.0.0.1. Apache Kafka is
//! `tests/kafka/kafka.sh` (one KRaft node, as the compose file's); Prometheus is CHAOSEATER_PROMETHEUS;
//! Grafana has no package here and is left out (its provisioning is checked against Grafana's schemas in
//! the sinks crate).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::prom::{panel_exprs, query};
use common::*;
use serde_json::Value as Json;
use serde_yaml::Value;

fn root() -> PathBuf {
    chaoseater_schemas::package_dir!()
}

fn str_list(value: &Value) -> Vec<String> {
    value.as_sequence().map(|s| s.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The compose file's services, run as local processes.
/// Fields drop in order: the services stop before Kafka, and Kafka before their folders go.
struct Stack {
    running: BTreeMap<String, KillOnDrop>,
    kafka: Option<OwnKafka>,
    dir: tempfile::TempDir,
    compose: Value,
    /// (service, container port) → the local address standing in for it.
    ports: BTreeMap<(String, u16), String>,
}

impl Stack {
    fn load() -> Self {
        let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
        let mut compose: Value = serde_yaml::from_str(&text).expect("compose YAML");
        compose.apply_merge().expect("merge keys");
        // `apply_merge` resolves the top-level anchors only; the services' `<<: *chaoseater` too.
        for (_, service) in compose["services"].as_mapping_mut().expect("services").iter_mut() {
            service.apply_merge().expect("merge keys");
        }
        Self {
            compose,
            dir: tempfile::tempdir().expect("tempdir"),
            kafka: None,
            ports: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }

    fn service(&self, name: &str) -> &Value {
        &self.compose["services"][name]
    }

    fn services(&self) -> Vec<String> {
        self.compose["services"]
            .as_mapping()
            .expect("services")
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect()
    }

    /// The local address of `service`'s container port.
    fn addr(&mut self, service: &str, port: u16) -> String {
        if service == "kafka" {
            return self.kafka.as_ref().expect("Kafka is started first").bootstrap.clone();
        }
        self.ports.entry((service.to_owned(), port)).or_insert_with(|| format!("127.0.0.1:{}", free_port())).clone()
    }

    /// Rewrites every `HOST:PORT` in `text` whose host is a service (or, inside `service`, `localhost` or
    /// `0.0.0.0`) to its local address.
    fn translate_addresses(&mut self, service: &str, text: &str) -> String {
        let services = self.services();
        let is_host = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(colon) = rest.find(':') {
            let (before, after) = rest.split_at(colon);
            let host_start = before.rfind(|c: char| !is_host(c)).map_or(0, |i| i + 1);
            let host = &before[host_start..];
            let digits = after[1..].find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len() - 1);
            let port = after[1..1 + digits].parse::<u16>().ok();
            let local = matches!(host, "localhost" | "0.0.0.0");
            match port {
                Some(port) if local || services.iter().any(|s| s == host) => {
                    out.push_str(&before[..host_start]);
                    let owner = if local { service } else { host };
                    out.push_str(&self.addr(owner, port));
                    rest = &after[1 + digits..];
                }
                _ => {
                    out.push_str(before);
                    out.push(':');
                    rest = &after[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// One `volumes:` entry of `service`: its source (`./...` for a bind mount, else a named volume), its
    /// container path, and the local path standing in for it.
    fn volume(&self, service: &str, entry: &str) -> (String, String, PathBuf) {
        let mut parts = entry.split(':');
        let (source, target) = (parts.next().expect("source"), parts.next().expect("target"));
        let own = self.dir.path().join(service);
        let local = if source.starts_with('.') {
            own.join("mounts").join(target.trim_start_matches('/').replace('/', "_"))
        } else {
            own.join("volumes").join(source)
        };
        (source.to_owned(), target.to_owned(), local)
    }

    /// Container path → local path for `service`: bind mounts (copied and translated below), named volumes,
    /// secrets, and what the Dockerfile puts in the image.
    fn mounts(&self, service: &str) -> Vec<(String, PathBuf)> {
        let spec = self.service(service);
        let mut mounts: Vec<(String, PathBuf)> = str_list(&spec["volumes"])
            .iter()
            .map(|entry| {
                let (_, target, local) = self.volume(service, entry);
                (target, local)
            })
            .collect();
        for secret in str_list(&spec["secrets"]) {
            let file = self.compose["secrets"][secret.as_str()]["file"].as_str().expect("a secret's file");
            mounts.push((format!("/run/secrets/{secret}"), root().join(file)));
        }
        if spec["image"].as_str() == Some("chaoseater:local") {
            mounts.push(("/usr/share/chaoseater/examples".to_owned(), root().join("examples")));
        }
        // The longest path first, so /var/lib/chaoseater/agent is not read as /var/lib/chaoseater + "/agent".
        mounts.sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        mounts
    }

    fn translate(&mut self, service: &str, text: &str) -> String {
        let mut text = self.translate_addresses(service, text);
        for (target, local) in self.mounts(service) {
            text = replace_path(&text, &target, &local.to_string_lossy());
        }
        text
    }

    /// Makes `service`'s mounts exist: bind-mounted files and folders copied with their text translated.
    fn prepare_mounts(&mut self, service: &str) {
        for entry in str_list(&self.service(service)["volumes"]) {
            let (source, _, local) = self.volume(service, &entry);
            if !source.starts_with('.') {
                std::fs::create_dir_all(&local).expect("a named volume's folder");
                continue;
            }
            let source = root().join(source);
            let files: Vec<(PathBuf, PathBuf)> = if source.is_dir() {
                std::fs::create_dir_all(&local).expect("a mounted folder");
                std::fs::read_dir(&source)
                    .expect("read a mounted folder")
                    .map(|e| e.expect("entry").path())
                    .filter(|p| p.is_file())
                    .map(|p| (p.clone(), local.join(p.file_name().expect("name"))))
                    .collect()
            } else {
                std::fs::create_dir_all(local.parent().expect("parent")).expect("a mount's folder");
                vec![(source, local)]
            };
            for (from, to) in files {
                let text = std::fs::read_to_string(&from).expect("a mounted file");
                let text = self.translate(service, &text);
                std::fs::write(&to, text).expect("the translated copy");
            }
        }
    }

    /// The service's process, as its image and the compose file define it.
    fn command(&mut self, service: &str) -> std::process::Command {
        let spec = self.service(service).clone();
        let image = spec["image"].as_str().expect("image").to_owned();
        let args: Vec<String> = str_list(&spec["command"]).iter().map(|a| self.translate(service, a)).collect();
        let mut cmd = match image.as_str() {
            "chaoseater:local" => {
                let mut entry: Vec<String> =
                    str_list(&spec["entrypoint"]).iter().map(|a| self.translate(service, a)).collect();
                if entry.is_empty() {
                    entry.push("chaoseater".to_owned());
                }
                let program = if entry[0] == "chaoseater" {
                    env!("CARGO_BIN_EXE_chaoseater").to_owned()
                } else {
                    entry[0].clone()
                };
                let mut cmd = std::process::Command::new(program);
                cmd.args(&entry[1..]);
                cmd
            }
            image if image.starts_with("prom/prometheus:") => {
                let listen = self.addr(service, 9090);
                let mut cmd = std::process::Command::new(
                    std::env::var("CHAOSEATER_PROMETHEUS")
                        .expect("CHAOSEATER_PROMETHEUS is not set: run `bash .ci/run`"),
                );
                cmd.arg(format!("--web.listen-address={listen}"));
                cmd
            }
            other => panic!("service {service}: no local stand-in for the image {other}"),
        };
        cmd.args(args).env_remove("CHAOSEATER_BROKERS").env_remove("CHAOSEATER_CONFIG");
        for (key, value) in self.environment(service) {
            cmd.env(key, value);
        }
        let log = std::env::var_os("CHAOSEATER_TEST_LOGS")
            .and_then(|d| std::fs::File::create(Path::new(&d).join(format!("stack-{service}.log"))).ok());
        match log {
            Some(file) => {
                cmd.stdout(file.try_clone().expect("log")).stderr(file);
            }
            None => {
                cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
            }
        }
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// The service's environment, translated, and a PATH that holds the binary, as the image's does
    /// (init.sh calls `chaoseater`).
    fn environment(&mut self, service: &str) -> Vec<(String, String)> {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_chaoseater")).parent().expect("bin dir").to_owned();
        let path = std::env::var("PATH").unwrap_or_default();
        let mut env = vec![("PATH".to_owned(), format!("{}:{path}", bin_dir.display()))];
        let spec = self.service(service)["environment"].as_mapping().cloned().unwrap_or_default();
        for (key, value) in spec {
            let value = match value {
                Value::String(s) => s,
                other => serde_yaml::to_string(&other).expect("a value").trim().to_owned(),
            };
            env.push((key.as_str().expect("a variable").to_owned(), self.translate(service, &value)));
        }
        env
    }

    /// Polls the service's healthcheck (an HTTP URL, as `curl -f` or `wget` would fetch it).
    fn healthy(&mut self, service: &str) -> bool {
        if service == "kafka" {
            return true; // kafka.sh returns once the broker serves
        }
        let test = str_list(&self.service(service)["healthcheck"]["test"]);
        let url = test.last().expect("a healthcheck").clone();
        let url = self.translate(service, &url);
        let rest = url.strip_prefix("http://").expect("an HTTP healthcheck");
        let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        std::net::TcpStream::connect(addr).is_ok() && http(addr, "GET", path, None, None).0 == 200
    }

    fn wait_for(&mut self, service: &str, needs: &str, condition: &str) {
        let what = format!("{service} waits for {needs} ({condition})");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let done = match condition {
                "service_started" => self.running.contains_key(needs) || needs == "kafka",
                "service_healthy" => self.healthy(needs),
                "service_completed_successfully" => {
                    let child = &mut self.running.get_mut(needs).expect("started").0;
                    match child.try_wait().expect("wait") {
                        Some(status) => {
                            assert!(status.success(), "{needs} exited with {status}");
                            true
                        }
                        None => false,
                    }
                }
                other => panic!("{service}: unknown depends_on condition {other}"),
            };
            if done {
                return;
            }
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts every service but `skip`, each after its `depends_on` conditions hold.
    fn up(&mut self, skip: &[&str]) {
        let mut started: Vec<String> = Vec::new();
        let mut pending: Vec<String> = self.services().into_iter().filter(|s| !skip.contains(&s.as_str())).collect();
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|s| {
                    self.service(s)["depends_on"]
                        .as_mapping()
                        .is_none_or(|deps| deps.keys().all(|d| started.iter().any(|s| Some(s.as_str()) == d.as_str())))
                })
                .unwrap_or_else(|| panic!("depends_on has a cycle among {pending:?}"));
            let service = pending.remove(ready);
            let deps: Vec<(String, String)> = self.service(&service)["depends_on"]
                .as_mapping()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().expect("name").to_owned(),
                                v["condition"].as_str().unwrap_or("service_started").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (needs, condition) in deps {
                self.wait_for(&service, &needs, &condition);
            }
            self.start(&service);
            started.push(service);
        }
    }

    fn start(&mut self, service: &str) {
        if service == "kafka" {
            self.kafka = Some(OwnKafka::start(1));
            return;
        }
        self.prepare_mounts(service);
        let child: Child = self.command(service).spawn().unwrap_or_else(|e| panic!("start {service}: {e}"));
        self.running.insert(service.to_owned(), KillOnDrop(child));
    }

    /// `docker compose exec SERVICE chaoseater ARGS..`: a command with the service's environment.
    fn exec(&mut self, service: &str, args: &[&str]) -> std::process::Output {
        assert_eq!(args[0], "chaoseater", "only the image's binary is exec'd");
        let args: Vec<String> = args[1..].iter().map(|a| self.translate(service, a)).collect();
        let mut exec = std::process::Command::new(env!("CARGO_BIN_EXE_chaoseater"));
        exec.env_remove("CHAOSEATER_BROKERS").env_remove("CHAOSEATER_CONFIG");
        for (key, value) in self.environment(service) {
            exec.env(key, value);
        }
        exec.args(args).stdin(std::process::Stdio::null()).output().expect("exec")
    }
}

/// `text` with every whole-path occurrence of `target` (not one inside a longer path) replaced by `local`.
fn replace_path(text: &str, target: &str, local: &str) -> String {
    let path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(target) {
        let before_ok = !rest[..at].chars().next_back().is_some_and(path_char);
        let after = &rest[at + target.len()..];
        let after_ok = after.chars().next().is_none_or(|c| c == '/' || !path_char(c));
        out.push_str(&rest[..at]);
        out.push_str(if before_ok && after_ok { local } else { target });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[test]
fn the_compose_stack_runs_the_campaign_and_every_dashboard_query_returns_data() {
    let mut stack = Stack::load();
    stack.up(&["grafana"]);
    assert!(stack.running.contains_key("serve") && stack.running.contains_key("prometheus"));

    // The README's campaign, as `docker compose exec serve chaoseater run ...` (every region must complete;
    // the scores are the gate's business, not this test's).
    let campaign = "/usr/share/chaoseater/examples/campaign.yaml";
    let out = stack.exec(
        "serve",
        &["chaoseater", "run", campaign, "--regions", "eu-west,us-east", "--min-score", "0", "--timeout", "600"],
    );
    let stdout = text(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(stdout.matches("): COMPLETED").count(), 4, "every experiment of the campaign completed: {stdout}");
    for region in ["eu-west", "us-east"] {
        assert!(stdout.contains(&format!("  {region}")), "{region} ran: {stdout}");
    }
    // The A/B test between the stack's two regions (validate against no defence), three samples each.
    let ab = "/usr/share/chaoseater/examples/ab-test.yaml";
    let out = stack.exec("serve", &["chaoseater", "ab", ab, "--samples", "3", "--timeout", "600"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

    // Prometheus scrapes `serve` as the compose file's config tells it, and every query of the dashboard
    // and of the alert rules returns data.
    let prom = stack.addr("prometheus", 9090);
    wait_until(Duration::from_secs(60), "Prometheus to scrape serve", || {
        query(&prom, "up{job=\"chaoseater\"}").iter().any(|r| r["value"][1] == "1")
    });
    let mut exprs = panel_exprs();
    let alerts = chaoseater_sinks::grafana::alert_expressions(&chaoseater_sinks::grafana::AlertOptions::default());
    // Each alert's expression without its threshold: whether it fires depends on the scores.
    exprs.extend(
        alerts.iter().map(|a| a.2.split(" < ").next().and_then(|e| e.split(" > ").next()).expect("lhs").to_owned()),
    );
    for expr in &exprs {
        wait_until(Duration::from_secs(60), &format!("data for {expr}"), || !query(&prom, expr).is_empty());
    }
    // Prometheus loaded the rules file the compose file mounts.
    let (status, rules) = http(&prom, "GET", "/api/v1/rules", None, None);
    assert_eq!(status, 200, "{rules}");
    assert!(rules.contains("ChaosEaterLowResilienceScore") && rules.contains("ChaosEaterHighErrorRate"), "{rules}");

    // The history `serve` materializes (every 10 s in the compose config) answers SQL.
    wait_until(Duration::from_secs(60), "the campaign's results in the history", || {
        let out =
            stack.exec("serve", &["chaoseater", "sql", "SELECT count(*) AS n FROM experiments", "--format", "json"]);
        let json: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
        json[0]["n"].as_i64().is_some_and(|n| n >= 5)
    });
}

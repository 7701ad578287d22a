//! Shared helpers of the end-to-end tests. Every test gets its own topic prefix and state directory.

#![allow(dead_code)]

pub mod cluster;
pub mod prom;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chaoseater_schemas::bus::{BusContext, admin};
use chaoseater_schemas::codec::Codec;
use chaoseater_schemas::topics::{Topic, TopicNames};

/// The test broker (Apache Kafka, from `tests/kafka/kafka.sh`) that `.ci/run` started.
pub fn brokers() -> String {
    std::env::var("CHAOSEATER_TEST_BROKERS")
        .expect("CHAOSEATER_TEST_BROKERS is not set: run the suite with `bash .ci/run`, which starts the test broker")
}

/// A topic prefix no other test (or earlier run on the same broker) uses.
pub fn unique_prefix(name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("t{}-{}-{}.{name}", std::process::id(), nanos % 1_000_000_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A bus context on `brokers` under `prefix`.
pub fn context(brokers: &str, prefix: &str) -> BusContext {
    let mut ctx = BusContext::new(brokers, Codec::new().expect("schemas"));
    ctx.topics = TopicNames::with_prefix(prefix);
    ctx
}

/// Creates every topic under the context's prefix.
pub async fn create_topics(ctx: &BusContext) {
    admin::ensure_topics(ctx, &Topic::ALL).await.expect("create topics");
}

/// The binary under test.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chaoseater"));
    cmd.env_remove("CHAOSEATER_BROKERS").env("CHAOSEATER_LOG", "warn");
    cmd
}

/// Runs the binary to completion with no standard input.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run chaoseater")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A free TCP port on 127.0.0.1 (bound, then released for the caller to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A free TCP port on `ip` (bound, then released for the caller to bind).
pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Sends SIGTERM to a child.
pub fn terminate(child: &Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
}

/// An Apache Kafka cluster of one test's own (for restarts and failover), started by
/// `tests/kafka/kafka.sh` in a temporary folder and stopped when dropped.
pub struct OwnKafka {
    dir: tempfile::TempDir,
    pub bootstrap: String,
}

impl OwnKafka {
    /// Starts 1 combined broker and controller, or 3 (replication factor 3, `min.insync.replicas=2`),
    /// and returns once every node serves.
    pub fn start(nodes: u32) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let out = Self::script(&dir, &["start", &path_arg(dir.path()), &nodes.to_string()]);
        let bootstrap = text(&out.stdout).trim().to_owned();
        assert!(!bootstrap.is_empty(), "kafka.sh printed no bootstrap servers");
        Self { dir, bootstrap }
    }

    /// SIGKILLs one node (numbered from 1).
    pub fn kill(&self, node: u32) {
        Self::script(&self.dir, &["kill", &path_arg(self.dir.path()), &node.to_string()]);
    }

    /// Stops one node gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&self, node: u32) {
        Self::script(&self.dir, &["stop", &path_arg(self.dir.path()), &node.to_string()]);
    }

    /// Starts a stopped or killed node again and waits until it serves.
    pub fn restart(&self, node: u32) {
        Self::script(&self.dir, &["restart", &path_arg(self.dir.path()), &node.to_string()]);
    }

    fn command() -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(chaoseater_schemas::package_dir!().join("tests/kafka/kafka.sh")).stdin(Stdio::null());
        cmd
    }

    fn script(dir: &tempfile::TempDir, args: &[&str]) -> Output {
        let out = Self::command().args(args).output().expect("run kafka.sh");
        assert!(
            out.status.success(),
            "kafka.sh {args:?} failed (logs in {}): {}",
            dir.path().display(),
            text(&out.stderr)
        );
        out
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = Self::command().arg("stop").arg(self.dir.path()).status();
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Kills a child on drop, so a failed assertion leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a file exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A minimal HTTP/1.1 exchange over a fresh connection (`Connection: close`): status and body.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let body = body.unwrap_or("");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Reads the child's stdout until a line containing `marker`; returns the `http://ADDR` tokens of that line.
pub fn addresses(child: &mut Child, marker: &str) -> Vec<String> {
    use std::io::BufRead;
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read stdout");
        assert!(n > 0, "process exited before printing {marker:?}");
        if line.contains(marker) {
            return line
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("http://"))
                .map(|a| a.trim_end_matches(|c: char| !c.is_ascii_digit()).to_owned())
                .collect();
        }
    }
}

/// The token every test agent is started with (`CHAOSEATER_AGENT_TOKEN`).
pub const AGENT_TOKEN: &str = "e2e-agent-token";

/// Starts `chaoseater demo-target` on `ip` (port 0); returns it and its address.
pub fn spawn_target(ip: &str) -> (KillOnDrop, String) {
    spawn_target_with(ip, "none")
}

/// As [`spawn_target`], with the target's defences (`none`, or `validate`, `retry`, `fallback`).
pub fn spawn_target_with(ip: &str, resilience: &str) -> (KillOnDrop, String) {
    let mut child = bin()
        .args(["demo-target", "--listen", &format!("{ip}:0"), "--resilience", resilience])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn demo-target");
    let addr = addresses(&mut child, "listening on").remove(0);
    (KillOnDrop(child), addr)
}

/// Writes an agent.toml in `dir` for an agent on `ip` in front of `target`, with quick probes;
/// `extra` is appended (more sections).
pub fn agent_config(dir: &Path, ip: &str, target: &str, extra: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("agent dir");
    let path = dir.join("agent.toml");
    let toml = format!(
        r#"listen = "{ip}:0"
proxy_listen = "{ip}:0"
upstream = "http://{target}"
state_dir = "{state}"
[probe]
set = "http://{target}/probe-set"
interval_ms = 25
baseline_ms = 300
window_ms = 200
[slo]
stability_window_ms = 400
recovery_timeout_ms = 5000
{extra}
"#,
        state = dir.join("state").display()
    );
    std::fs::write(&path, toml).expect("agent.toml");
    path
}

/// Starts `chaoseater demo-target` as a gateway on `addr` in front of `upstream`, with `resilience`.
pub fn spawn_gateway(addr: &str, upstream: &str, resilience: &str) -> KillOnDrop {
    let mut child = bin()
        .args(["demo-target", "--listen", addr, "--upstream", upstream, "--resilience", resilience])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the gateway");
    addresses(&mut child, "listening on");
    KillOnDrop(child)
}

/// Starts `chaoseater agent` with an `[inner]` hop; returns it with its API, proxy and inner addresses.
pub fn spawn_agent_with_inner(config: &Path) -> (Child, String, String, String) {
    let (child, found) = start_agent(config, "inner hop on");
    (child, found[0].clone(), found[1].clone(), found[2].clone())
}

/// Starts `chaoseater agent`; returns it with its API and proxy addresses.
pub fn spawn_agent(config: &Path) -> (Child, String, String) {
    let (child, found) = start_agent(config, "agent API on");
    (child, found[0].clone(), found[1].clone())
}

/// Starts `chaoseater agent` with the test token; returns it and the addresses on its `marker` line.
fn start_agent(config: &Path, marker: &str) -> (Child, Vec<String>) {
    let mut child = bin()
        .args(["agent", "--config"])
        .arg(config)
        .env("CHAOSEATER_AGENT_TOKEN", AGENT_TOKEN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn agent");
    let found = addresses(&mut child, marker);
    (child, found)
}

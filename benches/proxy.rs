//! The agent's proxy next to Shopify's Toxiproxy, in the same run and against the same target: the same
//! requests sent straight to the demo target, through a bare layer-4 relay, through our proxy and
//! through Toxiproxy, with no fault and with a 100 ms latency fault (our `network_latency` against
//! Toxiproxy's latency toxic). Latency is measured with requests interleaved one for one across the
//! paths, throughput with 16 concurrent clients per path; CPU per request is read from /proc for this
//! process (client, target, relay and our proxy) and for the Toxiproxy server.
//!
//! cargo bench --bench proxy   (CHAOSEATER_BENCH_SECONDS=N for longer throughput phases; Toxiproxy from
//!                              CHAOSEATER_TOXIPROXY, else installed by benches/toxiproxy.sh)
//!
//! Targets: added p50 under 200 µs with no fault; at least Toxiproxy's throughput and no more of its
//! added latency. Figures go to benches/README.md.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaoseater_net::http::HttpClient;
use chaoseater_producers::agent::{Agent, AgentConfig};
use chaoseater_producers::demo_target::{self, DemoTarget, DemoTargetConfig};
use hyper::Method;
use serde_json::{Value, json};

const CONCURRENCY: usize = 16;
const LATENCY_MS: u64 = 100;
const TOKEN: &str = "bench";

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

async fn one(client: &HttpClient, url: &str, body: &Value) -> Duration {
    let started = Instant::now();
    let answer = client.json(Method::POST, url, Some(body), None, Duration::from_secs(10)).await.expect("answer");
    assert_eq!(answer.status, 200, "{url}");
    started.elapsed()
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name (which is in parentheses and may hold spaces): utime is the 12th.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat format").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0 // USER_HZ, 100 on Linux
}

/// Requests per second over `seconds` with `CONCURRENCY` clients, and CPU microseconds per request spent
/// by this process and by `other` (the Toxiproxy server) meanwhile.
async fn throughput(url: &str, body: &Arc<Value>, seconds: f64, other: Option<u32>) -> (f64, f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let (self_before, other_before) = (cpu_seconds(std::process::id()), other.map_or(0.0, cpu_seconds));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (url, body, done) = (url.to_owned(), Arc::clone(body), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new();
            while Instant::now() < deadline {
                one(&client, &url, &body).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let n = done.load(Ordering::Relaxed) as f64;
    let self_cpu = cpu_seconds(std::process::id()) - self_before;
    let other_cpu = other.map_or(0.0, cpu_seconds) - other_before;
    (n / seconds, self_cpu / n * 1e6, other_cpu / n * 1e6)
}

/// The Toxiproxy server on a free port, killed on drop.
struct Toxiproxy {
    child: Child,
    api: String,
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Toxiproxy {
    fn binary() -> Result<String, String> {
        if let Ok(path) = std::env::var("CHAOSEATER_TOXIPROXY") {
            return Ok(path);
        }
        let script = chaoseater_schemas::package_dir!().join("benches/toxiproxy.sh");
        let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("{} failed", script.display()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    async fn start(client: &HttpClient) -> Result<Self, String> {
        let binary = Self::binary()?;
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?;
        let child = Command::new(&binary)
            .args(["-host", "127.0.0.1", "-port", &port.port().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{binary}: {e}"))?;
        let this = Self { child, api: format!("http://{port}") };
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .json(Method::GET, &format!("{}/version", this.api), None, None, Duration::from_secs(1))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err("toxiproxy did not answer within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(this)
    }

    async fn call(&self, client: &HttpClient, method: Method, path: &str, body: Option<&Value>) -> Value {
        let answer = client
            .json(method, &format!("{}{path}", self.api), body, None, Duration::from_secs(10))
            .await
            .expect("api");
        assert!(answer.status.is_success(), "toxiproxy {path}: {}", String::from_utf8_lossy(&answer.body));
        serde_json::from_slice(&answer.body).unwrap_or(Value::Null)
    }

    /// A proxy to `upstream`; its listening address.
    async fn proxy(&self, client: &HttpClient, upstream: SocketAddr) -> String {
        let body = json!({"name": "bench", "listen": "127.0.0.1:0", "upstream": upstream.to_string()});
        let created = self.call(client, Method::POST, "/proxies", Some(&body)).await;
        created["listen"].as_str().expect("listen").to_owned()
    }
}

/// p50 and p99 of each path's latency over `rounds` requests, interleaved one for one.
async fn latencies(client: &HttpClient, urls: &[&str], body: &Value, rounds: usize) -> Vec<(f64, f64)> {
    let mut samples = vec![Vec::with_capacity(rounds); urls.len()];
    for _ in 0..rounds {
        for (url, times) in urls.iter().zip(&mut samples) {
            times.push(one(client, url, body).await);
        }
    }
    samples
        .iter_mut()
        .map(|times| {
            times.sort_unstable();
            (percentile(times, 0.5), percentile(times, 0.99))
        })
        .collect()
}

struct Row {
    path: &'static str,
    p50: f64,
    p99: f64,
    rps: f64,
    cpu: f64,
}

/// One scenario over every path: latency, then throughput.
async fn scenario(
    client: &HttpClient,
    paths: &[(&'static str, String)],
    toxiproxy_pid: Option<u32>,
    body: &Value,
    rounds: usize,
    seconds: f64,
) -> Vec<Row> {
    let urls: Vec<&str> = paths.iter().map(|(_, url)| url.as_str()).collect();
    latencies(client, &urls, body, rounds / 10).await; // warm-up
    let measured = latencies(client, &urls, body, rounds).await;
    let body = Arc::new(body.clone());
    let mut rows = Vec::new();
    for ((path, url), (p50, p99)) in paths.iter().zip(measured) {
        let other = if *path == "toxiproxy" { toxiproxy_pid } else { None };
        let (rps, self_cpu, other_cpu) = throughput(url, &body, seconds, other).await;
        rows.push(Row { path, p50, p99, rps, cpu: self_cpu + other_cpu });
    }
    rows
}

fn print(title: &str, rows: &[Row]) {
    let direct = &rows[0];
    println!("{title}");
    println!(
        "  {:<18} {:>11} {:>11} {:>11} {:>11} {:>10} {:>7} {:>14}",
        "path", "p50 µs", "p99 µs", "added p50", "added p99", "req/s", "kept", "CPU µs/req*"
    );
    for r in rows {
        println!(
            "  {:<18} {:>11.1} {:>11.1} {:>11.1} {:>11.1} {:>10.0} {:>6.1}% {:>14.1}",
            r.path,
            r.p50,
            r.p99,
            r.p50 - direct.p50,
            r.p99 - direct.p99,
            r.rps,
            100.0 * r.rps / direct.rps,
            r.cpu
        );
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: f64 = std::env::var("CHAOSEATER_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let target: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(demo_target::serve(
        Arc::new(DemoTarget::new(DemoTargetConfig::default())),
        listener,
        chaoseater_schemas::bus::Shutdown::new(),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), TOKEN).expect("token");
    let config = AgentConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nproxy_listen = \"127.0.0.1:0\"\nupstream = \"http://{target}\"\nstate_dir = \"{d}/state\"\ntoken_file = \"{d}/token\"\n[probe]\nset = \"http://{target}/probe-set\"\n",
        d = dir.path().display()
    ))
    .expect("config");
    let agent = Agent::start(config).await.expect("agent");
    // A bare layer-4 relay (tokio's copy_bidirectional), the cheapest proxy a userspace process can be.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("relay");
    let relay_addr = relay.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = relay.accept().await.expect("accept");
            tokio::spawn(async move {
                let _ = inbound.set_nodelay(true);
                let mut outbound = tokio::net::TcpStream::connect(target).await.expect("connect");
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let client = HttpClient::new();
    let route = "/v1/models/demo:predict";
    let mut paths = vec![
        ("direct", format!("http://{target}{route}")),
        ("bare L4 relay", format!("http://{relay_addr}{route}")),
        ("chaoseater proxy", format!("http://{}{route}", agent.proxy_addr)),
    ];
    let toxiproxy = match Toxiproxy::start(&client).await {
        Ok(t) => {
            let listen = t.proxy(&client, target).await;
            paths.push(("toxiproxy", format!("http://{listen}{route}")));
            Some(t)
        }
        Err(e) => {
            println!("toxiproxy not measured: {e}");
            None
        }
    };
    let pid = toxiproxy.as_ref().map(|t| t.child.id());
    let set = demo_target::ProbeSet::demo("demo", 100);
    let body = json!({ "instances": set.instances[..4] });

    println!(
        "proxy comparison on one target (4 records per request; latency: requests interleaved across paths; \
         throughput: {CONCURRENCY} concurrent clients for {seconds} s per path)"
    );
    println!("  * CPU per request during the throughput phase: this process (client, target, relay, our proxy)");
    println!("    plus, for toxiproxy, its server; subtract the direct row for the proxy's own share");
    let rows = scenario(&client, &paths, pid, &body, 3_000, seconds).await;
    print("no fault (3,000 requests per path for latency)", &rows);

    // The same fault on both proxies: ours through the agent API, Toxiproxy's latency toxic downstream.
    let experiment = json!({
        "name": "bench-latency", "layer": "infrastructure", "fault_type": "network_latency",
        "parameters": {"latency_ms": LATENCY_MS, "jitter_ms": 0}, "duration": 600.0,
    });
    let api = format!("http://{}", agent.api_addr);
    let started = client
        .json(
            Method::POST,
            &format!("{api}/api/v1/experiments"),
            Some(&experiment),
            Some(TOKEN),
            Duration::from_secs(10),
        )
        .await
        .expect("inject");
    assert_eq!(started.status, 202, "{}", String::from_utf8_lossy(&started.body));
    let id = serde_json::from_slice::<Value>(&started.body).expect("JSON")["id"].as_str().expect("id").to_owned();
    if let Some(t) = &toxiproxy {
        let toxic = json!({"name": "latency", "type": "latency", "stream": "downstream", "toxicity": 1.0,
                           "attributes": {"latency": LATENCY_MS, "jitter": 0}});
        t.call(&client, Method::POST, "/proxies/bench/toxics", Some(&toxic)).await;
    }
    // Wait until our fault is in force (the agent measures a baseline first).
    let deadline = Instant::now() + Duration::from_secs(60);
    while one(&client, &paths[2].1, &body).await < Duration::from_millis(LATENCY_MS) {
        assert!(Instant::now() < deadline, "the latency fault never took effect");
    }
    let rows = scenario(&client, &paths, pid, &body, 100, seconds).await;
    print(&format!("{LATENCY_MS} ms latency fault on both proxies (100 requests per path for latency)"), &rows);
    let _ = client
        .json(Method::POST, &format!("{api}/api/v1/experiments/{id}/abort"), None, Some(TOKEN), Duration::from_secs(10))
        .await;
    drop(toxiproxy);
    agent.shutdown().await;
}
